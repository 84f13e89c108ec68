"""benchmarks/vs_simpy.py at a small size: the engine and the SimPy reference model the same M/M/14
centre, so both service levels land near Erlang C's (50 simulated hours: within 5 points; seeded,
so the same figures every run)."""
from __future__ import annotations

from benchmarks import vs_simpy      # benchmarks/ as a namespace package from the repository


def test_engine_and_simpy_agree_with_erlang_c_on_the_m_m_c_centre():
    result = vs_simpy.compare(10_000, seed=3, dsn=None)
    erlang = result["centre"]["erlang_c_service_level"]
    assert 0.85 < erlang < 0.92                      # 14 agents, 10 Erlangs, 20 s
    for run in ("simpy", "in_memory"):
        assert abs(result[run]["calls"] - 10_000) < 400, result[run]
        assert abs(result[run]["service_level"] - erlang) < 0.05, (run, result[run], erlang)
    assert "stored" not in result and result["ratios"]["in_memory_vs_simpy_calls_per_s"] > 0


def test_the_stored_run_reports_its_parts_and_the_in_memory_run_s_service_level(database_url):
    """The same seeded calls through simulate_day (every event COPY'd, KPIs by SQL) give the
    in-memory run's answered calls and service level; the stored wall time splits into the
    simulation with its writes and the KPI SQL (figures only, no speed asserted)."""
    result = vs_simpy.compare(2_000, seed=3, dsn=database_url)
    stored, in_memory = result["stored"], result["in_memory"]
    assert stored["calls"] == in_memory["calls"] and stored["service_level"] == in_memory["service_level"]
    assert stored["store_s"] > 0 and stored["kpi_s"] > 0
    # the parts fit in the whole; each figure is rounded to 1 ms, so their sum may pass it by 1.5 ms
    assert stored["store_s"] + stored["kpi_s"] <= stored["wall_s"] + 0.002
    assert {"stored_vs_in_memory_wall", "store_part_vs_in_memory_wall", "kpi_part_vs_in_memory_wall"} <= set(
        result["ratios"])
    # the machine's CPU seconds (Linux): the stored run's over the cores and the in-memory wall is its floor
    assert result["simpy"]["cpu_s"] >= 0 and in_memory["cpu_s"] >= 0 and stored["cpu_s"] > 0   # 10 ms ticks
    assert result["ratios"]["stored_cpu_floor_vs_in_memory_wall"] == round(
        stored["cpu_s"] / result["machine"]["cores"] / in_memory["wall_s"], 3)


def test_rounds_report_the_median_of_each_figure_and_the_range_of_each_ratio(database_url):
    result = vs_simpy.compare(1_000, seed=3, dsn=database_url, rounds=3)
    assert result["rounds"] == 3 and result["stored"]["calls"] == result["in_memory"]["calls"]
    for key, (low, high) in result["ratio_ranges"].items():
        assert low <= result["ratios"][key] <= high, key
    assert set(result["ratio_ranges"]) == {"in_memory_vs_simpy_calls_per_s", "stored_vs_in_memory_wall",
                                           "store_part_vs_in_memory_wall", "kpi_part_vs_in_memory_wall",
                                           "stored_cpu_floor_vs_in_memory_wall"}



def test_service_level_over_seeds_reports_each_model_s_mean_and_standard_error():
    over = vs_simpy.sl_over_seeds(2_000, seeds=3)
    single = vs_simpy.compare(2_000, seed=1, dsn=None)
    erlang = single["centre"]["erlang_c_service_level"]
    for run in ("simpy", "in_memory"):
        points = over[run]["runs_pp"]
        assert len(points) == 3 and all(abs(p) < 10 for p in points)
        assert abs(over[run]["mean_pp"] - sum(points) / 3) <= 0.01        # each point is rounded to 0.01
        assert over[run]["standard_error_pp"] > 0
        assert points[0] == round((single[run]["service_level"] - erlang) * 100, 2)   # seed 1: the single run
