"""CRM screen-pop webhooks: an HTTP POST of JSON per offered call, for queues that name one.

`offer()` only appends to a bounded buffer (a full buffer drops the oldest
pop, counted and logged); one task sends them, each with the queue's timeout
and retries (backoff 0.5 s, doubling).  Routing never waits for a CRM.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import aiohttp
import structlog

from router.config.model import Centre, Webhook

log = structlog.get_logger("router.web.webhook")
BUFFER = 1000
FIRST_BACKOFF_S = 0.5


class Webhooks:
    def __init__(self, centre: Centre) -> None:
        self.hooks: dict[str, Webhook] = {q.id: q.webhook for q in centre.queues.values() if q.webhook}
        self._pending: deque[tuple[Webhook, dict[str, Any]]] = deque(maxlen=BUFFER)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = self.failed = self.dropped = 0

    def offer(self, queue: str | None, payload: dict[str, Any]) -> None:
        hook = self.hooks.get(queue or "")
        if hook is None:
            return
        if len(self._pending) == BUFFER:
            self.dropped += 1
            log.warning("webhook.dropped", queue=queue, buffered=BUFFER)
        self._pending.append((hook, payload))
        self._wake.set()

    def start(self) -> None:
        if self.hooks:
            self._task = asyncio.create_task(self._run(), name="router.web.webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers={"User-Agent": "acd-router"}) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    hook, payload = self._pending.popleft()
                    await self._send(session, hook, payload)

    async def _send(self, session: aiohttp.ClientSession, hook: Webhook, payload: dict[str, Any]) -> None:
        backoff = FIRST_BACKOFF_S
        for attempt in range(hook.retries + 1):
            try:
                async with session.post(hook.url, json=payload,
                                        timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as response:
                    if response.status < 500:
                        self.sent += 1
                        if response.status >= 400:
                            log.warning("webhook.rejected", status=response.status, queue=payload.get("queue"))
                        return
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = type(error).__name__
            if attempt < hook.retries:
                await asyncio.sleep(backoff)
                backoff *= 2
        self.failed += 1
        log.warning("webhook.failed", queue=payload.get("queue"), attempts=hook.retries + 1, reason=reason)
