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
import os
import uuid
from dataclasses import dataclass, field
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


class _EventIds:
    """Event ids: a random 64-bit prefix per process and a counter, as 128-bit integers.

    Unique across processes (a fresh prefix in a forked child), increasing
    within one, so B-tree inserts into the primary key stay at its right edge;
    and cheaper than uuid4(), which reads the OS entropy pool for every event.
    An event keeps the integer; the `uuid.UUID` is built only when it is read
    (by the store), which an in-memory simulation never does.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        # version 8 (custom) and RFC 4122 variant bits, so every value is a well-formed UUID
        random_bits = int.from_bytes(os.urandom(8)) & ~(0xF << 12) | (0x8 << 12)
        self.next = itertools.count((random_bits << 64) | (0x8 << 60)).__next__


_event_ids = _EventIds()


def new_event_serial() -> int:
    """The next event id of this process, as the integer value of its UUID."""
    return _event_ids.next()


def new_event_id() -> uuid.UUID:
    return uuid.UUID(int=new_event_serial())


@dataclass(slots=True)
class Event:
    """One fact.  Treat it as immutable once made: it is not frozen only because a
    frozen dataclass costs about 1.6 µs more per instance (a million per simulated day)."""

    ts: float
    type: str
    call_id: str | None = None
    queue: str | None = None
    agent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    serial: int = field(default_factory=new_event_serial, repr=False)   # the id's 128-bit value

    @property
    def id(self) -> uuid.UUID:
        """The event's unique id (the `events` table's primary key)."""
        return _uuid_of(self.serial)


def _uuid_of(value: int, _new=object.__new__, _set=object.__setattr__, _uuid=uuid.UUID,
             _unknown=uuid.SafeUUID.unknown) -> uuid.UUID:
    """`uuid.UUID(int=value)` for a value known to be a 128-bit id, without the constructor's
    argument parsing (a third of the cost of storing an event); tests/test_events.py holds the two equal."""
    made = _new(_uuid)
    _set(made, "int", value)
    _set(made, "is_safe", _unknown)
    return made
