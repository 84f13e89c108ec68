"""Kept-place figures: the sample centre with call-backs taken by 0 %, 30 % and 60 % of the callers offered one.

    python benchmarks/callbacks.py [--json] [--hours 8] [--seed 1] [--seeds 1] [--scale 1.5]
                                   [--acceptance 0,0.3,0.6] [--dsn DSN | --data-dir DIR]

Runs the packaged sample centre (router/samples/centre.yaml with ivr_flows/),
stressed by multiplying every arrival profile (the direct lines and the IVR's)
by `--scale` so that waits get long enough for call-back offers, once per
`simulation.callback_acceptance` value, all with the same seed.  Each run is
`simulate_day`: the real engine and IVR on a virtual clock, every event through
the COPY writer into PostgreSQL, the KPIs from the KPI SQL (router.store.kpi).
Reported per run, for the whole centre and per queue with a call-back policy:
offered, answered, abandoned, abandonment_rate, service_level, asa_s,
callbacks_offered/accepted/completed, callback_kept_wait_s, plus asa_held_s.

asa_held_s is not a KPI key: the mean wait of the answered calls whose caller
held on the line (call-backs left out), by a query of this script over the same
run.  asa_s counts an answered call-back with its whole kept-place wait (from
joining to the customer connected), so on its own it says little about what the
callers who hold hear.  `--seeds N` repeats the runs for seeds S..S+N-1 and adds
the means per acceptance: single runs of one day differ by about as much as the
effect being measured.

Database: `--dsn` or ACD_DATABASE_URL (a server where a scratch database per run
is created and dropped, as benchmarks/simulate.py does), else the router's
embedded PostgreSQL (in `--data-dir` or the router's data directory), also with
a scratch database per run.  A progress line per run goes to stderr; `--json` prints one JSON
object on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from router.config import load_config
from router.config.loader import SAMPLE_PATH
from router.config.model import Centre
from router.sim.run import simulate_day

FIGURES = ("offered", "answered", "abandoned", "abandonment_rate", "service_level", "asa_s", "asa_held_s",
           "callbacks_offered", "callbacks_accepted", "callbacks_completed", "callback_kept_wait_s")

# Mean wait of answered calls whose caller held (no call-back accepted), per entry queue and in
# total.  A call belongs to the queue of its first queue.joined, as in the KPI SQL.
_HELD_ASA_SQL = """
WITH entry AS (
    SELECT DISTINCT ON (call_id) call_id, queue
    FROM events WHERE run = $1 AND type = 'queue.joined'
    ORDER BY call_id, ts, id
),
kept AS (
    SELECT DISTINCT call_id FROM events WHERE run = $1 AND type = 'callback.accepted'
),
answered AS (
    SELECT DISTINCT ON (call_id) call_id, (data->>'wait_s')::float8 AS wait_s
    FROM events WHERE run = $1 AND type = 'call.connected'
    ORDER BY call_id, ts, id
)
SELECT e.queue, grouping(e.queue) = 1 AS is_total,
       round(avg(a.wait_s)::numeric, 2)::float8 AS asa_held_s
FROM answered a JOIN entry e USING (call_id) LEFT JOIN kept k USING (call_id)
WHERE k.call_id IS NULL
GROUP BY ROLLUP (e.queue)
"""


def stressed(centre: Centre, scale: float, acceptance: float) -> Centre:
    """The centre with every arrival profile times `scale` and the given call-back acceptance."""
    model = centre.simulation
    assert model is not None
    ivr = model.ivr and replace(model.ivr, arrivals=tuple(x * scale for x in model.ivr.arrivals))
    model = replace(model, arrivals={q: tuple(x * scale for x in v) for q, v in model.arrivals.items()},
                    ivr=ivr, callback_acceptance=acceptance)
    return replace(centre, simulation=model)


async def held_asa(dsn: str, run: str) -> dict[str | None, float | None]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_HELD_ASA_SQL, run)
    finally:
        await conn.close()
    return {None if row["is_total"] else row["queue"]: row["asa_held_s"] for row in rows}


async def one_run(centre: Centre, dsn: str, *, hours: float, seed: int, scale: float,
                  acceptance: float, queues: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    kpis = await simulate_day(stressed(centre, scale, acceptance), dsn, hours=hours, seed=seed,
                              show_progress=False)
    held = await held_asa(dsn, kpis["simulation"]["run"])
    wall = time.perf_counter() - started

    def pick(figures: dict[str, Any], key: str | None) -> dict[str, Any]:
        return {name: held.get(key) if name == "asa_held_s" else figures.get(name) for name in FIGURES}

    return {"acceptance": acceptance, "seed": seed, "calls": kpis["simulation"]["calls"],
            "wall_s": round(wall, 2), "total": pick(kpis, None),
            "queues": {q: pick(kpis["queues"].get(q, {}), q) for q in queues}}


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if v is not None]
    return round(sum(numbers) / len(numbers), 4) if numbers else None


def means(runs: list[dict[str, Any]], acceptances: list[float], queues: list[str]) -> list[dict[str, Any]]:
    out = []
    for acceptance in acceptances:
        mine = [r for r in runs if r["acceptance"] == acceptance]
        scope = {"total": {name: _mean([r["total"][name] for r in mine]) for name in FIGURES},
                 "queues": {q: {name: _mean([r["queues"][q][name] for r in mine]) for name in FIGURES}
                            for q in queues}}
        out.append({"acceptance": acceptance, "seeds": [r["seed"] for r in mine], **scope})
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    centre = load_config(SAMPLE_PATH)                  # the packaged sample centre and its flows
    queues = [q.id for q in centre.queues.values() if q.callback is not None]
    server, stop = _server(centre, args)
    runs: list[dict[str, Any]] = []
    seeds = list(range(args.seed, args.seed + args.seeds))
    total = len(seeds) * len(args.acceptance)
    try:
        for seed in seeds:
            for acceptance in args.acceptance:
                async with scratch_database(server) as target:
                    result = await one_run(centre, target, hours=args.hours, seed=seed, scale=args.scale,
                                           acceptance=acceptance, queues=queues)
                runs.append(result)
                t = result["total"]
                print(f"run {len(runs)}/{total}: acceptance {acceptance:g}, seed {seed}: {result['calls']:,} calls, "
                      f"{t['callbacks_accepted']} call-backs kept, {result['wall_s']} s", file=sys.stderr,
                      flush=True)
    finally:
        if stop:
            stop()
    report: dict[str, Any] = {
        "centre": centre.source, "scale": args.scale, "hours": args.hours, "seeds": seeds,
        "acceptance": args.acceptance, "callback_queues": queues, "runs": runs,
        "wall_s": round(sum(r["wall_s"] for r in runs), 2)}
    if len(seeds) > 1:
        report["means"] = means(runs, args.acceptance, queues)
    return report


@asynccontextmanager
async def scratch_database(server: str) -> AsyncIterator[str]:
    """A fresh database on `server` for one run, dropped afterwards.  One per run: in a database
    that already holds ~10 runs, the KPI SQL's statistics refresh (router.store.kpi.
    refresh_statistics: over 10 % of the rows new) misses the new run and the planner's nested
    loops take ~25 s instead of ~1.5 s."""
    database = f"acd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            yield _with_database(server, database)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


def _with_database(dsn: str, database: str) -> str:
    """`dsn` naming another database (keeps a query string such as the embedded server's ?host=)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _server(centre: Centre, args: argparse.Namespace):
    """(dsn of a database on the server to use, stop callable or None)."""
    if args.dsn:
        return args.dsn, None
    from router.store.database import resolve_dsn
    return resolve_dsn(centre.database, args.data_dir)  # ACD_DATABASE_URL, else the embedded server


def _fmt(value: Any, name: str) -> str:
    if value is None:
        return "-"
    if name in ("abandonment_rate", "service_level"):
        return f"{value * 100:.1f}%"
    if name.endswith("_s"):
        return f"{value:.1f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


HEADERS = {"offered": "offered", "answered": "answered", "abandoned": "abandoned",
           "abandonment_rate": "aband.%", "service_level": "SL", "asa_s": "asa_s", "asa_held_s": "asa_held_s",
           "callbacks_offered": "cb_offered", "callbacks_accepted": "cb_accepted",
           "callbacks_completed": "cb_completed", "callback_kept_wait_s": "kept_wait_s"}


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    head = ["run", *HEADERS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
    for label, figures in rows:
        lines.append("| " + " | ".join([label, *(_fmt(figures[name], name) for name in FIGURES)]) + " |")
    return "\n".join(lines)


def human(report: dict[str, Any]) -> str:
    seeds = report["seeds"]
    out = [f"Sample centre ({report['centre']}), every arrival profile x{report['scale']:g} "
           f"(direct lines and IVR), {report['hours']:g} h, seed{'s' if len(seeds) > 1 else ''} "
           f"{', '.join(map(str, seeds))}; callback_acceptance {', '.join(f'{a:g}' for a in report['acceptance'])}; "
           f"{report['wall_s']} s wall in all."]
    multi = len(seeds) > 1
    for scope in ["total", *report["callback_queues"]]:
        rows = []
        for r in report["runs"]:
            figures = r["total"] if scope == "total" else r["queues"][scope]
            label = f"acc {r['acceptance']:g}" + (f" seed {r['seed']}" if multi else "")
            rows.append((label, figures))
        for m in report.get("means", []):
            figures = m["total"] if scope == "total" else m["queues"][scope]
            rows.append((f"acc {m['acceptance']:g} mean", figures))
        title = "All queues" if scope == "total" else f"Queue {scope}"
        calls = f" ({report['runs'][0]['calls']:,} calls per run)" if scope == "total" and not multi else ""
        out += ["", f"{title}{calls}", table(rows)]
    return "\n".join(out)


def _acceptances(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected shares between 0 and 1, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="repeat for seeds SEED..SEED+N-1 and add means")
    parser.add_argument("--scale", type=float, default=1.5, help="multiply every arrival profile (default 1.5)")
    parser.add_argument("--acceptance", type=_acceptances, default=[0.0, 0.3, 0.6])
    parser.add_argument("--dsn", default=None, help="PostgreSQL server (default: ACD_DATABASE_URL, else embedded)")
    parser.add_argument("--data-dir", default=None, help="the embedded server's data directory")
    args = parser.parse_args()
    if args.hours <= 0 or args.scale <= 0 or args.seeds < 1:
        parser.error("--hours and --scale must be positive, --seeds at least 1")
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report))
    else:
        print(human(report))


if __name__ == "__main__":
    main()
