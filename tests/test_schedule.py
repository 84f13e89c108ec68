"""`acd-router schedule`: CP-SAT shifts with breaks that cover a staffing plan.

Every roster is checked independently of the model: its shifts and breaks are expanded into
15-minute slots, and in each slot the agents on duty are matched to the plan's needs (a bipartite
matching, so an agent with several queues' skills counts once)."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from router.cli import main
from router.config import ConfigError, parse_config
from router.config.model import Centre
from router.planning.schedule import Roster, demand_from_plan, make_roster, roster_yaml

DAY = date(2026, 11, 23)
SLOT = 15

CENTRE = """\
skills:
  - {id: en, name: English, kind: language}
  - {id: billing, name: Billing}
  - {id: tech, name: Tech}
agents:
  - {id: b1, name: B One, endpoint: PJSIP/1, skills: {en: 8, billing: 7}}
  - {id: b2, name: B Two, endpoint: PJSIP/2, skills: {en: 8, billing: 6}}
  - {id: b3, name: B Three, endpoint: PJSIP/3, skills: {en: 8, billing: 2}}
  - {id: t1, name: T One, endpoint: PJSIP/4, skills: {en: 8, tech: 7}}
  - {id: t2, name: T Two, endpoint: PJSIP/5, skills: {en: 8, tech: 8}}
  - {id: m1, name: M One, endpoint: PJSIP/6, skills: {en: 8, billing: 6, tech: 6}}
queues:
  - {id: billing, name: Billing, skills: {billing: 5}}
  - {id: support, name: Support, skills: {tech: 5}}
simulation:
  start: "2026-11-23T08:00:00"
  interval_minutes: 30
  arrivals: {billing: [10, 10], support: [10, 10]}
  handle_time: {default: {dist: exponential, mean_s: 200}}
  patience: {default: {dist: exponential, mean_s: 100}}
"""

RULES = """\
planning:
  shifts:
    - name: short
      hours: 4
      starts: "07:00-10:00"
      every_min: 30
      breaks: [{minutes: 15, from_h: 1.5, to_h: 2.5}]
    - name: long
      hours: 6
      starts: "08:00-08:00"
      breaks:
        - {minutes: 15, from_h: 1, to_h: 3}
        - {minutes: 15, from_h: 1, to_h: 3}
"""


def centre(rules: str = RULES) -> Centre:
    return parse_config(CENTRE + rules, "centre.yaml")


def plan(needs: dict[str, dict[str, int]], key: str = "agents", zone: str = "UTC") -> dict:
    """A `staff --json`-like plan: queue -> {"HH:MM": agents} on DAY, 30-minute intervals."""
    tz = ZoneInfo(zone)
    return {"queues": {q: [{"start": datetime.combine(DAY, time.fromisoformat(at), tz).isoformat(),
                            "offered": 10, key: agents} for at, agents in sorted(rows.items())]
                       for q, rows in needs.items()}}


def halfhours(first: str, last: str, agents: int) -> dict[str, int]:
    """`agents` in every 30-minute interval from `first` to `last` inclusive."""
    at, end = datetime.combine(DAY, time.fromisoformat(first)), datetime.combine(DAY, time.fromisoformat(last))
    rows = {}
    while at <= end:
        rows[f"{at:%H:%M}"] = agents
        at += timedelta(minutes=30)
    return rows


def solve(c: Centre, needs: dict[str, dict[str, int]]) -> Roster:
    demand = demand_from_plan(plan(needs), c.timezone, default_interval=c.simulation.interval_minutes)
    return make_roster(c, demand, time_limit_s=10, workers=2)


def minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def on_duty(roster: Roster) -> dict[int, set[str]]:
    """Slot (minutes after midnight) -> agents logged in and not on a break, from the shifts alone."""
    duty: dict[int, set[str]] = {}
    for shift in roster.shifts:
        off = {at for pause in shift.breaks
               for at in range(minutes(pause.at), minutes(pause.at) + int(pause.minutes), SLOT)}
        for at in range(minutes(shift.start), minutes(shift.end), SLOT):
            if at not in off:
                duty.setdefault(at, set()).update(shift.agents)
    return duty


def served(c: Centre, agents: set[str], needs: dict[str, int]) -> int:
    """Most of `needs` (queue -> agents) these agents can meet at once, each serving one queue."""
    seats = [q for q, n in needs.items() for _ in range(n)]
    names = sorted(agents)
    if not seats or not names:
        return 0
    rows = [[1 if all(c.agents[a].skills.get(s, 0) >= m for s, m in c.queues[q].skills.items()) else 0
             for q in seats] for a in names]
    matched = maximum_bipartite_matching(csr_matrix(np.array(rows)), perm_type="column")
    return int((matched >= 0).sum())


def needs_at(needs: dict[str, dict[str, int]], at: int) -> dict[str, int]:
    interval = f"{at // 30 * 30 // 60:02d}:{at // 30 * 30 % 60:02d}"
    return {q: rows.get(interval, 0) for q, rows in needs.items()}


def test_coverage_holds_in_every_slot_and_breaks_lie_in_their_windows() -> None:
    c = centre()
    needs = {"billing": halfhours("08:00", "11:30", 2), "support": {**halfhours("08:00", "11:30", 1),
                                                                    **halfhours("09:00", "10:30", 2)}}
    roster = solve(c, needs)
    assert roster.status == "OPTIMAL" and roster.shortfall == () and roster.slot_minutes == SLOT
    duty = on_duty(roster)
    for at in range(8 * 60, 12 * 60, SLOT):
        want = needs_at(needs, at)
        assert served(c, duty.get(at, set()), want) == sum(want.values()), f"slot {at // 60}:{at % 60:02d}"
    rules = {rule.hours: rule for rule in c.planning.shifts}
    for shift in roster.shifts:
        start = minutes(shift.start)
        rule = rules[(minutes(shift.end) - start) / 60]
        assert minutes(rule.earliest) <= start <= minutes(rule.latest) and (start - minutes(rule.earliest)) % 30 == 0
        ends = start
        for pause, window in zip(shift.breaks, rule.breaks):
            offset = minutes(pause.at) - start
            assert window.from_h * 60 <= offset <= window.to_h * 60 and pause.minutes == window.minutes
            assert minutes(pause.at) >= ends, "breaks in the rule's order, never overlapping"
            ends = minutes(pause.at) + int(pause.minutes)
        assert len(shift.breaks) == len(rule.breaks)


LONG_ONLY = """\
planning:
  shifts:
    - name: long
      hours: 6
      starts: "08:00-08:00"
      breaks:
        - {minutes: 15, from_h: 1, to_h: 3}
        - {minutes: 15, from_h: 1, to_h: 3}
"""


def test_breaks_with_overlapping_windows_follow_each_other() -> None:
    c = centre(LONG_ONLY)
    needs = {"billing": halfhours("08:00", "13:30", 2), "support": halfhours("08:00", "13:30", 1)}
    roster = solve(c, needs)
    assert roster.status == "OPTIMAL" and roster.shortfall == ()
    for shift in roster.shifts:
        first, second = shift.breaks
        assert minutes(first.at) + first.minutes <= minutes(second.at)
    duty = on_duty(roster)
    for at in range(8 * 60, 14 * 60, SLOT):
        assert served(c, duty.get(at, set()), needs_at(needs, at)) == 3


def test_a_requirement_the_centre_cannot_meet_is_reported_as_shortfall() -> None:
    c = centre()
    roster = solve(c, {"billing": {"08:00": 4, "08:30": 2}})
    # b1, b2 and m1 qualify for billing (b3's proficiency is too low): 3 of 4 at 08:00.
    assert [(gap.queue, gap.start, gap.needed, gap.covered) for gap in roster.shortfall] == [("billing", 480, 4, 3)]
    assert roster.as_dict()["shortfall"] == [{"queue": "billing", "start": "2026-11-23T08:00:00+00:00",
                                              "needed": 4, "covered": 3}]


def test_an_agent_with_both_skills_counts_once() -> None:
    c = centre()
    needs = {"billing": {"08:00": 3}, "support": {"08:00": 3}}
    roster = solve(c, needs)
    # billing: b1, b2, m1; support: t1, t2, m1 -- five agents for six seats.
    assert sum(gap.needed - gap.covered for gap in roster.shortfall) == 1
    assert len({agent for shift in roster.shifts for agent in shift.agents}) == 5
    assert served(c, on_duty(roster)[480], needs_at(needs, 480)) == 5


def test_least_paid_hours_on_a_case_solved_by_hand() -> None:
    """One agent from 08:00 to 12:00.  A 4-hour shift covering it must start at 08:00 and its break
    falls inside, so two short shifts are needed (8 h); the 6-hour rule starts at 08:00 and has two
    breaks, so it needs a partner too (6 + 4 h).  Least: 8 paid hours, breaks apart."""
    c, heard = centre(), []
    demand = demand_from_plan(plan({"support": halfhours("08:00", "11:30", 1)}), c.timezone)
    roster = make_roster(c, demand, time_limit_s=10, workers=2,
                         on_solution=lambda elapsed, short, paid: heard.append((short, paid)))
    assert roster.status == "OPTIMAL" and roster.shortfall == ()
    assert roster.paid_hours == 8 and heard[-1] == (0, 8)
    assert sum(len(shift.agents) for shift in roster.shifts) == 2
    duty = on_duty(roster)
    assert all(served(centre(), duty.get(at, set()), {"support": 1}) == 1 for at in range(8 * 60, 12 * 60, SLOT))


def test_the_yaml_loads_back_as_simulation_shifts() -> None:
    c = centre()
    roster = solve(c, {"billing": halfhours("08:00", "11:30", 2), "support": halfhours("08:00", "11:30", 1)})
    text = roster_yaml(roster)
    assert text.startswith("# acd-router schedule for 2026-11-23 (UTC): OPTIMAL")
    block = text.split("simulation:\n", 1)[1]
    loaded = parse_config(CENTRE + block + RULES, "with-shifts.yaml")
    assert loaded.simulation.shifts == roster.shifts


def test_the_plan_is_read_in_the_centres_zone_and_prefers_scheduled() -> None:
    madrid = plan({"billing": {"09:00": 3, "09:30": 4}}, key="scheduled", zone="Europe/Madrid")
    for rows in madrid["queues"].values():
        for row in rows:
            row["agents"] = 1
    closed_day_before = {"start": "2026-11-22T09:00:00+01:00", "offered": 0, "agents": 0, "scheduled": 0}
    madrid["queues"]["billing"].insert(0, closed_day_before)
    demand = demand_from_plan(madrid, "Europe/London")
    assert demand.day == DAY and demand.interval_minutes == 30
    assert demand.needed == {"billing": {8 * 60: 3, 8 * 60 + 30: 4}}
    with pytest.raises(ValueError, match="no interval on 2026-11-24"):
        demand_from_plan(madrid, "Europe/London", date(2026, 11, 24))


def test_cli_json_and_yaml_output(tmp_path, capsys) -> None:
    config, staff, out = tmp_path / "centre.yaml", tmp_path / "plan.json", tmp_path / "shifts.yaml"
    config.write_text(CENTRE + RULES)
    staff.write_text(json.dumps(plan({"billing": halfhours("08:00", "09:30", 1)})))
    assert main(["schedule", "--config", str(config), "--staff", str(staff), "--time-limit", "5",
                 "--json", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"day", "status", "paid_hours", "shortfall", "shifts", "objective", "bound"} <= result.keys()
    assert result["day"] == "2026-11-23" and result["status"] == "OPTIMAL" and result["shortfall"] == []
    assert result["paid_hours"] == 4 and result["shifts"][0]["agents"] == ["b1"]
    assert out.read_text().splitlines()[2:4] == ["simulation:", "  shifts:"]
    assert main(["schedule", "--config", str(config), "--staff", str(staff), "--day", "2026-11-30"]) == 1
    assert "no interval on 2026-11-30" in capsys.readouterr().err


def test_shift_rules_in_fractions_of_a_minute_are_config_errors() -> None:
    rules = RULES.replace("hours: 4\n", "hours: 4.01\n").replace("minutes: 15, from_h: 1.5", "minutes: 7.5, from_h: 1.5")
    with pytest.raises(ConfigError) as caught:
        centre(rules)
    assert str(caught.value).splitlines() == [
        "centre.yaml:24:14: error: 'hours' of shift rule #1 of section 'planning': a shift lasts whole minutes, "
        "got 4.01 h",
        "centre.yaml:27:26: error: 'minutes' of break #1 of shift rule #1 of section 'planning': a break lasts "
        "whole minutes, got 7.5"]
