"""Traffic models for the simulator: arrivals, handle times, caller patience.

Arrivals are a Poisson process whose rate is constant within each interval of
the centre's intraday profile (calls offered per interval, per queue).  Each
random quantity draws from its own seeded stream, so changing one model (say,
patience) does not reshuffle the arrivals of the same seed.

A run of hours (`arrivals`) plays the profile as written, repeating it if the
run is longer.  A history of whole days (`history`) is what a forecaster learns
from: every local day plays the profile once, from `simulation.start`'s time of
day, its rates scaled by the day's `weekdays` factor, by the `trend_per_week`
compounded since `simulation.start`'s date and, with `overdispersion` k > 0, by
an independent Gamma(mean 1, variance k) draw per (day, line, interval), so a
count is negative binomial with variance lambda + k * lambda^2.  A queue gets
direct calls only while its schedule is open (not on its holidays, not after
hours: callers of a closed line hear so and the history does not teach the
forecaster to expect them); the IVR line is never cut (the flow checks its own
opening hours).  Each day of each line has its own streams, so a
holiday or another day's draws do not shift the calls of the others.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from router.config.model import WEEKDAYS, Distribution, Simulation


def exponential(rng: random.Random, rate: float) -> float:
    """`rng.expovariate(rate)` to the bit: the same arithmetic as CPython's random.py, without
    its Python frame (one per arrival and per handle time drawn)."""
    return -math.log(1.0 - rng.random()) / rate


def below(rng: random.Random, n: int) -> int:
    """`rng.randrange(n)` for n > 0 to the bit: CPython's draw for it (random.py's
    `_randbelow_with_getrandbits`), without its two Python frames (one per caller number)."""
    bits = n.bit_length()
    r = rng.getrandbits(bits)
    while r >= n:
        r = rng.getrandbits(bits)
    return r


def sample(dist: Distribution, rng: random.Random) -> float:
    """One draw from a positive duration distribution, in seconds."""
    if dist.kind == "fixed":
        return dist.mean_s
    if dist.kind == "exponential":
        return exponential(rng, 1.0 / dist.mean_s)
    # lognormal parametrised by its own mean and standard deviation
    sigma2 = math.log(1.0 + (dist.sd_s / dist.mean_s) ** 2)
    return rng.lognormvariate(math.log(dist.mean_s) - sigma2 / 2.0, math.sqrt(sigma2))


def for_queue(table: dict[str, Distribution], queue: str) -> Distribution:
    return table.get(queue) or table["default"]


@dataclass(frozen=True)   # compiled: an extension type (ext/router/sim/traffic.pxd)
class Arrival:
    offset_s: float       # seconds after the start of the simulated day
    queue: str | None     # the queue called directly; None: the call starts in the IVR
    caller_id: str


def arrivals(model: Simulation, hours: float, seed: int, phase_s: float = 0.0) -> list[Arrival]:
    """Every call of the simulated period, in time order (the profile repeats if `hours` is longer).

    `phase_s` is how far the period starts after `simulation.start`: the profile's intervals keep
    their edges and their place in the profile (a run that starts at 14:50 begins in the 14:30 one)."""
    width = model.interval_minutes * 60.0
    horizon = hours * 3600.0
    first, last = math.floor(phase_s / width), math.ceil((phase_s + horizon) / width)
    out: list[Arrival] = []
    for entry, profile in _lines(model).items():
        name = entry or "ivr"
        rng = random.Random(f"arrivals:{seed}:{name}")
        callers = random.Random(f"callers:{seed}:{name}")
        expected = sum(profile[i % len(profile)] for i in range(first, last))
        pool = max(50, int(4 * expected))     # ~1 in 5 callers of a line calls it again the same day
        for interval in range(first, last):
            rate = profile[interval % len(profile)] / width
            t, end = max(interval * width - phase_s, 0.0), min((interval + 1) * width - phase_s, horizon)
            while rate > 0:
                t += exponential(rng, rate)
                if t >= end:
                    break
                out.append(Arrival(t, entry, f"+4477{below(callers, pool):08d}"))
    out.sort(key=lambda a: (a.offset_s, a.queue or ""))
    return out


@dataclass(frozen=True, slots=True)
class Day:
    """One local day of a history."""
    date: date
    offset_s: float       # where the day's profile starts, seconds after `simulation.start`
    weeks: float          # since `simulation.start`'s date, for the trend


def history_days(model: Simulation, days: int, zone: ZoneInfo) -> list[Day]:
    """The `days` local days from `simulation.start`'s date; raises ValueError when the profile,
    played from `simulation.start`'s time of day, would run past midnight."""
    start = model.start if model.start.tzinfo else model.start.replace(tzinfo=zone)
    local = start.astimezone(zone)
    longest = max((len(p) for p in _lines(model).values()), default=0)
    profile_end = datetime.combine(local.date(), local.time()) + timedelta(minutes=longest * model.interval_minutes)
    if profile_end > datetime.combine(local.date() + timedelta(days=1), time()):
        raise ValueError(f"simulation: the arrival profile ({longest} intervals of {model.interval_minutes} min "
                         f"from {local:%H:%M}) runs past midnight; a run of days needs it within the day")
    first = local.date()
    dates = [first + timedelta(days=n) for n in range(days)]
    return [Day(day, datetime.combine(day, local.timetz()).timestamp() - start.timestamp(), n / 7.0)
            for n, day in enumerate(dates)]


def day_factor(model: Simulation, day: Day) -> float:
    """The day's weekday multiplier times the trend compounded since `simulation.start`'s date."""
    return model.weekdays.get(WEEKDAYS[day.date.weekday()], 1.0) * (1.0 + model.trend_per_week) ** day.weeks


def history(model: Simulation, days: Sequence[Day], seed: int,
            closed: Callable[[str, float], bool] | None = None) -> list[Arrival]:
    """Every call of a history of whole days, in time order (see the module's head).

    `closed(queue, offset_s)` says whether a queue is closed (after hours or on a holiday of its
    schedule) at `offset_s` seconds after `simulation.start`; its direct calls then do not come."""
    width = model.interval_minutes * 60.0
    out: list[Arrival] = []
    for entry, profile in _lines(model).items():
        name = entry or "ivr"
        number_base = 0
        for n, day in enumerate(days):
            factor = day_factor(model, day)
            pool = max(50, int(4 * factor * sum(profile)))   # ~1 in 5 callers of a line calls it again that day
            base, number_base = number_base, number_base + pool
            rng = random.Random(f"arrivals:{seed}:{name}:{n}")
            callers = random.Random(f"callers:{seed}:{name}:{n}")
            spread = random.Random(f"overdispersion:{seed}:{name}:{n}")
            for interval, count in enumerate(profile):
                rate = count * factor / width
                if model.overdispersion > 0:
                    k = model.overdispersion
                    rate *= spread.gammavariate(1.0 / k, k)
                t, end = 0.0, width
                while rate > 0:
                    t += exponential(rng, rate)
                    if t >= end:
                        break
                    offset, number = day.offset_s + interval * width + t, base + below(callers, pool)
                    if entry is None or closed is None or not closed(entry, offset):
                        out.append(Arrival(offset, entry, f"+4477{number:08d}"))
    out.sort(key=lambda a: (a.offset_s, a.queue or ""))
    return out


def _lines(model: Simulation) -> dict[str | None, tuple[float, ...]]:
    """Arrival profiles by line: a queue called directly, or None for the IVR."""
    lines: dict[str | None, tuple[float, ...]] = {queue: p for queue, p in model.arrivals.items() if p}
    if model.ivr is not None and model.ivr.arrivals:
        lines[None] = model.ivr.arrivals
    return lines
