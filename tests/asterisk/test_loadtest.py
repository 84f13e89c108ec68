"""`acd-router loadtest` against the sandbox, and the pure parts of its bookkeeping.

The load test runs as a subprocess (`python -m router loadtest --json`) on
benchmarks/loadtest_centre.yaml with this session's database: ten callers at
two per second, one-second talks, twenty agents, so every call must connect.
It binds the FastAGI port, so it must not run beside another Asterisk test
session.  Timeouts only guard against hangs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from router.pbx.loadtest import CallTrace, LoadReport, app_queue_queued, percentiles, router_queued

from tests.asterisk.harness import REPO, Sandbox

pytestmark = pytest.mark.asterisk

CENTRE = REPO / "benchmarks" / "loadtest_centre.yaml"


def test_loadtest_connects_every_call(asterisk: Sandbox, database_url: str) -> None:
    env = {**os.environ, "ACD_DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "router", "loadtest", "--config", str(CENTRE), "--calls", "10", "--cps", "2",
         "--talk-s", "1", "--json"],
        capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["calls"], report["connected"], report["abandoned"], report["failed"]) == (10, 10, 0, 0)
    assert report["cps"] > 0
    for figures in (report["route_ms"], report["route_ms_ami"]):
        assert set(figures) == {"p50", "p95", "p99"}
        assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"]


def test_loadtest_refuses_a_config_without_ami(tmp_path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("skills: [{id: en, name: English}]\n"
                      "agents: [{id: a1, endpoint: Local/2001@agents, skills: {en: 5}}]\n"
                      "queues: [{id: q, skills: {en: 1}}]\n")
    done = subprocess.run([sys.executable, "-m", "router", "loadtest", "--config", str(config), "--calls", "1",
                           "--cps", "1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert done.returncode == 2
    assert "no `ami:` section" in done.stderr


def _event(name: str, uniqueid: str, ts: float, **headers: str) -> dict[str, str]:
    return {"Event": name, "Uniqueid": uniqueid, "Timestamp": f"{ts:.6f}", **headers}


def test_trace_of_a_routed_call() -> None:
    trace = CallTrace("acd-x-1")
    caller = trace.caller_uniqueid
    for event in (_event("VarSet", caller, 10.0, Variable="ROUTER_NEXT", Value="hold"),
                  _event("DialBegin", caller, 10.025),
                  _event("DialBegin", caller, 11.0),                      # a second offer: not the first
                  _event("DialEnd", caller, 11.5, DialStatus="ANSWER"),
                  _event("Hangup", "acd-x-1", 20.0)):
        trace.observe(event, router_queued)
    assert trace.outcome == "connected"
    assert trace.route_ms == pytest.approx(25.0)


def test_trace_outcomes() -> None:
    abandoned = CallTrace("acd-x-2")
    abandoned.observe(_event("QueueCallerJoin", abandoned.caller_uniqueid, 5.0), app_queue_queued)
    abandoned.observe(_event("DialEnd", abandoned.caller_uniqueid, 6.0, DialStatus="NOANSWER"), app_queue_queued)
    abandoned.observe(_event("Hangup", abandoned.caller_uniqueid, 9.0), app_queue_queued)
    never_queued = CallTrace("acd-x-3")
    never_queued.observe(_event("Hangup", never_queued.originate_id, 3.0), router_queued)
    stuck = CallTrace("acd-x-4")
    stuck.observe(_event("QueueCallerJoin", stuck.caller_uniqueid, 5.0), app_queue_queued)
    refused = CallTrace("acd-x-5", error="refused", ended=True)
    assert [t.outcome for t in (abandoned, never_queued, stuck, refused)] == ["abandoned", "failed", "failed",
                                                                              "failed"]
    report = LoadReport.from_traces([abandoned, never_queued, stuck, refused], cps=2.0)
    assert (report.calls, report.connected, report.abandoned, report.failed) == (4, 0, 1, 3)
    assert report.as_dict()["route_ms"] == {"p50": None, "p95": None, "p99": None}


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentiles([1.0]) == {"p50": 1.0, "p95": 1.0, "p99": 1.0}
    assert percentiles(list(map(float, range(101)))) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([4.0, 0.0]) == {"p50": 2.0, "p95": 3.8, "p99": 3.96}
