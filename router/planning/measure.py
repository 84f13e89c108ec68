"""AHT and caller patience per queue, measured in a run's events (the I/O edge of `staff`).

Theory of operation
-------------------
AHT is the KPI `aht_s` of the run per entry queue (router/store/kpi.py: talk +
wrap-up of answered calls).  Patience cannot be read off directly: a caller who
was answered (or left by an overflow step, or took a call-back) only shows that
their patience was longer than their wait.  Under an exponential patience the
maximum-likelihood mean of such right-censored data is the sum of every
caller's time in the queue (abandoned waits and censored waits alike) over the
number of abandons.  Waits run from a call's first `queue.joined` to its first
answer, abandon, call-back acceptance or end, and belong to the entry queue.

A queue with fewer than `MIN_CALLS` answered calls keeps the config's
`aht_estimate_s`; one with fewer than `MIN_ABANDONS` abandons keeps the
patience of `simulation.patience` (its mean); each such fall-back is named in
`notes` so that the command can say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from router.config.model import Centre
from router.sim import traffic
from router.store.kpi import compute_kpis

MIN_CALLS = 100
MIN_ABANDONS = 20


@dataclass(frozen=True)
class Measured:
    aht_s: float
    patience_s: float
    answered: int
    abandoned: int
    aht_source: str                     # "history" or "config"
    patience_source: str


def patience_mle(total_wait_s: float, abandoned: int) -> float | None:
    """Mean of an exponential patience from censored waits: total time waited / abandons."""
    return total_wait_s / abandoned if abandoned > 0 else None


_WAITS_SQL = """
WITH facts AS (
    SELECT call_id,
           (array_agg(queue ORDER BY ts, id) FILTER (WHERE type = 'queue.joined'))[1] AS queue,
           min(ts) FILTER (WHERE type = 'queue.joined') AS joined,
           min(ts) FILTER (WHERE type IN ('call.connected', 'call.abandoned', 'callback.accepted',
                                           'call.ended')) AS left_at,
           bool_or(type = 'call.abandoned') AS abandoned
    FROM events
    WHERE run = $1 AND type IN ('queue.joined', 'call.connected', 'call.abandoned',
                                'callback.accepted', 'call.ended')
    GROUP BY call_id
)
SELECT queue,
       coalesce(sum(extract(epoch FROM left_at - joined)), 0)::float8 AS total_wait_s,
       count(*) FILTER (WHERE abandoned)::int AS abandoned
FROM facts
WHERE joined IS NOT NULL AND left_at >= joined
GROUP BY queue
"""


async def measure_queues(conn: asyncpg.Connection, centre: Centre, *, run: str = "live"
                         ) -> tuple[dict[str, Measured], list[str]]:
    """Measured AHT and patience of every configured queue, and notes on each fall-back."""
    kpis = await compute_kpis(conn, run=run, short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)
    waits = {row["queue"]: row for row in await conn.fetch(_WAITS_SQL, run)}
    measured: dict[str, Measured] = {}
    notes: list[str] = []
    for queue_id, queue in centre.queues.items():
        figures: dict[str, Any] = kpis.get("queues", {}).get(queue_id, {})
        answered = figures.get("answered") or 0
        aht, aht_source = figures.get("aht_s"), "history"
        if answered < MIN_CALLS or not aht:
            aht, aht_source = queue.aht_estimate_s, "config"
            notes.append(f"{queue_id}: {answered} answered call(s) in run {run!r}, fewer than {MIN_CALLS}: "
                         f"AHT from aht_estimate_s ({aht:g} s)")
        row = waits.get(queue_id)
        abandoned = row["abandoned"] if row else 0
        patience, patience_source = patience_mle(row["total_wait_s"], abandoned) if row else None, "history"
        if abandoned < MIN_ABANDONS or patience is None:
            patience, patience_source = configured_patience(centre, queue_id), "config"
            notes.append(f"{queue_id}: {abandoned} abandon(s) in run {run!r}, fewer than {MIN_ABANDONS}: "
                         f"patience from simulation.patience ({patience:g} s)")
        measured[queue_id] = Measured(float(aht), float(patience), answered, abandoned, aht_source,
                                      patience_source)
    return measured, notes


def configured_patience(centre: Centre, queue: str) -> float:
    """Mean patience of the config's simulation model for a queue."""
    if centre.simulation is None:
        raise ValueError(f"{centre.source}: too little history to measure the patience of {queue!r} "
                         f"and no `simulation.patience` to fall back on")
    return traffic.for_queue(centre.simulation.patience, queue).mean_s
