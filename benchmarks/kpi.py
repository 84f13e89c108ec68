"""KPI SQL speed on the 100,000-call benchmark day, against one plain read of the same events.

    python benchmarks/kpi.py [--json] [--agents 1000] [--calls 100000] [--repeat 5] [--dsn DSN]
                             [--compare MODULE_FILE]

Simulates the day of benchmarks/simulate.py into a database of its own, then times
`compute_kpis` for the whole day (totals, queues, agents, teams) and with 30-minute
intervals in a zone with a 45-minute offset, each as the median of `--repeat` runs.  The
reference, measured in the same run, is one full read of the run's events
(`SELECT * FROM events WHERE run = $1`): the KPI time is reported as that many reads.
`--compare FILE` also times another kpi.py (say, an older one from git) on the same data.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from router.sim.run import simulate_day
from router.store import kpi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate import synthetic_centre  # noqa: E402


async def median_s(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def run(dsn: str, agents: int, calls: int, repeat: int, compare: str | None) -> dict:
    database = f"acd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        target = dsn.rsplit("/", 1)[0] + "/" + database
        day = await simulate_day(synthetic_centre(agents, calls), target, hours=8.0, seed=1, show_progress=False)
        run_label = day["simulation"]["run"]
        # custom plans for both modules (the current one asks for them itself; an older one may not,
        # and a generic plan from the sixth run of a statement would measure the plan cache, not the SQL)
        conn = await asyncpg.connect(target, server_settings={"plan_cache_mode": "force_custom_plan"})
        try:
            await conn.execute("ANALYZE events")
            events = await conn.fetchval("SELECT count(*) FROM events WHERE run = $1", run_label)
            read = await median_s(repeat, lambda: conn.fetch("SELECT * FROM events WHERE run = $1", run_label))
            modules = {"current": kpi}
            if compare:
                spec = importlib.util.spec_from_file_location("kpi_compared", compare)
                modules["compared"] = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(modules["compared"])
            result = {"calls": day["simulation"]["calls"], "events": events, "repeat": repeat,
                      "reference_read_s": round(read, 3)}
            for name, module in modules.items():
                whole = await median_s(repeat, lambda: module.compute_kpis(conn, run=run_label))
                extra = {"timezone": "Asia/Kathmandu"} if name == "current" else {}
                per_interval = await median_s(repeat, lambda: module.compute_kpis(
                    conn, run=run_label, interval_minutes=30, **extra))
                result[name] = {"day_s": round(whole, 3), "day_reads": round(whole / read, 2),
                                "intervals_30m_s": round(per_interval, 3),
                                "intervals_30m_reads": round(per_interval / read, 2)}
            if compare:
                result["current_vs_compared"] = round(result["current"]["day_s"] / result["compared"]["day_s"], 2)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", metavar="MODULE_FILE")
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    result = asyncio.run(run(args.dsn, args.agents, args.calls, args.repeat, args.compare))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
