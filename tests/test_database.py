"""Database resolution (env, config, embedded server), DSN masking, the jsonb codec."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import asyncpg
import pytest

from router.config.model import DatabaseSettings
from router.store import (
    connect,
    create_pool,
    default_spool_dir,
    dsn_target,
    ensure_schema,
    resolve_dsn,
    safe_dsn,
)
from router.store.migrate import migration_files
from router.store.database import ENV_VAR


def test_environment_wins_over_config(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "postgresql://env@db.example/env")
    assert resolve_dsn(DatabaseSettings(dsn="postgresql://cfg@db/cfg")) == (
        "postgresql://env@db.example/env", None)


def test_config_dsn_when_environment_is_unset_or_empty(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_dsn(DatabaseSettings(dsn="postgresql://cfg@db/cfg")) == (
        "postgresql://cfg@db/cfg", None)
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_dsn(DatabaseSettings(dsn="postgresql://cfg@db/cfg"))[0] == "postgresql://cfg@db/cfg"


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://router:s3cr%40t@db.example:5433/acd?sslmode=require",
     "postgresql://router:***@db.example:5433/acd?sslmode=require"),
    ("postgres://router:pw@db/acd", "postgres://router:***@db/acd"),
    ("postgresql://router@db/acd?password=pw&sslmode=require",
     "postgresql://router@db/acd?password=***&sslmode=require"),
    ("host=db user=router password=pw dbname=acd", "host=db user=router password=*** dbname=acd"),
    ("host=db password='p w' dbname=acd", "host=db password=*** dbname=acd"),
    ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql://postgres:@/postgres?host=/tmp/pg"),
    ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
])
def test_safe_dsn_masks_passwords(dsn, shown):
    assert safe_dsn(dsn) == shown


def test_dsn_target_names_host_and_database_only():
    assert dsn_target("postgresql://router:pw@db.example:5433/acd") == "db.example:5433/acd"
    assert dsn_target("postgresql://postgres:@/postgres?host=/tmp/pg") == "/tmp/pg:5432/postgres"


def test_spool_sits_beside_the_embedded_data_dir(tmp_path):
    assert default_spool_dir(DatabaseSettings(data_dir=str(tmp_path / "pgdata"))) == tmp_path / "spool"
    assert default_spool_dir(DatabaseSettings(), tmp_path / "x" / "pg") == tmp_path / "x" / "spool"


async def test_jsonb_codec_round_trips_in_queries_and_copy(database_url):
    await ensure_schema(database_url)
    run = f"test:{uuid.uuid4().hex}"
    data = {"caller_id": "+4420", "nested": [1, 2.5, None, "ü"], "ok": True}
    conn = await connect(database_url)
    try:
        assert await conn.fetchval("SELECT $1::jsonb", data) == data
        await conn.copy_records_to_table(
            "events", columns=["id", "ts", "run", "type", "data"],
            records=[(uuid.uuid4(), dt.datetime.now(dt.timezone.utc), run, "flow.reloaded", data)])
        assert await conn.fetchval("SELECT data->>'caller_id' FROM events WHERE run = $1", run) == "+4420"
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT data FROM events WHERE run = $1", run) == data
    finally:
        await pool.close()


def test_embedded_server_starts_migrates_and_is_reused(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv(ENV_VAR, raising=False)
    settings = DatabaseSettings(data_dir=str(tmp_path / "pgdata"))
    dsn, stop = resolve_dsn(settings)
    assert stop is not None
    try:
        assert capfd.readouterr().out == ""  # `--json` commands own stdout
        again, _ = resolve_dsn(settings)
        assert again == dsn
        assert asyncio.run(_migrate_and_round_trip(dsn)) == [name for name, _ in migration_files()]
        first_start = asyncio.run(_postmaster_start(dsn))
        assert asyncio.run(_postmaster_start(resolve_dsn(settings)[0])) == first_start
    finally:
        stop()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        asyncio.run(_postmaster_start(dsn))
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


async def _migrate_and_round_trip(dsn: str) -> list[str]:
    applied = await ensure_schema(dsn)
    event_id = uuid.uuid4()
    conn = await connect(dsn)
    try:
        await conn.execute("INSERT INTO events (id, ts, type, data) VALUES ($1, now(), 'flow.reloaded', $2)",
                           event_id, {"version": 3, "ok": True})
        row = await conn.fetchrow("SELECT run, data FROM events WHERE id = $1", event_id)
    finally:
        await conn.close()
    assert (row["run"], row["data"]) == ("live", {"version": 3, "ok": True})
    assert json.dumps(row["data"])  # plain Python values
    return applied


async def _postmaster_start(dsn: str) -> dt.datetime:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()
