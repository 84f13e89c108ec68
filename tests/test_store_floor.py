"""benchmarks/store_floor.py at a small size: the COPYed events give the KPI SQL the in-memory run's
answered calls and service level, and every figure is reported (no speed asserted)."""
from __future__ import annotations

import asyncio
import math

from benchmarks import store_floor, vs_simpy      # benchmarks/ as a namespace package from the repository


def test_the_floor_copies_one_run_and_its_kpis_match_the_in_memory_run(database_url):
    result = asyncio.run(store_floor.measure(1_000, seed=3, batch=2_000, repeat=2, dsn=database_url))
    in_memory = vs_simpy.run_in_memory(vs_simpy.centre(1_000)[1], seed=3)
    assert result["events"] > 8 * in_memory["calls"] and result["batches"] == math.ceil(result["events"] / 2_000)
    assert result["run_label_chars"] == len("sim:") + 36          # a label like simulate_day's
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["answered"] == in_memory["calls"]
        assert round(run["service_level"], 4) == in_memory["service_level"]
        assert run["copy_s"] > 0 and run["kpi_s"] > 0 and run["kpi_again_s"] > 0
    assert set(result["median"]) == {"copy_s", "copy_cpu_s", "kpi_s", "kpi_again_s", "copy_events_per_s"}


def test_a_setup_statement_runs_on_the_copy_s_connection(database_url):
    result = asyncio.run(store_floor.measure(200, seed=3, batch=5_000, repeat=1, dsn=database_url,
                                             setup="DROP INDEX events_call_id", run="sim:floor"))
    assert result["setup"] == "DROP INDEX events_call_id" and result["run_label_chars"] == len("sim:floor")
    assert result["runs"][0]["answered"] > 0
