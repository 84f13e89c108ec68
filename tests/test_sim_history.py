"""A history to learn from (`simulate --days N`): whole local days, each playing the arrival profile
once, scaled by weekday and trend, overdispersed by a Gamma factor, cut while a queue is closed; shifts
repeat every day; a named run label is never mixed with another run's events.

Statistical checks use a fixed seed and tolerances of about four standard errors derived from the
Poisson or negative binomial variance, so they fail only if the model is wrong."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from router.cli import main
from router.config import ConfigError, load_config, parse_config
from router.config.model import Break, Distribution, IvrTraffic, Shift, Simulation
from router.ivr import load_flowset
from router.schedules import is_open
from router.sim import traffic
from router.sim.run import RunExists, simulate_day
from router.sim.simulator import Simulator
from tests.factories import centre, queue

REPO = Path(__file__).resolve().parent.parent
UTC = ZoneInfo("UTC")
MONDAY = datetime(2026, 11, 23, 8, 0)


def model(profile: tuple[float, ...], start: datetime = MONDAY, **history) -> Simulation:
    return Simulation(start=start, interval_minutes=30, arrivals={"billing": profile},
                      handle_time={"default": Distribution("exponential", 120.0)},
                      patience={"default": Distribution("exponential", 300.0)}, **history)


def daily_totals(arrivals: list[traffic.Arrival], days: list[traffic.Day]) -> list[int]:
    per_day = Counter(int((a.offset_s - days[0].offset_s) // 86_400) for a in arrivals)
    return [per_day[n] for n in range(len(days))]


# --- the traffic model ------------------------------------------------------------------------

def test_weekday_factors_and_the_weekly_trend_show_in_the_daily_totals():
    history = model((50.0,) * 4, weekdays={"mon": 1.5, "sat": 0.5, "sun": 0.0}, trend_per_week=0.1)
    days = traffic.history_days(history, 28, UTC)
    totals = daily_totals(traffic.history(history, days, seed=3), days)
    expected = [200.0 * traffic.day_factor(history, day) for day in days]
    assert expected[0] == 300.0 and expected[7] == pytest.approx(300.0 * 1.1)        # Mondays
    assert expected[5] == pytest.approx(100.0 * 1.1 ** (5 / 7))                      # compounding day by day
    for day, count, mean in zip(days, totals, expected):
        if mean == 0:
            assert count == 0, day                          # Sunday: nobody calls
        else:
            assert abs(count - mean) <= 4.5 * math.sqrt(mean), (day, count, mean)   # Poisson: var = mean
    last_week, no_trend = sum(totals[21:]), sum(expected[:7])
    assert abs(last_week - sum(expected[21:])) <= 4.5 * math.sqrt(sum(expected[21:]))
    assert last_week - no_trend > 10 * math.sqrt(no_trend)  # 1.1^3 = +33 %: far outside Poisson noise


@pytest.mark.parametrize("k", [0.0, 0.05])
def test_overdispersion_makes_interval_counts_negative_binomial_with_the_configured_variance(k):
    lam = 20.0
    history = model((lam,) * 48, start=datetime(2026, 11, 23, 0, 0), overdispersion=k)   # the whole day
    days = traffic.history_days(history, 60, UTC)
    cells = Counter(int(a.offset_s // 1800) for a in traffic.history(history, days, seed=5))
    counts = [cells[n] for n in range(60 * 48)]
    n = len(counts)
    mean = sum(counts) / n
    variance = sum((c - mean) ** 2 for c in counts) / (n - 1)
    fourth = sum((c - mean) ** 4 for c in counts) / n
    standard_error = math.sqrt((fourth - variance ** 2) / n)   # of the sample variance
    assert abs(mean - lam) <= 4 * math.sqrt((lam + k * lam ** 2) / n)
    assert abs(variance - (lam + k * lam ** 2)) <= 4 * standard_error, (variance, standard_error)
    if k:
        assert variance - lam > 10 * standard_error            # clearly more than Poisson's lambda


def test_a_queue_gets_direct_calls_only_while_open_but_the_ivr_line_always_does():
    sample = load_config(None)                                 # office: 25 Dec; spain: 8 and 25 Dec
    sim = Simulator(sample, days=33, seed=2, flowset=load_flowset(sample))
    per_day = Counter((datetime.fromtimestamp(sim.start + a.offset_s, UTC).date(), a.queue or "ivr")
                      for a in sim.arrivals)                   # the sample centre's zone is UTC
    christmas, eve, spanish_holiday = date(2026, 12, 25), date(2026, 12, 24), date(2026, 12, 8)
    for line in ("billing", "support", "sales", "general", "spanish"):
        assert per_day[(christmas, line)] == 0, line
        assert per_day[(eve, line)] > 0, line
    assert per_day[(christmas, "ivr")] > 100                   # the flow tells them the centre is closed
    assert per_day[(spanish_holiday, "spanish")] == 0 and per_day[(spanish_holiday, "billing")] > 0
    closed_hours = [a for a in sim.arrivals if a.queue is not None and not is_open(
        sample.schedules[sample.queues[a.queue].schedule], datetime.fromtimestamp(sim.start + a.offset_s, UTC))]
    assert not closed_hours                                    # nor after hours (Saturday 13:00, Spanish lunch)
    saturday = date(2026, 11, 28)
    assert per_day[(saturday, "billing")] > 0 and per_day[(saturday, "spanish")] == 0


def test_each_day_plays_the_profile_once_from_the_start_time_without_wrapping():
    history = model((10.0, 20.0, 30.0, 40.0))                  # 08:00-10:00
    days = traffic.history_days(history, 5, ZoneInfo("Europe/London"))
    arrivals = traffic.history(history, days, seed=1)
    base = datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo("Europe/London")).timestamp()
    local = [datetime.fromtimestamp(base + a.offset_s, ZoneInfo("Europe/London")) for a in arrivals]
    assert all(time(8) <= moment.time() < time(10) for moment in local)
    assert {moment.date() for moment in local} == {date(2026, 11, 23) + timedelta(days=n) for n in range(5)}
    with pytest.raises(ValueError, match="runs past midnight"):
        traffic.history_days(model((1.0,) * 6, start=datetime(2026, 11, 23, 22, 0)), 2, UTC)


def test_history_days_follow_the_local_clock_across_a_daylight_saving_change():
    history = model((10.0,) * 4, start=datetime(2026, 3, 28, 8, 0))     # London springs forward on 29 March
    days = traffic.history_days(history, 3, ZoneInfo("Europe/London"))
    assert [d.offset_s / 3600 for d in days] == [0.0, 23.0, 47.0]


def test_default_keys_leave_a_run_of_hours_drawing_the_same_calls_as_before():
    """Digests of `traffic.arrivals` for the sample centre taken before the history keys existed
    (commit c4628a4); the sample now has weekdays, trend and overdispersion, which only days use."""
    sample = load_config(None)

    def digest(arrivals: list[traffic.Arrival]) -> str:
        text = repr([(a.offset_s, a.queue, a.caller_id) for a in arrivals])
        return hashlib.sha256(text.encode()).hexdigest()

    day = traffic.arrivals(sample.simulation, 8.0, 7)
    assert (len(day), digest(day)) == (1410, "a67428247c110148aa8d5cd272fbb51197a1efadce55cfe66fbd0a8f671b18da")
    late = traffic.arrivals(sample.simulation, 3.0, 7, phase_s=3000.0)
    assert (len(late), digest(late)) == (604, "6f9ebe13b6ac238e988e492567a743319fb67089bf26a4b3dd7953fe5d9869e9")
    assert sample.simulation.weekdays["mon"] != 1.0 and sample.simulation.overdispersion > 0


def test_an_ivr_line_follows_weekdays_and_trend_and_each_day_has_its_own_callers():
    history = replace(model((5.0,) * 4, weekdays={"sun": 0.0}, trend_per_week=0.5),
                      ivr=IvrTraffic(flow="main", arrivals=(40.0,) * 4))
    days = traffic.history_days(history, 14, UTC)
    ivr = [a for a in traffic.history(history, days, seed=4, closed=lambda queue, offset_s: offset_s < 2 * 86_400)
           if a.queue is None]
    totals = daily_totals(ivr, days)
    assert totals[1] > 0 and totals[6] == totals[13] == 0
    assert abs(totals[7] + totals[8] - 2 * 160 * 1.5) <= 4.5 * math.sqrt(2 * 160 * 1.5)
    first_day = {a.caller_id for a in ivr if a.offset_s < 86_400}
    second_day = {a.caller_id for a in ivr if 86_400 <= a.offset_s < 2 * 86_400}
    assert first_day and second_day and not first_day & second_day


# --- the simulator over days --------------------------------------------------------------------

def night_centre():
    """Two agents on a night shift (20:00-02:00, break 23:00) and calls 22:00-24:00 of 20 min each,
    so calls are in progress at every midnight and at the end of the run."""
    c = centre({"a0": {"billing": 5}, "a1": {"billing": 5}}, [queue("billing", {"billing": 1})])
    history = replace(model((3.0,) * 4, start=datetime(2026, 11, 23, 22, 0)),
                      handle_time={"default": Distribution("fixed", 1200.0)},
                      shifts=(Shift(("a0", "a1"), time(20, 0), time(2, 0), (Break(time(23, 0), 10),)),))
    return replace(c, simulation=history)


def test_shifts_and_breaks_repeat_every_day_and_calls_over_midnight_end_cleanly():
    sim = Simulator(night_centre(), days=3, seed=6)
    events = []
    while not sim.done:
        events += sim.run(5_000)
    assert sim.refused == 0
    local = lambda e: datetime.fromtimestamp(e.ts, timezone.utc)      # noqa: E731 (the centre is UTC)
    states = [(local(e), e.data["state"], e.data.get("reason")) for e in events if e.type == "agent.state"]
    logins = Counter(moment.date() for moment, state, _ in states
                     if state == "available" and moment.time() == time(20, 0))
    breaks = Counter(moment.date() for moment, state, reason in states   # from 23:00, or when the call ends
                     if state == "paused" and reason == "break" and time(23) <= moment.time())
    first = date(2026, 11, 23)
    assert logins == {first + timedelta(days=n): 2 for n in (1, 2)}    # day 1 starts at 22:00: logged in then
    assert set(breaks) == {first + timedelta(days=n) for n in range(3)}
    arrived = [e.call_id for e in events if e.type == "call.arrived"]
    ended = Counter(e.call_id for e in events if e.type == "call.ended")
    assert len(arrived) == len(sim.arrivals) > 20 and all(ended[c] == 1 for c in arrived)
    connected = {e.call_id: local(e) for e in events if e.type == "call.connected"}
    over_midnight = [e for e in events if e.type == "call.ended" and e.call_id in connected
                     and local(e).date() > connected[e.call_id].date()]
    assert over_midnight                                    # talk went on past the day's end
    assert not sim.engine.calls


def test_a_run_of_days_starts_at_the_configured_start():
    with pytest.raises(ValueError, match="starts at simulation.start"):
        Simulator(night_centre(), days=2, start=datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc))


# --- config -----------------------------------------------------------------------------------

BASE = """\
skills: [{id: en}]
agents: [{id: a1, endpoint: PJSIP/1001, skills: {en: 5}}]
queues: [{id: q, skills: {en: 1}}]
simulation:
  start: "2026-11-23T08:00:00"
  arrivals: {q: [1]}
  handle_time: {default: {dist: fixed, mean_s: 60}}
  patience: {default: {dist: fixed, mean_s: 60}}
"""


def test_history_keys_are_read_and_default_to_a_plain_profile():
    plain = parse_config(BASE, environ={}).simulation
    assert (plain.weekdays, plain.trend_per_week, plain.overdispersion) == ({}, 0.0, 0.0)
    read = parse_config(BASE + "  weekdays: {mon: 1.2, sun: 0}\n  trend_per_week: -0.02\n"
                               "  overdispersion: 0.1\n", environ={}).simulation
    assert (read.weekdays, read.trend_per_week, read.overdispersion) == ({"mon": 1.2, "sun": 0.0}, -0.02, 0.1)


def test_weekdays_must_be_a_mapping_of_weekdays():
    """The other mistakes, with their positions, are tests/config_cases/bad_history.yaml."""
    with pytest.raises(ConfigError) as raised:
        parse_config(BASE + "  weekdays: [1, 2]\n", "h.yaml", environ={})
    assert str(raised.value) == "h.yaml:9:13: error: 'weekdays' of section 'simulation': expected a mapping, got a list"
    assert parse_config(BASE + "  weekdays:\n", environ={}).simulation.weekdays == {}


# --- storing a history under a named run ---------------------------------------------------------

SMALL_CENTRE = BASE.replace("arrivals: {q: [1]}", "arrivals: {q: [4, 6, 4]}") + """\
  weekdays: {sat: 0.5, sun: 0}
  shifts: [{agents: [a1], start: "08:00", end: "10:00"}]
"""


async def test_a_named_run_is_refused_when_it_has_events_and_replaced_on_request(database_url):
    small = parse_config(SMALL_CENTRE, environ={})
    first = await simulate_day(small, database_url, days=3, seed=1, run="history-a", show_progress=False)
    assert first["simulation"]["run"] == "history-a" and first["simulation"]["days"] == 3
    assert first["offered"] == first["simulation"]["calls"] > 10
    with pytest.raises(RunExists, match="already has events"):
        await simulate_day(small, database_url, days=3, seed=2, run="history-a", show_progress=False)
    with pytest.raises(RunExists, match="reserved"):
        await simulate_day(small, database_url, days=1, run="live", show_progress=False)
    again = await simulate_day(small, database_url, days=3, seed=2, run="history-a", replace=True,
                               show_progress=False)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM events WHERE run = 'history-a' AND type = 'call.arrived'")
    finally:
        await conn.close()
    assert stored == again["simulation"]["calls"] != first["simulation"]["calls"]   # the old run is gone


def test_simulate_days_from_the_command_line(database_url, tmp_path):
    config = tmp_path / "router.yaml"
    config.write_text(SMALL_CENTRE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url}

    def acd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "router", "simulate", "--config", str(config), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    done = acd("--days", "7", "--run", "cli-history", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    summary = result["simulation"]
    assert (summary["days"], summary["run"]) == (7, "cli-history") and summary["calls"] > 30
    assert result["offered"] == summary["calls"] and "service_level" in result["queues"]["q"]
    refused = acd("--days", "7", "--run", "cli-history", "--json")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "run 'cli-history' already has events" in refused.stderr
    assert acd("--days", "7", "--run", "cli-history", "--replace", "--json").returncode == 0


def test_days_and_hours_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as leaving:
        main(["simulate", "--days", "2", "--hours", "3"])
    assert leaving.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
