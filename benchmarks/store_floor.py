"""The floor of the stored run's database side, without the simulator: COPY and KPI SQL alone.

    python benchmarks/store_floor.py [--calls 200000] [--repeat 3] [--batch 5000]
                                     [--into run-table|events] [--setup SQL] [--after SQL]
                                     [--run LABEL] [--dsn DSN]

The events of one `benchmarks/vs_simpy.py` run (its M/M/14 `centre()`, --calls calls, --seed)
are produced once by `router.sim.simulator.Simulator` and encoded once by the writer's
`encode_event` (the compiled encoder when it is built) under a run label like simulate_day's
('sim:<uuid>', or --run), then split into binary COPY payloads of --batch rows, as
`EventWriter` sends them (`simulate_day`'s BATCH_EVENTS).  None of that is timed
(``produce_s`` says how long it took).  Then, --repeat times, each in a fresh database
(created, migrated with router.store.migrate, --setup run after the migrations on the COPY's
connection when given, dropped after):

* ``copy_s``: the payloads sent one after the other over one connection, each COPY its own
  transaction (committed, as the writer's autocommit COPYs are), into the run's own table
  as simulate_day stores a run (--into run-table, the default: router.store.run_tables, no
  index) or into `events` itself with the indexes the migrations leave (--into events, as
  every run was stored before run tables): the server-side cost of storing the run, and its
  floor, since the client only hands over bytes it already has; ``copy_cpu_s``: the CPU
  seconds (user + system) of that server backend meanwhile, read from /proc when the server
  runs on this machine (else null): less noisy than wall time on a shared machine;
* ``after_s``: what simulate_day does once the run is stored (`run_tables.analyze_run`, the
  statistics), then --after when given (e.g. an index to try), on the COPY's connection;
* ``kpi_s``: `compute_kpis` over the run as `simulate_day` calls it (fresh connection, the
  centre's short-abandon threshold and time zone), on data nobody has read yet apart from
  ANALYZE's sample (so the first scan's hint-bit writes count, as in the stored run);
* ``kpi_again_s``: `compute_kpis` once more on the same data (hint bits done).

Before each COPY a CHECKPOINT and a sync() put the last repetition's writes out of the way.
Printed: one JSON object with the medians (``median``) and every repetition's figures
(``runs``), the events and payload bytes, and the total service level (the same in every
repetition).  --setup tries a schema or session variant, e.g.
``--into events --setup "DROP INDEX events_call_id"`` or ``--setup "SET synchronous_commit = off"``.
DSN: --dsn, else ACD_DATABASE_URL, else the local server's `postgres` database.  A small
--calls (e.g. 2000) runs in a few seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:               # benchmarks.vs_simpy (and router, when not installed)
    sys.path.insert(0, _ROOT)

import asyncpg

from benchmarks.vs_simpy import centre

from router.sim.simulator import Simulator
from router.store import run_tables
from router.store.database import connect
from router.store.kpi import compute_kpis
from router.store.migrate import migrate
from router.store.writer import COLUMNS, COMPILED, copy_payload, encode_event


def payloads(calls: int, seed: int, batch: int, run: str | None = None) -> tuple[str, list[memoryview], int, int]:
    """(run label, binary COPY payloads of `batch` rows, events, bytes) of one vs_simpy run;
    the label by default as simulate_day makes one ('sim:<uuid>')."""
    model, hours = centre(calls)
    run = run if run is not None else f"sim:{uuid.uuid4()}"
    sim = Simulator(model, hours=hours, seed=seed)
    records = []
    while not sim.done:
        records.extend(encode_event(event, run) for event in sim.run(50_000))
    chunks = [copy_payload(records[i:i + batch]) for i in range(0, len(records), batch)]
    return run, chunks, len(records), sum(len(chunk) for chunk in chunks)


def backend_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a server process has used so far, when the server runs on
    this machine and /proc shows it; else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def one_repetition(admin_dsn: str, run: str, chunks: list[memoryview], short_abandon_s: float,
                         timezone: str, setup: str = "", after: str = "", into: str = "run-table") -> dict[str, Any]:
    database = f"acd_store_floor_{uuid.uuid4().hex[:10]}"
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + database
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            if setup:
                await conn.execute(setup)
            table = await run_tables.create_run_table(conn, run) if into == "run-table" else "events"
            await conn.execute("CHECKPOINT")
            os.sync()                       # the last repetition's writes out of the way
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            cpu = backend_cpu_s(backend)
            started = time.perf_counter()
            for chunk in chunks:
                await conn.copy_to_table(table, source=chunk, columns=COLUMNS, format="binary")
            copy_s = time.perf_counter() - started
            copied_cpu = backend_cpu_s(backend)
            started = time.perf_counter()
            await run_tables.analyze_run(conn, run)
            if after:
                await conn.execute(after)
            after_s = time.perf_counter() - started
        finally:
            await conn.close()
        figures: dict[str, Any] = {"copy_s": copy_s, "after_s": after_s,
                                   "copy_cpu_s": copied_cpu - cpu if copied_cpu is not None and cpu is not None
                                   else None}
        for key in ("kpi_s", "kpi_again_s"):
            started = time.perf_counter()
            conn = await connect(dsn)
            try:
                kpis = await compute_kpis(conn, run=run, short_abandon_s=short_abandon_s, timezone=timezone)
            finally:
                await conn.close()
            figures[key] = time.perf_counter() - started
        figures["service_level"] = kpis["service_level"]
        figures["answered"] = kpis["answered"]
        return figures
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def measure(calls: int, seed: int, batch: int, repeat: int, dsn: str, setup: str = "",
                  run: str | None = None, after: str = "", into: str = "run-table") -> dict[str, Any]:
    started = time.perf_counter()
    run, chunks, events, size = payloads(calls, seed, batch, run)
    produce_s = time.perf_counter() - started
    model, _ = centre(calls)
    runs = [await one_repetition(dsn, run, chunks, model.short_abandon_s, model.timezone, setup, after, into)
            for _ in range(repeat)]
    keys = ("copy_s", "copy_cpu_s", "after_s", "kpi_s", "kpi_again_s")
    median = {key: round(statistics.median(r[key] for r in runs), 3) if runs[0][key] is not None else None
              for key in keys}
    median["copy_events_per_s"] = round(events / median["copy_s"])
    admin = await asyncpg.connect(dsn)
    try:
        server = await admin.fetchval("SHOW server_version")
        collation = await admin.fetchval("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    finally:
        await admin.close()
    return {"calls": calls, "seed": seed, "run_label_chars": len(run), "events": events, "payload_bytes": size,
            "batch": batch, "batches": len(chunks), "compiled_encoder": COMPILED, "produce_s": round(produce_s, 3),
            "server": server, "database_collation": collation, "into": into, "setup": setup, "after": after, "median": median,
            "runs": [{key: round(value, 3) if isinstance(value, float) and key.endswith("_s") else value
                      for key, value in r.items()} for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls offered (hours = calls / 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5_000, help="rows per COPY (simulate_day's batch)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh databases loaded and measured")
    parser.add_argument("--setup", default="", help="SQL run after the migrations (a schema variant to try)")
    parser.add_argument("--into", choices=("run-table", "events"), default="run-table",
                        help="the run's own table, as simulate_day stores it, or events itself")
    parser.add_argument("--after", default="", help="SQL run (and timed, after_s) between the COPY and the KPI")
    parser.add_argument("--run", help="the run label (default: 'sim:<uuid>', as simulate_day's)")
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    if args.calls < 100 or args.batch < 1 or args.repeat < 1:
        parser.error("--calls must be at least 100, --batch and --repeat positive")
    result = asyncio.run(measure(args.calls, args.seed, args.batch, args.repeat, args.dsn, args.setup, args.run, args.after, args.into))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
