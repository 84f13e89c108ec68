"""`acd-router staff`: forecast + measured inputs -> Erlang A plan (-> verified plan) -> table, CSV, plot.

Theory of operation
-------------------
The edges of the command.  `read_inputs` reads the run's history (AHT, patience)
and, without a forecast file, the forecast (router.planning.forecast) from the
store; `build_report` is pure apart from the simulator's worker processes: it
sizes every forecast interval with Erlang A (router.planning.staffing) and, with
`verify`, adjusts that plan on the real engine (router.planning.verify).  The
report's `queues` rows carry, per interval: start, offered, agents (the
verified count with --verify, else Erlang A's), scheduled (agents after
shrinkage), service_level and abandonment_rate (Erlang A's at Erlang A's
count) and, with --verify, erlang_agents, simulated_service_level (pooled over
seeds, KPI definition) and simulated_abandonment_rate.  `format_table`,
`to_csv` and `plot` only render a report.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from router.config.model import Centre
from router.planning.measure import Measured, measure_queues
from router.planning.staffing import QueueInputs, plan_staffing, scheduled
from router.planning.verify import MAX_ROUNDS, Grid, day_jobs
from router.planning.verify import verify as verify_plan
from router.progress import Progress


async def read_inputs(centre: Centre, dsn: str, *, run: str, forecast_file: str | None,
                      show_progress: bool) -> tuple[dict[str, Any], dict[str, Measured], list[str]]:
    """The forecast (from the file, else from the store) and the run's measured AHT and patience."""
    from router.store.database import connect, ensure_schema

    await ensure_schema(dsn)
    if forecast_file is not None:
        with open(forecast_file, encoding="utf-8") as source:
            forecast = json.load(source)
    else:
        from router.planning.forecast import forecast_from_store
        forecast = await forecast_from_store(centre, dsn, run=run, show_progress=show_progress)
    conn = await connect(dsn)
    try:
        measured, notes = await measure_queues(conn, centre, run=run)
    finally:
        await conn.close()
    return forecast, measured, notes


def build_report(centre: Centre, forecast: dict[str, Any], measured: dict[str, Measured], notes: list[str], *,
                 verify: bool = False, seeds: int = 4, workers: int | None = None, dedicated: bool = False,
                 show_progress: bool = False) -> dict[str, Any]:
    """The staffing report (see the module head)."""
    unknown = sorted(set(forecast["queues"]) - set(centre.queues))
    if unknown:
        raise ValueError(f"the forecast has queues the config does not: {', '.join(unknown)}")
    inputs = {q: QueueInputs(m.aht_s, m.patience_s, centre.queues[q].sl_target, centre.queues[q].sl_threshold_s)
              for q, m in measured.items()}
    shrinkage = centre.planning.shrinkage
    report = plan_staffing(forecast, inputs, shrinkage)
    report["timezone"] = forecast.get("timezone", centre.timezone)
    report["inputs"] = {q: {"aht_s": round(m.aht_s, 1), "patience_s": round(m.patience_s, 1),
                            "aht_source": m.aht_source, "patience_source": m.patience_source}
                        for q, m in measured.items() if q in forecast["queues"]}
    report["targets"] = {q: centre.queues[q].sl_target for q in forecast["queues"]}
    report["notes"] = notes
    if not verify:
        return report
    erlang_plan = {q: [row["agents"] for row in rows] for q, rows in report["queues"].items()}
    jobs = len(day_jobs(centre, Grid.from_forecast(forecast, centre.timezone), erlang_plan, inputs, seeds,
                        dedicated=dedicated))
    progress = Progress(jobs * MAX_ROUNDS, "verifying") if show_progress else None
    try:
        checked = verify_plan(centre, forecast, erlang_plan, inputs, seeds=seeds, workers=workers,
                              progress=progress, dedicated=dedicated)
    finally:
        if progress:
            progress.close()
    for queue_id, rows in report["queues"].items():
        for row, result in zip(rows, checked["queues"][queue_id]):
            row.update(result)
            row["scheduled"] = scheduled(row["agents"], shrinkage)
    report["verify"] = checked["summary"]
    for queue_id, rows in report["queues"].items():
        report["verify"]["queues"][queue_id].update(_erlang_vs_simulation(rows, centre.queues[queue_id].sl_target))
    return report


def _erlang_vs_simulation(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """How the simulator judged the Erlang A plan: intervals it missed, mean SL gap (simulated − Erlang A)."""
    judged = [row for row in rows if row["offered"] > 0 and row["erlang_simulated_service_level"] is not None]
    gaps = [row["erlang_simulated_service_level"] - row["service_level"] for row in judged]
    return {"intervals_with_calls": len(judged),
            "erlang_plan_intervals_missed": sum(row["erlang_simulated_service_level"] < target for row in judged),
            "mean_sl_gap_simulated_minus_erlang": round(sum(gaps) / len(gaps), 4) if gaps else None}


def format_table(report: dict[str, Any]) -> str:
    """A compact table per queue: one line per interval with calls."""
    verified = "verify" in report
    lines: list[str] = []
    for queue_id, rows in report["queues"].items():
        used = report["inputs"][queue_id]
        lines.append(f"{queue_id}: AHT {used['aht_s']:g} s ({used['aht_source']}), "
                     f"patience {used['patience_s']:g} s ({used['patience_source']})")
        head = f"  {'start':<16} {'offered':>7} {'Erlang A':>8} {'SL(A)':>6}"
        head += f" {'verified':>8} {'SL(sim)':>7} {'SL(sim,A)':>9}" if verified else f" {'abandon':>7}"
        lines.append(head + f" {'scheduled':>9}")
        for row in rows:
            if row["offered"] <= 0 and row["agents"] == 0:
                continue
            erlang = row.get("erlang_agents", row["agents"])
            line = f"  {row['start'][:16]:<16} {row['offered']:>7.1f} {erlang:>8} {_pct(row['service_level']):>6}"
            if verified:
                line += (f" {row['agents']:>8} {_pct(row['simulated_service_level']):>7}"
                         f" {_pct(row['erlang_simulated_service_level']):>9}")
            else:
                line += f" {_pct(row['abandonment_rate']):>7}"
            lines.append(line + f" {row['scheduled']:>9}")
    if verified:
        summary = report["verify"]
        state = "converged" if summary["converged"] else "NOT converged (rounds ran out)"
        state += ", dedicated agents (no multi-skill)" if summary["dedicated"] else ""
        lines.append(f"\nverified with {summary['seeds']} seeds in {summary['rounds']} rounds, {state}"
                     + ("" if summary["feasible"] else "; NO plan met every target"))
        lines.append(f"  {'queue':<10} {'Erlang A h':>10} {'verified h':>10} {'more':>5} {'fewer':>5} "
                     f"{'SL sim of A':>11} {'SL sim':>7} {'A missed':>8} {'SL gap':>7}")
        for queue_id, figures in summary["queues"].items():
            lines.append(f"  {queue_id:<10} {figures['erlang_agent_hours']:>10.1f} "
                         f"{figures['verified_agent_hours']:>10.1f} {figures['intervals_more']:>5} "
                         f"{figures['intervals_fewer']:>5} "
                         f"{_pct(figures['erlang_plan_simulated_service_level']):>11} "
                         f"{_pct(figures['verified_simulated_service_level']):>7} "
                         f"{figures['erlang_plan_intervals_missed']:>3}/{figures['intervals_with_calls']:<4} "
                         f"{_points(figures['mean_sl_gap_simulated_minus_erlang']):>7}")
        lines.append("  (h: agent-hours on the phones; more/fewer: intervals the simulation changed; SL sim of A: "
                     "the Erlang A plan simulated;\n   A missed: its intervals below target; SL gap: simulated − "
                     "Erlang A service level of that plan, mean over intervals)")
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}pp"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


CSV_COLUMNS = ("queue", "start", "offered", "agents", "scheduled", "service_level", "abandonment_rate",
               "erlang_agents", "simulated_service_level", "simulated_abandonment_rate",
               "erlang_simulated_service_level")


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = CSV_COLUMNS if "verify" in report else CSV_COLUMNS[:7]
    writer.writerow(columns)
    for queue_id, rows in report["queues"].items():
        for row in rows:
            writer.writerow([queue_id] + ["" if row.get(c) is None else row[c] for c in columns[1:]])
    return out.getvalue()


def plot(report: dict[str, Any], path: str) -> None:
    """Per queue, agents needed by interval (Erlang A and verified) and the service levels (PNG).

    Only the busy intervals are drawn (those where some queue has calls or agents), side by side: a
    week's nights and Sundays would otherwise flatten the days into spikes.  A dotted line marks each
    new day."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queues = list(report["queues"])
    busy = sorted({row["start"] for rows in report["queues"].values() for row in rows
                   if row["offered"] > 0 or row["agents"] > 0 or row.get("erlang_agents", 0) > 0},
                  key=lambda start: datetime.fromisoformat(start))
    position = {start: i for i, start in enumerate(busy)}
    figure, axes = plt.subplots(len(queues), 1, figsize=(11, 2.6 * len(queues)), squeeze=False, sharex=True)
    verified = "verify" in report
    for axis, queue_id in zip(axes[:, 0], queues):
        rows = [row for row in report["queues"][queue_id] if row["start"] in position]
        at = [position[row["start"]] for row in rows]
        erlang = [row.get("erlang_agents", row["agents"]) for row in rows]
        axis.step(at + [len(busy)], erlang + erlang[-1:], where="post", label="agents, Erlang A", color="tab:blue")
        if verified:
            agents = [row["agents"] for row in rows]
            axis.step(at + [len(busy)], agents + agents[-1:], where="post", label="agents, verified",
                      color="tab:orange")
        axis.set_ylim(bottom=0)
        axis.set_ylabel("agents")
        axis.set_title(f"{queue_id} (SL target {report['targets'][queue_id]:.0%})", loc="left", fontsize=10)
        levels = axis.twinx()
        levels.set_ylim(0, 1.05)
        levels.set_ylabel("service level")
        middles = [i + 0.5 for i in at]
        levels.plot(middles, [row["service_level"] for row in rows], "o", markersize=3, color="tab:blue",
                    alpha=0.6, label="SL, Erlang A")
        if verified:
            levels.plot(middles, [row["simulated_service_level"] for row in rows], "x", color="tab:orange",
                        label="SL, simulated (verified plan)")
        levels.axhline(report["targets"][queue_id], color="grey", linestyle=":", linewidth=1, label="SL target")
    days = [i for i, start in enumerate(busy) if i == 0 or busy[i - 1][:10] != start[:10]]
    for axis in axes[:, 0]:
        for i in days[1:]:
            axis.axvline(i, color="black", linestyle=":", linewidth=0.8)
    step = max(1, len(busy) // 24)
    ticks = sorted(set(days) | {i for i in range(0, len(busy), step) if all(abs(i - d) >= step for d in days)})
    axes[-1, 0].set_xticks(ticks)
    axes[-1, 0].set_xticklabels([datetime.fromisoformat(busy[i]).strftime("%a %d %H:%M" if i in days else "%H:%M")
                                 for i in ticks], rotation=60, fontsize=7)
    axes[-1, 0].set_xlim(0, max(1, len(busy)))
    axes[-1, 0].set_xlabel(f"busy {report['interval_minutes']}-minute intervals ({report['timezone']})")
    handles = [h for axis in figure.axes for h in axis.get_legend_handles_labels()[0]]
    unique = {h.get_label(): h for h in handles}
    figure.legend(list(unique.values()), list(unique), loc="upper center", ncol=len(unique), fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=100)
    plt.close(figure)
