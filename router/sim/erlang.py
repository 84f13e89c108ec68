"""Erlang C and Erlang A staffing maths (pure functions, no I/O).

Theory of operation
-------------------
Calls arrive as a Poisson stream (rate λ), handle times are exponential
(mean AHT, rate μ = 1/AHT), ``n`` agents serve one queue first come, first
served.  The offered traffic is A = λ/μ Erlangs.

*Erlang C* (M/M/n, callers never hang up).  The probability of waiting is
computed from the Erlang B recursion B(k) = A·B(k−1)/(k + A·B(k−1)), B(0) = 1,
which never forms A^n or n! and so neither overflows nor underflows, then
C = n·B/(n − A(1−B)).  From it: service level 1 − C·e^{−(n−A)t/AHT}, ASA
C·AHT/(n − A), occupancy A/n.  With n <= A the queue grows without bound:
every caller waits (C = 1), nobody is answered within any finite time.

*Erlang A* (M/M/n+M, Palm; Garnett, Mandelbaum and Reiman 2002): each waiting
caller hangs up after an exponential patience (mean ``patience_s``, rate θ).
It is solved exactly as the birth-death chain of the number of calls in the
system: birth rate λ, death rate min(k,n)·μ + max(k−n,0)·θ.  The part k <= n
is normalised through Erlang B (π_n / Σ_{k<=n} π_k = B(n, A)); the queue part
is π_{n+j} ∝ B·Π_{i=1..j} λ/(nμ + iθ), summed in logarithms (the products may
pass 1e308 before they fall) until a geometric bound shows the rest is below
1e-16 of the total, or until j reaches ``MAX_QUEUE`` = 10,000 waiting calls.
At that cap the results are those of a system that turns away callers
beyond 10,000 in queue; it is only reached when patience is so long and
staffing so short that the queue is practically unstable.

By PASTA an arrival sees the stationary distribution.  A caller who finds
j calls waiting ahead of it is served when the queue in front has drained:
that takes D_j = Σ_{i=0..j} Exp(nμ + iθ) (each step is a service completion
at the head or an abandonment ahead of it), and it is answered if D_j comes
before its own patience τ ~ Exp(θ).  Hence, in closed form,
P(answered | j) = E[e^{−θD_j}] = nμ/(nμ + (j+1)θ) and
E[D_j; answered] = P(answered | j)·Σ_{i=0..j} 1/(nμ + (i+1)θ).
``p_abandon`` is θ·E[queue length]/λ (flow balance); ``asa_s`` is the mean
wait of *answered* calls (the CLI contract and the KPI definition), calls
answered at once counting as zero.

``service_level(t)`` is P(an arrival is answered within t seconds): answered
calls over *offered* calls, abandoned calls counting as misses, as in the KPI
definition of service level (the model has no short abandons to exclude).
The race of D_j against τ is a small absorbing Markov chain (position in
queue → answered or abandoned); all arrivals' chains are advanced together
by uniformisation: with a rate Λ above every exit rate, the answered mass by
time t is Σ_k Poisson(k; Λt)·S_k, where S_k is the answered mass after k
steps of the embedded discrete chain.  Every term is positive (no
cancellation, unlike the closed-form hypoexponential CDF), and the sum stops
when the Poisson tail or the mass still waiting falls below 1e-15.

``staffing`` searches the smallest agent count that meets a service-level
target (bisection: the service level rises with every added agent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_QUEUE = 10_000
"""Longest queue the Erlang A chain represents (states n .. n + MAX_QUEUE)."""

_TAIL = 1e-16
_POISSON_TAIL = 1e-15


def _erlang_b(agents: int, traffic_erlangs: float) -> float:
    """Blocking probability of M/M/n/n, by the stable recursion."""
    blocking = 1.0
    for k in range(1, agents + 1):
        blocking = traffic_erlangs * blocking / (k + traffic_erlangs * blocking)
    return blocking


def _check_agents_traffic(agents: int, traffic_erlangs: float) -> None:
    if agents < 1:
        raise ValueError(f"agents must be at least 1, got {agents}")
    if not traffic_erlangs > 0 or math.isinf(traffic_erlangs):
        raise ValueError(f"traffic must be a positive number of Erlangs, got {traffic_erlangs}")


def erlang_c(agents: int, traffic_erlangs: float) -> float:
    """Probability that a call waits (Erlang C); 1.0 when agents <= traffic."""
    _check_agents_traffic(agents, traffic_erlangs)
    if agents <= traffic_erlangs:
        return 1.0
    blocking = _erlang_b(agents, traffic_erlangs)
    return agents * blocking / (agents - traffic_erlangs * (1.0 - blocking))


def service_level_c(agents: int, traffic_erlangs: float, aht_s: float, answer_within_s: float) -> float:
    """Share of calls answered within ``answer_within_s`` (Erlang C)."""
    if agents <= traffic_erlangs:
        _check_agents_traffic(agents, traffic_erlangs)
        return 0.0
    p_wait = erlang_c(agents, traffic_erlangs)
    return 1.0 - p_wait * math.exp(-(agents - traffic_erlangs) * answer_within_s / aht_s)


def asa_c(agents: int, traffic_erlangs: float, aht_s: float) -> float:
    """Mean wait in seconds (Erlang C); infinite when agents <= traffic."""
    if agents <= traffic_erlangs:
        _check_agents_traffic(agents, traffic_erlangs)
        return math.inf
    return erlang_c(agents, traffic_erlangs) * aht_s / (agents - traffic_erlangs)


def occupancy(agents: int, traffic_erlangs: float) -> float:
    """Share of agent time spent on calls, A/n, capped at 1."""
    _check_agents_traffic(agents, traffic_erlangs)
    return min(1.0, traffic_erlangs / agents)


@dataclass(frozen=True)
class ErlangAResult:
    """Steady state of M/M/n+M as seen by an arriving call.

    ``queue_seen[j]`` is the probability that an arrival finds all agents busy
    and j calls already waiting; ``p_no_wait`` that it finds an agent free.
    """

    agents: int
    service_rate: float
    abandon_rate: float
    p_no_wait: float
    queue_seen: tuple[float, ...]
    p_wait: float
    p_abandon: float
    asa_s: float
    occupancy: float
    truncated: bool
    """True when the chain hit ``MAX_QUEUE`` before its tail was negligible."""

    def service_level(self, answer_within_s: float) -> float:
        """P(an arrival is answered within ``answer_within_s``), over offered calls."""
        if answer_within_s < 0:
            raise ValueError(f"answer_within_s must be >= 0, got {answer_within_s}")
        return self.p_no_wait + _answered_by(
            self.queue_seen, self.agents * self.service_rate, self.abandon_rate, answer_within_s
        )


def _answered_by(queue_seen: tuple[float, ...], all_busy_rate: float, theta: float, t: float) -> float:
    """Mass of waiting arrivals answered within t, by uniformisation (see module doc)."""
    waiting = list(queue_seen)
    if not waiting or t == 0:
        return 0.0
    advance = [all_busy_rate + j * theta for j in range(len(waiting))]
    uniform_rate = all_busy_rate + len(waiting) * theta
    stay = [1.0 - (rate + theta) / uniform_rate for rate in advance]
    step_down = [rate / uniform_rate for rate in advance]
    step_down_above = step_down[1:] + [0.0]
    x = uniform_rate * t
    log_x = math.log(x)
    answered = 0.0
    total = 0.0
    poisson_cdf = 0.0
    k = 0
    while True:
        pmf = math.exp(-x + k * log_x - math.lgamma(k + 1))
        total += pmf * answered
        poisson_cdf += pmf
        if k > x and pmf * x / (k + 1 - x) < _POISSON_TAIL:
            return total
        if sum(waiting) < _POISSON_TAIL:
            return total + max(0.0, 1.0 - poisson_cdf) * answered
        answered += waiting[0] * step_down[0]
        waiting = [
            w * s + above * d
            for w, s, above, d in zip(waiting, stay, waiting[1:] + [0.0], step_down_above)
        ]
        while len(waiting) > 1 and waiting[-1] < 1e-300:
            waiting.pop()
        k += 1


def _log_sum_exp(logs: list[float]) -> float:
    top = max(logs)
    return top + math.log(math.fsum(math.exp(v - top) for v in logs))


def erlang_a(agents: int, arrival_rate_per_s: float, aht_s: float, patience_s: float) -> ErlangAResult:
    """Solve M/M/n+M (Erlang A) exactly; see the module docstring."""
    for name, value in (("arrival rate", arrival_rate_per_s), ("AHT", aht_s), ("patience", patience_s)):
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive finite number, got {value}")
    traffic = arrival_rate_per_s * aht_s
    _check_agents_traffic(agents, traffic)
    mu = 1.0 / aht_s
    theta = 1.0 / patience_s
    all_busy_rate = agents * mu
    blocking = _erlang_b(agents, traffic)
    if blocking == 0.0:
        return ErlangAResult(agents, mu, theta, 1.0, (), 0.0, 0.0, 0.0, traffic / agents, False)

    # log of Π_{i=1..j} λ/(nμ + iθ), j = 0, 1, ...
    # Past the peak the ratios only fall, so the rest is below term·r/(1−r).
    log_terms = [0.0]
    log_peak = 0.0
    truncated = True
    while len(log_terms) <= MAX_QUEUE:
        j = len(log_terms)
        ratio = arrival_rate_per_s / (all_busy_rate + j * theta)
        log_terms.append(log_terms[-1] + math.log(ratio))
        log_peak = max(log_peak, log_terms[-1])
        if ratio < 1.0 and log_terms[-1] + math.log(ratio / (1.0 - ratio)) < math.log(_TAIL) + log_peak:
            truncated = False
            break
    log_blocking = math.log(blocking)
    log_queue = [log_blocking + v for v in log_terms]
    below = [math.log1p(-blocking)] if blocking < 1.0 else []
    log_total = _log_sum_exp(below + log_queue)
    queue_seen = tuple(math.exp(v - log_total) for v in log_queue)
    p_no_wait = math.exp(below[0] - log_total) if below else 0.0

    p_wait = math.fsum(queue_seen)
    mean_queue = math.fsum(j * p for j, p in enumerate(queue_seen))
    p_abandon = theta * mean_queue / arrival_rate_per_s
    wait_of_answered = 0.0
    inverse_rates = 0.0
    for j, p in enumerate(queue_seen):
        exit_rate = all_busy_rate + (j + 1) * theta
        inverse_rates += 1.0 / exit_rate
        wait_of_answered += p * (all_busy_rate / exit_rate) * inverse_rates
    p_answered = 1.0 - p_abandon
    return ErlangAResult(
        agents=agents,
        service_rate=mu,
        abandon_rate=theta,
        p_no_wait=p_no_wait,
        queue_seen=queue_seen,
        p_wait=p_wait,
        p_abandon=p_abandon,
        asa_s=wait_of_answered / p_answered,
        occupancy=min(1.0, traffic * p_answered / agents),
        truncated=truncated,
    )


def _positive(name: str, value: float | None) -> None:
    if value is None or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value}")


def staffing(
    calls_per_hour: float,
    aht_s: float,
    answer_within_s: float,
    target: float,
    patience_s: float | None = None,
    max_agents: int = 10_000,
) -> dict[str, float | int]:
    """Fewest agents meeting ``target`` service level, with the `erlang --json` keys.

    Erlang C without ``patience_s``; Erlang A (adds ``p_abandon``) with it.
    Raises ValueError for invalid inputs or a target unreachable within ``max_agents``.
    """
    _positive("calls per hour", calls_per_hour)
    _positive("AHT", aht_s)
    _positive("answer-within", answer_within_s)
    if patience_s is not None:
        _positive("patience", patience_s)
    if not 0.0 < target < 1.0:
        raise ValueError(f"target service level must be between 0 and 1 (exclusive), got {target}")
    if max_agents < 1:
        raise ValueError(f"max_agents must be at least 1, got {max_agents}")
    arrival_rate = calls_per_hour / 3600.0
    traffic = arrival_rate * aht_s

    def figures(agents: int) -> dict[str, float | int]:
        if patience_s is None:
            return {
                "agents": agents,
                "service_level": service_level_c(agents, traffic, aht_s, answer_within_s),
                "asa_s": asa_c(agents, traffic, aht_s),
                "occupancy": occupancy(agents, traffic),
                "p_wait": erlang_c(agents, traffic),
            }
        result = erlang_a(agents, arrival_rate, aht_s, patience_s)
        return {
            "agents": agents,
            "service_level": result.service_level(answer_within_s),
            "asa_s": result.asa_s,
            "occupancy": result.occupancy,
            "p_wait": result.p_wait,
            "p_abandon": result.p_abandon,
        }

    low = 1 if patience_s is not None else math.floor(traffic) + 1
    if low > max_agents or figures(max_agents)["service_level"] < target:
        raise ValueError(
            f"no staffing up to {max_agents} agents reaches a service level of {target} "
            f"for {traffic:.4g} Erlangs"
        )
    high = max_agents
    while low < high:
        middle = (low + high) // 2
        if figures(middle)["service_level"] >= target:
            high = middle
        else:
            low = middle + 1
    best = figures(low)
    rounded: dict[str, float | int] = {
        key: (round(value, 2) if key == "asa_s" else round(value, 4)) if key != "agents" else value
        for key, value in best.items()
    }
    rounded["traffic_erlangs"] = round(traffic, 4)
    return rounded
