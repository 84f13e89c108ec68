"""The event vocabulary: every fact the router records, one row each in `events`.

Events are append-only and carry a router-generated UUID, so a replay (after a
database outage, from the disk spool) never duplicates a row.  `ts` is seconds
since the Unix epoch (UTC); the store turns it into `timestamptz`.

The KPI SQL (router/store/kpi.py) relies on these `data` fields:

  call.arrived      call_id; data: caller_id, dnis
  queue.joined      call_id, queue; data: caller_id, priority, position, ewt_s,
                    sl_threshold_s (the queue's answer-within target, seconds), skills (the
                    call's extra skill minimums, when it has any: a restart restores them)
  queue.overflowed  call_id, queue (the queue the call was in); data: step (index),
                    action (relax|add_skills|copy|move|voicemail|transfer|callback|hangup),
                    to (queue, for copy/move), wait_s
  agent.offered     call_id, queue, agent; data: ring_timeout_s
  agent.no_answer   call_id, queue, agent; data: reason (timeout|busy|unreachable)
  call.connected    call_id, queue (answered from), agent; data: wait_s (since the first
                    queue.joined), team, skills_met (the agent meets the entry queue's own
                    skill minimums and the call's, before any overflow step relaxed or widened them)
  call.abandoned    call_id, queue; data: wait_s, where (queue|ringing)
  call.ended        call_id, queue, agent; data: outcome (answered|abandoned|overflow|left|
                    callback_failed|callback_cancelled), talk_s (answered calls); `left`: the
                    caller left the queue by a key on hold, with to (voicemail|hangup), wait_s
  agent.state       agent; call_id when the state change is tied to a call; data: state,
                    previous, previous_s (seconds spent in `previous`), reason, team
  ivr.node / ivr.input / ivr.ended   call_id; data: flow, node, (input), outcome
  callback.*        call_id, queue; data: number, attempt
  survey.answered   call_id, queue, agent; data: question (csat|nps), score
  flow.reloaded     data: version, ok, errors
  call.priority_changed / call.moved   call_id, queue (after); data: priority, previous /
                    from, to, wait_s (a supervisor's action, see admin.action)
  admin.action      data: action, by (token name), token (its fingerprint, never the token),
                    role, target, result (ok or the error id), detail; agent/call_id/queue when
                    the action names one: the audit trail of the web API
  recording.started call_id, queue, agent; data: file (name under the recordings directory,
                    made by the router, never from caller input), channels (stereo|mixed), format
  recording.saved   call_id, queue, agent; data: file, size_bytes, duration_s, retention_days
  recording.paused / recording.resumed   call_id, queue, agent; data: reason (sensitive|
                    supervisor|agent), by (token name, or the IVR node for a sensitive span)
  recording.missing call_id; data: file, reason (a file a task expected and could not read)
  recording.pruned  call_id; data: file, age_days (deleted past its retention)
  qa.evaluated      call_id, queue, agent (the evaluated agent); data: evaluation_id, scorecard,
                    version, evaluator (token name), answers {question: value}, comments,
                    score (0-100), critical_failed
  qa.acknowledged   call_id, agent; data: evaluation_id, comment
"""
from __future__ import annotations

import itertools
import math
import os
import uuid
from typing import Any

WITHHELD_NUMBERS: frozenset[str] = frozenset({"", "anonymous", "unknown", "restricted"})


def caller_number(raw: str | None) -> str:
    """A caller ID as the router records it: a withheld number (Asterisk reports 'anonymous',
    'unknown', 'restricted' or nothing) is no number, "" (out of FCR, never dialled back)."""
    number = (raw or "").strip()
    return "" if number.lower() in WITHHELD_NUMBERS else number


EVENT_TYPES: frozenset[str] = frozenset({
    "call.arrived", "ivr.node", "ivr.input", "ivr.ended", "queue.joined", "queue.overflowed",
    "agent.offered", "agent.no_answer", "call.connected", "call.abandoned", "call.ended",
    "callback.offered", "callback.accepted", "callback.dialing", "callback.connected",
    "callback.failed", "callback.cancelled", "agent.state", "survey.answered", "flow.reloaded",
    "call.priority_changed", "call.moved", "admin.action",
    "recording.started", "recording.saved", "recording.paused", "recording.resumed", "recording.missing",
    "recording.pruned", "qa.evaluated", "qa.acknowledged",
})


def _reset_event_ids() -> None:
    """Event ids: a random 64-bit prefix per process and a counter, as 128-bit integers.

    Unique across processes (a fresh prefix in a forked child), increasing
    within one, so B-tree inserts into the primary key stay at its right edge;
    and cheaper than uuid4(), which reads the OS entropy pool for every event.
    An event keeps the integer; the `uuid.UUID` is built only when it is read
    (by the store), which an in-memory simulation never does.
    """
    global _next_event_serial
    # version 8 (custom) and RFC 4122 variant bits, so every value is a well-formed UUID
    random_bits = int.from_bytes(os.urandom(8)) & ~(0xF << 12) | (0x8 << 12)
    _next_event_serial = itertools.count((random_bits << 64) | (0x8 << 60)).__next__


_reset_event_ids()
os.register_at_fork(after_in_child=_reset_event_ids)


def new_event_serial() -> int:
    """The next event id of this process, as the integer value of its UUID."""
    return _next_event_serial()


def new_event_id() -> uuid.UUID:
    return uuid.UUID(int=new_event_serial())


def round_ms(seconds: float) -> float:
    """`round(seconds, 3)` as a float, to the bit (tests/test_events.py holds them equal), without
    its cost: CPython rounds through a decimal string (about 3,000 instructions, and an event
    figure is rounded several times per simulated call).  seconds * 1000 is within half an ulp
    of the exact product, so away from a tie its rounding to an integer R is the exact one, and
    R / 1000 is the correctly rounded double of R's decimal, as round's string conversion gives."""
    scaled = seconds * 1000.0
    if -1e12 < scaled < 1e12:                 # ulp(scaled) <= 2**-13: the fraction tells
        whole = math.floor(scaled)
        fraction = scaled - whole
        if not 0.4998 < fraction < 0.5002:    # no tie within the product's error: R is certain
            rounded = whole + 1.0 if fraction > 0.5 else whole
            return rounded / 1000.0 if rounded else math.copysign(0.0, seconds)
    return float(round(seconds, 3))


class Event:
    """One fact.  Treat it as immutable once made: it is not frozen only because freezing costs
    about 1.6 µs more per instance (a million per simulated day).  A hand-written class rather
    than a dataclass: compiled (ext/router/events.pxd), a dataclass's default factories cost
    two imports per instance; equality and repr are the dataclass's (`serial` left out of repr)."""

    __slots__ = ("ts", "type", "call_id", "queue", "agent", "data", "serial")

    def __init__(self, ts: float, type: str, call_id: str | None = None, queue: str | None = None,
                 agent: str | None = None, data: dict[str, Any] | None = None, serial: int | None = None) -> None:
        self.ts = ts
        self.type = type
        self.call_id = call_id
        self.queue = queue
        self.agent = agent
        self.data = {} if data is None else data
        self.serial = _next_event_serial() if serial is None else serial   # the id's 128-bit value

    def __repr__(self) -> str:
        return (f"Event(ts={self.ts!r}, type={self.type!r}, call_id={self.call_id!r}, queue={self.queue!r}, "
                f"agent={self.agent!r}, data={self.data!r})")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]   # mutable, like the dataclass it was

    def _fields(self) -> tuple[Any, ...]:
        return self.ts, self.type, self.call_id, self.queue, self.agent, self.data, self.serial

    @property
    def id(self) -> uuid.UUID:
        """The event's unique id (the `events` table's primary key)."""
        return _uuid_of(self.serial)


def new_event(ts: float, type_: str, call_id: str | None, queue: str | None, agent: str | None,
              data: dict[str, Any]) -> Event:
    """`Event(ts, type_, call_id, queue, agent, data)` with a new id, for the engine's hot path:
    compiled, a C call that fills the fields without parsing arguments."""
    event = Event.__new__(Event)
    event.ts = ts
    event.type = type_
    event.call_id = call_id
    event.queue = queue
    event.agent = agent
    event.data = data
    event.serial = _next_event_serial()
    return event


def _uuid_of(value: int, _new=object.__new__, _set=object.__setattr__, _uuid=uuid.UUID,
             _unknown=uuid.SafeUUID.unknown) -> uuid.UUID:
    """`uuid.UUID(int=value)` for a value known to be a 128-bit id, without the constructor's
    argument parsing (a third of the cost of storing an event); tests/test_events.py holds the two equal."""
    made = _new(_uuid)
    _set(made, "int", value)
    _set(made, "is_safe", _unknown)
    return made
