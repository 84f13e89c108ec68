"""Quality queries over the `events` table: recorded calls, timelines, evaluations,
sampling proposals and calibration.

Theory of operation
-------------------
Everything is read from events the router already writes; nothing is stored
elsewhere.  A *recorded call* is a `recording.saved` event (one per recorded
leg: a call taken by two agents has two), joined with its call's own events
through the `call_id` index: when its agent connected (`call.connected`), the
talk time (`call.ended` of that agent), the caller (the first `call.arrived` /
`queue.joined` caller_id, withheld numbers empty as in the KPIs) and how many
evaluations of that agent on that call exist.  A recorded call belongs to a
window by its connection time (the save time when no connection was recorded);
the saved event is looked up from the window's start to one day past its end,
so a recording finished after the window still counts for its call.

An *evaluation* is a `qa.evaluated` event; its acknowledgement is the latest
`qa.acknowledged` event of the same call with the same `evaluation_id`.

*Proposals* (`proposals`): for each agent, the week's recorded calls of that
agent that nobody has evaluated yet, picked in this order, a call at most once:

1. low_csat: a post-call CSAT answer (`survey.answered`, question csat) of 1 or 2;
2. repeat_caller: the same number joined a queue again within 24 h after this
   call joined (the FCR rule: this call probably did not solve the problem);
3. long_call: talk time at least 1.5 x the mean talk time of the week's
   recorded calls of the same queue;
4. random: the rest, to `per_agent` calls.

Each targeted reason gives at most one call per agent; the choice among the
eligible calls, and the random ones, come from `random.Random` seeded with
(seed, week, agent), over calls sorted by id: the same data and seed always
give the same proposals, whatever the database's row order.

*Calibration*: calls (and agent) evaluated by two or more evaluators in the
window; an evaluator who scored a call twice counts with the latest score;
`spread` is the highest score minus the lowest.

All SQL is parameterised; `data` is read as text and decoded here, so the
queries work on connections with or without the router's jsonb codec.  Times
come back as ISO 8601 in `timezone` (default UTC).  Every function takes the
event-store `run` (default "live").
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from router.store.kpi import CALLER_NUMBER_SQL

LOW_CSAT = 2                    # a CSAT answer (1-5) at or below this is low
LONG_CALL_FACTOR = 1.5          # a talk time this many times its queue's mean is long
REPEAT_HORIZON = timedelta(hours=24)
SAVED_GRACE = timedelta(days=1)  # a recording is saved at most this long after its call connected
REASONS = ("low_csat", "repeat_caller", "long_call", "random")

# $1 run, $2 since, $3 until, $4 agent or NULL, $5 queue or NULL, $6 saved-grace interval.
_RECORDED_CTE = f"""
saved AS (
    SELECT s.id, s.call_id, s.queue, s.agent, s.ts AS saved_ts, s.data->>'file' AS file,
           (s.data->>'duration_s')::float8 AS duration_s
    FROM events s
    WHERE s.run = $1 AND s.type = 'recording.saved' AND s.call_id IS NOT NULL
      AND s.ts >= $2::timestamptz AND s.ts < $3::timestamptz + $6::interval
      AND ($4::text IS NULL OR s.agent = $4) AND ($5::text IS NULL OR s.queue = $5)
),
recorded AS (
    SELECT sv.*, coalesce(f.connected_at, sv.saved_ts) AS connected_at, f.talk_s, f.joined_at,
           coalesce({CALLER_NUMBER_SQL.format(raw="f.raw_caller")}, '') AS caller,
           f.evaluations, f.csat_min
    FROM saved sv
    CROSS JOIN LATERAL (
        SELECT min(e.ts) FILTER (WHERE e.type = 'call.connected' AND e.agent IS NOT DISTINCT FROM sv.agent)
                   AS connected_at,
               sum((e.data->>'talk_s')::float8) FILTER (
                   WHERE e.type = 'call.ended' AND (e.agent IS NOT DISTINCT FROM sv.agent OR e.agent IS NULL))
                   AS talk_s,
               min(e.ts) FILTER (WHERE e.type = 'queue.joined') AS joined_at,
               (array_agg(e.data->>'caller_id' ORDER BY e.ts, e.id)
                   FILTER (WHERE e.type IN ('call.arrived', 'queue.joined')))[1] AS raw_caller,
               count(DISTINCT e.data->>'evaluation_id') FILTER (
                   WHERE e.type = 'qa.evaluated' AND e.agent IS NOT DISTINCT FROM sv.agent) AS evaluations,
               min((e.data->>'score')::float8) FILTER (
                   WHERE e.type = 'survey.answered' AND e.data->>'question' = 'csat') AS csat_min
        FROM events e
        WHERE e.run = $1 AND e.call_id = sv.call_id
    ) f
    WHERE coalesce(f.connected_at, sv.saved_ts) >= $2 AND coalesce(f.connected_at, sv.saved_ts) < $3
)"""

_RECORDED_SQL = f"""
WITH {_RECORDED_CTE}
SELECT call_id, queue, agent, connected_at, talk_s, file, duration_s, caller, evaluations
FROM recorded
ORDER BY connected_at DESC, call_id, id
LIMIT $7
"""

# The week's recorded, not yet evaluated calls with what the targeted reasons need.
# $7 repeat horizon.
_CANDIDATES_SQL = f"""
WITH {_RECORDED_CTE},
later_joins AS MATERIALIZED (
    SELECT r.call_id, r.ts, r.data->>'caller_id' AS caller
    FROM events r
    WHERE r.run = $1 AND r.type = 'queue.joined' AND r.ts > $2::timestamptz AND r.ts <= $3::timestamptz + $6::interval + $7::interval
),
repeats AS (
    SELECT DISTINCT c.id
    FROM recorded c JOIN later_joins j
      ON j.caller = c.caller AND j.call_id <> c.call_id AND j.ts > c.joined_at AND j.ts <= c.joined_at + $7::interval
    WHERE c.caller <> ''
)
SELECT c.call_id, c.queue, c.agent, c.connected_at, c.talk_s, c.file, c.duration_s, c.caller,
       c.evaluations, c.csat_min, r.id IS NOT NULL AS repeat_caller
FROM recorded c LEFT JOIN repeats r USING (id)
ORDER BY c.call_id, c.id
"""

_TIMELINE_SQL = """
SELECT ts, type, queue, agent, data::text AS data
FROM events
WHERE run = $1 AND call_id = $2
ORDER BY ts, id
"""

# $1 run, $2 agent, $3 call_id, $4 since, $5 until (each NULL: any).
_EVALUATIONS_SQL = """
SELECT e.call_id, e.queue, e.agent, e.ts, e.data::text AS data, a.ts AS acknowledged_at, a.comment AS ack_comment
FROM events e
LEFT JOIN LATERAL (
    SELECT k.ts, k.data->>'comment' AS comment
    FROM events k
    WHERE k.run = $1 AND k.call_id = e.call_id AND k.type = 'qa.acknowledged'
      AND k.data->>'evaluation_id' = e.data->>'evaluation_id'
    ORDER BY k.ts DESC, k.id DESC
    LIMIT 1
) a ON true
WHERE e.run = $1 AND e.type = 'qa.evaluated'
  AND ($2::text IS NULL OR e.agent = $2) AND ($3::text IS NULL OR e.call_id = $3)
  AND ($4::timestamptz IS NULL OR e.ts >= $4) AND ($5::timestamptz IS NULL OR e.ts < $5)
ORDER BY e.ts DESC, e.id DESC
"""

# The latest evaluation of each evaluator per (call, agent), in the window.  $1 run, $2 since, $3 until.
_CALIBRATION_SQL = """
WITH latest AS (
    SELECT DISTINCT ON (call_id, agent, data->>'evaluator')
           call_id, agent, data->>'evaluator' AS evaluator, (data->>'score')::float8 AS score, ts
    FROM events
    WHERE run = $1 AND type = 'qa.evaluated' AND ts >= $2 AND ts < $3 AND call_id IS NOT NULL
    ORDER BY call_id, agent, data->>'evaluator', ts DESC, id DESC
)
SELECT call_id, agent, array_agg(evaluator ORDER BY evaluator) AS evaluators,
       array_agg(score ORDER BY evaluator) AS scores, max(score) - min(score) AS spread, max(ts) AS last_ts
FROM latest
GROUP BY call_id, agent
HAVING count(*) >= 2
ORDER BY max(score) - min(score) DESC, call_id, agent
"""


def _iso(ts: datetime | None, zone: ZoneInfo) -> str | None:
    return ts.astimezone(zone).isoformat() if ts is not None else None


def _recorded_row(row: asyncpg.Record, zone: ZoneInfo) -> dict[str, Any]:
    return {"call_id": row["call_id"], "queue": row["queue"], "agent": row["agent"],
            "connected_at": _iso(row["connected_at"], zone), "talk_s": row["talk_s"], "file": row["file"],
            "duration_s": row["duration_s"], "caller": row["caller"], "evaluations": row["evaluations"]}


async def recorded_calls(conn: asyncpg.Connection, *, since: datetime, until: datetime, agent: str | None = None,
                         queue: str | None = None, limit: int = 200, run: str = "live",
                         timezone: str = "UTC") -> list[dict]:
    """The recorded calls connected in [since, until), newest first."""
    zone = ZoneInfo(timezone)
    rows = await conn.fetch(_RECORDED_SQL, run, since, until, agent, queue, SAVED_GRACE, limit)
    return [_recorded_row(row, zone) for row in rows]


async def call_timeline(conn: asyncpg.Connection, call_id: str, *, run: str = "live",
                        timezone: str = "UTC") -> list[dict]:
    """Every event of the call, in order."""
    zone = ZoneInfo(timezone)
    rows = await conn.fetch(_TIMELINE_SQL, run, call_id)
    return [{"ts": _iso(row["ts"], zone), "type": row["type"], "queue": row["queue"], "agent": row["agent"],
             "data": json.loads(row["data"])} for row in rows]


async def evaluations(conn: asyncpg.Connection, *, agent: str | None = None, call_id: str | None = None,
                      since: datetime | None = None, until: datetime | None = None, run: str = "live",
                      timezone: str = "UTC") -> list[dict]:
    """The evaluations matching every given filter, newest first, with their acknowledgement."""
    zone = ZoneInfo(timezone)
    rows = await conn.fetch(_EVALUATIONS_SQL, run, agent, call_id, since, until)
    result = []
    for row in rows:
        data = json.loads(row["data"])
        result.append({
            "evaluation_id": data.get("evaluation_id"), "call_id": row["call_id"], "queue": row["queue"],
            "agent": row["agent"], "scorecard": data.get("scorecard"), "version": data.get("version"),
            "evaluator": data.get("evaluator"), "score": data.get("score"),
            "critical_failed": bool(data.get("critical_failed")), "answers": data.get("answers") or {},
            "comments": data.get("comments") or "", "ts": _iso(row["ts"], zone),
            "acknowledged": row["acknowledged_at"] is not None,
            "acknowledged_at": _iso(row["acknowledged_at"], zone), "ack_comment": row["ack_comment"],
        })
    return result


async def proposals(conn: asyncpg.Connection, *, week_start: datetime, per_agent: int = 4, seed: int | str = 0,
                    run: str = "live", timezone: str = "UTC") -> dict[str, list[dict]]:
    """Per agent, up to `per_agent` recorded, not yet evaluated calls of the week to evaluate."""
    zone = ZoneInfo(timezone)
    week_end = week_start + timedelta(days=7)
    rows = await conn.fetch(_CANDIDATES_SQL, run, week_start, week_end, None, None, SAVED_GRACE, REPEAT_HORIZON)
    talk: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["talk_s"] is not None:
            talk[row["queue"]].append(row["talk_s"])
    mean_talk = {queue: sum(values) / len(values) for queue, values in talk.items()}
    by_agent: dict[str, dict[str, asyncpg.Record]] = defaultdict(dict)     # agent -> call -> its first recording
    for row in rows:
        if row["agent"] is not None and row["evaluations"] == 0:
            by_agent[row["agent"]].setdefault(row["call_id"], row)

    def reasons(row: asyncpg.Record) -> set[str]:
        found = set()
        if row["csat_min"] is not None and row["csat_min"] <= LOW_CSAT:
            found.add("low_csat")
        if row["repeat_caller"]:
            found.add("repeat_caller")
        if row["talk_s"] is not None and row["talk_s"] >= LONG_CALL_FACTOR * mean_talk.get(row["queue"], float("inf")):
            found.add("long_call")
        return found

    result: dict[str, list[dict]] = {}
    for agent in sorted(by_agent):
        rng = random.Random(f"{seed}/{week_start.isoformat()}/{agent}")
        pool = list(by_agent[agent].values())     # in call-id order (the SQL's)
        rng.shuffle(pool)
        chosen: list[dict] = []
        for reason in REASONS[:-1]:
            row = next((row for row in pool if reason in reasons(row)), None)
            if row is not None and len(chosen) < per_agent:
                chosen.append({**_recorded_row(row, zone), "reason": reason})
                pool.remove(row)
        chosen.extend({**_recorded_row(row, zone), "reason": "random"} for row in pool[:per_agent - len(chosen)])
        result[agent] = chosen
    return result


async def calibration(conn: asyncpg.Connection, *, since: datetime, until: datetime, run: str = "live",
                      timezone: str = "UTC") -> list[dict]:
    """Calls scored by two or more evaluators in [since, until), the widest spread first."""
    zone = ZoneInfo(timezone)
    rows = await conn.fetch(_CALIBRATION_SQL, run, since, until)
    return [{"call_id": row["call_id"], "agent": row["agent"],
             "scores": dict(zip(row["evaluators"], row["scores"])), "spread": round(row["spread"], 2),
             "last_evaluated": _iso(row["last_ts"], zone)} for row in rows]
