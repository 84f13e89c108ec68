"""The forecaster's store edge: a run's offered calls per queue and local interval, from PostgreSQL.

Theory of operation
-------------------
One statement counts offered calls as the KPIs do (router/store/kpi.py): a call counts once,
for the queue and the time of its FIRST `queue.joined` in the run.  PostgreSQL buckets each
first join on the centre's local wall clock (`ts AT TIME ZONE zone`, binned to the interval
from a local midnight), so the 01:00 slot of a fall-back day holds both real 01:00 intervals;
router/planning/forecast.py turns that into a rate per real interval.  Only non-empty buckets
come back: the grid of the forecaster fills the rest with zeros.  The same statement returns the
run's last event of any type, which says whether the last history day is whole.

`forecast_from_store` is the whole `acd-router forecast`: read, then forecast (pure), with a
progress bar on a terminal.  The interval is the config's `simulation.interval_minutes` when
there is a simulation section, else `web.interval_minutes`.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg

from router.config.model import Centre
from router.planning.forecast import Forecast, History, forecast_history
from router.progress import Progress
from router.store.database import connect, ensure_schema

# $1 run, $2 interval, $3 the centre's IANA zone.
HISTORY_SQL = """
WITH first_joins AS (
    SELECT DISTINCT ON (call_id) call_id, queue, ts
    FROM events
    WHERE run = $1 AND type = 'queue.joined' AND call_id IS NOT NULL AND queue IS NOT NULL
    ORDER BY call_id, ts, id
),
counts AS (
    SELECT queue, date_bin($2::interval, ts AT TIME ZONE $3, TIMESTAMP '2000-01-01') AS local_start,
           count(*)::int AS offered
    FROM first_joins
    GROUP BY 1, 2
)
SELECT c.queue, c.local_start, c.offered, last.ts AS last_event
FROM (SELECT max(ts) AS ts FROM events WHERE run = $1) last
LEFT JOIN counts c ON true
ORDER BY c.queue, c.local_start
"""


def interval_minutes(centre: Centre) -> int:
    """The planning interval: the simulation's arrival intervals, else the dashboard's."""
    return centre.simulation.interval_minutes if centre.simulation is not None else centre.web.interval_minutes


async def read_history(conn: asyncpg.Connection, *, run: str, timezone: str, interval_minutes: int) -> History:
    rows = await conn.fetch(HISTORY_SQL, run, timedelta(minutes=interval_minutes), timezone)
    return History(run=run, timezone=timezone, interval_minutes=interval_minutes,
                   rows=tuple((row["queue"], row["local_start"], row["offered"])
                              for row in rows if row["queue"] is not None),
                   last_event=rows[0]["last_event"] if rows else None)


async def forecast_centre(centre: Centre, dsn: str, *, run: str = "live", horizon_days: int = 7,
                          show_progress: bool = True) -> Forecast:
    """The centre's forecast as an object (history series included, for plots)."""
    progress = Progress(3, "forecast") if show_progress else None
    steps = ["history", "backtest", "forecast"]

    def on_step(name: str) -> None:
        if progress:
            progress.update(steps.index(name), name)

    try:
        on_step("history")
        await ensure_schema(dsn)
        conn = await connect(dsn)
        try:
            history = await read_history(conn, run=run, timezone=centre.timezone,
                                         interval_minutes=interval_minutes(centre))
        finally:
            await conn.close()
        schedules = {queue.id: centre.schedules.get(queue.schedule) if queue.schedule else None
                     for queue in centre.queues.values()}
        # seconds of model fitting: off the event loop, which may have other work
        return await asyncio.to_thread(forecast_history, history, schedules, horizon_days=horizon_days,
                                       on_step=on_step)
    finally:
        if progress:
            progress.close()


async def forecast_from_store(centre: Centre, dsn: str, *, run: str = "live", horizon_days: int = 7,
                              show_progress: bool = True) -> dict[str, Any]:
    """The `acd-router forecast --json` object for `run`'s history."""
    forecast = await forecast_centre(centre, dsn, run=run, horizon_days=horizon_days, show_progress=show_progress)
    return forecast.as_dict()
