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
