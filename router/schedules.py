"""Business hours: is a named schedule open at a given moment?

Theory of operation
-------------------
A `router.config.model.Schedule` holds open intervals per weekday written in
the schedule's own IANA time zone, plus holiday dates (closed all day).  The
moment to test is an aware `datetime` in any zone; it is converted to the
schedule's zone with `zoneinfo`, so a daylight-saving change never shifts the
opening hours: 08:00 stays 08:00 local time on both sides of it.  An interval
may end at 24:00 (stored as `time.max`).  Intervals are half-open, [start, end).
`next_open` walks forward day by day in local dates and tries each interval's
local start (both readings of an ambiguous time, and a start inside a spring
gap means the first real instant after it), keeping only candidates that
`is_open` confirms, so it can never disagree with `is_open`; it answers in UTC.
The functions are pure; the engine, the IVR and the simulator share them.
"""
from __future__ import annotations

import functools
import zoneinfo
from datetime import date, datetime, time, timedelta, timezone

from router.config.model import WEEKDAYS, Schedule

HORIZON_DAYS = 400             # next_open looks this far ahead before it says never


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


def next_open(schedule: Schedule, moment: datetime, *, horizon_days: int = HORIZON_DAYS) -> datetime | None:
    """The first instant at or after `moment` when the schedule is open, None when it does not
    open within `horizon_days`.  The result is in UTC, where comparison and arithmetic are
    exact (in a local zone they follow the wall clock); `local_time` gives its local reading."""
    if is_open(schedule, moment):
        return moment.astimezone(timezone.utc)
    zone = _zone(schedule.timezone)
    after = moment.astimezone(timezone.utc)
    day = local_time(schedule, moment).date()
    for _ in range(horizon_days + 1):
        if day not in schedule.holidays:
            candidates = [instant for start, _end in schedule.hours.get(WEEKDAYS[day.weekday()], ())
                          for instant in local_instants(day, start, zone)
                          if instant > after and is_open(schedule, instant)]
            if candidates:
                return min(candidates)
        day += timedelta(days=1)
    return None


def local_instants(day: date, start: time, zone: zoneinfo.ZoneInfo) -> tuple[datetime, ...]:
    """UTC instants when the clock of local `day` reads `start`: two in a fall-back hour, and for
    a reading skipped by a spring-forward change the instant the clock jumps past it."""
    wall = datetime.combine(day, start)
    early, late = (wall.replace(tzinfo=zone, fold=fold).astimezone(timezone.utc) for fold in (0, 1))
    if early.astimezone(zone).replace(tzinfo=None) == wall:
        return (early, late)
    before, after = int(late.timestamp()), int(early.timestamp())    # in a gap fold=1 reads earlier
    while after - before > 1:                                          # first second reading >= wall
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return (datetime.fromtimestamp(after, timezone.utc),)
