"""Simulated runs in tables of their own (router.store.run_tables), on the real PostgreSQL: the run's
rows live in a child of `events` with no index, every query on `events` reads them, the planner
leaves the table out for other runs, a label is data, replacing a run drops its table, and a
replayed spool never duplicates the rows a run table already holds."""
from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from benchmarks import vs_simpy                  # its M/M/14 centre, with a simulation model
from router.events import Event
from router.sim.run import RunExists, simulate_day
from router.store import run_tables
from router.store.database import connect, ensure_schema
from router.store.writer import EventWriter, Spool, encode_event


@pytest.fixture
def dsn(database_url: str) -> str:
    asyncio.run(ensure_schema(database_url))
    return database_url


def small_run(dsn: str, run: str | None = None, replace: bool = False, seed: int = 1) -> dict:
    model, hours = vs_simpy.centre(300)
    return asyncio.run(simulate_day(model, dsn, hours=hours, seed=seed, run=run, replace=replace,
                                    show_progress=False))


async def plan_relations(conn: asyncpg.Connection, sql: str, *args: object) -> set[str]:
    """The tables a statement's plan reads."""
    (plan,) = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    found, nodes = set(), [plan["Plan"]]
    while nodes:
        node = nodes.pop()
        if "Relation Name" in node:
            found.add(node["Relation Name"])
        nodes.extend(node.get("Plans", []))
    return found


async def test_a_simulated_run_lives_in_its_own_table_without_indexes_and_is_read_through_events(dsn):
    kpis = await asyncio.to_thread(small_run, dsn)
    run = kpis["simulation"]["run"]
    conn = await connect(dsn)
    try:
        table = await run_tables.own_table(conn, run)
        assert table == run_tables.table_name(run) and table.startswith("events_run_")
        in_table = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
        assert in_table > 8 * kpis["offered"]                       # every event of every call
        assert await conn.fetchval("SELECT count(*) FROM events WHERE run = $1", run) == in_table
        assert await conn.fetchval("SELECT count(*) FROM ONLY events WHERE run = $1", run) == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = $1", table) == 0
        # analysed once stored: the table's own statistics and those of the whole tree of events
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = $1", table) > 0
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'events' AND inherited") > 0
        # ... the run table's from a small sample of the planned columns only, `events` keeps the default
        targets = dict(await conn.fetch("SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = $1::regclass "
                                        "AND attnum > 0 AND NOT attisdropped", table))
        assert {column for column, target in targets.items() if target == run_tables.RUN_TABLE_STATISTICS} \
            == set(run_tables.PLANNED_COLUMNS)
        assert {row["attname"] for row in await conn.fetch("SELECT attname FROM pg_stats WHERE tablename = $1",
                                                           table)} >= set(run_tables.PLANNED_COLUMNS)
        assert await conn.fetchval("SELECT max(coalesce(attstattarget, -1)) FROM pg_attribute "
                                   "WHERE attrelid = 'events'::regclass AND attnum > 0") == -1
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(f'INSERT INTO "{table}" (id, ts, run, type) '
                               "VALUES (gen_random_uuid(), now(), 'live', 'call.arrived')")
    finally:
        await conn.close()


async def test_the_planner_leaves_a_run_table_out_of_queries_for_other_runs(dsn):
    kpis = await asyncio.to_thread(small_run, dsn)
    run = kpis["simulation"]["run"]
    table = run_tables.table_name(run)
    conn = await connect(dsn)
    try:
        assert table not in await plan_relations(conn, "SELECT count(*) FROM events WHERE run = 'live'")
        assert table in await plan_relations(conn, f"SELECT count(*) FROM events WHERE run = '{run}'")
        async with conn.transaction():          # as the KPI plans: with its parameters' values
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            assert table not in await plan_relations(conn, "SELECT count(*) FROM events WHERE run = $1", "live")
    finally:
        await conn.close()


async def test_a_label_is_data_in_the_table_name_and_its_check(dsn):
    label = "x'); DROP TABLE events; --\"q"
    conn = await connect(dsn)
    try:
        table = await run_tables.create_run_table(conn, label)
        assert table == run_tables.table_name(label) and await run_tables.own_table(conn, label) == table
        assert await run_tables.create_run_table(conn, label) == table     # left empty by a stopped run
        definition = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass", table)
        assert definition == "CHECK ((run = 'x''); DROP TABLE events; --\"q'::text))"
        await conn.execute(f'INSERT INTO "{table}" (id, ts, run, type) VALUES (gen_random_uuid(), now(), $1, '
                           "'call.arrived')", label)
        assert await conn.fetchval("SELECT count(*) FROM events WHERE run = $1", label) == 1
        await run_tables.drop_run(conn, label)
        assert await run_tables.own_table(conn, label) is None
        assert await conn.fetchval("SELECT count(*) FROM events WHERE run = $1", label) == 0
    finally:
        await conn.close()


async def test_replacing_a_named_run_drops_its_table_and_its_rows_in_events(dsn):
    first = await asyncio.to_thread(small_run, dsn, "history-replace")
    with pytest.raises(RunExists):
        await asyncio.to_thread(small_run, dsn, "history-replace")
    conn = await connect(dsn)
    try:
        table = run_tables.table_name("history-replace")
        oid = await conn.fetchval("SELECT $1::regclass::oid", table)
        await conn.execute("INSERT INTO events (id, ts, run, type) VALUES (gen_random_uuid(), now(), "
                           "'history-replace', 'call.arrived')")      # a row replayed into events itself
    finally:
        await conn.close()
    second = await asyncio.to_thread(small_run, dsn, "history-replace", True, 2)
    conn = await connect(dsn)
    try:
        assert await conn.fetchval("SELECT $1::regclass::oid", table) != oid          # a new table
        assert await conn.fetchval("SELECT count(*) FROM ONLY events WHERE run = 'history-replace'") == 0
        assert second["offered"] != first["offered"]                  # seed 2's calls, not both runs'
        assert second == (await asyncio.to_thread(small_run, dsn, "history-replace", True, 2)) | {
            "simulation": second["simulation"]}
    finally:
        await conn.close()


async def test_a_replayed_spool_adds_only_the_rows_a_run_table_does_not_hold(dsn, tmp_path):
    run = "sim:replay-test"
    conn = await connect(dsn)
    try:
        table = await run_tables.create_run_table(conn, run)
    finally:
        await conn.close()
    events = [Event(ts=1_767_225_600.0 + i, type="queue.joined", call_id=f"c{i}", queue="q",
                  data={"position": i}) for i in range(30)]
    async with EventWriter(dsn, run=run, table=table, spool_dir=tmp_path / "unused") as writer:
        await writer.put_many(events[:20])
        await writer.flush()
    # a COPY that committed but whose reply was lost is spooled too: rows 10..19 again, and 20..29 new
    spool = Spool(tmp_path / "spool")
    spool.append(encode_event(event, run) for event in events[10:])
    spool.seal()
    async with EventWriter(dsn, run=run, table=table, spool_dir=tmp_path / "spool") as writer:
        assert writer.replayed == 20
    conn = await connect(dsn)
    try:
        ids = [row["id"] for row in await conn.fetch("SELECT id FROM events WHERE run = $1", run)]
        assert sorted(ids) == sorted(event.id for event in events)                   # each once
        assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') == 20
        assert await conn.fetchval("SELECT count(*) FROM ONLY events WHERE run = $1", run) == 10
    finally:
        await conn.close()
