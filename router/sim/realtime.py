"""The demo mode of `acd-router serve`: the simulated PBX driven in real time.

Without an `ami:` section there is no Asterisk to attach to, so the service
runs the centre's simulated days against the wall clock instead: the simulator
starts "now" (agents on the shifts under way, the arrival profile's interval of
this time of day), runs for `hours` (a week by default), each happening
waits for its moment (`speed` > 1 compresses time), events stream into the
store under run 'demo' (`acd-router kpi --run demo` reads them) and to the
dashboard, and a one-line status per queue is logged every few seconds.  The
engine, the IVR, the store and the web service are the production ones; only
the PBX is simulated, which is what lets a newcomer watch the whole system live.

`SimulatedPbx` is that PBX as the web layer sees it (router.web.operations.Pbx):
a supervisor's input is applied at the simulated "now", after everything due
before it, and wakes the loop so that timers it set are kept.  An event a web
action records (`record`) goes to the writer at once, behind the simulator's
events still waiting in the outbox (so the order is kept), and a read that
flushes the writer sees it.

Recording: given a recordings directory (`run_demo` passes the config's, or
``recordings`` under the demo's data directory when the config names none), the
simulated PBX records calls by the queues' policy, as Asterisk would, with
SYNTHETIC audio (router.sim.recording), and prunes them past their retention
once a simulated day (router.recording.prune, on the simulated clock).
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from router.config.model import Centre
from router.events import Event
from router.ivr.registry import FlowRegistry, flows_directory, load_flowset
from router.recording.policy import plan
from router.recording.prune import DAY_S, run_daily
from router.sim.recording import DemoRecorder
from router.sim.simulator import Simulator
from router.store.writer import EventWriter, WriterFull
from router.web.operations import MonitorUnavailable, RecordingUnavailable

log = structlog.get_logger("router.demo")
DEMO_HOURS = 7 * 24.0


class SimulatedPbx:
    """The simulator on the wall clock, open to a supervisor's inputs."""

    def __init__(self, centre: Centre, writer: EventWriter, *, hours: float = DEMO_HOURS, seed: int = 0,
                 speed: float = 1.0, start: datetime | None = None, recordings: str | Path | None = None) -> None:
        if centre.simulation is None:
            raise ValueError(f"{centre.source}: no `ami` section and no `simulation` section: "
                             "nothing to serve (add one of them)")
        flowset = load_flowset(centre) if centre.simulation.ivr is not None else None
        self.sim = Simulator(centre, hours=hours, seed=seed, flowset=flowset,
                             start=start or datetime.now(timezone.utc))
        self.engine = self.sim.engine
        self.centre, self.writer, self.speed = centre, writer, speed
        self.observers: list[Callable[[Event], None]] = []
        self._outbox: deque[Event] = deque()
        self._storing = False                          # _store waits for room: it keeps the order
        self._wake = asyncio.Event()
        self._wall_start = time.monotonic()
        self._recording_paused: set[str] = set()     # calls whose recording is paused
        self.recorder = DemoRecorder(centre, recordings, self.record, self.now) if recordings is not None else None

    def now(self) -> float:
        """The simulated clock: epoch seconds, `speed` times as fast as the wall clock."""
        return self.sim.start + (time.monotonic() - self._wall_start) * self.speed

    def catch_up(self) -> float:
        """Let everything due by now happen; returns now."""
        now = max(self.now(), self.sim.clock)
        self._deliver(self.sim.run_until(now))
        return now

    def submit(self, message: Any) -> None:
        """Apply a supervisor's input now; raises InvalidInput (changing nothing) if it does not fit."""
        now = self.catch_up()
        self._deliver(self.sim.apply(message, now))
        self._wake.set()

    def record(self, event: Event) -> None:
        """Store an event from outside the simulation (a web action, a saved recording) now."""
        self._deliver([event])
        self._store_now()
        self._wake.set()

    async def monitor(self, agent: str, supervisor: str, flags: str) -> dict[str, Any]:
        raise MonitorUnavailable("monitoring rings the supervisor's phone on Asterisk; "
                                 "the demo's PBX is simulated (serve with an `ami:` section)")

    async def recording(self, call_id: str, paused: bool, reason: str, by: str) -> dict[str, Any]:
        """No audio here: a connected call of a queue that records gets the pause or resume event."""
        call = self.engine.calls.get(call_id)
        if self.recorder is not None:
            recorded = call is not None and self.recorder.recording(call_id) is not None
        else:
            recorded = call is not None and call.connected_at is not None and \
                plan(self.centre, call.queue, call_id, self.now()) is not None
        if call is None or not recorded:
            raise RecordingUnavailable(f"call {call_id!r} is not being recorded")
        if paused == (call_id in self._recording_paused):
            raise RecordingUnavailable(f"the recording of call {call_id!r} is {'already' if paused else 'not'} paused")
        self._recording_paused.symmetric_difference_update({call_id})
        if self.recorder is not None:
            self.recorder.pause(call_id, paused, self.now())     # a paused span is silence in the file
        self.record(Event(self.now(), "recording.paused" if paused else "recording.resumed", call_id=call_id,
                          queue=call.queue, agent=call.agent, data={"reason": reason, "by": by}))
        return {"call_id": call_id, "paused": paused}

    async def reload_flows(self) -> dict[str, Any]:
        registry = FlowRegistry(flows_directory(self.centre), known_queues=list(self.centre.queues),
                                schedules=self.centre.schedules, known_skills=list(self.centre.skills))
        result = await asyncio.to_thread(registry.reload, self.now())
        if result.ok and self.sim.flowset is not None:
            self.sim.flowset = registry.current
        self.record(result.event)
        return {"ok": result.ok, "version": result.version,
                "errors": [str(p) for p in result.problems if p.severity == "error"]}

    def _deliver(self, events: list[Event]) -> None:
        if self.recorder is not None:
            events = [brought for event in events for brought in (event, *self.recorder.follow(event))]
        for event in events:
            for observe in self.observers:
                observe(event)
        self._outbox.extend(events)

    def _store_now(self) -> None:
        """Hand the outbox to the writer without waiting, in order; what does not fit (a full queue,
        a writer not running, a stand-in with `put` only) stays for `_store`."""
        put_nowait = getattr(self.writer, "put_nowait", None)
        if self._storing or put_nowait is None:
            return
        outbox = self._outbox
        try:
            while outbox:
                put_nowait(outbox[0])
                outbox.popleft()
        except (WriterFull, RuntimeError):
            pass

    async def _store(self) -> None:
        self._storing = True
        try:
            outbox = self._outbox
            while outbox:
                await self.writer.put(outbox.popleft())
        finally:
            self._storing = False

    async def run(self, stop: asyncio.Event, *, status_every_s: float = 10.0) -> Simulator:
        """Play the simulated days until they end or `stop` is set; returns the simulator."""
        sim = self.sim
        log.info("demo started", calls_planned=len(sim.arrivals), agents=len(self.centre.agents), speed=self.speed)
        next_status = 0.0
        while not stop.is_set():
            await self._store()
            at = sim.next_time()
            if at is None:
                break
            due_in = (at - self.now()) / self.speed
            if due_in > 0:
                self._wake.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=min(due_in, status_every_s), return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
                if stop.is_set():
                    break
            self.catch_up()
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + status_every_s
                snapshot = self.engine.snapshot()
                log.info("status", agents=snapshot["agents"], calls=snapshot["calls"],
                         waiting={q: s["waiting"] for q, s in snapshot["queues"].items() if s["waiting"]},
                         refused_inputs=sim.refused)
        if self.recorder is not None:
            await self.recorder.drain()          # the files being written, and their saved events
        await self._store()
        log.info("demo stopped", simulated_s=round(sim.clock - sim.start, 1), refused_inputs=sim.refused)
        return sim


async def serve_simulated(centre: Centre, writer: EventWriter, stop: asyncio.Event, *,
                          hours: float = DEMO_HOURS, seed: int = 0, speed: float = 1.0,
                          start: datetime | None = None, status_every_s: float = 10.0) -> Simulator:
    """Run until the simulated days are over or `stop` is set (no web service); returns the simulator."""
    pbx = SimulatedPbx(centre, writer, hours=hours, seed=seed, speed=speed, start=start)
    return await pbx.run(stop, status_every_s=status_every_s)


async def run_demo(centre: Centre, *, data_dir: str | None = None, speed: float = 1.0, seed: int = 0,
                   hours: float = DEMO_HOURS, start: datetime | None = None, web_host: str | None = None,
                   web_port: int | None = None, on_ready: Callable[[Any], None] | None = None) -> None:
    """`acd-router serve` without `ami:`: the demo and its dashboard until the days end or SIGTERM/SIGINT."""
    from router.store.database import default_data_dir, default_spool_dir, ensure_schema, resolve_dsn
    from router.web.server import WebService

    dsn, stop_database = await asyncio.to_thread(resolve_dsn, centre.database, data_dir)
    centre = demo_recordings(centre, Path(data_dir) if data_dir else default_data_dir())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    web = None
    try:
        await ensure_schema(dsn)
        async with EventWriter(dsn, run="demo", spool_dir=default_spool_dir(centre.database, data_dir)) as writer:
            pbx = SimulatedPbx(centre, writer, hours=hours, seed=seed, speed=speed, start=start,
                               recordings=centre.recording.directory)
            if centre.web.enabled:
                web = WebService(centre, pbx, mode="demo", run="demo", dsn=dsn, flush=writer.flush,
                                 spooled=lambda: writer.backlog, speed=speed, host=web_host, port=web_port,
                                 token_dir=Path(data_dir) if data_dir else default_data_dir())
                pbx.observers.append(web.observe)
                await web.start()
                if on_ready is not None:
                    on_ready(web)
            # retention on the simulated clock: a simulated minute after the start, then daily
            prune = asyncio.create_task(run_daily(dsn, centre.recording.directory, pbx.record, lambda: True,
                                                  first_after_s=60.0 / speed, every_s=DAY_S / speed, clock=pbx.now,
                                                  run="demo"))
            try:
                await pbx.run(stop)
            finally:
                prune.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prune
    finally:
        if web is not None:
            await web.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if stop_database is not None:
            await asyncio.to_thread(stop_database)


def demo_recordings(centre: Centre, data_dir: Path) -> Centre:
    """The centre whose recordings go where its config says, or under the demo's data directory
    (``recordings``) when it says nothing: the loader's default, ``recordings`` beside the config
    file, would be inside the installed package for the sample centre."""
    default = (Path(centre.source).parent / "recordings").resolve()
    if Path(centre.recording.directory) != default:
        return centre
    return replace(centre, recording=replace(centre.recording, directory=str(data_dir / "recordings")))
