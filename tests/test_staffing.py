"""`acd-router staff`: the Erlang A plan, measured inputs, and the plan verified on the simulator."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from router.config import check_config
from router.events import Event
from router.planning import verify as V
from router.planning.measure import measure_queues, patience_mle
from router.planning.staffing import QueueInputs, least_agents, plan_staffing, scheduled
from router.sim.erlang import erlang_a
from router.store.writer import EventWriter

REPO = Path(__file__).resolve().parent.parent
INPUTS = QueueInputs(aht_s=300.0, patience_s=150.0, sl_target=0.8, sl_threshold_s=20.0)


def forecast(queue: str, offered: list[float], start: str = "2026-11-23T08:00:00+00:00",
             minutes: int = 30) -> dict:
    first = datetime.fromisoformat(start)
    return {"timezone": "Europe/London", "interval_minutes": minutes, "queues": {queue: {"model": "test", "forecast": [
        {"start": (first + timedelta(minutes=minutes * i)).isoformat(), "offered": n, "lo": n, "hi": n}
        for i, n in enumerate(offered)]}}}


def sample_centre():
    centre, problems = check_config(None)
    assert centre is not None, problems.errors
    return centre


def test_erlang_a_plan_meets_the_target_and_one_agent_fewer_does_not():
    plan = plan_staffing(forecast("billing", [3, 12, 40, 95.5]), {"billing": INPUTS}, shrinkage=0.0)
    rows = plan["queues"]["billing"]
    assert [row["agents"] for row in rows] == sorted(row["agents"] for row in rows)
    for row in rows:
        rate = row["offered"] / 1800.0
        met = erlang_a(row["agents"], rate, INPUTS.aht_s, INPUTS.patience_s)
        assert met.service_level(INPUTS.sl_threshold_s) >= INPUTS.sl_target
        assert row["service_level"] == round(met.service_level(INPUTS.sl_threshold_s), 4)
        assert row["abandonment_rate"] == round(met.p_abandon, 4)
        if row["agents"] > 1:
            fewer = erlang_a(row["agents"] - 1, rate, INPUTS.aht_s, INPUTS.patience_s)
            assert fewer.service_level(INPUTS.sl_threshold_s) < INPUTS.sl_target


def test_shrinkage_rosters_more_than_the_phones_need():
    assert scheduled(9, 0.1) == 10           # 9 / 0.9 is 10.000000000000002 in floats
    assert scheduled(10, 0.1) == 12
    assert scheduled(7, 0.0) == 7
    with pytest.raises(ValueError):
        scheduled(5, 1.0)
    rows = plan_staffing(forecast("billing", [40]), {"billing": INPUTS}, shrinkage=0.25)["queues"]["billing"]
    assert rows[0]["scheduled"] == math.ceil(rows[0]["agents"] / 0.75)


def test_intervals_without_calls_need_nobody():
    rows = plan_staffing(forecast("billing", [0, 0.0, -0.3]), {"billing": INPUTS}, 0.1)["queues"]["billing"]
    assert [(r["agents"], r["scheduled"], r["service_level"]) for r in rows] == [(0, 0, None)] * 3
    assert least_agents(0.0, 1800.0, INPUTS).agents == 0


def test_patience_mle_is_time_waited_over_abandons():
    assert patience_mle(1300.0, 30) == pytest.approx(43.3333, rel=1e-4)
    assert patience_mle(500.0, 0) is None


@pytest.mark.asyncio(loop_scope="session")
async def test_measured_patience_from_stored_waits(conn, database_url, tmp_path):
    """70 answered after 10 s (censored), 30 abandoned after 20 s: (700 + 600) / 30 s."""
    centre = sample_centre()
    t0 = datetime(2026, 11, 23, 9, tzinfo=timezone.utc).timestamp()
    async with EventWriter(database_url, run="mle", spool_dir=tmp_path / "spool") as writer:
        for n in range(100):
            call, at = f"c{n}", t0 + 60 * n
            await writer.put(Event(at, "queue.joined", call_id=call, queue="billing", data={"sl_threshold_s": 20}))
            if n < 70:
                await writer.put(Event(at + 10, "call.connected", call_id=call, queue="billing", agent="a003",
                                       data={"wait_s": 10.0}))
            else:
                await writer.put(Event(at + 20, "call.abandoned", call_id=call, queue="billing",
                                       data={"wait_s": 20.0, "where": "queue"}))
                await writer.put(Event(at + 20, "call.ended", call_id=call, queue="billing",
                                       data={"outcome": "abandoned"}))
        await writer.flush()
    measured, notes = await measure_queues(conn, centre, run="mle")
    assert measured["billing"].patience_s == pytest.approx(1300 / 30)
    assert measured["billing"].patience_source == "history"
    assert measured["billing"].aht_source == "config"          # 70 answered: too few for an AHT
    assert measured["billing"].aht_s == centre.queues["billing"].aht_estimate_s
    assert any(note.startswith("billing: 70 answered") for note in notes)
    assert measured["support"].patience_source == "config"     # no calls at all
    assert measured["support"].patience_s == 200.0


def _billing_only():
    """The sample centre, billing's forecast only: the clones of its agents, nobody else's."""
    centre = sample_centre()
    demand = forecast("billing", [14, 30, 22])
    inputs = {q: QueueInputs(c.aht_estimate_s, 150.0, c.sl_target, c.sl_threshold_s)
              for q, c in centre.queues.items()}
    erlang = {"billing": [row["agents"] for row in plan_staffing(demand, inputs, 0.0)["queues"]["billing"]]}
    return centre, demand, inputs, erlang


def test_verify_meets_every_target_with_the_least_staffing():
    centre, demand, inputs, erlang = _billing_only()
    result = V.verify(centre, demand, erlang, inputs, seeds=2, workers=1)
    assert result["summary"]["feasible"] and result["summary"]["converged"]
    rows = result["queues"]["billing"]
    assert all(row["simulated_service_level"] >= 0.8 for row in rows)
    assert [row["erlang_agents"] for row in rows] == erlang["billing"]
    plan = [row["agents"] for row in rows]
    grid = V.Grid.from_forecast(demand, centre.timezone)
    for i, agents in enumerate(plan):              # one fewer anywhere: some interval misses
        if agents <= 1:
            continue
        fewer = {"billing": plan[:i] + [agents - 1] + plan[i + 1:]}
        counts = V.run_jobs(V.day_jobs(centre, grid, fewer, inputs, 2), None)
        levels = [V.service_level(counts.get(("billing", start))) for start in grid.starts["billing"]]
        assert min(levels) < 0.8, (i, fewer, levels)
    summary = result["summary"]["queues"]["billing"]
    assert summary["verified_agent_hours"] == sum(plan) * 0.5
    assert summary["erlang_agent_hours"] == sum(erlang["billing"]) * 0.5


def test_parallel_verification_equals_serial():
    centre, demand, inputs, erlang = _billing_only()
    serial = V.verify(centre, demand, erlang, inputs, seeds=2, workers=1, max_rounds=2)
    parallel = V.verify(centre, demand, erlang, inputs, seeds=2, workers=2, max_rounds=2)
    assert parallel == serial


def test_clones_keep_the_skills_of_qualifying_agents():
    centre = sample_centre()
    clones = V.clone_agents(centre, {"spanish": 3})
    assert list(clones) == ["spanish-001", "spanish-002", "spanish-003"]
    for clone in clones.values():
        assert clone.skills["es"] >= 7
    assert clones["spanish-001"].skills == centre.agents["a006"].skills      # the first agent with es >= 7
    dedicated = V.clone_agents(centre, {"spanish": 1, "billing": 1}, dedicated=True)
    assert dedicated["spanish-001"].skills == {"es": 9}
    assert dedicated["billing-001"].skills == {"billing": 8, "en": 7}   # a003, without its general skill


def test_staff_json_contract_with_a_forecast_file(tmp_path, database_url):
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(forecast("billing", [0, 14, 30])))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "router", "staff", "--forecast", str(path), "--verify",
                           "--seeds", "2", "--json", "--plot", str(tmp_path / "staff.png")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["queues"]["billing"]
    assert [row["start"][:16] for row in rows] == ["2026-11-23T08:00", "2026-11-23T08:30", "2026-11-23T09:00"]
    keys = {"start", "offered", "agents", "scheduled", "service_level", "abandonment_rate", "erlang_agents",
            "simulated_service_level"}
    assert all(keys <= row.keys() for row in rows)
    assert rows[0]["agents"] == rows[0]["erlang_agents"] == 0
    assert all(row["scheduled"] == math.ceil(row["agents"] / 0.9 - 1e-9) for row in rows)
    assert report["verify"]["queues"]["billing"]["verified_agent_hours"] == sum(r["agents"] for r in rows) * 0.5
    assert any("patience from simulation.patience" in note for note in report["notes"])
    assert (tmp_path / "staff.png").stat().st_size > 10_000


def test_staff_csv_has_one_row_per_queue_and_interval(tmp_path, database_url):
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(forecast("billing", [0, 14, 30])))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "router", "staff", "--forecast", str(path), "--csv"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "queue,start,offered,agents,scheduled,service_level,abandonment_rate"
    billing = sample_centre().queues["billing"]       # no history: the config's AHT, simulation's patience
    inputs = QueueInputs(billing.aht_estimate_s, 150.0, billing.sl_target, billing.sl_threshold_s)
    assert [line.split(",")[:4] for line in lines[1:]] == [
        ["billing", f"2026-11-23T0{8 + i // 2}:{30 * (i % 2):02d}:00+00:00", f"{n:.1f}",
         str(least_agents(n, 1800.0, inputs).agents)] for i, n in enumerate([0, 14, 30])]
