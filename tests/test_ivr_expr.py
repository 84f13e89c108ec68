"""The flows' expression language: parsing with exact error offsets, type checks, evaluation."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from router.ivr.expr import MAX_DEPTH, MAX_LENGTH, ExprError, Scope, compile_expression

TYPES = {"caller_id": "str", "hour": "int", "vips": "list", "tries": "int", "ok": "bool", "account": "str"}
SCHEDULES = {"office": object()}
NOW = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)


def evaluate(text: str, **variables):
    values = {"caller_id": "+441", "hour": 10, "vips": ("+441", "+442"), "tries": 2, "ok": True, "account": ""}
    values.update(variables)
    scope = Scope(values, NOW, lambda name, now: name == "office", lambda name, now: False)
    return compile_expression(text, TYPES, SCHEDULES).evaluate(scope)


@pytest.mark.parametrize("text, value", [
    ("caller_id in vips", True),
    ("caller_id not in vips", False),
    ("'+44' in caller_id", True),
    ("hour >= 8 and hour < 20", True),
    ("not ok or tries > 5", False),
    ("tries + 3 - 1", 4),
    ("-tries", -2),
    ("'a' + 'b'", "ab"),
    ("len(vips) == 2", True),
    ("len(account) == 0", True),
    ("starts_with(caller_id, '+44')", True),
    ("open('office') and not holiday('office')", True),
    ("hour in [9, 10, 11]", True),
    ("(tries == 2) == ok", True),
    ('caller_id == "+441"', True),
])
def test_evaluation(text, value):
    assert evaluate(text) == value


def test_and_or_short_circuit_like_python():
    assert evaluate("ok or len(account) > 0", ok=True) is True
    assert evaluate("tries > 1 and caller_id == '+441'") is True


@pytest.mark.parametrize("text, offset, message", [
    ("hour >= ", 8, "expected a value, got the end of the expression"),
    ("hour = 8", 5, "unexpected '='; to compare, write '=='"),
    ("(hour > 8", 9, "expected ')', got the end of the expression"),
    ("hour > 8)", 8, "unexpected ')' after a complete expression"),
    ("caller_id == 'abc", 13, "unterminated text: add the closing quote"),
    ("hour @ 2", 5, "unexpected character '@'"),
    ("", 0, "empty expression"),
    ("callr_id == '1'", 0, "unknown variable 'callr_id'; did you mean 'caller_id'?"),
    ("opn('office')", 0, "unknown function 'opn'; did you mean 'open'?"),
    ("open('ofice')", 5, "unknown schedule 'ofice'; did you mean 'office'?"),
    ("open(office)", 5, "open() needs a schedule name in quotes, such as open('office')"),
    ("len(1, 2)", 0, "len() takes 1 argument, got 2"),
    ("[1, 'a']", 4, "list items must all be numbers or all be texts"),
])
def test_parse_errors_point_inside_the_expression(text, offset, message):
    with pytest.raises(ExprError) as raised:
        compile_expression(text, TYPES, SCHEDULES)
    assert (raised.value.offset, raised.value.message) == (offset, message)


@pytest.mark.parametrize("text, want, offset, message", [
    ("caller_id == 44", None, 10, "cannot compare text with number using '=='"),
    ("hour + 'x'", None, 7, "'+' needs numbers or two texts, got text"),
    ("ok < ok", None, 3, "'<' needs numbers or texts, got true/false"),
    ("not hour", None, 4, "'not' needs true/false, got number"),
    ("hour and ok", None, 0, "'and' needs true/false, got number"),
    ("hour in hour", None, 8, "'in' needs a list or a text on the right, got number"),
    ("tries + 1", "bool", 0, "expected a true/false expression, got number"),
    ("len(hour)", None, 4, "len() needs a text or a list, got number"),
    ("-caller_id", None, 1, "'-' needs number, got text"),
])
def test_type_errors(text, want, offset, message):
    with pytest.raises(ExprError) as raised:
        compile_expression(text, TYPES, SCHEDULES, want)
    assert (raised.value.offset, raised.value.message) == (offset, message)


def test_result_type_and_names():
    compiled = compile_expression("caller_id in vips and open('office')", TYPES, SCHEDULES, "bool")
    assert compiled.type == "bool"
    assert compiled.names == {"caller_id", "vips"} and compiled.schedules == {"office"}


def test_hostile_expressions_are_refused_not_run():
    with pytest.raises(ExprError, match="longer than"):
        compile_expression("1+" * MAX_LENGTH + "1", TYPES, SCHEDULES)
    with pytest.raises(ExprError, match="nests deeper"):
        compile_expression("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), TYPES, SCHEDULES)
    with pytest.raises(ExprError, match="unknown function '__import__'"):
        compile_expression("__import__('os')", TYPES, SCHEDULES)
    with pytest.raises(ExprError, match="too large"):
        compile_expression("9" * 40, TYPES, SCHEDULES)


def test_values_from_callers_are_data():
    assert evaluate("caller_id == '+441'", caller_id="' or 1 == 1 or '") is False
    assert evaluate("account + '#'", account="__import__('os').system('x')") == "__import__('os').system('x')#"
