"""The KPI twin: `kpis_from_events` (Python, in memory) equals `compute_kpis` (SQL) on the same events.

Simulated hours of the sample centre are stored with the real writer and computed both ways; then
the hand-built edge cases of tests/test_kpi*.py (short abandons, calls still waiting, windows and
interval edges, FCR over 24 h, withheld numbers, DST days, IVR and call-back figures) and random
event logs go through both.  Same keys everywhere; floats equal to 1e-9 relative.
"""
from __future__ import annotations

import csv
import io
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from router.config.loader import load_config
from router.events import Event
from router.ivr.registry import load_flowset
from router.report import format_kpi_table, kpi_csv, kpi_json
from router.sim.simulator import Simulator
from router.store import run_tables
from router.store.kpi import compute_kpis
from router.store.kpi_memory import kpis_from_events
from router.store.writer import EventWriter
from tests.test_kpi import T0, Scenario, at, centre_scenario
from tests.test_kpi_local_time import local, secs, state

pytestmark = pytest.mark.asyncio(loop_scope="session")


def assert_same(sql: Any, twin: Any, where: str = "kpis") -> None:
    """Equal structure and keys; floats to 1e-9 relative."""
    if isinstance(sql, dict):
        assert isinstance(twin, dict), where
        assert set(sql) == set(twin), f"{where}: keys {set(sql) ^ set(twin)}"
        for key in sql:
            assert_same(sql[key], twin[key], f"{where}.{key}")
    elif isinstance(sql, list):
        assert isinstance(twin, list) and len(sql) == len(twin), where
        for n, (a, b) in enumerate(zip(sql, twin)):
            assert_same(a, b, f"{where}[{n}]")
    elif isinstance(sql, float):
        assert isinstance(twin, float) and twin == pytest.approx(sql, rel=1e-9), f"{where}: {sql} != {twin}"
    else:
        assert type(sql) is type(twin) and sql == twin, f"{where}: {sql!r} != {twin!r}"


def events_of(s: Scenario) -> list[Event]:
    return [Event(ts=ts.timestamp(), type=type_, call_id=call_id, queue=queue, agent=agent, data=json.loads(data),
                  serial=event_id.int)
            for event_id, ts, _, call_id, type_, queue, agent, data in s.rows]


async def both_ways(conn, s: Scenario, **options: Any) -> dict[str, Any]:
    """The SQL on the scenario's events in `events` and again in a run table of their own (the KPI
    statements have a form for each, router.store.run_tables), each equal to the twin's."""
    sql = await compute_kpis(conn, run=s.run, **options)
    assert_same(sql, kpis_from_events(events_of(s), run=s.run, **options))
    label = f"{s.run}:own-table"
    if await run_tables.own_table(conn, label) is None:
        table = await run_tables.create_run_table(conn, label)
        await conn.executemany(f'INSERT INTO "{table}" (id, ts, run, call_id, type, queue, agent, data) '
                               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
                               [(row[0], row[1], label, *row[3:]) for row in s.rows])
        await run_tables.analyze_run(conn, label)
    assert_same(await compute_kpis(conn, run=label, **options),
                kpis_from_events(events_of(s), run=label, **options), "kpis in a run table")
    return sql


def evaluation(rng: random.Random, t: float, call_id: str | None, queue: str | None, agent: str | None) -> Event:
    """A `qa.evaluated` event as the quality page writes it, by one of three evaluators."""
    return Event(ts=t, type="qa.evaluated", call_id=call_id, queue=queue, agent=agent,
                 data={"evaluation_id": str(uuid.uuid4()), "scorecard": "service", "version": "v1",
                       "evaluator": rng.choice(["sue", "tom", "ann"]), "answers": {}, "comments": "",
                       "score": round(rng.uniform(0, 100), 2), "critical_failed": False})


def evaluations_of(events: list[Event], rng: random.Random) -> list[Event]:
    """Evaluations of some connected calls: one to four each (an evaluator may score a call twice,
    the latest counts), up to three days later (past any window end)."""
    return [evaluation(rng, e.ts + rng.uniform(60, 3 * 86400), e.call_id, e.queue, e.agent)
            for e in events if e.type == "call.connected" and rng.random() < 0.6
            for _ in range(rng.randint(1, 4))]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_simulated_hours_of_the_sample_centre(conn, database_url, tmp_path, seed):
    centre = load_config(None)
    sim = Simulator(centre, hours=2.0, seed=seed, flowset=load_flowset(centre))
    events = []
    while not sim.done:
        events.extend(sim.run(5_000))
    events += evaluations_of(events, random.Random(seed))
    run = f"sim:{uuid.uuid4()}"
    async with EventWriter(database_url, run=run, spool_dir=tmp_path / "spool") as writer:
        for event in events:
            await writer.put(event)
        await writer.flush()
    options = {"short_abandon_s": centre.short_abandon_s, "timezone": centre.timezone}
    whole = await compute_kpis(conn, run=run, **options)
    assert whole["offered"] > 200 and whole["agents"] and whole["ivr_nodes"]   # a real day's figures
    assert whole["evaluations"] > 50 and 0 < whole["quality_score"] < 100
    assert_same(whole, kpis_from_events(events, run=run, **options))
    moment = datetime.fromtimestamp(events[len(events) // 3].ts, timezone.utc)
    for extra in ({"interval_minutes": 15}, {"interval_minutes": 30, "start": moment - timedelta(minutes=7)},
                  {"interval_minutes": 60, "end": moment, "timezone": "Asia/Kathmandu"},
                  {"start": moment, "end": moment + timedelta(minutes=40), "now": moment + timedelta(minutes=1)}):
        sql = await compute_kpis(conn, run=run, **{**options, **extra})
        assert_same(sql, kpis_from_events(events, run=run, **{**options, **extra}))


async def test_the_centre_scenario_in_every_window(conn):
    s = centre_scenario()
    await s.save(conn)
    k = await both_ways(conn, s)
    assert (k["offered"], k["service_level"], k["occupancy"]) == (7, 0.4, 0.3042)      # test_kpi's figures
    for options in ({"interval_minutes": 15}, {"interval_minutes": 60, "short_abandon_s": 10},
                    {"start": at(100), "end": at(600), "interval_minutes": 30},
                    {"start": at(650).replace(tzinfo=None), "interval_minutes": 15, "timezone": "America/St_Johns"},
                    {"end": at(250), "now": at(245)}, {"start": at(5000)}):
        await both_ways(conn, s, **options)


async def test_fcr_first_joins_and_short_abandons(conn):
    s = Scenario()
    s.answered("c1", "sales", 0, wait=5, agent="a1", talk=60, caller="111")
    s.answered("c2", "sales", 60, wait=5, agent="a1", talk=60, caller="222")
    s.answered("c3", "sales", 120, wait=5, agent="a1", talk=60, caller=" Unknown ")
    s.abandoned("c4", "sales", 180, wait=3, caller="444")
    s.abandoned("c5", "sales", 240, wait=8, caller="555")
    s.joined("r1", "sales", 23 * 3600, caller="111")
    s.joined("r2", "sales", 25 * 3600, caller="222")
    s.joined("x1", "sales", 400)                                  # moved on before the window below
    s.event(420, "queue.overflowed", "x1", "sales", step=0, action="move", to="support", wait_s=20)
    s.joined("x1", "support", 420)
    await s.save(conn)
    k = await both_ways(conn, s, start=T0, end=at(3600))
    assert (k["fcr_rate"], k["short_abandoned"]) == (0.5, 1)
    await both_ways(conn, s, start=at(3600))
    await both_ways(conn, s, start=at(410), end=at(500), interval_minutes=15)
    await both_ways(conn, s, short_abandon_s=10, interval_minutes=60)


async def test_local_clocks_withheld_numbers_and_calls_not_judged(conn):
    nl = lambda h, m, sec=0: local("America/St_Johns", 2024, 3, 4, h, m, sec)  # noqa: E731
    s = Scenario()
    s.answered("c1", "billing", secs(nl(8, 12)), wait=5, agent="a1", talk=60, caller="anonymous")
    s.answered("c2", "billing", secs(nl(8, 35)), wait=12, agent="a1", talk=60, caller="+17095550100")
    s.answered("c3", "billing", secs(nl(8, 45)), wait=50, agent="a1", talk=60, caller="+17095550100")
    s.joined("c6", "billing", secs(nl(8, 57, 30)), caller="+17095550106")
    s.joined("c7", "billing", secs(nl(8, 57, 55)), caller="+17095550107")
    state(s, "a1", nl(8, 0), "available", "logged_out", 60)
    state(s, "a1", nl(8, 40), "paused", "available", 1500.0000015)        # a span that crosses an edge
    s.event(secs(nl(8, 58)), "agent.offered", "c6", "billing", "a1", ring_timeout_s=15)
    await s.save(conn)
    start = datetime(2024, 3, 4, 8, 10)
    k = await both_ways(conn, s, start=start, interval_minutes=30, timezone="America/St_Johns")
    assert k["intervals"][1]["end"] == "2024-03-04T08:58:00.000001-03:30"
    later = await both_ways(conn, s, start=start, timezone="America/St_Johns", now=nl(8, 58, 20))
    assert later["service_level"] != k["service_level"]              # c7 judged by `now`
    await both_ways(conn, s, interval_minutes=15, timezone="Asia/Kathmandu")


@pytest.mark.parametrize("day, hours", [((2024, 3, 31), 23), ((2024, 10, 27), 25)], ids=["spring", "autumn"])
async def test_dst_days(conn, day, hours):
    zone = ZoneInfo("Europe/London")
    midnight = datetime(*day, tzinfo=zone).astimezone(timezone.utc)
    s = Scenario()
    begin = midnight + timedelta(minutes=30)
    state(s, "a1", begin, "available", "logged_out", 60)
    state(s, "a1", begin + timedelta(hours=2), "on_call", "available", 7200)
    for hour in range(hours):
        s.answered(f"c{hour}", "sales", secs(midnight + timedelta(hours=hour, minutes=5)), wait=hour,
                   agent="a2", talk=100, wrap=10, caller=f"+44{hour % 5}")
    await s.save(conn)
    k = await both_ways(conn, s, start=datetime(*day), interval_minutes=60, timezone="Europe/London")
    assert len(k["intervals"]) == hours
    await both_ways(conn, s, start=datetime(*day), interval_minutes=15, timezone="Europe/London")


async def test_ivr_callbacks_and_agent_first_legs(conn):
    s = Scenario()
    s.event(0, "ivr.node", "q1", flow="main", node="welcome")
    s.event(8, "ivr.node", "q1", flow="main", node="main_menu")
    s.event(40, "ivr.ended", "q1", flow="main", node="billing_queue", outcome="queued")
    s.answered("q1", "billing", 40, wait=10, agent="a1", talk=100)
    s.event(200, "ivr.node", "q1", flow="survey", node="csat")
    s.event(230, "ivr.ended", "q1", flow="survey", node="thanks", outcome="completed")
    s.event(100, "ivr.node", "h1", flow="main", node="welcome")
    s.event(120, "ivr.ended", "h1", flow="main", node="welcome", outcome="hangup")
    s.event(300, "ivr.node", "t1", flow="main", node="main_menu")
    s.event(350, "ivr.ended", "t1", flow="main", node="main_menu", outcome="timeout")
    s.ivr_ended("i1", 360, "completed")
    s.joined("k1", "sales", 0, caller="111")
    s.event(10, "callback.accepted", "k1", "sales", number="111")
    s.event(95, "callback.dialing", "k1", "sales", "a1", number="111", attempt=1)
    s.event(100, "agent.state", "k1", None, "a1", state="on_call", previous="reserved", previous_s=5, team="blue")
    s.event(125, "call.connected", "k1", "sales", "a1", wait_s=125, team="blue", skills_met=True)
    s.event(185, "call.ended", "k1", "sales", "a1", outcome="answered", talk_s=60)
    s.event(185, "agent.state", "k1", None, "a1", state="wrap_up", previous="on_call", previous_s=85, team="blue")
    s.event(200, "agent.state", "k1", None, "a1", state="available", previous="wrap_up", previous_s=15,
            team="blue")
    s.event(310, "callback.connected", "k1", "sales", "a1", number="111", attempt=1, kept_wait_s=300.0)
    s.joined("w1", "support", 20)
    s.event(30, "call.connected", "w1", "support", "a2", wait_s=10, team="red")      # still talking
    s.survey("q1", "billing", "a1", 231, "nps", 8)
    s.survey("q1", None, "a1", 232, "csat", 4)
    await s.save(conn)
    k = await both_ways(conn, s)
    assert (k["ivr_calls"], k["callback_kept_wait_s"], k["agents"]["a2"]["aht_s"]) == (3, 300.0, None)
    await both_ways(conn, s, end=at(200), interval_minutes=15)
    await both_ways(conn, s, start=at(35), interval_minutes=60)


async def test_quality_figures_by_hand(conn):
    """The centre scenario's answered calls evaluated: latest per evaluator, mean per call, mean of calls."""
    s = centre_scenario()
    scored = lambda t, call, queue, agent, evaluator, score: s.event(    # noqa: E731
        t, "qa.evaluated", call, queue, agent, evaluation_id=str(uuid.uuid4()), scorecard="service",
        version="v1", evaluator=evaluator, answers={}, comments="", score=score, critical_failed=score == 0)
    scored(2000, "c1", "sales", "a1", "sue", 80.0)
    scored(2100, "c1", "sales", "a1", "sue", 90.0)                  # sue's latest: 90
    scored(2200, "c1", "sales", "a1", "tom", 70.0)                  # c1 = (90 + 70) / 2 = 80
    scored(2300, "c2", "sales", "a2", "sue", 50.0)                  # c2 = 50
    scored(90000, "c7", "sales", "a2", "tom", 0.0)                  # c7 = 0 (a day later; entry queue support)
    s.event(2400, "qa.evaluated", "c6", "sales", "a1", evaluator="sue", comments="no score: not counted")
    await s.save(conn)
    k = await both_ways(conn, s, interval_minutes=60)
    assert (k["quality_score"], k["evaluations"]) == (43.33, 4)    # (80 + 50 + 0) / 3
    assert {q: (f["quality_score"], f["evaluations"]) for q, f in k["queues"].items()} == {
        "sales": (65.0, 3), "support": (0.0, 1)}
    assert {a: (f["quality_score"], f["evaluations"]) for a, f in k["agents"].items()} == {
        "a1": (80.0, 2), "a2": (25.0, 2)}
    assert {t: (f["quality_score"], f["evaluations"]) for t, f in k["teams"].items()} == {
        "blue": (80.0, 2), "red": (25.0, 2)}
    assert (k["intervals"][0]["quality_score"], k["intervals"][0]["queues"]["support"]["evaluations"]) == (43.33, 1)
    rows = {(r["scope"], r["id"]): r for r in csv.DictReader(io.StringIO(kpi_csv(k)))}
    assert [(rows[key]["quality_score"], rows[key]["evaluations"]) for key in
            [("total", ""), ("queue", "sales"), ("agent", "a2"), ("team", "blue")]] == [
        ("43.33", "4"), ("65.0", "3"), ("25.0", "2"), ("80.0", "2")]
    assert json.loads(kpi_json(k))["queues"]["support"]["quality_score"] == 0.0
    table = format_kpi_table(k).splitlines()
    assert [line.split()[-1] for line in table if line.split()[:1] in (["blue"], ["support"], ["TOTAL"])] == [
        "0.0", "43.3", "80.0"]                                     # the QA column, last
    later = await both_ways(conn, s, start=at(100), interval_minutes=15)    # only c7 joined in the window
    assert (later["quality_score"], later["evaluations"], later["agents"]["a1"]["evaluations"]) == (0.0, 1, 0)


async def test_an_empty_run(conn):
    s = Scenario()
    await both_ways(conn, s, interval_minutes=15)
    await both_ways(conn, s, start=T0, interval_minutes=30)


@pytest.mark.parametrize("seed", range(6))
async def test_random_logs(conn, seed):
    """Agents' states, answered, abandoned, moved and surveyed calls at random instants."""
    rng = random.Random(seed)
    s = Scenario()
    begin = T0 + timedelta(days=27, seconds=rng.uniform(0, 3600))       # around London's spring change
    for agent in ("a1", "a2", "a3"):
        t, current = begin + timedelta(seconds=rng.uniform(0, 3600)), "logged_out"
        previous_at = t - timedelta(seconds=rng.uniform(0, 100))
        for _ in range(rng.randint(3, 15)):
            new = rng.choice(["available", "on_call", "wrap_up", "paused", "reserved", "available"])
            state(s, agent, t, new, current, (t - previous_at).total_seconds())
            current, previous_at = new, t
            t += timedelta(seconds=rng.uniform(0.0001, 2400))
    for n in range(rng.randint(10, 60)):
        joined = secs(begin) + rng.uniform(0, 6 * 3600)
        queue, caller = rng.choice(["q1", "q2"]), rng.choice(["", "anonymous", "+1", "+2", "+3"])
        kind = rng.random()
        if kind < 0.5:
            s.answered(f"c{n}", queue, joined, wait=rng.uniform(0, 60), agent=rng.choice(["a1", "a2", "b1"]),
                       talk=rng.uniform(30, 600), wrap=rng.choice([0, 20.5]), caller=caller,
                       team=rng.choice(["blue", "red"]))
            if rng.random() < 0.4:
                s.survey(f"c{n}", queue, "a1", joined + 900, rng.choice(["csat", "nps"]), rng.randint(0, 10))
        elif kind < 0.8:
            s.abandoned(f"c{n}", queue, joined, wait=rng.uniform(0, 90), caller=caller)
        else:
            s.joined(f"c{n}", queue, joined, caller=caller)
            if rng.random() < 0.5:
                s.event(joined + 30, "queue.overflowed", f"c{n}", queue, step=0, action="copy", to="q3", wait_s=30)
                s.joined(f"c{n}", "q3", joined + 30, caller=caller)
    for e in evaluations_of(events_of(s), random.Random(1000 + seed)):
        s.event(secs(datetime.fromtimestamp(e.ts, timezone.utc)), e.type, e.call_id, e.queue, e.agent, **e.data)
    await s.save(conn)
    cut = rng.uniform(0, 3 * 3600)
    await both_ways(conn, s)
    for width in (15, 30, 60):
        zone = rng.choice(["UTC", "Asia/Kathmandu", "America/St_Johns", "Europe/London"])
        await both_ways(conn, s, start=begin + timedelta(seconds=cut),
                        end=begin + timedelta(seconds=cut + rng.uniform(600, 5 * 3600)),
                        interval_minutes=width, timezone=zone, short_abandon_s=rng.choice([5.0, 10.0]))


@pytest.mark.parametrize("draw", range(4))
async def test_ties_of_ts_are_broken_by_the_event_id(conn, draw):
    """Two first joins, or two last states of an agent, at the same instant: the smaller / larger id wins."""
    s = Scenario()
    s.joined("c1", "sales", 0, caller="111")
    s.joined("c1", "support", 0, caller="111")                   # the same instant: entry queue by id
    s.connected("c1", "sales", 10, wait=10, agent="a1", talk=50, wrap=5)
    state(s, "a1", at(100), "available", "wrap_up", 35)
    state(s, "a1", at(100), "paused", "wrap_up", 35)             # the last state at one instant: by id
    s.joined("c2", "support", 200)
    await s.save(conn)
    k = await both_ways(conn, s, end=at(900), interval_minutes=15)
    assert k["offered"] == 2 and "support" in k["queues"]         # c1 in sales or support, by its ids


async def test_an_agent_connected_twice_an_end_for_no_agent_and_a_team_tie(conn):
    """The agent figures' edge cases, by hand and both ways: a1 is connected to c1 twice (each
    connection counts, with the call's whole talk and a1's whole handle time), c1 also has a
    call.ended for no agent (its talk counts for a1), and a2's team is seen on a call.connected and an
    agent.state at the same instant (the least team wins, wherever it comes in the log: the twin took
    the last one seen until this test), and a3's on two calls connected at the same instant."""
    s = Scenario()
    s.joined("c1", "sales", 0, caller="111")
    s.event(10, "call.connected", "c1", "sales", "a1", wait_s=10, team="red", skills_met=True)
    s.event(40, "agent.state", "c1", None, "a1", state="available", previous="on_call", previous_s=30, team="red")
    s.event(50, "call.connected", "c1", "sales", "a1", wait_s=50, team="red", skills_met=False)
    s.event(70, "call.ended", "c1", "sales", None, outcome="answered", talk_s=60)
    s.event(70, "call.ended", "c1", "sales", "a1", outcome="answered", talk_s=20)
    s.event(70, "agent.state", "c1", None, "a1", state="wrap_up", previous="on_call", previous_s=20, team="red")
    s.event(75, "agent.state", "c1", None, "a1", state="available", previous="wrap_up", previous_s=5, team="red")
    s.event(100, "agent.state", None, None, "a1", state="paused", previous="available", previous_s=25, team="blue")
    s.joined("c2", "sales", 150, caller="222")
    s.event(200, "call.connected", "c2", "sales", "a2", wait_s=50, team="red", skills_met=True)
    s.event(200, "agent.state", "c2", None, "a2", state="on_call", previous="reserved", previous_s=1, team="blue")
    s.event(200, "agent.state", "c2", None, "a2", state="on_call", previous="reserved", previous_s=0, team="green")
    s.event(230, "call.ended", "c2", "sales", "a2", outcome="answered", talk_s=30)
    s.event(230, "agent.state", "c2", None, "a2", state="available", previous="on_call", previous_s=30)   # no team
    for call, team in (("c3", "yellow"), ("c4", "orange")):     # a3: two calls connected at one instant
        s.joined(call, "sales", 250, caller="333")
        s.event(260, "call.connected", call, "sales", "a3", wait_s=10, team=team, skills_met=True)
    await s.save(conn)
    k = await both_ways(conn, s)
    a1, a2 = k["agents"]["a1"], k["agents"]["a2"]
    assert k["agents"]["a3"]["team"] == "orange"          # the least of the teams seen at its latest time
    assert (a1["team"], a1["answered"], a1["talk_s"], a1["aht_s"], a1["routing_accuracy"]) == ("blue", 2, 160.0, 55.0, 0.5)
    assert (a2["team"], a2["answered"], a2["talk_s"], a2["aht_s"]) == ("blue", 1, 30.0, 30.0)
    assert k["queues"]["sales"]["aht_s"] == 42.5          # per call: c1 55, c2 30
    assert set(k["teams"]) == {"blue", "orange"} and k["teams"]["blue"]["answered"] == 3


async def test_an_agent_silent_since_before_the_window_is_in_its_last_state_all_through_it(conn):
    """a1's last state change is before the window: its state (available) runs through the whole
    window, from the rows before the window (the states statement reads those only for such agents);
    a2 changes state inside the window.  By hand, then both ways."""
    s = Scenario()
    state(s, "a1", at(0), "available", "logged_out", 0)
    state(s, "a1", at(10), "paused", "available", 10)
    state(s, "a1", at(20), "available", "paused", 10)              # a1's last change
    state(s, "a2", at(0), "available", "logged_out", 0)
    state(s, "a2", at(150), "on_call", "available", 150)
    state(s, "a2", at(200), "available", "on_call", 50)
    await s.save(conn)
    k = await both_ways(conn, s, start=at(100), end=at(300))
    assert k["staffed_s"] == 200 + 200 and k["busy_s"] == 50 and k["occupancy"] == round(50 / 400, 4)
    assert k["agents"]["a1"]["occupancy"] is None                   # never busy: no busy time at all
    assert k["agents"]["a2"]["occupancy"] == 0.25
