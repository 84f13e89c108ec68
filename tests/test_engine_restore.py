"""Restoring the engine after a restart (AgentRestored, CallRestored) and its read-only views
(CallView, AgentView).  A restore is silent: it emits no event of its own, but what routing
follows from it is reported as usual.  Each test runs on the compiled matcher and on the
pure-Python reference (fixture `make`)."""
from __future__ import annotations

import dataclasses
import math

import pytest

from router.config.model import CallbackPolicy
from router.engine import matcher_ref
from router.engine.agents import AgentState
from router.engine.engine import AgentView, CallView, Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentMissed, AgentPause, AgentRestored,
                                    AgentResume, CallbackAccepted, CallerHungUp, CallFinished, CallQueued,
                                    CallRestored, CancelOffer, DivertCall, InvalidInput, MoveCall, OfferCall,
                                    SetCallPriority)
from router.events import Event
from tests.factories import centre, compiled_matcher_module, queue, step

R = 1_000.0        # the moment the router restarts


@pytest.fixture(params=["compiled", "reference"])
def make(request):
    """Engine(centre) on the compiled matcher or on the reference."""
    factory = compiled_matcher_module().Matcher if request.param == "compiled" else matcher_ref.Matcher
    return lambda c, **kw: Engine(c, matcher_factory=factory, **kw)


def offers(outputs):
    return [(o.call_id, o.agent) for o in outputs if isinstance(o, OfferCall)]


def events(outputs, type_=None):
    return [o for o in outputs if isinstance(o, Event) and (type_ is None or o.type == type_)]


def agent_states(outputs):
    return [(e.agent, e.data["state"]) for e in events(outputs, "agent.state")]


def billing_centre(**queue_kw):
    return centre({"ann": {"billing": 5, "en": 5}, "bob": {"billing": 8, "en": 5}, "cat": {"billing": 2}},
                  [queue("billing", {"billing": 3}, wrap_up_s=10.0, ring_timeout_s=15.0, **queue_kw),
                   queue("vip", {"billing": 3}, priority=5)])


def waiting_call(call_id, joined_at, queue_="billing", **kw):
    fields = dict(call_id=call_id, queue=queue_, entry_queue=queue_, caller_id=f"+44{call_id}", priority=0,
                  skills={}, joined_at=joined_at, queue_joined_at=joined_at)
    fields.update(kw)
    return CallRestored(**fields)


def state_of(e: Engine):
    """All an outsider can see of the engine, to check that a refused input changed nothing."""
    return (e.call_views(), e.agent_views(), e.snapshot(), e.next_deadline(),
            {q: [c.call_id for c in e.waiting(q)] for q in e.centre.queues})


def comparable(outputs):
    """Outputs without the events' ids (unique per event)."""
    return [(o.ts, o.type, o.call_id, o.queue, o.agent, o.data) if isinstance(o, Event) else o for o in outputs]


def restore_input(view: CallView) -> CallRestored:
    """The CallRestored that brings back the call a CallView shows."""
    assert view.callback_number is None
    state = "connected" if view.connected else "ringing" if view.agent else "waiting"
    return CallRestored(view.call_id, view.queue, view.entry_queue, view.caller_id, view.priority, view.skills,
                        view.joined_at, view.queue_joined_at, seq=view.seq, state=state, agent=view.agent,
                        connected_at=view.connected_at, next_step=view.next_step, moves=view.moves)


def agent_restore_input(view: AgentView) -> AgentRestored | None:
    """The AgentRestored that brings back an agent (one holding a call comes back available and
    is then taken by its call's CallRestored)."""
    if view.state is AgentState.LOGGED_OUT:
        return None
    state = {AgentState.RESERVED: "available", AgentState.ON_CALL: "available"}.get(view.state, view.state.value)
    return AgentRestored(view.agent, state, reason=view.reason, since=view.since, wrap_until=view.wrap_until,
                         call_id=view.call_id if state == "wrap_up" else None)


# --- AgentRestored ----------------------------------------------------------------------------

def test_an_agent_restored_available_is_staffed_and_silent(make):
    e = make(billing_centre())
    assert e.handle(AgentRestored("ann", "available", since=R - 300.0), R) == []
    view = e.agent_view("ann")
    assert view == AgentView("ann", AgentState.AVAILABLE, None, None, "Local/ann@agents", R - 300.0)
    assert e.snapshot()["agents"] == {"available": 1, "logged_out": 2}
    assert e.ewt("billing", 1) == e.centre.queues["billing"].aht_estimate_s      # one staffed agent
    assert e.agents["ann"].busy_s == e.agents["ann"].idle_s == 0.0
    out = e.handle(AgentPause("ann", "lunch"), R + 10.0)                     # time in state from `since`
    assert events(out, "agent.state")[0].data["previous_s"] == 310.0
    out = e.handle(AgentResume("ann"), R + 20.0)
    assert agent_states(out) == [("ann", "available")]


def test_an_agent_restored_available_is_offered_calls_like_one_who_logged_in(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available", since=R - 5.0), R)
    out = e.handle(CallQueued("c1", "billing"), R + 1.0)
    assert offers(out) == [("c1", "ann")]
    assert e.agent_view("ann").state is AgentState.RESERVED and e.agent_view("ann").call_id == "c1"


def test_restored_available_agents_keep_their_longest_idle_order(make):
    e = make(billing_centre())
    e.handle(AgentRestored("bob", "available", since=R - 10.0), R)
    e.handle(AgentRestored("ann", "available", since=R - 90.0), R)            # idle longer, restored later
    assert offers(e.handle(CallQueued("c1", "billing"), R + 1.0)) == [("c1", "ann")]
    assert offers(e.handle(CallQueued("c2", "billing"), R + 2.0)) == [("c2", "bob")]


def test_an_agent_restored_available_takes_a_waiting_call_at_once(make):
    e = make(billing_centre())
    assert e.handle(waiting_call("w1", R - 60.0), R) == []                   # nobody to take it
    out = e.handle(AgentRestored("bob", "available"), R)
    assert offers(out) == [("w1", "bob")]                                    # the routing is reported
    assert agent_states(out) == [("bob", "reserved")]
    assert [ev.type for ev in events(out)] == ["agent.state", "agent.offered"]


def test_an_agent_restored_paused_is_logged_in_but_not_staffed(make):
    c = billing_centre(overflow=(step(when="no_agents", action="hangup"),))
    e = make(c)
    assert e.handle(AgentRestored("ann", "paused", reason="lunch", since=R - 60.0), R) == []
    assert e.agent_view("ann").reason == "lunch"
    assert e.ewt("billing") is None                                          # paused: nobody staffed
    out = e.handle(CallQueued("c1", "billing"), R + 1.0)                     # but logged in: not diverted
    assert [o for o in out if isinstance(o, DivertCall)] == [] and offers(out) == []
    out = e.handle(AgentResume("ann"), R + 30.0)
    state = events(out, "agent.state")[0]
    assert (state.data["previous"], state.data["previous_s"]) == ("paused", 90.0)
    assert offers(out) == [("c1", "ann")]


def test_an_agent_restored_in_wrap_up_becomes_available_at_wrap_until(make):
    e = make(billing_centre())
    e.handle(waiting_call("w1", R - 30.0), R)
    assert e.handle(AgentRestored("ann", "wrap_up", since=R - 4.0, wrap_until=R + 6.0, call_id="old"), R) == []
    assert e.agent_view("ann") == AgentView("ann", AgentState.WRAP_UP, None, "old", "Local/ann@agents",
                                            R - 4.0, R + 6.0)
    assert e.ewt("billing", 1) is not None                                   # wrap-up is staffed
    assert e.next_deadline() == R + 6.0
    assert e.advance(R + 5.9) == []
    out = e.advance(R + 6.0)
    state = events(out, "agent.state")[0]
    assert (state.agent, state.call_id, state.data["previous"], state.data["previous_s"]) == (
        "ann", "old", "wrap_up", 10.0)
    assert offers(out) == [("w1", "ann")]


def test_a_wrap_up_that_ended_during_the_outage_ends_at_the_first_advance(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "wrap_up", since=R - 40.0, wrap_until=R - 30.0), R)
    e.handle(AgentRestored("bob", "wrap_up"), R)                            # wrap_until None: now
    assert e.next_deadline() == R                                            # not in the past
    out = e.advance(R + 2.0)
    assert [(ev.agent, ev.ts) for ev in events(out, "agent.state")] == [("ann", R), ("bob", R)]


@pytest.mark.parametrize("message, words", [
    (AgentRestored("nobody", "available"), "unknown agent"),
    (AgentRestored("ann", "on_call"), "cannot be restored"),
    (AgentRestored("ann", "reserved"), "cannot be restored"),
    (AgentRestored("ann", "logged_out"), "cannot be restored"),
    (AgentRestored("bob", "available"), "only a logged-out agent"),
    (AgentRestored("bob", "paused"), "only a logged-out agent"),
    (AgentRestored("ann", "available", since=math.nan), "since"),
    (AgentRestored("ann", "wrap_up", wrap_until=math.inf), "wrap_until"),
])
def test_an_agent_restore_that_does_not_fit_is_refused_and_changes_nothing(make, message, words):
    e = make(billing_centre())
    e.handle(AgentLogin("bob"), R - 100.0)
    e.handle(CallQueued("c1", "billing"), R - 50.0)                          # ringing bob
    before = state_of(e)
    with pytest.raises(InvalidInput, match=words):
        e.handle(message, R)
    assert state_of(e) == before
    assert e.handle(AgentRestored("ann", "available"), R) == []
    assert offers(e.handle(CallQueued("c2", "billing"), R + 1.0)) == [("c2", "ann")]


# --- CallRestored: waiting ------------------------------------------------------------------------

def test_a_restored_waiting_call_is_silent_and_keeps_its_fields(make):
    e = make(billing_centre())
    msg = waiting_call("w1", R - 120.0, entry_queue="vip", priority=7, skills={"en": 2}, seq=41,
                       queue_joined_at=R - 20.0)
    assert e.handle(msg, R) == []
    assert e.call_view("w1") == CallView(
        call_id="w1", queue="billing", entry_queue="vip", caller_id="+44w1", priority=7,
        joined_at=R - 120.0, queue_joined_at=R - 20.0, seq=41, waiting=True, agent=None, connected=False,
        callback_number=None, next_step=0, moves=0, skills={"en": 2})
    assert e.calls["w1"].priority == 7                    # the total: the queue's priority is not added again
    assert e.position("w1") == 1 and e.snapshot()["calls"] == 1
    e.handle(CallQueued("c2", "billing"), R + 1.0)
    assert e.call_view("c2").seq == 42                    # later calls come after the restored ones


def test_a_restored_older_call_is_served_before_a_newer_live_call_restored_after_it(make):
    e = make(billing_centre())
    e.handle(CallQueued("live", "billing"), R + 1.0)                         # arrives after the restart
    e.handle(waiting_call("old", R - 200.0, seq=3), R + 2.0)                 # restored after it
    e.handle(waiting_call("older", R - 300.0, seq=2), R + 3.0)
    assert [c.call_id for c in e.waiting("billing")] == ["older", "old", "live"]
    assert (e.position("older"), e.position("old"), e.position("live")) == (1, 2, 3)
    assert offers(e.handle(AgentLogin("ann"), R + 5.0)) == [("older", "ann")]
    assert offers(e.handle(AgentLogin("bob"), R + 6.0)) == [("old", "bob")]


def test_seq_breaks_ties_of_restored_calls_and_none_takes_the_next(make):
    e = make(billing_centre())
    e.handle(waiting_call("b", R - 60.0, seq=9), R)
    e.handle(waiting_call("a", R - 60.0, seq=4), R)                          # same instant, earlier seq
    e.handle(waiting_call("c", R - 60.0), R)                                 # seq None: after all known
    assert e.call_view("c").seq == 10
    assert [c.call_id for c in e.waiting("billing")] == ["a", "b", "c"]


def test_a_restored_call_that_an_available_agent_can_take_is_routed_at_once(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available"), R)
    out = e.handle(waiting_call("w1", R - 30.0), R)
    assert offers(out) == [("w1", "ann")]
    assert [ev.type for ev in events(out)] == ["agent.state", "agent.offered"]   # no queue.joined


def test_a_restored_waiting_call_that_hangs_up_is_abandoned_with_its_whole_wait(make):
    e = make(billing_centre())
    e.handle(waiting_call("w1", R - 120.0), R)
    out = e.handle(CallerHungUp("w1"), R + 30.0)
    assert events(out, "call.abandoned")[0].data == {"wait_s": 150.0, "where": "queue"}
    assert events(out, "call.ended")[0].data == {"outcome": "abandoned"}
    assert e.call_view("w1") is None


def test_steps_due_during_the_outage_fire_in_order_at_the_first_advance(make):
    c = centre({"junior": {"billing": 2, "tech": 4}},
               [queue("billing", {"billing": 7}, overflow=(
                   step(after_s=30.0, relax={"billing": 5}),
                   step(after_s=60.0, add_skills={"tech": 3}),
                   step(after_s=400.0, relax={"billing": 1}),
                   step(when="max_wait", value=500.0, action="voicemail")))])
    e = make(c)
    assert e.handle(waiting_call("w1", R - 150.0, queue_joined_at=R - 100.0), R) == []
    assert e.next_deadline() == R                        # overdue: now, not in the past
    e.handle(AgentRestored("junior", "paused"), R)       # can serve it once widened: not yet available
    out = e.advance(R + 1.0)
    overflowed = events(out, "queue.overflowed")
    assert [(ev.data["step"], ev.data["action"], ev.ts) for ev in overflowed] == [
        (0, "relax", R), (1, "add_skills", R)]
    assert overflowed[0].data["wait_s"] == 150.0
    assert e.calls["w1"].requirement_sets == [{"billing": 5}, {"tech": 3}]
    assert e.call_view("w1").next_step == 2
    assert e.next_deadline() == R - 100.0 + 400.0        # the next step keeps its own deadline
    out = e.advance(R + 300.0)
    assert [ev.data["step"] for ev in events(out, "queue.overflowed")] == [2]
    out = e.advance(R + 400.0)
    assert [(o.call_id, o.action) for o in out if isinstance(o, DivertCall)] == [("w1", "voicemail")]
    assert events(out, "queue.overflowed")[0].ts == R - 100.0 + 500.0


def test_a_move_due_during_the_outage_comes_before_a_max_wait_due_after_it(make):
    c = centre({"seller": {"sales": 5}},
               [queue("billing", {"billing": 5}, overflow=(
                   step(after_s=60.0, move_to="sales"),
                   step(when="max_wait", value=90.0, action="voicemail"))),
                queue("sales", {"sales": 5}, overflow=(step(when="max_wait", value=600.0, action="hangup"),))])
    e = make(c)
    e.handle(waiting_call("w1", R - 100.0), R)            # both the move (60) and the max wait (90) passed
    out = e.advance(R)
    assert [o for o in out if isinstance(o, DivertCall)] == []
    assert [(ev.type, ev.data.get("action")) for ev in events(out)] == [("queue.overflowed", "move")]
    view = e.call_view("w1")
    assert (view.queue, view.queue_joined_at, view.moves, view.joined_at) == ("sales", R, 1, R - 100.0)
    assert e.next_deadline() == R + 600.0                 # sales' max wait counts from the move
    assert offers(e.handle(AgentRestored("seller", "available"), R + 1.0)) == [("w1", "seller")]


def test_a_max_wait_passed_during_the_outage_diverts_at_the_first_advance(make):
    c = billing_centre(overflow=(step(when="max_wait", value=60.0, action="voicemail", target="vm"),))
    e = make(c)
    e.handle(waiting_call("w1", R - 100.0), R)
    out = e.advance(R)
    assert [o for o in out if isinstance(o, DivertCall)] == [DivertCall("w1", "voicemail", "vm", None)]
    assert events(out, "queue.overflowed")[0].data["wait_s"] == 100.0
    assert e.call_view("w1") is None


def test_an_offer_after_an_overdue_step_rings_for_the_whole_timeout(make):
    """The step that fell due during the outage fires at the restore time, not at its past deadline:
    the offer it leads to gets its full ring timeout on the real clock."""
    c = centre({"junior": {"billing": 3}},
               [queue("billing", {"billing": 7}, ring_timeout_s=15.0,
                      overflow=(step(after_s=30.0, relax={"billing": 2}),))])
    e = make(c)
    e.handle(AgentRestored("junior", "available"), R)
    assert offers(e.handle(waiting_call("w1", R - 100.0), R)) == []     # not yet relaxed
    out = e.advance(R)
    assert offers(out) == [("w1", "junior")]
    assert {ev.ts for ev in events(out)} == {R}
    assert e.next_deadline() == R + 15.0
    assert e.advance(R + 14.9) == []


def test_steps_already_run_are_reapplied_to_the_requirements(make):
    c = centre({"junior": {"billing": 3}, "seller": {"sales": 5, "en": 1}},
               [queue("billing", {"billing": 7}, overflow=(
                   step(after_s=30.0, relax={"billing": 6}),
                   step(after_s=60.0, copy_to="sales"),
                   step(after_s=90.0, relax={"billing": 3}),
                   step(when="max_wait", value=900.0, action="voicemail"))),
                queue("sales", {"sales": 5})])
    e = make(c)
    e.handle(waiting_call("w1", R - 80.0, skills={"en": 1}, next_step=2), R)
    assert e.calls["w1"].requirement_sets == [{"billing": 6, "en": 1}, {"sales": 5, "en": 1}]
    assert e.calls["w1"].copied_to == {"sales"}
    assert e.next_deadline() == R + 10.0                  # step 2 at 90 s after joining billing
    out = e.handle(AgentRestored("seller", "available"), R + 1.0)   # the copy to sales holds
    assert offers(out) == [("w1", "seller")]


def test_next_step_past_the_timed_steps_arms_only_the_max_wait(make):
    c = billing_centre(overflow=(step(after_s=30.0, relax={"billing": 1}),
                                 step(when="max_wait", value=300.0, action="voicemail")))
    e = make(c)
    e.handle(waiting_call("w1", R - 50.0, next_step=2), R)
    assert e.calls["w1"].requirement_sets == [{"billing": 1}]
    assert e.next_deadline() == R + 250.0


# --- CallRestored: ringing and connected ---------------------------------------------------------

def test_a_restored_ringing_call_reserves_its_agent_without_a_new_offer(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available", since=R - 3.0), R)
    out = e.handle(waiting_call("r1", R - 20.0, state="ringing", agent="ann"), R)
    assert out == []                                      # no OfferCall: Asterisk is ringing already
    view = e.call_view("r1")
    assert (view.waiting, view.agent, view.connected) == (False, "ann", False)
    assert e.agent_view("ann").state is AgentState.RESERVED and e.agent_view("ann").call_id == "r1"
    assert e.agent_view("ann").since == R - 3.0
    assert e.next_deadline() == R + 15.0                  # the ring timeout, from now
    assert offers(e.handle(CallQueued("c2", "billing"), R + 1.0)) == []     # ann is not free
    out = e.handle(AgentAnswered("r1", "ann"), R + 4.0)
    connected = events(out, "call.connected")[0]
    assert (connected.agent, connected.data["wait_s"]) == ("ann", 24.0)
    state = events(out, "agent.state")[0]
    assert (state.data["state"], state.data["previous"], state.data["previous_s"]) == ("on_call", "reserved", 7.0)
    assert e.advance(R + 100.0) == []                     # the ring timer no longer applies


def test_a_restored_ringing_call_missed_goes_back_to_its_place(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available"), R)
    e.handle(waiting_call("r1", R - 20.0, state="ringing", agent="ann", seq=5), R)
    e.handle(waiting_call("w2", R - 10.0, seq=6), R)                         # joined after r1
    e.handle(CallQueued("c3", "billing"), R + 1.0)
    out = e.handle(AgentMissed("r1", "ann", "busy"), R + 2.0)
    assert events(out, "agent.no_answer")[0].data["reason"] == "busy"
    assert agent_states(out) == [("ann", "paused")]
    assert [c.call_id for c in e.waiting("billing")] == ["r1", "w2", "c3"]
    assert offers(e.handle(AgentLogin("bob"), R + 3.0)) == [("r1", "bob")]


def test_a_restored_ringing_call_times_out_and_is_cancelled(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available"), R)
    e.handle(waiting_call("r1", R - 20.0, state="ringing", agent="ann"), R)
    out = e.advance(R + 15.0)
    assert [o for o in out if isinstance(o, CancelOffer)] == [CancelOffer("r1", "ann")]
    assert e.call_view("r1").waiting


def test_a_restored_ringing_call_whose_caller_hangs_up_releases_the_agent(make):
    e = make(billing_centre())
    e.handle(AgentRestored("ann", "available"), R)
    e.handle(waiting_call("r1", R - 20.0, state="ringing", agent="ann"), R)
    out = e.handle(CallerHungUp("r1"), R + 5.0)
    assert [o for o in out if isinstance(o, CancelOffer)] == [CancelOffer("r1", "ann")]
    assert events(out, "call.abandoned")[0].data == {"wait_s": 25.0, "where": "ringing"}
    assert agent_states(out) == [("ann", "available")]


def test_a_step_that_fell_due_while_a_restored_call_rang_fires_when_it_is_missed(make):
    """Re-armed on the miss, the overdue step fires at the miss's time, not in the past."""
    c = centre({"ann": {"billing": 9}, "junior": {"billing": 3}},
               [queue("billing", {"billing": 7}, ring_timeout_s=15.0,
                      overflow=(step(after_s=30.0, relax={"billing": 2}),))])
    e = make(c)
    e.handle(AgentRestored("ann", "available"), R)
    e.handle(AgentRestored("junior", "available"), R)
    e.handle(waiting_call("r1", R - 100.0, state="ringing", agent="ann"), R)
    e.handle(AgentMissed("r1", "ann"), R + 10.0)
    assert e.next_deadline() == R + 10.0
    out = e.advance(R + 10.0)
    assert [(ev.type, ev.ts) for ev in events(out)][:1] == [("queue.overflowed", R + 10.0)]
    assert offers(out) == [("r1", "junior")]
    assert e.next_deadline() == R + 25.0


def test_a_late_timer_never_fires_before_the_latest_time_given(make):
    """The same rule without a restore: a step that fell due while its call rang fires at the
    ring-no-answer, not at its past deadline (events never go back in time)."""
    c = centre({"ann": {"billing": 9}, "junior": {"billing": 3}},
               [queue("billing", {"billing": 7}, ring_timeout_s=15.0,
                      overflow=(step(after_s=10.0, relax={"billing": 2}),))])
    e = make(c)
    e.handle(AgentLogin("ann"), 0.0)
    e.handle(AgentLogin("junior"), 0.0)
    assert offers(e.handle(CallQueued("c1", "billing"), 0.0)) == [("c1", "ann")]
    out = e.advance(15.0)                                 # ring timeout; the step (due at 10) re-armed
    assert [ev.type for ev in events(out)][:2] == ["agent.no_answer", "agent.state"]
    assert [(ev.ts, ev.data["wait_s"]) for ev in events(out, "queue.overflowed")] == [(15.0, 15.0)]
    assert sorted({ev.ts for ev in events(out)}) == [15.0]
    assert offers(out) == [("c1", "junior")]
    assert e.next_deadline() == 30.0                      # a full ring timeout from the offer


def test_a_restored_connected_call_ends_with_its_talk_time_and_wrap_up(make):
    e = make(billing_centre())
    e.handle(AgentRestored("bob", "available", since=R - 40.0), R)
    msg = waiting_call("k1", R - 100.0, state="connected", agent="bob", connected_at=R - 40.0)
    assert e.handle(msg, R) == []
    view = e.call_view("k1")
    assert (view.waiting, view.agent, view.connected, view.connected_at) == (False, "bob", True, R - 40.0)
    assert e.agent_view("bob").state is AgentState.ON_CALL
    assert e.next_deadline() is None                      # no timer for a connected call
    out = e.handle(CallFinished("k1"), R + 20.0)
    ended = events(out, "call.ended")[0]
    assert (ended.agent, ended.data) == ("bob", {"outcome": "answered", "talk_s": 60.0})
    state = events(out, "agent.state")[0]
    assert (state.data["state"], state.data["previous_s"]) == ("wrap_up", 60.0)
    assert e.agent_view("bob").wrap_until == R + 30.0
    assert agent_states(e.advance(R + 30.0)) == [("bob", "available")]


def test_a_restored_connected_call_whose_caller_hangs_up_ends_answered(make):
    e = make(billing_centre())
    e.handle(AgentRestored("bob", "available"), R)
    e.handle(waiting_call("k1", R - 100.0, state="connected", agent="bob", connected_at=R - 40.0), R)
    out = e.handle(CallerHungUp("k1"), R + 5.0)
    assert events(out, "call.ended")[0].data == {"outcome": "answered", "talk_s": 45.0}


@pytest.mark.parametrize("message, words", [
    (waiting_call("w9", 0.0, queue_="nowhere"), "unknown queue"),
    (waiting_call("w9", 0.0, entry_queue="nowhere"), "unknown queue"),
    (waiting_call("w1", 0.0), "already known"),                              # a restored call
    (waiting_call("c1", 0.0), "already known"),                              # a live call
    (waiting_call("w9", 0.0, skills={"klingon": 3}), "unknown skill"),
    (waiting_call("w9", 0.0, state="parked"), "cannot be restored"),
    (waiting_call("w9", 0.0, state="ringing"), "say which agent"),
    (waiting_call("w9", 0.0, state="connected", connected_at=1.0), "say which agent"),
    (waiting_call("w9", 0.0, state="ringing", agent="nobody"), "unknown agent"),
    (waiting_call("w9", 0.0, state="ringing", agent="cat"), "logged_out"),
    (waiting_call("w9", 0.0, state="ringing", agent="bob"), "reserved"),     # ringing c1 already
    (waiting_call("w9", 0.0, state="connected", agent="ann"), "connected_at"),
    (waiting_call("w9", 0.0, state="ringing", agent="ann", connected_at=1.0), "connected_at"),
    (waiting_call("w9", 0.0, agent="ann"), "no agent"),
    (waiting_call("w9", 0.0, next_step=2), "next_step"),
    (waiting_call("w9", 0.0, next_step=-1), "next_step"),
    (waiting_call("w9", 0.0, moves=-1), "moves"),
    (waiting_call("w9", 0.0, seq=-3), "seq"),
    (waiting_call("w9", math.nan), "joined_at"),
    (waiting_call("w9", 0.0, queue_joined_at=math.inf), "queue_joined_at"),
])
def test_a_call_restore_that_does_not_fit_is_refused_and_changes_nothing(make, message, words):
    e = make(billing_centre(overflow=(step(after_s=30.0, relax={"billing": 1}),)))
    e.handle(AgentLogin("bob"), R - 10.0)
    e.handle(CallQueued("c1", "billing"), R - 5.0)                           # ringing bob
    e.handle(waiting_call("w1", R - 60.0, skills={"es": 1}), R)              # nobody speaks Spanish
    e.handle(AgentRestored("ann", "available"), R)                           # free for the ringing cases
    assert e.agent_view("bob").state is AgentState.RESERVED and e.agent_view("ann").state is AgentState.AVAILABLE
    before = state_of(e)
    seq = e._call_seq
    with pytest.raises(InvalidInput, match=words):
        e.handle(message, R + 3.0)
    assert state_of(e) == before and e._call_seq == seq
    assert offers(e.handle(CallQueued("c2", "billing"), R + 4.0)) == [("c2", "ann")]   # ann still free
    assert e.call_view("c2").seq == seq + 1


# --- views ------------------------------------------------------------------------------------------

def test_views_of_unknown_things_are_none_and_views_are_copies(make):
    e = make(billing_centre())
    assert e.call_view("nope") is None and e.agent_view("nope") is None
    e.handle(CallQueued("c1", "billing", skills={"en": 3}), 1.0)
    view = e.call_view("c1")
    view.skills["en"] = 9                                 # a copy: the engine is not touched
    assert e.calls["c1"].extra_skills == {"en": 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.queue = "vip"                                # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.agent_view("ann").state = AgentState.AVAILABLE  # type: ignore[misc]
    assert [v.agent for v in e.agent_views()] == ["ann", "bob", "cat"]
    assert e.agent_view("cat") == AgentView("cat", AgentState.LOGGED_OUT, None, None, "Local/cat@agents", None)


def test_call_views_follow_a_call_through_its_life(make):
    c = centre({"ann": {"billing": 5}},
               [queue("billing", {"billing": 1}, callback=CallbackPolicy(),
                      overflow=(step(after_s=30.0, relax={"billing": 1}),))])
    e = make(c)
    e.handle(CallQueued("c1", "billing", caller_id="+447700900001", priority=2), 0.0)
    e.handle(CallQueued("c2", "billing", caller_id="+447700900002"), 5.0)
    view = e.call_view("c1")
    assert (view.waiting, view.agent, view.connected, view.priority, view.seq) == (True, None, False, 2, 1)
    e.advance(30.0)
    assert e.call_view("c1").next_step == 1
    e.handle(CallbackAccepted("c2", "+447700900002"), 31.0)
    assert e.call_view("c2").callback_number == "+447700900002"
    e.handle(AgentLogin("ann"), 40.0)
    view = e.call_view("c1")
    assert (view.waiting, view.agent, view.connected) == (False, "ann", False)
    e.handle(AgentAnswered("c1", "ann"), 42.0)
    view = e.call_view("c1")
    assert (view.waiting, view.agent, view.connected, view.connected_at) == (False, "ann", True, 42.0)
    assert [v.call_id for v in e.call_views()] == ["c1", "c2"]
    e.handle(CallFinished("c1"), 50.0)
    assert e.call_view("c1") is None
    assert e.agent_view("ann") == AgentView("ann", AgentState.WRAP_UP, None, "c1", "Local/ann@agents", 50.0, 60.0)


# --- round trip: views of a busy engine rebuild the same engine ---------------------------------------

def _busy_centre():
    return centre(
        {"ann": {"billing": 5, "en": 5}, "bob": {"billing": 8, "en": 5}, "cat": {"billing": 4, "es": 6},
         "dan": {"billing": 6, "sales": 5}, "eve": {"sales": 7, "en": 5}, "fay": {"billing": 9, "sales": 3},
         "gus": {"tech": 5}, "hal": {"vip": 5}, "ivy": {"billing": 7}},
        [queue("billing", {"billing": 6}, weight=1.0, overflow=(
            step(after_s=40.0, relax={"billing": 4}), step(after_s=90.0, copy_to="sales"),
            step(when="max_wait", value=600.0, action="voicemail"))),
         queue("sales", {"sales": 5}, weight=2.0, overflow=(step(after_s=120.0, move_to="billing"),)),
         queue("vip", {"billing": 5}, priority=5),
         queue("tech", {"tech": 3})])


def _drive_busy(e: Engine) -> float:
    """A busy morning: every kind of call and agent state; returns the moment it stops.  No call
    ends (that would move the queue's AHT estimate, which a restore does not carry)."""
    e.handle(AgentRestored("gus", "wrap_up", since=0.0, wrap_until=250.0, call_id="before"), 0.0)
    e.handle(AgentLogin("hal"), 0.5)                      # serves no queue: stays available
    for agent, at in (("ann", 0.0), ("bob", 1.0), ("dan", 2.0), ("eve", 3.0), ("fay", 4.0), ("cat", 5.0)):
        e.handle(AgentLogin(agent), at)
    e.handle(AgentPause("cat", "training"), 6.0)
    t = 10.0
    arrivals = [("billing", {}), ("sales", {}), ("billing", {"en": 3}), ("vip", {}), ("billing", {}),
                ("sales", {"en": 2}), ("billing", {"es": 5}), ("billing", {}), ("sales", {}), ("vip", {}),
                ("billing", {}), ("tech", {}), ("billing", {}), ("sales", {})]
    for n, (q, skills) in enumerate(arrivals):
        t += 7.0
        out = e.handle(CallQueued(f"c{n:02d}", q, caller_id=f"+4477009{n:05d}", skills=skills), t)
        for call_id, agent in offers(out):
            if n % 3 == 0:
                e.handle(AgentMissed(call_id, agent, "busy"), t + 1.0)      # RONA: back at its place
            elif n % 3 == 1:
                e.handle(AgentAnswered(call_id, agent), t + 2.0)
        e.advance(t + 3.0)
    e.handle(SetCallPriority("c07", 3), t + 4.0)
    e.handle(MoveCall("c08", "billing"), t + 5.0)
    e.advance(t + 130.0)                                  # steps run: relax, copy, move
    for agent in ("ann", "bob", "dan", "eve", "fay"):
        if e.agent_view(agent).state is AgentState.PAUSED:
            e.handle(AgentResume(agent), t + 131.0)
    e.advance(t + 132.0)
    return t + 132.0


def _restore(c, make, views, agent_views, now):
    fresh = make(c)
    outputs = []
    for view in agent_views:
        msg = agent_restore_input(view)
        if msg is not None:
            outputs += fresh.handle(msg, now)
    held = [v for v in views if v.agent is not None]
    waiting = [v for v in views if v.agent is None]
    for view in held + waiting:                            # the calls holding an agent first
        outputs += fresh.handle(restore_input(view), now)
    return fresh, outputs


def test_views_of_a_busy_engine_rebuild_one_that_decides_the_same(make):
    c = _busy_centre()
    live = make(c)
    now = _drive_busy(live)
    views, agent_views = live.call_views(), live.agent_views()
    kinds = {("connected" if v.connected else "ringing" if v.agent else "waiting") for v in views}
    assert kinds == {"waiting", "ringing", "connected"}, kinds
    assert {v.state for v in agent_views} == set(AgentState)          # every state, wrap-up too
    assert any(v.next_step > 0 for v in views) and any(v.moves > 0 for v in views)
    assert all(v.callback_number is None for v in views)

    restored, outputs = _restore(c, make, views, agent_views, now)
    assert outputs == []                                  # silent, and nothing to route: as before
    assert restored.call_views() == views
    assert restored.agent_views() == agent_views
    for q in c.queues:
        assert [x.call_id for x in restored.waiting(q)] == [x.call_id for x in live.waiting(q)]
        assert [restored.position(x.call_id) for x in restored.waiting(q)] == \
               [live.position(x.call_id) for x in live.waiting(q)]
        assert restored.ewt(q) == live.ewt(q)
    for call_id in live.calls:
        assert restored.calls[call_id].requirement_sets == live.calls[call_id].requirement_sets
    assert restored.snapshot() == live.snapshot()

    # the same inputs from here on give the same decisions (the ringing calls are answered before
    # either ring timer: the restored one restarted at the restore)
    def later(e):
        trace = []
        for v in views:
            if v.agent is not None and not v.connected:
                trace += e.handle(AgentAnswered(v.call_id, v.agent), now + 1.0)
        for v in views:
            if v.connected:
                trace += e.handle(CallFinished(v.call_id), now + 2.0)
        trace += e.advance(now + 20.0)                      # wrap-ups end: who takes which call
        trace += e.handle(AgentLogin("ivy"), now + 21.0)
        trace += e.handle(CallQueued("new", "billing"), now + 22.0)
        trace += e.handle(AgentResume("cat"), now + 23.0)
        trace += e.advance(now + 700.0)                     # remaining steps, RONAs, max waits
        return trace
    live_trace, restored_trace = later(live), later(restored)
    assert offers(live_trace) and offers(restored_trace) == offers(live_trace)
    assert comparable(restored_trace) == comparable(live_trace)
    assert restored.call_views() == live.call_views()
