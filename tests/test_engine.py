"""Engine transitions and overflow rules, driven by inputs at chosen instants (no sleeps)."""
from __future__ import annotations

import pytest

from router.engine.agents import TRANSITIONS, AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentMissed, AgentPause,
                                    AgentResume, CallerHungUp, CallFinished, CallQueued, CancelOffer,
                                    DivertCall, InvalidInput, OfferCall, OfferCallback, WrapUpDone, NOTHING)
from router.events import Event
from tests.factories import centre, queue, step


def offers(outputs):
    return [(o.call_id, o.agent) for o in outputs if isinstance(o, OfferCall)]


def events(outputs, type_=None):
    return [o for o in outputs if isinstance(o, Event) and (type_ is None or o.type == type_)]


def agent_states(outputs):
    return [(e.agent, e.data["state"]) for e in events(outputs, "agent.state")]


def login(engine, *agents, now=0.0):
    for a in agents:
        engine.handle(AgentLogin(a), now)


@pytest.fixture
def simple():
    c = centre({"ann": {"en": 5, "billing": 5}, "bob": {"en": 5, "billing": 8}},
               [queue("billing", {"billing": 3}, wrap_up_s=10.0, ring_timeout_s=15.0)])
    return Engine(c)


# --- the life of a call --------------------------------------------------------

def test_call_offered_answered_finished_wrapped(simple):
    login(simple, "ann", now=0.0)
    out = simple.handle(CallQueued("c1", "billing", caller_id="+441"), 100.0)
    assert offers(out) == [("c1", "ann")]
    joined = events(out, "queue.joined")[0]
    assert joined.data["caller_id"] == "+441" and joined.data["sl_threshold_s"] == 20.0
    assert agent_states(out) == [("ann", "reserved")]

    out = simple.handle(AgentAnswered("c1", "ann"), 104.0)
    connected = events(out, "call.connected")[0]
    assert connected.data["wait_s"] == 4.0 and connected.agent == "ann"
    assert agent_states(out) == [("ann", "on_call")]

    out = simple.handle(CallFinished("c1"), 204.0)
    assert events(out, "call.ended")[0].data == {"outcome": "answered", "talk_s": 100.0}
    assert agent_states(out) == [("ann", "wrap_up")]
    assert simple.next_deadline() == 214.0

    out = simple.advance(214.0)
    state = events(out, "agent.state")[0]
    assert (state.data["state"], state.data["previous"], state.data["previous_s"]) == ("available", "wrap_up", 10.0)
    assert state.call_id == "c1"
    assert "c1" not in simple.calls


def test_waiting_call_taken_by_agent_who_logs_in(simple):
    out = simple.handle(CallQueued("c1", "billing"), 0.0)
    assert offers(out) == []
    out = simple.handle(AgentLogin("bob"), 30.0)
    assert offers(out) == [("c1", "bob")]


def test_agent_freed_takes_next_waiting_call_after_wrap_up(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 1.0)
    simple.handle(AgentAnswered("c1", "ann"), 2.0)
    assert offers(simple.handle(CallQueued("c2", "billing"), 3.0)) == []
    simple.handle(CallFinished("c1"), 50.0)
    assert offers(simple.advance(59.9)) == []
    assert offers(simple.advance(60.0)) == [("c2", "ann")]


def test_wrap_up_done_early(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)
    simple.handle(AgentAnswered("c1", "ann"), 1.0)
    simple.handle(CallFinished("c1"), 2.0)
    out = simple.handle(WrapUpDone("ann"), 3.0)
    assert agent_states(out) == [("ann", "available")]
    assert agent_states(simple.advance(100.0)) == []      # the wrap timer is stale now


# --- exits -------------------------------------------------------------------------

def test_abandon_in_queue(simple):
    simple.handle(CallQueued("c1", "billing"), 0.0)
    out = simple.handle(CallerHungUp("c1"), 42.0)
    assert events(out, "call.abandoned")[0].data == {"wait_s": 42.0, "where": "queue"}
    assert events(out, "call.ended")[0].data["outcome"] == "abandoned"
    assert offers(simple.handle(AgentLogin("ann"), 50.0)) == []


def test_abandon_while_ringing_releases_agent(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)
    out = simple.handle(CallerHungUp("c1"), 5.0)
    assert [o for o in out if isinstance(o, CancelOffer)] == [CancelOffer("c1", "ann")]
    assert events(out, "call.abandoned")[0].data["where"] == "ringing"
    assert agent_states(out) == [("ann", "available")]


def test_caller_hangup_of_unknown_call_is_ignored(simple):
    assert simple.handle(CallerHungUp("never-queued"), 1.0) == []


def test_rona_requeues_at_original_place_and_pauses_agent(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)          # offered to ann
    simple.handle(CallQueued("c2", "billing"), 5.0)          # waits
    out = simple.advance(15.0)                                # ann's ring times out
    assert [o for o in out if isinstance(o, CancelOffer)] == [CancelOffer("c1", "ann")]
    assert events(out, "agent.no_answer")[0].data["reason"] == "timeout"
    assert agent_states(out) == [("ann", "paused")]
    assert events(out, "agent.state")[0].data["reason"] == "rona"
    out = simple.handle(AgentLogin("bob"), 20.0)             # first free agent gets c1, not c2
    assert offers(out) == [("c1", "bob")]
    assert simple.position("c2") == 1


def test_agent_missed_busy_same_as_rona_and_late_timer_is_harmless(simple):
    login(simple, "ann", "bob")
    out = simple.handle(CallQueued("c1", "billing"), 0.0)
    first = offers(out)[0][1]
    out = simple.handle(AgentMissed("c1", first, "busy"), 2.0)
    assert events(out, "agent.no_answer")[0].data["reason"] == "busy"
    other = offers(out)[0][1]
    assert other != first
    simple.handle(AgentAnswered("c1", other), 3.0)
    assert events(simple.advance(100.0), "agent.no_answer") == []


def test_rona_without_pause_makes_agent_available_again():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 1}, rona_pause=False)])
    e = Engine(c)
    login(e, "ann")
    e.handle(CallQueued("c1", "billing"), 0.0)
    out = e.advance(15.0)
    # released, then immediately offered the same call again (the only agent)
    assert agent_states(out) == [("ann", "available"), ("ann", "reserved")]


# --- agent pauses and log-outs --------------------------------------------------------

def test_pause_during_call_deferred_until_wrap_up_ends(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)
    simple.handle(AgentAnswered("c1", "ann"), 1.0)
    assert agent_states(simple.handle(AgentPause("ann", "lunch"), 2.0)) == []
    simple.handle(CallFinished("c1"), 10.0)
    out = simple.advance(20.0)
    assert agent_states(out) == [("ann", "paused")]
    assert events(out, "agent.state")[0].data["reason"] == "lunch"
    assert agent_states(simple.handle(AgentResume("ann"), 30.0)) == [("ann", "available")]


def test_resume_before_deferred_pause_cancels_it(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)
    simple.handle(AgentAnswered("c1", "ann"), 1.0)
    simple.handle(AgentPause("ann"), 2.0)
    simple.handle(AgentResume("ann"), 3.0)
    simple.handle(CallFinished("c1"), 10.0)
    assert agent_states(simple.advance(20.0)) == [("ann", "available")]


def test_logout_during_call_deferred(simple):
    login(simple, "ann")
    simple.handle(CallQueued("c1", "billing"), 0.0)
    simple.handle(AgentAnswered("c1", "ann"), 1.0)
    simple.handle(AgentLogout("ann"), 2.0)
    simple.handle(CallFinished("c1"), 10.0)
    assert agent_states(simple.advance(20.0)) == [("ann", "logged_out")]


def test_paused_agent_gets_no_calls(simple):
    login(simple, "ann")
    simple.handle(AgentPause("ann"), 1.0)
    assert offers(simple.handle(CallQueued("c1", "billing"), 2.0)) == []
    assert offers(simple.handle(AgentResume("ann"), 3.0)) == [("c1", "ann")]


def test_invalid_inputs(simple):
    with pytest.raises(InvalidInput):
        simple.handle(AgentLogin("nobody"), 0.0)
    with pytest.raises(InvalidInput):
        simple.handle(AgentPause("ann"), 0.0)                 # logged out
    with pytest.raises(InvalidInput):
        simple.handle(CallQueued("c1", "no-such-queue"), 0.0)
    simple.handle(CallQueued("c1", "billing"), 0.0)
    with pytest.raises(InvalidInput):
        simple.handle(CallQueued("c1", "billing"), 1.0)
    with pytest.raises(InvalidInput):
        simple.handle(AgentAnswered("c1", "ann"), 2.0)        # never offered to ann


# --- choosing agents and calls ---------------------------------------------------------

def test_skills_decide_who_can_take_a_call():
    c = centre({"ann": {"en": 5}, "pepe": {"es": 7, "en": 3}},
               [queue("support", {"en": 1})])
    e = Engine(c)
    login(e, "ann", "pepe")
    e.handle(AgentPause("pepe"), 0.0)
    e.handle(AgentResume("pepe"), 0.5)                        # pepe now idle longer? no: later
    out = e.handle(CallQueued("c1", "support", skills={"es": 5}), 1.0)
    assert offers(out) == [("c1", "pepe")]                    # only pepe speaks Spanish


@pytest.mark.parametrize("strategy,expected", [
    ("longest-idle", "ann"), ("most-skilled", "cat"), ("fewest-calls", "bob"), ("round-robin", "ann"),
])
def test_strategies(strategy, expected):
    c = centre({"ann": {"billing": 4}, "bob": {"billing": 6}, "cat": {"billing": 9}},
               [queue("billing", {"billing": 1}, strategy=strategy, wrap_up_s=0.0)])
    e = Engine(c)
    e.handle(AgentLogin("ann"), 0.0)
    e.handle(AgentLogin("bob"), 1.0)
    e.handle(AgentLogin("cat"), 2.0)
    # cat takes and finishes one call so fewest-calls prefers the others
    e.handle(AgentPause("ann"), 3.0)
    e.handle(AgentPause("bob"), 3.0)
    e.handle(CallQueued("warm", "billing"), 4.0)
    e.handle(AgentAnswered("warm", "cat"), 4.0)
    e.handle(CallFinished("warm"), 5.0)
    e.advance(5.0)
    e.handle(AgentResume("ann"), 6.0)
    e.handle(AgentResume("bob"), 7.0)
    e.handle(AgentPause("cat"), 8.0)
    e.handle(AgentResume("cat"), 9.0)
    out = e.handle(CallQueued("c1", "billing"), 10.0)
    if strategy == "fewest-calls":
        assert offers(out)[0][1] in {"ann", "bob"} and offers(out)[0][1] == "ann"
    else:
        assert offers(out) == [("c1", expected)]


def test_random_strategy_is_deterministic_for_a_seed():
    def run(seed):
        c = centre({f"a{i}": {"billing": 5} for i in range(10)},
                   [queue("billing", {"billing": 1}, strategy="random")])
        e = Engine(c, seed=seed)
        login(e, *c.agents)
        return [offers(e.handle(CallQueued(f"c{n}", "billing"), 1.0 + n))[0][1] for n in range(5)]
    assert run(7) == run(7)
    assert len(set(run(7))) > 1


def test_freed_agent_prefers_priority_then_weighted_wait():
    c = centre({"ann": {"billing": 5, "sales": 5}},
               [queue("billing", {"billing": 1}, weight=1.0),
                queue("sales", {"sales": 1}, weight=3.0),
                queue("vip", {"billing": 1}, priority=5)])
    e = Engine(c)
    e.handle(CallQueued("old-billing", "billing"), 0.0)       # waited 100 s x 1
    e.handle(CallQueued("sales", "sales"), 60.0)              # waited 40 s x 3 = 120
    out = e.handle(AgentLogin("ann"), 100.0)
    assert offers(out) == [("sales", "ann")]
    e2 = Engine(c)
    e2.handle(CallQueued("old-billing", "billing"), 0.0)
    e2.handle(CallQueued("vip-call", "vip"), 99.0)
    assert offers(e2.handle(AgentLogin("ann"), 100.0)) == [("vip-call", "ann")]


def test_call_priority_from_ivr_is_added_to_queue_priority():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 1})])
    e = Engine(c)
    e.handle(CallQueued("normal", "billing"), 0.0)
    e.handle(CallQueued("vip", "billing", priority=10), 50.0)
    assert e.position("vip") == 1 and e.position("normal") == 2
    assert offers(e.handle(AgentLogin("ann"), 60.0)) == [("vip", "ann")]


# --- overflow ------------------------------------------------------------------------------

def test_relax_proficiency_after_n_seconds():
    c = centre({"junior": {"billing": 3}},
               [queue("billing", {"billing": 7}, overflow=(step(after_s=30.0, relax={"billing": 2}),))])
    e = Engine(c)
    login(e, "junior")
    assert offers(e.handle(CallQueued("c1", "billing"), 0.0)) == []
    assert e.next_deadline() == 30.0
    out = e.advance(30.0)
    assert events(out, "queue.overflowed")[0].data["action"] == "relax"
    assert offers(out) == [("c1", "junior")]


def test_a_call_answered_after_a_relaxed_step_is_not_a_routing_match():
    c = centre({"junior": {"billing": 3}, "senior": {"billing": 8, "en": 6}},
               [queue("billing", {"billing": 7}, overflow=(step(after_s=30.0, relax={"billing": 2}),))])
    e = Engine(c)
    login(e, "junior")
    e.handle(CallQueued("c1", "billing"), 0.0)
    e.advance(30.0)                                           # relaxed: offered to the junior
    connected = events(e.handle(AgentAnswered("c1", "junior"), 31.0), "call.connected")
    assert connected[0].data["skills_met"] is False
    login(e, "senior", now=35.0)
    e.handle(CallQueued("c2", "billing", skills={"en": 5}), 40.0)       # the call's own need counts too
    assert events(e.handle(AgentAnswered("c2", "senior"), 41.0), "call.connected")[0].data["skills_met"] is True


def test_add_alternative_skill_set_keeps_call_language():
    c = centre({"gen-en": {"tech": 5, "en": 5}, "gen-es": {"tech": 5, "es": 5}},
               [queue("support", {"billing": 5}, overflow=(step(after_s=60.0, add_skills={"tech": 3}),))])
    e = Engine(c)
    login(e, "gen-en", "gen-es")
    assert offers(e.handle(CallQueued("c1", "support", skills={"es": 3}), 0.0)) == []
    out = e.advance(60.0)
    assert events(out, "queue.overflowed")[0].data["action"] == "add_skills"
    assert offers(out) == [("c1", "gen-es")]


def test_copy_to_other_queue_waits_for_both():
    c = centre({"biller": {"billing": 5}, "seller": {"sales": 5}},
               [queue("billing", {"billing": 5}, overflow=(step(after_s=20.0, copy_to="sales"),)),
                queue("sales", {"sales": 5})])
    e = Engine(c)
    e.handle(CallQueued("c1", "billing"), 0.0)
    out = e.advance(20.0)
    assert events(out, "queue.overflowed")[0].data == {"step": 0, "action": "copy", "to": "sales", "wait_s": 20.0}
    assert offers(e.handle(AgentLogin("seller"), 25.0)) == [("c1", "seller")]


def test_move_to_other_queue_keeps_place_and_follows_its_steps():
    c = centre({"seller": {"sales": 5}},
               [queue("billing", {"billing": 5}, overflow=(step(after_s=20.0, move_to="sales"),)),
                queue("sales", {"sales": 5}, overflow=(step(when="max_wait", value=100.0, action="voicemail"),))])
    e = Engine(c)
    e.handle(CallQueued("early", "billing"), 0.0)
    e.handle(CallQueued("sales-call", "sales"), 10.0)
    e.advance(20.0)                                             # early moves to sales, keeps joined_at 0
    assert e.calls["early"].queue == "sales"
    assert e.position("early") == 1
    out = e.advance(119.0)                                      # sales-call's own max wait: 10 + 100
    assert [o.call_id for o in out if isinstance(o, DivertCall)] == ["sales-call"]
    out = e.advance(120.0)                                      # early's max wait counts from the move: 20 + 100
    assert [(o.call_id, o.action) for o in out if isinstance(o, DivertCall)] == [("early", "voicemail")]


def test_max_wait_diverts_to_voicemail():
    c = centre({}, [queue("billing", {"billing": 5}, overflow=(
        step(when="max_wait", value=300.0, action="voicemail", target="vm-billing"),))])
    e = Engine(c)
    e.handle(CallQueued("c1", "billing"), 0.0)
    assert e.advance(299.0) == []
    out = e.advance(300.0)
    assert [o for o in out if isinstance(o, DivertCall)] == [DivertCall("c1", "voicemail", "vm-billing", None)]
    assert events(out, "queue.overflowed")[0].data["when"] == "max_wait"
    assert events(out, "call.ended")[0].data["outcome"] == "overflow"
    assert "c1" not in e.calls


def test_no_agents_logged_in_on_arrival():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 5}, overflow=(
        step(when="no_agents", action="hangup", message="closed"),))])
    e = Engine(c)
    out = e.handle(CallQueued("c1", "billing"), 0.0)
    assert [o for o in out if isinstance(o, DivertCall)] == [DivertCall("c1", "hangup", None, "closed")]


def test_no_agents_after_last_agent_logs_out():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 5}, overflow=(
        step(when="no_agents", action="transfer", target="+4420"),))])
    e = Engine(c)
    login(e, "ann")
    e.handle(AgentPause("ann"), 1.0)                            # paused agents still count as logged in
    assert [o for o in e.handle(CallQueued("c1", "billing"), 2.0) if isinstance(o, DivertCall)] == []
    out = e.handle(AgentLogout("ann"), 3.0)
    assert [o for o in out if isinstance(o, DivertCall)] == [DivertCall("c1", "transfer", "+4420", None)]


def test_queue_length_bound():
    c = centre({}, [queue("billing", {"billing": 5}, overflow=(
        step(when="queue_length", value=2, action="callback"),))])
    e = Engine(c)
    e.handle(CallQueued("c1", "billing"), 0.0)
    e.handle(CallQueued("c2", "billing"), 1.0)
    out = e.handle(CallQueued("c3", "billing"), 2.0)
    # a call-back is offered, not imposed: the caller keeps waiting unless they accept
    assert [o for o in out if isinstance(o, DivertCall)] == []
    assert [(o.call_id, o.queue) for o in out if isinstance(o, OfferCallback)] == [("c3", "billing")]
    assert events(out, "callback.offered")[0].data["reason"] == "queue_length"
    assert e.position("c3") == 3


def test_ewt_bound_and_ewt_per_position():
    c = centre({"ann": {"billing": 5}, "bob": {"billing": 5}},
               [queue("billing", {"billing": 5}, aht_estimate_s=200.0, overflow=(
                   step(when="ewt", value=250.0, action="voicemail"),))])
    e = Engine(c)
    login(e, "ann", "bob")
    for n, agent in enumerate(("ann", "bob")):
        e.handle(CallQueued(f"busy{n}", "billing"), 0.0)
        e.handle(AgentAnswered(f"busy{n}", agent), 0.0)
    assert e.ewt("billing", 1) == 100.0 and e.ewt("billing", 3) == 300.0
    e.handle(CallQueued("w1", "billing"), 1.0)                   # EWT 100
    e.handle(CallQueued("w2", "billing"), 2.0)                   # EWT 200
    out = e.handle(CallQueued("w3", "billing"), 3.0)             # EWT 300 > 250
    assert events(out, "queue.joined")[0].data["ewt_s"] == 300.0
    assert [o.action for o in out if isinstance(o, DivertCall)] == ["voicemail"]


def test_snapshot_counts():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 5})])
    e = Engine(c)
    e.handle(CallQueued("c1", "billing"), 0.0)
    snap = e.snapshot()
    assert snap["queues"]["billing"] == {"waiting": 1, "ewt_s": None}
    assert snap["agents"] == {"logged_out": 1}


def test_same_seed_same_outputs():
    def run():
        c = centre({f"a{i}": {"billing": 1 + i % 9} for i in range(6)},
                   [queue("billing", {"billing": 1}, strategy="random")])
        e = Engine(c, seed=3)
        login(e, *c.agents)
        trace = []
        for n in range(20):
            out = e.handle(CallQueued(f"c{n}", "billing"), float(n))
            trace += offers(out)
        return trace
    assert run() == run()


# --- the transition table, entry by entry ---------------------------------------------------

def _put_in_state(e: Engine, state: str) -> None:
    """Drive agent 'ann' of the `simple` centre into `state` through ordinary inputs."""
    if state == "logged_out":
        return
    e.handle(AgentLogin("ann"), 0.0)
    if state == "paused":
        e.handle(AgentPause("ann", "break"), 1.0)
    elif state in ("reserved", "on_call", "wrap_up"):
        e.handle(CallQueued("c1", "billing"), 1.0)
        if state in ("on_call", "wrap_up"):
            e.handle(AgentAnswered("c1", "ann"), 2.0)
        if state == "wrap_up":
            e.handle(CallFinished("c1"), 3.0)


_ACTIONS = {
    "login": lambda: AgentLogin("ann"), "logout": lambda: AgentLogout("ann"),
    "pause": lambda: AgentPause("ann", "lunch"), "resume": lambda: AgentResume("ann"),
    "answer": lambda: AgentAnswered("c1", "ann"), "no_answer": lambda: AgentMissed("c1", "ann"),
    "release": lambda: CallerHungUp("c1"), "hangup": lambda: CallFinished("c1"),
    "wrap_done": lambda: WrapUpDone("ann"), "reserve": lambda: CallQueued("c1", "billing"),
}


@pytest.mark.parametrize("source,action", sorted((s.value, a) for s, a in TRANSITIONS
                                                  if (s.value, a) != ("on_call", "release")))
def test_every_transition_of_the_table(simple, source, action):
    _put_in_state(simple, source)
    assert simple.agents["ann"].state.value == source
    simple.handle(_ACTIONS[action](), 10.0)
    assert simple.agents["ann"].state is TRANSITIONS[(AgentState(source), action)]


@pytest.mark.parametrize("source", ["reserved", "on_call", "wrap_up"])
@pytest.mark.parametrize("action", ["pause", "logout"])
def test_deferred_actions_leave_state_alone_until_free(simple, source, action):
    _put_in_state(simple, source)
    simple.handle(_ACTIONS[action](), 10.0)
    assert simple.agents["ann"].state.value == source
    assert simple.agents["ann"].deferred[0] == action


def test_a_messages_default_mapping_is_empty_immutable_and_hashable():
    msg = CallQueued("c1", "sales")
    assert msg.skills is NOTHING and msg.data is NOTHING
    assert dict(NOTHING) == {} and {**NOTHING} == {} and list(NOTHING.items()) == []
    assert NOTHING.keys() == set() and len(NOTHING.keys()) == 0 and NOTHING == {}
    assert hash(msg) == hash(CallQueued("c1", "sales"))
    with pytest.raises(KeyError):
        NOTHING["x"]
    with pytest.raises(TypeError):
        NOTHING["x"] = 1                                      # type: ignore[index]
