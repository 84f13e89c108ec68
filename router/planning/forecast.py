"""Forecast offered calls per queue per interval (DESIGN §11): counts in, forecasts out, no I/O.

Theory of operation
-------------------
Input is a `History`: offered calls (a call counts once, for the queue and the time of its
first `queue.joined`, as in the KPIs) per queue and per local interval of the centre's zone,
as router/planning/history.py reads them from PostgreSQL.

Grid.  Time is indexed in *local wall-clock slots*: every local day has S = 1440 / interval
slots, slot k starting k intervals after local midnight, so a week is always W = 7 S slots and
the weekly pattern stays aligned across daylight-saving changes (callers follow the wall
clock).  A fall-back day's repeated hour has two real intervals per slot: the slot holds their
mean (a rate per real interval).  A spring-forward day's skipped slots have no real interval:
they are unobserved.  Unobserved slots and *special days* (holidays of the queue's schedule:
their zeros must not teach the model that such a weekday is empty) are imputed with the mean
of the same weekly slot in the other weeks (the same daily slot when every week misses it)
before fitting, and are left out of every error measure.  A last history day cut short (the
run's last event before that day's last interval: live traffic today) is left out of the fit
and forecast as a gap day before the horizon.

Models come from statsforecast: one `StatsForecast` object fits every queue's series at once,
seasonal naive, the window average and MSTL with an AutoETS trend are all there with the same
interface, cross-validation (rolling origin, refit per fold) is built in, and its 2.x releases
need no numba (statsmodels has no window average and fits one series at a time).  Candidates:

- `seasonal_naive`: the same slot last week;
- `mean_Kw`: the mean of the same slot in the last K weeks (K = 4, fewer when the backtest's
  first training set is shorter; left out when K would be 1, which is seasonal naive);
- `mstl_ets`: MSTL with daily and weekly seasons and an AutoETS ("ZZN") trend, only when every
  training set holds at least two weeks.

Backtest: rolling origin with folds of one week each, the last ending on the last whole
history day: 3 folds, fewer when history is short so that two weeks come before the first
(weeks − 2, at least 1).  Less than 14 days of history is a `ForecastError` naming the run and
its days.  Backtest forecasts are post-processed like the final one (clipped at 0, closed
intervals 0).  MASE: the fold's MAE over the in-sample MAE of seasonal naive (lag one week) on
that fold's training data (on the whole history when that is a single week), averaged over the
folds.  Daily
MAPE (a fraction): the mean over the folds' days with calls, special days excluded, of
|forecast total − actual total| / actual total.  Per queue the lowest MASE wins (ties go to the
simpler model, in the order above).

Band: 90 % (5 % to 95 %), split-conformal on the chosen model's backtest residuals in open,
observed slots, each residual scaled by the Poisson standard deviation sqrt(max(f, 1/4)):
lo = f + q05 sqrt(max(f, 1/4)), hi likewise with q95, so it covers the count's Poisson noise and
the model's own error (the floor keeps a near-empty interval's band narrow but not zero); lo is
never negative and the band always contains f.

Horizon: `horizon_days` whole local days from the day after the last history day; one value
per real interval (a fall-back day has S + 60/interval of them, each repeated slot getting the
slot's forecast; a spring-forward day fewer).  An interval whose queue's schedule is closed
(at its start and at its last second: schedule edges on the grid make that exact) or a holiday
forecasts 0, with lo = hi = 0.  The share of the history's calls that arrived in closed intervals
is reported per queue (`history_closed_share`): calls a schedule says cannot come, which the
forecast leaves out.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from router.config.model import Schedule
from router.schedules import is_holiday, is_open

MIN_HISTORY_DAYS = 14
MAX_FOLDS = 3
MAX_WINDOW_WEEKS = 4
BAND_LEVEL = 90
_BAND_QUANTILES = (0.05, 0.95)
_VARIANCE_FLOOR = 0.25
# STL's trend and low-pass loess evaluated at every 10th point and interpolated between (R's stl
# takes every ceil(window / 10)th; statsmodels' default, every point, took 8x as long on 5 weeks
# of half-hours for a decomposition that differs by less than 0.005 calls).
_STL_JUMPS = {"trend_jump": 10, "low_pass_jump": 10}


class ForecastError(ValueError):
    """The history cannot support a forecast (too short, empty)."""


@dataclass(frozen=True)
class History:
    """Offered calls of one run per queue and local interval: counts in."""
    run: str
    timezone: str
    interval_minutes: int
    rows: tuple[tuple[str, datetime, int], ...]   # (queue, naive local interval start, offered)
    last_event: datetime | None                   # aware: the run's last event of any type


@dataclass
class QueueForecast:
    model: str
    scores: dict[str, dict[str, float | None]]    # model -> {"mase", "daily_mape"}
    starts: list[datetime]                         # aware local starts of the horizon's intervals
    offered: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    history: np.ndarray                            # per wall-clock slot, NaN where unobserved/special
    closed_share: float                            # history calls in intervals the schedule closes

    def as_dict(self) -> dict[str, Any]:
        chosen = self.scores[self.model]
        return {
            "model": self.model,
            "backtest": {"mase": chosen["mase"], "daily_mape": chosen["daily_mape"], "models": self.scores},
            "history_closed_share": round(self.closed_share, 4),
            "forecast": [{"start": start.isoformat(), "offered": round(float(f), 3),
                          "lo": round(float(low), 3), "hi": round(float(high), 3)}
                         for start, f, low, high in zip(self.starts, self.offered, self.lo, self.hi)],
        }


@dataclass
class Forecast:
    run: str
    timezone: str
    interval_minutes: int
    first_day: date                                # local date of history slot 0
    history_days: int                              # whole days fitted
    folds: int
    queues: dict[str, QueueForecast] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "timezone": self.timezone, "interval_minutes": self.interval_minutes,
                "history": {"from": self.first_day.isoformat(),
                            "to": (self.first_day + timedelta(days=self.history_days - 1)).isoformat(),
                            "backtest_folds": self.folds, "band_level": BAND_LEVEL},
                "queues": {name: queue.as_dict() for name, queue in self.queues.items()}}


# --- the local wall-clock grid ------------------------------------------------------------

def slots_per_day(interval_minutes: int) -> int:
    if interval_minutes <= 0 or 1440 % interval_minutes:
        raise ValueError(f"interval_minutes must divide a day, got {interval_minutes}")
    return 1440 // interval_minutes


def day_intervals(day: date, zone: ZoneInfo, interval_minutes: int) -> list[tuple[int, datetime]]:
    """The real intervals of local `day`: (wall-clock slot, aware local start), in time order."""
    start = datetime.combine(day, time(), tzinfo=zone).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(timezone.utc)
    step = timedelta(minutes=interval_minutes)
    intervals = []
    moment = start
    while moment < end:
        local = moment.astimezone(zone)
        intervals.append(((local.hour * 60 + local.minute) // interval_minutes, local))
        moment += step
    return intervals


def _multiplicity(day: date, zone: ZoneInfo, interval_minutes: int) -> np.ndarray:
    """Real intervals per wall-clock slot of `day`: 1, or 0 / 2 around a DST change."""
    per_day = slots_per_day(interval_minutes)
    midnight = datetime.combine(day, time(), tzinfo=zone)
    if midnight.utcoffset() == datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).utcoffset():
        return np.ones(per_day)
    counts = Counter(slot for slot, _ in day_intervals(day, zone, interval_minutes))
    return np.array([counts.get(slot, 0) for slot in range(per_day)], dtype=float)


def _interval_open(schedule: Schedule | None, start: datetime, width: timedelta) -> bool:
    if schedule is None:
        return True
    start = start.astimezone(timezone.utc)           # exact arithmetic (a local zone's is wall-clock)
    return is_open(schedule, start) or is_open(schedule, start + width - timedelta(seconds=1))


def _special_days(schedule: Schedule | None, zone: ZoneInfo, first_day: date, days: int) -> np.ndarray:
    """Per local day: a holiday of the queue's schedule (checked at local noon)."""
    if schedule is None or not schedule.holidays:
        return np.zeros(days, dtype=bool)
    return np.array([is_holiday(schedule, datetime.combine(first_day + timedelta(days=d), time(12), tzinfo=zone))
                     for d in range(days)])


def _open_slots(schedule: Schedule | None, zone: ZoneInfo, interval_minutes: int,
                first_day: date, days: int) -> np.ndarray:
    """Per wall-clock slot: open at its (first) real interval; a skipped slot counts as open."""
    per_day = slots_per_day(interval_minutes)
    if schedule is None:
        return np.ones(days * per_day, dtype=bool)
    opened = np.ones(days * per_day, dtype=bool)
    width = timedelta(minutes=interval_minutes)
    for d in range(days):
        seen: set[int] = set()
        for slot, start in day_intervals(first_day + timedelta(days=d), zone, interval_minutes):
            if slot not in seen:
                seen.add(slot)
                opened[d * per_day + slot] = _interval_open(schedule, start, width)
    return opened


def impute(values: np.ndarray, missing: np.ndarray, interval_minutes: int) -> np.ndarray:
    """`values` with missing slots replaced by the mean of the same weekly slot in the other weeks,
    else of the same daily slot, else 0."""
    per_day = slots_per_day(interval_minutes)
    filled = np.where(missing, np.nan, values.astype(float))
    for period in (7 * per_day, per_day):
        if not np.isnan(filled).any():
            break
        periods = -(-len(filled) // period)
        table = np.full(periods * period, np.nan)
        table[:len(filled)] = filled
        table = table.reshape(periods, period)
        seen = (~np.isnan(table)).sum(axis=0)
        means = np.where(seen > 0, np.nansum(table, axis=0) / np.maximum(seen, 1), np.nan)
        slot_means = np.resize(means, len(filled))
        filled = np.where(np.isnan(filled), slot_means, filled)
    return np.nan_to_num(filled, nan=0.0)


# --- models and backtest ------------------------------------------------------------------

def _candidates(first_train_slots: int, per_day: int) -> list[Any]:
    """The statsforecast models the shortest training set can support, simplest first."""
    from statsforecast.models import MSTL, AutoETS, SeasonalNaive, SeasonalWindowAverage

    week = 7 * per_day
    models: list[Any] = [SeasonalNaive(season_length=week, alias="seasonal_naive")]
    window = min(MAX_WINDOW_WEEKS, first_train_slots // week)
    if window >= 2:
        models.append(SeasonalWindowAverage(season_length=week, window_size=window, alias=f"mean_{window}w"))
    if first_train_slots >= 2 * week:
        models.append(MSTL(season_length=[per_day, week], trend_forecaster=AutoETS(model="ZZN"),
                           stl_kwargs=dict(_STL_JUMPS), alias="mstl_ets"))
    return models


def _frame(series: Mapping[str, np.ndarray]) -> Any:
    import pandas as pd

    return pd.concat([pd.DataFrame({"unique_id": name, "ds": np.arange(len(values)), "y": values})
                      for name, values in series.items()], ignore_index=True)


def _engine(models: list[Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from statsforecast import StatsForecast
    return StatsForecast(models=models, freq=1, n_jobs=1)


@dataclass
class _Fold:
    cut: int                       # first slot of the fold
    forecasts: dict[str, np.ndarray]


def _postprocess(values: np.ndarray, opened: np.ndarray) -> np.ndarray:
    return np.where(opened, np.clip(values, 0.0, None), 0.0)


def _scores(actual: np.ndarray, observed: np.ndarray, folds: list[_Fold], model: str,
            per_day: int) -> dict[str, float | None]:
    week = 7 * per_day
    ratios, mapes = [], []
    for fold in folds:
        predicted = fold.forecasts[model]
        y, ok = actual[fold.cut:fold.cut + week], observed[fold.cut:fold.cut + week]
        train, train_ok = actual[:fold.cut], observed[:fold.cut]
        if fold.cut < 2 * week:                          # one training week has no lag-week errors
            train, train_ok = actual, observed
        both = train_ok[week:] & train_ok[:-week]
        naive_errors = np.abs(train[week:] - train[:-week])[both]
        scale = naive_errors.mean() if naive_errors.size else 0.0
        if ok.any() and scale > 0:
            ratios.append(np.abs(y - predicted)[ok].mean() / scale)
        day_actual = np.where(ok, y, 0.0).reshape(7, per_day).sum(axis=1)
        day_predicted = np.where(ok, predicted, 0.0).reshape(7, per_day).sum(axis=1)
        counted = ok.reshape(7, per_day).any(axis=1) & (day_actual > 0)
        mapes.extend(np.abs(day_predicted - day_actual)[counted] / day_actual[counted])
    return {"mase": round(float(np.mean(ratios)), 4) if ratios else None,
            "daily_mape": round(float(np.mean(mapes)), 4) if mapes else None}


def _band(actual: np.ndarray, usable: np.ndarray, folds: list[_Fold], model: str,
          per_day: int) -> tuple[float, float]:
    """Quantiles of the backtest residuals in Poisson standard deviations."""
    week = 7 * per_day
    residuals = []
    for fold in folds:
        predicted = fold.forecasts[model]
        y, ok = actual[fold.cut:fold.cut + week], usable[fold.cut:fold.cut + week]
        residuals.append(((y - predicted) / np.sqrt(np.maximum(predicted, _VARIANCE_FLOOR)))[ok])
    pooled = np.concatenate(residuals)
    if pooled.size == 0:
        return -1.645, 1.645                       # no evidence: the Poisson normal approximation
    low, high = np.quantile(pooled, _BAND_QUANTILES)
    return float(low), float(high)


# --- the forecast ------------------------------------------------------------------------

@dataclass
class _Series:
    actual: np.ndarray             # per slot; NaN where unobserved or special
    observed: np.ndarray
    opened: np.ndarray
    filled: np.ndarray             # what the models see


@dataclass
class _Grid:
    zone: ZoneInfo
    interval_minutes: int
    first_day: date
    last_day: date                 # the last day with history (maybe cut short)
    fit_days: int                  # whole days fitted, from first_day
    gap_days: int                  # 1 when last_day is cut short and left out of the fit
    series: dict[str, _Series]

    @property
    def per_day(self) -> int:
        return slots_per_day(self.interval_minutes)


def _grid(history: History, schedules: Mapping[str, Schedule | None]) -> _Grid:
    """Each queue's history on the wall-clock grid, with its observed, open and imputed slots."""
    zone, minutes = ZoneInfo(history.timezone), history.interval_minutes
    per_day = slots_per_day(minutes)
    if not history.rows:
        raise ForecastError(f"run {history.run!r} has no queue.joined events to forecast from")
    first_day = min(start for _, start, _ in history.rows).date()
    last_day = max(start for _, start, _ in history.rows).date()
    last_interval = day_intervals(last_day, zone, minutes)[-1][1]
    gap_days = 0 if history.last_event is not None and history.last_event >= last_interval else 1
    fit_days = (last_day - first_day).days + 1 - gap_days
    if fit_days < MIN_HISTORY_DAYS:
        raise ForecastError(
            f"run {history.run!r} has {fit_days} whole day(s) of queue.joined history "
            f"({first_day} to {first_day + timedelta(days=max(fit_days, 1) - 1)}); "
            f"a forecast needs at least {MIN_HISTORY_DAYS}")

    multiplicity = np.concatenate([_multiplicity(first_day + timedelta(days=d), zone, minutes)
                                   for d in range(fit_days)])
    counts: dict[str, np.ndarray] = {}
    for queue, start, offered in history.rows:
        index = (start.date() - first_day).days * per_day + (start.hour * 60 + start.minute) // minutes
        if index < fit_days * per_day:
            counts.setdefault(queue, np.zeros(fit_days * per_day))[index] += offered
    series: dict[str, _Series] = {}
    for queue in sorted(counts):
        schedule = schedules.get(queue)
        special = np.repeat(_special_days(schedule, zone, first_day, fit_days), per_day)
        observed = (multiplicity > 0) & ~special
        actual = np.where(observed, counts[queue] / np.maximum(multiplicity, 1), np.nan)
        series[queue] = _Series(actual, observed, _open_slots(schedule, zone, minutes, first_day, fit_days),
                                impute(actual, ~observed, minutes))
    return _Grid(zone, minutes, first_day, last_day, fit_days, gap_days, series)


def _backtest(grid: _Grid) -> tuple[list[Any], dict[str, list[_Fold]]]:
    """The candidate models and, per queue, their post-processed forecasts of each fold."""
    week = 7 * grid.per_day
    n_folds = max(1, min(MAX_FOLDS, grid.fit_days // 7 - 2))      # two weeks before the first fold if possible
    models = _candidates(grid.fit_days * grid.per_day - n_folds * week, grid.per_day)
    frame = _frame({queue: s.filled for queue, s in grid.series.items()})
    cv = _engine(models).cross_validation(h=week, df=frame, n_windows=n_folds, step_size=week)
    folds: dict[str, list[_Fold]] = {}
    for queue, rows in cv.groupby("unique_id", sort=False):
        opened = grid.series[str(queue)].opened
        folds[str(queue)] = [
            _Fold(int(cutoff) + 1, {model.alias: _postprocess(fold.sort_values("ds")[model.alias].to_numpy(float),
                                                              opened[int(cutoff) + 1:int(cutoff) + 1 + week])
                                    for model in models})
            for cutoff, fold in rows.groupby("cutoff", sort=True)]
    return models, folds


def _pick(scores: dict[str, dict[str, float | None]]) -> str:
    """The lowest MASE; ties (and no MASE at all) go to the simpler model, listed first."""
    names = list(scores)
    return min(names, key=lambda name: (scores[name]["mase"] if scores[name]["mase"] is not None else float("inf"),
                                        names.index(name)))


def _predict(grid: _Grid, models: list[Any], chosen: dict[str, str], horizon_days: int) -> dict[str, np.ndarray]:
    """Each queue's chosen model fitted on the whole history: wall-clock slots of the horizon."""
    skip = grid.gap_days * grid.per_day
    predicted: dict[str, np.ndarray] = {}
    for model in models:
        group = [queue for queue in grid.series if chosen[queue] == model.alias]
        if group:
            frame = _frame({queue: grid.series[queue].filled for queue in group})
            out = _engine([model]).forecast(h=skip + horizon_days * grid.per_day, df=frame)
            for queue, rows in out.groupby("unique_id", sort=False):
                predicted[str(queue)] = rows.sort_values("ds")[model.alias].to_numpy(float)[skip:]
    return predicted


def _horizon(grid: _Grid, schedule: Schedule | None, slots: np.ndarray, band: tuple[float, float],
             horizon_days: int) -> tuple[list[datetime], np.ndarray, np.ndarray, np.ndarray]:
    """Wall-clock slot forecasts onto the horizon's real intervals: starts, offered, lo, hi."""
    width = timedelta(minutes=grid.interval_minutes)
    starts, rows = [], []
    for d in range(horizon_days):
        day = grid.last_day + timedelta(days=1 + d)
        for slot, start in day_intervals(day, grid.zone, grid.interval_minutes):
            value = max(float(slots[d * grid.per_day + slot]), 0.0)
            if not _interval_open(schedule, start, width):
                rows.append((0.0, 0.0, 0.0))
            else:
                spread = np.sqrt(max(value, _VARIANCE_FLOOR))
                low, high = max(value + band[0] * spread, 0.0), value + band[1] * spread
                rows.append((value, min(low, value), max(high, value)))
            starts.append(start)
    offered, lo, hi = (np.array(column) for column in zip(*rows))
    return starts, offered, lo, hi


def forecast_history(history: History, schedules: Mapping[str, Schedule | None], *, horizon_days: int = 7,
                     on_step: Callable[[str], None] | None = None) -> Forecast:
    """Backtest, pick and forecast every queue of `history` for `horizon_days` local days.

    `schedules` maps a queue to its schedule (None or absent: always open, no holidays).
    `on_step` is told the name of each step as it starts (a progress bar's hook)."""
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    step = on_step or (lambda _name: None)
    grid = _grid(history, schedules)
    step("backtest")
    models, folds = _backtest(grid)
    scores = {queue: {model.alias: _scores(s.actual, s.observed, folds[queue], model.alias, grid.per_day)
                      for model in models}
              for queue, s in grid.series.items()}
    chosen = {queue: _pick(scores[queue]) for queue in grid.series}
    step("forecast")
    predicted = _predict(grid, models, chosen, horizon_days)
    result = Forecast(history.run, history.timezone, grid.interval_minutes, grid.first_day, grid.fit_days,
                      len(next(iter(folds.values()))))
    for queue, s in grid.series.items():
        band = _band(s.actual, s.observed & s.opened, folds[queue], chosen[queue], grid.per_day)
        starts, offered, lo, hi = _horizon(grid, schedules.get(queue), predicted[queue], band, horizon_days)
        total = np.nansum(s.actual)
        closed_share = float(np.nansum(s.actual[~s.opened]) / total) if total > 0 else 0.0
        result.queues[queue] = QueueForecast(chosen[queue], scores[queue], starts, offered, lo, hi, s.actual,
                                             closed_share)
    return result


def daily_totals(queue: QueueForecast) -> dict[date, float]:
    """The forecast's offered calls per local day."""
    totals: dict[date, float] = {}
    for start, value in zip(queue.starts, queue.offered):
        totals[start.date()] = totals.get(start.date(), 0.0) + float(value)
    return totals


async def forecast_from_store(centre: Any, dsn: str, **options: Any) -> dict[str, Any]:
    """The store edge, router.planning.history.forecast_from_store, reachable from here too."""
    from router.planning.history import forecast_from_store as from_store

    return await from_store(centre, dsn, **options)
