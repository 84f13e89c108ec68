"""The shape of a flow file: node types and their fields, in one table.

Theory of operation
-------------------
`NODE_TYPES` maps each node type to its fields; a `Field` names the kind of
value it takes (a node reference, prompts, an expression of a given type, a
queue ...), whether it is required, its default and a one-line help text.  The
validator (router.ivr.validate) reads every node through this table, and
`json_schema()` turns the same table into the JSON Schema that editors use for
completion and inline errors (docs/flow.schema.json), so the two cannot drift.
Regenerate the committed file with
``python -m router.ivr.schema > docs/flow.schema.json`` (a test compares them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
BOX_PATTERN = r"^[A-Za-z0-9_-]{1,64}(@[A-Za-z0-9_-]{1,64})?$"
PROMPT_PATTERN = r"^(?!/)(?!.*\.\.)[A-Za-z0-9_/-]{1,128}$"
MENU_KEYS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#")
SAY_KINDS = ("digits", "number", "date")
SURVEY_QUESTIONS = ("csat", "nps")
TERMINATORS = ("#", "*", "none")
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):([0-5][0-9])$"
FILE_KEYS = ("flow", "description", "start", "timezone", "languages", "prompts", "variables", "nodes")
CONDITION_KEYS = ("if", "goto")
CONFIRM_KEYS = ("intro", "prompt", "yes", "no")


@dataclass(frozen=True)
class Field:
    kind: str
    help: str
    required: bool = False
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()


def _f(kind: str, help: str, **options: Any) -> Field:
    return Field(kind, help, **options)


_RETRY_FIELDS = {
    "retries": _f("int", "extra attempts after the first one", default=2, lo=0, hi=9),
    "noinput": _f("escalation", "prompts after a silence, one entry per attempt (the last repeats)"),
    "nomatch": _f("escalation", "prompts after a wrong entry, one entry per attempt (the last repeats)"),
}

NODE_TYPES: dict[str, dict[str, Field]] = {
    "play": {
        "prompts": _f("prompts", "prompt name or list of prompt names, played in order", required=True),
        "barge_in": _f("bool", "a key press stops the prompt (kept for the next menu or collect)",
                       default=False),
        "next": _f("node", "node after the prompts", required=True),
    },
    "say": {
        "kind": _f("choice", "how to read the value", required=True, choices=SAY_KINDS),
        "value": _f("expr:any", "expression to read out, e.g. account", required=True),
        "next": _f("node", "node after reading", required=True),
    },
    "menu": {
        "prompt": _f("prompts", "the menu prompt(s)", required=True),
        "options": _f("options", "key (0-9, * or #) -> node", required=True),
        "timeout_s": _f("number", "seconds to wait for a key", default=5.0, lo=1, hi=60),
        **_RETRY_FIELDS,
        "fallback": _f("node", "node after the last failed attempt"),
        "barge_in": _f("bool", "a key press interrupts the prompt", default=True),
    },
    "collect": {
        "prompt": _f("prompts", "prompt(s) asking for the digits", required=True),
        "into": _f("variable", "variable that receives the digits (text)", required=True),
        "min_digits": _f("int", "fewest digits accepted", default=1, lo=1, hi=32),
        "max_digits": _f("int", "most digits accepted", required=True, lo=1, hi=32),
        "terminator": _f("choice", "key that ends the entry early", default="#", choices=TERMINATORS),
        "first_digit_timeout_s": _f("number", "seconds to wait for the first digit", default=5.0, lo=1, hi=60),
        "inter_digit_timeout_s": _f("number", "seconds to wait between digits", default=3.0, lo=1, hi=30),
        "pattern": _f("pattern", "regular expression the whole entry must match, e.g. '[0-9]{8}'"),
        **_RETRY_FIELDS,
        "confirm": _f("confirm", "read the entry back and ask to confirm: {intro, prompt, yes, no}"),
        "next": _f("node", "node after a valid entry", required=True),
        "fallback": _f("node", "node after the last failed attempt"),
    },
    "set": {
        "values": _f("assignments", "variable -> expression (text) or literal value", required=True),
        "next": _f("node", "next node", required=True),
    },
    "branch": {
        "conditions": _f("conditions", "list of {if: EXPRESSION, goto: NODE}; the first true one wins",
                         required=True),
        "else": _f("node", "node when no condition holds", required=True),
    },
    "hours": {
        "schedule": _f("schedule", "a schedule of the centre config", required=True),
        "open": _f("node", "node while the schedule is open", required=True),
        "closed": _f("node", "node while it is closed", required=True),
        "holiday": _f("node", "node on a holiday (default: closed)"),
    },
    "language": {
        "language": _f("language", "prompt set to use from now on", required=True),
        "next": _f("node", "next node", required=True),
    },
    "queue": {
        "queue": _f("queue", "queue of the centre config", required=True),
        "priority": _f("int_or_expr", "added to the queue's priority (number or expression)", default=0),
        "skills": _f("skills", "extra skill -> minimum proficiency, e.g. {billing: 7}"),
        "language_skill": _f("int", "also require the caller's language at this proficiency", lo=1, hi=10),
        "data": _f("data", "name -> expression, attached to the call"),
        "prompt": _f("prompts", "prompt(s) before joining the queue"),
    },
    "callback": {
        "queue": _f("queue", "queue that calls back", required=True),
        "number": _f("expr:str", "number to call back (default: caller_id)", default="caller_id"),
        "at": _f("expr:time", "call back at this local time 'HH:MM' (flow timezone; today if still ahead, "
                              "else tomorrow): a time such as 14:30 or a text expression; '' for no slot"),
        "prompt": _f("prompts", "prompt(s) confirming the call-back"),
        "data": _f("data", "name -> expression, attached to the call-back"),
    },
    "transfer": {
        "target": _f("target", "external number (+441234567890) or endpoint (PJSIP/2000)", required=True),
        "prompt": _f("prompts", "prompt(s) before transferring"),
        "on_fail": _f("node", "node when the transfer fails (default: end the call)"),
    },
    "voicemail": {
        "box": _f("box", "voicemail box, e.g. 1000 or 1000@sales", required=True),
        "prompt": _f("prompts", "prompt(s) before the beep"),
    },
    "hangup": {
        "message": _f("prompt", "prompt played before hanging up"),
    },
    "goto": {
        "target": _f("node", "node of this flow to continue at"),
        "flow": _f("flow", "flow to continue in (from its start; no return)"),
    },
    "subflow": {
        "flow": _f("flow", "flow to run; it comes back here at a 'return' node", required=True),
        "next": _f("node", "node after the subflow returns", required=True),
    },
    "return": {},
    "distribute": {
        "split": _f("split", "node -> percentage; the percentages add up to 100", required=True),
    },
    "survey": {
        "question": _f("choice", "csat (1-5) or nps (0-10)", required=True, choices=SURVEY_QUESTIONS),
        "prompt": _f("prompts", "the question", required=True),
        "retries": _f("int", "extra attempts after the first one", default=1, lo=0, hi=9),
        "noinput": _f("escalation", "prompts after a silence, one entry per attempt"),
        "nomatch": _f("escalation", "prompts after an answer out of range, one entry per attempt"),
        "into": _f("variable", "variable that receives the score (number)"),
        "next": _f("node", "next node (also when there is no answer)", required=True),
    },
}

SENSITIVE_HELP = "a recorded call's recording is muted while the caller is in this node (card numbers)"

INPUT_TYPES = frozenset({"menu", "collect", "survey", "transfer", "subflow"})
"""Node types that wait for the caller or the outside world (a loop through one is not stuck)."""

NODE_HELP = {
    "play": "play prompts", "say": "read out digits, a number or a date", "menu": "choose by key",
    "collect": "collect digits into a variable", "set": "set variables", "branch": "choose by conditions",
    "hours": "branch on a schedule", "language": "switch the prompt set", "queue": "join a queue",
    "callback": "offer a call-back", "transfer": "transfer out", "voicemail": "leave a voicemail",
    "hangup": "end the call", "goto": "jump", "subflow": "run another flow and come back",
    "return": "return from a subflow", "distribute": "split traffic by percentage",
    "survey": "post-call survey question",
}


def _field_schema(field: Field) -> dict[str, Any]:
    prompt = {"type": "string", "pattern": PROMPT_PATTERN}
    prompts = {"oneOf": [prompt, {"type": "array", "items": prompt, "minItems": 1}]}
    ident = {"type": "string", "pattern": ID_PATTERN}
    expression = {"type": "string", "minLength": 1}
    kinds: dict[str, dict[str, Any]] = {
        "node": ident, "flow": ident, "variable": ident, "queue": ident, "schedule": ident,
        "language": ident, "box": {"type": "string", "pattern": BOX_PATTERN}, "prompt": prompt, "prompts": prompts,
        "escalation": {"type": "array", "items": prompts},
        "bool": {"type": "boolean"}, "int": {"type": "integer"}, "number": {"type": "number"},
        "choice": {"enum": list(field.choices)},
        "expr:any": {"oneOf": [expression, {"type": "integer"}]},
        "expr:str": expression,
        "expr:time": expression,
        "int_or_expr": {"oneOf": [{"type": "integer"}, expression]},
        "pattern": {"type": "string", "minLength": 1},
        "target": {"type": "string", "pattern": r"^(\+?[0-9]{2,20}|[A-Za-z]+/[A-Za-z0-9_@.+-]+)$"},
        "options": {"type": "object", "minProperties": 1, "additionalProperties": False,
                    "patternProperties": {r"^[0-9*#]$": ident}},
        "assignments": {"type": "object", "minProperties": 1, "propertyNames": ident,
                        "additionalProperties": {"type": ["string", "integer", "boolean", "array"]}},
        "conditions": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": list(CONDITION_KEYS), "additionalProperties": False,
            "properties": {"if": expression, "goto": ident}}},
        "split": {"type": "object", "minProperties": 1, "propertyNames": ident,
                  "additionalProperties": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}},
        "skills": {"type": "object", "propertyNames": ident,
                   "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 10}},
        "data": {"type": "object", "propertyNames": ident,
                 "additionalProperties": {"type": ["string", "integer", "boolean"]}},
        "confirm": {"type": "object", "required": ["prompt"], "additionalProperties": False,
                    "properties": {"intro": prompts, "prompt": prompts, "yes": {"enum": list(MENU_KEYS)},
                                   "no": {"enum": list(MENU_KEYS)}}},
    }
    schema = dict(kinds[field.kind])
    schema["description"] = field.help
    if field.lo is not None:
        schema["minimum"] = field.lo
    if field.hi is not None:
        schema["maximum"] = field.hi
    if field.default is not None:
        schema["default"] = field.default
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow file, generated from `NODE_TYPES`."""
    node_schemas = []
    for name, fields in NODE_TYPES.items():
        properties: dict[str, Any] = {"type": {"const": name, "description": NODE_HELP[name]},
                                      "description": {"type": "string"},
                                      "sensitive": {"type": "boolean", "description": SENSITIVE_HELP}}
        properties.update({key: _field_schema(field) for key, field in fields.items()})
        required = ["type"] + [key for key, field in fields.items() if field.required]
        node_schemas.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                             "then": {"properties": properties, "required": required,
                                      "additionalProperties": False}})
    prompt_text = {"type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/acd-router/acd-router/docs/flow.schema.json",
        "title": "acd-router IVR flow file",
        "description": "One IVR flow (flow, start, nodes) and/or prompts and languages shared by "
                       "the flow directory. Generated from router/ivr/schema.py.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "flow": {"type": "string", "pattern": ID_PATTERN, "description": "name of the flow"},
            "description": {"type": "string"},
            "start": {"type": "string", "pattern": ID_PATTERN, "description": "first node"},
            "timezone": {"type": "string", "description": "IANA time zone of hour, weekday, date, time"},
            "languages": {"type": "array", "items": {"type": "string", "pattern": ID_PATTERN},
                          "description": "prompt sets; the first is the default"},
            "prompts": {"type": "object", "propertyNames": {"pattern": PROMPT_PATTERN},
                        "additionalProperties": {"oneOf": [prompt_text, {
                            "type": "object", "additionalProperties": prompt_text}]},
                        "description": "prompt name -> text, or language -> text"},
            "variables": {"type": "object", "propertyNames": {"pattern": ID_PATTERN},
                          "additionalProperties": {"type": ["string", "integer", "boolean", "array"]},
                          "description": "variable -> starting value (its type is the variable's type)"},
            "nodes": {"type": "object", "propertyNames": {"pattern": ID_PATTERN},
                      "additionalProperties": {
                          "type": "object", "required": ["type"],
                          "properties": {"type": {"enum": list(NODE_TYPES)}},
                          "allOf": node_schemas}},
        },
        "dependentRequired": {"flow": ["start", "nodes"]},
    }


def json_schema_text() -> str:
    """`json_schema()` as the text committed in docs/flow.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(json_schema_text(), end="")
