"""The `acd-router` command end to end, as users run it (a subprocess, a real database)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PINNED = {"offered", "answered", "abandoned", "short_abandoned", "service_level", "asa_s", "aht_s",
          "abandonment_rate", "fcr_rate", "occupancy", "callbacks_offered", "callbacks_accepted",
          "callbacks_completed", "overflowed", "ivr_contained", "csat_avg", "nps"}


def acd(*args: str, dsn: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ACD_DATABASE_URL", None)
    if dsn:
        env["ACD_DATABASE_URL"] = dsn
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def simulated(database_url):
    """One 2-hour simulated day of the sample centre, shared by the tests below."""
    done = acd("simulate", "--hours", "2", "--seed", "4", "--json", dsn=database_url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_simulate_json_is_one_object_with_the_pinned_keys(simulated):
    assert PINNED <= simulated.keys()
    assert simulated["offered"] > 100
    assert set(simulated["queues"]) == {"billing", "support", "sales", "general", "spanish"}
    for per_queue in simulated["queues"].values():
        assert PINNED <= per_queue.keys()
    assert simulated["simulation"]["run"].startswith("sim:")


def test_kpi_reads_back_the_same_figures_as_json_and_csv(simulated, database_url):
    run = simulated["simulation"]["run"]
    done = acd("kpi", "--run", run, "--json", dsn=database_url)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    for key in PINNED:
        assert again[key] == simulated[key], key
    done = acd("kpi", "--run", run, "--csv", "--interval", "30m", dsn=database_url)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    total = next(r for r in rows if r["scope"] == "total")
    assert int(total["offered"]) == simulated["offered"]
    intervals = [r for r in rows if r["scope"] == "interval" and not r["id"]]
    assert len(intervals) >= 4 and sum(int(r["offered"]) for r in intervals) == simulated["offered"]


def test_kpi_window_filters(simulated, database_url):
    run = simulated["simulation"]["run"]
    done = acd("kpi", "--run", run, "--from", "2026-11-23T08:00", "--to", "2026-11-23T09:00", "--json",
               dsn=database_url)
    first_hour = json.loads(done.stdout)
    assert 0 < first_hour["offered"] < simulated["offered"]


def test_kpi_table_for_humans(simulated, database_url):
    done = acd("kpi", "--run", simulated["simulation"]["run"], dsn=database_url)
    assert done.returncode == 0
    assert "TOTAL" in done.stdout and "billing" in done.stdout


def test_erlang_json():
    done = acd("erlang", "--calls-per-hour", "200", "--aht", "180", "--answer-within", "20",
               "--target", "0.8", "--json")
    assert json.loads(done.stdout) == {"agents": 14, "service_level": 0.8884, "asa_s": 7.84,
                                       "occupancy": 0.7143, "p_wait": 0.1741, "traffic_erlangs": 10.0}
    done = acd("erlang", "--calls-per-hour", "200", "--aht", "180", "--answer-within", "20",
               "--target", "0.8", "--patience", "120", "--json")
    result = json.loads(done.stdout)
    assert 0 < result["p_abandon"] < 0.1 and result["agents"] <= 14


def test_erlang_rejects_bad_input():
    done = acd("erlang", "--calls-per-hour", "-5", "--aht", "180", "--answer-within", "20")
    assert done.returncode == 2 and "positive" in done.stderr


def test_db_migrate_is_idempotent(database_url):
    first = acd("db", "migrate", dsn=database_url)
    second = acd("db", "migrate", dsn=database_url)
    assert first.returncode == second.returncode == 0
    assert second.stdout.strip() == "schema is up to date"


def test_bad_config_reports_every_problem_with_positions(tmp_path):
    bad = tmp_path / "router.yaml"
    bad.write_text("skills:\n  - {id: en, nmae: English}\nagents: []\nqueues:\n"
                   "  - {id: q, skills: {fr: 3}, stratgy: random}\n")
    done = acd("simulate", "--config", str(bad), "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert f"{bad}:2:14: error: unknown key 'nmae' in skill 'en'; did you mean 'name'?" in lines
    assert any(line.startswith(f"{bad}:5:") and "'fr'" in line for line in lines)
    assert any(line.startswith(f"{bad}:5:") and "did you mean 'strategy'?" in line for line in lines)


def test_router_yaml_in_working_directory_is_the_default(tmp_path):
    (tmp_path / "router.yaml").write_text("skills: []\nagents: []\nqueues: []\nbogus: 1\n")
    done = acd("simulate", "--json", cwd=tmp_path)
    assert done.returncode == 1 and "router.yaml:4:1: error: unknown key 'bogus'" in done.stderr


def test_serve_without_ami_runs_the_real_time_demo_until_interrupted(database_url, tmp_path):
    import asyncio
    import signal

    import asyncpg

    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url}
    process = subprocess.Popen([sys.executable, "-m", "router", "serve", "--speed", "600", "--web-port", "0",
                                "--data-dir", str(tmp_path)], cwd=REPO, env=env,    # token, recordings
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:                     # the first status follows the first happenings
        if '"status"' in line:                      # (agents log in at the first instant of the day)
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "demo stopped" in stderr

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM events WHERE run = 'demo'")
        finally:
            await conn.close()
    assert asyncio.run(count()) > 0
