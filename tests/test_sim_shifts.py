"""Shifts and breaks are times of day: a run (the demo's "now", or any start) logs in the
shifts under way, skips what is over, crosses midnight and repeats every day; nothing the
simulator schedules for itself makes the engine refuse an input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time as wallclock
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from router.config import load_config
from router.config.model import Break, Shift
from router.engine.agents import AgentState
from router.ivr import load_flowset
from router.sim.simulator import Simulator
from tests.test_simulation import mmc_centre

REPO = Path(__file__).resolve().parent.parent
SAMPLE = load_config(None)
UTC = timezone.utc


def state(sim: Simulator, agent: str) -> tuple[AgentState, str | None]:
    runtime = sim.engine.agents[agent]
    return runtime.state, runtime.reason


def at(sim: Simulator, moment: datetime) -> Simulator:
    sim.run_until(moment.timestamp())
    return sim


def test_a_run_that_starts_mid_shift_logs_in_the_shift_under_way_and_its_break():
    start = datetime(2026, 11, 23, 10, 50, tzinfo=UTC)     # a013-a017: 08:00-12:00, break 10:45 for 15 min
    sim = at(Simulator(SAMPLE, hours=4, seed=1, flowset=load_flowset(SAMPLE), start=start), start)
    assert state(sim, "a013") == (AgentState.PAUSED, "break")
    assert state(sim, "a001")[0] is not AgentState.LOGGED_OUT          # 08:00-16:00, no break under way
    assert state(sim, "a031")[0] is AgentState.LOGGED_OUT              # 12:00-20:00, not begun
    assert state(at(sim, start.replace(hour=11, minute=1)), "a013")[0] is not AgentState.PAUSED
    at(sim, start.replace(hour=12, minute=1))
    assert state(sim, "a013")[0] is AgentState.LOGGED_OUT
    assert state(sim, "a031")[0] is not AgentState.LOGGED_OUT
    assert sim.refused == 0


def test_a_night_shift_runs_past_midnight_and_repeats_every_day():
    c = mmc_centre(2, 0.0, 120.0)                                  # no calls: states are the shifts' alone
    night = Shift(("a0", "a1"), time(22, 0), time(6, 0), (Break(time(2, 0), 15),))
    c = replace(c, simulation=replace(c.simulation, shifts=(night,)))
    start = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    sim = Simulator(c, hours=50, seed=1, start=start)
    expected = [(timedelta(0), AgentState.AVAILABLE), (timedelta(hours=1, minutes=5), AgentState.PAUSED),
                (timedelta(hours=1, minutes=20), AgentState.AVAILABLE),
                (timedelta(hours=5, minutes=1), AgentState.LOGGED_OUT),
                (timedelta(hours=21, minutes=1), AgentState.AVAILABLE),
                (timedelta(hours=25, minutes=5), AgentState.PAUSED),
                (timedelta(hours=29, minutes=1), AgentState.LOGGED_OUT),
                (timedelta(hours=45, minutes=1), AgentState.AVAILABLE)]
    for offset, wanted in expected:
        at(sim, start + offset)
        assert {state(sim, agent)[0] for agent in ("a0", "a1")} == {wanted}, offset
    while not sim.done:
        sim.run(10_000)
    assert sim.refused == 0


def test_shift_times_are_local_times_of_the_centres_zone():
    c = mmc_centre(1, 4.0, 60.0)
    c = replace(c, timezone="Asia/Kathmandu",                    # +05:45
                simulation=replace(c.simulation, shifts=(Shift(("a0",), time(9, 0), time(17, 0)),)))
    start = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    sim = Simulator(c, hours=24, seed=1, start=start)
    assert state(at(sim, start + timedelta(hours=3, minutes=14)), "a0")[0] is AgentState.LOGGED_OUT
    assert state(at(sim, start + timedelta(hours=3, minutes=16)), "a0")[0] is not AgentState.LOGGED_OUT
    assert state(at(sim, start + timedelta(hours=11, minutes=16)), "a0")[0] is AgentState.LOGGED_OUT


def test_a_refused_input_of_the_simulator_is_counted_and_the_run_goes_on():
    c = mmc_centre(2, 10.0, 120.0)
    c = replace(c, simulation=replace(c.simulation, shifts=(Shift(("a0",), time(0, 0), time(2, 0)),)))
    sim = Simulator(c, hours=3, seed=1)
    sim._at(sim.start + 60, "login", "nobody")                    # no such agent: a bug of ours
    events = []
    while not sim.done:
        events += sim.run(10_000)
    assert sim.refused == 1
    assert events[-1].ts > sim.start + 2 * 3600                   # the run went on to its end


def test_a_supervisor_logs_an_agent_out_before_the_break_and_the_break_is_skipped():
    from router.engine.messages import AgentLogout
    c = mmc_centre(2, 10.0, 120.0)
    shift = Shift(("a0", "a1"), time(0, 0), time(2, 0), breaks=(Break(time(1, 0), 15),))
    c = replace(c, simulation=replace(c.simulation, shifts=(shift,)))
    sim = Simulator(c, hours=3, seed=1)
    sim.run_until(sim.start + 1800)
    sim.apply(AgentLogout("a1"), sim.start + 1800)          # the supervisor's input, between happenings
    while not sim.done:
        sim.run(10_000)
    assert sim.refused == 0
    assert sim.engine.agents["a1"].state is AgentState.LOGGED_OUT


def _sweep(zone_name: str, day: tuple[int, int, int], part: int) -> list[str]:
    """Every 15 minutes of a local day (every other one, from the `part`-th): a sample-centre run from
    there to 3 h past the day's end; what went wrong, one line each."""
    zone = ZoneInfo(zone_name)
    centre = replace(SAMPLE, timezone=zone_name)
    flowset = load_flowset(centre)
    midnight = datetime(*day, tzinfo=zone)
    day_end = datetime.combine(midnight.date() + timedelta(days=1), time(0), tzinfo=zone).timestamp()
    problems = []
    moment = midnight.timestamp() + part * 900.0
    while moment < day_end:
        start = datetime.fromtimestamp(moment, UTC)
        sim = Simulator(centre, hours=(day_end - moment) / 3600 + 3, seed=int(moment) % 97, flowset=flowset,
                        start=start)
        sim.run_until(sim.start)
        local = start.astimezone(zone)
        for shift in centre.simulation.shifts:
            shift_day = local.date() - timedelta(days=local.time() < shift.start and shift.end <= shift.start)
            begin = datetime.combine(shift_day, shift.start, tzinfo=zone)
            finish = datetime.combine(shift_day + timedelta(days=shift.end <= shift.start), shift.end, tzinfo=zone)
            if begin.timestamp() <= moment < finish.timestamp():
                on_break = any(datetime.combine(shift_day, pause.at, tzinfo=zone).timestamp() <= moment
                               < datetime.combine(shift_day, pause.at, tzinfo=zone).timestamp() + pause.minutes * 60
                               for pause in shift.breaks)
                for agent in shift.agents:
                    if on_break and state(sim, agent) != (AgentState.PAUSED, "break"):
                        problems.append(f"{local:%H:%M}: {agent} should be on a break, is {state(sim, agent)}")
                    elif state(sim, agent)[0] is AgentState.LOGGED_OUT:
                        problems.append(f"{local:%H:%M}: {agent} should be logged in")
        while not sim.done:
            sim.run(50_000)
        if sim.refused:
            problems.append(f"{local:%H:%M}: {sim.refused} input(s) refused")
        moment += 1800.0
    return problems


@pytest.mark.parametrize("zone,day", [("UTC", (2026, 11, 23)), ("Europe/London", (2026, 3, 29)),
                                      ("America/New_York", (2026, 11, 1))],
                         ids=["utc", "london-spring-forward", "new-york-fall-back"])
def test_any_start_of_the_day_logs_in_the_shifts_under_way_and_no_input_is_refused(zone, day):
    with ProcessPoolExecutor(max_workers=2) as pool:
        parts = [pool.submit(_sweep, zone, day, part) for part in (0, 1)]
        problems = [line for part in parts for line in part.result()]
    assert problems == []


def test_the_demo_runs_a_minute_at_600x_from_three_times_of_day(database_url, tmp_path):
    """Morning before the shifts, mid-shift on a break (the crash of the demo issue), and late evening:
    ten simulated hours each, side by side; each stops cleanly on SIGINT with nothing refused."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": database_url}
    starts = ("06:40", "10:55", "21:30")
    demos = [subprocess.Popen([sys.executable, "-m", "router", "serve", "--speed", "600", "--web-port", "0", "--seed", str(n),
                               "--start", start, "--data-dir", str(tmp_path / start)],   # token, recordings
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for n, start in enumerate(starts)]
    wallclock.sleep(60)
    for demo in demos:
        demo.send_signal(signal.SIGINT)
    for start, demo in zip(starts, demos):
        _, stderr = demo.communicate(timeout=60)
        assert demo.returncode == 0, f"{start}: {stderr[-2000:]}"
        stopped = [line for line in stderr.splitlines() if '"demo stopped"' in line]
        assert stopped, f"{start}: {stderr[-2000:]}"
        summary = json.loads(stopped[0])
        assert summary["refused_inputs"] == 0 and summary["simulated_s"] > 9 * 3600, (start, summary)
        statuses = [line for line in stderr.splitlines() if '"event": "status"' in line]
        assert len(statuses) >= 5, f"{start}: the demo did not keep running"
        assert "Traceback" not in stderr
