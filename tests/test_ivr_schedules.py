"""Business hours shared by the config and the IVR: weekly hours, holidays, time zones, DST."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from router.config import load_config
from router.config.model import Schedule
from router.schedules import is_holiday, is_open, local_time

UTC = timezone.utc
OFFICE = load_config(None).schedules["office"]        # Europe/London, Mon-Fri 08-20, Sat 09-13
NIGHT = Schedule("night", "America/New_York", {"fri": ((time(22, 0), time.max),)}, (date(2026, 12, 25),))


@pytest.mark.parametrize("moment, expected", [
    (datetime(2026, 10, 23, 7, 30, tzinfo=UTC), True),    # Fri, BST: 08:30 local
    (datetime(2026, 10, 23, 6, 59, tzinfo=UTC), False),   # Fri 07:59 local
    (datetime(2026, 10, 24, 8, 30, tzinfo=UTC), True),    # Sat 09:30 BST
    (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), False),   # Sat 13:00 BST: closed (half-open)
    (datetime(2026, 10, 25, 10, 0, tzinfo=UTC), False),   # Sun: DST ends at 01:00 UTC; closed anyway
    (datetime(2026, 10, 26, 7, 30, tzinfo=UTC), False),   # Mon, GMT: 07:30 local, not yet open
    (datetime(2026, 10, 26, 8, 0, tzinfo=UTC), True),     # Mon 08:00 GMT
    (datetime(2026, 10, 26, 19, 59, tzinfo=UTC), True),
    (datetime(2026, 10, 26, 20, 0, tzinfo=UTC), False),
])
def test_opening_hours_follow_local_time_across_the_dst_change(moment, expected):
    assert is_open(OFFICE, moment) is expected


def test_holidays_close_the_whole_local_day():
    christmas_noon = datetime(2026, 12, 25, 12, tzinfo=UTC)           # a Friday
    assert is_holiday(OFFICE, christmas_noon) and not is_open(OFFICE, christmas_noon)
    assert is_open(OFFICE, christmas_noon - timedelta(days=1))
    # 23:30 UTC on the 24th is already the 25th in Madrid: the holiday follows the schedule's zone
    spain = load_config(None).schedules["spain"]
    assert is_holiday(spain, datetime(2026, 12, 24, 23, 30, tzinfo=UTC))
    assert not is_holiday(OFFICE, datetime(2026, 12, 24, 23, 30, tzinfo=UTC))


def test_an_interval_may_run_to_midnight_and_moments_may_come_in_any_zone():
    friday_late = datetime(2026, 11, 27, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    assert is_open(NIGHT, friday_late)
    assert not is_open(NIGHT, friday_late + timedelta(seconds=1))
    assert local_time(NIGHT, datetime(2026, 11, 28, 4, 59, tzinfo=UTC)).hour == 23


def test_naive_moments_are_refused():
    with pytest.raises(ValueError, match="aware"):
        is_open(OFFICE, datetime(2026, 11, 23, 10))
