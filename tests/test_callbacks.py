"""Call-backs in the engine: the virtual entry keeps the caller's place, is dialled
agent first, retries, gives up, de-duplicates and is cancelled when the customer
gets through by calling in."""
from __future__ import annotations

import pytest

from router.config.model import CallbackPolicy
from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentMissed, CallbackAccepted, CallbackAnswered,
                                    CallbackFailed, CallbackRestored, CallbackWithdrawn, CallerHungUp, CallerLeft,
                                    CallFinished, CallQueued, DialCallback, InvalidInput, OfferCall, OfferCallback)
from router.events import Event
from tests.factories import centre, queue, step


def engine(**policy) -> Engine:
    c = centre({"ann": {"billing": 5}, "bob": {"billing": 5}},
               [queue("billing", {"billing": 1}, wrap_up_s=0.0,
                      callback=CallbackPolicy(**{"retry_s": 300.0, "max_attempts": 2, **policy}),
                      overflow=(step(when="max_wait", value=600.0, action="voicemail"),))])
    return Engine(c)


def types(outputs):
    return [o.type for o in outputs if isinstance(o, Event)]


def dials(outputs):
    return [o for o in outputs if isinstance(o, DialCallback)]


def test_accepted_callback_keeps_its_place_and_is_dialled_agent_first():
    e = engine()
    e.handle(CallQueued("early", "billing", caller_id="+447700900001"), 0.0)
    e.handle(CallQueued("later", "billing", caller_id="+447700900002"), 10.0)
    out = e.handle(CallbackAccepted("early", "+447700900001"), 30.0)
    assert types(out) == ["callback.offered", "callback.accepted"]
    assert out[-1].data["position"] == 1
    assert e.handle(CallerHungUp("early"), 31.0) == []          # not an abandon
    out = e.handle(AgentLogin("ann"), 100.0)                     # first agent: the call-back, not "later"
    [dial] = dials(out)
    assert (dial.call_id, dial.agent, dial.number, dial.agent_first, dial.attempt) == (
        "early", "ann", "+447700900001", True, 1)
    assert "callback.dialing" in types(out)
    out = e.handle(AgentAnswered("early", "ann"), 103.0)         # agent leg up: no connection yet
    assert "call.connected" not in types(out)
    out = e.handle(CallbackAnswered("early"), 110.0)
    assert types(out) == ["call.connected", "callback.connected"]
    assert out[0].data["wait_s"] == 110.0                       # its wait runs from the original join
    assert out[1].data["kept_wait_s"] == 80.0                   # acceptance -> customer connected
    out = e.handle(CallFinished("early"), 200.0)
    assert "call.ended" in types(out)


def test_failed_customer_leg_is_retried_at_its_place_then_given_up():
    e = engine()
    e.handle(AgentLogin("ann"), 0.0)
    e.handle(CallQueued("busy", "billing"), 0.0)                 # keeps ann busy
    e.handle(AgentAnswered("busy", "ann"), 1.0)
    e.handle(CallQueued("cb", "billing"), 5.0)
    e.handle(CallbackAccepted("cb", "+447700900003"), 6.0)
    e.handle(CallQueued("later", "billing"), 20.0)
    e.handle(CallFinished("busy"), 50.0)
    out = e.advance(50.0)                                        # wrap-up over: ann picks the call-back
    assert dials(out)[0].call_id == "cb"
    e.handle(AgentAnswered("cb", "ann"), 52.0)
    out = e.handle(CallbackFailed("cb", "no_answer"), 80.0)
    failed = [o for o in out if isinstance(o, Event) and o.type == "callback.failed"][0]
    assert failed.data["final"] is False and failed.data["retry_at"] == 380.0
    assert e.agents["ann"].state is AgentState.RESERVED           # released, and took "later"
    assert [o.call_id for o in out if isinstance(o, OfferCall)] == ["later"]
    e.handle(AgentAnswered("later", "ann"), 81.0)
    e.handle(CallFinished("later"), 90.0)                        # ann free, but the retry is not due
    assert dials(e.advance(90.0)) == []
    assert e.agents["ann"].state is AgentState.AVAILABLE
    out = e.advance(380.0)                                      # back at its place, dialled again
    assert dials(out)[0].attempt == 2
    e.handle(AgentAnswered("cb", "ann"), 382.0)
    out = e.handle(CallbackFailed("cb", "busy"), 400.0)
    assert [o.data for o in out if isinstance(o, Event) and o.type == "callback.failed"][0]["final"] is True
    assert [o.data["outcome"] for o in out if isinstance(o, Event) and o.type == "call.ended"] == ["callback_failed"]
    assert "cb" not in e.calls
    assert e.agents["ann"].state is AgentState.AVAILABLE           # on_call --release--> available


def test_agent_no_answer_does_not_use_up_an_attempt():
    e = engine(max_attempts=1)
    e.handle(CallQueued("cb", "billing"), 0.0)
    e.handle(CallbackAccepted("cb", "+447700900004"), 1.0)
    out = e.handle(AgentLogin("ann"), 2.0)
    assert dials(out)[0].attempt == 1
    out = e.handle(AgentMissed("cb", "ann", "timeout"), 10.0)   # agent leg failed: no customer dialled
    out += e.handle(AgentLogin("bob"), 11.0)
    assert dials(out)[0].attempt == 1 and dials(out)[0].agent == "bob"


def test_one_pending_callback_per_number_and_queue_and_limits():
    e = engine(max_pending=2, prefixes=("+44",), min_digits=10)
    for n in range(4):
        e.handle(CallQueued(f"c{n}", "billing"), float(n))
    assert types(e.handle(CallbackAccepted("c0", "+447700900005"), 10.0))[-1] == "callback.accepted"
    out = e.handle(CallbackAccepted("c1", "+447700900005"), 11.0)
    assert out[-1].type == "callback.failed" and out[-1].data["reason"] == "duplicate"
    assert e.calls["c1"].callback is None                        # still an ordinary waiting call
    out = e.handle(CallbackAccepted("c1", "+3312345678901"), 12.0)
    assert out[-1].data["reason"] == "invalid_number"
    assert types(e.handle(CallbackAccepted("c2", "+447700900006"), 13.0))[-1] == "callback.accepted"
    assert e.handle(CallbackAccepted("c3", "+447700900007"), 14.0)[-1].data["reason"] == "too_many"


def test_pending_callback_cancelled_when_the_customer_gets_through():
    e = engine()
    e.handle(CallQueued("first", "billing", caller_id="+447700900008"), 0.0)
    e.handle(CallbackAccepted("first", "+447700900008"), 5.0)
    e.handle(CallQueued("again", "billing", caller_id="+447700900008", priority=5), 20.0)
    out = e.handle(AgentLogin("ann"), 30.0)                      # the priority call-in goes first
    assert [o.call_id for o in out if isinstance(o, OfferCall)] == ["again"]
    out = e.handle(AgentAnswered("again", "ann"), 32.0)
    cancelled = [o for o in out if isinstance(o, Event) and o.type == "callback.cancelled"]
    assert cancelled[0].call_id == "first" and cancelled[0].data["by"] == "again"
    assert "first" not in e.calls
    assert dials(e.handle(AgentLogin("bob"), 40.0)) == []       # nobody dials the cancelled call-back


def test_callback_being_dialled_is_not_cancelled():
    e = engine()
    e.handle(CallQueued("first", "billing", caller_id="+447700900014"), 0.0)
    e.handle(CallbackAccepted("first", "+447700900014"), 1.0)
    e.handle(AgentLogin("ann"), 2.0)                             # dialling the call-back with ann
    e.handle(CallQueued("again", "billing", caller_id="+447700900014"), 3.0)
    e.handle(AgentLogin("bob"), 4.0)
    out = e.handle(AgentAnswered("again", "bob"), 5.0)
    assert "callback.cancelled" not in types(out) and "first" in e.calls


def test_callback_accepted_in_the_ivr_joins_the_queue_as_a_virtual_entry():
    e = engine()
    out = e.handle(CallbackAccepted("ivr1", "+447700900009", queue="billing", caller_id="+447700900009"), 0.0)
    assert types(out) == ["queue.joined", "callback.offered", "callback.accepted"]
    assert out[0].data["callback"] is True


def test_offered_when_ewt_at_arrival_is_over_the_bound():
    e = engine(offer_ewt_s=100.0)
    out = e.handle(CallQueued("c1", "billing"), 0.0)          # nobody logged in: EWT unknown -> offer
    assert [o.call_id for o in out if isinstance(o, OfferCallback)] == ["c1"]
    e.handle(AgentLogin("ann"), 1.0)
    e.handle(AgentAnswered("c1", "ann"), 2.0)
    out = e.handle(CallQueued("c2", "billing"), 3.0)          # one agent busy, AHT 180 s: EWT 180 > 100
    assert [o.call_id for o in out if isinstance(o, OfferCallback)] == ["c2"]
    out = e.handle(CallbackAccepted("c2", "+447700900015"), 9.0)
    assert types(out) == ["callback.accepted"]                 # offered once, not twice


def test_terminal_overflow_never_diverts_a_callback():
    e = engine()
    e.handle(CallQueued("cb", "billing"), 0.0)
    e.handle(CallbackAccepted("cb", "+447700900010"), 1.0)
    assert e.advance(10_000.0) == []
    assert "cb" in e.calls


def test_restored_callbacks_keep_their_original_order():
    e = engine()
    e.handle(CallbackRestored("old", "billing", "+447700900011", joined_at=100.0, accepted_at=110.0), 5000.0)
    e.handle(CallbackRestored("older", "billing", "+447700900012", joined_at=50.0, accepted_at=60.0,
                              attempts=1), 5000.0)
    e.handle(CallQueued("new", "billing"), 5001.0)
    out = e.handle(AgentLogin("ann"), 5002.0)
    assert dials(out)[0].call_id == "older" and dials(out)[0].attempt == 2


def test_a_restored_callback_keeps_the_total_priority_it_was_saved_with():
    e = Engine(centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 1}, priority=3)]))
    e.handle(CallQueued("saved", "billing", priority=4), 0.0)
    saved = e.call_view("saved").priority                       # what the callbacks table stores: 7
    e.handle(CallbackRestored("restored", "billing", "+447700900022", joined_at=0.0, accepted_at=0.0,
                              priority=saved), 1.0)
    e.handle(CallbackRestored("plain", "billing", "+447700900023", joined_at=0.0, accepted_at=0.0), 1.0)
    assert (saved, e.call_view("restored").priority, e.call_view("plain").priority) == (7, 7, 3)


def test_invalid_callback_inputs():
    e = engine()
    with pytest.raises(InvalidInput):
        e.handle(CallbackAccepted("nope", "+447700900013"), 0.0)
    with pytest.raises(InvalidInput):
        e.handle(CallbackAnswered("nope"), 0.0)


def test_withdrawn_callback_waits_on_as_a_call_at_its_place():
    """The call-back could not be stored: the caller, still on the line, waits as before."""
    e = engine()
    e.handle(CallQueued("first", "billing", caller_id="+447700900001"), 0.0)
    e.handle(CallQueued("second", "billing", caller_id="+447700900002"), 5.0)
    e.handle(CallbackAccepted("first", "+447700900001"), 10.0)
    out = e.handle(CallbackWithdrawn("first"), 11.0)
    assert types(out) == ["callback.cancelled"] and out[0].data["reason"] == "not_stored"
    out = e.handle(AgentLogin("ann"), 20.0)
    [offer] = [o for o in out if isinstance(o, OfferCall)]      # a call again, first in line: no DialCallback
    assert offer.call_id == "first" and dials(out) == []
    e.handle(CallbackAccepted("second", "+447700900001"), 21.0)  # the number is free for call-backs again
    assert e.calls["second"].callback is not None


def test_caller_who_leaves_by_key_ends_without_an_abandon():
    e = engine()
    e.handle(CallQueued("leaver", "billing"), 0.0)
    e.handle(CallQueued("stayer", "billing"), 1.0)
    out = e.handle(CallerLeft("leaver", "voicemail"), 40.0)
    assert types(out) == ["call.ended"]
    assert out[0].data == {"outcome": "left", "to": "voicemail", "wait_s": 40.0}
    assert e.position("stayer") == 1
    assert e.handle(CallerHungUp("leaver"), 41.0) == []         # its hang-up later is no abandon


def test_callback_asked_for_in_the_ivr_is_not_offered_again_on_a_long_wait():
    e = engine(offer_ewt_s=0.0)                 # every waiting caller would be offered one
    e.handle(CallQueued("waiting", "billing"), 0.0)
    out = e.handle(CallbackAccepted("ivr", "+447700900001", queue="billing"), 1.0)
    assert not [o for o in out if isinstance(o, OfferCallback)]
    offered = [o for o in out if isinstance(o, Event) and o.type == "callback.offered"]
    assert [o.data["reason"] for o in offered] == ["request"]
    assert "callback.accepted" in types(out)
