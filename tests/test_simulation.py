"""The simulator end to end: engine on a virtual clock -> PostgreSQL -> KPI SQL."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import random

import pytest

from router.config.model import Distribution, Simulation
from router.sim import traffic
from router.sim.erlang import staffing
from router.sim.run import simulate_day
from router.sim.simulator import Simulator
from tests.factories import centre, queue


def mmc_centre(agents: int, calls_per_30min: float, aht_s: float):
    """M/M/c: Poisson arrivals, exponential talk, no wrap-up, no ring delay, no abandonment."""
    c = centre({f"a{i}": {"billing": 5} for i in range(agents)},
               [queue("billing", {"billing": 1}, wrap_up_s=0.0, sl_threshold_s=20.0)])
    model = Simulation(start=datetime(2026, 11, 23, 0), interval_minutes=30,
                       arrivals={"billing": (calls_per_30min,)},
                       handle_time={"default": Distribution("exponential", aht_s)},
                       patience={"default": Distribution("fixed", 1e9)}, answer_delay_s=0.0)
    return replace(c, simulation=model)


async def test_mmc_simulation_kpi_sql_agrees_with_erlang_c(database_url):
    # FACTS.md reference: 100 calls / 30 min, AHT 180 s, 14 agents -> SL(20 s) 0.8884, occupancy 0.714
    theory = staffing(200.0, 180.0, 20.0, 0.8)
    assert theory["agents"] == 14
    kpis = await simulate_day(mmc_centre(14, 100.0, 180.0), database_url, hours=200.0, seed=11,
                              show_progress=False)
    assert kpis["offered"] > 35_000
    assert kpis["offered"] - kpis["answered"] <= 5            # still waiting when the day closed
    assert abs(kpis["service_level"] - theory["service_level"]) <= 0.02
    assert abs(kpis["occupancy"] - theory["occupancy"]) <= 0.02


def test_long_mmc_simulation_asa_agrees_with_erlang_c():
    """ASA converges slowly (waits come in long correlated runs): 200 h still scatter by
    +-20 % between seeds, so this one simulates 1,000 h (about 200,000 calls) in memory."""
    theory = staffing(200.0, 180.0, 20.0, 0.8)
    sim = Simulator(mmc_centre(14, 100.0, 180.0), hours=1000.0, seed=11)
    waits = []
    while not sim.done:
        waits += [e.data["wait_s"] for e in sim.run(50_000) if e.type == "call.connected"]
    assert len(waits) > 190_000
    service_level = sum(w <= 20.0 for w in waits) / len(waits)
    asa = sum(waits) / len(waits)
    assert abs(service_level - theory["service_level"]) <= 0.02
    assert abs(asa - theory["asa_s"]) <= 0.10 * theory["asa_s"]


async def test_same_seed_same_kpis(database_url):
    c = mmc_centre(5, 40.0, 200.0)
    c = replace(c, simulation=replace(c.simulation, patience={"default": Distribution("exponential", 60.0)}))
    first = await simulate_day(c, database_url, hours=4.0, seed=5, show_progress=False)
    second = await simulate_day(c, database_url, hours=4.0, seed=5, show_progress=False)
    other = await simulate_day(c, database_url, hours=4.0, seed=6, show_progress=False)
    strip = lambda k: {key: v for key, v in k.items() if key not in ("simulation", "run")}  # noqa: E731
    assert first["simulation"]["run"] != second["simulation"]["run"]
    assert strip(first) == strip(second)
    assert strip(first) != strip(other)
    assert first["abandoned"] > 0                           # patience 60 s on an overloaded queue


def test_shifts_breaks_and_rona_reach_the_engine():
    from router.config.model import Break, Shift
    from datetime import time
    c = mmc_centre(4, 30.0, 120.0)
    model = replace(c.simulation, no_answer_rate=0.2, answer_delay_s=2.0,
                    shifts=(Shift(("a0", "a1"), time(0, 0), time(2, 0), (Break(time(1, 0), 15),)),
                            Shift(("a2", "a3"), time(1, 0), time(3, 0))))
    sim = Simulator(replace(c, simulation=model), hours=3.0, seed=2)
    events = []
    while not sim.done:
        events += sim.run(1000)
    states = [(e.agent, e.data["state"], e.data.get("reason")) for e in events if e.type == "agent.state"]
    assert ("a0", "paused", "break") in states
    rona = [e for e in events if e.type == "agent.state" and e.data["reason"] == "rona"]
    assert rona and len(rona) == sum(1 for e in events if e.type == "agent.no_answer")
    for pause in rona:                                     # each comes back after rona_recovery_s
        back = next(e for e in events if e.type == "agent.state" and e.agent == pause.agent
                    and e.ts > pause.ts and e.data["previous"] == "paused")
        assert back.ts - pause.ts <= model.rona_recovery_s + 1e-6
        assert back.data["state"] in ("available", "logged_out") or back.data["reason"] == "break"
    logins = [e for e in events if e.type == "agent.state" and e.data["previous"] == "logged_out"]
    assert {e.agent for e in logins if e.ts - sim.start < 1} == {"a0", "a1"}
    assert {e.agent for e in logins if abs(e.ts - sim.start - 3600) < 1} == {"a2", "a3"}
    assert sum(1 for e in events if e.type == "agent.state" and e.data["state"] == "logged_out") == 4


# --- callers in the IVR ------------------------------------------------------------------------

def _sample_with_flows():
    from router.config import load_config
    from router.ivr import load_flowset
    centre = load_config(None)                       # the packaged sample centre and ivr_flows/
    return centre, load_flowset(centre)


def _run_all(sim):
    events = []
    while not sim.done:
        events += sim.run(5_000)
    return events


def test_simulated_callers_walk_the_real_flows():
    centre, flowset = _sample_with_flows()
    events = _run_all(Simulator(centre, hours=3.0, seed=8, flowset=flowset))
    ivr_calls = {e.call_id for e in events if e.type == "ivr.node" and e.data["flow"] == "main"}
    assert len(ivr_calls) > 50
    endings = {e.call_id: e.data["outcome"] for e in events
               if e.type == "ivr.ended" and e.call_id in ivr_calls and e.data["flow"] != "survey"}
    queued = {c for c, outcome in endings.items() if outcome == "queued"}
    joined = {e.call_id for e in events if e.type == "queue.joined"}
    assert queued and queued <= joined                       # the IVR's Enqueue reaches the engine
    hung_up = {c for c, outcome in endings.items() if outcome == "hangup"}
    assert hung_up and not hung_up & joined                  # long menus lose callers before the queue
    menu = [e.data["value"] for e in events if e.type == "ivr.input" and e.data["node"] == "main_menu"
            and e.data.get("input") == "digits"]
    assert {"1", "2"} <= set(menu)                           # choices drawn from the traffic model
    spanish = {e.call_id for e in events if e.type == "queue.joined" and e.queue == "spanish"} & ivr_calls
    assert spanish                                           # language choice 2 -> the Spanish desk
    surveys = [e for e in events if e.type == "survey.answered"]
    assert surveys and all(e.agent and e.queue for e in surveys)
    assert {e.data["question"] for e in surveys} == {"csat", "nps"}


def test_ivr_simulation_is_deterministic_for_a_seed():
    centre, flowset = _sample_with_flows()
    trace = lambda seed: [(e.ts, e.type, e.call_id, e.queue, e.agent)  # noqa: E731
                          for e in _run_all(Simulator(centre, hours=1.0, seed=seed, flowset=flowset))]
    assert trace(3) == trace(3)


def test_ivr_traffic_must_name_real_flow_nodes():
    from router.config.model import IvrTraffic
    centre, flowset = _sample_with_flows()
    bad = replace(centre.simulation, ivr=IvrTraffic(flow="main", arrivals=(5.0,),
                                                    choices={"main/no_such_menu": {"1": 0.5}}))
    with pytest.raises(ValueError, match="no node 'main/no_such_menu'"):
        Simulator(centre, model=bad, flowset=flowset)
    with pytest.raises(ValueError, match="needs the centre's flows"):
        Simulator(centre, model=bad)


async def test_real_time_demo_streams_events_until_stopped(database_url):
    import asyncio
    from router.sim.realtime import serve_simulated
    from router.store.database import ensure_schema
    from router.store.writer import EventWriter

    centre, _ = _sample_with_flows()
    await ensure_schema(database_url)
    stop = asyncio.Event()
    async with EventWriter(database_url, run="demo-test") as writer:
        # 600x: ten simulated minutes take about a second; stop after 1.5 s of wall time
        asyncio.get_running_loop().call_later(1.5, stop.set)
        sim = await serve_simulated(centre, writer, stop, speed=600.0, seed=2, status_every_s=0.2)
        await writer.flush()
        assert writer.written > 0
    assert 0 < sim.clock - sim.start < 8 * 3600                 # stopped part-way, not at the end
    assert not sim.done


def test_simulated_callers_take_callbacks_that_are_dialled_and_connected():
    from router.config.model import CallbackPolicy
    c = mmc_centre(3, 60.0, 240.0)                          # overloaded: long waits, offers on arrival
    q = replace(c.queues["billing"], callback=CallbackPolicy(offer_ewt_s=60.0, retry_s=120.0))
    model = replace(c.simulation, callback_acceptance=0.5, callback_answer_rate=0.7,
                    patience={"default": Distribution("exponential", 600.0)})
    c = replace(c, queues={"billing": q}, simulation=model)
    events = _run_all(Simulator(c, hours=2.0, seed=4))
    kinds = [e.type for e in events]
    accepted = {e.call_id for e in events if e.type == "callback.accepted"}
    assert kinds.count("callback.offered") > len(accepted) > 5
    assert not accepted & {e.call_id for e in events if e.type == "call.abandoned"}   # not abandons
    connected = [e for e in events if e.type == "callback.connected"]
    assert connected and all(e.call_id in accepted for e in connected)
    assert all(e.data["kept_wait_s"] > 0 for e in connected)
    retried = [e for e in events if e.type == "callback.failed" and e.data.get("final") is False]
    assert retried                                           # 30 % of customer legs are not answered
    dialing = [e for e in events if e.type == "callback.dialing"]
    assert {e.data["attempt"] for e in dialing} >= {1, 2}


def test_no_callback_is_dialled_while_the_callback_hours_are_closed():
    from datetime import time
    from router.config.model import CallbackPolicy, Schedule
    c = mmc_centre(3, 60.0, 240.0)                          # overloaded: long waits, offers on arrival
    lunch_closed = Schedule("cb", "UTC", {"mon": ((time(10), time(12)), (time(14), time(18)))})
    q = replace(c.queues["billing"], callback=CallbackPolicy(offer_ewt_s=60.0, retry_s=120.0, hours="cb"))
    model = replace(c.simulation, start=datetime(2026, 11, 23, 10), callback_acceptance=0.5,
                    callback_answer_rate=0.7, patience={"default": Distribution("exponential", 600.0)})
    c = replace(c, queues={"billing": q}, schedules={"cb": lunch_closed}, simulation=model)
    sim = Simulator(c, hours=6.0, seed=4)                   # Monday 10:00-16:00 UTC
    events = _run_all(sim)
    noon, two = sim.start + 2 * 3600, sim.start + 4 * 3600

    def closed(e):
        return noon <= e.ts < two

    dialing = [e for e in events if e.type == "callback.dialing"]
    assert dialing and not [e for e in dialing if closed(e)]
    assert not [e for e in events if e.type == "callback.offered" and closed(e)]
    accepted = {e.call_id: e.ts for e in events if e.type == "callback.accepted"}
    waited_out_lunch = [e for e in dialing if accepted[e.call_id] < noon and e.ts >= two]
    assert waited_out_lunch                                  # pending at noon, dialled at 14:00 or later
    assert [e for e in events if e.type == "call.connected" and closed(e)]   # agents worked on meanwhile
    connected = {e.call_id for e in events if e.type == "callback.connected"}
    assert {e.call_id for e in waited_out_lunch} & connected


@pytest.mark.parametrize("seed", range(20))
def test_the_traffic_draws_are_the_random_modules_to_the_bit(seed):
    """traffic.exponential and traffic.below replace rng.expovariate and rng.randrange in the hot
    path: the same values in the same order, so seeded runs keep their calls."""
    ours, theirs = random.Random(seed), random.Random(seed)
    for n in (1, 2, 3, 50, 255, 256, 257, 10**6 + 7, 2**40 + 1):
        rate = (n % 97 + 1) / 3600.0
        assert traffic.exponential(ours, rate) == theirs.expovariate(rate)
        assert traffic.below(ours, n) == theirs.randrange(n)
    assert ours.getstate() == theirs.getstate()
