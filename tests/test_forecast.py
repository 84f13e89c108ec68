"""`acd-router forecast` on synthetic history with known rates, stored in a real PostgreSQL.

Six weeks (Sun 13 Sep to Sat 24 Oct 2026, Europe/London) of Poisson arrivals per 30-minute
interval: `sales` is weekly-seasonal (busy Mondays, quiet Saturdays, closed Sundays and on the
office schedule's holidays, one in the last history week and one in the horizon); `support`
runs around the clock with a daily shape.  The horizon starts on Sun 25 Oct, the day clocks go
back.  The CLI runs once for the module (fitting takes seconds); the tests read its output.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import os
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
import pytest

from router.cli import main
from router.planning.forecast import BAND_LEVEL, ForecastError, History, day_intervals, forecast_history, impute
from router.planning.history import forecast_from_store
from router.planning.output import forecast_csv, forecast_table

ZONE = ZoneInfo("Europe/London")
FIRST_DAY, DAYS = date(2026, 9, 13), 42
HORIZON_START = date(2026, 10, 25)
HOLIDAY_IN_HISTORY, HOLIDAY_IN_HORIZON = date(2026, 10, 19), date(2026, 10, 28)
RUN, SHORT_RUN = "sim:forecast-test", "sim:forecast-short"
SALES_DAY = {0: 900, 1: 750, 2: 700, 3: 700, 4: 600, 5: 300, 6: 0}     # weekday -> calls (closed Sunday)
SUPPORT_DAY = {0: 500, 1: 500, 2: 500, 3: 500, 4: 500, 5: 400, 6: 350}

CONFIG = """\
timezone: Europe/London
skills: [{id: general}]
agents: [{id: a1, name: Ann, endpoint: PJSIP/1001, skills: {general: 5}}]
queues:
  - {id: sales, name: Sales, skills: {general: 1}, schedule: office}
  - {id: support, name: Support, skills: {general: 1}}
schedules:
  - id: office
    timezone: Europe/London
    hours: {mon: ["08:00-20:00"], tue: ["08:00-20:00"], wed: ["08:00-20:00"], thu: ["08:00-20:00"],
            fri: ["08:00-20:00"], sat: ["08:00-20:00"]}
    holidays: ["2026-10-19", "2026-10-28"]
"""


def _shape(centres: list[tuple[float, float, float]]) -> np.ndarray:
    """Intraday profile over 48 half-hours (sums to 1): a sum of bumps (centre slot, width, weight)."""
    slots = np.arange(48) + 0.5
    shape = sum(weight * np.exp(-((slots - at) / width) ** 2) for at, width, weight in centres)
    return shape / shape.sum()


SALES_SHAPE = _shape([(20, 4, 1.0), (30, 4, 0.7)])
SALES_SHAPE[:16] = SALES_SHAPE[40:] = 0                                  # office hours 08:00-20:00
SALES_SHAPE /= SALES_SHAPE.sum()
SUPPORT_SHAPE = _shape([(19, 6, 1.0), (34, 7, 0.8)]) + 0.004
SUPPORT_SHAPE /= SUPPORT_SHAPE.sum()


def true_rates(queue: str, day: date) -> np.ndarray:
    """Expected calls per local half-hour of `day` (no DST change inside the history)."""
    if queue == "sales":
        holiday = day in (HOLIDAY_IN_HISTORY, HOLIDAY_IN_HORIZON)
        return np.zeros(48) if holiday else SALES_DAY[day.weekday()] * SALES_SHAPE
    return SUPPORT_DAY[day.weekday()] * SUPPORT_SHAPE


def poisson_floor(daily_rates: list[float]) -> float:
    """Mean absolute percentage error of a perfect forecast of Poisson daily totals."""
    return float(np.mean([math.sqrt(2 / (math.pi * rate)) for rate in daily_rates]))


async def _store(dsn: str, run: str, first_day: date, days: int, seed: int) -> None:
    """Calls with Poisson counts per interval at uniform times inside it, as `queue.joined` events;
    200 sales calls also join support later (an overflow move: they count once, for sales)."""
    rng = np.random.default_rng(seed)
    stamps, queues, calls = [], [], []
    for d in range(days):
        day = first_day + timedelta(days=d)
        midnight = datetime.combine(day, time(), tzinfo=ZONE).astimezone(timezone.utc)
        for queue in ("sales", "support"):
            counts = rng.poisson(true_rates(queue, day))
            for slot in np.flatnonzero(counts):
                offsets = rng.uniform(0, 1800, counts[slot])
                stamps += [midnight + timedelta(seconds=1800 * int(slot) + float(s)) for s in offsets]
                queues += [queue] * int(counts[slot])
    calls = [f"{run}-{i}" for i in range(len(stamps))]
    moved = [i for i, queue in enumerate(queues) if queue == "sales"][:200]
    stamps += [stamps[i] + timedelta(seconds=60) for i in moved]
    queues += ["support"] * len(moved)
    calls += [calls[i] for i in moved]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO events (id, ts, run, call_id, type, queue) "
            "SELECT gen_random_uuid(), t, $1, c, 'queue.joined', q FROM unnest($2::timestamptz[], $3::text[], "
            "$4::text[]) AS u(t, c, q)", run, stamps, calls, queues)
        end = datetime.combine(first_day + timedelta(days=days), time(0, 5), tzinfo=ZONE)
        await conn.execute("INSERT INTO events (id, ts, run, call_id, type, queue) "
                           "VALUES (gen_random_uuid(), $2, $1, $3, 'call.ended', 'support')", run, end, calls[-1])
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def centre_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("forecast") / "router.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def stored(database_url):
    from router.store.database import ensure_schema

    async def fill() -> None:
        await ensure_schema(database_url)
        await _store(database_url, RUN, FIRST_DAY, DAYS, seed=14)
        await _store(database_url, SHORT_RUN, date(2026, 10, 1), 10, seed=15)
    asyncio.run(fill())
    return database_url


@pytest.fixture(scope="module")
def cli_run(stored, centre_file, tmp_path_factory):
    """`acd-router forecast --json --plot` once: (the JSON object, the PNG path)."""
    png = tmp_path_factory.mktemp("plot") / "forecast.png"
    out = io.StringIO()
    previous = os.environ.get("ACD_DATABASE_URL")
    os.environ["ACD_DATABASE_URL"] = stored
    try:
        with contextlib.redirect_stdout(out):
            code = main(["forecast", "--config", str(centre_file), "--run", RUN, "--json", "--plot", str(png)])
    finally:
        if previous is None:
            del os.environ["ACD_DATABASE_URL"]
        else:
            os.environ["ACD_DATABASE_URL"] = previous
    assert code == 0
    return json.loads(out.getvalue()), png


def _daily(rows: list[dict]) -> dict[date, float]:
    totals: dict[date, float] = {}
    for row in rows:
        day = date.fromisoformat(row["start"][:10])
        totals[day] = totals.get(day, 0.0) + row["offered"]
    return totals


def test_json_contract(cli_run):
    result, _ = cli_run
    assert result["timezone"] == "Europe/London" and result["interval_minutes"] == 30
    assert set(result["queues"]) == {"sales", "support"}
    for queue in result["queues"].values():
        assert queue["model"] in {"seasonal_naive", "mean_3w", "mstl_ets"}
        assert set(queue["backtest"]) >= {"mase", "daily_mape"}
        assert queue["history_closed_share"] == 0              # no call came while the schedule was closed
        for row in queue["forecast"]:
            assert set(row) == {"start", "offered", "lo", "hi"}
            assert 0 <= row["lo"] <= row["offered"] <= row["hi"]
            assert datetime.fromisoformat(row["start"]).utcoffset() is not None


def test_horizon_starts_the_local_day_after_the_history_across_the_clock_change(cli_run):
    support = cli_run[0]["queues"]["support"]["forecast"]
    assert support[0]["start"] == "2026-10-25T00:00:00+01:00"
    days = {}
    for row in support:
        days.setdefault(row["start"][:10], []).append(row["start"])
    assert len(days) == 7 and min(days) == "2026-10-25" and max(days) == "2026-10-31"
    assert len(days["2026-10-25"]) == 50                     # the hour from 01:00 happens twice
    assert "2026-10-25T01:00:00+01:00" in days["2026-10-25"] and "2026-10-25T01:00:00+00:00" in days["2026-10-25"]
    assert all(len(starts) == 48 for day, starts in days.items() if day != "2026-10-25")
    assert days["2026-10-26"][0] == "2026-10-26T00:00:00+00:00"


def test_closed_hours_and_holidays_forecast_zero_and_a_past_holiday_does_not_poison_its_weekday(cli_run):
    sales = cli_run[0]["queues"]["sales"]["forecast"]
    for row in sales:
        local = datetime.fromisoformat(row["start"])
        closed = (local.date() == HOLIDAY_IN_HORIZON or local.weekday() == 6 or not 8 <= local.hour < 20)
        if closed:
            assert row["offered"] == row["lo"] == row["hi"] == 0, row
        else:
            assert row["hi"] > 0, row
    monday = _daily(sales)[date(2026, 10, 26)]               # the Monday a week after the holiday
    print(f"\nsales Monday 26 Oct: forecast {monday:.0f}, true rate {SALES_DAY[0]}")
    assert abs(monday - SALES_DAY[0]) / SALES_DAY[0] < 0.1


def test_accuracy_against_the_poisson_floor_and_seasonal_naive(cli_run):
    result = cli_run[0]
    backtest_days = [FIRST_DAY + timedelta(days=d) for d in range(DAYS - 21, DAYS)]
    for name, queue in result["queues"].items():
        rates = [true_rates(name, day).sum() for day in backtest_days]
        floor = poisson_floor([rate for rate in rates if rate > 0])
        horizon = _daily(queue["forecast"])
        truth = {day: true_rates(name, day).sum() for day in horizon}
        if name == "support":                 # the clock change adds an hour of the night's rate
            truth[HORIZON_START] += 2 * true_rates(name, HORIZON_START)[2]
        errors = [abs(horizon[day] - truth[day]) / truth[day] for day in horizon if truth[day] > 0]
        backtest = queue["backtest"]
        print(f"\n{name}: model {queue['model']}, MASE {backtest['mase']}, backtest daily MAPE "
              f"{backtest['daily_mape']:.4f}, Poisson floor {floor:.4f} (x{backtest['daily_mape'] / floor:.2f}); "
              f"horizon daily MAPE against the true rates {np.mean(errors):.4f}; all models {backtest['models']}")
        assert backtest["daily_mape"] <= 1.5 * floor
        assert backtest["mase"] < 1
    assert result["queues"]["sales"]["backtest"]["models"]["seasonal_naive"]["mase"] > \
        result["queues"]["sales"]["backtest"]["mase"]


def test_the_band_covers_about_ninety_percent_of_new_counts(cli_run):
    rng = np.random.default_rng(99)
    for name, queue in cli_run[0]["queues"].items():
        inside = []
        for row in queue["forecast"]:
            local = datetime.fromisoformat(row["start"])
            rate = true_rates(name, local.date())[(local.hour * 60 + local.minute) // 30]
            if row["hi"] > 0:                                 # open intervals
                inside.append(row["lo"] <= rng.poisson(rate) <= row["hi"])
        print(f"\n{name}: {BAND_LEVEL} % band holds {np.mean(inside):.3f} of {len(inside)} fresh Poisson counts")
        assert 0.8 <= np.mean(inside) <= 0.98


def test_local_days_have_their_real_intervals_across_clock_changes():
    spring = day_intervals(date(2026, 3, 29), ZONE, 30)
    assert len(spring) == 46 and {2, 3}.isdisjoint(slot for slot, _ in spring)
    autumn = day_intervals(date(2026, 10, 25), ZONE, 30)
    assert len(autumn) == 50 and [slot for slot, _ in autumn][:6] == [0, 1, 2, 3, 2, 3]
    assert [start.utcoffset() for _, start in autumn][2:6] == [timedelta(hours=1)] * 2 + [timedelta(0)] * 2


def test_missing_slots_take_the_same_slot_of_the_other_weeks():
    week = 7 * 48
    values = np.tile(np.arange(week, dtype=float), 3)
    missing = np.zeros(3 * week, dtype=bool)
    missing[week + 10:week + 58] = True                       # a whole special day in week two
    values[missing] = 0
    filled = impute(values, missing, 30)
    assert np.array_equal(filled, np.tile(np.arange(week, dtype=float), 3))


def test_a_last_day_cut_short_is_left_out_of_the_fit_and_the_horizon_still_starts_the_day_after():
    rng = np.random.default_rng(3)
    first, days = date(2026, 3, 1), 15
    rows = tuple(("support", datetime.combine(first + timedelta(days=d), time()) + timedelta(minutes=30 * slot),
                  int(count))
                 for d in range(days) for slot, count in enumerate(rng.poisson(true_rates("support", first)))
                 if count and (d < days - 1 or slot < 28))                  # the last day ends at 14:00
    cut_short = History("today", "UTC", 30, rows, datetime(2026, 3, 15, 14, 0, tzinfo=timezone.utc))
    result = forecast_history(cut_short, {}, horizon_days=2).as_dict()
    assert result["history"]["to"] == "2026-03-14"
    support = result["queues"]["support"]
    assert support["forecast"][0]["start"] == "2026-03-16T00:00:00+00:00" and len(support["forecast"]) == 96
    assert support["model"] == "seasonal_naive" and support["history_closed_share"] == 0
    with pytest.raises(ForecastError, match=r"run 'today' has 13 whole day\(s\)"):
        forecast_history(History("today", "UTC", 30, tuple(row for row in rows if row[1] < datetime(2026, 3, 14)),
                                 datetime(2026, 3, 14, 0, 5, tzinfo=timezone.utc)), {})


def test_history_counts_first_joins_per_local_wall_clock_interval(stored):
    """Both real 01:00-01:30 intervals of the autumn change share the local 01:00 bucket; a call
    that joins a second queue counts once, for its first."""
    from router.planning.history import read_history
    from router.store.database import connect

    moments = [datetime(2026, 10, 25, 0, 10, tzinfo=timezone.utc),      # 01:10 BST
               datetime(2026, 10, 25, 1, 10, tzinfo=timezone.utc),      # 01:10 GMT
               datetime(2026, 10, 25, 1, 40, tzinfo=timezone.utc)]      # 01:40 GMT

    async def read() -> History:
        conn = await connect(stored)
        try:
            await conn.execute(
                "INSERT INTO events (id, ts, run, call_id, type, queue) "
                "SELECT gen_random_uuid(), t, 'sim:clocks', c, 'queue.joined', q "
                "FROM unnest($1::timestamptz[], $2::text[], $3::text[]) AS u(t, c, q)",
                moments + [moments[2] + timedelta(minutes=5)], ["c1", "c2", "c3", "c3"],
                ["sales", "sales", "sales", "support"])
            return await read_history(conn, run="sim:clocks", timezone="Europe/London", interval_minutes=30)
        finally:
            await conn.close()

    history = asyncio.run(read())
    assert history.rows == (("sales", datetime(2026, 10, 25, 1, 0), 2), ("sales", datetime(2026, 10, 25, 1, 30), 1))
    assert history.last_event == moments[2] + timedelta(minutes=5)


def test_too_little_history_is_a_clear_error(stored):
    from router.config.model import Centre

    centre = Centre(source="test", skills={}, agents={}, queues={}, timezone="Europe/London")
    with pytest.raises(ForecastError, match=r"run 'sim:forecast-short' has 10 whole day\(s\).*at least 14"):
        asyncio.run(forecast_from_store(centre, stored, run=SHORT_RUN, show_progress=False))
    with pytest.raises(ForecastError, match="run 'nothing' has no queue.joined events"):
        forecast_history(History("nothing", "UTC", 30, (), None), {})


def test_table_for_humans(cli_run):
    table = forecast_table(cli_run[0])
    lines = table.splitlines()
    sales = next(line for line in lines if line.startswith("sales "))
    assert cli_run[0]["queues"]["sales"]["model"] in sales and "%" in sales
    day_rows = [line for line in lines if line[:3] in {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}]
    assert [row[4:14] for row in day_rows] == [f"2026-10-{d}" for d in range(25, 32)]
    assert day_rows[3].split()[2] == "0"                         # Wed 28 Oct: a sales holiday


def test_csv_and_plot_files(cli_run, tmp_path):
    result, png = cli_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rows = list(csv.DictReader(io.StringIO(forecast_csv(result))))
    assert len(rows) == sum(len(q["forecast"]) for q in result["queues"].values())
    first = next(r for r in rows if r["queue"] == "support")
    assert first["start"] == "2026-10-25T00:00:00+01:00" and first["end"] == "2026-10-25T00:30:00+01:00"
    assert float(first["offered"]) == result["queues"]["support"]["forecast"][0]["offered"]
