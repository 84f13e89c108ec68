"""Fixtures for tests that drive the real Asterisk of `scripts/asterisk-sandbox`.

`asterisk` (session) runs ``scripts/asterisk-sandbox start``, which builds the
Debian sid chroot on first use and starts Asterisk 22 on loopback with exactly
the files of asterisk_conf/.  If the sandbox cannot start, the tests FAIL: a
missing Asterisk must never pass as skipped tests in CI.  A sandbox this
session started is stopped at the end (ACD_ASTERISK_KEEP=1 keeps it running
for the next session); one that was already running is left alone.

`ami` (per test) is a logged-in `harness.Ami`; `schema` is the session's
database with the router's tables.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from router.store.database import ensure_schema
from tests.conftest import fresh_database
from tests.asterisk.harness import SCRIPT, Ami, Sandbox

START_TIMEOUT_S = 900          # a first build downloads about 640 MB


def _sandbox(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command], capture_output=True, text=True, timeout=START_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def asterisk() -> Iterator[Sandbox]:
    """A running sandbox Asterisk; fails (never skips) when it cannot start."""
    was_running = _sandbox("status").returncode == 0
    started = _sandbox("start")
    if started.returncode != 0:
        pytest.fail(
            f"scripts/asterisk-sandbox start failed (exit {started.returncode}):\n{started.stderr}",
            pytrace=False,
        )
    yield Sandbox()
    if not was_running and os.environ.get("ACD_ASTERISK_KEEP") != "1":
        _sandbox("stop")


@pytest.fixture
async def ami(asterisk: Sandbox) -> AsyncIterator[Ami]:
    client = Ami(asterisk)
    login = await client.connect()
    assert login.success, f"AMI login refused: {dict(login)}"
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own_schema() -> Iterator[str]:
    """A database of the test's own, with the router's tables: for `serve` processes, which
    take over whatever the store's "live" run says (agents still logged in, open calls)."""
    with fresh_database() as dsn:
        asyncio.run(ensure_schema(dsn))
        yield dsn


@pytest.fixture(scope="session")
def schema(database_url: str) -> str:
    """The session's test database with the router's tables."""
    asyncio.run(ensure_schema(database_url))
    return database_url
