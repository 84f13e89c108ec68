"""Active/standby leadership (router/ha.py) against a real PostgreSQL.

Failures are real: a member reaches the server through `TcpProxy` (tests/tcp_proxy.py),
which the test cuts (both sides closed) or blackholes (silence, no FIN), while its rival
connects directly.  Every member records the loop time and its own `is_leader` at each
`on_change`, so tests assert orderings (the old leader fenced before the new one led)
and states, never the machine's speed: timeouts below only stop a broken test from
hanging.  Detection times are printed (`pytest -s`), not asserted.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from router.ha import ROLE_LEADER, ROLE_STANDBY, Leadership, lock_key, session_settings
from tests.tcp_proxy import TcpProxy

HANG_GUARD_S = 30.0  # only stops a broken test from hanging; never a speed assertion
# Small timings keep the tests short: a leader's lease (0.2 + 0.3 s) ends well before
# the server ends a silent session (2 s), as the module requires.
FAST: dict[str, Any] = {"retry_s": 0.1, "check_interval_s": 0.2, "check_timeout_s": 0.3,
                        "server_idle_timeout_s": 2.0}


def new_group() -> str:
    """Each test competes in a group of its own, so tests sharing the database never mix."""
    return f"test-{uuid.uuid4().hex}"


class Member:
    """A Leadership whose role changes are recorded as (loop time, role, is_leader)."""

    def __init__(self, dsn: str, **settings: Any) -> None:
        self.changes: list[tuple[float, str, bool]] = []
        self.ha = Leadership(dsn, on_change=self._changed, **settings)
        self.rival: Member | None = None
        self.rival_leading: list[bool] = []  # the rival's is_leader whenever this one led

    def _changed(self, role: str) -> None:
        self.changes.append((asyncio.get_running_loop().time(), role, self.ha.is_leader))
        if role == ROLE_LEADER and self.rival is not None:
            self.rival_leading.append(self.rival.ha.is_leader)

    def changed_at(self, role: str, nth: int = 1) -> float:
        times = [at for at, changed, _ in self.changes if changed == role]
        assert len(times) >= nth, f"no {role} change #{nth} in {self.changes}"
        return times[nth - 1]

    def assert_consistent(self) -> None:
        """on_change alternates leader/standby, and is_leader agrees at each call."""
        roles = [role for _, role, _ in self.changes]
        assert roles == [ROLE_LEADER, ROLE_STANDBY] * (len(roles) // 2) + [ROLE_LEADER] * (len(roles) % 2)
        for _, role, leading in self.changes:
            assert leading == (role == ROLE_LEADER), self.changes


def rivals(old: Member, new: Member) -> None:
    """Have `new` record whether `old` still counted as leader when `new` became one."""
    new.rival = old


@contextlib.asynccontextmanager
async def members(*items: Member) -> AsyncIterator[None]:
    """Release every member at the end, whatever happened."""
    try:
        yield
    finally:
        for item in items:
            await item.ha.release()


@contextlib.asynccontextmanager
async def running_proxy(dsn: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the server until `check()` is true (state on the server has no event to await)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


async def lock_holders(dsn: str, key: int) -> list[int]:
    """Backend pids holding the advisory lock `key` (as the server sees it)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND classid::bigint = ($1::bigint >> 32) & 4294967295 "
            "AND objid::bigint = $1::bigint & 4294967295", key)
        return sorted(row["pid"] for row in rows)
    finally:
        await conn.close()


async def backend_alive(dsn: str, pid: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await conn.close()


async def competing(member: Member) -> asyncio.Task[None]:
    """Start `member` competing; returns once it has seen the lock taken (or led)."""
    task = asyncio.create_task(member.ha.acquire())
    with capture_logs() as logs:
        await wait_until(lambda: task.done() or any(e["event"] == "ha.standby" for e in logs),
                         "the member to compete")
    return task


# -- 1, 2: exclusion -----------------------------------------------------------------

async def test_one_of_two_leads_and_the_standby_takes_over_after_release(database_url):
    group = new_group()
    first, second = Member(database_url, group=group, **FAST), Member(database_url, group=group, **FAST)
    async with members(first, second):
        tasks = {asyncio.create_task(m.ha.acquire()): m for m in (first, second)}
        done, pending = await asyncio.wait(tasks, timeout=HANG_GUARD_S,
                                           return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1
        leader, standby = tasks[done.pop()], tasks[next(iter(pending))]
        rivals(leader, standby)
        holding = asyncio.create_task(leader.ha.hold())

        # the standby keeps trying while the leader holds (several retries and leases)
        await asyncio.sleep(5 * FAST["retry_s"] + 2 * leader.ha.lease_s)
        assert leader.ha.is_leader and leader.ha.role == ROLE_LEADER
        assert not standby.ha.is_leader and standby.ha.role == ROLE_STANDBY
        assert not any(task.done() for task in pending)
        assert len(await lock_holders(database_url, lock_key(group))) == 1

        await leader.ha.release()
        assert not leader.ha.is_leader
        assert await asyncio.wait_for(holding, HANG_GUARD_S) == "released"
        await asyncio.wait_for(next(iter(pending)), HANG_GUARD_S)
        assert standby.ha.is_leader and not leader.ha.is_leader
        assert leader.changed_at(ROLE_STANDBY) < standby.changed_at(ROLE_LEADER)
        assert standby.rival_leading == [False]
        assert len(await lock_holders(database_url, lock_key(group))) == 1
        print(f"\ntake-over after release: "
              f"{standby.changed_at(ROLE_LEADER) - leader.changed_at(ROLE_STANDBY):.3f} s "
              f"(retry {FAST['retry_s']} s + grace {standby.ha.takeover_grace_s} s)")
        await standby.ha.release()
        assert await lock_holders(database_url, lock_key(group)) == []
        leader.assert_consistent()
        standby.assert_consistent()
        assert leader.ha.fences == 0 and leader.ha.last_reason == "released"


async def test_different_groups_do_not_exclude_each_other(database_url):
    one = Member(database_url, group=new_group(), **FAST)
    other = Member(database_url, group=new_group(), **FAST)
    async with members(one, other):
        await asyncio.wait_for(asyncio.gather(one.ha.acquire(), other.ha.acquire()), HANG_GUARD_S)
        assert one.ha.is_leader and other.ha.is_leader
        assert len(await lock_holders(database_url, one.ha.key)) == 1
        assert len(await lock_holders(database_url, other.ha.key)) == 1


# -- 3, 4: fencing before take-over --------------------------------------------------

async def test_cut_connection_fences_the_leader_before_the_standby_leads(database_url):
    group = new_group()
    async with running_proxy(database_url) as proxy:
        # a long check interval: only the termination listener can notice the cut soon
        old = Member(proxy.dsn(database_url), group=group, retry_s=0.1, check_interval_s=5.0,
                     check_timeout_s=1.0, server_idle_timeout_s=10.0, takeover_grace_s=0.5)
        new = Member(database_url, group=group, **FAST)
        rivals(old, new)
        async with members(old, new):
            await asyncio.wait_for(old.ha.acquire(), HANG_GUARD_S)
            holding = asyncio.create_task(old.ha.hold())
            taking = await competing(new)
            assert not taking.done()

            cut_at = asyncio.get_running_loop().time()
            proxy.cut()
            assert await asyncio.wait_for(holding, HANG_GUARD_S) == "connection lost"
            assert not old.ha.is_leader and old.ha.role == ROLE_STANDBY and old.ha.lost.is_set()
            assert old.ha.fences == 1
            await asyncio.wait_for(taking, HANG_GUARD_S)
            assert new.ha.is_leader and not old.ha.is_leader

            fenced_at, led_at = old.changed_at(ROLE_STANDBY), new.changed_at(ROLE_LEADER)
            assert cut_at < fenced_at < led_at and new.rival_leading == [False]
            # fenced long before a health check was even due: the listener did it
            assert fenced_at - old.ha.acquired_at < old.ha.check_interval_s
            print(f"\ncut: fenced after {fenced_at - cut_at:.3f} s, "
                  f"standby led after {led_at - cut_at:.3f} s")
            old.assert_consistent()
            new.assert_consistent()


async def test_blackholed_leader_fences_before_the_server_frees_the_lock(database_url):
    group = new_group()
    async with running_proxy(database_url) as proxy:
        old = Member(proxy.dsn(database_url), group=group, **FAST)
        new = Member(database_url, group=group, **FAST)
        rivals(old, new)
        async with members(old, new):
            await asyncio.wait_for(old.ha.acquire(), HANG_GUARD_S)
            [old_pid] = await lock_holders(database_url, old.ha.key)
            holding = asyncio.create_task(old.ha.hold())
            taking = await competing(new)

            loop = asyncio.get_running_loop()
            blackholed_at = loop.time()
            proxy.blackhole()
            assert await asyncio.wait_for(holding, HANG_GUARD_S) == "timeout"
            fenced_at = old.changed_at(ROLE_STANDBY)
            assert not old.ha.is_leader
            # the server still has the silent session, and its lock, after the fence
            assert await lock_holders(database_url, old.ha.key) == [old_pid]
            assert not taking.done()

            await asyncio.wait_for(taking, HANG_GUARD_S)
            led_at = new.changed_at(ROLE_LEADER)
            assert blackholed_at < fenced_at < led_at and new.rival_leading == [False]
            # idle_session_timeout ended the old session: the proxy still holds its socket
            assert not await backend_alive(database_url, old_pid)
            new_holders = await lock_holders(database_url, old.ha.key)
            assert len(new_holders) == 1 and new_holders != [old_pid]
            print(f"\nblackhole: fenced after {fenced_at - blackholed_at:.3f} s "
                  f"(lease {old.ha.lease_s} s), standby led after {led_at - blackholed_at:.3f} s "
                  f"(server idle timeout {old.ha.server_idle_timeout_s} s "
                  f"+ grace {new.ha.takeover_grace_s} s)")
            old.assert_consistent()
            new.assert_consistent()


async def test_a_session_ended_behind_the_leaders_back_is_covered_by_the_grace(database_url):
    """The server ends the leader's session (pg_terminate_backend) while the leader
    cannot hear it (blackholed): the lock is free at once, but the old leader only
    finds out when its lease runs out.  The new leader's take-over grace outlasts it."""
    group = new_group()
    async with running_proxy(database_url) as proxy:
        old = Member(proxy.dsn(database_url), group=group, **FAST)
        new = Member(database_url, group=group, **FAST)
        rivals(old, new)
        async with members(old, new):
            await asyncio.wait_for(old.ha.acquire(), HANG_GUARD_S)
            [old_pid] = await lock_holders(database_url, old.ha.key)
            holding = asyncio.create_task(old.ha.hold())
            taking = await competing(new)

            proxy.blackhole()
            admin = await asyncpg.connect(database_url)
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
            finally:
                await admin.close()
            assert await asyncio.wait_for(holding, HANG_GUARD_S) == "timeout"
            await asyncio.wait_for(taking, HANG_GUARD_S)
            assert old.changed_at(ROLE_STANDBY) < new.changed_at(ROLE_LEADER)
            assert new.rival_leading == [False]
            old.assert_consistent()
            new.assert_consistent()


async def test_cancelling_hold_gives_leadership_up(database_url):
    member = Member(database_url, group=new_group(), **FAST)
    async with members(member):
        await asyncio.wait_for(member.ha.acquire(), HANG_GUARD_S)
        holding = asyncio.create_task(member.ha.hold())
        await asyncio.sleep(FAST["check_interval_s"])
        holding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holding
        assert not member.ha.is_leader and member.ha.last_reason == "hold cancelled"
        async def free() -> bool:
            return not await lock_holders(database_url, member.ha.key)
        await eventually(free, "the server to free the lock")
        member.assert_consistent()


async def test_a_stalled_event_loop_fences_at_once_when_the_lease_runs_out(database_url):
    group = new_group()
    stalled, rival = Member(database_url, group=group, **FAST), Member(database_url, group=group, **FAST)
    async with members(stalled, rival):
        await asyncio.wait_for(stalled.ha.acquire(), HANG_GUARD_S)
        holding = asyncio.create_task(stalled.ha.hold())
        await asyncio.sleep(FAST["check_interval_s"] * 2)
        assert stalled.ha.is_leader
        time.sleep(stalled.ha.lease_s + 0.1)  # noqa: ASYNC251 -- a stall: no task runs meanwhile
        assert not stalled.ha.is_leader  # before hold() had any chance to notice
        assert await asyncio.wait_for(holding, HANG_GUARD_S) in ("lease expired", "timeout")
        assert stalled.ha.role == ROLE_STANDBY
        await asyncio.wait_for(rival.ha.acquire(), HANG_GUARD_S)
        assert rival.ha.is_leader
        assert stalled.changed_at(ROLE_STANDBY) < rival.changed_at(ROLE_LEADER)
        stalled.assert_consistent()


# -- 5: an unreachable database -------------------------------------------------------

@pytest.mark.parametrize("outage", ["cut", "blackhole"])
async def test_acquire_retries_an_unreachable_database_until_it_returns(database_url, outage):
    async with running_proxy(database_url) as proxy:
        getattr(proxy, outage)()
        member = Member(proxy.dsn(database_url), group=new_group(), connect_timeout_s=0.3,
                        max_backoff_s=0.3, **FAST)
        async with members(member):
            with capture_logs() as logs:
                task = asyncio.create_task(member.ha.acquire())
                attempts = (lambda: proxy.refused) if outage == "cut" else (lambda: proxy.accepted)
                await wait_until(lambda: attempts() >= 3 or task.done(), "three connection attempts")
                assert not task.done()  # still trying: nothing raised
                assert member.ha.role == ROLE_STANDBY and not member.ha.is_leader
                proxy.restore()
                await asyncio.wait_for(task, HANG_GUARD_S)
            assert member.ha.is_leader
            events = [entry["event"] for entry in logs]
            assert events.count("ha.db_unreachable") == 1  # once per outage, not per attempt
            assert events.index("ha.db_unreachable") < events.index("ha.db_reachable") \
                < events.index("ha.leader")


async def test_a_configuration_error_is_raised_not_retried(database_url):
    base, _, _ = database_url.rpartition("/")
    member = Member(f"{base}/no_such_database_{uuid.uuid4().hex[:8]}", group=new_group(), **FAST)
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncio.wait_for(member.ha.acquire(), HANG_GUARD_S)
    assert member.ha.role == ROLE_STANDBY and member.changes == []


async def test_cancelling_acquire_during_the_takeover_grace_gives_the_lock_back(database_url):
    group = new_group()
    member = Member(database_url, group=group, takeover_grace_s=HANG_GUARD_S, **FAST)
    task = asyncio.create_task(member.ha.acquire())

    async def locked() -> bool:
        return bool(await lock_holders(database_url, lock_key(group)))
    await eventually(locked, "the member to take the lock")
    assert not member.ha.is_leader  # has the lock, still sitting out the grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rival = await asyncpg.connect(database_url)
    try:
        async def free() -> bool:
            return bool(await rival.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(group)))
        await eventually(free, "the lock to be free")
    finally:
        await rival.close()
    assert member.changes == []


# -- run() ----------------------------------------------------------------------------

async def test_run_leads_stops_leading_on_a_loss_and_leads_again(database_url):
    async with running_proxy(database_url) as proxy:
        member = Member(proxy.dsn(database_url), group=new_group(), **FAST)
        terms: list[str] = []
        leading = asyncio.Event()

        async def lead() -> None:
            terms.append("started")
            leading.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                terms.append(f"cancelled, is_leader={member.ha.is_leader}")
                raise

        running = asyncio.create_task(member.ha.run(lead))
        try:
            await asyncio.wait_for(leading.wait(), HANG_GUARD_S)
            leading.clear()
            proxy.cut()
            await wait_until(lambda: len(terms) == 2, "lead() to be cancelled")
            assert terms[1] == "cancelled, is_leader=False"  # fenced before lead() stopped
            proxy.restore()
            await asyncio.wait_for(leading.wait(), HANG_GUARD_S)
            assert member.ha.terms == 2 and member.ha.is_leader
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, HANG_GUARD_S)
        assert terms == ["started", "cancelled, is_leader=False",
                         "started", "cancelled, is_leader=False"]
        assert not member.ha.is_leader and member.ha.last_reason == "released"
        assert await lock_holders(database_url, member.ha.key) == []
        member.assert_consistent()


async def test_run_returns_what_lead_returns_and_releases(database_url):
    member = Member(database_url, group=new_group(), **FAST)

    async def lead() -> None:
        assert member.ha.is_leader
        raise LookupError("lead failed")

    with pytest.raises(LookupError, match="lead failed"):
        await asyncio.wait_for(member.ha.run(lead), HANG_GUARD_S)
    assert member.ha.last_reason == "released" and member.ha.fences == 0
    assert await lock_holders(database_url, member.ha.key) == []


# -- server-side fencing: idle_session_timeout -----------------------------------------

async def test_idle_session_timeout_frees_a_silent_sessions_advisory_lock(database_url):
    """The server-side half of fencing, checked on PostgreSQL itself, for a normal
    (non-superuser) role: it may set the timeout, and a session that holds a lock and
    goes silent loses it; a session without the timeout keeps it (the control)."""
    role = f"ha_user_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
    parts = urlsplit(database_url)
    user_dsn = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
    key_timed, key_control = lock_key(new_group()), lock_key(new_group())
    timeout_s = 1.0
    silent = await asyncpg.connect(user_dsn, server_settings=session_settings(timeout_s))
    control = await asyncpg.connect(user_dsn)
    try:
        assert not await silent.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert await silent.fetchval("SHOW idle_session_timeout") == "1s"
        await control.execute("SET idle_session_timeout = '0'")  # settable by this user too
        assert await control.fetchval("SELECT pg_try_advisory_lock($1)", key_control)
        silent_pid = silent.get_server_pid()
        went_silent = time.monotonic()  # before the server can have seen its last query
        assert await silent.fetchval("SELECT pg_try_advisory_lock($1)", key_timed)

        async def free() -> bool:
            return bool(await admin.fetchval("SELECT pg_try_advisory_lock($1)", key_timed))
        await eventually(free, "the server to end the silent session")
        freed_after = time.monotonic() - went_silent
        assert freed_after >= timeout_s  # never sooner than the timeout
        assert not await backend_alive(database_url, silent_pid)
        await wait_until(silent.is_closed, "the client to see its session ended")
        # the control, as silent for as long, still holds its lock
        assert not await admin.fetchval("SELECT pg_try_advisory_lock($1)", key_control)
        print(f"\nidle_session_timeout {timeout_s} s freed the lock after {freed_after:.3f} s")
    finally:
        silent.terminate()
        await control.close()
        await admin.execute("SELECT pg_advisory_unlock_all()")
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


# -- 6, 7: key and settings ------------------------------------------------------------

async def test_lock_key_is_stable_documented_and_distinct(database_url):
    assert lock_key("acd-router") == lock_key("acd-router")
    assert lock_key("acd-router") == -935906068349599098  # never changes between releases
    keys = {lock_key(f"group-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-2**63 <= key < 2**63 for key in keys)
    conn = await asyncpg.connect(database_url)
    try:  # the SQL spelling in the module docstring gives the same key
        for group in ("acd-router", "sales-floor", "é ünïcode"):
            sql_key = await conn.fetchval(
                "SELECT ('x' || left(encode(sha256(convert_to('acd-router/ha/' || $1, 'UTF8')),"
                " 'hex'), 16))::bit(64)::bigint", group)
            assert sql_key == lock_key(group)
    finally:
        await conn.close()


def test_timings_that_would_let_a_standby_in_before_the_fence_are_rejected():
    with pytest.raises(ValueError, match=r"check_interval_s \+ check_timeout_s .*server_idle_timeout_s"):
        Leadership("postgresql://u@127.0.0.1/db", check_interval_s=1.0, check_timeout_s=2.0,
                   server_idle_timeout_s=3.0)
    with pytest.raises(ValueError, match="retry_s"):
        Leadership("postgresql://u@127.0.0.1/db", retry_s=5.0)
    with pytest.raises(ValueError, match="check_timeout_s"):
        Leadership("postgresql://u@127.0.0.1/db", check_timeout_s=0)
    with pytest.raises(ValueError, match="takeover_grace_s"):
        Leadership("postgresql://u@127.0.0.1/db", takeover_grace_s=-1)
    ha = Leadership("postgresql://u@127.0.0.1/db", check_interval_s=1.0, check_timeout_s=1.9,
                    server_idle_timeout_s=3.0)
    assert ha.role == ROLE_STANDBY and not ha.is_leader and ha.takeover_grace_s == ha.lease_s


def test_session_settings_never_end_a_session_before_the_idle_timeout():
    for idle_s in (0.5, 1.0, 1.5, 2.0, 3.0, 7.5, 30.0):
        settings = session_settings(idle_s)
        assert int(settings["idle_session_timeout"]) == round(idle_s * 1000)
        dead_after = (int(settings["tcp_keepalives_idle"])
                      + int(settings["tcp_keepalives_interval"]) * int(settings["tcp_keepalives_count"]))
        assert dead_after >= idle_s
        assert all(int(settings[name]) >= 1 for name in settings if name.startswith("tcp_"))


async def test_logs_name_the_server_but_never_the_password(database_url):
    parts = urlsplit(database_url)
    secret = f"pw-{uuid.uuid4().hex}"  # trust auth: the server never asks for it
    dsn = parts._replace(netloc=f"postgres:{secret}@{parts.hostname}:{parts.port}").geturl()
    member = Member(dsn, group=new_group(), **FAST)
    with capture_logs() as logs:
        await asyncio.wait_for(member.ha.acquire(), HANG_GUARD_S)
        await member.ha.release()
    assert [e["event"] for e in logs] == ["ha.leader", "ha.standby"]
    assert logs[0]["target"] == f"{parts.hostname}:{parts.port}"
    assert secret not in repr(logs)
