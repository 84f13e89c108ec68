"""Supervisor inputs of the engine: a waiting call's priority, a move that keeps the place, a
call-back cancelled; each refused (InvalidInput) with nothing changed when it does not fit."""
from __future__ import annotations

import copy

import pytest

from router.config.model import CallbackPolicy
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, CallbackAccepted, CallQueued, CancelCallback,
                                    InvalidInput, MoveCall, OfferCall, SetCallPriority)
from router.events import Event
from tests.factories import centre, queue, step


def offers(outputs):
    return [(o.call_id, o.agent) for o in outputs if isinstance(o, OfferCall)]


def events(outputs, type_):
    return [o for o in outputs if isinstance(o, Event) and o.type == type_]


@pytest.fixture
def engine() -> Engine:
    c = centre({"ann": {"billing": 5, "en": 5}, "bob": {"tech": 5, "en": 5}},
               [queue("billing", {"billing": 1}, callback=CallbackPolicy(),
                      overflow=(step(after_s=60.0, move_to="tech"),)),
                queue("tech", {"tech": 1}, overflow=(step(when="max_wait", value=300.0, action="voicemail"),)),
                queue("sales", {"sales": 1})])
    return Engine(c)


def test_a_raised_priority_is_served_first_and_keeps_arrival_order_among_equals(engine):
    for n, at in enumerate((0.0, 10.0, 20.0)):
        engine.handle(CallQueued(f"c{n}", "billing"), at)
    out = engine.handle(SetCallPriority("c2", 5), 30.0)
    assert events(out, "call.priority_changed")[0].data == {"priority": 5, "previous": 0}
    assert [c.call_id for c in engine.waiting("billing")] == ["c2", "c0", "c1"]
    assert engine.position("c2") == 1
    out = engine.handle(AgentLogin("ann"), 40.0)
    assert offers(out) == [("c2", "ann")]


def test_a_moved_call_keeps_its_place_and_takes_the_new_queues_agents_and_steps(engine):
    engine.handle(AgentLogin("bob"), 0.0)
    engine.handle(AgentAnswered(*offers(engine.handle(CallQueued("busy", "tech"), 1.0))[0]), 2.0)
    engine.handle(CallQueued("t1", "tech"), 5.0)          # waits in tech (bob is busy)
    engine.handle(CallQueued("b1", "billing"), 3.0 + 0.5)  # joined before t1: an earlier place
    out = engine.handle(MoveCall("b1", "tech"), 10.0)
    moved = events(out, "call.moved")[0]
    assert (moved.queue, moved.data["from"], moved.data["to"]) == ("tech", "billing", "tech")
    assert [c.call_id for c in engine.waiting("tech")] == ["b1", "t1"]   # its first join still counts
    assert engine.waiting("billing") == []
    call = engine.calls["b1"]
    assert call.requirement_sets == [{"tech": 1}] and call.joined_at == 3.5
    # the billing step (move to tech after 60 s) is gone; tech's max-wait voicemail counts from the move
    out = engine.advance(306.0)
    assert [(e.call_id, e.data["action"]) for e in events(out, "queue.overflowed")] == [("t1", "voicemail")]
    assert engine.next_deadline() == 10.0 + 300.0


def test_a_move_no_agent_can_serve_is_refused_and_changes_nothing(engine):
    engine.handle(CallQueued("b1", "billing"), 0.0)
    before = copy.deepcopy((engine.calls["b1"].queue, engine.calls["b1"].requirement_sets,
                            [c.call_id for c in engine.waiting("billing")]))
    for target, words in (("sales", "no agent has the skills"), ("billing", "already in queue"),
                          ("nowhere", "unknown queue")):
        with pytest.raises(InvalidInput, match=words):
            engine.handle(MoveCall("b1", target), 5.0)
    assert (engine.calls["b1"].queue, engine.calls["b1"].requirement_sets,
            [c.call_id for c in engine.waiting("billing")]) == before


def test_a_call_ringing_an_agent_or_unknown_cannot_be_changed(engine):
    engine.handle(AgentLogin("ann"), 0.0)
    assert offers(engine.handle(CallQueued("b1", "billing"), 1.0)) == [("b1", "ann")]
    for message in (SetCallPriority("b1", 3), MoveCall("b1", "tech"), CancelCallback("b1")):
        with pytest.raises(InvalidInput, match="not waiting"):
            engine.handle(message, 2.0)
    with pytest.raises(InvalidInput, match="unknown call"):
        engine.handle(SetCallPriority("nope", 1), 2.0)


def test_a_supervisor_cancels_a_pending_callback(engine):
    engine.handle(CallQueued("b1", "billing", caller_id="+447700900001"), 0.0)
    engine.handle(CallbackAccepted("b1", "+447700900001"), 5.0)
    engine.handle(CallQueued("b2", "billing"), 6.0)
    with pytest.raises(InvalidInput, match="not a call-back"):
        engine.handle(CancelCallback("b2"), 6.0)
    out = engine.handle(CancelCallback("b1"), 10.0)
    assert events(out, "callback.cancelled")[0].data == {"number": "+447700900001", "reason": "supervisor"}
    assert events(out, "call.ended")[0].data == {"outcome": "callback_cancelled"}
    assert "b1" not in engine.calls
    # the number may ask for a call-back again: the pending one is gone
    engine.handle(CallQueued("b3", "billing", caller_id="+447700900001"), 11.0)
    assert events(engine.handle(CallbackAccepted("b3", "+447700900001"), 12.0), "callback.accepted")


def test_a_callback_moves_with_its_number(engine):
    engine.handle(CallQueued("b1", "billing", caller_id="+447700900001"), 0.0)
    engine.handle(CallbackAccepted("b1", "+447700900001"), 5.0)
    engine.handle(MoveCall("b1", "tech"), 6.0)
    engine.handle(AgentLogin("bob"), 7.0)
    assert engine.calls["b1"].callback.attempts == 1 and engine.calls["b1"].agent == "bob"
