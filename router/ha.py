"""Active/standby leadership: one `serve` process of a group leads, the others wait.

Theory of operation
-------------------
Every process of a group (the same `group` name, the same database) opens one
dedicated asyncpg connection (never a pool's: the lock belongs to the session) and
calls `pg_try_advisory_lock(lock_key(group))` every `retry_s`.  The process whose
session gets the lock leads; the lock is session-level, so it is held until the
leader unlocks it (`release()`) or its session ends, whatever ends it.

The leader keeps proving that its session is alive: `hold()` sends `SELECT 1` every
`check_interval_s`, each bounded by `check_timeout_s` (`asyncio.timeout`), and
asyncpg's termination listener reports a closed connection the moment asyncio sees
it.  Leadership is a *lease*: it is valid until `check_interval_s + check_timeout_s`
(`lease_s`) after the sending of the last check that succeeded, and `is_leader` -- the
fencing check callers consult before every action -- is False as soon as the lease has
run out, the connection is seen closed, or a loss was reported, even if the task that
runs `hold()` has not been scheduled yet (a stalled event loop cannot keep it True).
On a loss the process fences itself: `role` becomes standby at once, `lost` is set,
`on_change("standby")` is called, the connection is aborted (`terminate()`, which also
gives the lock back if the server still has the session) and `hold()` returns the
reason ("timeout", "connection lost", "lease expired", "terminated by server", ...).
The process is then a standby and may compete again (`acquire()`, or `run()`).

Server-side fencing.  A leader cut off without a FIN (a blackholed network, a dead
host) leaves its session, and so the lock, on the server for as long as TCP takes to
give up -- minutes.  So every session opened here starts (asyncpg `server_settings`,
i.e. before it can take the lock) with `idle_session_timeout = server_idle_timeout_s`
(PostgreSQL 14+; PGC_USERSET: any user may set it for their session) and with small
`tcp_keepalives_idle/interval/count`, chosen so that keepalives too never end a session
sooner than `server_idle_timeout_s` after the last bytes from its client.  A healthy
leader is never idle that long (it checks every `check_interval_s`); a silent one loses
its session, and its lock, `server_idle_timeout_s` after its last check reached the
server.  Its own lease ran out earlier: the last check that succeeded was sent before
the server saw it, and the lease ends `check_interval_s + check_timeout_s` after that
sending, which `__init__` requires to be less than `server_idle_timeout_s`.  So a
cut-off leader has fenced itself before any standby can get the lock (clocks on both
machines run at the same rate to well within the margin; wall-clock time is not used).
The same margin keeps a standby's waiting session alive (`retry_s` must be shorter too).

Take-over grace.  A session can also end on the server *before* its client learns of
it: an administrator's `pg_terminate_backend`, a restart, a reset seen by one side
only.  The lock is then free while the old leader still believes it leads, for up to
its lease.  So a process that gets the lock waits `takeover_grace_s` (default
`lease_s`, the lease of a process with the same settings) before it leads, watching
its connection, then confirms its session with a check: by then any previous leader's
lease has run out.  Together: an old leader's `is_leader` is False before a new
leader's is True, provided every member uses the same timings (the same config).

What this does not do: recall an action already under way when the loss is found
(callers check `is_leader` before each action, and `run()` cancels the leading task),
or survive a connection pooler in transaction mode between the router and PostgreSQL
(session-level locks need a session: connect directly, or in session mode).

The lock key is `lock_key(group)`: the first 8 bytes of SHA-256 of
`"acd-router/ha/" + group` (UTF-8), big-endian, as a signed 64-bit integer, i.e. in SQL
`('x' || left(encode(sha256(convert_to('acd-router/ha/' || group, 'UTF8')), 'hex'),
16))::bit(64)::bigint`; `pg_locks` shows it as classid (high 32 bits), objid (low 32
bits), objsubid 1.  Logs name the server as host:port only, never the DSN.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import asyncpg
import structlog

from router.store.database import dsn_target

log = structlog.get_logger("router.ha")

ROLE_STANDBY = "standby"
ROLE_LEADER = "leader"

KEY_PREFIX = "acd-router/ha/"
BACKOFF_MAX_S = 5.0

# Connection errors that say the database is unreachable or unwell: retried, never raised
# by acquire().  Configuration errors (wrong password, no such database, a bad DSN, a
# server older than PostgreSQL 14 refusing idle_session_timeout as an unknown parameter)
# are not, and raise: waiting would not mend them.
_PERMANENT_ERRORS = (asyncpg.InvalidAuthorizationSpecificationError,
                     asyncpg.InvalidCatalogNameError, asyncpg.ClientConfigurationError,
                     asyncpg.UndefinedObjectError)
_RETRYABLE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def lock_key(group: str) -> int:
    """The group's advisory-lock key: SHA-256 of KEY_PREFIX + group, first 8 bytes,
    big-endian, signed (stable across processes, machines and Python versions)."""
    digest = hashlib.sha256((KEY_PREFIX + group).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def keepalive_settings(server_idle_timeout_s: float) -> dict[str, str]:
    """Server-side TCP keepalives (whole seconds) that end a silent client's session
    no sooner than `server_idle_timeout_s` after its last bytes: idle + interval*count."""
    idle = max(1, math.floor(server_idle_timeout_s / 2))
    count = max(1, math.ceil(server_idle_timeout_s - idle))
    return {"tcp_keepalives_idle": str(idle), "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": str(count)}


def session_settings(server_idle_timeout_s: float) -> dict[str, str]:
    """What every leadership session starts with (see the module docstring)."""
    return {"idle_session_timeout": str(math.ceil(server_idle_timeout_s * 1000)),
            **keepalive_settings(server_idle_timeout_s)}


class Leadership:
    """One member of an active/standby group (see the module docstring)."""

    def __init__(self, dsn: str, *, group: str = "acd-router", retry_s: float = 0.5,
                 check_interval_s: float = 0.5, check_timeout_s: float = 1.0,
                 server_idle_timeout_s: float = 3.0,
                 on_change: Callable[[str], None] | None = None,
                 takeover_grace_s: float | None = None, connect_timeout_s: float = 5.0,
                 max_backoff_s: float = BACKOFF_MAX_S) -> None:
        for name, value in (("retry_s", retry_s), ("check_interval_s", check_interval_s),
                            ("check_timeout_s", check_timeout_s),
                            ("server_idle_timeout_s", server_idle_timeout_s),
                            ("connect_timeout_s", connect_timeout_s),
                            ("max_backoff_s", max_backoff_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if check_interval_s + check_timeout_s >= server_idle_timeout_s:
            raise ValueError(
                f"check_interval_s + check_timeout_s ({check_interval_s} + {check_timeout_s}) "
                f"must be less than server_idle_timeout_s ({server_idle_timeout_s}): a leader "
                "cut off from the database must fence itself before the server ends its "
                "session and a standby can take the lock")
        if retry_s >= server_idle_timeout_s:
            raise ValueError(f"retry_s ({retry_s}) must be less than server_idle_timeout_s "
                             f"({server_idle_timeout_s}), or the server ends a waiting "
                             "standby's session between two attempts")
        if takeover_grace_s is not None and not (math.isfinite(takeover_grace_s)
                                                 and takeover_grace_s >= 0):
            raise ValueError(f"takeover_grace_s must be >= 0, not {takeover_grace_s!r}")
        self._dsn = dsn
        self.group = group
        self.key = lock_key(group)
        self.retry_s = retry_s
        self.check_interval_s = check_interval_s
        self.check_timeout_s = check_timeout_s
        self.server_idle_timeout_s = server_idle_timeout_s
        self.takeover_grace_s = self.lease_s if takeover_grace_s is None else takeover_grace_s
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.on_change = on_change
        self.target = dsn_target(dsn).rsplit("/", 1)[0]  # host:port, never credentials

        self.role = ROLE_STANDBY
        self.acquired_at: float | None = None  # loop time this process last became leader
        self.lost_at: float | None = None  # loop time it last stopped leading
        self.last_reason: str | None = None  # why it last stopped leading
        self.terms = 0  # how many times it became leader
        self.fences = 0  # how many of those ended in a loss (not a release)
        self.lost = asyncio.Event()  # set when leadership ends; cleared when it starts
        self.outranked = asyncio.Event()  # set once an attempt found another process leading

        self._conn: asyncpg.Connection | None = None
        self._locked = False  # the current session holds the lock
        self._disconnected = asyncio.Event()  # the current session's connection closed
        self._lease_until = 0.0  # time.monotonic() at which leadership stops being valid
        self._last_ok_send = 0.0
        self._io = asyncio.Lock()  # one query at a time on the connection

    @property
    def lease_s(self) -> float:
        """How long one successful check keeps leadership valid."""
        return self.check_interval_s + self.check_timeout_s

    @property
    def is_leader(self) -> bool:
        """The fencing check: leader, lease not run out, connection not seen closed."""
        conn = self._conn
        return (self.role == ROLE_LEADER and time.monotonic() < self._lease_until
                and conn is not None and not conn.is_closed())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.release()

    # -- competing ----------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until this process leads.  An unreachable database is retried (back-off
        from `retry_s` doubling to `max_backoff_s`, with jitter), never raised; a
        configuration error (authentication, unknown database, bad DSN) is raised."""
        if self.role == ROLE_LEADER:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        failures = 0
        waiting_logged = False
        try:
            while True:
                try:
                    got = await self._try_lock()
                    took_over = got and await self._take_over()
                except _PERMANENT_ERRORS:
                    raise
                except _RETRYABLE_ERRORS as exc:
                    self._drop()
                    failures += 1
                    if failures == 1:
                        log.warning("ha.db_unreachable", group=self.group, target=self.target,
                                    error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(self._backoff(failures))
                    continue
                if failures:
                    log.info("ha.db_reachable", group=self.group, target=self.target,
                             failed_attempts=failures)
                    failures = 0
                if took_over:
                    self._become_leader(loop.time() - started)
                    return
                if not got:
                    self.outranked.set()
                if not got and not waiting_logged:
                    log.info("ha.standby", group=self.group, target=self.target,
                             reason="another process leads")
                    waiting_logged = True
                await asyncio.sleep(self.retry_s)
        except BaseException:  # cancelled, or a configuration error: hold nothing back
            if self.role != ROLE_LEADER:
                self._drop()
            raise

    async def _try_lock(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            self._drop()
            conn = await self._connect()
        async with asyncio.timeout(self.check_timeout_s):
            got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        self._locked = got
        return got

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn, timeout=self.connect_timeout_s,
                                     server_settings=session_settings(self.server_idle_timeout_s))
        self._conn = conn
        self._locked = False
        self._disconnected = asyncio.Event()
        conn.add_termination_listener(self._on_terminated)
        return conn

    async def _take_over(self) -> bool:
        """With the lock: sit out any previous leader's lease, then confirm the session
        (this check starts our lease).  False if the session was lost meanwhile."""
        conn, disconnected = self._conn, self._disconnected
        assert conn is not None
        if self.takeover_grace_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.takeover_grace_s):
                    await disconnected.wait()
            if disconnected.is_set():
                log.info("ha.takeover_lost", group=self.group, target=self.target)
                return False
        sent = time.monotonic()
        async with asyncio.timeout(self.check_timeout_s):
            await conn.fetchval("SELECT 1")
        if conn.is_closed() or conn is not self._conn:
            return False
        self._last_ok_send = sent
        self._lease_until = sent + self.lease_s
        return True

    def _become_leader(self, waited_s: float) -> None:
        self.role = ROLE_LEADER
        self.acquired_at = asyncio.get_running_loop().time()
        self.terms += 1
        self.last_reason = None
        self.lost.clear()
        log.info("ha.leader", group=self.group, key=self.key, target=self.target,
                 waited_s=round(waited_s, 3), term=self.terms)
        self._notify(ROLE_LEADER)

    def _backoff(self, failures: int) -> float:
        delay = min(self.max_backoff_s, self.retry_s * 2.0 ** min(failures - 1, 30))
        return delay * random.uniform(0.5, 1.0)

    # -- leading ------------------------------------------------------------------

    async def hold(self) -> str:
        """While leader: check the session every `check_interval_s`; return the reason
        once leadership ends (a loss, which fences, or `release()`).  Cancelling it
        gives leadership up too (fenced, reason "hold cancelled")."""
        if self.role != ROLE_LEADER:
            if self.last_reason is None:
                raise RuntimeError("hold() needs leadership: call acquire() first")
            return self.last_reason
        conn = self._conn
        assert conn is not None
        try:
            while self.role == ROLE_LEADER:
                wait = self._last_ok_send + self.check_interval_s - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self.lost.wait()
                    if self.role != ROLE_LEADER:
                        break
                await self._check(conn)
        except asyncio.CancelledError:
            self._fence("hold cancelled")
            raise
        return self.last_reason or "released"

    async def _check(self, conn: asyncpg.Connection) -> None:
        sent = time.monotonic()
        remaining = self._lease_until - sent
        if remaining <= 0:  # the loop stalled past the lease: no longer provably ours
            self._fence("lease expired")
            return
        try:
            async with asyncio.timeout(remaining):
                async with self._io:
                    await conn.fetchval("SELECT 1")
        except TimeoutError:
            self._fence("timeout")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._fence(_loss_reason(exc))
        else:
            if time.monotonic() >= self._lease_until:  # answered, but too late to count
                self._fence("lease expired")
            elif self.role == ROLE_LEADER:
                self._last_ok_send = sent
                self._lease_until = sent + self.lease_s

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        """asyncpg's termination listener: the connection closed, for whatever reason."""
        if conn is not self._conn:
            return  # one we dropped ourselves
        self._disconnected.set()
        if self.role == ROLE_LEADER:
            self._fence("connection lost")
        else:
            self._conn = None
            self._locked = False

    def _fence(self, reason: str) -> None:
        """Stop leading at once and abort the connection (an involuntary loss)."""
        if self.role != ROLE_LEADER:
            return
        self.fences += 1
        self._step_down(reason)
        self._drop()

    def _step_down(self, reason: str) -> None:
        if self.role != ROLE_LEADER:
            return
        self.role = ROLE_STANDBY
        self._lease_until = 0.0
        self.last_reason = reason
        self.lost_at = asyncio.get_running_loop().time()
        self.lost.set()
        led_s = round(self.lost_at - self.acquired_at, 3) if self.acquired_at is not None else None
        if reason == "released":
            log.info("ha.standby", group=self.group, target=self.target, reason=reason,
                     led_s=led_s)
        else:
            log.warning("ha.fenced", group=self.group, target=self.target, reason=reason,
                        led_s=led_s)
        self._notify(ROLE_STANDBY)

    def _notify(self, role: str) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(role)
        except Exception:
            log.exception("ha.on_change_failed", group=self.group, role=role)

    def _drop(self) -> None:
        """Abort the connection, if any (the server gives the lock back when it sees it)."""
        conn, self._conn = self._conn, None
        self._locked = False
        self._disconnected.set()
        if conn is not None:
            conn.terminate()

    # -- stopping -----------------------------------------------------------------

    async def release(self) -> None:
        """A clean stop: stop leading (on_change is called), unlock and close.  Cancel
        a running `acquire()` first; a running `hold()` returns "released"."""
        self._step_down("released")
        conn, locked = self._conn, self._locked
        self._conn, self._locked = None, False
        self._disconnected.set()
        if conn is None:
            return
        try:
            async with asyncio.timeout(self.check_timeout_s):
                async with self._io:
                    if locked:
                        await conn.fetchval("SELECT pg_advisory_unlock($1)", self.key)
                    await conn.close()
        except asyncio.CancelledError:
            conn.terminate()
            raise
        except Exception as exc:  # the session ends anyway, and the lock with it
            log.info("ha.release_aborted", group=self.group, target=self.target,
                     error=type(exc).__name__)
            conn.terminate()

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Lead whenever this process can, until cancelled: acquire, run `lead()` while
        holding, cancel it on a loss and compete again.  If `lead()` returns or raises,
        leadership is released and run() returns (or raises) the same."""
        while True:
            await self.acquire()
            lead_task = asyncio.ensure_future(lead())
            hold_task = asyncio.ensure_future(self.hold())
            try:
                await asyncio.wait({lead_task, hold_task}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                self._step_down("released")
                await _finish(lead_task)
                await self.release()
                await _finish(hold_task)
                raise
            if lead_task.done():
                self._step_down("released")
                await self.release()
                await _finish(hold_task)
                lead_task.result()  # lead()'s exception, if any
                return
            await _finish(lead_task)  # fenced: stop leading, then compete again


async def _finish(task: asyncio.Future[Any]) -> None:
    """Cancel `task` unless done and wait for it; its errors are logged, not raised
    (only a new cancellation of the caller propagates)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("ha.task_failed", error=repr(task.exception()))


def _loss_reason(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.IdleSessionTimeoutError):
        return "terminated by server (idle_session_timeout)"
    if isinstance(exc, asyncpg.exceptions.OperatorInterventionError):
        return "terminated by server"
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        return "connection lost"
    return f"error: {type(exc).__name__}"
