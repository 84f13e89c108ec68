"""The call detail report: one row per call, outcomes, the abandoned list, CSV and the table."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from router.report import calls_csv, format_call_table
from router.store.call_detail import call_detail
from tests.test_kpi import Scenario, centre_scenario

pytestmark = pytest.mark.asyncio(loop_scope="session")
REPO = Path(__file__).resolve().parent.parent


async def test_one_row_per_call_with_its_outcome_path_and_survey(conn):
    s = centre_scenario()
    s.event(910, "call.connected", "c5", "sales", "a1", wait_s=910, team="blue")   # the call-back's leg, as
    s.event(1, "call.arrived", "c1", caller_id="111", dnis="100")          # the engine records it; IVR first
    s.event(2, "ivr.node", "c1", flow="main", node="welcome", type="play")
    s.event(3, "ivr.node", "c1", flow="main", node="main_menu", type="menu")
    s.event(200, "ivr.node", "c1", flow="survey", node="csat", type="survey")   # after the answer: not the path
    s.joined("w1", "sales", 1000, caller="anonymous")                      # still waiting at the last event
    await s.save(conn)
    report = await call_detail(conn, run=s.run, timezone="Europe/Paris")
    rows = {row["call_id"]: row for row in report["calls"]}
    assert {call: row["outcome"] for call, row in rows.items()} == {
        "c1": "answered", "c2": "answered", "c3": "abandoned", "c4": "abandoned", "c5": "answered",
        "c6": "answered", "c7": "answered", "i1": "ivr", "i2": "ivr", "i3": "ivr", "w1": "waiting"}
    c1 = rows["c1"]
    assert (c1["arrived"], c1["queues"], c1["caller"], c1["wait_s"]) == (
        "2024-03-04T10:00:00+01:00", "sales", "111", 10.0)                  # 09:00 UTC, in Paris
    assert (c1["agent"], c1["talk_s"], c1["wrap_s"], c1["skills_met"]) == ("a1", 100.0, 20.0, True)
    assert c1["ivr_path"] == "main/welcome>main/main_menu" and (c1["csat"], c1["nps"]) == (5.0, 10.0)
    assert rows["c7"]["queues"] == "support>sales" and rows["c7"]["skills_met"] is False
    assert rows["c4"]["wait_s"] == 40.0 and rows["i2"]["ivr_outcome"] == "hangup"
    assert rows["w1"]["caller"] == "" and rows["w1"]["wait_s"] == 1.0         # joined at 1000, last event 1001
    assert [row["call_id"] for row in report["calls"]][:2] == ["c1", "c2"]    # in arrival order

    abandoned = await call_detail(conn, run=s.run, outcome="abandoned")
    assert [row["call_id"] for row in abandoned["calls"]] == ["c3", "c4"]
    with pytest.raises(ValueError, match="unknown outcome 'lost'"):
        await call_detail(conn, run=s.run, outcome="lost")

    lines = list(csv.DictReader(io.StringIO(calls_csv(abandoned))))
    assert [(line["call_id"], line["outcome"], line["wait_s"], line["caller"]) for line in lines] == [
        ("c3", "abandoned", "3.0", "333"), ("c4", "abandoned", "40.0", "444")]
    table = format_call_table(abandoned).splitlines()
    assert table[0].split()[:4] == ["Arrived", "Queues", "Caller", "Wait"]
    assert table[2].split()[:5] == ["2024-03-04", "09:02:00", "sales", "333", "3.0"]
    assert table[-1] == "2 call(s), times in UTC"


async def test_kpi_calls_from_the_command_line(conn, database_url):
    s = Scenario()
    s.abandoned("x1", "sales", 0, wait=30, caller="+4411")
    s.answered("x2", "sales", 10, wait=5, agent="a1", talk=40, caller="+4412")
    await s.save(conn)
    done = subprocess.run([sys.executable, "-m", "router", "kpi", "--run", s.run, "--calls", "--outcome", "abandoned",
                           "--json"], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert [(row["call_id"], row["wait_s"]) for row in json.loads(done.stdout)["calls"]] == [("x1", 30.0)]
