"""Call-back hours and scheduled call-backs in the engine: no offers while closed, nothing
dialled while closed or before a chosen slot, and the parked call-back keeps its place."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time
from zoneinfo import ZoneInfo

from router.config.model import CallbackPolicy, Schedule
from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, CallbackAccepted, CallbackFailed, CallbackRestored,
                                    CallFinished, CallQueued, DialCallback, OfferCall, OfferCallback)
from router.events import Event
from tests.factories import centre, queue, step

LONDON = ZoneInfo("Europe/London")
WEEKDAYS_9_TO_5 = {day: ((time(9), time(17)),) for day in ("mon", "tue", "wed", "thu", "fri")}
HOURS = Schedule("callbacks", "Europe/London", WEEKDAYS_9_TO_5)


def at(day: int, hour: int, minute: int = 0) -> float:
    """Epoch seconds of a local London time in November 2026 (the 23rd is a Monday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=LONDON).timestamp()


def engine(overflow=(), **policy) -> Engine:
    c = centre({"ann": {"billing": 5}, "bob": {"billing": 5}},
               [queue("billing", {"billing": 1}, wrap_up_s=0.0, overflow=overflow,
                      callback=CallbackPolicy(**{"hours": "callbacks", "retry_s": 300.0, **policy}))])
    return Engine(replace(c, schedules={"callbacks": HOURS}))


def events(outputs, type_):
    return [o for o in outputs if isinstance(o, Event) and o.type == type_]


def dials(outputs):
    return [o for o in outputs if isinstance(o, DialCallback)]


def test_no_offer_while_the_callback_hours_are_closed():
    e = engine(offer_ewt_s=0.0)
    out = e.handle(CallQueued("night", "billing"), at(23, 18))
    assert not [o for o in out if isinstance(o, OfferCallback)] and not events(out, "callback.offered")
    out = e.handle(CallQueued("day", "billing"), at(24, 10))
    assert [o.call_id for o in out if isinstance(o, OfferCallback)] == ["day"]


def test_overflow_callback_step_outside_hours_offers_nothing_and_the_caller_waits():
    e = engine(overflow=(step(when="queue_length", value=1, action="callback"),))
    e.handle(CallQueued("first", "billing"), at(23, 18))
    out = e.handle(CallQueued("second", "billing"), at(23, 18, 1))
    assert not [o for o in out if isinstance(o, OfferCallback)] and not events(out, "callback.offered")
    assert e.calls["second"].slot is not None                  # still waiting like any call
    out = e.handle(CallQueued("third", "billing"), at(24, 9, 30))
    assert [o.call_id for o in out if isinstance(o, OfferCallback)] == ["third"]


def test_accepted_outside_hours_is_dialled_at_the_opening_ahead_of_a_later_caller():
    e = engine()
    e.handle(CallQueued("cb", "billing"), at(23, 16, 50))
    out = e.handle(CallbackAccepted("cb", "+447700900201"), at(23, 17, 5))   # closed: accepted all the same
    [accepted] = events(out, "callback.accepted")
    assert accepted.data["due_at"] == at(24, 9) and accepted.data["scheduled"] is False
    assert e.calls["cb"].slot is None and e.calls["cb"].callback.due_at == at(24, 9)   # parked
    e.handle(CallQueued("early", "billing"), at(24, 8, 30))
    out = e.handle(AgentLogin("ann"), at(24, 8, 40))          # a free agent before the opening
    assert [o.call_id for o in out if isinstance(o, OfferCall)] == ["early"] and not dials(out)
    e.handle(AgentAnswered("early", "ann"), at(24, 8, 41))
    e.handle(CallQueued("later", "billing"), at(24, 8, 50))    # joined after the call-back, waits
    assert e.next_deadline() == at(24, 9)
    assert dials(e.advance(at(24, 8, 59))) == []
    assert e.advance(at(24, 9)) == []                          # back in line, nobody free yet
    assert (e.position("cb"), e.position("later")) == (1, 2)
    out = e.handle(CallFinished("early"), at(24, 9, 10)) + e.advance(at(24, 9, 10))   # wrap-up 0 s
    assert [(d.call_id, d.attempt) for d in dials(out)] == [("cb", 1)]
    assert not [o for o in out if isinstance(o, OfferCall)]    # "later" still waits


def test_callback_waiting_when_the_hours_close_is_parked_not_dialled():
    e = engine()
    e.handle(CallQueued("cb", "billing"), at(23, 16))
    e.handle(CallbackAccepted("cb", "+447700900202"), at(23, 16, 1))   # open: waits in line
    assert e.calls["cb"].slot is not None
    out = e.handle(AgentLogin("ann"), at(23, 17, 30))          # free agent after closing
    assert dials(out) == [] and e.agents["ann"].state is AgentState.AVAILABLE
    assert e.calls["cb"].slot is None and e.next_deadline() == at(24, 9)
    out = e.advance(at(24, 9))
    assert [d.call_id for d in dials(out)] == ["cb"]


def test_scheduled_callback_waits_for_its_slot_then_goes_near_the_front():
    e = engine()
    e.handle(CallQueued("cb", "billing"), at(23, 10))
    out = e.handle(CallbackAccepted("cb", "+447700900203", at=at(24, 14)), at(23, 10, 1))
    [accepted] = events(out, "callback.accepted")
    assert accepted.data["scheduled"] is True and accepted.data["due_at"] == at(24, 14)
    assert dials(e.handle(AgentLogin("ann"), at(23, 10, 2))) == []   # free agent, but not yet
    assert dials(e.advance(at(24, 13, 59))) == []
    e.handle(CallQueued("busy", "billing"), at(24, 13, 50))    # ann takes it
    e.handle(AgentAnswered("busy", "ann"), at(24, 13, 51))
    e.handle(CallQueued("waiting", "billing"), at(24, 13, 55))
    e.advance(at(24, 14))
    assert (e.position("cb"), e.position("waiting")) == (1, 2)  # joined yesterday: ahead
    out = e.handle(CallFinished("busy"), at(24, 14, 5)) + e.advance(at(24, 14, 5))   # wrap-up 0 s
    assert [d.call_id for d in dials(out)] == ["cb"]


def test_scheduled_callback_from_the_ivr_is_not_given_to_a_free_agent_before_its_slot():
    e = engine()
    e.handle(AgentLogin("ann"), at(23, 9))
    out = e.handle(CallbackAccepted("ivr", "+447700900204", queue="billing", at=at(23, 15)), at(23, 11))
    assert [o.type for o in out if isinstance(o, Event)] == ["queue.joined", "callback.offered",
                                                           "callback.accepted"]
    assert not [o for o in out if isinstance(o, (OfferCall, DialCallback))]
    out = e.advance(at(23, 15))
    assert [d.call_id for d in dials(out)] == ["ivr"]


def test_slots_that_cannot_be_kept_are_refused_and_the_caller_waits_on():
    e = engine(max_days_ahead=7)
    now = at(23, 10)
    for n, (slot, reason) in enumerate([(now - 60, "in_the_past"), (at(23, 10) + 8 * 86400, "too_far"),
                                        (at(23, 20), "outside_hours"), (at(28, 10), "outside_hours")]):
        e.handle(CallQueued(f"c{n}", "billing"), now)
        out = e.handle(CallbackAccepted(f"c{n}", f"+44770090030{n}", at=slot), now)
        [failed] = events(out, "callback.failed")
        assert failed.data["reason"] == reason and failed.data["final"] is True
        assert e.calls[f"c{n}"].callback is None and e.calls[f"c{n}"].slot is not None
    out = e.handle(CallbackAccepted("ivr", "+447700900309", queue="billing", at=at(23, 20)), now)
    assert events(out, "callback.failed")[0].data["reason"] == "outside_hours"
    assert e.calls["ivr"].slot is not None                     # the IVR caller holds as a normal call


def test_hours_that_never_open_refuse_a_callback():
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 1},
                                              callback=CallbackPolicy(hours="never"))])
    e = Engine(replace(c, schedules={"never": Schedule("never", "UTC", {})}))
    e.handle(CallQueued("c1", "billing"), at(23, 10))
    out = e.handle(CallbackAccepted("c1", "+447700900310"), at(23, 10))
    assert events(out, "callback.failed")[0].data["reason"] == "outside_hours"


def test_restored_callbacks_wait_for_their_due_time_and_the_hours():
    e = engine()
    restart = at(24, 8)
    e.handle(CallbackRestored("slot", "billing", "+447700900401", joined_at=at(23, 10), accepted_at=at(23, 10),
                              due_at=at(24, 11)), restart)
    e.handle(CallbackRestored("night", "billing", "+447700900402", joined_at=at(23, 16), accepted_at=at(23, 18)),
             restart)
    e.handle(CallbackRestored("missed", "billing", "+447700900403", joined_at=at(23, 9), accepted_at=at(23, 9),
                              due_at=at(23, 12)), restart)   # its slot passed while the router was down
    assert all(call.slot is None for call in e.calls.values())   # closed at 08:00: all parked
    assert dials(e.handle(AgentLogin("ann"), at(24, 8, 30))) == []
    out = e.advance(at(24, 9))                                 # two come back at the opening, in place order
    assert [d.call_id for d in dials(out)] == ["missed"]
    e.handle(AgentLogin("bob"), at(24, 9, 1))
    assert e.agents["bob"].state is AgentState.RESERVED and e.agents["bob"].call_id == "night"
    assert e.calls["slot"].slot is None and e.next_deadline() <= at(24, 11)


def test_retry_falling_outside_the_hours_waits_for_the_opening():
    e = engine(max_attempts=3)
    e.handle(AgentLogin("ann"), at(23, 16, 50))
    e.handle(CallQueued("busy", "billing"), at(23, 16, 50))
    e.handle(AgentAnswered("busy", "ann"), at(23, 16, 51))
    e.handle(CallQueued("cb", "billing"), at(23, 16, 52))
    e.handle(CallbackAccepted("cb", "+447700900501"), at(23, 16, 53))
    out = e.handle(CallFinished("busy"), at(23, 16, 55)) + e.advance(at(23, 16, 55))   # wrap-up 0 s
    assert [d.call_id for d in dials(out)] == ["cb"]
    e.handle(AgentAnswered("cb", "ann"), at(23, 16, 56))
    out = e.handle(CallbackFailed("cb", "no_answer"), at(23, 16, 58))
    [failed] = events(out, "callback.failed")
    assert failed.data["retry_at"] == at(23, 17, 3) and failed.data["due_at"] == at(24, 9)
    assert failed.data["final"] is False
    assert dials(e.advance(at(23, 17, 3))) == [] and e.agents["ann"].state is AgentState.AVAILABLE
    out = e.advance(at(24, 9))
    assert [(d.call_id, d.attempt) for d in dials(out)] == [("cb", 2)]
