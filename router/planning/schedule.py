"""Shifts with breaks that cover a staffing plan, for one day: a CP-SAT model (OR-Tools).

Theory of operation
-------------------
The plan (`acd-router staff --json`) says how many agents each queue needs on the phones per
interval; `demand_from_plan` keeps one local day of it (`scheduled` when present, else `agents`).
`make_roster` then chooses, for the centre's agents, shifts of the config's rules
(`planning.shifts`: length, start times, break windows) and a start for every break, so that in
every slot of the day each queue has its agents on duty, logged in and not on a break.

Time is a grid of slots of gcd(interval, every rule's start step, earliest start, shift length,
break lengths) minutes after local midnight (15 for the sample centre).  Break windows are rounded
inwards to the grid.  The breaks of a shift are taken in the order the rule lists them.

Agents who qualify for the same set of queues (the engine's rule: every skill the queue requires
at or above its minimum) are interchangeable for coverage, so the model counts agents per such
group instead of deciding per agent; this is exact and removes the symmetry that makes per-agent
models slow.  Per group g, rule r and start t an integer c[g,r,t] counts the agents working that
shift (at most the group's size over all shifts); per break b and offset p an integer n counts how
many of them start break b at p (they sum to c).  When a break's window reaches into the next
one's, prefix-count constraints (at most as many second breaks began before tau as first breaks
ended by then) make the sorted pairing of the i-th first break with the i-th second break valid,
which is how agents receive their breaks afterwards.  An agent counts once per slot: s[g,q,slot]
says how many of the group's agents serve queue q, and their sum over queues is at most the
group's agents on duty (shifts under way minus breaks under way).  Coverage is soft: per queue and
interval a shortfall variable makes up the worst slot's deficit.

The objective is lexicographic through weights: shortfall (agent-intervals) first, then paid slots
(shifts are paid whole, breaks included), then the peak of agents on a break at once, which
spreads breaks.  The solver runs for a time limit on every core; its status (OPTIMAL or FEASIBLE),
objective and bound come with the roster.  No I/O here: the CLI reads the plan and prints.
"""
from __future__ import annotations

import json
import math
import os
import time as wallclock
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from ortools.sat.python import cp_model

from router.config.model import Break, Centre, Shift, ShiftRule
from router.engine.engine import meets as meets_requirements   # the engine's own rule

MINUTES_PER_DAY = 1440


class ScheduleError(ValueError):
    """A plan, day or shift rules that no schedule can be made from."""


@dataclass(frozen=True)
class Demand:
    """Agents needed on the phones during one local day: queue -> interval start -> agents."""
    day: date
    timezone: str
    interval_minutes: int
    needed: dict[str, dict[int, int]]     # interval starts are minutes after local midnight


@dataclass(frozen=True)
class Shortfall:
    """An interval whose worst slot has fewer agents for the queue than the plan needs."""
    queue: str
    start: int                            # minutes after local midnight
    needed: int
    covered: int


@dataclass(frozen=True)
class Roster:
    """A day's shifts, ready for `simulation.shifts`, and how the solver got them."""
    day: date
    timezone: str
    status: str                           # OPTIMAL or FEASIBLE
    objective: float
    bound: float
    solve_s: float
    slot_minutes: int
    shifts: tuple[Shift, ...]
    paid_hours: float
    shortfall: tuple[Shortfall, ...]

    def moment(self, minutes: int) -> str:
        """ISO-8601 time (with offset) of a minute of the roster's local day."""
        local = datetime.combine(self.day, time()) + timedelta(minutes=minutes)
        return local.replace(tzinfo=ZoneInfo(self.timezone)).isoformat()

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(), "timezone": self.timezone, "status": self.status,
            "objective": self.objective, "bound": self.bound, "solve_s": round(self.solve_s, 3),
            "slot_minutes": self.slot_minutes, "paid_hours": self.paid_hours,
            "agents": sum(len(shift.agents) for shift in self.shifts),
            "shortfall": [{"queue": gap.queue, "start": self.moment(gap.start), "needed": gap.needed,
                           "covered": gap.covered} for gap in self.shortfall],
            "shifts": [shift_entry(shift) for shift in self.shifts],
        }


def shift_entry(shift: Shift) -> dict[str, Any]:
    """A shift as its `simulation.shifts` entry."""
    return {"agents": list(shift.agents), "start": f"{shift.start:%H:%M}", "end": f"{shift.end:%H:%M}",
            "breaks": [{"at": f"{pause.at:%H:%M}", "minutes": _number(pause.minutes)} for pause in shift.breaks]}


def roster_yaml(roster: Roster) -> str:
    """A `simulation:` block with the roster's shifts, under a comment saying what it is."""
    gaps = [f"{gap.queue} {_clock(gap.start):%H:%M} ({gap.covered} of {gap.needed})" for gap in roster.shortfall]
    missing = sum(gap.needed - gap.covered for gap in roster.shortfall)
    lines = [f"# acd-router schedule for {roster.day} ({roster.timezone}): {roster.status}, "
             f"{_number(roster.paid_hours)} paid hours, {sum(len(s.agents) for s in roster.shifts)} agents",
             f"# shortfall: {missing} agent-interval(s)" + (": " + ", ".join(gaps[:8]) if gaps else "")
             + (", ..." if len(gaps) > 8 else ""),
             "simulation:"]
    if not roster.shifts:
        lines += ["  # nobody is needed; an empty list would log every agent in all day", "  shifts: []"]
        return "\n".join(lines) + "\n"
    lines.append("  shifts:")
    for shift in roster.shifts:
        entry = shift_entry(shift)
        breaks = ", ".join(f'{{at: "{pause["at"]}", minutes: {pause["minutes"]}}}' for pause in entry["breaks"])
        lines.append(f'    - {{agents: [{", ".join(json.dumps(agent) for agent in shift.agents)}], '
                     f'start: "{entry["start"]}", end: "{entry["end"]}", breaks: [{breaks}]}}')
    return "\n".join(lines) + "\n"


# ---- the plan ----------------------------------------------------------------------------------

def demand_from_plan(plan: Mapping[str, Any], timezone: str, day: date | None = None, *,
                     default_interval: int | None = None) -> Demand:
    """One local day of a `staff --json` plan (`day`, else the first that needs agents)."""
    zone = ZoneInfo(timezone)
    queues = plan.get("queues") if isinstance(plan, Mapping) else None
    if not isinstance(queues, Mapping):
        raise ScheduleError("the plan has no 'queues' object (expected the JSON of acd-router staff --json)")
    rows: list[tuple[str, datetime, int]] = []
    for queue, intervals in queues.items():
        for index, row in enumerate(intervals):
            try:
                moment = datetime.fromisoformat(row["start"])
                need = row["scheduled"] if row.get("scheduled") is not None else row["agents"]
                rows.append((queue, _local(moment, zone), math.ceil(float(need))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ScheduleError(f"plan queue {queue!r}, interval #{index + 1}: expected 'start' (ISO time) "
                                    f"and 'agents' or 'scheduled' (a number): {exc}") from None
    if not rows:
        raise ScheduleError("the plan has no intervals")
    day = day or min((moment.date() for _, moment, need in rows if need > 0),
                     default=min(moment.date() for _, moment, _ in rows))
    width = plan.get("interval_minutes") or _interval_of(rows) or default_interval
    if not width:
        raise ScheduleError("cannot tell the plan's interval width: it has one interval and no 'interval_minutes'")
    needed: dict[str, dict[int, int]] = {queue: {} for queue in queues}
    midnight = datetime.combine(day, time())
    for queue, moment, need in rows:
        if moment.date() == day:
            needed[queue][int((moment - midnight).total_seconds() // 60)] = need
    if not any(needed.values()):
        raise ScheduleError(f"the plan has no interval on {day} ({timezone})")
    return Demand(day, timezone, int(width), needed)


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """Naive local wall-clock time of a moment (naive moments are local already)."""
    return moment if moment.tzinfo is None else moment.astimezone(zone).replace(tzinfo=None)


def _interval_of(rows: list[tuple[str, datetime, int]]) -> int | None:
    """The smallest gap between consecutive interval starts of a queue, in minutes."""
    starts: dict[str, list[datetime]] = defaultdict(list)
    for queue, moment, _ in rows:
        starts[queue].append(moment)
    gaps = [(later - earlier).total_seconds() / 60 for moments in starts.values()
            for earlier, later in zip(sorted(moments), sorted(moments)[1:]) if later > earlier]
    return int(min(gaps)) if gaps else None


# ---- the model ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Option:
    """Rule `rule` started at slot `start`: its length and its breaks' (first, last offset, length)."""
    rule: int
    start: int
    length: int
    windows: tuple[tuple[int, int, int], ...]


def slot_minutes(rules: Iterable[ShiftRule], demand: Demand) -> int:
    """The grid: the largest slot every shift start, length, break length and interval lies on."""
    values = [demand.interval_minutes, *(start for starts in demand.needed.values() for start in starts)]
    for rule in rules:   # whole minutes: the config loader checks
        values += [rule.every_min, rule.earliest.hour * 60 + rule.earliest.minute, round(rule.hours * 60)]
        values += [round(pause.minutes) for pause in rule.breaks]
    return math.gcd(*values)


def _options(rules: tuple[ShiftRule, ...], slot: int) -> list[_Option]:
    options = []
    for index, rule in enumerate(rules):
        length = round(rule.hours * 60) // slot
        windows = []
        for pause in rule.breaks:
            first, last = math.ceil(pause.from_h * 60 / slot), math.floor(pause.to_h * 60 / slot)
            if first > last:
                raise ScheduleError(f"shift rule {rule.name!r}: a break window {pause.from_h:g}-{pause.to_h:g} h "
                                    f"holds no start on the {slot}-minute grid")
            windows.append((first, last, round(pause.minutes) // slot))
        earliest = rule.earliest.hour * 60 + rule.earliest.minute
        latest = rule.latest.hour * 60 + rule.latest.minute
        for start in range(earliest, latest + 1, rule.every_min):
            options.append(_Option(index, start // slot, length, tuple(windows)))
    return options


def agent_groups(centre: Centre, queues: Iterable[str]) -> dict[frozenset[str], list[str]]:
    """Agents (sorted ids) by the set of `queues` they qualify for; agents who serve none are left out."""
    groups: dict[frozenset[str], list[str]] = defaultdict(list)
    for agent in sorted(centre.agents.values(), key=lambda a: a.id):
        serves = frozenset(q for q in queues if meets_requirements(agent.skills, centre.queues[q].skills))
        if serves:
            groups[serves].append(agent.id)
    return dict(groups)


class _Progress(cp_model.CpSolverSolutionCallback):
    """Tells `report(elapsed_s, shortfall, paid_hours)` of each better solution, read off its objective."""
    def __init__(self, report: Callable[[float, int, float], None], short_weight: int, paid_weight: int,
                 slot: int) -> None:
        super().__init__()
        self.report, self.short_weight, self.paid_weight, self.slot = report, short_weight, paid_weight, slot

    def on_solution_callback(self) -> None:
        objective = round(self.objective_value)
        paid_slots = objective % self.short_weight // self.paid_weight
        self.report(self.wall_time, objective // self.short_weight, paid_slots * self.slot / 60)


Groups = list[tuple[frozenset[str], list[str]]]
Chosen = dict[tuple[int, int], tuple[Any, list[dict[int, Any]]]]   # (group, option) -> count, break starts


def make_roster(centre: Centre, demand: Demand, *, time_limit_s: float = 20.0, workers: int | None = None,
                on_solution: Callable[[float, int, float], None] | None = None) -> Roster:
    """Shifts of the centre's rules for the day's demand (see the module head).

    `on_solution(elapsed_s, shortfall, paid_hours)` hears of every better solution while solving."""
    rules = centre.planning.shifts
    if not rules:
        raise ScheduleError("no shift rules: add planning.shifts to the config")
    unknown = sorted(set(demand.needed) - set(centre.queues))
    if unknown:
        raise ScheduleError(f"the plan names queue(s) the centre does not have: {', '.join(unknown)}")
    slot = slot_minutes(rules, demand)
    options = _options(rules, slot)
    needs = {q: {start: need for start, need in intervals.items() if need > 0}
             for q, intervals in demand.needed.items() if any(intervals.values())}
    groups = list(agent_groups(centre, needs).items())

    model = cp_model.CpModel()
    chosen, duty, on_break, paid = _shift_variables(model, groups, options)
    serving = _serve_variables(model, groups, duty, {q: {at for start in intervals for at in
                                                        _slots(start, demand.interval_minutes, slot)}
                                                    for q, intervals in needs.items()})
    shortfalls = []
    for q, intervals in needs.items():
        for start, need in intervals.items():
            short = model.NewIntVar(0, need, f"short_{q}_{start}")
            shortfalls.append(short)
            for at in _slots(start, demand.interval_minutes, slot):
                model.Add(sum(serving[q, at]) + short >= need)
    agents = sum(len(members) for _, members in groups)
    peak = model.NewIntVar(0, agents, "peak_on_break")
    for takers in on_break.values():
        model.Add(sum(takers) <= peak)
    paid_weight = agents + 1
    short_weight = paid_weight * (agents * max((o.length for o in options), default=0) + 1)
    model.Minimize(short_weight * sum(shortfalls) + paid_weight * sum(paid) + peak)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers or os.cpu_count() or 1
    began = wallclock.monotonic()
    status = solver.Solve(model, _Progress(on_solution, short_weight, paid_weight, slot) if on_solution else None)
    elapsed = wallclock.monotonic() - began
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise ScheduleError(f"no schedule within {time_limit_s:g} s (CP-SAT status {solver.StatusName(status)}); "
                            f"allow more time with --time-limit")

    shifts, paid_hours = _shifts(solver, groups, options, chosen, rules, slot)
    gaps = []
    for q, intervals in needs.items():
        for start, need in sorted(intervals.items()):
            covered = min(sum(solver.Value(serve) for serve in serving[q, at])
                          for at in _slots(start, demand.interval_minutes, slot))
            if covered < need:
                gaps.append(Shortfall(q, start, need, covered))
    return Roster(demand.day, demand.timezone, solver.StatusName(status), solver.ObjectiveValue(),
                  solver.BestObjectiveBound(), elapsed, slot, shifts, paid_hours, tuple(gaps))


def _slots(start: int, width: int, slot: int) -> range:
    """The slots of the interval of `width` minutes that starts `start` minutes after midnight."""
    return range(start // slot, (start + width) // slot)


def _shift_variables(model: cp_model.CpModel, groups: Groups, options: list[_Option]) -> tuple[
        Chosen, dict[tuple[int, int], list[Any]], dict[int, list[Any]], list[Any]]:
    """Per group and option, how many agents work it and when they start each break; with the
    terms of agents on duty per (group, slot), of agents on a break per slot, and of paid slots."""
    chosen: Chosen = {}
    duty: dict[tuple[int, int], list[Any]] = defaultdict(list)     # + shifts under way, - breaks under way
    on_break: dict[int, list[Any]] = defaultdict(list)
    paid: list[Any] = []
    for g, (_, members) in enumerate(groups):
        size = len(members)
        counts = []
        for o, option in enumerate(options):
            count = model.NewIntVar(0, size, f"c{g}_{o}")
            counts.append(count)
            paid.append(option.length * count)
            for at in range(option.start, option.start + option.length):
                duty[g, at].append(count)
            breaks = []
            for b, (first, last, length) in enumerate(option.windows):
                starts = {p: model.NewIntVar(0, size, f"n{g}_{o}_{b}_{p}") for p in range(first, last + 1)}
                model.Add(sum(starts.values()) == count)
                for p, taking in starts.items():
                    for at in range(option.start + p, option.start + p + length):
                        duty[g, at].append(-taking)
                        on_break[at].append(taking)
                breaks.append(starts)
            for b in range(1, len(breaks)):
                _in_order(model, breaks[b - 1], option.windows[b - 1][2], breaks[b])
            chosen[g, o] = (count, breaks)
        model.Add(sum(counts) <= size)
    return chosen, duty, on_break, paid


def _serve_variables(model: cp_model.CpModel, groups: Groups, duty: dict[tuple[int, int], list[Any]],
                     needed_slots: dict[str, set[int]]) -> dict[tuple[str, int], list[Any]]:
    """Per (queue, slot) the terms of agents serving it: each group's agents on duty split among the
    queues they qualify for, so nobody counts twice."""
    serving: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for g, (serves, members) in enumerate(groups):
        for at in sorted({at for q in serves for at in needed_slots[q]}):
            if not duty.get((g, at)):
                continue
            share = []
            for q in sorted(serves):
                if at in needed_slots[q]:
                    serve = model.NewIntVar(0, len(members), f"s{g}_{q}_{at}")
                    serving[q, at].append(serve)
                    share.append(serve)
            model.Add(sum(share) <= sum(duty[g, at]))
    return serving


def _in_order(model: cp_model.CpModel, earlier: dict[int, Any], length: int, later: dict[int, Any]) -> None:
    """Break `later` after break `earlier` (of `length` slots) for the sorted pairing of their starts:
    for every tau, no more later breaks begin before tau than earlier ones have ended by tau."""
    if max(earlier) + length <= min(later):
        return
    for tau in range(min(later) + 1, max(later) + 2):
        model.Add(sum(n for p, n in later.items() if p < tau)
                  <= sum(n for p, n in earlier.items() if p + length <= tau - 1))


def _shifts(solver: cp_model.CpSolver, groups: Groups, options: list[_Option], chosen: Chosen,
            rules: tuple[ShiftRule, ...], slot: int) -> tuple[tuple[Shift, ...], float]:
    """Agents for the solver's counts (in id order per group; the i-th agent of a shift gets the i-th
    earliest start of each break), grouped by identical start, end and breaks."""
    crews: dict[tuple[int, int, tuple[tuple[int, int], ...]], list[str]] = defaultdict(list)
    paid_hours = 0.0
    for g, (_, members) in enumerate(groups):
        pool = iter(members)
        for o, option in enumerate(options):
            count, breaks = chosen[g, o]
            working = solver.Value(count)
            if not working:
                continue
            starts = [[p for p in sorted(taking) for _ in range(solver.Value(taking[p]))] for taking in breaks]
            rule = rules[option.rule]
            for i in range(working):
                pauses = tuple(((option.start + offsets[i]) * slot, round(pause.minutes))
                               for offsets, pause in zip(starts, rule.breaks))
                crews[option.start * slot, (option.start + option.length) * slot, pauses].append(next(pool))
                paid_hours += rule.hours
    shifts = tuple(Shift(tuple(sorted(crew)), _clock(start), _clock(end), tuple(Break(_clock(at), minutes)
                                                                      for at, minutes in pauses))
                   for (start, end, pauses), crew in sorted(crews.items()))
    return shifts, paid_hours


def _clock(minutes: int) -> time:
    minutes %= MINUTES_PER_DAY
    return time(minutes // 60, minutes % 60)


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value
