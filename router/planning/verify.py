"""`staff --verify`: the Erlang A plan run through the simulator and adjusted to the least that works.

Theory of operation
-------------------
Each forecast day with calls becomes one `Simulation` of the real engine:
arrivals per queue and interval are the forecast's offered calls (a Poisson
stream at that mean); talk times are the config's distribution of the queue
rescaled (same coefficient of variation) to the measured AHT minus the queue's
wrap-up, which the engine adds; patience is exponential with the measured mean;
ring delay, missed offers and call-back acceptance are the config's simulation
settings.  The floor is a set of clones of the centre's agents: queue Q's k-th
agent ("Q-001", ...) has the skills of the k-th agent of the centre that meets
Q's minimums (cycling through them), so a clone can take calls of every queue
its skills allow and overflow steps reach it as they would reach the real
agent.  Clone k of Q is logged in during every interval where the plan has more
than k agents for Q.  `dedicated` clones keep only the skills Q requires: no
multi-skill sharing (overflow steps still reach other queues' agents), which
separates Erlang A's own model error from the effects of shared agents.

Every (day, seed) pair is one independent job, run in parallel processes.
Service level and abandonment per (entry queue, interval) are the KPIs' own
(DESIGN §7), computed from the day's events by the SQL's in-memory twin
(router/store/kpi_memory.py): a call belongs to the interval of its first
`queue.joined`, short abandons and accepted call-backs are out of the SL base.
They are pooled over the seeds as counts: base = offered − short abandoned −
call-backs accepted (every call is judged by the end of a simulated day),
met = SL × base, pooled SL = Σ met / Σ base.

Adjustment, in rounds, with the same seeds in every round (common random
numbers: two plans differ by the plan, not by the draw):
- an interval that misses its target gets one agent more, and the count it had
  is remembered as failing;
- an interval that meets it gets one fewer, unless one fewer is already known
  to fail (or it has a single agent left).
The result is the last plan that met every target when simulated.  "Least" is
meant pooled over the seeds, with no tolerance: every interval's pooled SL is
at or above its target, and for every interval the count one lower was
simulated and missed (in the round that tried it, with the rest of the plan as
it was then).  Intervals share agents and queues carry over from one interval
into the next, so this is a local minimum, not a proof that no other plan of
fewer agent-hours exists.  The rounds are bounded (`max_rounds`); when they run
out the summary says `converged: false`.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from router.config.model import Agent, Centre, Distribution, Shift, Simulation
from router.planning.staffing import QueueInputs
from router.sim.simulator import Simulator
from router.store.kpi_memory import kpis_from_events

DEFAULT_SEEDS = 4
MAX_ROUNDS = 12
SEED_STRIDE = 1009        # day d of seed s runs as simulator seed s + d * SEED_STRIDE

# counts per (queue, interval start epoch): offered, short abandoned, SL base, SL met, abandoned
OFFERED, SHORT, BASE, MET, ABANDONED = range(5)


@dataclass(frozen=True)
class Grid:
    """The forecast's intervals: per queue, the start (epoch seconds) and offered calls of each."""
    zone: str
    width_s: float
    starts: dict[str, list[float]]
    offered: dict[str, list[float]]

    @classmethod
    def from_forecast(cls, forecast: dict[str, Any], zone: str) -> Grid:
        starts = {q: [datetime.fromisoformat(p["start"]).timestamp() for p in body["forecast"]]
                  for q, body in forecast["queues"].items()}
        offered = {q: [max(0.0, float(p["offered"])) for p in body["forecast"]]
                   for q, body in forecast["queues"].items()}
        return cls(zone, forecast["interval_minutes"] * 60.0, starts, offered)

    def local_day(self, epoch: float) -> date:
        return datetime.fromtimestamp(epoch, ZoneInfo(self.zone)).date()


@dataclass(frozen=True)
class DayJob:
    """One simulated day of one seed (picklable: it crosses to a worker process)."""
    centre: Centre
    hours: float
    seed: int
    width_s: float
    short_abandon_s: float


def clone_agents(centre: Centre, counts: dict[str, int], *, dedicated: bool = False) -> dict[str, Agent]:
    """`counts[Q]` clones per queue Q, each with the skills of a centre agent that meets Q's minimums
    (`dedicated`: only the skills Q requires, at that agent's levels)."""
    clones: dict[str, Agent] = {}
    for queue_id, count in counts.items():
        queue = centre.queues[queue_id]
        qualifying = [a for a in centre.agents.values()
                      if all(a.skills.get(skill, 0) >= level for skill, level in queue.skills.items())]
        if count and not qualifying:
            raise ValueError(f"{centre.source}: no agent meets the skills of queue {queue_id!r} to clone")
        for k in range(count):
            template = qualifying[k % len(qualifying)]
            agent_id = f"{queue_id}-{k + 1:03d}"
            skills = {s: template.skills[s] for s in queue.skills} if dedicated else dict(template.skills)
            clones[agent_id] = Agent(agent_id, f"{template.name} ({agent_id})", f"Local/{agent_id}@plan",
                                     skills, template.team)
    return clones


def _talk_time(centre: Centre, queue_id: str, aht_s: float) -> Distribution:
    """The config's talk-time distribution of a queue rescaled to mean AHT − wrap-up (same CV)."""
    talk = max(1.0, aht_s - centre.queues[queue_id].wrap_up_s)
    if centre.simulation is None:
        return Distribution("exponential", talk)
    table = centre.simulation.handle_time
    dist = table.get(queue_id) or table["default"]
    return Distribution(dist.kind, talk, dist.sd_s * talk / dist.mean_s)


def day_jobs(centre: Centre, grid: Grid, plan: dict[str, list[int]], inputs: dict[str, QueueInputs],
             seeds: int, *, dedicated: bool = False) -> list[DayJob]:
    """The simulations of a plan: every forecast day with calls, for every seed."""
    zone = ZoneInfo(grid.zone)
    base = centre.simulation or Simulation(datetime(2000, 1, 1), 30, {}, {}, {})
    peak = {q: max(agents, default=0) for q, agents in plan.items()}
    clones = clone_agents(centre, peak, dedicated=dedicated)
    handle = {q: _talk_time(centre, q, inputs[q].aht_s) for q in centre.queues}
    patience = {q: Distribution("exponential", inputs[q].patience_s) for q in centre.queues}
    first = next(iter(centre.queues))
    handle["default"], patience["default"] = handle[first], patience[first]
    days = sorted({grid.local_day(t) for q, starts in grid.starts.items()
                   for t, n in zip(starts, grid.offered[q]) if n > 0})
    jobs: list[DayJob] = []
    for index, day in enumerate(days):
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone)
        day_start, day_end = midnight.timestamp(), (midnight + timedelta(days=1)).timestamp()
        slots = math.ceil((day_end - day_start) / grid.width_s)
        arrivals: dict[str, list[float]] = {q: [0.0] * slots for q in grid.starts}
        shifts: list[Shift] = []
        last = 0
        for queue_id, starts in grid.starts.items():
            on_duty: dict[int, int] = {}
            for start, offered, agents in zip(starts, grid.offered[queue_id], plan[queue_id]):
                if day_start <= start < day_end:
                    slot = int((start - day_start) // grid.width_s)
                    arrivals[queue_id][slot] = offered
                    on_duty[slot] = agents
                    if offered > 0 or agents > 0:
                        last = max(last, slot + 1)
            for k in range(peak[queue_id]):
                shifts.extend(_shifts_of(f"{queue_id}-{k + 1:03d}", [s for s, n in on_duty.items() if n > k],
                                         day_start, grid.width_s, zone))
        model = replace(base, start=midnight, interval_minutes=int(grid.width_s // 60),
                        arrivals={q: tuple(v[:last]) for q, v in arrivals.items()},
                        handle_time=handle, patience=patience, shifts=tuple(shifts), ivr=None,
                        weekdays={}, trend_per_week=0.0, overdispersion=0.0)
        day_centre = replace(centre, agents=clones, simulation=model)
        hours = last * grid.width_s / 3600.0
        jobs.extend(DayJob(day_centre, hours, seed + index * SEED_STRIDE, grid.width_s, centre.short_abandon_s)
                    for seed in range(seeds))
    return jobs


def _shifts_of(agent_id: str, slots: Iterable[int], day_start: float, width_s: float,
               zone: ZoneInfo) -> list[Shift]:
    """One shift per run of consecutive intervals an agent is on duty."""
    out: list[Shift] = []
    ordered = sorted(slots)
    run_start = None
    for i, slot in enumerate(ordered):
        if run_start is None:
            run_start = slot
        if i + 1 == len(ordered) or ordered[i + 1] != slot + 1:
            begin = datetime.fromtimestamp(day_start + run_start * width_s, zone).time()
            end = datetime.fromtimestamp(day_start + (slot + 1) * width_s, zone).time()
            out.append(Shift((agent_id,), begin, end))
            run_start = None
    return out


def simulate_counts(job: DayJob) -> dict[tuple[str, float], list[int]]:
    """Run one day; per (entry queue, interval start) the counts behind its KPIs (router/store/kpi_memory)."""
    sim = Simulator(job.centre, hours=job.hours, seed=job.seed)
    events = []
    while not sim.done:
        events.extend(sim.run(20_000))
    kpis = kpis_from_events(events, start=datetime.fromtimestamp(sim.start, ZoneInfo(job.centre.timezone)),
                            interval_minutes=round(job.width_s / 60), short_abandon_s=job.short_abandon_s,
                            timezone=job.centre.timezone)
    counts: dict[tuple[str, float], list[int]] = {}
    for interval in kpis["intervals"]:
        start = datetime.fromisoformat(interval["start"]).timestamp()
        for queue_id, figures in interval["queues"].items():
            base = figures["offered"] - figures["short_abandoned"] - figures["callbacks_accepted"]
            met = round(figures["service_level"] * base) if figures["service_level"] is not None else 0
            counts[(queue_id, start)] = [figures["offered"], figures["short_abandoned"], base, met,
                                         figures["abandoned"]]
    return counts


def pooled(results: Iterable[dict[tuple[str, float], list[int]]]) -> dict[tuple[str, float], list[int]]:
    """Counts summed over seeds and days."""
    total: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for counts in results:
        for key, row in counts.items():
            total[key] = [a + b for a, b in zip(total[key], row)]
    return dict(total)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def service_level(row: list[int] | None) -> float | None:
    return _ratio(row[MET], row[BASE]) if row else None


def abandonment_rate(row: list[int] | None) -> float | None:
    return _ratio(row[ABANDONED] - row[SHORT], row[OFFERED] - row[SHORT]) if row else None


def run_jobs(jobs: list[DayJob], executor: Executor | None,
             on_done: Callable[[], None] | None = None) -> dict[tuple[str, float], list[int]]:
    """Every job's counts, pooled (in worker processes with an executor, else here)."""
    results = executor.map(simulate_counts, jobs) if executor is not None else map(simulate_counts, jobs)
    collected = []
    for counts in results:
        collected.append(counts)
        if on_done:
            on_done()
    return pooled(collected)


def verify(centre: Centre, forecast: dict[str, Any], erlang_plan: dict[str, list[int]],
           inputs: dict[str, QueueInputs], *, seeds: int = DEFAULT_SEEDS, max_rounds: int = MAX_ROUNDS,
           workers: int | None = None, progress: Any = None, dedicated: bool = False) -> dict[str, Any]:
    """Adjust `erlang_plan` (agents per queue per forecast interval) as the module head says.

    `workers=1` runs every simulation in this process; otherwise a process pool of `workers`
    (default: the CPUs this process may use).  Returns per queue per interval the verified agents, the pooled
    simulated SL and abandonment of the verified plan and the simulated SL of the Erlang plan,
    and a `summary`."""
    grid = Grid.from_forecast(forecast, centre.timezone)
    plan = {q: list(agents) for q, agents in erlang_plan.items()}
    failing = {q: [-1] * len(agents) for q, agents in plan.items()}
    jobs_per_round = len(day_jobs(centre, grid, plan, inputs, seeds, dedicated=dedicated))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress.update(done, f"round {rounds + 1}, {done}/{jobs_per_round * max_rounds} days x seeds")

    executor = None if workers == 1 else ProcessPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)))
    erlang_counts: dict[tuple[str, float], list[int]] | None = None
    best: tuple[dict[str, list[int]], dict[tuple[str, float], list[int]]] | None = None
    converged = False
    rounds = 0
    try:
        while rounds < max_rounds:
            counts = run_jobs(day_jobs(centre, grid, plan, inputs, seeds, dedicated=dedicated), executor, tick)
            erlang_counts = erlang_counts or counts
            rounds += 1
            proposal, all_met = _adjust(centre, grid, plan, failing, counts)
            if all_met:
                best = ({q: list(a) for q, a in plan.items()}, counts)
            if proposal == plan:
                converged = all_met
                break
            plan = proposal
    finally:
        if executor is not None:
            executor.shutdown()
    final_plan, final_counts = best if best is not None else (plan, counts)
    return _report(centre, grid, erlang_plan, final_plan, erlang_counts or {}, final_counts,
                   seeds=seeds, rounds=rounds, converged=converged, feasible=best is not None, dedicated=dedicated)


def _adjust(centre: Centre, grid: Grid, plan: dict[str, list[int]], failing: dict[str, list[int]],
            counts: dict[tuple[str, float], list[int]]) -> tuple[dict[str, list[int]], bool]:
    """The next plan: one more where an interval missed, one fewer where it met and one fewer is
    not known to fail; and whether every interval met its target."""
    proposal = {q: list(a) for q, a in plan.items()}
    all_met = True
    for queue_id, starts in grid.starts.items():
        target = centre.queues[queue_id].sl_target
        for i, start in enumerate(starts):
            if grid.offered[queue_id][i] <= 0:
                continue
            level = service_level(counts.get((queue_id, start)))
            agents = plan[queue_id][i]
            if level is not None and level < target:
                all_met = False
                failing[queue_id][i] = max(failing[queue_id][i], agents)
                proposal[queue_id][i] = agents + 1
            elif agents > 1 and agents - 1 > failing[queue_id][i]:
                proposal[queue_id][i] = agents - 1
    return proposal, all_met


def _report(centre: Centre, grid: Grid, erlang_plan: dict[str, list[int]], plan: dict[str, list[int]],
            erlang_counts: dict[tuple[str, float], list[int]], counts: dict[tuple[str, float], list[int]], *,
            seeds: int, rounds: int, converged: bool, feasible: bool, dedicated: bool) -> dict[str, Any]:
    hours = grid.width_s / 3600.0
    queues: dict[str, list[dict[str, Any]]] = {}
    summary: dict[str, Any] = {}
    for queue_id, starts in grid.starts.items():
        rows = []
        for i, start in enumerate(starts):
            row, erlang_row = counts.get((queue_id, start)), erlang_counts.get((queue_id, start))
            rows.append({"agents": plan[queue_id][i], "erlang_agents": erlang_plan[queue_id][i],
                         "simulated_service_level": service_level(row),
                         "simulated_abandonment_rate": abandonment_rate(row),
                         "erlang_simulated_service_level": service_level(erlang_row)})
        queues[queue_id] = rows
        keys = [(queue_id, s) for s in starts]
        summary[queue_id] = {
            "target": centre.queues[queue_id].sl_target,
            "erlang_agent_hours": round(sum(erlang_plan[queue_id]) * hours, 2),
            "verified_agent_hours": round(sum(plan[queue_id]) * hours, 2),
            "intervals_more": sum(v > e for v, e in zip(plan[queue_id], erlang_plan[queue_id])),
            "intervals_fewer": sum(v < e for v, e in zip(plan[queue_id], erlang_plan[queue_id])),
            "erlang_plan_simulated_service_level": service_level(_sum_rows(erlang_counts, keys)),
            "verified_simulated_service_level": service_level(_sum_rows(counts, keys)),
        }
    return {"queues": queues, "summary": {"seeds": seeds, "rounds": rounds, "converged": converged,
                                          "feasible": feasible, "dedicated": dedicated, "queues": summary}}


def _sum_rows(counts: dict[tuple[str, float], list[int]], keys: list[tuple[str, float]]) -> list[int] | None:
    rows = [counts[k] for k in keys if k in counts]
    return [sum(column) for column in zip(*rows)] if rows else None
