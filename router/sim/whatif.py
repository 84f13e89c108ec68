"""What-if at speed: simulated days in memory, over several seeds, side by side.

Theory of operation
-------------------
`simulate_in_memory` runs the simulator and hands its events straight to the
KPI SQL's in-memory twin (router/store/kpi_memory.py): the same figures as a
stored run (`simulate_day`) of the same centre and seed, without PostgreSQL.
It is a top-level function of picklable arguments (a `Centre` is a frozen
dataclass), so worker processes can call it.

`what_if` runs seeds `first_seed .. first_seed + seeds - 1` of one centre (the
scenario) and, when comparing, of a second one (the baseline) in parallel
processes (`ProcessPoolExecutor`, one worker per job up to the CPU count),
and summarises each total KPI of `SUMMARY_KEYS` over the seeds: the mean and
a 95 % confidence interval of the mean (Student t with seeds − 1 degrees of
freedom; null bounds with one seed).  Comparing runs both centres on the same
seeds (common random numbers) and summarises the per-seed difference
scenario − baseline the same way: a paired interval, much narrower than the
two intervals side by side.  A seed whose KPI is null (no base: no surveys,
nothing answered) is left out of that KPI; `n` says how many counted.

JSON (`simulate --seeds N [--compare] --json`), one object:

    {"seeds": N, "first_seed": 0, "hours": 8.0, "changes": ["queues.billing.wrap_up_s=30"],
     "scenario":   {"service_level": {"mean": 0.81, "lo": 0.79, "hi": 0.83, "n": 8}, ...},
     "baseline":   {...},        # with --compare: the centre without the changes
     "difference": {...},        # with --compare: scenario − baseline, paired by seed
     "queues": {"billing": {"baseline": {...}, "scenario": {...}, "difference": {...}}, ...}}

Per queue (entry queue, as in the KPIs) the same summaries of the queue's
figures, without the centre-wide occupancy and IVR containment.  The table
for humans shows the totals.
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime
from typing import Any

from router.config.model import Centre, Simulation
from router.ivr.registry import load_flowset
from router.progress import Progress
from router.sim.simulator import Simulator
from router.store.kpi import PINNED_KEYS
from router.store.kpi_memory import kpis_from_events

MEMORY_RUN = "memory"
SUMMARY_KEYS: tuple[str, ...] = PINNED_KEYS + ("busy_s", "staffed_s")
QUEUE_SUMMARY_KEYS: tuple[str, ...] = tuple(key for key in PINNED_KEYS if key not in ("occupancy", "ivr_contained"))
CONFIDENCE = 0.95


def simulate_in_memory(centre: Centre, *, hours: float = 8.0, seed: int = 0, interval_minutes: int | None = None,
                       model: Simulation | None = None, start: datetime | None = None,
                       show_progress: bool = False) -> dict[str, Any]:
    """Simulate and compute the KPIs without storing anything: `simulate_day`'s result, run 'memory'."""
    model = model or centre.simulation
    flowset = load_flowset(centre) if model is not None and model.ivr is not None else None
    sim = Simulator(centre, hours=hours, seed=seed, model=model, flowset=flowset, start=start)
    progress = Progress(hours * 3600.0, "simulating") if show_progress else None
    events = []
    while not sim.done:
        events.extend(sim.run(20_000))
        if progress:
            progress.update(sim.clock - sim.start, f"{len(sim.arrivals):,} calls")
    if progress:
        progress.close()
    kpis = kpis_from_events(events, run=MEMORY_RUN, interval_minutes=interval_minutes,
                            short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)
    kpis["simulation"] = {"run": MEMORY_RUN, "seed": seed, "hours": sim.hours, "days": None, "calls": len(sim.arrivals),
                          "agents": len(centre.agents), "refused_inputs": sim.refused}
    return kpis


def run_seeds(centres: dict[str, Centre], seeds: Sequence[int], *, hours: float,
              on_done: Callable[[int, int], None] | None = None,
              workers: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The KPIs of every centre on every seed (in seed order), one process per job.

    `on_done(done, total)` is called in this process as jobs finish."""
    jobs = [(label, seed) for label in centres for seed in seeds]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(simulate_in_memory, centres[label], hours=hours, seed=seed): (label, seed)
                   for label, seed in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if on_done:
                on_done(done, len(jobs))
    return {label: [results[(label, seed)] for seed in seeds] for label in centres}


def summary(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and 95 % Student-t interval of the mean over the non-null values."""
    present = [float(value) for value in values if value is not None]
    n = len(present)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = statistics.fmean(present)
    if n == 1:
        return {"mean": _tidy(mean), "lo": None, "hi": None, "n": 1}
    from scipy.stats import t

    half = t.ppf((1 + CONFIDENCE) / 2, n - 1) * statistics.stdev(present) / math.sqrt(n)
    return {"mean": _tidy(mean), "lo": _tidy(mean - half), "hi": _tidy(mean + half), "n": n}


def _tidy(value: float) -> float:
    return round(value, 6)


def summarise(runs: list[dict[str, Any]], keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict[str, Any]]:
    return {key: summary([run.get(key) for run in runs]) for key in keys}


def differences(baseline: list[dict[str, Any]], scenario: list[dict[str, Any]],
                keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict[str, Any]]:
    """scenario − baseline per KPI, paired by seed (seeds where either is null are left out)."""
    return {key: summary([None if b.get(key) is None or s.get(key) is None else s[key] - b[key]
                          for b, s in zip(baseline, scenario)])
            for key in keys}


def _per_queue(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each entry queue's figures summarised like the totals (a seed without the queue counts as missing)."""
    queues = sorted({queue for label_runs in runs.values() for run in label_runs for queue in run["queues"]})
    result = {}
    for queue in queues:
        of = {label: [run["queues"].get(queue, {}) for run in label_runs] for label, label_runs in runs.items()}
        result[queue] = {label: summarise(of[label], QUEUE_SUMMARY_KEYS) for label in of}
        if "baseline" in of:
            result[queue]["difference"] = differences(of["baseline"], of["scenario"], QUEUE_SUMMARY_KEYS)
    return result


def what_if(scenario: Centre, *, baseline: Centre | None = None, seeds: int, first_seed: int = 0,
            hours: float = 8.0, changes: Sequence[str] = (), show_progress: bool = True) -> dict[str, Any]:
    """The scenario's KPIs over `seeds` seeds, and with a baseline: both and their paired difference."""
    centres = {"scenario": scenario} if baseline is None else {"baseline": baseline, "scenario": scenario}
    progress = Progress(seeds * len(centres), "simulating") if show_progress else None
    runs = run_seeds(centres, range(first_seed, first_seed + seeds), hours=hours,
                     on_done=(lambda done, total: progress.update(done, f"{done}/{total} runs")) if progress else None)
    if progress:
        progress.close()
    result: dict[str, Any] = {"seeds": seeds, "first_seed": first_seed, "hours": hours, "changes": list(changes)}
    if baseline is not None:
        result["baseline"] = summarise(runs["baseline"])
    result["scenario"] = summarise(runs["scenario"])
    if baseline is not None:
        result["difference"] = differences(runs["baseline"], runs["scenario"])
    result["queues"] = _per_queue(runs)
    return result


def format_what_if(result: dict[str, Any]) -> str:
    """The summary as a table: mean [95 % interval] per KPI and column."""
    columns = [name for name in ("baseline", "scenario", "difference") if name in result]
    seeds = result["seeds"]
    head = (f"{seeds} seed{'s' if seeds != 1 else ''} ({result['first_seed']}.."
            f"{result['first_seed'] + seeds - 1}), {result['hours']:g} h each"
            + (f"; changes: {', '.join(result['changes'])}" if result["changes"] else ""))
    cells = [[key] + [_cell(result[column][key]) for column in columns] for key in SUMMARY_KEYS]
    header = ["KPI"] + [f"{column} (mean [95% CI])" for column in columns]
    widths = [max(len(row[i]) for row in cells + [header]) for i in range(len(header))]
    lines = [head, "", "  ".join(text.ljust(width) for text, width in zip(header, widths)).rstrip()]
    lines += ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(figure: dict[str, Any]) -> str:
    if figure["mean"] is None:
        return "—"
    text = _number(figure["mean"])
    if figure["lo"] is not None:
        text += f" [{_number(figure['lo'])}, {_number(figure['hi'])}]"
    return text


def _number(value: float) -> str:
    places = 4 if abs(value) < 1 else 2 if abs(value) < 100 else 1
    return f"{value:,.{places}f}"
