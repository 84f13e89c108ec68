"""`WebService`: the board, the hub, the metrics, the webhooks and the HTTP server of `serve`.

The service runs in the router's own event loop (live and demo alike).  The
PBX side calls `observe(event)` for every domain event, in order, before the
event goes to the store; the board, the metrics and the webhooks fold it in
synchronously (no await, no I/O).  A background task reads today's KPIs from
PostgreSQL at start and every `kpi_refresh_s` (after flushing the writer), so
"today" survives a restart and agrees with `acd-router kpi`.

Tokens: `web.tokens` and ACD_WEB_TOKENS.  The demo with neither gets a fresh
admin token, written to a file only its user can read (never printed or
logged); the live service with neither serves /metrics and /healthz and
refuses every API request, with a warning.
"""
from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from router.config.model import Centre, WebToken
from router.events import Event
from router.store.database import connect, default_data_dir
from router.store.kpi import compute_kpis
from router.web.app import WebApp
from router.web.auth import TokenBook, digest
from router.web.board import Board
from router.web.hub import Hub
from router.web.metrics import Metrics
from router.web.operations import Operations, Pbx
from router.web.quality import QualitySource
from router.web.webhook import Webhooks

log = structlog.get_logger("router.web.server")
DEMO_TOKEN_FILE = "demo-token"


class WebService:
    def __init__(self, centre: Centre, pbx: Pbx, *, mode: str, run: str, dsn: str | None,
                 flush: Callable[[], Any] | None = None, spooled: Callable[[], int] = lambda: 0,
                 link_up: Callable[[], bool] = lambda: True, speed: float = 1.0,
                 environ: Mapping[str, str] = os.environ, host: str | None = None, port: int | None = None,
                 token_dir: Path | None = None, role: Callable[[], str] = lambda: "leader") -> None:
        self.centre, self.pbx, self.mode, self.run, self.dsn = centre, pbx, mode, run, dsn
        self.settings = centre.web
        self.host = host or self.settings.host
        self.port = self.settings.port if port is None else port
        self._flush, self._spooled, self._link_up = flush, spooled, link_up
        tokens = list(self.settings.tokens)
        self.token_file: Path | None = None
        if not tokens and not environ.get("ACD_WEB_TOKENS") and mode == "demo":
            tokens.append(self._demo_token(token_dir or default_data_dir()))
        self.tokens = TokenBook.for_centre(tokens, environ, centre.agents, self.settings.session_hours * 3600.0)
        self.board = Board(centre, pbx.engine, mode=mode, speed=speed, link_up=link_up, spooled=spooled, role=role)
        self.hub = Hub(self.board, pbx.now, self.settings.push_interval_s)
        self.metrics = Metrics(centre, self.board, pbx.now, spooled, link_up)
        self.webhooks = Webhooks(centre)
        self.operations = Operations(pbx)
        self.web = WebApp(self.tokens, self.hub, self.operations, self.metrics,
                          QualitySource(centre, dsn, run, flush))
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.kpi_reads = 0

    def rebind(self) -> None:
        """The PBX side started over with a new engine (an HA take-over): read that one."""
        self.board.engine = self.pbx.engine

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def observe(self, event: Event) -> None:
        """One domain event, in order (before or as it goes to the store)."""
        self.board.observe(event)
        self.metrics.observe(event)
        if event.type == "agent.offered" and event.queue in self.webhooks.hooks:
            info = self.board.call_info(event.call_id)
            self.webhooks.offer(event.queue, {
                "event": "call.offered", "ts": event.ts, "call_id": event.call_id, "queue": event.queue,
                "agent": event.agent, "caller": info.get("caller", ""), "ivr": info.get("ivr", {}),
                "callback": info.get("callback", False)})

    async def start(self) -> None:
        if not len(self.tokens):
            log.warning("web.no_tokens", hint="set web.tokens in the config or ACD_WEB_TOKENS; "
                                              "every API request is refused until then")
        self.hub.start()
        self.metrics.start()
        self.webhooks.start()
        self._runner = web.AppRunner(self.web.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        if self.dsn is not None:
            self._refresher = asyncio.create_task(self._refresh_kpis(), name="router.web.kpis")
        log.info("web.started", url=self.url, holders=len(self.tokens), mode=self.mode)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self.hub.close()
        await self.metrics.close()
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- "today" from PostgreSQL ------------------------------------------------------

    async def refresh_once(self, conn: Any, yesterday: dict[str, Any] | None) -> dict[str, Any] | None:
        """Read today's KPIs (and yesterday's once a day) into the board; returns yesterday's."""
        if self._flush is not None:
            try:
                async with asyncio.timeout(5.0):    # not wait_for: in 3.11 it can swallow a cancel
                    await self._flush()
            except TimeoutError:
                pass                                # the writer is spooling: read what is there
        now = self.pbx.now()
        start, end = self.board.local_day(now)
        kwargs = {"run": self.run, "interval_minutes": self.settings.interval_minutes,
                  "short_abandon_s": self.centre.short_abandon_s, "timezone": self.centre.timezone}
        moment = datetime.fromtimestamp(now, timezone.utc)
        today = await compute_kpis(conn, start=start, end=min(end, moment + timedelta(microseconds=1)),
                                   now=moment, **kwargs)
        if yesterday is None or yesterday.get("day") != self.board.day:
            yesterday = await compute_kpis(conn, start=start - timedelta(days=1), end=start, **kwargs)
            yesterday["day"] = self.board.day
        self.board.load_today(today, yesterday, now)
        self.kpi_reads += 1
        return yesterday

    async def _refresh_kpis(self) -> None:
        conn, yesterday = None, None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await connect(self.dsn)   # type: ignore[arg-type]
                yesterday = await self.refresh_once(conn, yesterday)
            except Exception as error:              # the database is away: keep the last figures
                log.warning("web.kpis_unavailable", reason=type(error).__name__)
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(self.settings.kpi_refresh_s)

    # --- the demo's own token --------------------------------------------------------

    def _demo_token(self, directory: Path) -> WebToken:
        """A fresh admin token for the demo, in a file only this user can read."""
        token = secrets.token_urlsafe(24)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DEMO_TOKEN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        os.chmod(path, 0o600)
        self.token_file = path
        return WebToken("demo-admin", digest(token), "admin")
