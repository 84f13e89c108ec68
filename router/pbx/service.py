"""`acd-router serve` on a real Asterisk: the pieces wired together, started and stopped in order.

Theory of operation
-------------------
`Service.start()` brings the router up from the inside out: the event store
(schema, then the writer, which replays any spool), the flows (a set with
errors refuses to start; later reloads keep the running set), the engine and
the adapter (as a standby: it acts on nothing yet), the web service
(dashboard, admin API, metrics; it sees every event the adapter emits), the
AMI link (kept warm; if Asterisk is not there yet it keeps retrying), and then
competes for the leadership of its HA group (router.ha: a PostgreSQL advisory
lock; ``ha:`` in the config).  `start` returns once the process leads or knows
that another one does.

Leading (`_lead`, a loop for the process's life): once the lock is held, the
adapter takes over (router.pbx.recovery: the live channels and the stored
events give back every waiting, ringing and connected call and every agent's
log-in and pause), the open call-backs come back from PostgreSQL, and last the
FastAGI server listens, so no call reaches the IVR before the state exists.  A
leader that loses the lock or its database stops acting at once (the adapter
checks the lease before every action; fencing), closes its FastAGI port (the
dialplan moves on to the next router of ``ROUTER_AGI``), drops its state and
competes again as a standby.  Agents start logged out unless the store says
otherwise; ``auto_login`` logs some in (tests, demos), feature codes and the
adapter's API do the rest.  Flow files are watched (mtime) and reloaded on
SIGHUP; each reload is recorded as ``flow.reloaded``.  While it leads, the
router deletes recordings past their retention once a day
(router.recording.prune).

`Service.stop()` drains: the FastAGI port closes (new calls go on to the next
router of ``ROUTER_AGI``, or wait in the dialplan for one), calls in progress may
finish for up to ``drain_timeout_s``, then the FastAGI
server, the web service, the adapter (its last AMI actions and events), the AMI link and the
writer (flushed) close, in that order.  `run()` does start, waits for SIGTERM
or SIGINT, then stop.
"""
from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import structlog

from router.config.model import Centre
from router.engine.engine import Engine
from router.ha import ROLE_LEADER, ROLE_STANDBY, Leadership
from router.ivr.registry import FlowError, FlowRegistry, ReloadResult, flows_directory, sighup_handler, watch
from router.pbx.adapter import AsteriskAdapter
from router.pbx.ami import AmiError, AmiLink
from router.pbx.fastagi import FastAGIServer
from router.recording.prune import run_daily as prune_daily
from router.store.callback_store import CallbackStore
from router.store.database import default_spool_dir, ensure_schema, resolve_dsn
from router.store.recovery import load as load_recovered
from router.store.writer import EventWriter
from router.web.server import WebService

log = structlog.get_logger("router.pbx.service")

SECRET_ENV = "ACD_AMI_SECRET"


class Service:
    """The production router for one centre with an `ami:` section."""

    def __init__(self, centre: Centre, *, data_dir: str | Path | None = None,
                 auto_login: Sequence[str] = (), drain_timeout_s: float = 30.0, web_host: str | None = None,
                 web_port: int | None = None, on_ready: Callable[[WebService], None] | None = None) -> None:
        if centre.ami is None:
            raise ValueError(f"{centre.source}: no `ami:` section, so no Asterisk to serve")
        unknown = [agent for agent in auto_login if agent not in centre.agents]
        if unknown:
            raise ValueError(f"auto_login: unknown agent(s) {', '.join(unknown)}")
        self.centre = centre
        self.data_dir = data_dir
        self.auto_login = tuple(auto_login)
        self.drain_timeout_s = drain_timeout_s
        self.adapter: AsteriskAdapter | None = None
        self.leadership: Leadership | None = None
        self.took_over: list[float] = []        # loop time of each take-over's end (benchmarks)
        self._writer: EventWriter | None = None
        self._callbacks: CallbackStore | None = None
        self._link: AmiLink | None = None
        self._server: FastAGIServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None      # recordings past retention, daily
        self._leading: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()         # leader, recovered, FastAGI listening
        self._stopping = False
        self._dsn = ""
        self._stop_database: Callable[[], None] | None = None
        self.web: WebService | None = None
        self._web_address = (web_host, web_port)
        self._on_ready = on_ready

    @property
    def role(self) -> str:
        return ROLE_LEADER if self.leadership is not None and self.leadership.is_leader else ROLE_STANDBY

    async def start(self) -> None:
        centre, ami = self.centre, self.centre.ami
        assert ami is not None
        dsn, self._stop_database = await asyncio.to_thread(resolve_dsn, centre.database, self.data_dir)
        self._dsn = dsn
        await ensure_schema(dsn)
        self._writer = EventWriter(dsn, spool_dir=default_spool_dir(centre.database, self.data_dir))
        await self._writer.start()
        registry = FlowRegistry(flows_directory(centre), known_queues=list(centre.queues),
                                schedules=centre.schedules, known_skills=list(centre.skills))
        first = registry.reload()
        await self._writer.put(first.event)
        if not first.ok:
            raise FlowError([p for p in first.problems if p.severity == "error"])
        self._check_queue_flows(registry)
        self._link = AmiLink(ami.host, ami.port, ami.username, ami.secret or os.environ.get(SECRET_ENV, ""),
                             ping_interval_s=ami.ping_interval_s, ping_timeout_s=ami.ping_timeout_s,
                             action_timeout_s=ami.action_timeout_s)
        self._callbacks = CallbackStore(dsn)
        await self._callbacks.start()
        ha = centre.ha
        self.leadership = Leadership(dsn, group=ha.group, retry_s=ha.retry_s, check_interval_s=ha.check_interval_s,
                                     check_timeout_s=ha.check_timeout_s,
                                     server_idle_timeout_s=ha.server_idle_timeout_s)
        self.adapter = AsteriskAdapter(centre, Engine(centre), registry, self._writer, self._link,
                                       callback_store=self._callbacks)
        self.adapter.leading = False
        self.adapter.may_act = lambda: self.leadership is not None and self.leadership.is_leader
        await self.adapter.start()
        if centre.web.enabled:
            writer, link = self._writer, self._link
            self.web = WebService(centre, self.adapter, mode="live", run="live", dsn=dsn, flush=writer.flush,
                                  spooled=lambda: writer.backlog, link_up=lambda: link.connected,
                                  host=self._web_address[0], port=self._web_address[1], role=lambda: self.role)
            self.adapter.observers.append(self.web.observe)
            await self.web.start()
            if self._on_ready is not None:
                self._on_ready(self.web)
        try:
            await self._link.start()
        except AmiError as error:
            log.warning("service.ami_not_yet", reason=str(error), retrying=True)
        self._watcher = asyncio.create_task(watch(registry, on_reload=self._reloaded), name="router.flows")
        self._pruner = asyncio.create_task(prune_daily(dsn, centre.recording.directory, self.adapter.record,
                                                       lambda: self.role == ROLE_LEADER), name="router.recordings")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, sighup_handler(registry, self._reloaded))
        self._leading = asyncio.create_task(self._lead(), name="router.ha")
        outranked = asyncio.ensure_future(self.leadership.outranked.wait())
        serving = asyncio.ensure_future(self._serving.wait())
        try:
            await asyncio.wait({outranked, serving, self._leading}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            outranked.cancel()
            serving.cancel()
        if self._leading.done():
            self._leading.result()              # a configuration error of the database: raised here
        if not self._serving.is_set():
            log.info("service.standby", group=ha.group, ami=f"{ami.host}:{ami.port}")

    async def _lead(self) -> None:
        """Compete for the lock; lead while it is held; fence and compete again when it is lost."""
        assert self.leadership is not None
        while True:
            await self.leadership.acquire()
            try:
                await self._take_over()
            except (AmiError, OSError, asyncpg.PostgresError) as error:
                log.error("service.take_over_failed", reason=str(error))
                await self._step_down("take-over failed")
                await self.leadership.release()
                await asyncio.sleep(self.leadership.retry_s)
                continue
            reason = await self.leadership.hold()
            if self._stopping:
                return                          # released by `stop`: no fencing, no new term
            await self._step_down(reason)

    async def _take_over(self) -> None:
        assert self.adapter is not None and self._link is not None
        centre = self.centre
        started = asyncio.get_running_loop().time()
        await self._link.wait_connected(centre.ami.action_timeout_s if centre.ami else 5.0)
        await self.adapter.take_over(functools.partial(load_recovered, self._dsn, run="live"))
        await self.adapter.restore_callbacks()
        for agent in self.auto_login:
            await self.adapter.login(agent)
        self._server = FastAGIServer(self.adapter.routes(), centre.agi.host, centre.agi.port)
        await self._server.start()
        self.took_over.append(asyncio.get_running_loop().time())
        self._serving.set()
        log.info("service.started", role=ROLE_LEADER, agi_port=centre.agi.port,
                 took_over_s=round(self.took_over[-1] - started, 3), agents_logged_in=len(self.auto_login))

    async def _step_down(self, reason: str) -> None:
        """Fencing: act on nothing from now on, stop taking calls, forget the stale state."""
        assert self.adapter is not None
        self._serving.clear()
        self.adapter.stand_down()
        if self._server is not None:
            server, self._server = self._server, None
            await server.close(grace_s=0.0)
        self.adapter.reset()
        if self.web is not None:
            self.web.rebind()
        log.warning("service.fenced", reason=reason, role=ROLE_STANDBY)

    def _check_queue_flows(self, registry: FlowRegistry) -> None:
        """Warn about survey and call-back offer flows the queues name but the flow set lacks."""
        flows = registry.current.flows if registry.current is not None else {}
        for queue in self.centre.queues.values():
            named = {"survey": queue.survey, "callback.offer_flow": queue.callback.offer_flow if queue.callback
                     else None}
            for what, flow in named.items():
                if flow is not None and flow not in flows:
                    log.warning("service.flow_missing", queue=queue.id, setting=what, flow=flow)

    def _reloaded(self, result: ReloadResult) -> None:
        if self.adapter is not None:
            self.adapter.record(result.event)
        log.info("service.flows_reloaded", ok=result.ok, version=result.version,
                 errors=len([p for p in result.problems if p.severity == "error"]))

    async def stop(self) -> None:
        """Drain (a leader), give the lock back, then close everything in the reverse order of `start`."""
        if self.adapter is not None and self._serving.is_set():
            if self._server is not None:
                await self._server.stop_accepting()   # new calls: the next router, or the dialplan's wait
            drained = await self.adapter.drain(self.drain_timeout_s)
            log.info("service.drained", complete=drained)
        self._stopping = True
        if self._server is not None:
            await self._server.close(grace_s=1.0)
        if self.leadership is not None:
            await self.leadership.release()     # a leader's `_lead` returns; a standby's is cancelled
        if self._leading is not None:
            if not self._serving.is_set():
                self._leading.cancel()
            await asyncio.gather(self._leading, return_exceptions=True)
        if self.web is not None:
            await self.web.close()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in (self._watcher, self._pruner):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.adapter is not None:
            await self.adapter.close()
        if self._link is not None:
            await self._link.close()
        if self._callbacks is not None:
            await self._callbacks.close()
        if self._writer is not None:
            await self._writer.close()
        if self._stop_database is not None:
            await asyncio.to_thread(self._stop_database)
        log.info("service.stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("service.stopping")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await self.stop()
