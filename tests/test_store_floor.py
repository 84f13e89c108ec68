"""benchmarks/store_floor.py at a small size: the COPYed events give the KPI SQL the in-memory run's
answered calls and service level, into the run's own table or into `events`, and every figure is
reported (no speed asserted)."""
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
        assert run["copy_s"] > 0 and run["after_s"] > 0 and run["kpi_s"] > 0 and run["kpi_again_s"] > 0
    assert result["into"] == "run-table"
    assert set(result["median"]) == {"copy_s", "copy_cpu_s", "after_s", "kpi_s", "kpi_again_s", "copy_events_per_s"}


def test_setup_and_after_statements_run_on_the_copy_s_connection_into_events(database_url):
    # raises unless the rows went into `events` itself, no run table
    after = ("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM ONLY events) OR EXISTS (SELECT 1 FROM pg_inherits) "
             "THEN RAISE 'not in events itself'; END IF; END $$")
    result = asyncio.run(store_floor.measure(200, seed=3, batch=5_000, repeat=1, dsn=database_url,
                                             setup="DROP INDEX events_call_id", run="sim:floor",
                                             after=after, into="events"))
    assert result["setup"] == "DROP INDEX events_call_id" and result["run_label_chars"] == len("sim:floor")
    assert result["into"] == "events" and result["after"] == after
    assert result["runs"][0]["answered"] > 0
