"""Contact-centre KPIs: one implementation, in SQL over the `events` table.

Theory of operation
-------------------
The engine records facts; this module turns them into the figures of DESIGN §7.
The statements run in one read-only REPEATABLE READ snapshot (so a writer
inserting at the same time cannot make totals and breakdowns disagree).  The
two heaviest split the run's events between them, each read once: the calls
statement (the window calls' events) runs on a second connection that imports
that snapshot (`pg_export_snapshot`), at the same time as the states statement
(the agents' `agent.state` events): two backends, two cores; serial on the
caller's connection when the caller holds the transaction or no second
connection opens.  Each folds the events per call or per agent in hash
aggregates over one pass, not an index probe per call or a sort of every event:

1. *Bounds*: the window [from, to).  Missing ends default to the run's first
   event and its last event + 1 µs, so the end stays exclusive and the last
   event is still inside.  A simulated run in a table of its own (no index:
   router.store.run_tables) gets them from one pass over that table.
2. *Queue figures* (calls statement): every call is attributed to the queue and
   the time of its FIRST `queue.joined` (its entry queue), so a call moved or
   copied by overflow counts once, for the queue it entered.  A call belongs to
   the window, and to an interval, by that first join; everything that happens
   to it later (answer, abandon, call-back, overflow, talk, wrap-up) follows it,
   even past the window end.  The window calls' events are read once and folded
   per call and agent (`call_agents`: over `events` by a join to the calls, over
   a run's own table by a parallel fold of all its call events); those rows fold
   into each call's row of facts and into the agents' handled calls; GROUPING SETS
   then aggregate the calls' rows for the total, each queue, each interval and
   each (interval, queue).  Survey
   answers are windowed by their own timestamp and attributed to the event's
   queue.  Occupancy (states statement) and IVR containment are centre-wide, so
   they exist only for the total and each interval (null per queue).
3. *Agent and team figures*: calls answered by an agent come from the
   `call.connected` events of the window's calls (calls statement); state
   durations, no-answers and surveys are windowed by their own timestamp
   (states statement).  Each statement returns its part of every agent's
   figures as arrays on its total row; the agent figures statement sums them.  An
   agent's team is the latest `data.team` seen on its `agent.state` /
   `call.connected` events; team figures aggregate the underlying rows of its
   agents (agents with no team appear under "agents" only).

4. *IVR figures*: the front IVR of a call runs from its first `ivr.node` to
   its first `ivr.ended`, counted only when that first node comes before any
   `queue.joined` of the call (a post-call survey is an IVR session too, but
   not the caller's way in).  `ivr_time_s` is the mean of those spans; the
   `ivr_nodes` breakdown counts, per "flow/node", the calls that entered it and
   the IVR sessions that ended there by caller hang-up or by silence (timeout):
   the drop-off per node.  Windowed by each event's own timestamp.

5. *Call-back kept-place wait*: the mean `kept_wait_s` (acceptance to
   customer connected) of `callback.connected` events, total and per queue.

6. *Quality* (`quality_score`, `evaluations`): the `qa.evaluated` events of
   the window's calls (by first join, like every call figure: entry queue and
   interval; an evaluation made later follows its call).  Per call and
   evaluated agent, each evaluator counts once, with their latest evaluation;
   the call's score is the mean of those; `quality_score` is the mean of the
   calls' scores (a call scored by two evaluators for calibration weighs once)
   and `evaluations` the number of evaluations counted.  Total, per queue,
   interval, interval x queue, evaluated agent (when that agent is among the
   agents) and team (the agent's team of the agent figures, passed in).  The
   statement starts from the run's `qa.evaluated` rows, so a run without
   evaluations costs one empty index scan.

Time: intervals start on the edges of the centre's local clock (its
`timezone:`): buckets are counted in absolute time from the local edge at or
before the window's start, which keeps 15/30/60-minute edges local across a
DST change (a 23- or 25-hour day has 23 or 25 hourly buckets).  Labels carry
the local offset, and a window edge inside a bucket is its label's edge.
Naive `start` / `end` are local times of the centre.

Occupancy uses `agent.state` events: each carries the state just left
(`previous`) and how long it lasted (`previous_s`), i.e. the span [ts −
previous_s, ts).  Spans are clipped to the window and split at interval edges;
an agent's last state runs on to the window's end.  The states statement reads
the run's `agent.state` rows from the window's start once, and sums each agent's
spans as intervals (exact to the µs); the centre's total is the agents' sum.
`busy_s` and `staffed_s` (total and per interval) are the seconds behind the
ratio, so intervals add up to the window.

Definitions beyond DESIGN §7 that the engine's events made necessary:

- Service level = answered within the call's `sl_threshold_s` / (offered −
  short-abandoned − call-back-accepted); the numerator only counts calls of
  that denominator (a call-back answered by its own leg never counts), and a
  call with no threshold recorded counts as not within.  A call not yet
  judged (no answer, abandon or end in the data, and waiting less than its
  threshold at the run's last event, or at `now` for live figures) is out of
  the base until it passes the threshold or ends.
- AHT is the agent's time on the call: the `previous_s` of the call's
  `agent.state` events that left `on_call` and `wrap_up`, averaged over
  answered calls that already left `on_call` (a call still in talk has no
  handle time yet).  For an agent-first call-back that is from the agent
  answering, dialling and ringing the customer included, not only the
  customer's talk (`talk_s`): the same time occupancy counts as busy, so
  AHT x answered matches the busy time and staffing from AHT sizes the agents
  the centre really needs.
- FCR: an answered call is resolved unless another call from the same
  caller_id joined the same queue within 24 h after its first join (looked up
  over the run's later joins, even past the window end); calls without a
  number are left out, and a withheld number ('anonymous', 'unknown',
  'restricted', empty: what Asterisk reports) is no number, also in old events.  A set-based join, not a per-call subquery: the
  latter took 50 s for 20k calls.
- Call-backs and overflows count among the window's calls, for the entry queue.

Ratios are rounded to 4 places and are null (None) when the denominator is
zero; seconds are rounded to 2 places; CSAT to 2; NPS (−100..100) to 1.
Naive datetimes passed as `start` / `end` are taken as UTC.
"""
from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from router.store import run_tables

PINNED_KEYS: tuple[str, ...] = (
    "offered", "answered", "abandoned", "short_abandoned", "service_level", "asa_s", "aht_s",
    "abandonment_rate", "fcr_rate", "occupancy", "callbacks_offered", "callbacks_accepted",
    "callbacks_completed", "overflowed", "ivr_contained", "csat_avg", "nps", "routing_accuracy",
)
AGENT_KEYS: tuple[str, ...] = (
    "team", "answered", "talk_s", "aht_s", "occupancy", "no_answers", "csat_avg", "routing_accuracy",
)
TEAM_KEYS: tuple[str, ...] = AGENT_KEYS[1:]
# Quality monitoring (router.quality): mean evaluation score 0-100 of the scope's calls, and how many
# evaluations count; in every scope (total, queue, interval, agent, team).
QUALITY_KEYS: tuple[str, ...] = ("quality_score", "evaluations")
# Centre-wide agent time behind occupancy (total and intervals): on call + wrap-up, and that plus
# available + reserved, in seconds; states are split at interval and window edges.
FLOOR_KEYS: tuple[str, ...] = ("busy_s", "staffed_s")

FCR_HORIZON = timedelta(hours=24)

# A caller number as the KPIs use it: withheld numbers (Asterisk reports them as
# 'anonymous', 'unknown', 'restricted' or nothing) are no number at all.
CALLER_NUMBER_SQL = ("CASE WHEN lower(btrim(coalesce({raw}, ''))) IN ('', 'anonymous', 'unknown', 'restricted') "
                  "THEN NULL ELSE {raw} END")

# Agents' states as time spans, clipped to the window [$2, $3): each `agent.state` event closes
# the span [ts - previous_s, ts) of the state it left; an agent's last state runs on to the
# window's end.  Intervals split the spans at their edges.  The run's `agent.state` rows from $2
# on are read once (`agent_states`, with the values every use needs): the spans, each agent's
# last state and the teams seen come from that one pass, not from a scan each (a run in a table
# of its own has no index: each scan read all its events).  An agent silent since before $2 (only
# when the run has events before $2: `earlier`) gets its last state from the earlier rows.
def _state_spans_cte(earlier: str) -> str:
    return f"""
agent_states AS MATERIALIZED (
    SELECT agent, ts, id, data->>'state' AS state, data->>'previous' AS previous,
           (data->>'previous_s')::float8 AS previous_s, data->>'team' AS team
    FROM events
    WHERE run = $1 AND type = 'agent.state' AND agent IS NOT NULL AND ts >= $2
),
earlier_last AS (       -- the agents with no state from $2 on: the time of their last one before
    SELECT agent, max(ts) AS ts
    FROM events
    WHERE {earlier}::boolean AND run = $1 AND type = 'agent.state' AND agent IS NOT NULL AND ts < $2
      AND agent NOT IN (SELECT agent FROM agent_states)
    GROUP BY agent
),
agent_latest AS (       -- each agent's last state of the run: at its latest time, then (ties) the id
    SELECT DISTINCT ON (agent) agent, ts, state
    FROM (SELECT s.agent, s.ts, s.id, s.state
          FROM agent_states s JOIN (SELECT agent, max(ts) AS ts FROM agent_states GROUP BY agent) m USING (agent, ts)
          UNION ALL
          SELECT e.agent, e.ts, e.id, e.data->>'state'
          FROM events e JOIN earlier_last l USING (agent, ts)
          WHERE e.run = $1 AND e.type = 'agent.state') last_rows
    ORDER BY agent, id DESC
),
state_spans AS (
    SELECT agent, previous AS state,
           greatest(ts - previous_s * interval '1 second', $2) AS s0, least(ts, $3) AS s1
    FROM agent_states
    WHERE ts > $2 AND ts - previous_s * interval '1 second' < $3
    UNION ALL
    SELECT agent, state, greatest(ts, $2), $3
    FROM agent_latest
    WHERE ts < $3
)"""


# The run's first and last event: per event type (a skip over the (run, type, ts) index), the
# ends of its index range, not all the run's index entries (0.35 s at 1.8 M events).  And the
# run's event types: a statement's scan for a type the run never had is left out (`has(...)`).
_BOUNDS_SQL = """
WITH RECURSIVE types AS (
    SELECT (SELECT min(type) FROM events WHERE run = $1) AS type
    UNION ALL
    SELECT (SELECT min(type) FROM events WHERE run = $1 AND type > types.type)
    FROM types WHERE types.type IS NOT NULL
),
ends AS (
    SELECT types.type,
           (SELECT min(ts) FROM events WHERE run = $1 AND type = types.type) AS first,
           (SELECT max(ts) FROM events WHERE run = $1 AND type = types.type) AS last
    FROM types WHERE types.type IS NOT NULL
)
SELECT coalesce($2::timestamptz, min(first)) AS t0,
       coalesce($3::timestamptz, max(last) + interval '1 microsecond') AS t1,
       max(last) AS last, min(first) AS first, coalesce(array_agg(type), '{}') AS types
FROM ends
"""

# The same for a run in a table of its own (router.store.run_tables), which has no index to skip
# over: one sequential pass over that table (the run's rows in `events` itself by its index).
_RUN_TABLE_BOUNDS_SQL = """
SELECT coalesce($2::timestamptz, min(first)) AS t0,
       coalesce($3::timestamptz, max(last) + interval '1 microsecond') AS t1,
       max(last) AS last, min(first) AS first, coalesce(array_agg(type), '{}') AS types
FROM (SELECT type, min(ts) AS first, max(ts) AS last FROM events WHERE run = $1 GROUP BY type) ends
"""


def has(types_param: str, *types: str) -> str:
    """A condition true when the run has events of any of `types` (the bounds' `types`, passed as
    `types_param`).  The KPI plans with its parameters' values, so the planner folds it to a
    constant: false leaves the scan out of the plan (a run in a table of its own, which has no
    index, was read whole by every such scan, about 0.2 s each at 1.8 M events)."""
    return f"({types_param}::text[] && ARRAY[{', '.join(repr(t) for t in types)}]::text[])"

# The window's calls, each with its entry queue and first join.  $1 run, $2 from, $3 to.  A call's
# first join lies in the window when it joined in the window and never before it: the window's joins
# and the run's joins before $2, never a sort of all the run's joins (a live run's history).
# `earlier` is the parameter that says whether the run has events before $2 at all: when the window
# starts at the run's first event (the default) the look-back folds away instead of reading every
# join of the run again.  `joins_until` bounds the joins read from $2 on: the window's end, or later
# for a statement that also looks ahead (FCR's repeat calls), which then reads them once, not twice.
def _calls_cte(earlier: str, joins_until: str = "ts < $3") -> str:
    return f"""
joins AS (
    SELECT call_id, queue, ts, id, data->>'sl_threshold_s' AS sl_threshold, data->>'caller_id' AS caller_number
    FROM events
    WHERE run = $1 AND type = 'queue.joined' AND call_id IS NOT NULL AND ts >= $2 AND {joins_until}
),
window_joins AS (
    SELECT DISTINCT ON (call_id)
           call_id, queue, ts AS joined_ts,
           sl_threshold::float8 AS sl_threshold_s,
           {CALLER_NUMBER_SQL.format(raw="caller_number")} AS caller_id
    FROM joins
    WHERE ts < $3
    ORDER BY call_id, ts, id
),
calls AS MATERIALIZED (
    SELECT w.* FROM window_joins w
    WHERE NOT EXISTS (SELECT 1 FROM events p
                      WHERE {earlier}::boolean AND p.run = $1 AND p.type = 'queue.joined'
                        AND p.call_id = w.call_id AND p.ts < $2)
)
"""

# The buckets of the window: $2 from, $3 to, `width` the interval width (NULL: none), `origin` the
# interval origin.
def _buckets_cte(width: str, origin: str) -> str:
    return f"""
buckets AS (
    SELECT b AS bucket
    FROM generate_series(date_bin({width}::interval, $2, {origin}::timestamptz), $3, {width}::interval) AS b
    WHERE b < $3
)"""


# The agent figures' parts, folded per agent by the statement that reads them (the handled calls by
# the calls statement, states, no-answers and surveys by the states statement), summed by the agent
# figures statement.  Each statement returns its parts as arrays on its all-time row, in this order.
_AGENT_PARTS: dict[str, str] = {      # column: type
    "agent": "text", "answered": "bigint", "talk_s": "float8", "handle_sum": "float8", "handle_n": "bigint",
    "busy_s": "float8", "staffed_s": "float8", "no_answers": "bigint", "csat_sum": "float8", "csat_n": "bigint",
    "accurate": "bigint", "accuracy_base": "bigint",
}
# An agent's team candidates (its latest time with a team and the least team then), the same way.
_TEAM_SEEN: dict[str, str] = {"agent": "text", "ts": "timestamptz", "team": "text"}


def _parts_on_total_row(total: str) -> str:
    """Select-list items: the statement's `agent_parts` and `team_seen` (one row per agent) as arrays in
    agent order, `part_<column>` and `team_<column>`, on the row where `total` holds (NULL elsewhere)."""
    items = [f"CASE WHEN {total} THEN (SELECT array_agg({column} ORDER BY agent) FROM agent_parts) END AS part_{column}"
             for column in _AGENT_PARTS]
    items += [f"CASE WHEN {total} THEN (SELECT array_agg({column} ORDER BY agent) FROM team_seen) END AS team_{column}"
              for column in _TEAM_SEEN]
    return ",\n       ".join(items)


# The calls statement: the queue figures of every scope, and the handled calls' agent parts.
# $1 run, $2 from, $3 to, $4 interval width (NULL: no intervals), $5 short-abandon threshold, $6 FCR
# horizon, $7 interval origin, $8 when waiting calls are judged, $9 the run's event types, $10 whether
# the run has events before $2.  The window calls' events are read once, for the call facts and for
# the agents who handled them.
#
# Two forms of the window calls' events folded per call and agent (`call_agents`) and of the agents'
# teams seen on them (`team_seen`), the rest shared.  Over `events` (indexed, live traffic) the
# window calls' events are found from the calls (`call_events`, a join) and folded.  Over a run in
# a table of its own (no index: router.store.run_tables), where every scan reads the whole run, all
# the run's call events are folded first, in parallel workers (a partial aggregate per worker), and
# the groups of the window calls kept (`call_groups`): measured on a 200,000-call run, 4.3 s against
# 4.8 s for the statement beside the states statement.
def _kind_bit(column: str) -> str:
    """A call event's type as its bit in a call's `kinds` (call_facts tests them)."""
    return (f"CASE {column} WHEN 'call.connected' THEN 1 WHEN 'call.abandoned' THEN 2 WHEN 'callback.offered' THEN 4 "
            "WHEN 'callback.accepted' THEN 8 WHEN 'callback.connected' THEN 16 WHEN 'queue.overflowed' THEN 32 "
            "WHEN 'call.ended' THEN 64 ELSE 0 END")


def _calls_sql(run_table: bool) -> str:
    fold = _RUN_TABLE_CALL_FOLD if run_table else _CALL_FOLD
    team_seen = _RUN_TABLE_TEAM_SEEN if run_table else _TEAM_SEEN_ON_CALLS
    return f"""
WITH {_calls_cte("$10", "ts <= $3::timestamptz + $6::interval")},
{_buckets_cte("$4", "$7")},
{fold}{_CALLS_BODY.replace("{team_seen}", team_seen)}"""


_CALL_FOLD = f"""call_events AS MATERIALIZED (   -- the window calls' events any call or agent figure reads, with their values:
    SELECT e.call_id, e.agent, e.ts,            -- `kind`, a bit per event type the call facts test
           {_kind_bit("e.type")} AS kind,
           CASE WHEN e.type = 'call.connected' THEN (e.data->>'wait_s')::float8 END AS wait_s,
           CASE WHEN e.type = 'call.abandoned' THEN (e.data->>'wait_s')::float8 END AS abandon_wait_s,
           CASE WHEN e.type = 'call.connected' THEN (e.data->>'skills_met')::boolean END AS skills_met,
           CASE WHEN e.type = 'call.connected' THEN e.data->>'team' END AS team,
           CASE WHEN e.type = 'call.ended' THEN (e.data->>'talk_s')::float8 END AS talk_s,
           CASE WHEN e.type = 'agent.state' THEN e.data->>'previous' END AS previous,
           CASE WHEN e.type = 'agent.state' THEN (e.data->>'previous_s')::float8 END AS previous_s
    FROM events e JOIN calls USING (call_id)       -- call_id is unique in calls: a semi-join
    WHERE e.run = $1
      AND e.type IN ('call.connected', 'call.abandoned', 'callback.offered', 'callback.accepted',
                     'callback.connected', 'queue.overflowed', 'call.ended', 'agent.state')
      AND (e.type <> 'agent.state' OR e.data->>'previous' IN ('on_call', 'wrap_up'))
),
call_agents AS MATERIALIZED (   -- the window calls' events folded per call and agent (NULL: the events
    SELECT call_id, agent,                      -- for no agent), in one hash aggregate: the call facts and
           count(*) FILTER (WHERE kind = 1) AS connects,        -- the agent figures fold these rows further
           min(wait_s) AS wait_s,                                      -- call.connected's
           bool_and(skills_met) AS skills_met,                         -- call.connected's
           count(*) FILTER (WHERE skills_met) AS accurate,
           count(skills_met) AS accuracy_base,
           bit_or(kind) AS kinds,
           min(abandon_wait_s) AS abandon_wait_s,
           sum(talk_s) AS talk_s,                                      -- call.ended's
           sum(previous_s) FILTER (WHERE previous = 'on_call') AS on_call_s,
           sum(previous_s) FILTER (WHERE previous = 'wrap_up') AS wrap_s
    FROM call_events
    GROUP BY call_id, agent
),
"""
_RUN_TABLE_CALL_FOLD = f"""call_groups AS MATERIALIZED (    -- every call event of the run folded per call, agent and the team a
    SELECT call_id, agent,                      -- call.connected names, in parallel workers: no join first
           CASE WHEN type = 'call.connected' THEN data->>'team' END AS team,
           count(*) FILTER (WHERE type = 'call.connected') AS connects,
           max(ts) FILTER (WHERE type = 'call.connected') AS connected_ts,
           min((data->>'wait_s')::float8) FILTER (WHERE type = 'call.connected') AS wait_s,
           bool_and((data->>'skills_met')::boolean) FILTER (WHERE type = 'call.connected') AS skills_met,
           count(*) FILTER (WHERE type = 'call.connected' AND (data->>'skills_met')::boolean) AS accurate,
           count((data->>'skills_met')::boolean) FILTER (WHERE type = 'call.connected') AS accuracy_base,
           bit_or({_kind_bit("type")}) AS kinds,
           min((data->>'wait_s')::float8) FILTER (WHERE type = 'call.abandoned') AS abandon_wait_s,
           sum((data->>'talk_s')::float8) FILTER (WHERE type = 'call.ended') AS talk_s,
           sum((data->>'previous_s')::float8) FILTER (WHERE type = 'agent.state' AND data->>'previous' = 'on_call')
               AS on_call_s,
           sum((data->>'previous_s')::float8) FILTER (WHERE type = 'agent.state' AND data->>'previous' = 'wrap_up')
               AS wrap_s
    FROM events
    WHERE run = $1 AND call_id IS NOT NULL
      AND type IN ('call.connected', 'call.abandoned', 'callback.offered', 'callback.accepted',
                 'callback.connected', 'queue.overflowed', 'call.ended', 'agent.state')
      AND (type <> 'agent.state' OR data->>'previous' IN ('on_call', 'wrap_up'))
    GROUP BY call_id, agent, CASE WHEN type = 'call.connected' THEN data->>'team' END
),
window_groups AS MATERIALIZED (  -- the window calls' groups
    SELECT g.* FROM call_groups g JOIN calls USING (call_id)
),
call_agents AS MATERIALIZED (    -- per call and agent (NULL: the events for no agent), as call_events's fold
    SELECT call_id, agent, sum(connects)::bigint AS connects, min(wait_s) AS wait_s,
           bool_and(skills_met) AS skills_met, sum(accurate)::bigint AS accurate,
           sum(accuracy_base)::bigint AS accuracy_base, bit_or(kinds) AS kinds,
           min(abandon_wait_s) AS abandon_wait_s, sum(talk_s) AS talk_s, sum(on_call_s) AS on_call_s,
           sum(wrap_s) AS wrap_s
    FROM window_groups
    GROUP BY call_id, agent
),
"""
_TEAM_SEEN_ON_CALLS = """team_seen AS MATERIALIZED (     -- per agent: its latest call.connected with a team, the least team then
    SELECT DISTINCT ON (agent) agent, ts, team
    FROM call_events
    WHERE kind = 1 AND agent IS NOT NULL AND team IS NOT NULL
    ORDER BY agent, ts DESC, team
)"""
_RUN_TABLE_TEAM_SEEN = """team_seen AS MATERIALIZED (     -- per agent: its latest call.connected with a team, the least team then
    SELECT DISTINCT ON (agent) agent, connected_ts AS ts, team
    FROM window_groups
    WHERE connects > 0 AND agent IS NOT NULL AND team IS NOT NULL
    ORDER BY agent, ts DESC, team
)"""
_CALLS_BODY = f"""call_facts AS (     -- the call's rows of call_agents folded into one (not an index probe per call)
    SELECT c.*,
           date_bin($4::interval, c.joined_ts, $7::timestamptz) AS bucket,
           coalesce(f.answered, false) AS answered, f.wait_s, f.skills_met,
           coalesce(f.abandoned, false) AS abandoned, f.abandon_wait_s,
           coalesce(f.callback_offered, false) AS callback_offered,
           coalesce(f.callback_accepted, false) AS callback_accepted,
           coalesce(f.callback_completed, false) AS callback_completed,
           coalesce(f.overflowed, false) AS overflowed,
           coalesce(f.ended, false) AS ended,
           f.on_call_s, coalesce(f.wrap_s, 0) AS wrap_s
    FROM calls c
    LEFT JOIN (
        SELECT call_id, kinds & 1 <> 0 AS answered, wait_s, skills_met, kinds & 2 <> 0 AS abandoned, abandon_wait_s,
               kinds & 4 <> 0 AS callback_offered, kinds & 8 <> 0 AS callback_accepted,
               kinds & 16 <> 0 AS callback_completed, kinds & 32 <> 0 AS overflowed, kinds & 64 <> 0 AS ended,
               on_call_s, wrap_s
        FROM (SELECT call_id, bit_or(kinds) AS kinds, min(wait_s) AS wait_s, bool_and(skills_met) AS skills_met,
                     min(abandon_wait_s) AS abandon_wait_s, sum(on_call_s) AS on_call_s, sum(wrap_s) AS wrap_s
              FROM call_agents
              GROUP BY call_id) folded
    ) f USING (call_id)
),
repeat_joins AS (      -- (a join without a call id never repeats a call: r.call_id <> f.call_id)
    SELECT call_id, queue, ts, caller_number AS caller_id   -- equal to a number: not withheld
    FROM joins
    WHERE ts > $2
),
repeat_callers AS (    -- of every window call: only answered ones count (fcr_resolved), and `calls`,
    SELECT DISTINCT f.call_id       -- unlike call_facts, has row estimates that pick a hash join
    FROM calls f
    JOIN repeat_joins r
      ON r.queue = f.queue AND r.caller_id = f.caller_id AND r.call_id <> f.call_id
     AND r.ts > f.joined_ts AND r.ts <= f.joined_ts + $6::interval
),
outcomes AS (
    SELECT f.*,
           coalesce(f.abandon_wait_s <= $5, false) AS short_abandoned,
           f.on_call_s + f.wrap_s AS handle_s,
           f.answered AND f.caller_id IS NOT NULL AS fcr_eligible,
           f.answered AND f.caller_id IS NOT NULL AND rc.call_id IS NULL AS fcr_resolved
    FROM call_facts f LEFT JOIN repeat_callers rc USING (call_id)
),
sl AS (
    SELECT o.*,
           NOT o.short_abandoned AND NOT o.callback_accepted
           AND (o.answered OR o.abandoned OR o.ended
                OR $8::timestamptz - o.joined_ts >= coalesce(o.sl_threshold_s, 0) * interval '1 second')
               AS sl_eligible
    FROM outcomes o
),
call_kpis AS (
    SELECT bucket, queue, grouping(bucket) AS gb, grouping(queue) AS gq,
           count(*) AS offered,
           count(*) FILTER (WHERE answered) AS answered,
           count(*) FILTER (WHERE abandoned) AS abandoned,
           count(*) FILTER (WHERE short_abandoned) AS short_abandoned,
           count(*) FILTER (WHERE sl_eligible) AS sl_base,
           count(*) FILTER (WHERE sl_eligible AND answered AND wait_s <= sl_threshold_s) AS sl_met,
           avg(wait_s) FILTER (WHERE answered) AS asa,
           avg(handle_s) FILTER (WHERE answered) AS aht,
           count(*) FILTER (WHERE fcr_eligible) AS fcr_base,
           count(*) FILTER (WHERE fcr_resolved) AS fcr_met,
           count(*) FILTER (WHERE callback_offered) AS callbacks_offered,
           count(*) FILTER (WHERE callback_accepted) AS callbacks_accepted,
           count(*) FILTER (WHERE callback_completed) AS callbacks_completed,
           count(*) FILTER (WHERE overflowed) AS overflowed,
           count(*) FILTER (WHERE answered AND skills_met) AS accurate,
           count(*) FILTER (WHERE answered AND skills_met IS NOT NULL) AS accuracy_base
    FROM sl
    GROUP BY GROUPING SETS ((), (queue), (bucket), (bucket, queue))
),
surveys AS (
    SELECT queue, data->>'question' AS question, (data->>'score')::float8 AS score,
           date_bin($4::interval, ts, $7::timestamptz) AS bucket
    FROM events
    WHERE run = $1 AND type = 'survey.answered' AND ts >= $2 AND ts < $3 AND {has("$9", "survey.answered")}
),
survey_kpis AS (
    SELECT bucket, queue, grouping(bucket) AS gb, grouping(queue) AS gq,
           avg(score) FILTER (WHERE question = 'csat') AS csat,
           count(*) FILTER (WHERE question = 'nps') AS nps_answers,
           count(*) FILTER (WHERE question = 'nps' AND score >= 9) AS promoters,
           count(*) FILTER (WHERE question = 'nps' AND score <= 6) AS detractors
    FROM surveys
    GROUP BY GROUPING SETS ((), (queue), (bucket), (bucket, queue))
),
contained AS (
    SELECT date_bin($4::interval, e.ts, $7::timestamptz) AS bucket, e.call_id
    FROM events e
    WHERE e.run = $1 AND e.type = 'ivr.ended' AND e.data->>'outcome' = 'completed' AND e.ts >= $2 AND e.ts < $3
      AND {has("$9", "ivr.ended")}
      AND NOT EXISTS (SELECT 1 FROM events q
                      WHERE q.run = $1 AND q.call_id = e.call_id AND q.type = 'queue.joined')
),
contained_kpis AS (
    SELECT bucket, grouping(bucket) AS gb, count(DISTINCT call_id) AS ivr_contained
    FROM contained
    GROUP BY GROUPING SETS ((), (bucket))
),
queues AS (
    SELECT queue FROM calls UNION SELECT queue FROM surveys WHERE queue IS NOT NULL
),
scopes AS (
    SELECT NULL::timestamptz AS bucket, NULL::text AS queue, 1 AS gb, 1 AS gq
    UNION ALL SELECT NULL, queue, 1, 0 FROM queues
    UNION ALL SELECT bucket, NULL, 0, 1 FROM buckets
    UNION ALL SELECT bucket, queue, 0, 0 FROM buckets CROSS JOIN queues
),
handled AS (            -- per call and agent it connected to (each connection counts): talk (the agent's
    SELECT agent, connects, accurate, accuracy_base,            -- call.ended and any for no agent), handle time
           CASE WHEN talk_s IS NOT NULL OR nobody_talk_s IS NOT NULL
                THEN coalesce(talk_s, 0) + coalesce(nobody_talk_s, 0) END AS talk_s,
           on_call_s + coalesce(wrap_s, 0) AS handle_s
    FROM (SELECT *, sum(talk_s) FILTER (WHERE agent IS NULL) OVER (PARTITION BY call_id) AS nobody_talk_s
          FROM call_agents) per_call    -- a window, not a join: CTE row estimates would pick nested loops
    WHERE agent IS NOT NULL AND connects > 0
),
agent_parts AS MATERIALIZED (
    SELECT agent, sum(connects)::bigint AS answered, sum(connects * talk_s) AS talk_s,
           sum(connects * handle_s) AS handle_sum,
           coalesce(sum(connects) FILTER (WHERE handle_s IS NOT NULL), 0)::bigint AS handle_n,
           NULL::float8 AS busy_s, NULL::float8 AS staffed_s, 0::bigint AS no_answers,
           NULL::float8 AS csat_sum, 0::bigint AS csat_n,
           sum(accurate)::bigint AS accurate, sum(accuracy_base)::bigint AS accuracy_base
    FROM handled GROUP BY agent
),
{{team_seen}}
SELECT s.bucket, s.bucket + $4::interval AS bucket_end, s.queue, s.gb = 1 AS all_time,
       coalesce(c.offered, 0) AS offered,
       coalesce(c.answered, 0) AS answered,
       coalesce(c.abandoned, 0) AS abandoned,
       coalesce(c.short_abandoned, 0) AS short_abandoned,
       round(c.sl_met::numeric / nullif(c.sl_base, 0), 4)::float8 AS service_level,
       round(c.asa::numeric, 2)::float8 AS asa_s,
       round(c.aht::numeric, 2)::float8 AS aht_s,
       round((c.abandoned - c.short_abandoned)::numeric
             / nullif(c.offered - c.short_abandoned, 0), 4)::float8 AS abandonment_rate,
       round(c.fcr_met::numeric / nullif(c.fcr_base, 0), 4)::float8 AS fcr_rate,
       coalesce(c.callbacks_offered, 0) AS callbacks_offered,
       coalesce(c.callbacks_accepted, 0) AS callbacks_accepted,
       coalesce(c.callbacks_completed, 0) AS callbacks_completed,
       coalesce(c.overflowed, 0) AS overflowed,
       CASE WHEN s.gq = 1 THEN coalesce(k.ivr_contained, 0) END AS ivr_contained,
       round(v.csat::numeric, 2)::float8 AS csat_avg,
       round(100.0 * (v.promoters - v.detractors) / nullif(v.nps_answers, 0), 1)::float8 AS nps,
       round(c.accurate::numeric / nullif(c.accuracy_base, 0), 4)::float8 AS routing_accuracy,
       {_parts_on_total_row("s.gb = 1 AND s.gq = 1")}
FROM scopes s
LEFT JOIN call_kpis c
       ON c.gb = s.gb AND c.gq = s.gq
      AND c.bucket IS NOT DISTINCT FROM s.bucket AND c.queue IS NOT DISTINCT FROM s.queue
LEFT JOIN survey_kpis v
       ON v.gb = s.gb AND v.gq = s.gq
      AND v.bucket IS NOT DISTINCT FROM s.bucket AND v.queue IS NOT DISTINCT FROM s.queue
LEFT JOIN contained_kpis k
       ON k.gb = s.gb AND s.gq = 1 AND k.bucket IS NOT DISTINCT FROM s.bucket
ORDER BY s.gb DESC, s.bucket, s.gq DESC, s.queue
"""
_CALLS_SQL = _calls_sql(run_table=False)
_RUN_TABLE_CALLS_SQL = _calls_sql(run_table=True)


# The states an agent is busy in, and staffed in (occupancy = busy / staffed time).
_BUSY = "('on_call', 'wrap_up')"
_STAFFED = "('on_call', 'wrap_up', 'available', 'reserved')"

# The states statement: occupancy of every scope (total and interval) and the agents' parts from
# their states, no-answers and surveys.  $1 run, $2 from, $3 to, $4 interval width (NULL: no
# intervals), $5 interval origin, $6 the run's event types, $7 whether the run has events before $2.
_STATES_SQL = f"""
WITH {_buckets_cte("$4", "$5")},
{_state_spans_cte("$7")},
agent_time AS (         -- per agent: busy and staffed time, summed as intervals (exact to the µs)
    SELECT agent,
           sum(s1 - s0) FILTER (WHERE state IN {_BUSY}) AS busy,
           sum(s1 - s0) FILTER (WHERE state IN {_STAFFED}) AS staffed
    FROM state_spans
    GROUP BY agent
),
span_parts AS (         -- the all-time total is the agents' sum; intervals cut the spans at their edges
    SELECT NULL::timestamptz AS bucket, 1 AS gb, busy, staffed FROM agent_time
    UNION ALL      -- most spans lie inside one bucket; only those that cross an edge are cut
    SELECT date_bin($4::interval, s0, $5::timestamptz), 0,
           CASE WHEN state IN {_BUSY} THEN s1 - s0 END, CASE WHEN state IN {_STAFFED} THEN s1 - s0 END
    FROM state_spans
    WHERE s1 <= date_bin($4::interval, s0, $5::timestamptz) + $4::interval
    UNION ALL
    SELECT bucket, 0, CASE WHEN state IN {_BUSY} THEN secs END, CASE WHEN state IN {_STAFFED} THEN secs END
    FROM (SELECT b.bucket, s.state, least(s.s1, b.bucket + $4::interval) - greatest(s.s0, b.bucket) AS secs
          FROM state_spans s JOIN buckets b ON s.s0 < b.bucket + $4::interval AND s.s1 > b.bucket
          WHERE s.s1 > date_bin($4::interval, s.s0, $5::timestamptz) + $4::interval) cut
),
occupancy_kpis AS (
    SELECT bucket, gb, extract(epoch FROM sum(busy)) AS busy_s, extract(epoch FROM sum(staffed)) AS staffed_s
    FROM span_parts
    GROUP BY bucket, gb
),
scopes AS (
    SELECT NULL::timestamptz AS bucket, 1 AS gb
    UNION ALL SELECT bucket, 0 FROM buckets
),
window_states AS (     -- per agent and team seen: its latest time (what team_seen needs), not every state
    SELECT agent, team, max(ts) AS ts
    FROM agent_states
    WHERE ts < $3
    GROUP BY agent, team
),
parts AS (
    SELECT agent, NULL::float8 AS busy_s, NULL::float8 AS staffed_s, 0::bigint AS no_answers,
           NULL::float8 AS csat_sum, 0::bigint AS csat_n
    FROM window_states GROUP BY agent
    UNION ALL
    SELECT agent, extract(epoch FROM busy)::float8, extract(epoch FROM staffed)::float8, 0, NULL, 0
    FROM agent_time
    UNION ALL
    SELECT agent, NULL, NULL, count(*), NULL, 0
    FROM events
    WHERE run = $1 AND type = 'agent.no_answer' AND agent IS NOT NULL AND ts >= $2 AND ts < $3
      AND {has("$6", "agent.no_answer")}
    GROUP BY agent
    UNION ALL
    SELECT agent, NULL, NULL, 0, sum((data->>'score')::float8), count((data->>'score')::float8)
    FROM events
    WHERE run = $1 AND type = 'survey.answered' AND data->>'question' = 'csat'
      AND agent IS NOT NULL AND ts >= $2 AND ts < $3 AND {has("$6", "survey.answered")}
    GROUP BY agent
),
agent_parts AS MATERIALIZED (   -- one row per agent (each part's value is on one of its rows)
    SELECT agent, 0::bigint AS answered, NULL::float8 AS talk_s, NULL::float8 AS handle_sum, 0::bigint AS handle_n,
           sum(busy_s) AS busy_s, sum(staffed_s) AS staffed_s, sum(no_answers)::bigint AS no_answers,
           sum(csat_sum) AS csat_sum, sum(csat_n)::bigint AS csat_n, 0::bigint AS accurate, 0::bigint AS accuracy_base
    FROM parts GROUP BY agent
),
team_seen AS MATERIALIZED (     -- per agent: its latest agent.state with a team, the least team then
    SELECT DISTINCT ON (agent) agent, ts, team
    FROM window_states
    WHERE team IS NOT NULL
    ORDER BY agent, ts DESC, team
)
SELECT s.bucket, s.gb = 1 AS all_time,
       round((o.busy_s / nullif(o.staffed_s, 0))::numeric, 4)::float8 AS occupancy,
       round(coalesce(o.busy_s, 0)::numeric, 2)::float8 AS busy_s,
       round(coalesce(o.staffed_s, 0)::numeric, 2)::float8 AS staffed_s,
       {_parts_on_total_row("s.gb = 1")}
FROM scopes s
LEFT JOIN occupancy_kpis o ON o.gb = s.gb AND o.bucket IS NOT DISTINCT FROM s.bucket
ORDER BY s.gb DESC, s.bucket
"""

# The agent and team figures from the two statements' parts: $1.. the parts' columns as arrays
# (_AGENT_PARTS, one element per part), then the team candidates' (_TEAM_SEEN).  Agent
# figures are sums over the parts, team figures sums over their agents' parts (an average is its
# sum over its count).
_AGENT_SQL = f"""
WITH parts AS (
    SELECT * FROM unnest({", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_AGENT_PARTS.values(), 1))})
        AS p({", ".join(_AGENT_PARTS)})
),
team_seen AS (
    SELECT * FROM unnest({", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_TEAM_SEEN.values(), len(_AGENT_PARTS) + 1))})
        AS t({", ".join(_TEAM_SEEN)})
),
agent_figures AS (
    SELECT agent, sum(answered) AS answered, sum(talk_s) AS talk_s, sum(handle_sum) AS handle_sum,
           sum(handle_n) AS handle_n, sum(busy_s) AS busy_s, sum(staffed_s) AS staffed_s,
           sum(no_answers) AS no_answers, sum(csat_sum) AS csat_sum, sum(csat_n) AS csat_n,
           sum(accurate) AS accurate, sum(accuracy_base) AS accuracy_base
    FROM parts GROUP BY agent
),
agent_teams AS (        -- an agent's team: the latest one on its call.connected / agent.state events
    SELECT DISTINCT ON (agent) agent, team
    FROM team_seen JOIN (SELECT agent, max(ts) AS ts FROM team_seen GROUP BY agent) latest USING (agent, ts)
    ORDER BY agent, team
)
SELECT f.agent, t.team, grouping(f.agent) = 1 AS is_team,
       sum(f.answered)::int AS answered,
       round(coalesce(sum(f.talk_s), 0)::numeric, 2)::float8 AS talk_s,
       round((sum(f.handle_sum) / nullif(sum(f.handle_n), 0)::float8)::numeric, 2)::float8 AS aht_s,
       round((sum(f.busy_s) / nullif(sum(f.staffed_s), 0))::numeric, 4)::float8 AS occupancy,
       sum(f.no_answers)::int AS no_answers,
       round((sum(f.csat_sum) / nullif(sum(f.csat_n), 0)::float8)::numeric, 2)::float8 AS csat_avg,
       round(sum(f.accurate) / nullif(sum(f.accuracy_base), 0), 4)::float8 AS routing_accuracy
FROM agent_figures f LEFT JOIN agent_teams t USING (agent)
GROUP BY GROUPING SETS ((f.agent, t.team), (t.team))
HAVING grouping(f.agent) = 0 OR t.team IS NOT NULL
ORDER BY is_team, t.team, f.agent
"""


STALE_STATISTICS_SQL = """
SELECT n_mod_since_analyze > 1000 AND (n_mod_since_analyze > n_live_tup / 10 OR n_mod_since_analyze > 10000)
FROM pg_stat_user_tables WHERE relid = 'events'::regclass
"""


async def refresh_statistics(conn: asyncpg.Connection) -> None:
    """ANALYZE `events` when many rows arrived since the planner last looked.

    Right after a bulk load (a simulated day, a spool replay) and before
    autovacuum catches up, the planner believes `events` is tiny and picks
    nested loops: measured 35 s instead of 0.2 s on 18,000 events.  A new run
    of 10,000+ rows counts even in a big table: without statistics for its
    `run` value the KPI SQL took 24-29 s instead of 1.2 s at 300-400k rows.
    """
    if await conn.fetchval(STALE_STATISTICS_SQL):
        await conn.execute("ANALYZE events")


def _iso(ts: datetime | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with the centre's local offset."""
    return ts.astimezone(zone).isoformat() if ts is not None else None


def in_zone(ts: datetime | None, zone: ZoneInfo) -> datetime | None:
    """Naive datetimes are local times of the centre (asyncpg would read them as the server's)."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=zone)


def local_origin(t0: datetime, width: timedelta | None, zone: ZoneInfo) -> datetime:
    """The interval edge at or before `t0` on the centre's local clock.  Buckets are counted from
    it in absolute time, which keeps 15/30/60-minute edges local across a DST change (clocks
    move by whole hours at an hour's edge)."""
    local = t0.astimezone(zone)
    step = int(width.total_seconds() // 60) if width is not None else 60
    into = timedelta(minutes=(local.hour * 60 + local.minute) % step, seconds=local.second,
                     microseconds=local.microsecond)
    return t0 - into


async def compute_kpis(
    conn: asyncpg.Connection,
    *,
    run: str = "live",
    start: datetime | None = None,
    end: datetime | None = None,
    interval_minutes: int | None = None,
    short_abandon_s: float = 5.0,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> dict[str, Any]:
    """KPIs of `run` over [start, end): totals, per queue, agent, team and interval.

    Intervals start on local edges of the centre's `timezone`; naive `start`/`end` are local
    times there.  `now` (live figures) is when calls still waiting are judged; by default
    the run's last event."""
    if interval_minutes is not None and interval_minutes <= 0:
        raise ValueError(f"interval_minutes must be positive, got {interval_minutes}")
    zone = ZoneInfo(timezone)
    width = timedelta(minutes=interval_minutes) if interval_minutes is not None else None
    start, end = in_zone(start, zone), in_zone(end, zone)
    if not conn.is_in_transaction():
        await refresh_statistics(conn)
    if conn.is_in_transaction():
        return await _compute(conn, run, start, end, width, short_abandon_s, zone, now)
    # The calls statement runs on a second connection (when one opens) that shares this
    # transaction's snapshot, at the same time as the others here: two backends, two cores.
    sibling = asyncio.ensure_future(_sibling(conn))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _compute(conn, run, start, end, width, short_abandon_s, zone, now, sibling)
    finally:
        try:
            other = await sibling
        except BaseException:           # cancelled while it was connecting
            other = None
        if other is not None:
            other.terminate()           # at once: its read-only transaction is over or moot


async def _sibling(conn: asyncpg.Connection) -> asyncpg.Connection | None:
    """A second connection to the same server, database and user as `conn`, or None."""
    try:
        addr, params = conn._addr, conn._params      # asyncpg keeps what it connected with
        if isinstance(addr, str):                    # a Unix socket: <dir>/.s.PGSQL.<port>
            host, port = os.path.dirname(addr), int(addr.rsplit(".", 1)[1])
        else:
            host, port = addr[0], addr[1]
        mode = params.sslmode.name                   # prefer / allow: negotiate again, as conn did
        ssl = mode if mode in ("disable", "allow", "prefer") else params.ssl
        return await asyncpg.connect(host=host, port=port, user=params.user, password=params.password,
                                     database=params.database, ssl=ssl, server_settings=params.server_settings)
    except Exception:
        return None


# A connection that computes KPIs again and again (a dashboard) reuses asyncpg's prepared
# statements; from the sixth execution PostgreSQL may switch to a generic plan, which does not
# see the run's size.  Measured on a 30,000-call day with 30-minute intervals: five runs of
# 2.2 s, then every run past a 60 s statement timeout; with custom plans all eight runs alike.
#
# JIT off: the statements are large and run once per figure set, so PostgreSQL's JIT compiles
# hundreds of expressions for a single use.  Measured on 774,000 events (8 weeks of the sample
# centre): 18.5 and 21.5 s with JIT, 11.3 and 13.7 s without.
#
# work_mem 256MB (this transaction only): the per-call and per-agent folds of a 200,000-call run
# hash and sort in memory instead of spilling to disk.  No merge joins: the planner cannot see the
# size of CTE rows and chose merge joins that sorted 200,000 caller numbers twice (FCR) where a
# hash join needs no sort.
_CUSTOM_PLANS = ("SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off; "
                 "SET LOCAL work_mem = '256MB'; SET LOCAL enable_mergejoin = off")


_IVR_SQL = f"""
WITH firsts AS (
    SELECT call_id,
           min(ts) FILTER (WHERE type = 'ivr.node') AS entered,
           min(ts) FILTER (WHERE type = 'ivr.ended') AS ended,
           min(ts) FILTER (WHERE type = 'queue.joined') AS joined
    FROM events
    WHERE run = $1 AND type IN ('ivr.node', 'ivr.ended', 'queue.joined') AND ts >= $2 AND ts < $3
      AND {has("$4", "ivr.node")}               -- no call entered an IVR: 0 calls, no mean time
    GROUP BY call_id
)
SELECT count(*) FILTER (WHERE entered IS NOT NULL AND (joined IS NULL OR entered < joined))::int
           AS ivr_calls,
       round(avg(extract(epoch FROM ended - entered))
             FILTER (WHERE ended IS NOT NULL AND (joined IS NULL OR entered < joined))::numeric, 2)::float8
           AS ivr_time_s
FROM firsts
"""

_KEPT_WAIT_SQL = f"""
SELECT queue, grouping(queue) = 1 AS is_total,
       round(avg((data->>'kept_wait_s')::float8)::numeric, 2)::float8 AS callback_kept_wait_s
FROM events
WHERE run = $1 AND type = 'callback.connected' AND ts >= $2 AND ts < $3 AND {has("$4", "callback.connected")}
GROUP BY ROLLUP (queue)
"""

_IVR_NODES_SQL = f"""
SELECT (data->>'flow') || '/' || (data->>'node') AS node,
       count(DISTINCT call_id) FILTER (WHERE type = 'ivr.node')::int AS entered,
       count(*) FILTER (WHERE type = 'ivr.ended' AND data->>'outcome' = 'hangup')::int AS hangups,
       count(*) FILTER (WHERE type = 'ivr.ended' AND data->>'outcome' = 'timeout')::int AS timeouts
FROM events
WHERE run = $1 AND type IN ('ivr.node', 'ivr.ended') AND ts >= $2 AND ts < $3 AND {has("$4", "ivr.node", "ivr.ended")}
GROUP BY 1
ORDER BY 1
"""

# $1 run, $2 from, $3 to, $4 interval width, $5 interval origin, $6 agents, $7 their teams, $8 the
# run's event types.
_QUALITY_SQL = f"""
WITH scored AS (
    SELECT DISTINCT ON (call_id, agent, data->>'evaluator') call_id, agent, (data->>'score')::float8 AS score
    FROM events
    WHERE run = $1 AND type = 'qa.evaluated' AND call_id IS NOT NULL AND data->>'score' IS NOT NULL
      AND {has("$8", "qa.evaluated")}
    ORDER BY call_id, agent, data->>'evaluator', ts DESC, id DESC
),
entries AS (
    SELECT DISTINCT ON (e.call_id) e.call_id, e.queue, e.ts AS joined_ts
    FROM events e
    WHERE e.run = $1 AND e.type = 'queue.joined' AND e.call_id IN (SELECT call_id FROM scored)
    ORDER BY e.call_id, e.ts, e.id
),
call_scores AS (
    SELECT s.call_id, s.agent, n.queue, date_bin($4::interval, n.joined_ts, $5::timestamptz) AS bucket,
           avg(s.score) AS score, count(*) AS evaluations
    FROM scored s JOIN entries n USING (call_id)
    WHERE n.joined_ts >= $2 AND n.joined_ts < $3
    GROUP BY s.call_id, s.agent, n.queue, n.joined_ts
),
teams AS (
    SELECT agent, team FROM unnest($6::text[], $7::text[]) AS t(agent, team)
)
SELECT c.bucket, c.queue, c.agent, t.team,
       grouping(c.bucket) = 1 AS all_time, grouping(c.queue) = 1 AS all_queues,
       grouping(c.agent) = 0 AS is_agent, grouping(t.team) = 0 AS is_team,
       round(avg(c.score)::numeric, 2)::float8 AS quality_score, coalesce(sum(c.evaluations), 0)::int AS evaluations
FROM call_scores c LEFT JOIN teams t USING (agent)
GROUP BY GROUPING SETS ((), (c.queue), (c.bucket), (c.bucket, c.queue), (c.agent), (t.team))
"""


async def _fetch_in_snapshot(conn: asyncpg.Connection, snapshot: str,
                             *statements: tuple[str, tuple]) -> list[list]:
    """Each (sql, args) on `conn`, in a read-only transaction that sees exactly the exported `snapshot`."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        await conn.execute(_CUSTOM_PLANS)
        return [await conn.fetch(sql, *args) for sql, args in statements]


def _agent_inputs(calls_total: asyncpg.Record, states_total: asyncpg.Record) -> list[list]:
    """The agent figures statement's arguments: each part column (_AGENT_PARTS), then each team
    candidate column (_TEAM_SEEN), over the calls statement's parts and the states statement's."""
    def column(name: str) -> list:
        return [*(calls_total[name] or []), *(states_total[name] or [])]
    return [column(f"part_{name}") for name in _AGENT_PARTS] + [column(f"team_{name}") for name in _TEAM_SEEN]


def _add_quality(result: dict[str, Any], intervals: dict[datetime, dict[str, Any]], rows: list) -> None:
    """`quality_score` and `evaluations` into every scope of the result (null and 0 where none)."""
    scopes = [result, *result["queues"].values(), *result["agents"].values(), *result["teams"].values()]
    for interval in intervals.values():
        scopes += [interval, *interval["queues"].values()]
    for figures in scopes:
        figures.update(quality_score=None, evaluations=0)
    for row in rows:
        figures = {key: row[key] for key in QUALITY_KEYS}
        if row["is_agent"]:
            target = result["agents"].get(row["agent"])
        elif row["is_team"]:
            target = result["teams"].get(row["team"])
        elif row["all_time"]:
            target = result if row["all_queues"] else result["queues"].get(row["queue"])
        else:
            interval = intervals.get(row["bucket"])
            target = interval if row["all_queues"] or interval is None else interval["queues"].get(row["queue"])
        if target is not None:
            target.update(figures)


async def _compute(
    conn: asyncpg.Connection,
    run: str,
    start: datetime | None,
    end: datetime | None,
    width: timedelta | None,
    short_abandon_s: float,
    zone: ZoneInfo,
    now: datetime | None,
    sibling: asyncio.Future[asyncpg.Connection | None] | None = None,
) -> dict[str, Any]:
    await conn.execute(_CUSTOM_PLANS)
    own_table = await run_tables.own_table(conn, run)
    bounds = await conn.fetchrow(_BOUNDS_SQL if own_table is None else _RUN_TABLE_BOUNDS_SQL, run, start, end)
    t0, t1, types = bounds["t0"], bounds["t1"], bounds["types"]
    earlier = bounds["first"] is not None and t0 is not None and bounds["first"] < t0
    judged_at = now or bounds["last"]
    origin = local_origin(t0, width, zone) if t0 is not None else None
    calls_args = (run, t0, t1, width, short_abandon_s, FCR_HORIZON, origin, judged_at, types, earlier)
    states_args = (run, t0, t1, width, origin, types, earlier)
    calls_sql = _CALLS_SQL if own_table is None else _RUN_TABLE_CALLS_SQL
    other = await sibling if sibling is not None else None
    if other is not None:
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        calls_task = asyncio.ensure_future(_fetch_in_snapshot(other, snapshot, (calls_sql, calls_args),
                                                              (_IVR_SQL, (run, t0, t1, types))))
        try:
            states_rows = await conn.fetch(_STATES_SQL, *states_args)
        except BaseException:
            calls_task.cancel()                 # compute_kpis terminates its connection
            calls_task.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise
        queue_rows, (ivr,) = await calls_task
    else:
        queue_rows = await conn.fetch(calls_sql, *calls_args)
        states_rows = await conn.fetch(_STATES_SQL, *states_args)
        ivr = await conn.fetchrow(_IVR_SQL, run, t0, t1, types)
    calls_total = next(row for row in queue_rows if row["all_time"] and row["queue"] is None)
    states_total = next(row for row in states_rows if row["all_time"])
    agent_rows = await conn.fetch(_AGENT_SQL, *_agent_inputs(calls_total, states_total))
    ivr_nodes = await conn.fetch(_IVR_NODES_SQL, run, t0, t1, types)
    kept_waits = await conn.fetch(_KEPT_WAIT_SQL, run, t0, t1, types)
    agent_teams = [(row["agent"], row["team"]) for row in agent_rows if not row["is_team"]]
    quality = await conn.fetch(_QUALITY_SQL, run, t0, t1, width, origin,
                               [agent for agent, _ in agent_teams], [team for _, team in agent_teams], types)

    floor = {row["bucket"]: row for row in states_rows}
    result: dict[str, Any] = {}
    intervals: dict[datetime, dict[str, Any]] = {}
    for row in queue_rows:
        figures = {key: row[key] if key != "occupancy" else None for key in PINNED_KEYS}
        if row["queue"] is None:            # centre-wide agent time: the states statement's
            centre_wide = floor[row["bucket"]]
            figures["occupancy"] = centre_wide["occupancy"]
            figures.update({key: centre_wide[key] for key in FLOOR_KEYS})
        if row["all_time"] and row["queue"] is None:
            result.update(figures)
            result.update({"from": _iso(t0, zone), "to": _iso(t1, zone), "run": run,
                           "timezone": zone.key, "queues": {}})
        elif row["all_time"]:
            result["queues"][row["queue"]] = figures
        elif row["queue"] is None:
            intervals[row["bucket"]] = {       # a window edge inside a bucket is the label's edge
                "start": _iso(max(row["bucket"], t0), zone), "end": _iso(min(row["bucket_end"], t1), zone),
                **figures, "queues": {},
            }
        else:
            intervals[row["bucket"]]["queues"][row["queue"]] = figures

    result["agents"] = {
        row["agent"]: {key: row[key] for key in AGENT_KEYS}
        for row in agent_rows if not row["is_team"]
    }
    result["teams"] = {
        row["team"]: {key: row[key] for key in TEAM_KEYS}
        for row in agent_rows if row["is_team"]
    }
    result["callback_kept_wait_s"] = None
    for queue_figures in result["queues"].values():
        queue_figures["callback_kept_wait_s"] = None
    for row in kept_waits:
        if row["is_total"]:
            result["callback_kept_wait_s"] = row["callback_kept_wait_s"]
        elif row["queue"] in result["queues"]:
            result["queues"][row["queue"]]["callback_kept_wait_s"] = row["callback_kept_wait_s"]
    result["ivr_calls"], result["ivr_time_s"] = ivr["ivr_calls"], ivr["ivr_time_s"]
    result["ivr_nodes"] = {row["node"]: {"entered": row["entered"], "hangups": row["hangups"],
                                         "timeouts": row["timeouts"]} for row in ivr_nodes}
    _add_quality(result, intervals, quality)
    if width is not None:
        result["intervals"] = list(intervals.values())
    return result
