"""Type stub of the compiled matcher (router.engine.cmatcher), built from ext/matcher.pyx.

The pure-Python reference router.engine.matcher_ref.Matcher has the same API and
must choose identical results for identical inputs.

Model
-----
Agents and waiting calls live in fixed-size slot tables (slots are small ints the
engine assigns, 0 <= slot < capacity).  Skills are indices 0..n_skills-1
(n_skills <= 256); proficiencies and minimums are ints 0..10.

An agent has a skill set with proficiencies, an `available` flag, `idle_since`
(seconds), and counters (`calls_handled`, `occupancy` 0..1) kept by the engine.

A waiting call has a queue index, priority (higher first), `enqueued_at`
(seconds; kept on re-queue so the call keeps its place), `seq` (arrival order,
unique, final tie-break), queue `weight` and one or more requirement sets; an
agent is eligible for a call when it satisfies ALL (skill, minimum) pairs of ANY
of the call's sets (an empty set matches every agent).  A requirement set holds
at most 16 pairs; a call at most 8 sets.

Decisions
---------
pick_agent(call, strategy, now): among *available* eligible agents, by strategy
  0 longest-idle   : smallest idle_since
  1 most-skilled   : largest skill score (sum of the agent's proficiency over the
                     pairs of the best matching set), then smallest idle_since
  2 least-occupied : smallest occupancy, then smallest idle_since
  3 round-robin    : the first eligible slot after the queue's cursor (wrapping);
                     the cursor of the call's queue moves to the chosen slot
  4 fewest-calls   : smallest calls_handled, then smallest idle_since
  5 random         : uniform among eligible agents, drawn from the matcher's own
                     xorshift64* generator (seeded at construction)
  remaining ties: the lowest slot.  Returns -1 when no agent is eligible.
pick_call(agent, now): among waiting calls the agent is eligible for (its
  `available` flag is not consulted): highest priority, then largest
  (now - enqueued_at) * weight, then smallest seq.  Returns -1 when none.
count_eligible_agents(call, available_only): how many agents fit the call.

Decisions allocate nothing and touch no Python object.

Slot life cycle
---------------
set_agent on a free slot creates an unavailable agent with zero counters; on a
used slot it replaces the skills only.  remove_agent frees the slot.  add_call
needs a free slot; re-adding a call with its old enqueued_at and seq gives it
back its place.  Round-robin cursors survive agent removal.  The random
generator's first state is (seed ^ 0x9E3779B97F4A7C15) mod 2**64 (that constant
itself if this is 0); it draws only when at least one agent is eligible.

Errors (same type from both implementations; a rejected call changes nothing)
------
IndexError: a slot or queue index outside its table.
ValueError: a slot in the wrong state (no agent/call there, call slot in use),
  skill outside 0..n_skills-1 or given twice for an agent, proficiency or
  minimum outside 0..10, more than 16 pairs in a set, 0 or more than 8 sets,
  unknown strategy, non-finite times or weight, weight < 0, occupancy outside
  0..1, priority outside int32, seq or calls_handled negative.
TypeError: a non-integer where an integer is expected, a non-number for a time.
"""
from typing import Sequence

LONGEST_IDLE: int
MOST_SKILLED: int
LEAST_OCCUPIED: int
ROUND_ROBIN: int
FEWEST_CALLS: int
RANDOM: int
MAX_SKILLS: int          # 256
MAX_PAIRS_PER_SET: int   # 16
MAX_SETS_PER_CALL: int   # 8

class Matcher:
    def __init__(self, n_skills: int, agent_capacity: int, call_capacity: int,
                 n_queues: int, seed: int = 0) -> None: ...
    # agents
    def set_agent(self, slot: int, skills: Sequence[tuple[int, int]]) -> None: ...
    def remove_agent(self, slot: int) -> None: ...
    def set_agent_available(self, slot: int, available: bool, idle_since: float) -> None: ...
    def set_agent_counters(self, slot: int, calls_handled: int, occupancy: float) -> None: ...
    # waiting calls
    def add_call(self, slot: int, queue: int, priority: int, enqueued_at: float, seq: int,
                 weight: float, requirement_sets: Sequence[Sequence[tuple[int, int]]]) -> None: ...
    def set_call_requirements(self, slot: int,
                              requirement_sets: Sequence[Sequence[tuple[int, int]]]) -> None: ...
    def set_call_queue(self, slot: int, queue: int, priority: int, weight: float) -> None: ...
    def remove_call(self, slot: int) -> None: ...
    # decisions
    def pick_agent(self, call: int, strategy: int, now: float) -> int: ...
    def pick_call(self, agent: int, now: float) -> int: ...
    def count_eligible_agents(self, call: int, available_only: bool) -> int: ...
    @property
    def waiting_calls(self) -> int: ...
    @property
    def available_agents(self) -> int: ...
