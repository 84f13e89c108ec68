"""Simulator throughput: a 1,000-agent, 100,000-call day, every event written to PostgreSQL.

    python benchmarks/simulate.py [--json] [--agents 1000] [--calls 100000] [--dsn DSN]

Builds a synthetic centre (4 queues over 6 skills, two languages, longest-idle and
most-skilled strategies, an overflow step per queue), runs `simulate_day` (the
engine on a virtual clock, events through the COPY writer, KPIs by the KPI SQL)
in a database of its own, and reports the wall time.  Goal: under 60 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from router.config.model import (Agent, Centre, Distribution, OverflowStep, Queue, Simulation, Skill)
from router.sim.run import simulate_day

SKILLS = ("en", "es", "billing", "tech", "sales", "retention")
QUEUES = {"billing": ({"billing": 3, "en": 5}, 0.35), "tech": ({"tech": 4, "en": 5}, 0.30),
          "sales": ({"sales": 3, "en": 5}, 0.25), "spanish": ({"es": 6}, 0.10)}


def synthetic_centre(agents: int, calls: int, hours: float = 8.0) -> Centre:
    rng = random.Random(42)
    roster = {}
    for i in range(agents):
        skills = {"en": rng.randint(5, 10)}
        if i % 5 == 0:                                   # one agent in five also speaks Spanish
            skills["es"] = rng.randint(6, 10)
        for skill in rng.sample(("billing", "tech", "sales", "retention"), rng.randint(2, 3)):
            skills[skill] = rng.randint(4, 10)
        roster[f"a{i:05d}"] = Agent(f"a{i:05d}", f"Agent {i}", f"Local/{i}@agents", skills, team=f"t{i % 20}")
    intervals = int(hours * 2)
    queues, arrivals = {}, {}
    for n, (qid, (needs, share)) in enumerate(QUEUES.items()):
        queues[qid] = Queue(qid, qid.title(), needs, strategy="most-skilled" if n % 2 else "longest-idle",
                            wrap_up_s=15.0, overflow=(OverflowStep(after_s=60.0, relax={k: 1 for k in needs}),))
        arrivals[qid] = tuple([calls * share / intervals] * intervals)
    model = Simulation(start=datetime(2026, 11, 23, 8), interval_minutes=30, arrivals=arrivals,
                       handle_time={"default": Distribution("lognormal", 200.0, 100.0)},
                       patience={"default": Distribution("exponential", 180.0)}, answer_delay_s=2.0,
                       no_answer_rate=0.01)
    return Centre("<benchmark>", {s: Skill(s, s) for s in SKILLS}, roster, queues, simulation=model)


async def run(dsn: str, agents: int, calls: int) -> dict:
    database = f"acd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        target = dsn.rsplit("/", 1)[0] + "/" + database
        centre = synthetic_centre(agents, calls)
        started = time.perf_counter()
        kpis = await simulate_day(centre, target, hours=8.0, seed=1, show_progress=False)
        wall = time.perf_counter() - started
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    simulated = kpis["simulation"]["calls"]
    return {"calls": simulated, "agents": agents, "wall_s": round(wall, 2),
            "calls_per_s": round(simulated / wall, 1), "service_level": kpis["service_level"],
            "goal_wall_s": 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    result = asyncio.run(run(args.dsn, args.agents, args.calls))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['calls']:,} calls, {result['agents']:,} agents: {result['wall_s']} s wall, "
              f"{result['calls_per_s']:,} calls/s (goal: under {result['goal_wall_s']} s); "
              f"service level {result['service_level']}")


if __name__ == "__main__":
    main()
