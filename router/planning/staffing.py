"""Agents needed per queue and interval from a forecast, by Erlang A (pure; no I/O).

Theory of operation
-------------------
Each interval of each queue is taken as its own steady state: calls arrive as a
Poisson stream at the forecast's rate (offered / interval length), handle times
are exponential with the queue's measured AHT (talk + wrap-up), waiting callers
hang up after an exponential patience with the measured mean.  That is M/M/n+M
(router/sim/erlang.py), and the plan is the least n whose service level meets
the queue's `sl_target` within `sl_threshold_s`.  An interval with no forecast
calls needs nobody.  `scheduled` is what must be rostered so that `agents` are on
the phones after shrinkage: ceil(agents / (1 - shrinkage)).

Service level here and in the KPIs (DESIGN §7) are not the same ratio.  Erlang
A's is answered within T over *offered* calls: every abandon is a miss, even a
caller who hung up after two seconds.  The KPI's base leaves out short abandons
(within `short_abandon_s`) and accepted call-backs.  Both changes shrink the
base by calls that were never answered in time, so for the same queue the KPI
SL is at or above Erlang A's; with a 150 s mean patience and a 5 s short-abandon
limit about 3 % of the callers who wait leave as short abandons.  Erlang A's
plan is therefore slightly conservative against the KPI, and part of what
`--verify` removes is this difference of definition, not of model.  The other
differences the simulator shows are real: non-exponential talk times, the ring
before an answer, agents shared between queues (multi-skill clones and overflow
steps), queues carried over from one interval into the next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from router.sim.erlang import erlang_a


@dataclass(frozen=True)
class QueueInputs:
    """What Erlang A needs of one queue: measured AHT and patience, and the queue's goal."""
    aht_s: float
    patience_s: float
    sl_target: float
    sl_threshold_s: float


@dataclass(frozen=True)
class IntervalPlan:
    agents: int
    service_level: float | None        # Erlang A's, over offered calls; None without calls
    abandonment_rate: float | None


MAX_AGENTS = 10_000


def erlang_a_figures(agents: int, offered: float, interval_s: float, inputs: QueueInputs) -> IntervalPlan:
    """Erlang A's service level and abandonment for `agents` on `offered` calls in an interval."""
    if offered <= 0:
        return IntervalPlan(agents, None, None)
    if agents <= 0:
        return IntervalPlan(0, 0.0, 1.0)
    result = erlang_a(agents, offered / interval_s, inputs.aht_s, inputs.patience_s)
    return IntervalPlan(agents, result.service_level(inputs.sl_threshold_s), result.p_abandon)


def least_agents(offered: float, interval_s: float, inputs: QueueInputs) -> IntervalPlan:
    """The fewest agents whose Erlang A service level meets the queue's target (0 without calls)."""
    if offered <= 0:
        return IntervalPlan(0, None, None)
    low, high = 1, max(1, math.ceil(offered / interval_s * inputs.aht_s))
    while erlang_a_figures(high, offered, interval_s, inputs).service_level < inputs.sl_target:
        low, high = high + 1, high * 2
        if high > MAX_AGENTS:
            raise ValueError(f"no staffing up to {MAX_AGENTS} agents reaches the target")
    while low < high:                  # the service level rises with every agent added
        middle = (low + high) // 2
        if erlang_a_figures(middle, offered, interval_s, inputs).service_level >= inputs.sl_target:
            high = middle
        else:
            low = middle + 1
    return erlang_a_figures(low, offered, interval_s, inputs)


def scheduled(agents: int, shrinkage: float) -> int:
    """Agents to roster so that `agents` are on the phones after `shrinkage`."""
    if not 0.0 <= shrinkage < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage}")
    return math.ceil(agents / (1.0 - shrinkage) - 1e-9)


def plan_staffing(forecast: dict[str, Any], inputs: dict[str, QueueInputs],
                  shrinkage: float) -> dict[str, Any]:
    """`{"queues": {Q: [{"start", "offered", "agents", "scheduled", "service_level",
    "abandonment_rate"}]}}` for every forecast queue that has inputs."""
    interval_s = forecast["interval_minutes"] * 60.0
    queues: dict[str, list[dict[str, Any]]] = {}
    for queue, body in forecast["queues"].items():
        rows = []
        for point in body["forecast"]:
            offered = max(0.0, float(point["offered"]))
            plan = least_agents(offered, interval_s, inputs[queue])
            rows.append({"start": point["start"], "offered": round(offered, 2), "agents": plan.agents,
                         "scheduled": scheduled(plan.agents, shrinkage),
                         "service_level": _rounded(plan.service_level),
                         "abandonment_rate": _rounded(plan.abandonment_rate)})
        queues[queue] = rows
    return {"interval_minutes": forecast["interval_minutes"], "shrinkage": shrinkage, "queues": queues}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
