"""Our events as Asterisk's `queue_log`, so tools that read app_queue's log (QueueMetrics,
Wazo's statistics, qpanel) read acd-router's calls too.

Theory of operation
-------------------
`fetch_events` reads, in one snapshot, the events of the calls that joined a queue in the
window (by their first join, as the KPIs count them; everything they did later comes along)
and the agents' state changes inside the window.  `queue_log_lines` is a pure translation
of those events, in time order, one line each, in the file format
`epoch|callid|queuename|agent|EVENT|data1|data2|...`:

  queue.joined (first)      ENTERQUEUE     url (empty)|callerid|position
  agent.no_answer           RINGNOANSWER   ring time in ms (from the offer)
  call.connected            CONNECT        holdtime|bridged channel (empty)|ringtime
  call.ended answered       COMPLETECALLER holdtime|calltime|origposition
  call.abandoned            ABANDON        position|origposition|waittime
  call.ended left           EXITWITHKEY    key (the queue's leave key)|position|origposition|waittime
  call.ended overflow       EXITEMPTY (rule `no_agents`) or EXITWITHTIMEOUT (max wait, length,
                            EWT): position|origposition|waittime
  call.ended callback_failed / callback_cancelled   EXITWITHTIMEOUT
  agent.state               ADDMEMBER (log-in), REMOVEMEMBER (log-out), PAUSE reason, UNPAUSE

What differs from app_queue, and why:
- callid is our call id (the caller channel's uniqueid is not in the events);
- every line of a call carries its entry queue, and a call moved by overflow enters no
  second queue, so ENTERQUEUE = offered, CONNECT = answered, ABANDON = abandoned, and the
  EXIT* lines are the rest of the calls that have ended, exactly as `acd-router kpi` counts;
- position is the position at the join (we do not record it when the caller leaves);
- who hung up first is not recorded yet: an answered call ends with COMPLETECALLER;
- member lines (log-in, pause) have queue NONE, as app_queue's PAUSEALL does, and the
  agent is the member interface: the endpoint of the centre's config (`PJSIP/1001`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator
from zoneinfo import ZoneInfo

import asyncpg

from router.config.model import Centre
from router.store.kpi import in_zone

NOT_ANSWERED = ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY")

_EVENTS_SQL = """
WITH bounds AS (
    SELECT coalesce($2::timestamptz, '-infinity') AS t0, coalesce($3::timestamptz, 'infinity') AS t1
),
calls AS (
    SELECT call_id FROM events, bounds
    WHERE run = $1 AND type = 'queue.joined' AND call_id IS NOT NULL
    GROUP BY call_id, t0, t1
    HAVING min(ts) >= t0 AND min(ts) < t1
)
SELECT e.ts, e.id, e.type, e.call_id, e.queue, e.agent, e.data,
       array_position(ARRAY['queue.joined', 'agent.offered', 'agent.no_answer', 'queue.overflowed',
                            'call.connected', 'call.abandoned', 'call.ended'], e.type) AS step
FROM events e JOIN calls USING (call_id)
WHERE e.run = $1 AND e.type IN ('queue.joined', 'agent.offered', 'agent.no_answer', 'call.connected',
                                'call.abandoned', 'call.ended', 'queue.overflowed')
UNION ALL
SELECT e.ts, e.id, e.type, NULL, NULL, e.agent, e.data, 0
FROM events e, bounds
WHERE e.run = $1 AND e.type = 'agent.state' AND e.agent IS NOT NULL AND e.ts >= t0 AND e.ts < t1
  AND (e.data->>'state' IN ('paused', 'logged_out') OR e.data->>'previous' IN ('paused', 'logged_out'))
ORDER BY ts, step, id            -- at one instant a call joins before it is offered, answered or ends
"""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    ts: float                 # epoch seconds
    type: str
    call_id: str | None
    queue: str | None
    agent: str | None
    data: dict[str, Any]


async def fetch_events(conn: asyncpg.Connection, *, run: str = "live", start: datetime | None = None,
                       end: datetime | None = None, timezone: str = "UTC") -> list[LoggedEvent]:
    """The window's calls (by first join) with all their events, and the agents' log-ins and pauses."""
    zone = ZoneInfo(timezone)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_EVENTS_SQL, run, in_zone(start, zone), in_zone(end, zone))
    return [LoggedEvent(row["ts"].timestamp(), row["type"], row["call_id"], row["queue"], row["agent"],
                        _data(row["data"])) for row in rows]


def _data(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


@dataclass
class _Call:
    queue: str
    joined: float
    position: str
    offered: dict[str, float]          # agent -> when last offered
    connected: float | None = None
    wait_s: float = 0.0
    exit_rule: str | None = None       # the `when` of a terminal overflow step


def queue_log_lines(events: Iterable[LoggedEvent], centre: Centre | None = None) -> Iterator[str]:
    """`queue_log` lines for events in time order (see the module's head)."""
    calls: dict[str, _Call] = {}
    agents = centre.agents if centre is not None else {}
    queues = centre.queues if centre is not None else {}

    def member(agent: str | None) -> str:
        spec = agents.get(agent or "")
        return spec.endpoint if spec is not None and spec.endpoint else (agent or "NONE")

    def line(ts: float, call_id: str, queue: str, agent: str, event: str, *fields: Any) -> str:
        return "|".join([str(int(ts)), call_id, queue, agent, event, *(_field(f) for f in fields)])

    for e in events:
        if e.type == "agent.state":
            state, previous = e.data.get("state"), e.data.get("previous")
            if previous == "logged_out":
                yield line(e.ts, "NONE", "NONE", member(e.agent), "ADDMEMBER", "")
            if state == "paused":
                yield line(e.ts, "NONE", "NONE", member(e.agent), "PAUSE", e.data.get("reason") or "")
            elif previous == "paused" and state != "logged_out":
                yield line(e.ts, "NONE", "NONE", member(e.agent), "UNPAUSE", "")
            if state == "logged_out":
                yield line(e.ts, "NONE", "NONE", member(e.agent), "REMOVEMEMBER", "")
            continue
        call_id = e.call_id or ""
        call = calls.get(call_id)
        if e.type == "queue.joined":
            if call is None:
                calls[call_id] = call = _Call(e.queue or "", e.ts, _field(e.data.get("position", "")), {})
                yield line(e.ts, call_id, call.queue, "NONE", "ENTERQUEUE", "", e.data.get("caller_id") or "",
                           call.position)
            continue
        if call is None:
            continue
        wait = int(round(e.ts - call.joined))
        if e.type == "agent.offered" and e.agent:
            call.offered[e.agent] = e.ts
        elif e.type == "agent.no_answer" and e.agent:
            ring_ms = int(round((e.ts - call.offered.get(e.agent, e.ts)) * 1000))
            yield line(e.ts, call_id, call.queue, member(e.agent), "RINGNOANSWER", ring_ms)
        elif e.type == "call.connected" and call.connected is None:
            call.connected, call.wait_s = e.ts, float(e.data.get("wait_s", e.ts - call.joined))
            ring = int(round(e.ts - call.offered.get(e.agent or "", e.ts)))
            yield line(e.ts, call_id, call.queue, member(e.agent), "CONNECT", int(round(call.wait_s)), "", ring)
        elif e.type == "call.abandoned":
            yield line(e.ts, call_id, call.queue, "NONE", "ABANDON", call.position, call.position, wait)
        elif e.type == "queue.overflowed" and e.data.get("when"):
            call.exit_rule = e.data["when"]
        elif e.type == "call.ended":
            outcome = e.data.get("outcome")
            if outcome == "answered" and call.connected is not None:
                talk = int(round(float(e.data.get("talk_s", e.ts - call.connected))))
                yield line(e.ts, call_id, call.queue, member(e.agent), "COMPLETECALLER",
                           int(round(call.wait_s)), talk, call.position)
            elif outcome == "left":
                hold = queues.get(call.queue).hold if call.queue in queues else None
                key = (hold.leave_key if hold is not None else None) or ""
                yield line(e.ts, call_id, call.queue, "NONE", "EXITWITHKEY", key, call.position, call.position, wait)
            elif outcome == "overflow":
                event = "EXITEMPTY" if call.exit_rule == "no_agents" else "EXITWITHTIMEOUT"
                yield line(e.ts, call_id, call.queue, "NONE", event, call.position, call.position, wait)
            elif outcome in ("callback_failed", "callback_cancelled"):
                yield line(e.ts, call_id, call.queue, "NONE", "EXITWITHTIMEOUT", call.position, call.position, wait)


def _field(value: Any) -> str:
    """A field as app_queue writes it: no separators or line breaks inside (caller input is data)."""
    return str(value).replace("|", "/").replace("\n", " ").replace("\r", " ")
