"""The skills matcher in plain Python: the specification in code.

The compiled matcher (ext/matcher.pyx, imported as router.engine.cmatcher) must
make exactly the decisions this module makes; the tests drive both with the same
random operations and compare every answer.  This version is written to be read,
not to be fast.

Theory of operation
-------------------
Agents and waiting calls live in slot tables (lists indexed by slot, None for a
free slot).  An agent is its skill -> proficiency map, an `available` flag,
`idle_since` and two counters.  A call carries its queue, priority, enqueued_at,
seq, queue weight and requirement sets; an agent is eligible for a call when it
has every skill of ANY one set at or above that set's minimum (so an empty set
admits everyone).

`pick_agent` collects the available eligible agents in ascending slot order and
takes the minimum of a strategy key whose last component is the slot, so every
tie has one answer.  Round-robin and random are positional: round-robin takes
the first eligible slot after the queue's cursor (wrapping) and moves the
cursor there; random draws r = next() % n from a xorshift64* generator and
takes the r-th eligible slot.  `pick_call` takes the eligible waiting call with
the highest priority, then the largest weighted wait, then the smallest seq.

Arguments are checked in parameter order: table indices (slots, queues) out of
range raise IndexError, any other bad value (skill out of range, proficiency
outside 0..10, too many pairs or sets, unknown strategy, a slot in the wrong
state, non-finite times) raises ValueError, a non-number raises TypeError.  A
rejected call leaves the matcher unchanged.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Sequence

LONGEST_IDLE = 0
MOST_SKILLED = 1
LEAST_OCCUPIED = 2
ROUND_ROBIN = 3
FEWEST_CALLS = 4
RANDOM = 5
MAX_SKILLS = 256
MAX_PAIRS_PER_SET = 16
MAX_SETS_PER_CALL = 8

MAX_PROFICIENCY = 10
MAX_CAPACITY = 2**31 - 1
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_MAX = 2**63 - 1
MASK64 = 2**64 - 1
SEED_MIX = 0x9E3779B97F4A7C15      # seed ^ SEED_MIX is the generator's first state
XORSHIFT_MULTIPLIER = 0x2545F4914F6CDD1D

RequirementSet = tuple[tuple[int, int], ...]


@dataclass
class _Agent:
    proficiency: dict[int, int]
    available: bool = False
    idle_since: float = 0.0
    calls_handled: int = 0
    occupancy: float = 0.0


@dataclass
class _Call:
    queue: int
    priority: int
    enqueued_at: float
    seq: int
    weight: float
    requirement_sets: tuple[RequirementSet, ...]


def _index(value: object, capacity: int, what: str) -> int:
    """`value` as a table index, IndexError unless 0 <= value < capacity."""
    index = operator.index(value)
    if not 0 <= index < capacity:
        raise IndexError(f"{what} {index} out of range 0..{capacity - 1}")
    return index


def _int_in(value: object, low: int, high: int, what: str) -> int:
    number = operator.index(value)
    if not low <= number <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return number


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class Matcher:
    """Skills-based matcher over slot tables of agents and waiting calls."""

    def __init__(self, n_skills: int, agent_capacity: int, call_capacity: int,
                 n_queues: int, seed: int = 0) -> None:
        self.n_skills = _int_in(n_skills, 0, MAX_SKILLS, "n_skills")
        self.agent_capacity = _int_in(agent_capacity, 0, MAX_CAPACITY, "agent_capacity")
        self.call_capacity = _int_in(call_capacity, 0, MAX_CAPACITY, "call_capacity")
        self.n_queues = _int_in(n_queues, 0, MAX_CAPACITY, "n_queues")
        state = (operator.index(seed) ^ SEED_MIX) & MASK64
        self._rng_state = state or SEED_MIX
        self._agents: list[_Agent | None] = [None] * self.agent_capacity
        self._calls: list[_Call | None] = [None] * self.call_capacity
        self._available: set[int] = set()
        self._waiting: set[int] = set()
        self._cursor = [-1] * self.n_queues    # round-robin: last slot chosen per queue

    # ---- argument checks -------------------------------------------------

    def _agent_at(self, slot: object) -> tuple[int, _Agent]:
        index = _index(slot, self.agent_capacity, "agent slot")
        agent = self._agents[index]
        if agent is None:
            raise ValueError(f"no agent in slot {index}")
        return index, agent

    def _call_at(self, slot: object) -> tuple[int, _Call]:
        index = _index(slot, self.call_capacity, "call slot")
        call = self._calls[index]
        if call is None:
            raise ValueError(f"no call in slot {index}")
        return index, call

    def _skill(self, value: object) -> int:
        skill = operator.index(value)
        if not 0 <= skill < self.n_skills:
            raise ValueError(f"skill {skill} out of range 0..{self.n_skills - 1}")
        return skill

    def _requirement_sets(self, requirement_sets: Sequence[Sequence[tuple[int, int]]],
                          ) -> tuple[RequirementSet, ...]:
        sets = tuple(requirement_sets)
        if not 1 <= len(sets) <= MAX_SETS_PER_CALL:
            raise ValueError(f"a call needs 1..{MAX_SETS_PER_CALL} requirement sets, got {len(sets)}")
        checked = []
        for pairs in sets:
            pairs = tuple(pairs)
            if len(pairs) > MAX_PAIRS_PER_SET:
                raise ValueError(f"a requirement set holds at most {MAX_PAIRS_PER_SET} pairs, "
                                 f"got {len(pairs)}")
            checked_pairs = []
            for skill, minimum in pairs:
                checked_pairs.append((self._skill(skill),
                                      _int_in(minimum, 0, MAX_PROFICIENCY, "minimum proficiency")))
            checked.append(tuple(checked_pairs))
        return tuple(checked)

    # ---- agents ------------------------------------------------------------

    def set_agent(self, slot: int, skills: Sequence[tuple[int, int]]) -> None:
        """Give the agent in `slot` these (skill, proficiency) pairs.

        A new agent starts unavailable with zero counters; an existing one keeps
        its state and only its skills change.
        """
        index = _index(slot, self.agent_capacity, "agent slot")
        proficiency: dict[int, int] = {}
        for skill, level in skills:
            skill = self._skill(skill)
            level = _int_in(level, 0, MAX_PROFICIENCY, "proficiency")
            if skill in proficiency:
                raise ValueError(f"skill {skill} given twice")
            proficiency[skill] = level
        agent = self._agents[index]
        if agent is None:
            self._agents[index] = _Agent(proficiency)
        else:
            agent.proficiency = proficiency

    def remove_agent(self, slot: int) -> None:
        index, _ = self._agent_at(slot)
        self._agents[index] = None
        self._available.discard(index)

    def set_agent_available(self, slot: int, available: bool, idle_since: float) -> None:
        index, agent = self._agent_at(slot)
        agent.idle_since = _finite(idle_since, "idle_since")
        agent.available = bool(available)
        if agent.available:
            self._available.add(index)
        else:
            self._available.discard(index)

    def set_agent_counters(self, slot: int, calls_handled: int, occupancy: float) -> None:
        _, agent = self._agent_at(slot)
        calls_handled = _int_in(calls_handled, 0, INT64_MAX, "calls_handled")
        occupancy = _finite(occupancy, "occupancy")
        if not 0.0 <= occupancy <= 1.0:
            raise ValueError(f"occupancy must be in 0..1, got {occupancy}")
        agent.calls_handled = calls_handled
        agent.occupancy = occupancy

    # ---- waiting calls -----------------------------------------------------

    def add_call(self, slot: int, queue: int, priority: int, enqueued_at: float, seq: int,
                 weight: float, requirement_sets: Sequence[Sequence[tuple[int, int]]]) -> None:
        """Put a waiting call in a free slot (re-adding with the same enqueued_at and
        seq gives the call back its place)."""
        index = _index(slot, self.call_capacity, "call slot")
        if self._calls[index] is not None:
            raise ValueError(f"call slot {index} is already in use")
        call = _Call(
            queue=_index(queue, self.n_queues, "queue"),
            priority=_int_in(priority, *INT32_RANGE, "priority"),
            enqueued_at=_finite(enqueued_at, "enqueued_at"),
            seq=_int_in(seq, 0, INT64_MAX, "seq"),
            weight=self._weight(weight),
            requirement_sets=self._requirement_sets(requirement_sets),
        )
        self._calls[index] = call
        self._waiting.add(index)

    @staticmethod
    def _weight(weight: float) -> float:
        weight = _finite(weight, "weight")
        if weight < 0.0:
            raise ValueError(f"weight must not be negative, got {weight}")
        return weight

    def set_call_requirements(self, slot: int,
                              requirement_sets: Sequence[Sequence[tuple[int, int]]]) -> None:
        """Replace the call's requirement sets (overflow: relax a minimum, add a set)."""
        _, call = self._call_at(slot)
        call.requirement_sets = self._requirement_sets(requirement_sets)

    def set_call_queue(self, slot: int, queue: int, priority: int, weight: float) -> None:
        """Move the call to another queue; it keeps enqueued_at and seq."""
        _, call = self._call_at(slot)
        queue = _index(queue, self.n_queues, "queue")
        priority = _int_in(priority, *INT32_RANGE, "priority")
        call.weight = self._weight(weight)
        call.queue, call.priority = queue, priority

    def remove_call(self, slot: int) -> None:
        index, _ = self._call_at(slot)
        self._calls[index] = None
        self._waiting.discard(index)

    # ---- decisions ---------------------------------------------------------

    @staticmethod
    def _set_score(agent: _Agent, pairs: RequirementSet) -> int | None:
        """Sum of the agent's proficiency over `pairs`, None unless it meets them all."""
        score = 0
        for skill, minimum in pairs:
            level = agent.proficiency.get(skill)
            if level is None or level < minimum:
                return None
            score += level
        return score

    def _best_score(self, agent: _Agent, call: _Call) -> int | None:
        """Skill score over the best set the agent meets; None if it meets none."""
        scores = [score for pairs in call.requirement_sets
                  if (score := self._set_score(agent, pairs)) is not None]
        return max(scores) if scores else None

    def _eligible(self, agent: _Agent, call: _Call) -> bool:
        return self._best_score(agent, call) is not None

    def _next_random(self) -> int:
        """xorshift64*: the generator the compiled matcher uses, bit for bit."""
        x = self._rng_state
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        self._rng_state = x
        return (x * XORSHIFT_MULTIPLIER) & MASK64

    def pick_agent(self, call: int, strategy: int, now: float) -> int:
        """The available agent to offer the call to, by `strategy`; -1 if none fits."""
        _, waiting = self._call_at(call)
        strategy = operator.index(strategy)
        if not LONGEST_IDLE <= strategy <= RANDOM:
            raise ValueError(f"unknown strategy {strategy}")
        _finite(now, "now")
        agents = self._agents
        eligible = [slot for slot in sorted(self._available) if self._eligible(agents[slot], waiting)]
        if not eligible:
            return -1
        if strategy == LONGEST_IDLE:
            return min(eligible, key=lambda s: (agents[s].idle_since, s))
        if strategy == MOST_SKILLED:
            return min(eligible, key=lambda s: (-self._best_score(agents[s], waiting),
                                                agents[s].idle_since, s))
        if strategy == LEAST_OCCUPIED:
            return min(eligible, key=lambda s: (agents[s].occupancy, agents[s].idle_since, s))
        if strategy == FEWEST_CALLS:
            return min(eligible, key=lambda s: (agents[s].calls_handled, agents[s].idle_since, s))
        if strategy == ROUND_ROBIN:
            cursor = self._cursor[waiting.queue]
            after_cursor = [s for s in eligible if s > cursor]
            chosen = after_cursor[0] if after_cursor else eligible[0]
            self._cursor[waiting.queue] = chosen
            return chosen
        return eligible[self._next_random() % len(eligible)]

    def pick_call(self, agent: int, now: float) -> int:
        """The waiting call this agent should take next; -1 if it fits none."""
        _, free_agent = self._agent_at(agent)
        now = _finite(now, "now")
        calls = self._calls
        eligible = [slot for slot in sorted(self._waiting) if self._eligible(free_agent, calls[slot])]
        if not eligible:
            return -1
        return min(eligible, key=lambda s: (-calls[s].priority,
                                            -((now - calls[s].enqueued_at) * calls[s].weight),
                                            calls[s].seq, s))

    def count_eligible_agents(self, call: int, available_only: bool) -> int:
        _, waiting = self._call_at(call)
        slots = self._available if available_only else range(self.agent_capacity)
        return sum(1 for slot in slots
                   if self._agents[slot] is not None and self._eligible(self._agents[slot], waiting))

    @property
    def waiting_calls(self) -> int:
        return len(self._waiting)

    @property
    def available_agents(self) -> int:
        return len(self._available)
