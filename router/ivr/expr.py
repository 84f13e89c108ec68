"""The flows' small expression language: parsed, type-checked, never `eval`.

Theory of operation
-------------------
An expression such as ``caller_id in vip_numbers and open('office')`` is
tokenised and parsed by recursive descent into a tree of `_Node`s, checked
against the types of the variables it may read, and compiled into a Python
closure that reads a `Scope` and returns the value.  Nothing a caller types
ever becomes code: variables, digits and caller IDs are values only.

Types are ``int``, ``str``, ``bool`` and ``list`` (of strings or integers).
Grammar, loosest first::

    or:   and ('or' and)*
    and:  not ('and' not)*
    not:  'not' not | cmp
    cmp:  sum (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not in') sum)?
    sum:  unary (('+'|'-') unary)*
    unary: '-' unary | atom
    atom: INT | 'text' | "text" | true | false | NAME | NAME '(' args ')' | '(' or ')' | '[' items ']'

`+` adds integers or joins strings; comparisons need equal types; `in` tests
membership in a list or a substring in a string.  Functions: ``open(S)`` and
``holiday(S)`` for a schedule named by a text literal, ``len(x)``,
``starts_with(s, prefix)``.  Every error is an `ExprError` with the 0-based
offset inside the expression, so the validator can print the exact column.
Length and nesting are bounded, so hostile text cannot exhaust the stack.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from router.yamlsrc import did_you_mean

MAX_LENGTH = 1000
MAX_DEPTH = 40
TYPES = ("int", "str", "bool", "list")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<int>\d+)
  | (?P<str>'[^'\n]*'|"[^"\n]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\(|\)|\[|\]|,)
""", re.VERBOSE)
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


class ExprError(ValueError):
    """A problem in an expression, at `offset` (0-based) inside its text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class Scope:
    """What an expression can read: variables, and schedules checked at `now`."""
    __slots__ = ("variables", "now", "schedule_open", "schedule_holiday")

    def __init__(self, variables: Mapping[str, Any], now: datetime,
                 schedule_open: Callable[[str, datetime], bool],
                 schedule_holiday: Callable[[str, datetime], bool]) -> None:
        self.variables = variables
        self.now = now
        self.schedule_open = schedule_open
        self.schedule_holiday = schedule_holiday


@dataclass(frozen=True)
class Expression:
    """A checked, compiled expression; `evaluate(scope)` gives its value."""
    text: str
    type: str
    names: frozenset[str]          # variables it reads
    schedules: frozenset[str]      # schedules it names
    evaluate: Callable[[Scope], Any]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str       # int, str, name, op, keyword, end
    text: str
    offset: int


@dataclass(slots=True)
class _Node:
    type: str
    offset: int
    run: Callable[[Scope], Any]
    literal: Any = None            # text of a string literal (schedule names)
    is_literal: bool = False


def compile_expression(text: str, variables: Mapping[str, str], schedules: Mapping[str, Any] | None,
                       want: str | None = None) -> Expression:
    """Parse and type-check `text` against `variables` (name -> type) and `schedules`
    (known names; None skips the check); with `want`, the result must have that type."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters", 0)
    parser = _Parser(text, variables, schedules)
    node = parser.parse()
    if want is not None and node.type != want:
        raise ExprError(f"expected a {_NOUN[want]} expression, got {_NOUN[node.type]}", node.offset)
    return Expression(text, node.type, frozenset(parser.names), frozenset(parser.schedule_names), node.run)


_NOUN = {"int": "number", "str": "text", "bool": "true/false", "list": "list"}


def _tokens(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            if char in "'\"":
                raise ExprError("unterminated text: add the closing quote", position)
            if char == "=":
                raise ExprError("unexpected '='; to compare, write '=='", position)
            raise ExprError(f"unexpected character {char!r}", position)
        kind = match.lastgroup
        value = match.group()
        if kind == "name" and value in _KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(_Token(kind, value, position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, variables: Mapping[str, str], schedules: Mapping[str, Any] | None) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0
        self.variables = variables
        self.schedules = schedules
        self.names: set[str] = set()
        self.schedule_names: set[str] = set()

    # -- token helpers --
    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.token.kind in ("op", "keyword") and self.token.text in texts

    def expect(self, text: str) -> _Token:
        if not self.at(text):
            raise ExprError(f"expected {text!r}, got {self.describe(self.token)}", self.token.offset)
        return self.take()

    @staticmethod
    def describe(token: _Token) -> str:
        return "the end of the expression" if token.kind == "end" else repr(token.text)

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise ExprError("empty expression", 0)
        node = self.disjunction()
        if self.token.kind != "end":
            raise ExprError(f"unexpected {self.describe(self.token)} after a complete expression",
                            self.token.offset)
        return node

    def nested(self, parse: Callable[[], _Node]) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nests deeper than {MAX_DEPTH} levels", self.token.offset)
        try:
            return parse()
        finally:
            self.depth -= 1

    # -- grammar --
    def disjunction(self) -> _Node:
        left = self.conjunction()
        while self.at("or"):
            self.take()
            right = self.conjunction()
            self.need(left, "bool", "'or'")
            self.need(right, "bool", "'or'")
            left = _Node("bool", left.offset, _or(left.run, right.run))
        return left

    def conjunction(self) -> _Node:
        left = self.negation()
        while self.at("and"):
            self.take()
            right = self.negation()
            self.need(left, "bool", "'and'")
            self.need(right, "bool", "'and'")
            left = _Node("bool", left.offset, _and(left.run, right.run))
        return left

    def negation(self) -> _Node:
        if self.at("not"):
            start = self.take()
            operand = self.nested(self.negation)
            self.need(operand, "bool", "'not'")
            run = operand.run
            return _Node("bool", start.offset, lambda scope: not run(scope))
        return self.comparison()

    def comparison(self) -> _Node:
        left = self.sum()
        if self.at(*_COMPARISONS):
            op = self.take()
            right = self.sum()
            if left.type != right.type:
                raise ExprError(f"cannot compare {_NOUN[left.type]} with {_NOUN[right.type]} using "
                                f"{op.text!r}", op.offset)
            if op.text not in ("==", "!=") and left.type not in ("int", "str"):
                raise ExprError(f"{op.text!r} needs numbers or texts, got {_NOUN[left.type]}", op.offset)
            return _Node("bool", left.offset, _compare(op.text, left.run, right.run))
        negated = self.at("not") and self.tokens[self.index + 1].text == "in"
        if self.at("in") or negated:
            op = self.take()
            if negated:
                self.take()
            right = self.sum()
            if right.type == "str":
                self.need(left, "str", "'in' with a text on the right")
            elif right.type != "list":
                raise ExprError(f"'in' needs a list or a text on the right, got {_NOUN[right.type]}",
                                right.offset)
            elif left.type not in ("str", "int"):
                raise ExprError(f"'in' looks for a number or text, got {_NOUN[left.type]}", left.offset)
            run = _contains(left.run, right.run)
            if negated:
                inner = run
                run = lambda scope: not inner(scope)  # noqa: E731
            return _Node("bool", left.offset, run)
        return left

    def sum(self) -> _Node:
        left = self.unary()
        while self.at("+", "-"):
            op = self.take()
            right = self.unary()
            if op.text == "+" and left.type == right.type == "str":
                left = _Node("str", left.offset, _join(left.run, right.run))
                continue
            if left.type != "int" or right.type != "int":
                bad = left if left.type != "int" else right
                what = "numbers or two texts" if op.text == "+" else "numbers"
                raise ExprError(f"{op.text!r} needs {what}, got {_NOUN[bad.type]}", bad.offset)
            left = _Node("int", left.offset, _arith(op.text, left.run, right.run))
        return left

    def unary(self) -> _Node:
        if self.at("-"):
            start = self.take()
            operand = self.nested(self.unary)
            self.need(operand, "int", "'-'")
            run = operand.run
            return _Node("int", start.offset, lambda scope: -run(scope))
        return self.atom()

    def atom(self) -> _Node:
        token = self.take()
        if token.kind == "int":
            if len(token.text) > 18:
                raise ExprError("number is too large", token.offset)
            value = int(token.text)
            return _Node("int", token.offset, lambda scope: value, value, True)
        if token.kind == "str":
            value = token.text[1:-1]
            return _Node("str", token.offset, lambda scope: value, value, True)
        if token.kind == "keyword" and token.text in ("true", "false"):
            value = token.text == "true"
            return _Node("bool", token.offset, lambda scope: value, value, True)
        if token.kind == "name":
            if self.at("("):
                return self.call(token)
            return self.variable(token)
        if token.kind == "op" and token.text == "(":
            node = self.nested(self.disjunction)
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            return self.list_literal(token)
        raise ExprError(f"expected a value, got {self.describe(token)}", token.offset)

    def variable(self, token: _Token) -> _Node:
        name = token.text
        if name not in self.variables:
            raise ExprError(f"unknown variable {name!r}{did_you_mean(name, self.variables)}", token.offset)
        self.names.add(name)
        return _Node(self.variables[name], token.offset, lambda scope: scope.variables[name])

    def list_literal(self, start: _Token) -> _Node:
        items: list[_Node] = []
        while not self.at("]"):
            if items:
                self.expect(",")
            item = self.nested(self.sum)
            if not item.is_literal or item.type not in ("int", "str"):
                raise ExprError("list items must be numbers or texts written out", item.offset)
            if items and item.type != items[0].type:
                raise ExprError("list items must all be numbers or all be texts", item.offset)
            items.append(item)
        self.expect("]")
        values = tuple(item.literal for item in items)
        return _Node("list", start.offset, lambda scope: values)

    def call(self, name: _Token) -> _Node:
        self.expect("(")
        bare = self.token
        if name.text in ("open", "holiday") and bare.kind == "name" and self.tokens[self.index + 1].text == ")":
            raise ExprError(f"{name.text}() needs a schedule name in quotes, such as {name.text}('{bare.text}')",
                            bare.offset)
        args: list[_Node] = []
        while not self.at(")"):
            if args:
                self.expect(",")
            args.append(self.nested(self.disjunction))
        self.expect(")")
        function = name.text
        if function in ("open", "holiday"):
            return self.schedule_call(name, args)
        if function == "len":
            self.arity(name, args, 1)
            if args[0].type not in ("str", "list"):
                raise ExprError(f"len() needs a text or a list, got {_NOUN[args[0].type]}", args[0].offset)
            run = args[0].run
            return _Node("int", name.offset, lambda scope: len(run(scope)))
        if function == "starts_with":
            self.arity(name, args, 2)
            for arg in args:
                self.need(arg, "str", "starts_with()")
            text, prefix = args[0].run, args[1].run
            return _Node("bool", name.offset, lambda scope: text(scope).startswith(prefix(scope)))
        raise ExprError(f"unknown function {function!r}"
                        f"{did_you_mean(function, FUNCTIONS) or '; expected one of ' + ', '.join(FUNCTIONS)}",
                        name.offset)

    def schedule_call(self, name: _Token, args: list[_Node]) -> _Node:
        self.arity(name, args, 1)
        arg = args[0]
        if not (arg.is_literal and arg.type == "str"):
            raise ExprError(f"{name.text}() needs a schedule name in quotes, such as {name.text}('office')",
                            arg.offset)
        schedule = arg.literal
        if self.schedules is not None and schedule not in self.schedules:
            raise ExprError(f"unknown schedule {schedule!r}{did_you_mean(schedule, self.schedules)}",
                            arg.offset)
        self.schedule_names.add(schedule)
        if name.text == "open":
            return _Node("bool", name.offset, lambda scope: scope.schedule_open(schedule, scope.now))
        return _Node("bool", name.offset, lambda scope: scope.schedule_holiday(schedule, scope.now))

    @staticmethod
    def arity(name: _Token, args: list[_Node], count: int) -> None:
        if len(args) != count:
            raise ExprError(f"{name.text}() takes {count} argument{'s' if count > 1 else ''}, got {len(args)}",
                            name.offset)

    @staticmethod
    def need(node: _Node, want: str, where: str) -> None:
        if node.type != want:
            raise ExprError(f"{where} needs {_NOUN[want]}, got {_NOUN[node.type]}", node.offset)


FUNCTIONS = ("open", "holiday", "len", "starts_with")


def _or(a, b):
    return lambda scope: a(scope) or b(scope)


def _and(a, b):
    return lambda scope: a(scope) and b(scope)


def _join(a, b):
    return lambda scope: a(scope) + b(scope)


def _contains(item, container):
    return lambda scope: item(scope) in container(scope)


def _arith(op: str, a, b):
    if op == "+":
        return lambda scope: a(scope) + b(scope)
    return lambda scope: a(scope) - b(scope)


def _compare(op: str, a, b):
    function = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}[op]
    return lambda scope: function(a(scope), b(scope))


def type_of(value: Any) -> str | None:
    """The expression type of a YAML value (None if it has none)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "list"
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "list"
    return None
