"""What the event store says about a run, for a router that takes over: agents and open calls.

A router that restarts after a SIGKILL (or a standby that takes over) rebuilds its state
from two sources: Asterisk's live channels (the AMI half, elsewhere) and the events already
in PostgreSQL (this module).  `load` reads a run's recent events and `fold` turns them into
`Recovered`: the last state of every agent still logged in, and every call with no end yet,
with what the engine knew of it (queue, place, priority, overflow progress, agent).

Theory of operation
-------------------
`fold` is pure: rows (mappings with ts as epoch seconds, call_id, type, queue, agent and
data as a dict) in ts order in, `Recovered` out.  `load` reads the rows and folds them.

Agents.  The last `agent.state` event of an agent gives its state, since when (the event's
ts), the pause reason and, as in the engine, the call only for the states tied to one
(reserved, on_call, wrap_up: an `available` that follows a wrap-up names the call it
finished, which is no longer the agent's).  An agent whose last state is logged_out is
left out.

Calls.  A call is reported when its events include `call.arrived` or `queue.joined` and no
end.  Ended for good (nothing after revives it; the engine forgets a call once it ends):

- ``call.ended``, whatever the outcome: the engine writes it at the end of every queued
  call (answered, abandoned, left, overflow, callback_failed, callback_cancelled);
- the events the engine writes in the same instant just before ``call.ended``, in case
  the log lost its last rows: ``call.abandoned``; ``queue.overflowed`` with a diverting
  action (voicemail, transfer, hangup: anything but relax, add_skills, copy, move);
  ``callback.failed`` with ``final`` and an ``attempt`` (a refusal at acceptance has no
  attempt and the caller waits on); ``callback.cancelled`` except reason ``not_stored``
  (a call-back that could not be saved: the caller waits on as a normal call);
- ``ivr.ended`` with outcome completed, transferred, transfer_failed, hangup, timeout or
  error, for a call that never joined a queue.  Outcomes queued and callback hand the call
  to the engine (a ``queue.joined`` follows); without that join the call stays "ivr".
  An ``ivr.ended`` after a join is a hold-time call-back offer or a survey: not an end.

Phases: "connected" (``call.connected`` seen: a call-back too, which the callbacks table
marks completed then), else "callback" (``callback.accepted`` not withdrawn: pending or
being dialled, the callbacks table owns it), else "ringing" (``agent.offered`` not
followed by ``agent.no_answer`` or, for a call-back, a retried ``callback.failed``), else
"waiting" (joined), else "ivr".  The current queue follows a ``queue.overflowed`` move and
a ``call.moved`` (both: data.to); each resets ``queue_joined_at`` and ``next_step`` and
counts in ``moves`` (the engine's own count, which MAX_MOVES bounds, has the overflow
moves only).  ``priority`` is the total the engine works with (queue's included).
``next_step`` is one past the highest ``queue.overflowed`` step recorded in the current
queue (the engine also skips steps that wrote nothing: conditional steps, a move past
MAX_MOVES).  Requirement changes (relax, add_skills, copy) are not folded: the caller
re-applies the current queue's timed steps below ``next_step``.  A second
``queue.joined`` (no engine writes one; hand-made logs model a move that way) keeps the
first's place and entry queue and only makes its queue the current one.

Queries (`load`), in one read-only REPEATABLE READ snapshot, all bounded by the run and
the window ``ts >= since``:

1. ``AGENTS_SQL``: ``DISTINCT ON (agent) ... ORDER BY agent, ts DESC, id DESC`` over
   ``type = 'agent.state'``.  The equality on (run, type) and the range on ts are exactly
   the prefix of ``events_run_type_ts``: one index range scan over the window's state
   changes (a small share of the events), then a sort by agent.  (No index leads with
   agent, so "latest per agent" cannot be a per-agent probe; the window keeps the sort
   small.)  Ties on ts go to the larger id: ids grow within a writing process.
2. ``OPEN_CALLS_SQL``: the ids of calls with ``call.arrived`` or ``queue.joined`` in the
   window and no ``call.ended``, leaving out those that ended in the IVR.  One bitmap
   index scan of ``events_run_type_ts`` for the four types (``type = ANY(...)`` is an
   index condition, with the ts range), grouped by call id in a hash.  Only the terminal
   types that come in bulk are checked here; the rarer precursors above are left to
   `fold`.  A call's end cannot precede its
   arrival, so looking for ``call.ended`` within the window too is exact.
3. ``CALL_EVENTS_SQL``: every event of those ids (``call_id = ANY($ids)``: probes of
   ``events_call_id``, which is selective: one call has tens of rows), restricted to the
   run and the window, ordered by ts then id.
4. ``LAST_TS_SQL``: the run's newest event in the window, whatever its type: a loose index
   scan of ``events_run_type_ts`` (a recursive CTE steps from one type to the next, then
   one backward probe per type), a few dozen index probes instead of a scan of the
   window.

Only what reached the table is seen.  A killed router may have left events in its disk
spool (an outage, a spill): start the new process's `EventWriter` first, whose `start()`
replays the spool files it finds, then `load`.  A standby on another machine cannot see
the spool of a leader that died on its own.

The window (default: the last `horizon_s`, a day) bounds the read.  What lies before it
is not seen: an agent whose last change is older (logged in and unchanged for a day), a
call that arrived earlier.  Call-backs waiting longer are the callbacks table's
(`router.store.callbacks.load_open`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import asyncpg

DEFAULT_HORIZON_S = 86400.0

CALL_STATES = frozenset({"reserved", "on_call", "wrap_up"})   # the agent states tied to a call
TIMED_ACTIONS = frozenset({"relax", "add_skills", "copy", "move"})   # queue.overflowed that keeps the call
TERMINAL_IVR_OUTCOMES: tuple[str, ...] = ("completed", "transferred", "transfer_failed", "hangup",
                                          "timeout", "error")
PHASES: tuple[str, ...] = ("ivr", "waiting", "ringing", "connected", "callback")


@dataclass(frozen=True, slots=True)
class AgentLast:
    """The last agent.state event of an agent."""
    agent: str
    state: str
    reason: str | None
    since: float                  # epoch seconds: when it entered `state`
    call_id: str | None           # reserved for / talking on / wrapping up (None in other states)


@dataclass(frozen=True, slots=True)
class CallLast:
    """A call of the run with no end recorded yet."""
    call_id: str
    arrived_at: float | None
    caller_id: str
    dnis: str | None
    entry_queue: str | None       # queue of the first queue.joined
    queue: str | None             # current queue, after overflow moves and supervisor moves
    joined_at: float | None       # first queue.joined: the call's place
    queue_joined_at: float | None  # when it entered its current queue
    priority: int | None          # queue.joined data.priority, then call.priority_changed
    phase: str                    # ivr | waiting | ringing | connected | callback
    agent: str | None             # offered to / connected with
    connected_at: float | None
    next_step: int                # 1 + highest queue.overflowed step in the current queue (0: none)
    moves: int                    # overflow moves and supervisor moves
    types: frozenset[str]         # event types seen for the call
    last_ts: float
    skills: dict[str, int] = field(default_factory=dict)   # extra skill minimums (queue.joined data.skills)


@dataclass(frozen=True, slots=True)
class Recovered:
    agents: dict[str, AgentLast]  # every agent whose last state is not logged_out
    calls: dict[str, CallLast]
    last_event_ts: float | None


@dataclass(slots=True)
class _Call:
    call_id: str
    arrived_at: float | None = None
    caller_id: str = ""
    dnis: str | None = None
    entry_queue: str | None = None
    queue: str | None = None
    joined_at: float | None = None
    queue_joined_at: float | None = None
    priority: int | None = None
    skills: dict[str, int] = field(default_factory=dict)
    agent: str | None = None
    connected_at: float | None = None
    callback: bool = False
    next_step: int = 0
    moves: int = 0
    ended: bool = False
    ivr_ended: bool = False       # an ivr.ended outcome that ends a call that never queued
    types: set[str] = field(default_factory=set)
    last_ts: float = 0.0

    def apply(self, ts: float, type_: str, queue: str | None, agent: str | None,
              data: Mapping[str, Any]) -> None:
        self.types.add(type_)
        self.last_ts = ts
        if self.ended:
            return                # e.g. the survey and the wrap-up after call.ended
        handler = _HANDLERS.get(type_)
        if handler is not None:
            handler(self, ts, queue, agent, data)

    def move_to(self, ts: float, target: str) -> None:
        self.queue, self.queue_joined_at, self.next_step = target, ts, 0

    def result(self) -> CallLast | None:
        joined = self.joined_at is not None
        if self.ended or (self.ivr_ended and not joined) or not (joined or self.arrived_at is not None):
            return None
        if self.connected_at is not None:
            phase = "connected"
        elif self.callback:
            phase = "callback"
        elif self.agent is not None:
            phase = "ringing"
        elif joined:
            phase = "waiting"
        else:
            phase = "ivr"
        return CallLast(
            call_id=self.call_id, arrived_at=self.arrived_at, caller_id=self.caller_id, dnis=self.dnis,
            entry_queue=self.entry_queue, queue=self.queue, joined_at=self.joined_at,
            queue_joined_at=self.queue_joined_at, priority=self.priority, phase=phase, agent=self.agent,
            connected_at=self.connected_at, next_step=self.next_step, moves=self.moves,
            types=frozenset(self.types), last_ts=self.last_ts, skills=dict(self.skills))


def _arrived(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    if call.arrived_at is None:
        call.arrived_at = ts
        call.caller_id = _text(data.get("caller_id")) or call.caller_id
        call.dnis = _text(data.get("dnis"))


def _joined(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    if call.joined_at is None:
        call.entry_queue = call.queue = queue
        call.joined_at = call.queue_joined_at = ts
        call.priority = _int(data.get("priority"))
        call.caller_id = call.caller_id or _text(data.get("caller_id")) or ""
        skills = data.get("skills")
        if isinstance(skills, dict):
            call.skills = {str(k): v for k, v in skills.items() if isinstance(v, int) and not isinstance(v, bool)}
    elif queue is not None and queue != call.queue:
        call.move_to(ts, queue)


def _overflowed(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    action = data.get("action")
    if action not in TIMED_ACTIONS:
        call.ended = True         # a divert: DivertCall and call.ended(overflow) go with it
        return
    step = _int(data.get("step"))
    if step is not None and (queue is None or queue == call.queue):
        call.next_step = max(call.next_step, step + 1)
    target = _text(data.get("to"))
    if action == "move" and target:
        call.move_to(ts, target)
        call.moves += 1


def _moved(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    target = _text(data.get("to")) or queue
    if target:
        call.move_to(ts, target)
        call.moves += 1


def _priority_changed(call: _Call, ts: float, queue: str | None, agent: str | None,
                      data: Mapping[str, Any]) -> None:
    priority = _int(data.get("priority"))
    if priority is not None:
        call.priority = priority


def _offered(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    call.agent = agent


def _no_answer(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    if agent is None or agent == call.agent:
        call.agent = None


def _connected(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    if call.connected_at is None:
        call.connected_at = ts
    call.agent = agent or call.agent


def _callback_accepted(call: _Call, ts: float, queue: str | None, agent: str | None,
                       data: Mapping[str, Any]) -> None:
    call.callback = True


def _callback_failed(call: _Call, ts: float, queue: str | None, agent: str | None,
                     data: Mapping[str, Any]) -> None:
    if "attempt" not in data:
        return                    # refused at acceptance: the caller keeps waiting
    if data.get("final"):
        call.ended = True
    else:
        call.agent = None         # the agent is released; the call-back waits for its retry


def _callback_cancelled(call: _Call, ts: float, queue: str | None, agent: str | None,
                        data: Mapping[str, Any]) -> None:
    if data.get("reason") == "not_stored":
        call.callback = False     # withdrawn: the caller waits on as a normal call
    else:
        call.ended = True


def _ivr_ended(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    if data.get("outcome") in TERMINAL_IVR_OUTCOMES:
        call.ivr_ended = True     # ends it unless the call joined a queue (see `result`)


def _ended(call: _Call, ts: float, queue: str | None, agent: str | None, data: Mapping[str, Any]) -> None:
    call.ended = True


_HANDLERS = {
    "call.arrived": _arrived, "queue.joined": _joined, "queue.overflowed": _overflowed,
    "call.moved": _moved, "call.priority_changed": _priority_changed, "agent.offered": _offered,
    "agent.no_answer": _no_answer, "call.connected": _connected, "callback.accepted": _callback_accepted,
    "callback.failed": _callback_failed, "callback.cancelled": _callback_cancelled,
    "ivr.ended": _ivr_ended, "call.abandoned": _ended, "call.ended": _ended,
}


def fold(rows: Iterable[Mapping[str, Any]]) -> Recovered:
    """Agents and open calls from event rows in ts order (keys ts as epoch seconds, call_id,
    type, queue, agent, data as a dict); rows with equal ts apply in the order given."""
    agents: dict[str, AgentLast] = {}
    calls: dict[str, _Call] = {}
    last_ts: float | None = None
    for row in rows:
        ts = float(row["ts"])
        type_ = row["type"]
        data = row.get("data") or {}
        agent = row.get("agent")
        call_id = row.get("call_id")
        last_ts = ts if last_ts is None else max(last_ts, ts)
        if type_ == "agent.state" and agent is not None:
            state = _text(data.get("state")) or ""
            agents[agent] = AgentLast(agent=agent, state=state, reason=_text(data.get("reason")), since=ts,
                                      call_id=call_id if state in CALL_STATES else None)
        if call_id is not None:
            call = calls.get(call_id)
            if call is None:
                call = calls[call_id] = _Call(call_id)
            call.apply(ts, type_, row.get("queue"), agent, data)
    open_calls = {}
    for call_id, call in calls.items():
        result = call.result()
        if result is not None:
            open_calls[call_id] = result
    return Recovered(agents={a: last for a, last in agents.items() if last.state != "logged_out"},
                     calls=open_calls, last_event_ts=last_ts)


# --- reading the store -------------------------------------------------------------------

AGENTS_SQL = """
SELECT DISTINCT ON (agent) id, ts, call_id, type, queue, agent, data::text AS data
FROM events
WHERE run = $1 AND type = 'agent.state' AND ts >= $2 AND agent IS NOT NULL
ORDER BY agent, ts DESC, id DESC
"""

OPEN_CALLS_SQL = """
SELECT call_id
FROM events
WHERE run = $1 AND type = ANY('{call.arrived,queue.joined,call.ended,ivr.ended}'::text[]) AND ts >= $2
  AND call_id IS NOT NULL
GROUP BY call_id
HAVING bool_or(type IN ('call.arrived', 'queue.joined'))
   AND NOT bool_or(type = 'call.ended')
   AND (bool_or(type = 'queue.joined')
        OR NOT coalesce(bool_or(type = 'ivr.ended' AND data->>'outcome' = ANY($3::text[])), false))
"""

CALL_EVENTS_SQL = """
SELECT id, ts, call_id, type, queue, agent, data::text AS data
FROM events
WHERE call_id = ANY($1::text[]) AND run = $2 AND ts >= $3
ORDER BY ts, id
"""

LAST_TS_SQL = """
WITH RECURSIVE types(type) AS (
    (SELECT type FROM events WHERE run = $1 ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT e.type FROM events e WHERE e.run = $1 AND e.type > t.type ORDER BY e.type LIMIT 1)
    FROM types t
    WHERE t.type IS NOT NULL
)
SELECT max((SELECT max(e.ts) FROM events e WHERE e.run = $1 AND e.type = t.type AND e.ts >= $2))
FROM types t
WHERE t.type IS NOT NULL
"""


async def load(conn_or_dsn: asyncpg.Connection | asyncpg.Pool | str, *, run: str = "live",
               since: float | None = None, horizon_s: float = DEFAULT_HORIZON_S) -> Recovered:
    """What the events of `run` from `since` (default: `horizon_s` ago) say of agents and open
    calls.  Takes a connection, a pool or a DSN (connected to, then closed)."""
    if since is None:
        since = time.time() - horizon_s
    if isinstance(conn_or_dsn, str):
        conn = await asyncpg.connect(conn_or_dsn)
        try:
            return await _load(conn, run, since)
        finally:
            await conn.close()
    if isinstance(conn_or_dsn, asyncpg.Pool):
        async with conn_or_dsn.acquire() as conn:
            return await _load(conn, run, since)
    return await _load(conn_or_dsn, run, since)


async def _load(conn: asyncpg.Connection, run: str, since: float) -> Recovered:
    if conn.is_in_transaction():
        return await _read(conn, run, since)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _read(conn, run, since)


async def _read(conn: asyncpg.Connection, run: str, since: float) -> Recovered:
    start = datetime.fromtimestamp(since, timezone.utc)
    agent_rows = await conn.fetch(AGENTS_SQL, run, start)
    call_ids = [r["call_id"] for r in await conn.fetch(OPEN_CALLS_SQL, run, start, list(TERMINAL_IVR_OUTCOMES))]
    call_rows = await conn.fetch(CALL_EVENTS_SQL, call_ids, run, start) if call_ids else []
    newest = await conn.fetchval(LAST_TS_SQL, run, start)
    # a call's agent.state rows may be an agent's last one too: one copy, in (ts, id) order
    rows = sorted({r["id"]: r for r in (*call_rows, *agent_rows)}.values(), key=lambda r: (r["ts"], r["id"]))
    recovered = fold({"ts": r["ts"].timestamp(), "call_id": r["call_id"], "type": r["type"], "queue": r["queue"],
                      "agent": r["agent"], "data": json.loads(r["data"])} for r in rows)
    if newest is not None:
        newest_ts = newest.timestamp()
        if recovered.last_event_ts is None or newest_ts > recovered.last_event_ts:
            recovered = replace(recovered, last_event_ts=newest_ts)
    return recovered


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
