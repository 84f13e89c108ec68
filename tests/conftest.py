"""Shared fixtures.  Database tests run against a real PostgreSQL: the server
named by ACD_TEST_DSN (default: the local one on 127.0.0.1:5432).  Each test
session gets a database of its own, created here and dropped at the end."""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

ADMIN_DSN = os.environ.get("ACD_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """DSN of a new, empty database on the test server, dropped afterwards."""
    name = f"acd_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(ADMIN_DSN, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _logging_at_start() -> tuple[dict, list, int]:
    import logging

    import structlog

    root = logging.getLogger()
    return structlog.get_config(), list(root.handlers), root.level


@pytest.fixture(autouse=True)
def _logging_restored(_logging_at_start) -> Iterator[None]:
    """A test (or a module fixture) that runs the CLI in-process (`router.cli.main`) configures
    logging onto pytest's capture stream, which is closed after the test, and at the CLI's level:
    every test ends with the configuration the session started with."""
    yield
    import logging

    import structlog

    config, handlers, level = _logging_at_start
    structlog.configure(**config)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def database_url():
    """DSN of a fresh, empty database for this test session."""
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
async def conn(database_url):
    """A connection to the session's database, its schema migrated."""
    from router.store.migrate import migrate

    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def live(tmp_path, database_url):
    """The web service over the demo's simulated PBX (tests/web_harness.py), on a free port."""
    from tests.web_harness import start_live, stop_live

    service = await start_live(tmp_path, database_url)
    try:
        yield service
    finally:
        await stop_live(service)
