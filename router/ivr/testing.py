"""`acd-router flows test`: run the YAML test cases that sit beside the flows.

Theory of operation
-------------------
A test file ``NAME.test.yaml`` names a `flow` and lists `cases`.  A case gives
the call (caller_id, dnis, time, optional language and context variables) and
the caller's `inputs` in order: a string of keys (``"1"``, ``"12345678#"``),
``timeout`` (silence until the Collect's timeout), ``hangup``,
``transfer_ok`` / ``transfer_failed``, or ``{barge_in: KEYS}`` (keys pressed
during a prompt).  Prompts otherwise play to the end by themselves.  The
runner drives a `FlowSession` exactly as a PBX adapter would, on a virtual
clock (1 s per prompt, 2 s per entry, the Collect's timeout for a silence),
and compares what happened with `expect`: path (every node entered, written
``node`` in the case's flow and ``flow.node`` elsewhere), outcome, queue,
priority, skills, data, variables, prompts (all prompts played, in order),
language, transfer, voicemail and survey scores.  Any key left out of
`expect` is not checked.  Failures print as ``FILE:LINE:COL: error: ...``
at the expectation (or the case) that failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from router.config.model import Schedule
from router.events import Event
from router.ivr.model import FlowSet
from router.ivr.session import (Collect, Digits, Enqueue, FlowSession, Hangup, HungUp, NoInput, OfferCallback, Play,
                                PromptDone, Transfer, TransferResult, Voicemail)
from router.ivr.validate import _Reader, check_flows, is_test_file
from router.yamlsrc import Mark, Node, ProblemList, describe, read

FILE_KEYS = ("flow", "cases")
CASE_KEYS = ("name", "caller_id", "dnis", "time", "language", "context", "inputs", "expect")
EXPECT_KEYS = ("path", "outcome", "queue", "priority", "skills", "data", "variables", "prompts", "language",
               "transfer", "voicemail", "surveys", "callback", "callback_number", "callback_at")
WORDS = {"timeout": NoInput(), "hangup": HungUp(), "transfer_ok": TransferResult(True),
         "transfer_failed": TransferResult(False)}
MAX_INPUTS = 1000


@dataclass
class TestReport:
    passed: int = 0
    failed: int = 0
    problems: ProblemList = field(default_factory=ProblemList)


@dataclass
class Trace:
    """What a case's call did, for comparison with its expectations."""
    path: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    outcome: str | None = None
    enqueue: Enqueue | None = None
    transfer: str | None = None
    voicemail: str | None = None
    callback: str | None = None
    callback_number: str | None = None
    callback_at: str | None = None     # ISO time in UTC of a scheduled call-back
    surveys: dict[str, int] = field(default_factory=dict)
    last_timeout: float = 5.0          # of the latest Collect: how long a silence lasts


def run_tests(path: str | Path, *, known_queues: Iterable[str] | None = None,
              schedules: Mapping[str, Schedule] | None = None,
              known_skills: Iterable[str] | None = None) -> TestReport:
    """Validate the flow directory of `path` and run its test files (or the one given)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    report = TestReport()
    flowset, problems = check_flows(directory, known_queues=known_queues, schedules=schedules,
                                    known_skills=known_skills)
    for problem in problems:
        report.problems.add(problem.file, Mark(problem.line, problem.col), problem.severity, problem.message)
    if flowset is None:
        return report
    files = sorted(p for p in directory.iterdir() if is_test_file(p)) if path.is_dir() else [path]
    if not files:
        report.problems.error(str(directory), Mark(1, 1), "no test files (*.test.yaml) beside the flows")
    for file in files:
        _run_file(file, flowset, report)
    return report


def _run_file(file: Path, flowset: FlowSet, report: TestReport) -> None:
    problems = report.problems
    root = read(file, problems)
    if root is None:
        report.failed += 1
        return
    reader = _Reader(str(file), problems, file.read_bytes())
    top = reader.fields(root, "the test file", FILE_KEYS, required=FILE_KEYS)
    if not top or "flow" not in top:
        report.failed += 1
        return
    flow = reader.text(top["flow"], "'flow'")
    if flow is not None and flow not in flowset.flows:
        reader.error(top["flow"], f"'flow': unknown flow {flow!r}")
        flow = None
    for index, case in enumerate(reader.items(top.get("cases"), "'cases'")):
        before = reader.error_count
        if flow is not None:
            _run_case(reader, flowset, flow, case, index)
        if reader.error_count == before and flow is not None:
            report.passed += 1
        else:
            report.failed += 1


def _run_case(reader: _Reader, flowset: FlowSet, flow: str, case: Node, index: int) -> None:
    f = reader.fields(case, f"case #{index + 1}", CASE_KEYS, required=("name", "inputs"))
    if f is None or "name" not in f or "inputs" not in f:
        return
    name = reader.text(f["name"], f"'name' of case #{index + 1}") or f"#{index + 1}"
    owner = f"case {name!r}"
    moment = _moment(reader, f.get("time"), owner)
    inputs = [_input(reader, item, owner) for item in reader.items(f["inputs"], f"'inputs' of {owner}")]
    if moment is None or None in inputs or len(inputs) > MAX_INPUTS:
        return
    context = f["context"].to_python() if "context" in f else {}
    try:
        session = FlowSession(flowset, flow, call_id=f"test-{index + 1}",
                              caller_id=_scalar(f.get("caller_id")), dnis=_scalar(f.get("dnis")), now=moment,
                              language=_scalar(f.get("language")) or None, context=context)
    except KeyError as exc:
        reader.error(f["context"] if "context" in f else case, f"{owner}: {exc.args[0]}")
        return
    trace = Trace()
    _record(trace, session.start(), flow)
    pending = list(inputs)
    while not session.finished:
        wait = session.expecting
        if wait == "prompt_done" and not (pending and isinstance(pending[0], _BargeIn)):
            moment += timedelta(seconds=1)
            _record(trace, session.handle(PromptDone(), moment), flow)
            continue
        if not pending:
            reader.error(f["inputs"], f"{owner}: the flow waits for {wait.replace('_', ' ')} at node "
                                      f"{_where(session, flow)!r}, but the case has no more inputs")
            return
        given = pending.pop(0)
        event = Digits(given.keys) if isinstance(given, _BargeIn) else given
        moment += timedelta(seconds=trace.last_timeout if isinstance(event, NoInput) else 2)
        try:
            _record(trace, session.handle(event, moment), flow)
        except ValueError as exc:
            reader.error(f["inputs"], f"{owner}: {exc}")
            return
    if pending:
        reader.error(f["inputs"], f"{owner}: the call ended ({session.outcome}) with {len(pending)} "
                                  f"input(s) left over")
    if "expect" in f:
        _compare(reader, f["expect"], owner, trace, session)


@dataclass(frozen=True)
class _BargeIn:
    keys: str


def _input(reader: _Reader, node: Node, owner: str) -> Any:
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool) and node.text is not None:
        value = node.text
    if node.is_mapping and set(value) == {"barge_in"} and isinstance(value["barge_in"].value, (str, int)):
        return _BargeIn(str(value["barge_in"].text or value["barge_in"].value))
    if isinstance(value, str) and value in WORDS:
        return WORDS[value]
    if isinstance(value, str) and value and all(char in "0123456789*#" for char in value):
        return Digits(value)
    reader.error(node, f"input of {owner}: expected keys such as \"1\" or \"1234#\", timeout, hangup, "
                       f"transfer_ok, transfer_failed or {{barge_in: KEYS}}, got {describe(node.to_python())}")
    return None


def _moment(reader: _Reader, node: Node | None, owner: str) -> datetime | None:
    if node is None:
        return datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    value = node.value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            pass
    if not isinstance(value, datetime):
        reader.error(node, f"'time' of {owner}: expected a date and time such as 2026-11-23T10:00:00+00:00, "
                           f"got {describe(node.value)}")
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _scalar(node: Node | None) -> str:
    if node is None or node.value is None:
        return ""
    return node.text if node.text is not None else str(node.value)


def _where(session: FlowSession, flow: str) -> str:
    return session.node.id if session.flow.name == flow else f"{session.flow.name}.{session.node.id}"


def _record(trace: Trace, outputs: list[Any], flow: str) -> None:
    for output in outputs:
        if isinstance(output, Event):
            data = output.data
            if output.type == "ivr.node":
                trace.path.append(data["node"] if data["flow"] == flow else f"{data['flow']}.{data['node']}")
            elif output.type == "ivr.ended":
                trace.outcome = data["outcome"]
            elif output.type == "survey.answered":
                trace.surveys[data["question"]] = data["score"]
        elif isinstance(output, Play):
            trace.prompts.extend(output.prompts)
        elif isinstance(output, Hangup) and output.message:
            trace.prompts.append(output.message)
        elif isinstance(output, Collect):
            trace.last_timeout = output.timeout_s
        elif isinstance(output, Enqueue):
            trace.enqueue = output
        elif isinstance(output, Transfer):
            trace.transfer = output.target
        elif isinstance(output, Voicemail):
            trace.voicemail = output.box
        elif isinstance(output, OfferCallback):
            trace.callback, trace.callback_number = output.queue, output.number
            trace.callback_at = output.at.isoformat() if output.at is not None else None


def _compare(reader: _Reader, node: Node, owner: str, trace: Trace, session: FlowSession) -> None:
    f = reader.fields(node, f"'expect' of {owner}", EXPECT_KEYS)
    if not f:
        return
    enqueue = trace.enqueue
    actual: dict[str, Any] = {
        "path": trace.path, "outcome": trace.outcome, "prompts": trace.prompts, "language": session.language,
        "queue": enqueue.queue if enqueue else None, "priority": enqueue.priority if enqueue else None,
        "skills": enqueue.skills if enqueue else None, "data": enqueue.data if enqueue else None,
        "transfer": trace.transfer, "voicemail": trace.voicemail, "surveys": trace.surveys,
        "callback": trace.callback, "callback_number": trace.callback_number, "callback_at": trace.callback_at,
    }
    for key, want_node in f.items():
        want = want_node.to_python()
        if key == "variables":
            got = {name: session.variables.get(name) for name in (want if isinstance(want, dict) else {})}
            got = {name: list(value) if isinstance(value, tuple) else value for name, value in got.items()}
        elif key in ("queue", "transfer", "voicemail", "callback", "callback_number", "callback_at", "outcome",
                     "language"):
            want = _scalar(want_node) if want is not None else None
            got = actual[key]
        else:
            got = actual[key]
        if got != want:
            reader.error(want_node, f"{owner}: expected {key} {_show(want)}, got {_show(got)}")


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return repr(value)
