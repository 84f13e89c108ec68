"""`acd-router queue-log`: our events as Asterisk's queue_log, checked line by line against a
golden file, by a reader written from the Asterisk documentation, and against `kpi` on a
simulated day (the counts must reconcile)."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from router.config import load_config
from router.config.model import HoldPolicy
from router.sim.run import simulate_day
from router.store.call_detail import call_detail
from router.store.kpi import compute_kpis
from router.store.queue_log import NOT_ANSWERED, fetch_events, queue_log_lines
from tests.factories import centre, queue
from tests.test_kpi import Scenario

pytestmark = pytest.mark.asyncio(loop_scope="session")
REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "queue_log_small.txt"

# data fields of each event, from the Asterisk queue_log documentation (../shared/FACTS.md)
FIELDS = {"ENTERQUEUE": ("url", "callerid", "position"), "CONNECT": ("holdtime", "bridged", "ringtime"),
          "COMPLETEAGENT": ("holdtime", "calltime", "origposition"),
          "COMPLETECALLER": ("holdtime", "calltime", "origposition"),
          "ABANDON": ("position", "origposition", "waittime"),
          "EXITWITHTIMEOUT": ("position", "origposition", "waittime"),
          "EXITWITHKEY": ("key", "position", "origposition", "waittime"),
          "EXITEMPTY": ("position", "origposition", "waittime"), "RINGNOANSWER": ("ringtime_ms",),
          "TRANSFER": ("extension", "context", "holdtime", "calltime", "origposition"),
          "PAUSE": ("reason",), "UNPAUSE": ("reason",), "ADDMEMBER": ("",), "REMOVEMEMBER": ("",)}


def read_queue_log(text: str) -> list[dict[str, str]]:
    """A queue_log reader as QueueMetrics-style tools parse the file: epoch|callid|queue|agent|EVENT|data..."""
    records, last = [], 0
    for number, line in enumerate(text.splitlines(), 1):
        epoch, callid, queuename, agent, event, *data = line.split("|")
        assert event in FIELDS, f"line {number}: unknown event {event!r}"
        assert len(data) == len(FIELDS[event]), f"line {number}: {event} has {len(data)} data fields"
        assert epoch.isdigit() and int(epoch) >= last, f"line {number}: not in time order"
        last = int(epoch)
        member_event = event in ("PAUSE", "UNPAUSE", "ADDMEMBER", "REMOVEMEMBER")
        assert (callid == "NONE") == member_event and (agent == "NONE") == (
            event in ("ENTERQUEUE", "ABANDON", "EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY")), line
        records.append({"epoch": epoch, "callid": callid, "queue": queuename, "agent": agent, "event": event,
                        **{name: value for name, value in zip(FIELDS[event], data) if name}})
    return records


def small_scenario() -> Scenario:
    s = Scenario()
    s.event(-60, "agent.state", None, None, "a1", state="available", previous="logged_out", previous_s=0)
    s.joined("c1", "sales", 0, caller="+441")
    s.event(0, "agent.offered", "c1", "sales", "a2", ring_timeout_s=15)
    s.event(15, "agent.no_answer", "c1", "sales", "a2", reason="timeout")
    s.event(15, "agent.offered", "c1", "sales", "a1", ring_timeout_s=15)
    s.connected("c1", "sales", 18, wait=18, agent="a1", talk=120, wrap=10)
    s.abandoned("c2", "sales", 30, wait=42, caller="+442")
    s.joined("c3", "support", 40, caller="anonymous|x")                  # caller input stays data
    s.event(100, "call.ended", "c3", "support", outcome="left", to="voicemail", wait_s=60)
    s.joined("c4", "support", 50, caller="+444")
    s.event(50, "queue.overflowed", "c4", "support", step=1, action="voicemail", when="no_agents", wait_s=0)
    s.event(50, "call.ended", "c4", "support", outcome="overflow", action="voicemail")
    s.joined("c5", "sales", 60, caller="+445")
    s.event(360, "queue.overflowed", "c5", "sales", step=0, action="hangup", when="max_wait", wait_s=300)
    s.event(360, "call.ended", "c5", "sales", outcome="overflow", action="hangup")
    s.event(400, "agent.state", None, None, "a1", state="paused", previous="available", previous_s=252,
            reason="lunch")
    s.event(460, "agent.state", None, None, "a1", state="available", previous="paused", previous_s=60)
    s.event(500, "agent.state", None, None, "a1", state="logged_out", previous="available", previous_s=40)
    return s


def small_centre():
    c = centre({"a1": {"sales": 5}, "a2": {"sales": 5}}, [queue("sales", {"sales": 1}), queue("support")],
               skills=("sales",))
    support = replace(c.queues["support"], hold=HoldPolicy(leave_key="9"))
    return replace(c, queues={**c.queues, "support": support})


async def test_a_small_day_matches_the_golden_file_line_by_line(conn):
    s = small_scenario()
    await s.save(conn)
    lines = list(queue_log_lines(await fetch_events(conn, run=s.run), small_centre()))
    assert lines == GOLDEN.read_text().splitlines()
    records = read_queue_log("\n".join(lines))
    assert Counter(r["event"] for r in records) == {
        "ENTERQUEUE": 5, "RINGNOANSWER": 1, "CONNECT": 1, "COMPLETECALLER": 1, "ABANDON": 1, "EXITWITHKEY": 1,
        "EXITEMPTY": 1, "EXITWITHTIMEOUT": 1, "ADDMEMBER": 1, "PAUSE": 1, "UNPAUSE": 1, "REMOVEMEMBER": 1}


async def test_queue_log_reconciles_with_kpi_on_a_simulated_day(conn, database_url):
    sample = load_config(None)
    kpis = await simulate_day(sample, database_url, hours=2.0, seed=5, show_progress=False)
    run = kpis["simulation"]["run"]
    records = read_queue_log("\n".join(queue_log_lines(await fetch_events(conn, run=run), sample)))
    count = Counter(r["event"] for r in records)
    open_calls = sum(1 for row in (await call_detail(conn, run=run))["calls"]
                     if row["outcome"] in ("waiting", "callback_pending") and row["queues"])
    assert kpis["offered"] > 100
    assert count["ENTERQUEUE"] == kpis["offered"]
    assert count["CONNECT"] == kpis["answered"]
    assert count["ABANDON"] == kpis["abandoned"]
    assert sum(count[event] for event in NOT_ANSWERED) == kpis["offered"] - kpis["answered"] - open_calls
    for name, figures in kpis["queues"].items():                 # and queue by queue
        entered = [r for r in records if r["queue"] == name]
        assert sum(r["event"] == "ENTERQUEUE" for r in entered) == figures["offered"], name
        assert sum(r["event"] == "CONNECT" for r in entered) == figures["answered"], name
    end = datetime.fromisoformat(kpis["from"]) + timedelta(hours=1)                 # a window: the first hour
    first_hour = await compute_kpis(conn, run=run, end=end)
    in_window = Counter(r["event"] for r in read_queue_log("\n".join(queue_log_lines(
        await fetch_events(conn, run=run, end=end), sample))))
    assert (in_window["ENTERQUEUE"], in_window["CONNECT"]) == (first_hour["offered"], first_hour["answered"])


async def test_queue_log_from_the_command_line_writes_a_file(conn, database_url, tmp_path):
    s = small_scenario()
    await s.save(conn)
    out = tmp_path / "queue_log"
    done = subprocess.run([sys.executable, "-m", "router", "queue-log", "--run", s.run, "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert f"{out}: 16 queue_log line(s)" in done.stderr
    assert len(read_queue_log(out.read_text())) == 16
