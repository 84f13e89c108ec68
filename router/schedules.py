"""Business hours: is a named schedule open at a given moment?

Theory of operation
-------------------
A `router.config.model.Schedule` holds open intervals per weekday written in
the schedule's own IANA time zone, plus holiday dates (closed all day).  The
moment to test is an aware `datetime` in any zone; it is converted to the
schedule's zone with `zoneinfo`, so a daylight-saving change never shifts the
opening hours: 08:00 stays 08:00 local time on both sides of it.  An interval
may end at 24:00 (stored as `time.max`).  Intervals are half-open, [start, end).
The functions are pure; the engine, the IVR and the simulator share them.
"""
from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime

from router.config.model import WEEKDAYS, Schedule


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def local_time(schedule: Schedule, moment: datetime) -> datetime:
    """`moment` in the schedule's time zone; `moment` must be aware."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("moment must be an aware datetime (with a time zone)")
    return moment.astimezone(_zone(schedule.timezone))


def is_holiday(schedule: Schedule, moment: datetime) -> bool:
    """True when the local date of `moment` is one of the schedule's holidays."""
    return local_time(schedule, moment).date() in schedule.holidays


def is_open(schedule: Schedule, moment: datetime) -> bool:
    """True when `moment` falls in an open interval of its local weekday and is no holiday."""
    local = local_time(schedule, moment)
    if local.date() in schedule.holidays:
        return False
    clock = local.time().replace(tzinfo=None)
    return any(start <= clock < end for start, end in schedule.hours.get(WEEKDAYS[local.weekday()], ()))
