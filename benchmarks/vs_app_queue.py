"""The same load on the same Asterisk, routed by app_queue's Queue() and by acd-router.

    python benchmarks/vs_app_queue.py [--calls 50] [--cps 5] [--talk-s 5] [--json]

Against the sandbox Asterisk (started with scripts/asterisk-sandbox if it is
not running, and stopped again afterwards unless ACD_ASTERISK_KEEP=1):

1. app_queue: scripted callers (``[test-caller]``) are originated into
   ``[bench-app-queue]``, which answers and runs ``Queue(bench)``: the twenty
   ``Local/<n>@agents`` members of asterisk_conf/queues.conf, leastrecent,
   14 s ring, 1 s wrap-up, no skills.
2. acd-router: the same callers into ``Local/5000@from-trunk``, the router in
   process on benchmarks/loadtest_centre.yaml (the same twenty agents, one
   skill, longest-idle, an IVR menu the caller answers) — `run_loadtest`.

route_ms is queue join → agent dialled.  For app_queue it is read from AMI
(QueueCallerJoin → the caller's first DialBegin, Asterisk's timestamps); for
the router both its own figure (IVR done → Redirect into [router-connect]
done) and the same AMI reading (ROUTER_NEXT=hold set → first DialBegin) are
reported; the ratio uses the AMI reading on both sides, the same clock and
definition.  app_queue re-checks the head of its queue once a second, so when
agents are busy its route_ms includes that wait.  The cps ratio compares the
achieved Originate rates of the two runs.  PostgreSQL: ACD_DATABASE_URL, else
the embedded server in --data-dir (or the router's default data directory).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.sandbox import sandbox_running  # noqa: E402
from router.config import check_config  # noqa: E402
from router.logging import configure_logging  # noqa: E402
from router.pbx.loadtest import (LoadReport, app_queue_queued, default_hold_s, percentiles,  # noqa: E402
                                 place_calls, run_loadtest)

CENTRE = REPO / "benchmarks" / "loadtest_centre.yaml"
GOALS = {"route_ms_p99_ratio_max": 2, "cps_ratio_min": 1, "failed_max": 0.01}
PAUSE_S = 3.0               # between the runs: the last agents hang up and app_queue's wrap-up ends


def _ratio(acd: float | None, app: float | None) -> float | None:
    return None if acd is None or not app else round(acd / app, 3)


async def compare(calls: int, cps: float, talk_s: float, data_dir: str | None) -> dict[str, Any]:
    centre, problems = check_config(CENTRE)
    if centre is None or centre.ami is None:
        raise SystemExit(f"{CENTRE}: {problems.errors}")
    hold_s = default_hold_s(centre, calls, cps, talk_s)
    traces, achieved = await place_calls(centre.ami, channel="Local/s@bench-app-queue", calls=calls, cps=cps,
                                         variables=[f"__TALK_S={talk_s:g}"], queued=app_queue_queued,
                                         hold_s=hold_s)
    app = LoadReport.from_traces(traces, achieved)
    await asyncio.sleep(PAUSE_S)
    acd = await run_loadtest(centre, calls=calls, cps=cps, talk_s=talk_s, data_dir=data_dir)
    app_p99 = percentiles(app.route_ms)["p99"]
    acd_ami_p99, acd_p99 = percentiles(acd.route_ms_ami)["p99"], percentiles(acd.route_ms)["p99"]
    app_figures = app.as_dict()
    del app_figures["route_ms_ami"]                  # the same figures as route_ms for app_queue
    result = {
        "load": {"calls": calls, "cps": cps, "talk_s": talk_s, "agents": len(centre.agents)},
        "app_queue": app_figures,
        "acd_router": acd.as_dict(),
        "ratios": {"route_ms_p99": _ratio(acd_ami_p99, app_p99),
                   "route_ms_p99_router_clock": _ratio(acd_p99, app_p99),
                   "cps": _ratio(acd.cps, app.cps)},
        "goals": GOALS,
    }
    failed_share = acd.failed / acd.calls if acd.calls else 0.0
    result["goals_met"] = {
        "route_ms_p99": result["ratios"]["route_ms_p99"] is not None
        and result["ratios"]["route_ms_p99"] <= GOALS["route_ms_p99_ratio_max"],
        "cps": result["ratios"]["cps"] is not None and result["ratios"]["cps"] >= GOALS["cps_ratio_min"],
        "failed": failed_share < GOALS["failed_max"],
    }
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [f"{'':12}{'app_queue':>12}{'acd-router':>12}"]
    for key in ("calls", "connected", "abandoned", "failed", "cps"):
        lines.append(f"{key:12}{result['app_queue'][key]:>12}{result['acd_router'][key]:>12}")
    for q in ("p50", "p95", "p99"):
        lines.append(f"{'route ' + q:12}{result['app_queue']['route_ms'][q]!s:>12}"
                     f"{result['acd_router']['route_ms_ami'][q]!s:>12}  ms (AMI)")
    lines.append(f"ratios {result['ratios']}  goals met {result['goals_met']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--cps", type=float, default=5.0)
    parser.add_argument("--talk-s", type=float, default=5.0)
    parser.add_argument("--data-dir", help="embedded PostgreSQL data directory (without ACD_DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    configure_logging(level="warning")
    with sandbox_running():
        result = asyncio.run(compare(args.calls, args.cps, args.talk_s, args.data_dir))
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
