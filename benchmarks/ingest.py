"""Event ingest: EventWriter (batched binary COPY) against per-row INSERT, in one run.

    python benchmarks/ingest.py [--json] [--events N] [--insert-events M] [--dsn DSN]

Creates a database `acd_bench_<hex>` on the server named by --dsn (default:
ACD_DATABASE_URL or the local server), migrates it, and drops it at the end.  Both
paths write the same kind of events as the simulator (uuid ids, small jsonb `data`)
into the real `events` table with its indexes, timed from the first event handed over
to the last one committed, including serialisation.  Each path runs three times on an
emptied table; the figures are medians.  `--json` prints one JSON object on stdout:
copy_events_per_s, insert_events_per_s, speedup, events, repetitions.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import structlog

from router.events import Event
from router.store import EventWriter, ensure_schema, safe_dsn

REPETITIONS = 3
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
INSERT_SQL = ("INSERT INTO events (id, ts, run, call_id, type, queue, agent, data) "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")


def simulated_events(count: int, seed: int = 7) -> list[Event]:
    """A call centre's event stream: each call arrives, queues, rings, connects, ends."""
    rng = random.Random(seed)
    queues = ["sales", "support", "billing", "vip"]
    events: list[Event] = []
    ts = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    while len(events) < count:
        call_id = str(uuid.uuid4())
        queue = rng.choice(queues)
        agent = f"a{rng.randrange(200):03d}"
        caller = f"+44{rng.randrange(10**9, 10**10)}"
        wait = round(rng.expovariate(1 / 20), 3)
        talk = round(rng.expovariate(1 / 180), 3)
        events += [
            Event(ts, "call.arrived", call_id, data={"caller_id": caller, "dnis": "+448000001"}),
            Event(ts + 4, "queue.joined", call_id, queue, data={
                "caller_id": caller, "priority": rng.randrange(3), "position": rng.randrange(30),
                "ewt_s": round(rng.uniform(0, 120), 1), "sl_threshold_s": 20}),
            Event(ts + 4 + wait, "agent.offered", call_id, queue, agent, {"ring_timeout_s": 15}),
            Event(ts + 6 + wait, "call.connected", call_id, queue, agent,
                  {"wait_s": wait, "team": "t1"}),
            Event(ts + 6 + wait, "agent.state", call_id, None, agent,
                  {"state": "on_call", "previous": "reserved", "previous_s": 2.0,
                   "reason": None, "team": "t1"}),
            Event(ts + 6 + wait + talk, "call.ended", call_id, queue, agent,
                  {"outcome": "answered", "talk_s": talk}),
        ]
        ts += rng.expovariate(1 / 3)
    return events[:count]


async def copy_rate(dsn: str, events: list[Event], spool_dir: Path) -> float:
    """Events per second through EventWriter, put() of the first to flush() of the last."""
    async with EventWriter(dsn, run="bench", spool_dir=spool_dir) as writer:
        started = time.perf_counter()
        for event in events:
            await writer.put(event)
        await writer.flush()
        elapsed = time.perf_counter() - started
        if writer.written != len(events):
            raise RuntimeError(f"writer wrote {writer.written} of {len(events)} events "
                               f"({writer.spooled} spooled): the database was not reachable")
    return len(events) / elapsed


async def insert_rate(dsn: str, events: list[Event]) -> float:
    """Events per second with one autocommit INSERT per event (the naive reference)."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for e in events:
            await conn.execute(INSERT_SQL, e.id, datetime.fromtimestamp(e.ts, timezone.utc), "bench",
                               e.call_id, e.type, e.queue, e.agent, json.dumps(e.data))
        return len(events) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def empty_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE events")
        try:
            await conn.execute("CHECKPOINT")  # start each run from the same place
        except asyncpg.InsufficientPrivilegeError:
            pass  # not a superuser: runs start wherever the server's own checkpoints left them
    finally:
        await conn.close()


async def run(admin_dsn: str, events_count: int, insert_count: int,
              progress: bool) -> dict[str, float | int]:
    name = f"acd_bench_{uuid.uuid4().hex[:12]}"
    base = admin_dsn.rpartition("/")[0]
    dsn = f"{base}/{name}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await ensure_schema(dsn)
            events = simulated_events(events_count)
            inserted = simulated_events(insert_count, seed=11)
            copy_rates: list[float] = []
            insert_rates: list[float] = []
            with tempfile.TemporaryDirectory(prefix="acd-bench-spool-") as spool:
                for rep in range(REPETITIONS):
                    await empty_table(dsn)
                    copy_rates.append(await copy_rate(dsn, events, Path(spool)))
                    await empty_table(dsn)
                    insert_rates.append(await insert_rate(dsn, inserted))
                    if progress:
                        print(f"run {rep + 1}/{REPETITIONS}: COPY {copy_rates[-1]:,.0f} events/s, "
                              f"INSERT {insert_rates[-1]:,.0f} events/s", file=sys.stderr)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    copy_median = statistics.median(copy_rates)
    insert_median = statistics.median(insert_rates)
    return {"copy_events_per_s": round(copy_median, 1),
            "insert_events_per_s": round(insert_median, 1),
            "speedup": round(copy_median / insert_median, 2),
            "events": events_count, "repetitions": REPETITIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--events", type=int, default=200_000, help="events through EventWriter")
    parser.add_argument("--insert-events", type=int, default=5_000,
                        help="events through per-row INSERT")
    parser.add_argument("--dsn", default=os.environ.get("ACD_DATABASE_URL") or DEFAULT_DSN,
                        help="server to benchmark on (a scratch database is created there)")
    args = parser.parse_args(argv)
    # Logs go to stderr: with --json, stdout carries the JSON object only.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if not args.json:
        print(f"server: {safe_dsn(args.dsn)}; {args.events:,} events via EventWriter, "
              f"{args.insert_events:,} via INSERT, {REPETITIONS} runs", file=sys.stderr)
    result = asyncio.run(run(args.dsn, args.events, args.insert_events, progress=not args.json))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"EventWriter (COPY):  {result['copy_events_per_s']:>12,.0f} events/s (median)")
        print(f"per-row INSERT:      {result['insert_events_per_s']:>12,.0f} events/s (median)")
        print(f"speedup:             {result['speedup']:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
