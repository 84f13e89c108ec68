"""The forecaster's backtest on a stored run, against the Poisson noise floor of its daily totals.

    python benchmarks/forecast_accuracy.py --run LABEL [--config FILE] [--dsn DSN]
                                           [--ignore-closed-hours] [--json]

Runs `acd-router forecast`'s model (router/planning) on the run's `queue.joined` history and
prints per queue the chosen model, its backtest MASE (and seasonal naive's), its daily MAPE,
and the floor: the daily MAPE a perfect forecast would still have on Poisson counts, the mean
over the backtest days of sqrt(2 / (pi x the day's calls)) (the day's actual total stands in
for its unknown rate), and with the config's `simulation.overdispersion` k, whose counts have
variance lambda + k lambda^2 per interval.  `--ignore-closed-hours` keeps each schedule's
holidays but opens every hour: the forecast then keeps calls that arrived while a schedule
said closed (the share of such calls is printed either way).  DSN: --dsn, else
ACD_DATABASE_URL.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from datetime import time
from pathlib import Path
from typing import Any

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from router.cli import load_config
from router.config.model import WEEKDAYS, Centre, Schedule
from router.planning.forecast import Forecast, forecast_history
from router.planning.history import interval_minutes, read_history
from router.store.database import connect


def schedules_of(centre: Centre, *, ignore_closed_hours: bool) -> dict[str, Schedule | None]:
    schedules: dict[str, Schedule | None] = {}
    for queue in centre.queues.values():
        schedule = centre.schedules.get(queue.schedule) if queue.schedule else None
        if schedule is not None and ignore_closed_hours:
            schedule = Schedule(schedule.id, schedule.timezone, {day: ((time(0), time.max),) for day in WEEKDAYS},
                                schedule.holidays)
        schedules[queue.id] = schedule
    return schedules


def figures(forecast: Forecast, overdispersion: float) -> dict[str, dict[str, Any]]:
    per_day = 1440 // forecast.interval_minutes
    out = {}
    for name, queue in forecast.queues.items():
        days = queue.history[-forecast.folds * 7 * per_day:].reshape(-1, per_day)
        counted = [day for day in days if np.nansum(day) > 0]
        floor = float(np.mean([math.sqrt(2 / (math.pi * np.nansum(day))) for day in counted]))
        floor_k = float(np.mean([math.sqrt(2 / math.pi) * math.sqrt(np.nansum(day) + overdispersion
                                                                     * np.nansum(day ** 2)) / np.nansum(day)
                                 for day in counted]))
        chosen = queue.scores[queue.model]
        out[name] = {"model": queue.model, "mase": chosen["mase"],
                     "seasonal_naive_mase": queue.scores["seasonal_naive"]["mase"],
                     "daily_mape": chosen["daily_mape"], "poisson_floor": round(floor, 4),
                     "floor_with_overdispersion": round(floor_k, 4),
                     "ratio_to_floor": round(chosen["daily_mape"] / floor, 2) if chosen["daily_mape"] else None,
                     "history_closed_share": round(queue.closed_share, 4), "backtest_days": len(counted)}
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--config", help="centre config (default: ./router.yaml, else the sample centre)")
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL"))
    parser.add_argument("--ignore-closed-hours", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn or ACD_DATABASE_URL is required")
    centre = load_config(args.config)
    conn = await connect(args.dsn)
    try:
        history = await read_history(conn, run=args.run, timezone=centre.timezone,
                                     interval_minutes=interval_minutes(centre))
    finally:
        await conn.close()
    forecast = forecast_history(history, schedules_of(centre, ignore_closed_hours=args.ignore_closed_hours))
    overdispersion = getattr(centre.simulation, "overdispersion", 0.0) if centre.simulation else 0.0
    result = {"run": args.run, "ignore_closed_hours": args.ignore_closed_hours, "backtest_folds": forecast.folds,
              "overdispersion": overdispersion, "queues": figures(forecast, overdispersion)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"run {args.run!r}: {forecast.folds} backtest week(s)"
          f"{', closed hours ignored' if args.ignore_closed_hours else ''}")
    for name, row in result["queues"].items():
        print(f"{name:10} {row['model']:15} MASE {row['mase']} (seasonal naive {row['seasonal_naive_mase']})  "
              f"daily MAPE {row['daily_mape']:.3f}  floor {row['poisson_floor']:.3f} (x{row['ratio_to_floor']}), "
              f"with overdispersion {overdispersion}: {row['floor_with_overdispersion']:.3f}  "
              f"closed-hours calls {100 * row['history_closed_share']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
