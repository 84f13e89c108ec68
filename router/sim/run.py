"""Run a simulated day end to end: engine on a virtual clock -> events in PostgreSQL -> KPI SQL.

The simulator itself is synchronous and sans-IO; this driver streams each slice
of its events into the batched writer (back-pressure applies), then computes
the KPIs of the run with the same SQL as live traffic.  Every run writes under
its own `run` label ('sim:<uuid>', or one the user names, such as a history of
`days` for the forecaster), so simulations never mix with live events: a named
label that already has events is refused unless `replace` deletes them first.
Each run is stored in a table of its own, a child of `events` without index upkeep
(router.store.run_tables), analysed once it is complete.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from router.config.model import Centre
from router.ivr.registry import load_flowset
from router.progress import Progress
from router.sim.simulator import Simulator
from router.store import run_tables
from router.store.database import connect, ensure_schema
from router.store.kpi import compute_kpis
from router.store.writer import EventWriter

RESERVED_RUNS = ("live", "demo")          # the router's and the demo's own events
# The simulator runs in slices of SLICE_EVENTS events, each handed to the writer at once
# (`put_many`, which then yields to the loop): PostgreSQL, another process and so another
# core, copies one batch (one COPY of BATCH_EVENTS rows) while the simulator computes the
# next slices, and short slices let the writer start the next COPY soon after one ends.
# The queue holds QUEUED_EVENTS before it pushes back.
SLICE_EVENTS = 1_000
BATCH_EVENTS = 5_000
QUEUED_EVENTS = 8 * BATCH_EVENTS


class RunExists(ValueError):
    """The named run already has events (and they are not to be replaced)."""


async def simulate_day(centre: Centre, dsn: str, *, hours: float = 8.0, days: int | None = None, seed: int = 0,
                       run: str | None = None, replace: bool = False,
                       show_progress: bool = True, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Simulate `hours` (or whole `days` of history), store every event under `run` (default a new
    'sim:<uuid>'), return the KPIs plus a `simulation` summary.  `timings`, when given, gets the
    wall seconds of the two parts: `store_s` (schema check, simulation, every event committed and
    the run's statistics) and `kpi_s` (the KPI SQL)."""
    started = time.perf_counter()
    await ensure_schema(dsn)
    model = centre.simulation
    flowset = load_flowset(centre) if model is not None and model.ivr is not None else None
    sim = Simulator(centre, hours=hours, days=days, seed=seed, flowset=flowset)
    if run is None:
        run = f"sim:{uuid.uuid4()}"
    else:
        await _claim_run(dsn, run, replace)
    conn = await connect(dsn)
    try:
        table = await run_tables.create_run_table(conn, run)
    finally:
        await conn.close()
    progress = Progress(days or hours * 3600.0, "simulating") if show_progress else None
    async with EventWriter(dsn, run=run, table=table, batch_size=BATCH_EVENTS, max_queue=QUEUED_EVENTS) as writer:
        while not sim.done:
            await writer.put_many(sim.run(SLICE_EVENTS))
            if progress and days:
                day = (sim.clock - sim.start) / 86_400.0
                progress.update(day, f"day {min(int(day) + 1, days)} of {days}, {len(sim.arrivals):,} calls")
            elif progress:
                progress.update(sim.clock - sim.start, f"{len(sim.arrivals):,} calls")
        await writer.flush()
    if progress:
        progress.close()
    conn = await connect(dsn)
    try:
        await run_tables.analyze_run(conn, run)
        stored = time.perf_counter()
        kpis = await compute_kpis(conn, run=run, short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)
    finally:
        await conn.close()
    if timings is not None:
        timings.update(store_s=stored - started, kpi_s=time.perf_counter() - stored)
    kpis["simulation"] = {"run": run, "seed": seed, "hours": sim.hours, "days": days, "calls": len(sim.arrivals),
                          "agents": len(centre.agents), "refused_inputs": sim.refused}
    return kpis


async def _claim_run(dsn: str, run: str, replace: bool) -> None:
    """A named run label is free, or its events are deleted with `replace`; else RunExists."""
    if run in RESERVED_RUNS:
        raise RunExists(f"run label {run!r} is reserved for the router's own events; name another")
    conn = await connect(dsn)
    try:
        if replace:
            await run_tables.drop_run(conn, run)
        elif await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events WHERE run = $1)", run):
            raise RunExists(f"run {run!r} already has events; --replace deletes them first, "
                            f"or name another run")
    finally:
        await conn.close()
