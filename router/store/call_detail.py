"""The call detail report: one row per call, from the same `events` as the KPIs.

Supervisors want the list of abandoned calls, not only a percentage.  A call belongs
to the window by its arrival (its first `call.arrived` or `queue.joined`); the row
folds everything the call did, even past the window's end:

- `queues`: the queues it joined, in order (`support>sales` after an overflow move);
- `wait_s`: until an agent answered, the caller abandoned or left; for a call still
  waiting, until the run's last event (or `now`);
- `agent`, `talk_s` (the customer's talk), `wrap_s`, `skills_met` (routing accuracy);
- `outcome`: answered, abandoned, left (a key on hold), overflow (diverted by a rule),
  callback_pending, callback_failed, callback_cancelled, ivr (ended in the IVR: see
  `ivr_outcome`), or waiting;
- `caller`: the number, empty when withheld (the KPIs' rule);
- `ivr_path`: the IVR nodes before an agent answered (`main/welcome>main/main_menu`);
- `csat`, `nps`: post-call survey answers.

Times are ISO 8601 with the centre's local offset.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from router.store.kpi import CALLER_NUMBER_SQL, in_zone

OUTCOMES: tuple[str, ...] = ("answered", "abandoned", "left", "overflow", "callback_pending", "callback_failed",
                             "callback_cancelled", "ivr", "waiting")
COLUMNS: tuple[str, ...] = ("call_id", "arrived", "queues", "caller", "wait_s", "agent", "talk_s", "wrap_s",
                            "outcome", "ivr_outcome", "ivr_path", "skills_met", "csat", "nps")

_CALLS_SQL = f"""
WITH arrivals AS (
    SELECT call_id, min(ts) AS arrived
    FROM events
    WHERE run = $1 AND call_id IS NOT NULL AND type IN ('call.arrived', 'queue.joined')
    GROUP BY call_id
    HAVING min(ts) >= coalesce($2::timestamptz, '-infinity') AND min(ts) < coalesce($3::timestamptz, 'infinity')
),
facts AS (
    SELECT a.call_id, a.arrived, f.*
    FROM arrivals a
    CROSS JOIN LATERAL (
        SELECT
            string_agg(e.queue, '>' ORDER BY e.ts, e.id) FILTER (WHERE e.type = 'queue.joined') AS queues,
            min(e.ts) FILTER (WHERE e.type = 'queue.joined') AS joined,
            (array_agg(e.data->>'caller_id' ORDER BY e.ts, e.id)
                FILTER (WHERE e.type IN ('call.arrived', 'queue.joined')))[1] AS raw_caller,
            min(e.ts) FILTER (WHERE e.type = 'call.connected') AS connected,
            min((e.data->>'wait_s')::float8) FILTER (WHERE e.type IN ('call.connected', 'call.abandoned'))
                AS wait_s,
            (array_agg(e.agent ORDER BY e.ts) FILTER (WHERE e.type = 'call.connected'))[1] AS agent,
            bool_and((e.data->>'skills_met')::boolean) FILTER (WHERE e.type = 'call.connected') AS skills_met,
            sum((e.data->>'talk_s')::float8) FILTER (WHERE e.type = 'call.ended') AS talk_s,
            sum((e.data->>'previous_s')::float8) FILTER (
                WHERE e.type = 'agent.state' AND e.data->>'previous' = 'wrap_up') AS wrap_s,
            (array_agg(e.data->>'outcome' ORDER BY e.ts DESC, e.id DESC) FILTER (WHERE e.type = 'call.ended'))[1]
                AS ended,
            (array_agg(e.data->>'wait_s' ORDER BY e.ts DESC) FILTER (
                WHERE e.type = 'call.ended' AND e.data ? 'wait_s'))[1]::float8 AS left_wait_s,
            bool_or(e.type = 'callback.accepted') AS callback_accepted,
            (array_agg(e.data->>'outcome' ORDER BY e.ts DESC, e.id DESC) FILTER (
                WHERE e.type = 'ivr.ended'))[1] AS ivr_outcome,
            avg((e.data->>'score')::float8) FILTER (
                WHERE e.type = 'survey.answered' AND e.data->>'question' = 'csat') AS csat,
            avg((e.data->>'score')::float8) FILTER (
                WHERE e.type = 'survey.answered' AND e.data->>'question' = 'nps') AS nps,
            array_agg((e.data->>'flow') || '/' || (e.data->>'node') ORDER BY e.ts, e.id)
                FILTER (WHERE e.type = 'ivr.node') AS nodes,
            array_agg(e.ts ORDER BY e.ts, e.id) FILTER (WHERE e.type = 'ivr.node') AS node_ts
        FROM events e
        WHERE e.run = $1 AND e.call_id = a.call_id
    ) f
),
rows AS (
    SELECT call_id, arrived, coalesce(queues, '') AS queues,
           coalesce({CALLER_NUMBER_SQL.format(raw="raw_caller")}, '') AS caller,
           CASE WHEN connected IS NOT NULL THEN 'answered'
                WHEN ended = 'abandoned' THEN 'abandoned'
                WHEN ended IN ('left', 'overflow', 'callback_failed', 'callback_cancelled') THEN ended
                WHEN callback_accepted THEN 'callback_pending'
                WHEN joined IS NULL AND ivr_outcome IS NOT NULL THEN 'ivr'
                ELSE 'waiting' END AS outcome,
           coalesce(wait_s, left_wait_s,
                    CASE WHEN joined IS NOT NULL AND ended IS NULL AND NOT coalesce(callback_accepted, false)
                         THEN extract(epoch FROM $4::timestamptz - joined) END) AS wait_s,
           agent, talk_s, wrap_s, skills_met, ivr_outcome, csat, nps,
           array_to_string(ARRAY(SELECT n FROM unnest(nodes, node_ts) AS u(n, t)
                                 WHERE connected IS NULL OR t < connected), '>') AS ivr_path
    FROM facts
)
SELECT * FROM rows
WHERE $5::text IS NULL OR outcome = $5
ORDER BY arrived, call_id
"""


async def call_detail(conn: asyncpg.Connection, *, run: str = "live", start: datetime | None = None,
                      end: datetime | None = None, timezone: str = "UTC", outcome: str | None = None,
                      now: datetime | None = None) -> dict[str, Any]:
    """`{"run", "timezone", "from", "to", "calls": [row, ...]}`, rows in arrival order."""
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    zone = ZoneInfo(timezone)
    start, end = in_zone(start, zone), in_zone(end, zone)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        judged_at = now or await conn.fetchval("SELECT max(ts) FROM events WHERE run = $1", run)
        records = await conn.fetch(_CALLS_SQL, run, start, end, judged_at, outcome)
    calls = []
    for record in records:
        row = {key: record[key] for key in COLUMNS}
        row["arrived"] = record["arrived"].astimezone(zone).isoformat()
        for key in ("wait_s", "talk_s", "wrap_s", "csat", "nps"):
            row[key] = None if row[key] is None else round(float(row[key]), 2)
        calls.append(row)
    return {"run": run, "timezone": zone.key, "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None, "calls": calls}
