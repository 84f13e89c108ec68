"""The flow interpreter: one call's walk through a `FlowSet`, sans-IO.

Theory of operation
-------------------
A `FlowSession` is a state machine in the style of h11: the driver (the
FastAGI adapter, the simulator, `flows test`) feeds it inputs and carries out
the outputs it returns, in order.  There is no clock, no I/O and no await
inside; time is the `now` passed with each input and stamps every event.

`start()` enters the flow's start node and runs until the session must wait.
Outputs come in batches; the last command of a batch says what the session
waits for (`expecting`):

- ``Play`` / ``Say`` last: ``"prompt_done"`` (the driver plays and reports
  `PromptDone`; with barge-in a key press comes back as `Digits` instead);
- ``Collect`` last: ``"digits"`` (`Digits` with what the caller typed, or
  `NoInput` when the Collect's timeout passed);
- ``Transfer`` last: ``"transfer_result"`` (`TransferResult(ok)`);
- ``Enqueue``, ``OfferCallback``, ``Voicemail``, ``Hangup``: the IVR is over
  (``expecting`` is None) and an ``ivr.ended`` event says how.

`HungUp` is accepted at any wait.  Every node entered writes ``ivr.node`` and
every caller input ``ivr.input`` (menu keys and survey scores as given; for
collected digits only their count, so account numbers stay out of the event
store); ``survey.answered`` carries survey scores.  Outcomes of ``ivr.ended``:
completed (the flow ended the call itself: hang-up node, voicemail, end of a
survey), queued, callback, transferred, transfer_failed, hangup (the caller
hung up), timeout (the call ended after the caller stayed silent through a
menu's attempts) and error (step budget or subflow depth exceeded).

A ``callback`` node with ``at`` asks for a slot: the expression gives a local
time 'HH:MM' in the flow's timezone, and `OfferCallback.at` is its next
occurrence (today if still ahead, else tomorrow; a time the spring change skips
is the moment the clocks jump), an aware UTC datetime.  An empty text means no
slot; anything else that is not a time also gives no slot, and ``ivr.ended``
says ``at_invalid``.

Each input may run at most `MAX_STEPS` nodes: a loop that never waits ends
the call with outcome ``error`` instead of hanging the driver.  Random choices
(`distribute`) use a `random.Random` seeded with the seed and the call id, so
a run is reproducible.  A session keeps the `FlowSet` it started with, so a
reload never changes a call in progress.
"""
from __future__ import annotations

import random
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any, Mapping, Union

from router import schedules as business_hours
from router.events import Event
from router.ivr.expr import Expression, Scope
from router.ivr.model import Flow, FlowNode, FlowSet
from router.ivr.schema import CLOCK_PATTERN
from router.ivr.validate import BUILTINS

MAX_STEPS = 1000
MAX_SUBFLOW_DEPTH = 16
MAX_DIGITS_INPUT = 64
_KEYS = frozenset("0123456789*#")
_CLOCK = re.compile(CLOCK_PATTERN)

# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digits:
    text: str


@dataclass(frozen=True, slots=True)
class NoInput:
    """The Collect's timeout passed without a key."""


@dataclass(frozen=True, slots=True)
class HungUp:
    pass


@dataclass(frozen=True, slots=True)
class TransferResult:
    ok: bool


@dataclass(frozen=True, slots=True)
class PromptDone:
    pass


Input = Union[Digits, NoInput, HungUp, TransferResult, PromptDone]

# --- outputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play:
    prompts: tuple[str, ...]
    barge_in: bool
    language: str


@dataclass(frozen=True, slots=True)
class Say:
    kind: str            # digits | number | date
    value: str
    language: str


@dataclass(frozen=True, slots=True)
class Collect:
    max_digits: int
    min_digits: int
    timeout_s: float     # until the first key
    inter_digit_s: float
    terminator: str | None
    typed: str = ""      # keys the caller typed ahead during a prompt (already counted)


@dataclass(frozen=True, slots=True)
class Enqueue:
    queue: str
    priority: int
    skills: dict[str, int]
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OfferCallback:
    queue: str
    number: str
    data: dict[str, Any]
    at: datetime | None = None           # the slot the caller chose (aware, UTC); None: no slot


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str


@dataclass(frozen=True, slots=True)
class Voicemail:
    box: str


@dataclass(frozen=True, slots=True)
class Hangup:
    message: str | None
    language: str


Command = Union[Play, Say, Collect, Enqueue, OfferCallback, Transfer, Voicemail, Hangup]
Output = Union[Command, Event]


class InvalidInput(ValueError):
    """An input that does not fit what the session waits for."""


@dataclass(slots=True)
class _Frame:
    flow: Flow
    return_to: str


@dataclass(slots=True)
class _Wait:
    kind: str                       # prompt | digits | confirm | transfer
    resume: str | None = None       # node after a prompt
    failures: dict[str, int] = field(default_factory=lambda: {"noinput": 0, "nomatch": 0})


class FlowSession:
    def __init__(self, flowset: FlowSet, flow_name: str, *, call_id: str, caller_id: str, dnis: str,
                 now: datetime, language: str | None = None, rng_seed: int = 0,
                 context: Mapping[str, Any] | None = None) -> None:
        """`context` sets declared variables at the start (e.g. queue and agent for a survey)."""
        if flow_name not in flowset.flows:
            raise KeyError(f"no flow {flow_name!r} in flow set {flowset.version}")
        _check_aware(now)
        self.flowset = flowset
        self.call_id = call_id
        self.now = now
        self.language = language if language in flowset.languages else flowset.languages[0]
        self.variables: dict[str, Any] = dict(flowset.variables)
        for name, value in (context or {}).items():
            if name not in flowset.variable_types or name in BUILTINS:
                raise KeyError(f"context variable {name!r} is not declared in the flow set")
            self.variables[name] = value
        self.variables.update(caller_id=str(caller_id), dnis=str(dnis))
        self.flow = flowset.flows[flow_name]
        self.node: FlowNode = self.flow.nodes[self.flow.start]
        self.outcome: str | None = None
        self._stack: list[_Frame] = []
        self._wait: _Wait | None = None
        self._typeahead = ""
        self._timed_out = False
        self._started = False
        self._rng = random.Random(f"{rng_seed}:{call_id}")
        self._out: list[Output] = []
        self._steps = 0

    # ---- public API -----------------------------------------------------------------------

    @property
    def expecting(self) -> str | None:
        """What the session waits for: prompt_done, digits, transfer_result, or None when over."""
        if self._wait is None:
            return None
        return {"prompt": "prompt_done", "digits": "digits", "confirm": "digits",
                "transfer": "transfer_result"}[self._wait.kind]

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def confirming(self) -> bool:
        """True while a collect node waits for the caller to confirm what was read back."""
        return self._wait is not None and self._wait.kind == "confirm"

    def menu_options(self) -> tuple[str, ...]:
        """The keys of the menu waiting for a choice (empty when not in a menu)."""
        if self._wait is not None and self._wait.kind == "digits" and self.node.type == "menu":
            return tuple(self.node.params["options"])
        return ()

    def start(self) -> list[Output]:
        if self._started:
            raise InvalidInput("the session has already started")
        self._started = True
        return self._run(self.flow.start)

    def handle(self, event: Input, now: datetime | None = None) -> list[Output]:
        """Apply one input at `now` (default: the time of the previous one)."""
        if not self._started:
            raise InvalidInput("call start() first")
        if now is not None:
            _check_aware(now)
            self.now = now
        if self.finished:
            if isinstance(event, HungUp):
                return []
            raise InvalidInput(f"the IVR is over ({self.outcome}); got {type(event).__name__}")
        wait = self._wait
        assert wait is not None
        if isinstance(event, HungUp):
            self._input("hangup")
            self._end("hangup")
            return self._flush()
        handler = {
            "prompt": (PromptDone, Digits), "digits": (Digits, NoInput), "confirm": (Digits, NoInput),
            "transfer": (TransferResult,)}[wait.kind]
        if not isinstance(event, handler):
            raise InvalidInput(f"waiting for {self.expecting} at node {self.node.id!r}, "
                               f"got {type(event).__name__}")
        if isinstance(event, Digits) and not _valid_keys(event.text):
            event = Digits("?")                # not phone keys: a wrong entry
        self._steps = 0
        next_node = getattr(self, f"_resume_{wait.kind}")(wait, event)
        return self._run(next_node) if next_node is not None else self._flush()

    # ---- the run loop ---------------------------------------------------------------------

    def _run(self, node_id: str | None) -> list[Output]:
        while node_id is not None and not self.finished:
            self._steps += 1
            if self._steps > MAX_STEPS:
                self._end("error", reason=f"more than {MAX_STEPS} nodes without waiting for the caller")
                self._out.append(Hangup(None, self.language))
                break
            node_id = self._enter(node_id)
        return self._flush()

    def _flush(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _enter(self, node_id: str) -> str | None:
        self.node = node = self.flow.nodes[node_id]
        self._wait = None
        self._event("ivr.node", type=node.type, **({"sensitive": True} if node.sensitive else {}))
        return getattr(self, f"_node_{node.type}")(node.params)

    def _event(self, kind: str, queue: str | None = None, agent: str | None = None, **data: Any) -> None:
        self._out.append(Event(self.now.timestamp(), kind, call_id=self.call_id, queue=queue, agent=agent,
                               data={"flow": self.flow.name, "node": self.node.id, **data}))

    def _input(self, kind: str, **data: Any) -> None:
        self._event("ivr.input", input=kind, **data)

    def _end(self, outcome: str, **data: Any) -> None:
        self.outcome = outcome
        self._wait = None
        self._event("ivr.ended", outcome=outcome, **data)

    def _play(self, prompts: tuple[str, ...], barge_in: bool = False) -> None:
        if prompts:
            self._out.append(Play(prompts, barge_in, self.language))

    def _scope(self) -> Scope:
        local = self.now.astimezone(zoneinfo.ZoneInfo(self.flow.timezone))
        self.variables.update(language=self.language, hour=local.hour, minute=local.minute,
                              weekday=("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()],
                              date=local.date().isoformat(), time=f"{local.hour:02d}:{local.minute:02d}")
        return Scope(self.variables, self.now, self._schedule_open, self._schedule_holiday)

    def _value(self, value: Any, scope: Scope) -> Any:
        return value.evaluate(scope) if isinstance(value, Expression) else value

    def _schedule_open(self, name: str, moment: datetime) -> bool:
        schedule = self.flowset.schedules.get(name)
        return schedule is not None and business_hours.is_open(schedule, moment)

    def _schedule_holiday(self, name: str, moment: datetime) -> bool:
        schedule = self.flowset.schedules.get(name)
        return schedule is not None and business_hours.is_holiday(schedule, moment)

    # ---- nodes: each returns the next node id, or None to wait or end ----------------------

    def _node_play(self, p: Mapping[str, Any]) -> str | None:
        self._play(p["prompts"], p["barge_in"])
        self._wait = _Wait("prompt", resume=p["next"])
        return None

    def _node_say(self, p: Mapping[str, Any]) -> str | None:
        self._out.append(Say(p["kind"], str(p["value"].evaluate(self._scope())), self.language))
        self._wait = _Wait("prompt", resume=p["next"])
        return None

    def _node_menu(self, p: Mapping[str, Any]) -> str | None:
        self._wait = _Wait("digits")
        if self._typeahead:
            key, self._typeahead = self._typeahead[0], ""
            return self._resume_digits(self._wait, Digits(key))
        self._ask_menu(p)
        return None

    def _ask_menu(self, p: Mapping[str, Any], before: tuple[str, ...] = ()) -> None:
        self._play(before + p["prompt"], p["barge_in"])
        self._out.append(Collect(1, 1, p["timeout_s"], p["timeout_s"], None))

    def _node_collect(self, p: Mapping[str, Any]) -> str | None:
        self._wait = _Wait("digits")
        self._ask_collect(p)
        return None

    def _ask_collect(self, p: Mapping[str, Any], before: tuple[str, ...] = ()) -> None:
        typed, self._typeahead = self._typeahead, ""
        self._play(before + p["prompt"], True)
        terminator = None if p["terminator"] == "none" else p["terminator"]
        self._out.append(Collect(p["max_digits"], p["min_digits"], p["first_digit_timeout_s"],
                                 p["inter_digit_timeout_s"], terminator, typed))

    def _node_survey(self, p: Mapping[str, Any]) -> str | None:
        self._wait = _Wait("digits")
        self._ask_survey(p)
        return None

    def _ask_survey(self, p: Mapping[str, Any], before: tuple[str, ...] = ()) -> None:
        self._play(before + p["prompt"], True)
        self._out.append(Collect(2 if p["question"] == "nps" else 1, 1, 5.0, 3.0, "#"))

    def _node_set(self, p: Mapping[str, Any]) -> str | None:
        scope = self._scope()
        values = {name: self._value(value, scope) for name, value in p["values"].items()}
        self.variables.update(values)
        return p["next"]

    def _node_branch(self, p: Mapping[str, Any]) -> str | None:
        scope = self._scope()
        for test, target in p["conditions"]:
            if test.evaluate(scope):
                return target
        return p["else"]

    def _node_hours(self, p: Mapping[str, Any]) -> str | None:
        if "holiday" in p and self._schedule_holiday(p["schedule"], self.now):
            return p["holiday"]
        return p["open"] if self._schedule_open(p["schedule"], self.now) else p["closed"]

    def _node_language(self, p: Mapping[str, Any]) -> str | None:
        self.language = p["language"]
        return p["next"]

    def _node_queue(self, p: Mapping[str, Any]) -> str | None:
        scope = self._scope()
        skills = dict(p.get("skills", {}))
        if "language_skill" in p:
            skills[self.language] = p["language_skill"]
        data = {key: self._value(value, scope) for key, value in p.get("data", {}).items()}
        self._play(p.get("prompt", ()))
        self._out.append(Enqueue(p["queue"], int(self._value(p["priority"], scope)), skills, data))
        self._end("queued", queue=p["queue"])
        return None

    def _node_callback(self, p: Mapping[str, Any]) -> str | None:
        scope = self._scope()
        data = {key: self._value(value, scope) for key, value in p.get("data", {}).items()}
        slot, details = None, {}
        if "at" in p:
            text = str(p["at"].evaluate(scope))
            slot = next_occurrence(text, self.now, self.flow.timezone)
            details = {"at": slot.isoformat()} if slot else {"at_invalid": text} if text else {}
        self._play(p.get("prompt", ()))
        self._out.append(OfferCallback(p["queue"], str(p["number"].evaluate(scope)), data, slot))
        self._end("callback", queue=p["queue"], **details)
        return None

    def _node_transfer(self, p: Mapping[str, Any]) -> str | None:
        self._play(p.get("prompt", ()))
        self._out.append(Transfer(p["target"]))
        self._wait = _Wait("transfer")
        return None

    def _node_voicemail(self, p: Mapping[str, Any]) -> str | None:
        self._play(p.get("prompt", ()))
        self._out.append(Voicemail(p["box"]))
        self._end("completed", via="voicemail")
        return None

    def _node_hangup(self, p: Mapping[str, Any]) -> str | None:
        self._out.append(Hangup(p.get("message"), self.language))
        self._end("timeout" if self._timed_out else "completed")
        return None

    def _node_goto(self, p: Mapping[str, Any]) -> str | None:
        if "target" in p:
            return p["target"]
        self.flow = self.flowset.flows[p["flow"]]
        return self.flow.start

    def _node_subflow(self, p: Mapping[str, Any]) -> str | None:
        if len(self._stack) >= MAX_SUBFLOW_DEPTH:
            self._end("error", reason=f"subflows nested deeper than {MAX_SUBFLOW_DEPTH}")
            self._out.append(Hangup(None, self.language))
            return None
        self._stack.append(_Frame(self.flow, p["next"]))
        self.flow = self.flowset.flows[p["flow"]]
        return self.flow.start

    def _node_return(self, p: Mapping[str, Any]) -> str | None:
        if not self._stack:
            self._out.append(Hangup(None, self.language))
            self._end("completed")
            return None
        frame = self._stack.pop()
        self.flow = frame.flow
        return frame.return_to

    def _node_distribute(self, p: Mapping[str, Any]) -> str | None:
        draw = self._rng.random() * 100.0
        for target, share in p["split"]:
            draw -= share
            if draw < 0:
                return target
        return p["split"][-1][0]

    # ---- resuming after a wait -------------------------------------------------------------

    def _resume_prompt(self, wait: _Wait, event: Input) -> str | None:
        if isinstance(event, Digits):
            self._input("barge_in", value=event.text[:1])
            self._typeahead += event.text[:MAX_DIGITS_INPUT]
        return wait.resume

    def _resume_transfer(self, wait: _Wait, event: TransferResult) -> str | None:
        self._input("transfer", ok=event.ok)
        if event.ok:
            self._end("transferred", target=self.node.params["target"])
            return None
        if "on_fail" in self.node.params:
            return self.node.params["on_fail"]
        self._out.append(Hangup(None, self.language))
        self._end("transfer_failed", target=self.node.params["target"])
        return None

    def _resume_digits(self, wait: _Wait, event: Digits | NoInput) -> str | None:
        node = self.node
        p = node.params
        if isinstance(event, NoInput):
            self._input("noinput")
            return self._failure(wait, "noinput")
        self._timed_out = False
        text = event.text[:MAX_DIGITS_INPUT]
        if node.type == "menu":
            key = text[:1]
            self._input("digits", value=key)
            return p["options"][key] if key in p["options"] else self._failure(wait, "nomatch")
        if node.type == "survey":
            return self._survey_answer(wait, p, text)
        entry = self._entry(p, text)
        self._input("digits", length=len(entry) if entry is not None else len(text))
        if entry is None:
            return self._failure(wait, "nomatch")
        self.variables[p["into"]] = entry
        if "confirm" not in p:
            return p["next"]
        confirm = p["confirm"]
        self._play(confirm["intro"])
        self._out.append(Say("digits", entry, self.language))
        self._play(confirm["prompt"], True)
        self._out.append(Collect(1, 1, p["first_digit_timeout_s"], p["first_digit_timeout_s"], None))
        self._wait = _Wait("confirm", failures=wait.failures)
        return None

    def _entry(self, p: Mapping[str, Any], text: str) -> str | None:
        """The collected digits if valid (terminator removed), else None."""
        terminator = p["terminator"]
        if terminator != "none" and text.endswith(terminator):
            text = text[:-1]
        if not text.isdigit() or not p["min_digits"] <= len(text) <= p["max_digits"]:
            return None
        pattern = p.get("pattern")
        if pattern is not None and pattern.fullmatch(text) is None:
            return None
        return text

    def _resume_confirm(self, wait: _Wait, event: Digits | NoInput) -> str | None:
        p = self.node.params
        key = event.text[:1] if isinstance(event, Digits) else ""
        self._input("confirm", value=key or None)
        if key == p["confirm"]["yes"]:
            return p["next"]
        self._wait = _Wait("digits", failures=wait.failures)
        return self._failure(self._wait, "nomatch" if key else "noinput", escalate=False)

    def _survey_answer(self, wait: _Wait, p: Mapping[str, Any], text: str) -> str | None:
        text = text.removesuffix("#")
        self._input("digits", value=text)
        top = 10 if p["question"] == "nps" else 5
        low = 0 if p["question"] == "nps" else 1
        if not text.isdigit() or not low <= int(text) <= top:
            return self._failure(wait, "nomatch")
        score = int(text)
        if "into" in p:
            self.variables[p["into"]] = score
        queue, agent = self.variables.get("queue") or None, self.variables.get("agent") or None
        self._event("survey.answered", queue=queue, agent=agent, question=p["question"], score=score)
        return p["next"]

    def _failure(self, wait: _Wait, kind: str, escalate: bool = True) -> str | None:
        """A silence or a wrong entry: prompt again with the escalation prompt, or fall back."""
        p = self.node.params
        wait.failures[kind] += 1
        if sum(wait.failures.values()) > p["retries"]:
            self._timed_out = kind == "noinput"
            return p.get("fallback", p.get("next"))
        ladder = p.get(kind, ()) if escalate else ()
        before = ladder[min(wait.failures[kind], len(ladder)) - 1] if ladder else ()
        self._wait = wait
        {"menu": self._ask_menu, "collect": self._ask_collect, "survey": self._ask_survey}[self.node.type](
            p, before)
        return None


def next_occurrence(clock: str, now: datetime, timezone_name: str) -> datetime | None:
    """The first instant after `now` when the clock of `timezone_name` reads `clock` ('HH:MM'),
    today or tomorrow, in UTC; None when `clock` is not such a time."""
    match = _CLOCK.match(clock)
    if match is None:
        return None
    reading = time(int(match[1]), int(match[2]))
    zone = zoneinfo.ZoneInfo(timezone_name)
    after = now.astimezone(timezone.utc)
    today = after.astimezone(zone).date()
    ahead = [instant for instant in business_hours.local_instants(today, reading, zone) if instant > after]
    return min(ahead or business_hours.local_instants(today + timedelta(days=1), reading, zone))


def _valid_keys(text: str) -> bool:
    return len(text) <= MAX_DIGITS_INPUT and all(char in _KEYS for char in text)


def _check_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
