"""`CallbackStore`: the running router's handle on the `callbacks` table.

Theory of operation
-------------------
`router.store.callbacks` holds the SQL; this class gives it a small asyncpg
pool and the timing a live router needs:

- `save` is awaited when a caller accepts a call-back, before they hear the
  confirmation: a call-back the caller was promised is committed first.  If
  PostgreSQL cannot take it, `save` raises and the adapter withdraws the offer
  (the caller waits on instead).
- `follow` takes the engine's events as they happen and hands those that move
  a call-back along (``callback.*``) to one task, so neither the
  AMI reader nor an AGI route waits for the database.  A status update that
  fails is retried with back-off until it goes through or the store closes;
  what is still queued then is logged, and the next start reconciles the table
  from the event log (`reconcile`).
- `load_open` returns the open call-backs in place order at start.
"""
from __future__ import annotations

import asyncio
import json
from collections import deque

import asyncpg
import structlog

from router.engine.engine import CallView
from router.engine.messages import CallbackRestored
from router.events import Event
from router.store import callbacks

log = structlog.get_logger("router.store.callback_store")

FOLLOWED = "callback."
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class CallbackStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._pending: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        self._task = asyncio.create_task(self._follow_loop(), name="router.store.callbacks")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to `timeout_s`), then close the pool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.error("callback_store.unsaved_updates", count=len(self._pending))
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout_s)   # waits for connections in use
            except TimeoutError:
                log.error("callback_store.pool_close_timeout", timeout_s=timeout_s)
                self._pool.terminate()

    async def save(self, call: CallView) -> None:
        """Commit the accepted call-back of `call`; raises on a database failure or a duplicate."""
        assert self._pool is not None, "start() first"
        async with self._pool.acquire() as conn:
            await callbacks.save_accepted(conn, call)

    def follow(self, event: Event) -> None:
        if event.type.startswith(FOLLOWED) and event.call_id is not None:
            self._pending.append(event)
            self._wake.set()

    async def load_open(self) -> list[CallbackRestored]:
        assert self._pool is not None, "start() first"
        async with self._pool.acquire() as conn:
            return await callbacks.load_open(conn)

    async def reconcile(self) -> int:
        """Bring open rows up to date with the event log (updates lost to an outage or a crash);
        returns how many rows changed."""
        assert self._pool is not None, "start() first"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.ts, e.call_id, e.type, e.data::text AS data FROM events e"
                " JOIN callbacks c ON c.call_id = e.call_id AND c.status IN ('pending', 'dialing')"
                " WHERE e.type LIKE 'callback.%' ORDER BY e.ts, e.id")
            return await callbacks.apply_events(conn, [
                Event(r["ts"].timestamp(), r["type"], r["call_id"], data=json.loads(r["data"])) for r in rows])

    async def _follow_loop(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._pending)
            try:
                async with self._pool.acquire() as conn:      # type: ignore[union-attr]
                    await callbacks.apply_events(conn, batch)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("callback_store.update_failed", reason=str(error), queued=len(self._pending))
                if self._closing:
                    log.error("callback_store.unsaved_updates", count=len(self._pending))
                    return
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            delay = RETRY_FIRST_S
            for _ in batch:
                self._pending.popleft()
