"""What-if at speed: `simulate --no-store`, `--set PATH=VALUE`, `--seeds N`, `--compare`.

Short runs (an hour or less of the sample centre) keep this quick; the figures come from the KPI
twin, which tests/test_kpi_twin.py holds equal to the SQL.
"""
from __future__ import annotations

import json

import pytest

from router.cli import main
from router.config.loader import load_config
from router.sim.run import simulate_day
from router.sim.whatif import run_seeds, simulate_in_memory, summary
from tests.test_kpi_twin import assert_same

FEWER_AGENTS = ["--set", "simulation.shifts.0.agents=[a001]", "--set", "simulation.shifts.1.agents=[a007]"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("change, message", [
    ("queues.bling.wrap_up_s=30",
     "--set queues.bling.wrap_up_s=30:1:8: error: no item 'bling' in queues (ids: billing, support, sales, "
     "general, spanish); did you mean 'billing'?"),
    ("queues.billing.wrap_upp_s=30",
     "--set queues.billing.wrap_upp_s=30:1:16: error: unknown key 'wrap_upp_s' in queue 'billing'; "
     "did you mean 'wrap_up_s'?"),
    ("queues.billing.wrap_up_s=abc",
     "--set queues.billing.wrap_up_s=abc:1:26: error: 'wrap_up_s' of queue 'billing': expected a number "
     "at least 0, got string 'abc'"),
    ("simulation.arrivals.sales=[1, 2, x]",
     "--set simulation.arrivals.sales=[1, 2, x]:1:34: error: interval 3 of arrivals of queue 'sales': "
     "expected a number at least 0, got string 'x'"),
    ("simulation.shifts.9.agents=[a001]",
     "--set simulation.shifts.9.agents=[a001]:1:19: error: no item '9' in simulation.shifts (0 to 7)"),
    ("simulation.no_answer_rate", "--set simulation.no_answer_rate:1:1: error: expected PATH=VALUE"),
])
def test_a_bad_change_names_its_set_argument(capsys, monkeypatch, change, message):
    monkeypatch.setenv("ACD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")    # never reached
    code, out, err = run_cli(capsys, "--no-store", "--hours", "0.1", "--set", change)
    assert code == 1 and out == ""
    assert err.splitlines()[0].startswith(message)


def test_compare_needs_a_change(capsys):
    code, out, err = run_cli(capsys, "--seeds", "2", "--compare")
    assert code == 2 and "--compare needs at least one --set" in err


def test_a_change_is_applied_before_validation():
    from router.config.overrides import check_changed_config

    centre, problems = check_changed_config(None, ["queues.billing.wrap_up_s=45", "simulation.no_answer_rate=0.2",
                                                   "queues.sales.callback.offer_ewt_s=90"])
    assert not problems.errors
    assert centre.queues["billing"].wrap_up_s == 45 and centre.simulation.no_answer_rate == 0.2
    assert centre.queues["sales"].callback.offer_ewt_s == 90
    assert load_config(None).queues["billing"].wrap_up_s != 45


def test_no_store_prints_the_kpis_without_a_database(capsys, monkeypatch):
    monkeypatch.setenv("ACD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")    # unreachable
    code, out, err = run_cli(capsys, "--no-store", "--hours", "0.5", "--seed", "3", "--json")
    assert code == 0
    kpis = json.loads(out)
    assert kpis["offered"] > 0 and kpis["simulation"]["seed"] == 3 and kpis["run"] == "memory"
    assert kpis == json.loads(json.dumps(simulate_in_memory(load_config(None), hours=0.5, seed=3)))


@pytest.mark.asyncio(loop_scope="session")
async def test_no_store_equals_the_stored_run(database_url):
    centre = load_config(None)
    stored = await simulate_day(centre, database_url, hours=1.0, seed=1, show_progress=False)
    memory = simulate_in_memory(centre, hours=1.0, seed=1)
    assert stored["run"].startswith("sim:") and memory["run"] == "memory"
    for kpis in (stored, memory):
        kpis.pop("run")
        kpis["simulation"].pop("run")
    assert_same(stored, memory)


def test_seeds_in_parallel_processes_equal_one_by_one():
    centre = load_config(None)
    parallel = run_seeds({"centre": centre}, [4, 5], hours=0.5, workers=2)["centre"]
    assert_same(parallel, [simulate_in_memory(centre, hours=0.5, seed=seed) for seed in (4, 5)])
    assert parallel[0]["offered"] != parallel[1]["offered"]       # two seeds, two days


def test_fewer_agents_lower_the_service_level(capsys):
    code, out, err = run_cli(capsys, "--hours", "1", "--seeds", "3", "--compare", *FEWER_AGENTS, "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["seeds"], result["first_seed"], result["changes"]) == (
        3, 0, ["simulation.shifts.0.agents=[a001]", "simulation.shifts.1.agents=[a007]"])
    assert set(result) == {"seeds", "first_seed", "hours", "changes", "baseline", "scenario", "difference", "queues"}
    difference = result["difference"]
    assert abs(difference["offered"]["mean"]) < 2          # same seeds, same callers (the IVR may route a few apart)
    assert difference["service_level"]["hi"] < 0 and difference["asa_s"]["lo"] > 0
    sl = result["scenario"]["service_level"]
    assert sl["lo"] < sl["mean"] < sl["hi"] and sl["n"] == 3
    assert result["scenario"]["service_level"]["mean"] < result["baseline"]["service_level"]["mean"]
    support = result["queues"]["support"]               # among others, the two shifts answered support
    assert set(support) == {"baseline", "scenario", "difference"} and "occupancy" not in support["scenario"]
    assert support["difference"]["service_level"]["mean"] < 0 and support["scenario"]["offered"]["n"] == 3


def test_the_table_shows_each_column(capsys):
    code, out, err = run_cli(capsys, "--hours", "0.5", "--seeds", "2", "--compare", *FEWER_AGENTS)
    assert code == 0
    lines = out.splitlines()
    assert "2 seeds (0..1), 0.5 h each; changes: simulation.shifts.0.agents=[a001]" in lines[0]
    assert lines[2].split()[:4] == ["KPI", "baseline", "(mean", "[95%"]
    assert next(line for line in lines if line.startswith("offered")).count("[") == 3


def test_a_95_percent_student_t_interval():
    assert summary([1.0, 2.0, 3.0]) == {"mean": 2.0, "lo": -0.484138, "hi": 4.484138, "n": 3}   # t(2) 4.3027
    assert summary([None, 5.0]) == {"mean": 5.0, "lo": None, "hi": None, "n": 1}
    assert summary([None]) == {"mean": None, "lo": None, "hi": None, "n": 0}


def test_shifts_from_a_schedule_file_replace_the_configs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ACD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")    # never reached
    roster = tmp_path / "shifts.yaml"
    roster.write_text('# as `acd-router schedule --output` writes it\nsimulation:\n  shifts:\n'
                      '    - {agents: [a001, a003], start: "08:00", end: "16:00", breaks: []}\n', encoding="utf-8")
    code, out, _ = run_cli(capsys, "--no-store", "--hours", "0.5", "--seed", "2", "--shifts", str(roster), "--json")
    code_set, out_set, _ = run_cli(capsys, "--no-store", "--hours", "0.5", "--seed", "2", "--json", "--set",
                                   'simulation.shifts=[{agents: [a001, a003], start: "08:00", end: "16:00"}]')
    usual_code, usual, _ = run_cli(capsys, "--no-store", "--hours", "0.5", "--seed", "2", "--json")
    assert code == code_set == usual_code == 0
    assert json.loads(out) == json.loads(out_set)
    assert json.loads(out)["service_level"] < json.loads(usual)["service_level"]    # 2 agents, not 17

    roster.write_text("simulation:\n  arrivals: {}\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "--no-store", "--shifts", str(roster))
    assert code == 1 and out == "" and "expected a `simulation:` section with a `shifts:` list" in err
