"""Traffic models for the simulator: arrivals, handle times, caller patience.

Arrivals are a Poisson process whose rate is constant within each interval of
the centre's intraday profile (calls offered per interval, per queue).  Each
random quantity draws from its own seeded stream, so changing one model (say,
patience) does not reshuffle the arrivals of the same seed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from router.config.model import Distribution, Simulation


def sample(dist: Distribution, rng: random.Random) -> float:
    """One draw from a positive duration distribution, in seconds."""
    if dist.kind == "fixed":
        return dist.mean_s
    if dist.kind == "exponential":
        return rng.expovariate(1.0 / dist.mean_s)
    # lognormal parametrised by its own mean and standard deviation
    sigma2 = math.log(1.0 + (dist.sd_s / dist.mean_s) ** 2)
    return rng.lognormvariate(math.log(dist.mean_s) - sigma2 / 2.0, math.sqrt(sigma2))


def for_queue(table: dict[str, Distribution], queue: str) -> Distribution:
    return table.get(queue) or table["default"]


@dataclass(frozen=True, slots=True)
class Arrival:
    offset_s: float       # seconds after the start of the simulated day
    queue: str | None     # the queue called directly; None: the call starts in the IVR
    caller_id: str


def arrivals(model: Simulation, hours: float, seed: int, phase_s: float = 0.0) -> list[Arrival]:
    """Every call of the simulated period, in time order (the profile repeats if `hours` is longer).

    `phase_s` is how far the period starts after `simulation.start`: the profile's intervals keep
    their edges and their place in the profile (a run that starts at 14:50 begins in the 14:30 one)."""
    streams: list[tuple[str | None, tuple[float, ...]]] = list(model.arrivals.items())
    if model.ivr is not None:
        streams.append((None, model.ivr.arrivals))
    width = model.interval_minutes * 60.0
    horizon = hours * 3600.0
    first, last = math.floor(phase_s / width), math.ceil((phase_s + horizon) / width)
    out: list[Arrival] = []
    for entry, profile in streams:
        if not profile:
            continue
        name = entry or "ivr"
        rng = random.Random(f"arrivals:{seed}:{name}")
        callers = random.Random(f"callers:{seed}:{name}")
        expected = sum(profile[i % len(profile)] for i in range(first, last))
        pool = max(50, int(4 * expected))     # ~1 in 5 callers of a line calls it again the same day
        for interval in range(first, last):
            rate = profile[interval % len(profile)] / width
            t, end = max(interval * width - phase_s, 0.0), min((interval + 1) * width - phase_s, horizon)
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= end:
                    break
                out.append(Arrival(t, entry, f"+4477{callers.randrange(pool):08d}"))
    out.sort(key=lambda a: (a.offset_s, a.queue or ""))
    return out
