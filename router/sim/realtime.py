"""The demo mode of `acd-router serve`: the simulated PBX driven in real time.

Without an `ami:` section there is no Asterisk to attach to, so the service
runs the centre's simulated days against the wall clock instead: the simulator
starts "now" (agents on the shifts under way, the arrival profile's interval of
this time of day), runs for `hours` (a week by default), each happening
waits for its moment (`speed` > 1 compresses time), events stream into the
store under run 'demo' (`acd-router kpi --run demo` reads them), and a one-line status per queue is logged every few
seconds.  The engine, the IVR and the store are the production ones; only the
PBX is simulated, which is what lets a newcomer watch the whole system live.
"""
from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime, timezone

import structlog

from router.config.model import Centre
from router.ivr.registry import load_flowset
from router.sim.simulator import Simulator
from router.store.writer import EventWriter

log = structlog.get_logger("router.demo")
DEMO_HOURS = 7 * 24.0


async def serve_simulated(centre: Centre, writer: EventWriter, stop: asyncio.Event, *,
                          hours: float = DEMO_HOURS, seed: int = 0, speed: float = 1.0,
                          start: datetime | None = None, status_every_s: float = 10.0) -> Simulator:
    """Run until the simulated day is over or `stop` is set; returns the simulator."""
    if centre.simulation is None:
        raise ValueError(f"{centre.source}: no `ami` section and no `simulation` section: "
                         "nothing to serve (add one of them)")
    flowset = load_flowset(centre) if centre.simulation.ivr is not None else None
    sim = Simulator(centre, hours=hours, seed=seed, flowset=flowset, start=start or datetime.now(timezone.utc))
    log.info("demo started", calls_planned=len(sim.arrivals), agents=len(centre.agents), speed=speed)
    wall_start, next_status = time.monotonic(), 0.0
    while not stop.is_set():
        at = sim.next_time()
        if at is None:
            break
        due_in = (at - sim.start) / speed - (time.monotonic() - wall_start)
        if due_in > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(due_in, status_every_s))
            except TimeoutError:
                pass
            if stop.is_set():
                break
        now = sim.start + (time.monotonic() - wall_start) * speed
        for event in sim.run_until(now):
            await writer.put(event)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + status_every_s
            snapshot = sim.engine.snapshot()
            log.info("status", agents=snapshot["agents"], calls=snapshot["calls"],
                     waiting={q: s["waiting"] for q, s in snapshot["queues"].items() if s["waiting"]},
                     refused_inputs=sim.refused)
    log.info("demo stopped", simulated_s=round(sim.clock - sim.start, 1), refused_inputs=sim.refused)
    return sim


async def run_demo(centre: Centre, *, data_dir: str | None = None, speed: float = 1.0, seed: int = 0,
                   hours: float = DEMO_HOURS, start: datetime | None = None) -> None:
    """`acd-router serve` without `ami:`: the demo until the day ends or SIGTERM/SIGINT."""
    from router.store.database import default_spool_dir, ensure_schema, resolve_dsn

    dsn, stop_database = await asyncio.to_thread(resolve_dsn, centre.database, data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await ensure_schema(dsn)
        async with EventWriter(dsn, run="demo", spool_dir=default_spool_dir(centre.database, data_dir)) as writer:
            await serve_simulated(centre, writer, stop, hours=hours, seed=seed, speed=speed, start=start)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if stop_database is not None:
            await asyncio.to_thread(stop_database)
