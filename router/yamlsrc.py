"""Safe YAML with source positions, for files that people edit by hand.

Theory of operation
-------------------
PyYAML's parser (libyaml when available) turns the text into a stream of
events; this module composes those events itself instead of using PyYAML's
composer and constructor, so that it can

- keep the 1-based line and column of every mapping key, mapping value and
  sequence item in a `Node` tree, for messages such as
  ``router.yaml:12:5: error: unknown key 'stratgy' in queue 'billing'``;
- refuse hostile input early, with one clear `Problem` instead of a hang or an
  exhausted memory: files over `MAX_BYTES`, bytes that are not UTF-8 text,
  anchors and aliases (the "billion laughs" bomb needs them), nesting deeper
  than `MAX_DEPTH`, explicit tags outside YAML's core schema, several
  documents in one file, and a top level that is not a mapping;
- own every limit it promises: size, text and nesting are checked on the text
  by our code before the parser runs (`_check_nesting` is a small line scanner
  of its own), so the message and its position stay ours whatever a PyYAML
  release does (6.0.4's libyaml stops at 1000 levels in its scanner, ahead of
  the events, with its own words); the composer's exact depth check stays;
- report a duplicate mapping key at the second occurrence (PyYAML silently
  keeps the last one) and go on, so a validator can report everything else too.

Scalars are resolved and built with the safe schema (ints, floats, booleans,
null, dates, strings); `Node.text` keeps the scalar's source text, because
YAML 1.1 reads some things people mean as text differently (``10:00`` is the
integer 600, ``no`` is false).  Mapping keys are always that source text.

Problems are collected in a `ProblemList`; `Problem` prints gcc-style,
``FILE:LINE:COL: error: MESSAGE``, the format the CLI prints.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import yaml
from yaml.events import (AliasEvent, DocumentEndEvent, DocumentStartEvent, MappingEndEvent,
                         MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent,
                         StreamEndEvent, StreamStartEvent)
from yaml.nodes import ScalarNode

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 50

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CORE_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                              ("str", "int", "float", "bool", "null", "timestamp"))
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_CONTROL_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about a source file, located at a 1-based line and column."""
    file: str
    line: int
    col: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in the source."""
    line: int
    col: int


class Node:
    """A YAML value with its position.

    `value` is a `dict[str, Node]` for a mapping, a `list[Node]` for a sequence
    and a plain Python scalar otherwise.  `keys` holds the position of each
    mapping key; `text` is a scalar's source text (None for collections).
    """
    __slots__ = ("value", "mark", "keys", "text")

    def __init__(self, value: Any, mark: Mark, keys: dict[str, Mark] | None = None,
                 text: str | None = None) -> None:
        self.value = value
        self.mark = mark
        self.keys = keys if keys is not None else {}
        self.text = text

    @property
    def line(self) -> int:
        return self.mark.line

    @property
    def col(self) -> int:
        return self.mark.col

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    @property
    def is_scalar(self) -> bool:
        return not (self.is_mapping or self.is_sequence)

    def to_python(self) -> Any:
        """The plain value, without positions."""
        if self.is_mapping:
            return {key: child.to_python() for key, child in self.value.items()}
        if self.is_sequence:
            return [child.to_python() for child in self.value]
        return self.value

    def __repr__(self) -> str:
        return f"Node({self.to_python()!r} at {self.line}:{self.col})"


class ProblemList:
    """Collects the problems found in one or more files."""

    def __init__(self) -> None:
        self._problems: list[Problem] = []

    def add(self, file: str, at: Node | Mark, severity: Severity, message: str) -> None:
        mark = at.mark if isinstance(at, Node) else at
        self._problems.append(Problem(file, mark.line, mark.col, severity, message))

    def error(self, file: str, at: Node | Mark, message: str) -> None:
        self.add(file, at, "error", message)

    def warning(self, file: str, at: Node | Mark, message: str) -> None:
        self.add(file, at, "warning", message)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.sorted() if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.sorted() if p.severity == "warning"]

    def sorted(self) -> list[Problem]:
        """All problems by file, line and column (stable for equal positions)."""
        return sorted(self._problems, key=lambda p: (p.file, p.line, p.col))

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.sorted())

    def __len__(self) -> int:
        return len(self._problems)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def read(path: str | Path, problems: ProblemList, filename: str | None = None) -> Node | None:
    """Load the YAML file at `path` (see `load`); reads at most `MAX_BYTES` + 1 bytes."""
    name = filename if filename is not None else str(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        problems.error(name, Mark(1, 1), f"cannot read file: {exc.strerror or exc}")
        return None
    return load(data, name, problems)


def load(source: str | bytes, filename: str, problems: ProblemList) -> Node | None:
    """Parse one YAML document whose top level is a mapping.

    Returns the root `Node`, or None after adding the fatal problem to
    `problems`.  Duplicate keys are added as errors without stopping.
    """
    try:
        text = _text_of(source)
        _check_nesting(text)
        return _Composer(filename, problems).compose(text)
    except _Fatal as fatal:
        problems.error(filename, fatal.mark, fatal.message)
        return None


class _Fatal(Exception):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _text_of(source: str | bytes) -> str:
    """Decoded, size-checked text without control characters."""
    if isinstance(source, bytes):
        size = len(source)
    else:
        size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _Fatal(Mark(1, 1), f"file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = source[:exc.start].decode("utf-8")
            raise _Fatal(_position(before, len(before)),
                         f"file is not UTF-8 text (byte 0x{source[exc.start]:02x})") from None
    else:
        text = source
    text = text.removeprefix("\ufeff")
    bad = _CONTROL_CHAR.search(text)
    if bad:
        raise _Fatal(_position(text, bad.start()),
                     f"file is not text: control character U+{ord(bad.group()):04X}")
    return text


_BLOCK_SCALAR = re.compile(r"[|>][-+0-9]*[ \t]*(#.*)?$")
_PLAIN_KEY = re.compile(r"""[^\s\[\]{},#&*!|>'"%@`?-][^#]*?:(?=[ \t]|$)|[?-][^\s#][^#]*?:(?=[ \t]|$)""")
_QUOTED_KEY = re.compile(r"""('(?:[^']|'')*'|"(?:[^"\\]|\\.)*")[ \t]*:(?=[ \t]|$)""")
_FLOW_STOP = re.compile(r"""[\[\]{}'"#]""")
_FLOW_KEY = re.compile(r"[ \t]*[^\s\[\]{}#:][^\[\]{}]*?:(?=[\s\]}]|$)")


def _check_nesting(text: str) -> None:
    """Raise `_Fatal` at the first collection nested deeper than `MAX_DEPTH`.

    Block collections are counted by indentation and `- ` entries (several may
    open on one line), flow collections by brackets outside quoted scalars,
    comments and block scalars, with the single-pair mapping that `key: [`
    makes inside a flow sequence.  The depth is the composer's (the top-level
    mapping is level 1), and so is the position reported.
    """
    blocks: list[tuple[int, bool]] = []   # (column, is_sequence) of the open block collections
    flow: list[tuple[str, int]] = []      # open flow brackets, each with the levels it adds (2 after `key:`)
    flow_depth = 0                        # the levels the open brackets add, together
    quote = ""                            # a quoted scalar left open at the end of a line
    scalar_parent = -1                    # column that a block scalar's lines are deeper than

    def opened(depth: int, line: int, col: int) -> None:
        if depth > MAX_DEPTH:
            raise _Fatal(Mark(line, col + 1), f"nesting deeper than {MAX_DEPTH} levels")

    def pairs_in(segment: str, number: int, col: int) -> None:
        """`key: value` entries of a flow sequence: each is a mapping of one pair, a level deeper."""
        for entry in segment.split(","):
            if _FLOW_KEY.match(entry):
                opened(len(blocks) + flow_depth + 1, number, col + len(entry) - len(entry.lstrip()))
            col += len(entry) + 1

    def scan_value(line: str, number: int, col: int) -> None:
        """Brackets and quotes from `col` on: a flow collection or a quoted scalar."""
        nonlocal flow_depth, quote
        scalar_start = True               # a quote only opens a scalar where a scalar may start
        while col < len(line):
            if quote:
                end = _closing_quote(line, col, quote)
                if end < 0:
                    return
                quote, col, scalar_start = "", end + 1, False
                continue
            if not flow and not scalar_start:
                return                    # a plain or quoted value has ended; the rest is its text
            found = _FLOW_STOP.search(line, col)
            at = found.start() if found else len(line)
            between = line[col:at]
            if flow and flow[-1][0] == "[":
                pairs_in(between, number, col)
            if found is None:
                return
            char = found.group()
            if between.strip() and not flow:
                return                    # a plain block value such as `a[1]`: no brackets of YAML's
            if char in "'\"":
                if not between.strip() or flow and between.rstrip()[-1] in ",:":
                    quote = char
                col, scalar_start = at + 1, False
            elif char == "#":
                if at == 0 or line[at - 1] in " \t":
                    return
                col = at + 1
            elif char in "[{":
                entry = between.rpartition(",")[2]
                levels = 2 if flow and flow[-1][0] == "[" and entry.rstrip().endswith(":") else 1
                flow.append((char, levels))
                flow_depth += levels
                opened(len(blocks) + flow_depth, number, at)
                col, scalar_start = at + 1, True
            else:
                flow_depth -= flow.pop()[1] if flow else 0
                col, scalar_start = at + 1, False
                if not flow:
                    return

    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if quote or flow:
            scan_value(line, number, 0)
            continue
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if scalar_parent >= 0:
            if not body.strip() or indent > scalar_parent:
                continue
            scalar_parent = -1
        if not body or body[0] in "#%" or (indent == 0 and body.startswith(("---", "..."))):
            continue
        entry = body == "-" or body.startswith(("- ", "-\t"))
        while blocks and (blocks[-1][0] > indent or blocks[-1] == (indent, True) and not entry):
            blocks.pop()
        col = indent
        while True:
            rest = line[col:]
            if rest == "-" or rest.startswith(("- ", "-\t")):
                kind = True
                key_end = 1
            else:
                key = _QUOTED_KEY.match(rest) or _PLAIN_KEY.match(rest)
                if key is None:
                    break
                kind, key_end = False, key.end()
            if not blocks or blocks[-1] != (col, kind):
                blocks.append((col, kind))
                opened(len(blocks), number, col)
            col += key_end
            col += len(line[col:]) - len(line[col:].lstrip(" \t"))
        if _BLOCK_SCALAR.match(line[col:]):
            scalar_parent = blocks[-1][0] if blocks else -1
        else:
            scan_value(line, number, col)


def _closing_quote(line: str, start: int, quote: str) -> int:
    """Index of the quote that closes a scalar opened before `start`, or -1 if it goes on."""
    index = start
    while index < len(line):
        char = line[index]
        if quote == '"' and char == "\\":
            index += 2
            continue
        if char == quote:
            if quote == "'" and line[index + 1:index + 2] == "'":
                index += 2
                continue
            return index
        index += 1
    return -1

def _position(text: str, index: int) -> Mark:
    line_start = text.rfind("\n", 0, index) + 1
    return Mark(text.count("\n", 0, index) + 1, index - line_start + 1)


def _mark(event: Any) -> Mark:
    return Mark(event.start_mark.line + 1, event.start_mark.column + 1)


class _Composer:
    """Builds the `Node` tree from PyYAML events, enforcing the limits."""

    def __init__(self, filename: str, problems: ProblemList) -> None:
        self.filename = filename
        self.problems = problems
        self.loader: Any = None
        self.resolver = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()

    def compose(self, text: str) -> Node:
        self.loader = _Loader(text)
        try:
            return self._document()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
            raise _Fatal(where, f"YAML syntax error: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise _Fatal(Mark(1, 1), f"YAML error: {exc}") from None
        finally:
            self.loader.dispose()

    def _next(self) -> Any:
        return self.loader.get_event()

    def _document(self) -> Node:
        self._expect(StreamStartEvent)
        event = self._next()
        if isinstance(event, StreamEndEvent):
            raise _Fatal(Mark(1, 1), "expected a mapping at the top level, got an empty file")
        root = self._node(self._next(), depth=1)
        self._expect(DocumentEndEvent)
        event = self._next()
        if isinstance(event, DocumentStartEvent):
            raise _Fatal(_mark(event), "only one YAML document per file is supported")
        if not root.is_mapping:
            raise _Fatal(root.mark, f"expected a mapping at the top level, got {describe(root.value)}")
        return root

    def _expect(self, kind: type) -> None:
        event = self._next()
        if not isinstance(event, kind):
            raise _Fatal(_mark(event), f"unexpected {type(event).__name__}")

    def _node(self, event: Any, depth: int) -> Node:
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Fatal(_mark(event), "anchors and aliases are not supported")
        if isinstance(event, ScalarEvent):
            return self._scalar(event)
        if depth > MAX_DEPTH:
            raise _Fatal(_mark(event), f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(event, SequenceStartEvent):
            self._check_collection_tag(event, _SEQ_TAG)
            items = []
            item = self._next()
            while not isinstance(item, SequenceEndEvent):
                items.append(self._node(item, depth + 1))
                item = self._next()
            return Node(items, _mark(event))
        if isinstance(event, MappingStartEvent):
            self._check_collection_tag(event, _MAP_TAG)
            return self._mapping(event, depth)
        raise _Fatal(_mark(event), f"unexpected {type(event).__name__}")

    def _mapping(self, start: MappingStartEvent, depth: int) -> Node:
        values: dict[str, Node] = {}
        keys: dict[str, Mark] = {}
        event = self._next()
        while not isinstance(event, MappingEndEvent):
            if not isinstance(event, ScalarEvent):
                raise _Fatal(_mark(event), "mapping keys must be plain text, not lists or mappings")
            if event.anchor is not None:
                raise _Fatal(_mark(event), "anchors and aliases are not supported")
            key, key_mark = event.value, _mark(event)
            if key == "<<" and event.implicit[0]:
                raise _Fatal(key_mark, "merge keys (<<) are not supported")
            value = self._node(self._next(), depth + 1)
            if key in keys:
                self.problems.error(self.filename, key_mark,
                                    f"duplicate key {key!r} (first at line {keys[key].line})")
            else:
                keys[key] = key_mark
                values[key] = value
            event = self._next()
        return Node(values, _mark(start), keys)

    def _check_collection_tag(self, event: Any, expected: str) -> None:
        if event.tag not in (None, "!", expected):
            raise _Fatal(_mark(event), f"tag {event.tag!r} is not supported")

    def _scalar(self, event: ScalarEvent) -> Node:
        tag = event.tag
        if tag in (None, "!"):
            tag = self.resolver.resolve(ScalarNode, event.value, event.implicit)
        if tag not in _CORE_SCALAR_TAGS:
            raise _Fatal(_mark(event), f"tag {event.tag!r} is not supported")
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = self.constructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            shown = event.value if len(event.value) <= 20 else event.value[:17] + "..."
            raise _Fatal(_mark(event), f"invalid {tag.rsplit(':', 1)[-1]} value {shown!r}") from None
        return Node(value, _mark(event), text=event.value)


def describe(value: Any) -> str:
    """How a value reads in a message: ``string 'ten'``, ``integer 5``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value}"
