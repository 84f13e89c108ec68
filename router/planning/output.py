"""The forecast for people and spreadsheets: a terminal table, CSV, and a PNG plot.

The table and the CSV read the `--json` object (so a saved forecast renders the same way);
the plot needs the history too, so it takes the `Forecast` itself.  matplotlib runs on the
Agg backend (no display needed) and is imported only when a plot is asked for.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from router.planning.forecast import BAND_LEVEL, Forecast

PLOT_HISTORY_WEEKS = 3


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def forecast_table(result: dict[str, Any]) -> str:
    """Per queue the chosen model and its backtest, then offered calls per local day and queue."""
    queues = sorted(result["queues"])
    history = result.get("history", {})
    lines = [f"Forecast of run {result.get('run', '?')!r} from history {history.get('from')} to {history.get('to')} "
             f"({history.get('backtest_folds')} backtest week(s); {result['interval_minutes']}-minute intervals, "
             f"{result['timezone']})", ""]
    width = max([5] + [len(q) for q in queues])
    lines.append(f"{'queue':<{width}}  {'model':<14} {'MASE':>6}  {'daily MAPE':>10}   other models (MASE)")
    for name in queues:
        queue = result["queues"][name]
        mase = queue["backtest"]["mase"]
        others = ", ".join(f"{model} {scores['mase'] if scores['mase'] is not None else '-'}"
                           for model, scores in queue["backtest"].get("models", {}).items() if model != queue["model"])
        lines.append(f"{name:<{width}}  {queue['model']:<14} {'-' if mase is None else f'{mase:.3f}':>6}  "
                     f"{_percent(queue['backtest']['daily_mape']):>10}   {others}")
    for name in queues:
        share = result["queues"][name].get("history_closed_share", 0.0)
        if share >= 0.005:
            lines.append(f"note: {100 * share:.1f} % of {name}'s history arrived while its schedule was closed; "
                         f"closed intervals forecast 0")
    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
    for name in queues:
        for row in result["queues"][name]["forecast"]:
            cell = totals[row["start"][:10]][name]
            cell[0] += row["offered"]
            cell[1] += row["lo"]
            cell[2] += row["hi"]
    column = max([18] + [len(q) for q in queues])
    lines += ["", f"Offered calls per day (interval sums of the {BAND_LEVEL} % band in brackets)",
              f"{'day':<15}" + "".join(f"{q:>{column + 2}}" for q in queues)]
    for day in sorted(totals):
        label = datetime.fromisoformat(day).strftime("%a %Y-%m-%d")
        cells = "".join(f"{f'{t[0]:.0f} ({t[1]:.0f}-{t[2]:.0f})':>{column + 2}}" for t in
                        (totals[day][q] for q in queues))
        lines.append(f"{label:<15}{cells}")
    return "\n".join(lines)


def forecast_csv(result: dict[str, Any]) -> str:
    """One row per queue and interval: queue, start, end, offered, lo, hi."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["queue", "start", "end", "offered", "lo", "hi", "model"])
    step = timedelta(minutes=result["interval_minutes"])
    for name in sorted(result["queues"]):
        queue = result["queues"][name]
        for row in queue["forecast"]:
            start = datetime.fromisoformat(row["start"])
            end = (start + step).astimezone(start.tzinfo)     # exact time, then its local reading
            writer.writerow([name, row["start"], end.isoformat(), row["offered"], row["lo"], row["hi"],
                             queue["model"]])
    return out.getvalue()


def plot_forecast(forecast: Forecast, path: str) -> None:
    """A PNG with one panel per queue: the last weeks of history and the forecast with its band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    names = sorted(forecast.queues)
    figure, axes = plt.subplots(len(names), 1, figsize=(14, 3.6 * len(names)), squeeze=False, layout="constrained")
    step = timedelta(minutes=forecast.interval_minutes)
    per_day = 1440 // forecast.interval_minutes
    origin = datetime.combine(forecast.first_day, datetime.min.time())
    for axis, name in zip(axes[:, 0], names):
        queue = forecast.queues[name]
        shown = min(len(queue.history), PLOT_HISTORY_WEEKS * 7 * per_day)
        first = len(queue.history) - shown
        past = [origin + (first + i) * step for i in range(shown)]       # local wall clock
        future = [start.replace(tzinfo=None) for start in queue.starts]
        axis.plot(past, queue.history[first:], color="0.35", linewidth=0.8, label="offered (history)")
        axis.fill_between(future, queue.lo, queue.hi, color="tab:blue", alpha=0.25, step="post",
                          label=f"{BAND_LEVEL} % band")
        axis.plot(future, queue.offered, color="tab:blue", linewidth=1.0, drawstyle="steps-post",
                  label=f"forecast ({queue.model})")
        if future:
            axis.axvline(future[0], color="tab:red", linewidth=0.8, linestyle="--")
        scores = queue.scores[queue.model]
        mase = "-" if scores["mase"] is None else f"{scores['mase']:.2f}"
        axis.set_title(f"{name}: {queue.model}, backtest MASE {mase}, daily MAPE {_percent(scores['daily_mape'])}",
                       fontsize=11, loc="left")
        axis.set_ylabel(f"calls per {forecast.interval_minutes} min")
        axis.set_ylim(bottom=0, top=max(1.0, float(np.nanmax(np.concatenate([queue.history[first:],
                                                                               queue.hi]))) * 1.05))
        axis.xaxis.set_major_locator(mdates.DayLocator(interval=2))
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"Offered calls per queue, history and forecast ({forecast.timezone} local time)", fontsize=12)
    figure.savefig(path, dpi=100)
    plt.close(figure)
