"""`--set PATH=VALUE`: what-if changes to the config document, made before it is validated.

Theory of operation
-------------------
A change is a dotted PATH into the YAML document and a VALUE read as YAML
(`queues.billing.wrap_up_s=30`, `simulation.no_answer_rate=0.05`,
`simulation.arrivals.sales=[10, 12, 14]`, `simulation.shifts.0.agents=[a001]`).
Mapping keys are walked by name (a missing intermediate key becomes an empty
mapping, a missing last key is added); list items by their `id` (queues,
agents, skills, schedules) or by their 0-based index (lists without ids).

The change is made on the positioned node tree of `router.yamlsrc`, so the
unchanged validator checks the changed document exactly as it checks a file.
The nodes a change brings in carry marks of their own: a line number from
`CHANGE_LINE` up, one band of lines per change.  Problems found at those marks
are reported against the change, as `--set PATH=VALUE:1:COL: error: MESSAGE`
with COL the column within the argument; problems elsewhere keep the file's
position.  A path that leads nowhere (an unknown id, a scalar where a mapping
or list was needed) is reported the same way, without validating.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from router.config.loader import validate, default_config_path
from router.config.model import Centre
from router.yamlsrc import Mark, Node, ProblemList, describe, did_you_mean, load, read

CHANGE_LINE = 1_000_000             # changes' nodes: line CHANGE_LINE + n * CHANGE_LINES + their own line
CHANGE_LINES = 1_000
_WRAPPER = "v: "                    # a VALUE is parsed as the value of a one-key document


def check_changed_config(path: str | Path | None, changes: Sequence[str], *,
                         environ: Mapping[str, str] | None = None) -> tuple[Centre | None, ProblemList]:
    """`check_config` of the file with `changes` (each 'PATH=VALUE') applied before validation."""
    filename = str(path if path is not None else default_config_path())
    problems = ProblemList()
    root = read(filename, problems)
    if root is None:
        return None, problems
    for number, change in enumerate(changes):
        apply_change(root, number, change, problems)
    if problems.errors:
        return None, problems
    centre = validate(root, filename, problems, os.environ if environ is None else environ)
    return centre, _placed(problems, changes)


def apply_change(root: Node, number: int, change: str, problems: ProblemList) -> None:
    """Make change `number` ('PATH=VALUE') on the document `root`; path problems go to `problems`."""
    where = f"--set {change}"
    path_text, equals, value_text = change.partition("=")
    keys = path_text.split(".")
    if not equals or not all(key.strip() for key in keys):
        problems.error(where, Mark(1, 1), "expected PATH=VALUE, a dotted path into the config such as "
                                          "queues.billing.wrap_up_s=30")
        return
    value = _value(value_text, number, len(path_text) + 1, where, problems)
    if value is None:
        return
    node, column = root, 1
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        here = ".".join(keys[:depth]) or "the config"
        mark = Mark(_line(number, 1), column)
        if node.is_mapping:
            child = node.value.get(key)
            if last or child is None or child.value is None:
                child = value if last else Node({}, mark)
                node.value[key] = child
                node.keys.setdefault(key, mark)
        elif node.is_sequence:
            index = _item(node, key)
            if index is None:
                ids = [str(item.value["id"].value) for item in node.value
                       if item.is_mapping and "id" in item.value]
                known = f" (ids: {', '.join(ids)})" if ids else f" (0 to {len(node.value) - 1})" if node.value else ""
                problems.error(where, Mark(1, column), f"no item {key!r} in {here}{known}{did_you_mean(key, ids)}")
                return
            if last:
                node.value[index] = value
            child = node.value[index]
        else:
            problems.error(where, Mark(1, column), f"{here} is {describe(node.value)}: it has no {key!r}")
            return
        node, column = child, column + len(key) + 1


def _value(text: str, number: int, column: int, where: str, problems: ProblemList) -> Node | None:
    """VALUE as a node whose marks are this change's; None (and a problem) if it is not YAML."""
    parsed = ProblemList()
    document = load(_WRAPPER + text, where, parsed)
    for problem in parsed:
        problems.add(where, Mark(1, max(1, column + problem.col - len(_WRAPPER))), problem.severity,
                     problem.message)
    if document is None or parsed.errors:
        return None
    value = document.value["v"]
    _remark(value, number, column - len(_WRAPPER))
    return value


def _remark(node: Node, number: int, shift: int) -> None:
    node.mark = Mark(_line(number, node.line), max(1, node.col + shift))
    node.keys = {key: Mark(_line(number, mark.line), max(1, mark.col + shift)) for key, mark in node.keys.items()}
    children = node.value.values() if node.is_mapping else node.value if node.is_sequence else ()
    for child in children:
        _remark(child, number, shift)


def _line(number: int, line: int) -> int:
    return CHANGE_LINE + number * CHANGE_LINES + line


def _item(sequence: Node, key: str) -> int | None:
    """The index of the item whose id is `key`, else `key` read as an index."""
    for index, item in enumerate(sequence.value):
        if item.is_mapping and "id" in item.value and str(item.value["id"].value) == key:
            return index
    if key.isdigit() and int(key) < len(sequence.value):
        return int(key)
    return None


def _placed(problems: ProblemList, changes: Sequence[str]) -> ProblemList:
    """Problems at a change's marks reported against that change."""
    placed = ProblemList()
    for problem in problems:
        if problem.line >= CHANGE_LINE:
            number, line = divmod(problem.line - CHANGE_LINE, CHANGE_LINES)
            placed.add(f"--set {changes[number]}", Mark(line, problem.col), problem.severity, problem.message)
        else:
            placed.add(problem.file, Mark(problem.line, problem.col), problem.severity, problem.message)
    return placed
