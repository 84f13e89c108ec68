"""Erlang C and Erlang A: published figures, limits, closed forms, and a simulation."""
from __future__ import annotations

import collections
import heapq
import math
import random
from fractions import Fraction

import pytest

from router.sim.erlang import (
    asa_c,
    erlang_a,
    erlang_c,
    occupancy,
    service_level_c,
    staffing,
)

# FACTS.md: 100 calls per 30 min, AHT 180 s, answer within 20 s.
CALLS_PER_HOUR = 200.0
AHT = 180.0
WITHIN = 20.0
RATE = CALLS_PER_HOUR / 3600.0


def test_erlang_c_reference_figures():
    assert erlang_c(14, 10.0) == pytest.approx(0.1741, abs=5e-5)
    assert service_level_c(14, 10.0, AHT, WITHIN) == pytest.approx(0.8884, abs=5e-5)
    assert asa_c(14, 10.0, AHT) == pytest.approx(7.84, abs=5e-3)
    assert occupancy(14, 10.0) == pytest.approx(0.714, abs=5e-4)
    assert service_level_c(13, 10.0, AHT, WITHIN) == pytest.approx(0.7956, abs=5e-5)


def test_staffing_reference_picks_14_agents():
    assert staffing(CALLS_PER_HOUR, AHT, WITHIN, 0.8) == {
        "agents": 14,
        "service_level": 0.8884,
        "asa_s": 7.84,
        "occupancy": 0.7143,
        "p_wait": 0.1741,
        "traffic_erlangs": 10.0,
    }


def test_erlang_c_with_one_agent_is_utilisation():
    # M/M/1: P(wait) = ρ, mean wait = ρ/(1−ρ)·AHT.
    assert erlang_c(1, 0.6) == pytest.approx(0.6, rel=1e-12)
    assert asa_c(1, 0.6, 100.0) == pytest.approx(150.0, rel=1e-12)


def test_unstable_erlang_c():
    assert erlang_c(10, 10.0) == 1.0
    assert service_level_c(9, 10.0, AHT, WITHIN) == 0.0
    assert asa_c(10, 10.0, AHT) == math.inf


def test_extremes_neither_overflow_nor_underflow():
    tiny = erlang_c(1, 1e-9)
    assert tiny == pytest.approx(1e-9, rel=1e-6)
    assert erlang_c(50, 1e-3) == 0.0 or erlang_c(50, 1e-3) < 1e-100
    for agents in (1001, 1010, 1050, 1200):
        p_wait = erlang_c(agents, 1000.0)
        assert 0.0 < p_wait < 1.0
    assert erlang_c(1001, 1000.0) > erlang_c(1050, 1000.0) > erlang_c(1200, 1000.0)
    result = staffing(20_000, AHT, WITHIN, 0.8)
    assert result["traffic_erlangs"] == 1000.0
    assert 1000 < result["agents"] < 1100
    assert service_level_c(result["agents"] - 1, 1000.0, AHT, WITHIN) < 0.8 <= result["service_level"]


@pytest.mark.parametrize("traffic", [0.5, 10.0, 95.5])
def test_more_agents_never_worse(traffic):
    agents = range(math.floor(traffic) + 1, math.floor(traffic) + 40)
    p_waits = [erlang_c(n, traffic) for n in agents]
    levels = [service_level_c(n, traffic, AHT, WITHIN) for n in agents]
    asas = [asa_c(n, traffic, AHT) for n in agents]
    assert all(a > b for a, b in zip(p_waits, p_waits[1:]))
    assert all(a <= b for a, b in zip(levels, levels[1:]))
    assert all(a > b for a, b in zip(asas, asas[1:]))


def test_erlang_a_with_long_patience_is_erlang_c():
    result = erlang_a(14, RATE, AHT, patience_s=1e7)
    assert not result.truncated
    assert result.p_wait == pytest.approx(erlang_c(14, 10.0), abs=1e-3)
    assert result.service_level(WITHIN) == pytest.approx(service_level_c(14, 10.0, AHT, WITHIN), abs=1e-3)
    assert result.asa_s == pytest.approx(asa_c(14, 10.0, AHT), abs=1e-2)
    assert result.p_abandon < 1e-4
    with_patience = staffing(CALLS_PER_HOUR, AHT, WITHIN, 0.8, patience_s=1e7)
    assert with_patience["agents"] == 14
    assert with_patience["p_abandon"] == 0.0


def test_short_patience_means_less_waiting_and_some_abandons():
    patient = erlang_a(11, RATE, AHT, patience_s=1e7)
    impatient = erlang_a(11, RATE, AHT, patience_s=30.0)
    assert impatient.p_wait < patient.p_wait
    assert impatient.p_abandon > 0.01
    assert impatient.asa_s < patient.asa_s


def test_erlang_a_runs_where_erlang_c_is_unstable():
    result = erlang_a(8, RATE, AHT, patience_s=60.0)
    assert not result.truncated
    assert 0.0 < result.p_abandon < 1.0
    # Served traffic is offered traffic less the abandoned share, and no more than 8 agents.
    assert result.occupancy == pytest.approx(10.0 * (1 - result.p_abandon) / 8)
    assert result.occupancy <= 1.0


def test_patience_equal_to_handle_time_is_an_infinite_server_system():
    # With θ = μ every call in the system leaves at rate μ: the count is Poisson(A),
    # so P(wait) = P(K >= n) and P(abandon) = E[(K − n)+]/A.
    agents, traffic = 9, 10.0
    result = erlang_a(agents, traffic / AHT, AHT, patience_s=AHT)
    poisson = [math.exp(-traffic + k * math.log(traffic) - math.lgamma(k + 1)) for k in range(200)]
    assert result.p_wait == pytest.approx(math.fsum(poisson[agents:]), rel=1e-9)
    excess = math.fsum((k - agents) * p for k, p in enumerate(poisson) if k > agents)
    assert result.p_abandon == pytest.approx(excess / traffic, rel=1e-9)


def test_single_agent_chain_by_hand():
    # M/M/1+M with λ = μ = θ = 1: π_k ∝ 1/k! for k >= 1 relative to π_0 (death rate k),
    # i.e. Poisson(1).  An arrival finding the agent busy with j waiting is answered with
    # probability μ/(μ + (j+1)θ) = 1/(j+2), after E[D; answered] = 1/(j+2)·Σ_{i=1..j+1} 1/(1+i).
    result = erlang_a(1, 1.0, 1.0, 1.0)
    poisson = [math.exp(-1.0) / math.factorial(k) for k in range(40)]
    assert result.p_no_wait == pytest.approx(poisson[0], rel=1e-12)
    answered = poisson[0] + sum(poisson[j + 1] / (j + 2) for j in range(38))
    assert 1 - result.p_abandon == pytest.approx(answered, rel=1e-12)
    wait = sum(
        poisson[j + 1] / (j + 2) * sum(1 / (1 + i) for i in range(1, j + 2)) for j in range(38)
    )
    assert result.asa_s == pytest.approx(wait / answered, rel=1e-12)
    # Surviving its own patience, a caller with j ahead leaves states j..0 at rates j+2..2,
    # so its answer time is hypoexponential: exact coefficients, no uniformisation.
    t = 0.7
    within = poisson[0] + sum(
        poisson[j + 1] / (j + 2) * hypoexponential_cdf(range(2, j + 3), t) for j in range(16)
    )
    assert result.service_level(t) == pytest.approx(within, abs=1e-10)


def hypoexponential_cdf(rates, t):
    """P(sum of independent exponentials with distinct integer rates <= t)."""
    rates = list(rates)
    survival = 0.0
    for i, rate in enumerate(rates):
        weight = Fraction(1)
        for k, other in enumerate(rates):
            if k != i:
                weight *= Fraction(other, other - rate)
        survival += float(weight) * math.exp(-rate * t)
    return 1.0 - survival


@pytest.mark.parametrize("agents,patience", [(5, 30.0), (11, 120.0), (14, 600.0)])
def test_service_level_is_bounded_by_its_limits(agents, patience):
    result = erlang_a(agents, RATE, AHT, patience)
    assert result.service_level(0.0) == pytest.approx(1 - result.p_wait, abs=1e-12)
    assert result.service_level(1e6) == pytest.approx(1 - result.p_abandon, abs=1e-9)
    levels = [result.service_level(t) for t in (0, 5, 10, 20, 60, 300)]
    assert all(a < b for a, b in zip(levels, levels[1:]))


def test_abandonment_by_flow_balance_equals_per_caller_race():
    result = erlang_a(9, RATE, AHT, 45.0)
    all_busy = 9 / AHT
    theta = 1 / 45.0
    per_caller = math.fsum(
        p * (j + 1) * theta / (all_busy + (j + 1) * theta) for j, p in enumerate(result.queue_seen)
    )
    assert result.p_abandon == pytest.approx(per_caller, rel=1e-9)


def simulate_mmn_m(agents, rate, aht, patience, within, calls, seed):
    """Event-driven M/M/n+M, FCFS; abandoned callers are dropped lazily at the head."""
    rng = random.Random(seed)
    free_at: list[float] = []  # completion times of busy agents (heap)
    queue: collections.deque[tuple[float, float]] = collections.deque()  # (arrival, gives up at)
    now = 0.0
    waited = answered = within_t = abandoned = 0
    total_wait = 0.0

    def serve_queue(until: float) -> None:
        nonlocal answered, within_t, abandoned, total_wait
        while free_at and free_at[0] <= until:
            done = heapq.heappop(free_at)
            while queue and queue[0][1] < done:
                queue.popleft()
                abandoned += 1
            if queue:
                arrived, _ = queue.popleft()
                answered += 1
                total_wait += done - arrived
                within_t += done - arrived <= within
                heapq.heappush(free_at, done + rng.expovariate(1 / aht))

    for _ in range(calls):
        now += rng.expovariate(rate)
        serve_queue(now)
        while queue and queue[0][1] < now:
            queue.popleft()
            abandoned += 1
        if len(free_at) < agents:  # an idle agent implies nobody is waiting
            answered += 1
            within_t += 1
            heapq.heappush(free_at, now + rng.expovariate(1 / aht))
        else:
            waited += 1
            queue.append((now, now + rng.expovariate(1 / patience)))
    return {
        "p_wait": waited / calls,
        "p_abandon": abandoned / calls,
        "service_level": within_t / calls,
        "asa_s": total_wait / answered,
    }


def test_erlang_a_agrees_with_a_simulation():
    agents, patience = 9, 60.0
    simulated = simulate_mmn_m(agents, RATE, AHT, patience, WITHIN, calls=150_000, seed=7)
    exact = erlang_a(agents, RATE, AHT, patience)
    assert simulated["p_wait"] == pytest.approx(exact.p_wait, abs=0.015)
    assert simulated["p_abandon"] == pytest.approx(exact.p_abandon, abs=0.01)
    assert simulated["service_level"] == pytest.approx(exact.service_level(WITHIN), abs=0.015)
    assert simulated["asa_s"] == pytest.approx(exact.asa_s, rel=0.05)


def test_staffing_with_patience_reports_abandons():
    result = staffing(CALLS_PER_HOUR, AHT, WITHIN, 0.8, patience_s=60.0)
    assert set(result) == {
        "agents", "service_level", "asa_s", "occupancy", "p_wait", "p_abandon", "traffic_erlangs"
    }
    assert result["service_level"] >= 0.8
    below = erlang_a(result["agents"] - 1, RATE, AHT, 60.0)
    assert below.service_level(WITHIN) < 0.8
    assert result["p_abandon"] > 0


def test_large_traffic_erlang_a_is_finite():
    result = erlang_a(1000, 1000.0 / AHT, AHT, 120.0)
    assert not result.truncated
    assert 0 < result.p_abandon < 0.1
    assert 0 < result.service_level(WITHIN) < 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"calls_per_hour": 0}, "calls per hour"),
        ({"aht_s": -1}, "AHT"),
        ({"answer_within_s": 0}, "answer-within"),
        ({"target": 1.0}, "target"),
        ({"target": 0.0}, "target"),
        ({"patience_s": 0}, "patience"),
        ({"patience_s": math.inf}, "patience"),
        ({"max_agents": 12}, "no staffing up to 12 agents"),
    ],
)
def test_staffing_rejects_bad_input(kwargs, message):
    arguments = {"calls_per_hour": CALLS_PER_HOUR, "aht_s": AHT, "answer_within_s": WITHIN, "target": 0.8}
    with pytest.raises(ValueError, match=message):
        staffing(**(arguments | kwargs))


def test_erlang_a_rejects_bad_input():
    with pytest.raises(ValueError, match="agents"):
        erlang_a(0, RATE, AHT, 60.0)
    with pytest.raises(ValueError, match="patience"):
        erlang_a(5, RATE, AHT, 0.0)
    with pytest.raises(ValueError, match="answer_within_s"):
        erlang_a(5, RATE, AHT, 60.0).service_level(-1)
