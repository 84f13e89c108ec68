"""What a supervisor dashboard costs the router: routing with 0 and with 200 Server-Sent-Events viewers.

    python benchmarks/web.py [--quick] [--viewers 0,200] [--duration 15] [--warmup 3] [--repeats 3]
                             [--speed 1000] [--scale 4] [--seed 1]

One measurement is one asyncio loop in this process holding what `acd-router serve`
holds in demo mode: the sample centre (router/samples/centre.yaml, every arrival
profile, direct and IVR, times `--scale`) played by `SimulatedPbx` (the real engine
and IVR, the simulator on the wall clock, `--speed` simulated seconds per wall
second, starting today at 09:00 in the centre's zone) and a `WebService` on
127.0.0.1 (board, hub, metrics, aiohttp; an ephemeral port, one viewer token).  The
store is left out on purpose: the PBX's writer is a stand-in whose `put` does
nothing and `dsn=None` turns off the service's KPI reads from PostgreSQL, so the
only thing that differs between the runs is the web layer's work on the loop.
The defaults (speed 1000, arrivals x4; the window is 09:50-14:00 simulated) give about
110 route decisions and 2,500 events per wall second, a quarter of a core: a busy
loop, far from saturated.  At that speed most of the board changes between two
pushes, so a push is almost a whole board (delta_bytes close to snapshot_bytes,
about 17 KB): a heavier push than this 48-agent centre makes in real time.

V viewers (`--viewers`, default 0 and 200) are `GET /api/v1/stream` with a bearer
token, all opened by ONE separate process (this script with `--viewer-worker`, an
aiohttp client) so that their reading and parsing does not load the router's loop.
The viewers connect during the `--warmup` seconds; then `--duration` seconds are
measured; then the service closes, which ends every stream, and the viewer process
reports.  Every run plays the same simulated stretch (same seed, same start, same
warm-up), so the routing work is the same whatever V is.  Each V is run `--repeats`
times, the order alternating (0, 200, 200, 0, ...); every figure is the median over
the repeats of the figure of one run.

Figures per V:
  route_decisions_per_s  `agent.offered` + `callback.dialing` events (an OfferCall or
                         a DialCallback the engine emitted) per wall second.  The sim
                         replays the same calls, so this stays put unless the loop
                         falls behind; it is the throughput being served, not a ceiling.
  route_latency_ms       per route decision, how late the loop made it: wall time at
                         which the event was produced minus the wall time it was due
                         ((pbx.now() - event.ts) / speed).  This is the routing latency
                         the web layer can add to; p50, p99, max.
  loop_lag_ms            how late a 10 ms `asyncio.sleep` timer of this script wakes
                         (every piece of work on the loop delays every routing
                         decision due meanwhile by up to this much); p50, p99, max.
  server_cpu             CPU seconds of the router's process per wall second (1.0 = a core).
  warmup_loop_lag_ms     loop lag during the warm-up, which is when the viewers connect.
With viewers, also:
  update_delay_ms        event -> viewer: the viewer's time.time() on reading a push
                         minus the push's `first_event` (the time.time() at which the
                         board observed the oldest event in it), same machine, same
                         clock.  Includes waiting for the next push tick (the hub pushes
                         every `web.push_interval_s`, 0.25 s) and the viewer process's
                         own loop; p50, p99, max.  At this event rate some event happens
                         just after every push, so the delay is about one push interval
                         plus transit_ms: the interval is by design, transit is the cost.
  transit_ms             the part of that delay after the push was built (receipt
                         minus the push's `sent`): the fan-out to V sockets plus the
                         viewer process.
  messages_per_viewer    pushes read per viewer in the measured window (median viewer),
  messages_received      all viewers together, in the window,
  messages_before_window all viewers together, before it (snapshots not counted; a
                         viewer joining runs a push tick for those already there),
  snapshot_bytes, delta_bytes   median size of a viewer's first message and of a push,
  viewers_dropped        viewers the hub dropped for a full buffer (whole run),
  streams_ended_early    streams that ended before the service closed,
  connect_s              seconds from starting the viewer process to V viewers joined,
  viewer_cpu             CPU seconds per wall second of the viewer process.

Ratios (V = the largest viewer count against 0, both from this run):
  lag_p99_ratio_<V>_vs_0, route_latency_p99_ratio_<V>_vs_0, route_rate_ratio_<V>_vs_0.
The issue's goal: p99 routing latency with 200 viewers within 1.2x of none; `goal_met`
is lag_p99_ratio <= 1.2 (the loop lag), `route_latency_goal_met` the same test on
route_latency p99.

How to read it: the ratios of p99s of a few milliseconds are noisy; look at the
absolute figures next to them.  On a small machine the viewer process competes with
the router for CPU (`cpu_count` is reported; with 2 cores the viewers' reading and
the router share them), so a 200-viewer run measures the router's own cost of the
viewers plus some of the viewers' cost on the machine: an upper bound of what a
dashboard costs a router whose viewers sit on other computers.  Run on a quiet
machine.  stdout is ONE JSON object (`--json` is accepted and is the default);
a progress line per run and warnings go to stderr; "runs" holds every run's own
figures.  The script fails loudly (exit 1) if the viewers of a run
received nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from router.config import load_config
from router.config.model import Centre
from router.events import Event
from router.logging import configure_logging
from router.sim.realtime import SimulatedPbx
from router.web.server import WebService

ROUTE_EVENTS = frozenset({"agent.offered", "callback.dialing"})
LAG_PERIOD_S = 0.010
GOAL_RATIO = 1.2
CONNECT_TIMEOUT_S = 60.0
# the fields of a push that the viewers read (the hub writes them first, in this order)
HEADER = re.compile(rb'^data: \{"type":"(\w+)","now":[^,]*,"sent":([-+0-9.eE]+),"first_event":(null|[-+0-9.eE]+)')


# --- the router's side ---------------------------------------------------------------

class NullWriter:
    """The store left out on purpose: the benchmark isolates the web layer's cost on the loop."""

    async def put(self, event: Event) -> None:
        pass


def stressed(centre: Centre, scale: float) -> Centre:
    """The centre with every arrival profile (direct lines and IVR) times `scale`."""
    model = centre.simulation
    assert model is not None, "the sample centre has a simulation section"
    ivr = model.ivr and replace(model.ivr, arrivals=tuple(x * scale for x in model.ivr.arrivals))
    return replace(centre, simulation=replace(
        model, arrivals={q: tuple(x * scale for x in v) for q, v in model.arrivals.items()}, ivr=ivr))


def quantiles(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max of `values`, times `scale` (seconds -> ms), rounded."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]
    return {"p50": round(rank(0.50) * scale, 3), "p99": round(rank(0.99) * scale, 3),
            "max": round(ordered[-1] * scale, 3)}


async def sample_lag(samples: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(LAG_PERIOD_S)
        samples.append(max(0.0, time.perf_counter() - before - LAG_PERIOD_S))


async def one_run(centre: Centre, viewers: int, args: argparse.Namespace, token: str) -> dict[str, Any]:
    zone = ZoneInfo(centre.timezone)
    start = datetime.combine(date.today(), day_time(9), tzinfo=zone)
    hours = (args.warmup + args.duration) * args.speed / 3600.0 + 1.0
    pbx = SimulatedPbx(centre, NullWriter(), hours=hours, seed=args.seed, speed=args.speed, start=start)
    with tempfile.TemporaryDirectory(prefix="acd-web-bench-") as token_dir:
        web = WebService(centre, pbx, mode="demo", run="bench", dsn=None, port=0,
                         environ={"ACD_WEB_TOKENS": f"{token}:viewer"}, token_dir=Path(token_dir))
        pbx.observers.append(web.observe)
        measuring = False
        route_lateness: list[float] = []
        routed = 0

        def count(event: Event) -> None:
            nonlocal routed
            if measuring and event.type in ROUTE_EVENTS:
                routed += 1
                route_lateness.append(max(0.0, (pbx.now() - event.ts) / args.speed))
        pbx.observers.append(count)

        await web.start()
        lag: list[float] = []
        stop = asyncio.Event()
        gc.collect()
        player = asyncio.create_task(pbx.run(stop), name="bench.pbx")
        sampler = asyncio.create_task(sample_lag(lag), name="bench.lag")
        started = time.perf_counter()
        worker = None
        connect_s = None
        try:
            if viewers:
                worker = await asyncio.create_subprocess_exec(
                    sys.executable, str(Path(__file__).resolve()), "--viewer-worker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                config = {"url": f"{web.url}api/v1/stream", "token": token, "count": viewers,
                          "deadline_s": args.warmup + args.duration + CONNECT_TIMEOUT_S + 30.0}
                worker.stdin.write(json.dumps(config).encode() + b"\n")    # the token goes by pipe, not argv
                await worker.stdin.drain()
                worker.stdin.close()
                while len(web.hub.viewers) < viewers:
                    if time.perf_counter() - started > CONNECT_TIMEOUT_S or worker.returncode is not None:
                        raise RuntimeError(f"only {len(web.hub.viewers)} of {viewers} viewers joined "
                                           f"in {CONNECT_TIMEOUT_S:g} s")
                    await asyncio.sleep(0.02)
                connect_s = time.perf_counter() - started
            await asyncio.sleep(max(0.0, args.warmup - (time.perf_counter() - started)))
            # the measured window
            warmup_lag = list(lag)                  # includes the viewers' connecting
            lag.clear()
            dropped_before = web.hub.dropped_viewers
            pushes_before = web.hub.pushes
            measuring = True
            cpu0, wall0, t0 = time.process_time(), time.perf_counter(), time.time()
            await asyncio.sleep(args.duration)
            measuring = False
            cpu1, wall1, t1 = time.process_time(), time.perf_counter(), time.time()
            lag_window = list(lag)
            joined_at_end = len(web.hub.viewers)
            pushes = web.hub.pushes - pushes_before
            dropped_in_window = web.hub.dropped_viewers - dropped_before
        finally:
            closing = time.time()
            stop.set()
            sampler.cancel()
            await asyncio.gather(player, sampler, return_exceptions=True)
            await web.close()                       # ends every stream: the viewers report and exit
            report = None
            if worker is not None:
                try:
                    out, _ = await asyncio.wait_for(worker.communicate(), timeout=30.0)
                    report = json.loads(out) if worker.returncode == 0 and out.strip() else None
                except TimeoutError:
                    worker.kill()
                    await worker.wait()
        wall = wall1 - wall0
        result: dict[str, Any] = {
            "viewers": viewers, "wall_s": round(wall, 3),
            "route_decisions": routed, "route_decisions_per_s": round(routed / wall, 2),
            "route_latency_ms": quantiles(route_lateness), "loop_lag_ms": quantiles(lag_window),
            "lag_samples": len(lag_window), "server_cpu": round((cpu1 - cpu0) / wall, 3),
            "warmup_loop_lag_ms": quantiles(warmup_lag),
            "pushes": pushes, "waiting_calls_at_end": sum(len(pbx.engine.waiting(q)) for q in centre.queues)}
        if viewers:
            if report is None:
                raise RuntimeError(f"the viewer process failed (exit {worker.returncode}); see stderr")
            result.update(viewer_figures(report, t0, t1, viewers, closing))
            result.update({"connect_s": round(connect_s, 3), "joined_at_end": joined_at_end,
                           "viewers_dropped": web.hub.dropped_viewers, "viewers_dropped_in_window": dropped_in_window})
            if result["messages_received"] == 0:
                raise RuntimeError(f"{viewers} viewers received no push in the measured window")
        return result


def viewer_figures(report: dict[str, Any], t0: float, t1: float, viewers: int, closing: float) -> dict[str, Any]:
    """The viewer process's records cut down to the measured window [t0, t1] (wall clock)."""
    delays, transits = [], []
    per_viewer = []
    before = 0
    for records in report["records"]:
        inside = [r for r in records if t0 <= r[0] <= t1]
        before += sum(1 for r in records if r[0] < t0)
        per_viewer.append(len(inside))
        for _, delay, transit, has_event in inside:
            transits.append(transit)
            if has_event:
                delays.append(delay)
    if report["errors"] or report["timed_out"]:
        raise RuntimeError(f"viewer errors: {report['errors'][:5]}, {report['timed_out']} timed out")
    if report["snapshots"] != viewers:
        raise RuntimeError(f"{report['snapshots']} of {viewers} viewers got their snapshot")
    return {"update_delay_ms": quantiles(delays, 1.0), "transit_ms": quantiles(transits, 1.0),
            "messages_received": sum(per_viewer), "messages_per_viewer": statistics.median(per_viewer),
            "messages_before_window": before, "snapshot_bytes": report["snapshot_bytes"],
            "delta_bytes": report["delta_bytes"],
            "viewers_without_messages": sum(1 for n in per_viewer if n == 0),
            "streams_ended_early": sum(1 for at in report["ended_at"] if at < closing),
            "viewer_cpu": report["cpu_per_s"]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    centre = stressed(load_config(), args.scale)
    token = os.urandom(18).hex()                   # a fresh viewer token for this run only
    order = []
    for repeat in range(args.repeats):
        order.extend(args.viewers if repeat % 2 == 0 else list(reversed(args.viewers)))
    runs: dict[int, list[dict[str, Any]]] = {v: [] for v in args.viewers}
    for viewers in order:
        result = await one_run(centre, viewers, args, token)
        runs[viewers].append(result)
        print(f"viewers={viewers}: {result['route_decisions_per_s']} decisions/s, lag p99 "
              f"{result['loop_lag_ms']['p99']} ms, route latency p99 {result['route_latency_ms']['p99']} ms"
              + (f", update delay p99 {result['update_delay_ms']['p99']} ms, "
                 f"{result['messages_received']} messages" if viewers else ""), file=sys.stderr)
    figures = {str(v): summary(results) for v, results in runs.items()}
    out: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "speed": args.speed, "arrival_scale": args.scale, "seed": args.seed,
        "duration_s": args.duration, "warmup_s": args.warmup, "repeats": args.repeats,
        "push_interval_s": centre.web.push_interval_s, "agents": len(centre.agents), "order": order,
        "viewers": figures}
    most = max(args.viewers)
    if 0 in runs and most > 0:
        base, loaded = figures["0"], figures[str(most)]
        out[f"lag_p99_ratio_{most}_vs_0"] = ratio(loaded["loop_lag_ms"]["p99"], base["loop_lag_ms"]["p99"])
        out[f"route_latency_p99_ratio_{most}_vs_0"] = ratio(loaded["route_latency_ms"]["p99"],
                                                             base["route_latency_ms"]["p99"])
        out[f"route_rate_ratio_{most}_vs_0"] = ratio(loaded["route_decisions_per_s"], base["route_decisions_per_s"])
        out["goal"] = f"p99 with {most} viewers within {GOAL_RATIO}x of none"
        lag_ratio = out[f"lag_p99_ratio_{most}_vs_0"]
        route_ratio = out[f"route_latency_p99_ratio_{most}_vs_0"]
        out["goal_met"] = lag_ratio is not None and lag_ratio <= GOAL_RATIO
        out["route_latency_goal_met"] = route_ratio is not None and route_ratio <= GOAL_RATIO
    out["runs"] = {str(v): results for v, results in runs.items()}
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over repeats of every figure of one run (quantile dicts key by key)."""
    def median(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None
    out: dict[str, Any] = {}
    for key, value in results[0].items():
        if key in ("viewers", "wall_s", "lag_samples", "joined_at_end"):
            continue
        if isinstance(value, dict):
            out[key] = {q: median([r[key][q] for r in results]) for q in value}
        else:
            out[key] = median([r[key] for r in results])
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# --- the viewers' side (a process of its own) ------------------------------------------

async def watch(session: aiohttp.ClientSession, url: str, token: str, records: list[list[float]],
                state: dict[str, Any]) -> None:
    """One viewer: read pushes until the stream ends; per push [received, delay_ms, transit_ms, has_event]."""
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status != 200:
            raise RuntimeError(f"stream: HTTP {response.status}")
        buffer = b""
        first = True
        async for chunk in response.content.iter_any():
            received = time.time()
            buffer += chunk
            while (end := buffer.find(b"\n\n")) >= 0:
                message, buffer = buffer[:end], buffer[end + 2:]
                if not message.startswith(b"data: "):
                    continue                             # the `retry:` line
                if first:                                # the whole board: check it is one
                    body = json.loads(message[6:])
                    if body.get("type") != "snapshot" or "queues" not in body.get("set", {}):
                        raise RuntimeError("the first message is not a snapshot of the board")
                    state["snapshots"] += 1
                    state["snapshot_bytes"].append(len(message))
                    first = False
                    continue
                header = HEADER.match(message)
                if header is None:
                    body = json.loads(message[6:])
                    kind, sent, first_event = body["type"], body["sent"], body["first_event"]
                else:
                    kind, sent = header[1].decode(), float(header[2])
                    first_event = None if header[3] == b"null" else float(header[3])
                if kind != "delta":
                    raise RuntimeError(f"unexpected message type {kind!r}")
                if len(state["delta_bytes"]) < 10_000:
                    state["delta_bytes"].append(len(message))
                delay = received - first_event if first_event is not None else 0.0
                records.append([round(received, 4), round(delay * 1000, 3), round((received - sent) * 1000, 3),
                                first_event is not None])
    state["ended_at"].append(time.time())


async def viewer_worker(config: dict[str, Any]) -> dict[str, Any]:
    count = config["count"]
    records: list[list[list[float]]] = [[] for _ in range(count)]
    state: dict[str, Any] = {"snapshots": 0, "ended_at": [], "snapshot_bytes": [], "delta_bytes": []}
    errors: list[str] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(watch(session, config["url"], config["token"], records[i], state))
                 for i in range(count)]
        done, pending = await asyncio.wait(tasks, timeout=config["deadline_s"])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                errors.append(repr(task.exception()))
    wall = time.perf_counter() - wall0
    return {"records": records, "snapshots": state["snapshots"], "errors": errors, "ended_at": state["ended_at"],
            "snapshot_bytes": statistics.median(state["snapshot_bytes"] or [0]),
            "delta_bytes": statistics.median(state["delta_bytes"] or [0]),
            "cpu_per_s": round((time.process_time() - cpu0) / wall, 3), "timed_out": len(pending)}


# --- command line ----------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (the default anyway)")
    parser.add_argument("--quick", action="store_true", help="5 s per run, 2 s warm-up, 1 repeat (about 40 s)")
    parser.add_argument("--viewers", default="0,200", help="viewer counts, comma-separated (default 0,200)")
    parser.add_argument("--duration", type=float, default=None, help="measured wall seconds per run (default 15)")
    parser.add_argument("--warmup", type=float, default=None, help="wall seconds before measuring (default 3)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per viewer count (default 3)")
    parser.add_argument("--speed", type=float, default=1000.0, help="simulated seconds per wall second")
    parser.add_argument("--scale", type=float, default=4.0, help="multiply every arrival profile (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--viewer-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.viewer_worker:
        config = json.loads(sys.stdin.readline())
        print(json.dumps(asyncio.run(viewer_worker(config))))
        return 0
    args.duration = args.duration if args.duration is not None else (5.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 3.0)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.viewers = sorted({int(v) for v in args.viewers.split(",") if v.strip()})
    if not args.viewers or min(args.viewers) < 0 or max(args.viewers) > 200:
        parser.error("--viewers: counts from 0 to 200")
    configure_logging(level="warning")
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
