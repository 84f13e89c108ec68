"""The skills matcher: every rule of ext/matcher.pyi, checked on both implementations.

Each test runs on the compiled matcher and on the pure-Python reference (fixture
`impl`).  The property test at the end drives both with the same random centre and
operations and requires the same answer to every call, errors included.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.engine import matcher_ref
from tests.factories import compiled_matcher_module

MASK64 = 2**64 - 1


@pytest.fixture(params=["compiled", "reference"])
def impl(request):
    """The matcher module under test: router.engine.cmatcher or matcher_ref."""
    return compiled_matcher_module() if request.param == "compiled" else matcher_ref


def centre(impl, agents, *, n_skills=8, calls=(), agent_capacity=8, call_capacity=8,
           n_queues=2, seed=0):
    """A matcher with `agents`: slot -> (skills, available, idle_since[, calls, occupancy])
    and `calls`: slot -> add_call arguments after the slot."""
    m = impl.Matcher(n_skills, agent_capacity, call_capacity, n_queues, seed)
    for slot, (skills, available, idle_since, *counters) in agents.items():
        m.set_agent(slot, skills)
        m.set_agent_available(slot, available, idle_since)
        if counters:
            m.set_agent_counters(slot, *counters)
    for slot, args in dict(calls).items():
        m.add_call(slot, *args)
    return m


def call(queue=0, priority=0, enqueued_at=0.0, seq=0, weight=1.0, sets=((),)):
    return (queue, priority, enqueued_at, seq, weight, [list(s) for s in sets])


# ---- module surface ------------------------------------------------------------

def test_constants(impl):
    assert (impl.LONGEST_IDLE, impl.MOST_SKILLED, impl.LEAST_OCCUPIED, impl.ROUND_ROBIN,
            impl.FEWEST_CALLS, impl.RANDOM) == (0, 1, 2, 3, 4, 5)
    assert (impl.MAX_SKILLS, impl.MAX_PAIRS_PER_SET, impl.MAX_SETS_PER_CALL) == (256, 16, 8)


def test_selector_prefers_the_compiled_matcher():
    from router.engine import matcher
    if matcher.COMPILED:
        assert matcher.Matcher is compiled_matcher_module().Matcher
    else:
        assert matcher.Matcher is matcher_ref.Matcher
    assert matcher.RANDOM == 5


def _load_selector_without_extension(monkeypatch):
    monkeypatch.setitem(sys.modules, "router.engine.cmatcher", None)   # import now fails
    path = Path(__file__).resolve().parents[1] / "router" / "engine" / "matcher.py"
    spec = importlib.util.spec_from_file_location("matcher_selector_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_selector_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("ACD_REQUIRE_COMPILED", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = _load_selector_without_extension(monkeypatch)
    assert module.COMPILED is False and module.Matcher is matcher_ref.Matcher
    assert [w.category for w in caught] == [RuntimeWarning]


def test_selector_refuses_fallback_when_compiled_required(monkeypatch):
    monkeypatch.setenv("ACD_REQUIRE_COMPILED", "1")
    with pytest.raises(ImportError, match="ACD_REQUIRE_COMPILED"):
        _load_selector_without_extension(monkeypatch)


# ---- pick_agent strategies -----------------------------------------------------

def test_longest_idle_picks_smallest_idle_since(impl):
    m = centre(impl, {0: ([], True, 30.0), 1: ([], True, 10.0), 2: ([], True, 20.0)},
               calls={0: call()})
    assert m.pick_agent(0, impl.LONGEST_IDLE, 100.0) == 1


def test_longest_idle_tie_goes_to_lowest_slot(impl):
    m = centre(impl, {5: ([], True, 10.0), 2: ([], True, 10.0), 7: ([], True, 10.0)},
               calls={0: call()})
    assert m.pick_agent(0, impl.LONGEST_IDLE, 100.0) == 2


def test_most_skilled_uses_best_matching_set(impl):
    # set A: skill 0 >= 1; set B: skills 1 and 2 >= 1.  Agent 0 meets A with 9;
    # agent 1 meets A with 3 and B with 4 + 4 = 8; agent 2 meets only B with 10 + 1.
    sets = [[(0, 1)], [(1, 1), (2, 1)]]
    m = centre(impl, {0: ([(0, 9)], True, 5.0),
                      1: ([(0, 3), (1, 4), (2, 4)], True, 1.0),
                      2: ([(1, 10), (2, 1)], True, 9.0)},
               calls={0: call(sets=sets)})
    assert m.pick_agent(0, impl.MOST_SKILLED, 0.0) == 2
    m.set_agent(2, [(1, 4), (2, 4)])           # agent 2 down to 8: agent 0's 9 is best
    assert m.pick_agent(0, impl.MOST_SKILLED, 0.0) == 0
    m.set_agent(0, [(0, 8)])                   # 8, 8, 8: smallest idle_since
    assert m.pick_agent(0, impl.MOST_SKILLED, 0.0) == 1


def test_most_skilled_tie_on_score_and_idle_goes_to_lowest_slot(impl):
    m = centre(impl, {3: ([(0, 5)], True, 1.0), 1: ([(0, 5)], True, 1.0)},
               calls={0: call(sets=[[(0, 1)]])})
    assert m.pick_agent(0, impl.MOST_SKILLED, 0.0) == 1


def test_least_occupied_then_idle_then_slot(impl):
    m = centre(impl, {0: ([], True, 1.0, 0, 0.5), 1: ([], True, 9.0, 0, 0.2),
                      2: ([], True, 5.0, 0, 0.2), 3: ([], True, 5.0, 0, 0.2)},
               calls={0: call()})
    assert m.pick_agent(0, impl.LEAST_OCCUPIED, 0.0) == 2
    m.set_agent_counters(3, 0, 0.1)
    assert m.pick_agent(0, impl.LEAST_OCCUPIED, 0.0) == 3


def test_fewest_calls_then_idle_then_slot(impl):
    m = centre(impl, {0: ([], True, 1.0, 4, 0.0), 1: ([], True, 9.0, 2, 0.0),
                      2: ([], True, 5.0, 2, 0.0), 3: ([], True, 5.0, 2, 0.0)},
               calls={0: call()})
    assert m.pick_agent(0, impl.FEWEST_CALLS, 0.0) == 2
    m.set_agent_counters(0, 1, 0.0)
    assert m.pick_agent(0, impl.FEWEST_CALLS, 0.0) == 0


def test_round_robin_cycles_in_slot_order_and_wraps(impl):
    m = centre(impl, {1: ([(0, 1)], True, 0.0), 2: ([], True, 0.0), 4: ([(0, 1)], True, 0.0),
                      6: ([(0, 1)], True, 0.0)},
               calls={0: call(sets=[[(0, 1)]])})
    picks = [m.pick_agent(0, impl.ROUND_ROBIN, 0.0) for _ in range(7)]
    assert picks == [1, 4, 6, 1, 4, 6, 1]                 # agent 2 is not eligible


def test_round_robin_cursor_is_per_queue(impl):
    agents = {slot: ([], True, 0.0) for slot in range(4)}
    m = centre(impl, agents, calls={0: call(queue=0), 1: call(queue=1, seq=1)})
    assert [m.pick_agent(0, impl.ROUND_ROBIN, 0.0) for _ in range(2)] == [0, 1]
    assert [m.pick_agent(1, impl.ROUND_ROBIN, 0.0) for _ in range(3)] == [0, 1, 2]
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 2
    m.set_call_queue(0, 1, 0, 1.0)                         # the call now follows queue 1's cursor
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 3


def test_round_robin_moves_past_an_unavailable_cursor_slot(impl):
    m = centre(impl, {slot: ([], True, 0.0) for slot in range(3)}, calls={0: call()})
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 0
    m.set_agent_available(0, False, 0.0)
    m.set_agent_available(1, False, 0.0)
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 2
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 2


def _xorshift64star(seed):
    state = (seed ^ 0x9E3779B97F4A7C15) & MASK64 or 0x9E3779B97F4A7C15
    while True:
        state ^= state >> 12
        state ^= (state << 25) & MASK64
        state ^= state >> 27
        yield (state * 0x2545F4914F6CDD1D) & MASK64


@pytest.mark.parametrize("seed", [0, 1, 42, -7, 2**64 - 1, 0x9E3779B97F4A7C15])
def test_random_draws_xorshift64star_rank_among_eligible_slots(impl, seed):
    eligible = [0, 3, 4, 6, 9]
    agents = {slot: ([(1, 5)] if slot in eligible else [(2, 5)], True, 0.0) for slot in range(10)}
    m = centre(impl, agents, calls={0: call(sets=[[(1, 2)]])}, agent_capacity=10, seed=seed)
    draws = _xorshift64star(seed)
    expected = [eligible[next(draws) % len(eligible)] for _ in range(50)]
    assert [m.pick_agent(0, impl.RANDOM, 0.0) for _ in range(50)] == expected


def test_random_is_deterministic_per_seed_and_covers_all_eligible(impl):
    def picks(seed):
        m = centre(impl, {slot: ([], True, 0.0) for slot in range(5)}, calls={0: call()}, seed=seed)
        return [m.pick_agent(0, impl.RANDOM, 0.0) for _ in range(200)]
    assert picks(7) == picks(7)
    assert picks(7) != picks(8)
    assert set(picks(7)) == {0, 1, 2, 3, 4}


def test_random_draws_nothing_when_no_agent_fits(impl):
    m = centre(impl, {0: ([], True, 0.0), 1: ([], True, 0.0)},
               calls={0: call(sets=[[(3, 1)]]), 1: call(seq=1)}, seed=3)
    assert m.pick_agent(0, impl.RANDOM, 0.0) == -1
    fresh = centre(impl, {0: ([], True, 0.0), 1: ([], True, 0.0)}, calls={1: call(seq=1)}, seed=3)
    assert ([m.pick_agent(1, impl.RANDOM, 0.0) for _ in range(20)]
            == [fresh.pick_agent(1, impl.RANDOM, 0.0) for _ in range(20)])


@pytest.mark.parametrize("strategy", range(6))
def test_no_available_eligible_agent_gives_minus_one(impl, strategy):
    m = centre(impl, {0: ([(0, 9)], False, 0.0), 1: ([(1, 9)], True, 0.0)},
               calls={0: call(sets=[[(0, 1)]])})
    assert m.pick_agent(0, strategy, 0.0) == -1


# ---- eligibility -----------------------------------------------------------------

def test_requirements_and_within_a_set_or_across_sets(impl):
    m = centre(impl, {0: ([(0, 5), (1, 5)], True, 0.0),     # meets set A
                      1: ([(0, 5)], True, 0.0),             # half of A only
                      2: ([(2, 3)], True, 0.0),             # meets set B
                      3: ([(0, 4), (1, 9)], True, 0.0),     # A's skill 0 below minimum
                      4: ([], True, 0.0)},
               calls={0: call(sets=[[(0, 5), (1, 5)], [(2, 3)]])})
    assert m.count_eligible_agents(0, True) == 2
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 0
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 2
    assert m.pick_agent(0, impl.ROUND_ROBIN, 0.0) == 0


def test_empty_set_matches_every_agent(impl):
    m = centre(impl, {0: ([], True, 0.0), 1: ([(4, 1)], True, 0.0)},
               calls={0: call(sets=[[(7, 10)], []])})
    assert m.count_eligible_agents(0, True) == 2


def test_minimum_zero_still_needs_the_skill(impl):
    m = centre(impl, {0: ([(3, 0)], True, 0.0), 1: ([(2, 9)], True, 0.0)},
               calls={0: call(sets=[[(3, 0)]])})
    assert m.count_eligible_agents(0, True) == 1
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0


def test_skills_at_the_top_of_the_bitset(impl):
    m = centre(impl, {0: ([(255, 7), (64, 1)], True, 0.0), 1: ([(63, 7)], True, 0.0)},
               n_skills=256, calls={0: call(sets=[[(255, 7), (64, 1)]]), 1: call(sets=[[(63, 8)]])})
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0
    assert m.pick_agent(1, impl.LONGEST_IDLE, 0.0) == -1


def test_relaxing_minimums_and_adding_a_set(impl):
    m = centre(impl, {0: ([(0, 3)], True, 2.0), 1: ([(1, 6)], True, 1.0)},
               calls={0: call(sets=[[(0, 5)]])})
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == -1
    m.set_call_requirements(0, [[(0, 3)]])                 # overflow step: relax 5 -> 3
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0
    m.set_call_requirements(0, [[(0, 3)], [(1, 6)]])       # and an alternative set
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 1
    assert m.count_eligible_agents(0, True) == 2


def test_count_eligible_agents_available_only(impl):
    m = centre(impl, {0: ([(0, 5)], True, 0.0), 1: ([(0, 5)], False, 0.0), 2: ([], True, 0.0)},
               calls={0: call(sets=[[(0, 1)]])})
    assert m.count_eligible_agents(0, True) == 1
    assert m.count_eligible_agents(0, False) == 2


# ---- availability and slot life cycle ------------------------------------------

def test_availability_controls_pick_agent_but_not_pick_call(impl):
    m = centre(impl, {0: ([], False, 0.0), 1: ([], True, 5.0)}, calls={0: call()})
    assert m.available_agents == 1
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 1
    m.set_agent_available(0, True, 1.0)
    assert m.available_agents == 2
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0
    m.set_agent_available(0, True, 9.0)                    # already available: idle_since updates
    assert m.available_agents == 2
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 1
    m.set_agent_available(1, False, 0.0)
    m.set_agent_available(0, False, 0.0)
    assert m.available_agents == 0
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == -1
    assert m.pick_call(0, 10.0) == 0


def test_new_agent_is_unavailable_and_set_agent_keeps_state(impl):
    m = impl.Matcher(4, 4, 4, 1)
    m.add_call(0, *call(sets=[[(0, 1)]]))
    m.set_agent(2, [(0, 5)])
    assert m.available_agents == 0 and m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == -1
    m.set_agent_available(2, True, 3.0)
    m.set_agent_counters(2, 7, 0.5)
    m.set_agent(2, [(0, 9), (1, 2)])                       # skills change, state stays
    assert m.available_agents == 1
    assert m.pick_agent(0, impl.MOST_SKILLED, 0.0) == 2


def test_removed_agent_is_gone_and_comes_back_unavailable(impl):
    m = centre(impl, {0: ([], True, 0.0), 1: ([], True, 1.0)}, calls={0: call()})
    m.remove_agent(0)
    assert m.available_agents == 1
    assert m.count_eligible_agents(0, False) == 1
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 1
    with pytest.raises(ValueError):
        m.pick_call(0, 0.0)
    m.set_agent(0, [])
    assert m.available_agents == 1
    m.set_agent_available(0, True, 0.0)
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0


def test_call_removed_and_readded_keeps_its_place(impl):
    m = centre(impl, {0: ([], True, 0.0)},
               calls={0: call(enqueued_at=10.0, seq=1), 1: call(enqueued_at=20.0, seq=2),
                      2: call(enqueued_at=30.0, seq=3)})
    assert m.waiting_calls == 3
    m.remove_call(0)                                       # offered to an agent who did not answer
    assert m.waiting_calls == 2 and m.pick_call(0, 50.0) == 1
    m.add_call(5, *call(enqueued_at=10.0, seq=1))          # re-queued at its original place
    assert m.waiting_calls == 3 and m.pick_call(0, 50.0) == 5


# ---- pick_call ordering ------------------------------------------------------------

def test_pick_call_priority_beats_wait(impl):
    m = centre(impl, {0: ([], True, 0.0)},
               calls={0: call(priority=0, enqueued_at=0.0, seq=1),
                      1: call(priority=1, enqueued_at=99.0, seq=2)})
    assert m.pick_call(0, 100.0) == 1


def test_pick_call_weighted_wait_then_seq_then_slot(impl):
    m = centre(impl, {0: ([], True, 0.0)},
               calls={0: call(queue=0, enqueued_at=60.0, seq=1, weight=1.0),    # 40 s * 1
                      1: call(queue=1, enqueued_at=80.0, seq=2, weight=3.0)})   # 20 s * 3
    assert m.pick_call(0, 100.0) == 1
    m.set_call_queue(1, 1, 0, 2.0)                         # 20 s * 2 = 40: tie, seq decides
    assert m.pick_call(0, 100.0) == 0
    m.add_call(2, *call(enqueued_at=60.0, seq=1))          # same key as call 0: lower slot wins
    m.remove_call(0)
    m.add_call(6, *call(enqueued_at=60.0, seq=1))
    assert m.pick_call(0, 100.0) == 2


def test_pick_call_skips_calls_the_agent_cannot_take(impl):
    m = centre(impl, {0: ([(0, 4)], False, 0.0)},
               calls={0: call(priority=5, sets=[[(1, 1)]], seq=1),
                      1: call(priority=0, sets=[[(0, 5)], [(0, 4)]], seq=2),
                      2: call(priority=0, sets=[[(0, 5)]], seq=3)})
    assert m.pick_call(0, 10.0) == 1
    m.remove_call(1)
    assert m.pick_call(0, 10.0) == -1


def test_set_call_queue_changes_priority(impl):
    m = centre(impl, {0: ([], True, 0.0)},
               calls={0: call(enqueued_at=0.0, seq=1), 1: call(enqueued_at=50.0, seq=2)})
    assert m.pick_call(0, 100.0) == 0
    m.set_call_queue(1, 1, 3, 1.0)
    assert m.pick_call(0, 100.0) == 1


# ---- argument errors -------------------------------------------------------------

BAD_CALLS = [
    ("agent slot below range", lambda m: m.set_agent(-1, []), IndexError),
    ("agent slot above range", lambda m: m.set_agent(4, []), IndexError),
    ("huge agent slot", lambda m: m.set_agent_available(2**70, True, 0.0), IndexError),
    ("slot not an int", lambda m: m.set_agent(1.0, []), TypeError),
    ("skill out of range", lambda m: m.set_agent(0, [(8, 1)]), ValueError),
    ("negative skill", lambda m: m.set_agent(0, [(-1, 1)]), ValueError),
    ("proficiency above 10", lambda m: m.set_agent(0, [(0, 11)]), ValueError),
    ("negative proficiency", lambda m: m.set_agent(0, [(0, -1)]), ValueError),
    ("skill given twice", lambda m: m.set_agent(0, [(0, 1), (0, 2)]), ValueError),
    ("remove absent agent", lambda m: m.remove_agent(3), ValueError),
    ("availability of absent agent", lambda m: m.set_agent_available(3, True, 0.0), ValueError),
    ("NaN idle_since", lambda m: m.set_agent_available(0, True, math.nan), ValueError),
    ("occupancy above 1", lambda m: m.set_agent_counters(0, 0, 1.5), ValueError),
    ("negative calls_handled", lambda m: m.set_agent_counters(0, -1, 0.0), ValueError),
    ("call slot in use", lambda m: m.add_call(0, *call()), ValueError),
    ("call slot above range", lambda m: m.add_call(4, *call()), IndexError),
    ("queue out of range", lambda m: m.add_call(2, *call(queue=2)), IndexError),
    ("priority beyond int32", lambda m: m.add_call(2, *call(priority=2**31)), ValueError),
    ("infinite enqueued_at", lambda m: m.add_call(2, *call(enqueued_at=math.inf)), ValueError),
    ("negative seq", lambda m: m.add_call(2, *call(seq=-1)), ValueError),
    ("negative weight", lambda m: m.add_call(2, *call(weight=-1.0)), ValueError),
    ("no requirement set", lambda m: m.add_call(2, *call(sets=[])), ValueError),
    ("nine requirement sets", lambda m: m.add_call(2, *call(sets=[[]] * 9)), ValueError),
    ("seventeen pairs", lambda m: m.set_call_requirements(0, [[(0, 1)] * 17]), ValueError),
    ("minimum above 10", lambda m: m.set_call_requirements(0, [[(0, 11)]]), ValueError),
    ("requirement skill out of range", lambda m: m.set_call_requirements(0, [[(8, 1)]]), ValueError),
    ("requirements of absent call", lambda m: m.set_call_requirements(3, [[]]), ValueError),
    ("move to unknown queue", lambda m: m.set_call_queue(0, 5, 0, 1.0), IndexError),
    ("remove absent call", lambda m: m.remove_call(3), ValueError),
    ("unknown strategy", lambda m: m.pick_agent(0, 6, 0.0), ValueError),
    ("negative strategy", lambda m: m.pick_agent(0, -1, 0.0), ValueError),
    ("pick for absent call", lambda m: m.pick_agent(3, 0, 0.0), ValueError),
    ("pick for call slot out of range", lambda m: m.pick_agent(9, 0, 0.0), IndexError),
    ("NaN now", lambda m: m.pick_agent(0, 0, math.nan), ValueError),
    ("pick_call for absent agent", lambda m: m.pick_call(3, 0.0), ValueError),
    ("pick_call agent out of range", lambda m: m.pick_call(-1, 0.0), IndexError),
    ("now not a number", lambda m: m.pick_call(0, "soon"), TypeError),
    ("count for absent call", lambda m: m.count_eligible_agents(3, True), ValueError),
]


@pytest.mark.parametrize("operation, error", [(op, err) for _, op, err in BAD_CALLS],
                         ids=[name for name, _, _ in BAD_CALLS])
def test_bad_arguments_raise_and_change_nothing(impl, operation, error):
    m = centre(impl, {0: ([(0, 5)], True, 1.0), 1: ([(1, 5)], True, 2.0)},
               calls={0: call(sets=[[(0, 1)]], seq=1), 1: call(seq=2)},
               agent_capacity=4, call_capacity=4)
    with pytest.raises(error):
        operation(m)
    assert (m.available_agents, m.waiting_calls) == (2, 2)
    assert m.pick_agent(0, impl.LONGEST_IDLE, 0.0) == 0
    assert m.pick_call(1, 10.0) == 1
    assert m.count_eligible_agents(1, False) == 2


@pytest.mark.parametrize("args", [(257, 1, 1, 1), (-1, 1, 1, 1), (8, -1, 1, 1), (8, 1, -1, 1),
                                  (8, 1, 1, -1)])
def test_bad_construction(impl, args):
    with pytest.raises(ValueError):
        impl.Matcher(*args)


def test_empty_tables_are_allowed(impl):
    m = impl.Matcher(0, 0, 0, 0)
    assert (m.available_agents, m.waiting_calls) == (0, 0)
    with pytest.raises(IndexError):
        m.pick_call(0, 0.0)


# ---- both implementations agree on random centres ------------------------------

N_SKILLS = 5
AGENT_CAPACITY = 10
CALL_CAPACITY = 8
N_QUEUES = 3

times = st.one_of(st.integers(0, 6).map(float), st.floats(0.0, 50.0, allow_nan=False))
agent_slots = st.integers(0, AGENT_CAPACITY)                 # one past the end: IndexError
call_slots = st.integers(0, CALL_CAPACITY)
skill_lists = st.lists(st.tuples(st.integers(0, N_SKILLS - 1), st.integers(0, 10)),
                       max_size=N_SKILLS, unique_by=lambda pair: pair[0])
requirement_sets = st.lists(st.lists(st.tuples(st.integers(0, N_SKILLS - 1), st.integers(0, 10)),
                                     max_size=3), min_size=1, max_size=3)
weights = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
occupancies = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0))

operations = st.one_of(
    st.tuples(st.just("set_agent"), agent_slots, skill_lists),
    st.tuples(st.just("remove_agent"), agent_slots),
    st.tuples(st.just("set_agent_available"), agent_slots, st.booleans(), times),
    st.tuples(st.just("set_agent_counters"), agent_slots, st.integers(0, 3), occupancies),
    st.tuples(st.just("add_call"), call_slots, st.integers(0, N_QUEUES - 1), st.integers(-1, 1),
              times, st.integers(0, 6), weights, requirement_sets),
    st.tuples(st.just("set_call_requirements"), call_slots, requirement_sets),
    st.tuples(st.just("set_call_queue"), call_slots, st.integers(0, N_QUEUES - 1),
              st.integers(-1, 1), weights),
    st.tuples(st.just("remove_call"), call_slots),
    st.tuples(st.just("pick_agent"), call_slots, st.integers(0, 5), times.map(lambda t: t + 50)),
    st.tuples(st.just("pick_call"), agent_slots, times.map(lambda t: t + 50)),
    st.tuples(st.just("count_eligible_agents"), call_slots, st.booleans()),
)


def _outcome(matcher, name, args):
    try:
        result = getattr(matcher, name)(*args)
    except (IndexError, ValueError, TypeError) as exc:
        result = type(exc).__name__
    return result, matcher.available_agents, matcher.waiting_calls


@st.composite
def random_centres(draw):
    """Agents with random skills, availability, idle times and counters, then
    waiting calls with 1-3 requirement sets, as a list of operations."""
    setup = []
    for slot in range(draw(st.integers(1, AGENT_CAPACITY))):
        setup.append(("set_agent", (slot, draw(skill_lists))))
        setup.append(("set_agent_available", (slot, draw(st.booleans()), draw(times))))
        setup.append(("set_agent_counters", (slot, draw(st.integers(0, 3)), draw(occupancies))))
    for slot in range(draw(st.integers(0, CALL_CAPACITY))):
        setup.append(("add_call", (slot, draw(st.integers(0, N_QUEUES - 1)), draw(st.integers(-1, 1)),
                                   draw(times), draw(st.integers(0, 6)), draw(weights),
                                   draw(requirement_sets))))
    return setup


@pytest.fixture(scope="module")
def cmatcher():
    return compiled_matcher_module()


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, MASK64), setup=random_centres(),
       steps=st.lists(operations.map(lambda op: (op[0], op[1:])), max_size=60))
def test_compiled_and_reference_make_identical_decisions(cmatcher, seed, setup, steps):
    compiled = cmatcher.Matcher(N_SKILLS, AGENT_CAPACITY, CALL_CAPACITY, N_QUEUES, seed)
    reference = matcher_ref.Matcher(N_SKILLS, AGENT_CAPACITY, CALL_CAPACITY, N_QUEUES, seed)
    for name, args in setup + steps:
        assert _outcome(compiled, name, args) == _outcome(reference, name, args), (name, args)
    finale = [("pick_agent", (call_slot, strategy, 99.0))           # every decision, at the end
              for call_slot in range(CALL_CAPACITY) for strategy in range(6)]
    finale += [("pick_call", (agent_slot, 99.0)) for agent_slot in range(AGENT_CAPACITY)]
    for name, args in finale:
        assert _outcome(compiled, name, args) == _outcome(reference, name, args), (name, args)
