"""Simulated runs in tables of their own: child tables of `events`, loaded without index upkeep.

Theory of operation
-------------------
Live traffic trickles into `events` and is read by window (today, the last quarter
hour), so its rows are indexed as they arrive: the id, (run, type, ts), call_id.  A
simulated run is the opposite: a million rows in one burst, then read whole (its KPIs, a
forecast's history).  Keeping those three B-trees up to date row by row was most of the
cost of storing it: a 200,000-call run's COPY took 11 s of server CPU with them and
3.7 s into a table without index (`benchmarks/store_floor.py`).

So `simulate_day` stores each run in a table of its own that INHERITS (events): the same
columns, defaults and checks, and every query on `events` still reads its rows (`run` is
a column like any other).  A CHECK (run = <label>) lets the planner leave the table out
of any query for another run (constraint exclusion; the KPI and live queries plan with
their parameters' values).  The table has no index: a run is read whole, by sequential
scans of its own table only, which is what the KPI SQL does with most of a run anyway.
Dropping the run drops its table.

The table's name comes from the label's digest (`events_run_<16 hex digits>`), so a label
is never an identifier; the CHECK's literal is quoted by the server (`format('%L')`).

Statistics.  Once `events` has a child, the planner estimates joins over `events` with
its statistics of the whole inheritance tree, which autovacuum never gathers (it
analyses each table alone): without them a join of a run's events to its calls was
estimated at 9 M rows instead of 10,000.  `analyze_run` therefore analyses the run's
table and then `events` (its own rows and the tree's) once a run is stored, the columns
plans read (`PLANNED_COLUMNS`), and `drop_run` refreshes them when a run table goes.  A run
table's own sample is small (`RUN_TABLE_STATISTICS`): its plans are sequential scans and hash
aggregates, which need each event type's share, not a fine histogram.

Event ids stay unique without an index on them: the router's ids are unique per
process (router.events), and the writer's replay of spooled rows removes those already
stored in the run's table before it inserts (`DEDUP_REPLAY_SQL`).
"""
from __future__ import annotations

import hashlib

import asyncpg

TABLE_PREFIX = "events_run_"

# The replayed rows (in the writer's temporary replay table) already in a run's own table:
# a COPY whose commit reached PostgreSQL but whose reply was lost is spooled and replayed too.
DEDUP_REPLAY_SQL = ("DELETE FROM {replay} r USING {table} e WHERE r.run = $1 AND e.id = r.id")


def table_name(run: str) -> str:
    """The name of `run`'s own table: from the label's digest, never the label itself."""
    return TABLE_PREFIX + hashlib.sha256(run.encode()).hexdigest()[:16]


async def own_table(conn: asyncpg.Connection, run: str) -> str | None:
    """`run`'s own table when it has one (a child of `events`), else None."""
    return await conn.fetchval(
        "SELECT c.relname FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid "
        "WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace "
        "AND i.inhparent = 'events'::regclass", table_name(run))


async def create_run_table(conn: asyncpg.Connection, run: str) -> str:
    """Create `run`'s own table (no index, CHECK (run = label), a small statistics sample of the
    planned columns) and return its name; an empty one left by a run that stopped before its first
    event is taken as it is."""
    statement = await conn.fetchval(
        "SELECT format('CREATE TABLE IF NOT EXISTS %I (CONSTRAINT run_label CHECK (run = %L)) INHERITS (events)', "
        "$1::text, $2::text)", table_name(run), run)
    await conn.execute(statement)
    targets = ", ".join(f"ALTER COLUMN {column} SET STATISTICS {RUN_TABLE_STATISTICS}" for column in PLANNED_COLUMNS)
    await conn.execute(f'ALTER TABLE "{table_name(run)}" {targets}')
    return table_name(run)


# The columns whose statistics the KPI and live queries' plans use: not `id` or `data` (no plan
# estimates a jsonb's keys from them), which took 40 % of ANALYZE's time (0.58 s of a 200,000-call
# run's; autovacuum still gathers every column's, later).
PLANNED_COLUMNS = ("run", "type", "call_id", "queue", "agent", "ts")
# A run table's sample for them: 3,000 rows (300 x the target) instead of 30,000.  A run is read
# whole, by sequential scans and hash aggregates, so its plans need the share of each event type
# and the table's size, not a fine histogram: the KPIs of a 200,000-call run planned the same and
# took as long, and the run table's ANALYZE took 15 ms instead of 160 ms.  `events`, which live
# traffic is read from by window, keeps the default target.
RUN_TABLE_STATISTICS = 10


async def analyze_run(conn: asyncpg.Connection, run: str) -> None:
    """Statistics of a run just stored: its own table's, then those of `events` and its tree."""
    table = await own_table(conn, run)
    if table is not None:
        await conn.execute(f'ANALYZE "{table}" ({", ".join(PLANNED_COLUMNS)})')
    await conn.execute(f'ANALYZE events ({", ".join(PLANNED_COLUMNS)})')


async def drop_run(conn: asyncpg.Connection, run: str) -> None:
    """Delete every event of `run`: its own table, and any of its rows in `events` itself."""
    table = await own_table(conn, run)
    async with conn.transaction():
        if table is not None:
            await conn.execute(f'DROP TABLE "{table}"')
        await conn.execute("DELETE FROM ONLY events WHERE run = $1", run)
    if table is not None:
        await conn.execute("ANALYZE events")
