"""The simulator against SimPy on one M/M/c centre: calls simulated per second, and service level.

    python benchmarks/vs_simpy.py [--calls 200000] [--rounds N] [--skip-stored] [--dsn DSN] [--sl-seeds N] [--json]

One queue, 14 agents, 200 calls an hour (Poisson), handle time exponential with a mean of
180 s, no abandonment, no ring delay, no wrap-up, first come first served: M/M/14 with
10 Erlangs, whose service level within 20 s Erlang C gives exactly.  Three runs of the
same calls (--calls, so the simulated hours are calls / 200), one after the other in this
process:

* ``simpy``: a SimPy model of that centre (a `simpy.Resource` of 14, FIFO), the reference;
* ``in_memory``: acd-router's Simulator, i.e. the real engine on a virtual clock, its
  events built and counted, then dropped, in the slices `simulate_day` writes
  (router.sim.run.SLICE_EVENTS: the same loop as ``stored`` without the database);
* ``stored``: the same through `simulate_day`, every event written to PostgreSQL (a
  database of its own, dropped after) and the KPIs computed by the KPI SQL.

Figures per run: wall seconds, calls per second, service level within 20 s (from the
answered calls' waits; for ``stored``, the KPI SQL's, and the wall seconds of its two parts:
``store_s``, simulating with every event written and committed, and ``kpi_s``, the KPI SQL),
and ``ratios``: in_memory / simpy in calls per second, stored / in_memory in wall time (and
each part of stored / in_memory), and each service level minus Erlang C's in percentage
points.  ``cpu_s`` per run: the CPU seconds the whole machine spent meanwhile (every core,
this process and PostgreSQL's backends and workers alike; Linux's /proc/stat, else null), and
``stored_cpu_floor_vs_in_memory_wall``: the stored run's CPU seconds over the machine's cores
and the in-memory wall time, the least stored / in_memory a run doing that work could reach
here with every core busy all the time.  DSN: --dsn, else ACD_DATABASE_URL, else the local server's
`postgres` database.

One run's service level is a sample: over 1,000 simulated hours its standard deviation is
about 0.35 points, for SimPy as for the engine.  `--sl-seeds N` also runs SimPy and the
engine in memory for seeds 1..N and reports, per model, the mean and standard error of
SL minus Erlang C's (``sl_over_seeds``): a bias of the engine would show there.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import simpy

from router.config.model import Agent, Centre, Distribution, Queue, Simulation, Skill
from router.sim.erlang import service_level_c
from router.sim.run import SLICE_EVENTS, simulate_day
from router.sim.simulator import Simulator

AGENTS = 14
CALLS_PER_HOUR = 200.0
AHT_S = 180.0
WITHIN_S = 20.0
NO_ABANDON = Distribution("fixed", 1e9)          # patience longer than any run


def machine_cpu_s() -> float | None:
    """CPU seconds spent so far by every process on every core (user, nice, system, irq, softirq)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:8]]
    except OSError:
        return None
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / os.sysconf("SC_CLK_TCK")


class Clocks:
    """Wall seconds and the machine's CPU seconds between `start()` and `stop()`."""

    def start(self) -> Clocks:
        self.cpu, self.wall = machine_cpu_s(), time.perf_counter()
        return self

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall
        cpu = machine_cpu_s()
        self.cpu = None if cpu is None or self.cpu is None else cpu - self.cpu


def centre(calls: int) -> tuple[Centre, float]:
    """The M/M/14 centre and the hours that offer about `calls` calls."""
    hours = calls / CALLS_PER_HOUR
    roster = {f"a{i:02d}": Agent(f"a{i:02d}", f"Agent {i}", f"Local/{i}@agents", {"s": 5}) for i in range(AGENTS)}
    queue = Queue("q", "Queue", {"s": 1}, strategy="longest-idle", wrap_up_s=0.0, sl_threshold_s=WITHIN_S,
                  aht_estimate_s=AHT_S)
    model = Simulation(start=datetime(2026, 11, 23, 0), interval_minutes=60, arrivals={"q": (CALLS_PER_HOUR,)},
                       handle_time={"default": Distribution("exponential", AHT_S)},
                       patience={"default": NO_ABANDON}, answer_delay_s=0.0, no_answer_rate=0.0)
    return Centre("<vs_simpy>", {"s": Skill("s", "s")}, roster, {"q": queue}, simulation=model), hours


def run_simpy(hours: float, seed: int) -> dict[str, Any]:
    """The reference: Poisson arrivals to a Resource of AGENTS, exponential service, FIFO."""
    env = simpy.Environment()
    agents = simpy.Resource(env, capacity=AGENTS)
    rng = random.Random(seed)
    waits: list[float] = []

    def caller(env: simpy.Environment) -> Any:
        arrived = env.now
        with agents.request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1.0 / AHT_S))

    def source(env: simpy.Environment) -> Any:
        horizon = hours * 3600.0
        while True:
            yield env.timeout(rng.expovariate(CALLS_PER_HOUR / 3600.0))
            if env.now >= horizon:
                return
            env.process(caller(env))

    clocks = Clocks().start()
    env.process(source(env))
    env.run()
    clocks.stop()
    return _figures(len(waits), clocks, sum(w <= WITHIN_S for w in waits) / max(1, len(waits)))


def run_in_memory(hours: float, seed: int) -> dict[str, Any]:
    """The Simulator (the real engine), events built and dropped; SL from call.connected's wait_s."""
    model, _ = centre(int(hours * CALLS_PER_HOUR))
    clocks = Clocks().start()
    sim = Simulator(model, hours=hours, seed=seed)
    answered = within = 0
    while not sim.done:
        for event in sim.run(SLICE_EVENTS):
            if event.type == "call.connected":
                answered += 1
                within += event.data["wait_s"] <= WITHIN_S
    clocks.stop()
    return _figures(answered, clocks, within / max(1, answered))


async def run_stored(hours: float, seed: int, dsn: str) -> dict[str, Any]:
    """`simulate_day`: every event through the COPY writer into a database of its own, KPIs by SQL."""
    database = f"acd_vs_simpy_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        model, _ = centre(int(hours * CALLS_PER_HOUR))
        timings: dict[str, float] = {}
        clocks = Clocks().start()
        kpis = await simulate_day(model, dsn.rsplit("/", 1)[0] + "/" + database, hours=hours, seed=seed,
                                  show_progress=False, timings=timings)
        clocks.stop()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return {**_figures(kpis["answered"], clocks, kpis["service_level"]),
            "store_s": round(timings["store_s"], 3), "kpi_s": round(timings["kpi_s"], 3)}


def _figures(calls: int, clocks: Clocks, service_level: float) -> dict[str, Any]:
    return {"calls": calls, "wall_s": round(clocks.wall, 3), "calls_per_s": round(calls / clocks.wall, 1),
            "service_level": round(service_level, 4),
            "cpu_s": None if clocks.cpu is None else round(clocks.cpu, 2)}


def compare(calls: int, seed: int, dsn: str | None, rounds: int = 1) -> dict[str, Any]:
    """`rounds` rounds of the three runs back to back; each figure is the median over the rounds,
    each ratio the median of the rounds' ratios (a round's runs are minutes apart at most)."""
    _, hours = centre(calls)
    erlang = service_level_c(AGENTS, CALLS_PER_HOUR * AHT_S / 3600.0, AHT_S, WITHIN_S)
    played = []
    for _ in range(rounds):
        runs = {"simpy": run_simpy(hours, seed), "in_memory": run_in_memory(hours, seed)}
        if dsn is not None:
            runs["stored"] = asyncio.run(run_stored(hours, seed, dsn))
        played.append(runs)
    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "centre": {"agents": AGENTS, "calls_per_hour": CALLS_PER_HOUR, "aht_s": AHT_S, "within_s": WITHIN_S,
                   "hours": round(hours, 1), "erlang_c_service_level": round(erlang, 4)},
        "rounds": rounds}
    for run in played[0]:
        result[run] = {key: _median([runs[run][key] for runs in played]) for key in played[0][run]}
    each = [_ratios(runs, erlang) for runs in played]
    result["ratios"] = {key: _median([ratios[key] for ratios in each]) for key in each[0]}
    if rounds > 1:
        result["ratio_ranges"] = {key: [min(r[key] for r in each), max(r[key] for r in each)] for key in each[0]
                                  if key.endswith("_wall") or key.endswith("_per_s")}
    return result


def _median(values: list[Any]) -> Any:
    if None in values:
        return None
    if all(isinstance(value, int) for value in values):      # counts stay whole
        return statistics.median_low(values)
    return round(statistics.median(values), 4)


def _ratios(runs: dict[str, dict[str, Any]], erlang: float) -> dict[str, float]:
    """One round's ratios: in memory against SimPy, stored against in memory, SL against Erlang C."""
    memory = runs["in_memory"]
    ratios = {"in_memory_vs_simpy_calls_per_s": round(memory["calls_per_s"] / runs["simpy"]["calls_per_s"], 3)}
    if "stored" in runs:
        stored = runs["stored"]
        ratios["stored_vs_in_memory_wall"] = round(stored["wall_s"] / memory["wall_s"], 3)
        # the two parts of the stored run: simulating while every event is written, then the KPI SQL
        ratios["store_part_vs_in_memory_wall"] = round(stored["store_s"] / memory["wall_s"], 3)
        ratios["kpi_part_vs_in_memory_wall"] = round(stored["kpi_s"] / memory["wall_s"], 3)
        if stored["cpu_s"] is not None:      # the floor: all the stored run's work on every core at once
            ratios["stored_cpu_floor_vs_in_memory_wall"] = round(
                stored["cpu_s"] / (os.cpu_count() or 1) / memory["wall_s"], 3)
    for run, figures in runs.items():
        ratios[f"{run}_sl_minus_erlang_c_pp"] = round((figures["service_level"] - erlang) * 100, 2)
    return ratios


def sl_over_seeds(calls: int, seeds: int) -> dict[str, Any]:
    """SL minus Erlang C's, in points, for SimPy and the engine in memory over seeds 1..`seeds`."""
    _, hours = centre(calls)
    erlang = service_level_c(AGENTS, CALLS_PER_HOUR * AHT_S / 3600.0, AHT_S, WITHIN_S)
    out: dict[str, Any] = {}
    for run, model in (("simpy", run_simpy), ("in_memory", run_in_memory)):
        points = [(model(hours, seed)["service_level"] - erlang) * 100 for seed in range(1, seeds + 1)]
        out[run] = {"mean_pp": round(statistics.mean(points), 2),
                    "standard_error_pp": round(statistics.stdev(points) / len(points) ** 0.5, 2),
                    "runs_pp": [round(p, 2) for p in points]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls offered (hours = calls / 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-stored", action="store_true", help="no PostgreSQL run")
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--sl-seeds", type=int, default=0, metavar="N",
                        help="also SL minus Erlang C's over seeds 1..N, SimPy and in memory (N >= 2)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="N rounds of the three runs; medians (a noisy machine's figures drift)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.calls < 100:
        parser.error("--calls must be at least 100")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.sl_seeds == 1 or args.sl_seeds < 0:
        parser.error("--sl-seeds needs at least 2 seeds (or 0: none)")
    result = compare(args.calls, args.seed, None if args.skip_stored else args.dsn, args.rounds)
    if args.sl_seeds:
        result["sl_over_seeds"] = sl_over_seeds(args.calls, args.sl_seeds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"M/M/{AGENTS}, {result['centre']['hours']} h; Erlang C SL {result['centre']['erlang_c_service_level']}; "
          f"medians of {result['rounds']} round(s) on {result['machine']['cores']} cores")
    for run in ("simpy", "in_memory", "stored"):
        if run in result:
            r = result[run]
            print(f"{run:10} {r['calls']:>8,} calls {r['wall_s']:>9} s {r['calls_per_s']:>10,} calls/s  "
                  f"SL {r['service_level']}  CPU {r['cpu_s']} s")
    print(json.dumps(result["ratios"]))
    if "ratio_ranges" in result:
        print(f"ranges over {result['rounds']} rounds:", json.dumps(result["ratio_ranges"]))
    if "sl_over_seeds" in result:
        print(json.dumps(result["sl_over_seeds"]))


if __name__ == "__main__":
    main()
