"""router.schedules.next_open: the first open instant at or after a moment, in local time."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from router.config import load_config
from router.config.model import Schedule
from router.schedules import is_open, next_open

UTC = timezone.utc
OFFICE = load_config(None).schedules["office"]        # Europe/London, Mon-Fri 08-20, Sat 09-13, Christmas off


@pytest.mark.parametrize("moment, expected", [
    (datetime(2026, 11, 23, 10, 0, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),   # open: itself
    (datetime(2026, 11, 23, 6, 0, tzinfo=UTC), datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),     # Mon before 08:00
    (datetime(2026, 11, 23, 20, 0, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),    # closing: next day
    (datetime(2026, 11, 28, 13, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),    # Sat 13:00: Monday
    # the clocks go back on Sun 25 Oct 2026: Friday evening BST -> Monday 08:00 GMT
    (datetime(2026, 10, 23, 19, 30, tzinfo=UTC), datetime(2026, 10, 24, 8, 0, tzinfo=UTC)),   # Sat 09:00 BST
    (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC)),    # Mon 08:00 GMT
    # the clocks go forward on Sun 29 Mar 2026: Saturday 13:00 GMT -> Monday 08:00 BST = 07:00 UTC
    (datetime(2026, 3, 28, 13, 0, tzinfo=UTC), datetime(2026, 3, 30, 7, 0, tzinfo=UTC)),
    # Christmas Eve 20:00 (Thu): 25th and 26th are holidays, 27th is Sunday, 28th a holiday too
    (datetime(2026, 12, 24, 20, 0, tzinfo=UTC), datetime(2026, 12, 29, 8, 0, tzinfo=UTC)),
])
def test_next_open_in_local_time_across_dst_and_holidays(moment, expected):
    opening = next_open(OFFICE, moment)
    assert opening == expected and is_open(OFFICE, opening)
    assert opening.tzinfo is UTC                               # exact to compare and to add to
    assert not is_open(OFFICE, opening - timedelta(seconds=1)) or opening == moment


def test_an_opening_inside_the_spring_gap_is_the_moment_the_clocks_jump():
    # 01:30 does not exist in London on 29 Mar 2026 (01:00 GMT -> 02:00 BST)
    night = Schedule("night", "Europe/London", {"sun": ((time(1, 30), time(5, 0)),)})
    opening = next_open(night, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert opening == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)             # 02:00 BST
    assert not is_open(night, opening - timedelta(seconds=1))


def test_an_opening_in_the_repeated_autumn_hour_may_be_its_second_reading():
    # 01:00-02:00 happens twice in London on 25 Oct 2026; at 01:50 BST the 01:15 GMT reading is next
    short = Schedule("short", "Europe/London", {"sun": ((time(1, 15), time(1, 45)),)})
    opening = next_open(short, datetime(2026, 10, 25, 0, 50, tzinfo=UTC))
    assert opening == datetime(2026, 10, 25, 1, 15, tzinfo=UTC)


def test_never_open_within_the_horizon_is_none():
    assert next_open(Schedule("never", "UTC", {}), datetime(2026, 1, 1, tzinfo=UTC)) is None
    all_holidays = Schedule("x", "UTC", {"mon": ((time(9), time(17)),)}, (date(2026, 1, 5),))
    assert next_open(all_holidays, datetime(2026, 1, 5, 10, tzinfo=UTC), horizon_days=3) is None
    assert next_open(all_holidays, datetime(2026, 1, 5, 10, tzinfo=UTC)) == datetime(2026, 1, 12, 9, tzinfo=UTC)


def test_naive_moments_are_refused():
    with pytest.raises(ValueError, match="aware"):
        next_open(OFFICE, datetime(2026, 11, 23, 10))
