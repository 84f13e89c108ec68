"""Run a simulated day end to end: engine on a virtual clock -> events in PostgreSQL -> KPI SQL.

The simulator itself is synchronous and sans-IO; this driver streams each slice
of its events into the batched writer (back-pressure applies), then computes
the KPIs of the run with the same SQL as live traffic.  Every run writes under
its own `run` label ('sim:<uuid>'), so simulations never mix with live events.
"""
from __future__ import annotations

import uuid
from typing import Any

from router.config.model import Centre
from router.ivr.registry import load_flowset
from router.progress import Progress
from router.sim.simulator import Simulator
from router.store.database import connect, ensure_schema
from router.store.kpi import compute_kpis
from router.store.writer import EventWriter


async def simulate_day(centre: Centre, dsn: str, *, hours: float = 8.0, seed: int = 0,
                       show_progress: bool = True) -> dict[str, Any]:
    """Simulate, store every event, return the KPIs plus a `simulation` summary."""
    await ensure_schema(dsn)
    run = f"sim:{uuid.uuid4()}"
    model = centre.simulation
    flowset = load_flowset(centre) if model is not None and model.ivr is not None else None
    sim = Simulator(centre, hours=hours, seed=seed, flowset=flowset)
    progress = Progress(hours * 3600.0, "simulating") if show_progress else None
    async with EventWriter(dsn, run=run) as writer:
        while not sim.done:
            for event in sim.run(5_000):
                await writer.put(event)
            if progress:
                progress.update(sim.clock - sim.start, f"{len(sim.arrivals):,} calls")
        await writer.flush()
    if progress:
        progress.close()
    conn = await connect(dsn)
    try:
        kpis = await compute_kpis(conn, run=run, short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)
    finally:
        await conn.close()
    kpis["simulation"] = {"run": run, "seed": seed, "hours": hours, "calls": len(sim.arrivals),
                          "agents": len(centre.agents), "refused_inputs": sim.refused}
    return kpis
