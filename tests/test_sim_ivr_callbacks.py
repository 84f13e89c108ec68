"""The simulator hands an IVR `callback` node to the engine, as the Asterisk adapter does."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from router.config.model import CallbackPolicy, Distribution, IvrTraffic, Simulation
from router.ivr import load_flowset
from router.sim.simulator import Simulator
from tests.factories import centre, queue

FLOW = """\
prompts: {offer: "1 call-back now, 2 at two pm, 3 another number", booked: "We will call you"}
flow: front
start: offer
timezone: UTC
nodes:
  offer:
    type: menu
    prompt: offer
    options: {"1": now, "2": at_two, "3": bad_number}
    timeout_s: 3
    fallback: hold
  now: {type: callback, queue: billing, prompt: booked}
  at_two: {type: callback, queue: billing, at: "'14:00'", prompt: booked}
  bad_number: {type: callback, queue: billing, number: "'123'", prompt: booked}
  hold: {type: queue, queue: billing}
"""

START = datetime(2026, 11, 23, 10)          # Monday 10:00 UTC
TWO_PM = datetime(2026, 11, 23, 14, tzinfo=timezone.utc).timestamp()


def ivr_centre(tmp_path, *, answer_rate: float = 0.7, offer_ewt_s: float | None = None,
               acceptance: float = 0.0):
    (tmp_path / "front.yaml").write_text(FLOW)
    c = centre({f"a{i}": {"billing": 5} for i in range(3)},
               [queue("billing", {"billing": 1}, wrap_up_s=0.0,
                      callback=CallbackPolicy(retry_s=120.0, prefixes=("+44",),
                                              offer_ewt_s=offer_ewt_s))])
    model = Simulation(start=START, interval_minutes=30, arrivals={"billing": (40.0,)},
                       handle_time={"default": Distribution("exponential", 240.0)},
                       patience={"default": Distribution("exponential", 600.0)}, answer_delay_s=2.0,
                       callback_answer_rate=answer_rate, callback_acceptance=acceptance,
                       ivr=IvrTraffic(flow="front", arrivals=(20.0,), prompt_s=2.0, think_s=1.0,
                                      choices={"front/offer": {"1": 0.4, "2": 0.2, "3": 0.1}}))
    c = replace(c, simulation=model, flows=str(tmp_path))
    return c, load_flowset(c, tmp_path)


def run_all(sim):
    events = []
    while not sim.done:
        events += sim.run(5_000)
    return events


def choices(events):
    """call id -> the key pressed at the offer menu (None: silence, so it held)."""
    pressed = {e.call_id: e.data["value"] for e in events
               if e.type == "ivr.input" and e.data["node"] == "offer" and e.data.get("input") == "digits"}
    return {e.call_id: pressed.get(e.call_id) for e in events if e.type == "ivr.node"
            and e.data["node"] == "offer"}


def test_ivr_callback_node_reaches_the_engine_and_is_dialled(tmp_path):
    c, flowset = ivr_centre(tmp_path)
    sim = Simulator(c, hours=5.0, seed=3, flowset=flowset)
    events = run_all(sim)
    took = choices(events)
    now_ids = {call for call, key in took.items() if key == "1"}
    assert len(now_ids) > 10
    accepted = {e.call_id: e for e in events if e.type == "callback.accepted"}
    joined = {e.call_id: e for e in events if e.type == "queue.joined"}
    # Taken in the IVR without a slot: kept (the caller hangs up), or an agent was free at once.
    for call in now_ids:
        assert call in joined and joined[call].data.get("callback") is True
    kept_now = now_ids & set(accepted)
    assert len(kept_now) > 5 and all(accepted[c].data["scheduled"] is False for c in kept_now)
    abandoned = {e.call_id for e in events if e.type == "call.abandoned"}
    assert not set(accepted) & abandoned                 # the caller hung up: not an abandon
    connected = {e.call_id: e for e in events if e.type == "callback.connected"}
    assert kept_now & set(connected)
    assert all(e.data["kept_wait_s"] > 0 for e in connected.values())
    # the customer leg is answered with callback_answer_rate: some are retried
    retried = [e for e in events if e.type == "callback.failed" and e.data.get("final") is False]
    assert retried and {e.call_id for e in retried} <= set(accepted)
    # IVR call-backs and direct callers reach the same agents
    assert {e.call_id for e in events if e.type == "call.connected"} - set(took)


def test_ivr_callback_slot_is_kept_and_refusals_wait_on(tmp_path):
    c, flowset = ivr_centre(tmp_path, answer_rate=1.0)
    sim = Simulator(c, hours=5.0, seed=3, flowset=flowset)
    events = run_all(sim)
    took = choices(events)
    accepted = {e.call_id: e for e in events if e.type == "callback.accepted"}
    dialing = {}
    for e in events:
        if e.type == "callback.dialing":
            dialing.setdefault(e.call_id, e.ts)
    # "2": a slot at 14:00 (today if still ahead, else tomorrow), never dialled before it
    failed = {e.call_id: e.data["reason"] for e in events if e.type == "callback.failed"}
    slot_ids = {call for call, key in took.items() if key == "2"} & set(accepted)
    refused = {call for call, key in took.items() if key == "2"} - slot_ids
    assert slot_ids and all(failed[call] == "duplicate" for call in refused)   # a repeat caller's
    for call in slot_ids:
        due = accepted[call].data["due_at"]
        assert accepted[call].data["scheduled"] is True
        assert due in (TWO_PM, TWO_PM + 86400)
        if call in dialing:
            assert dialing[call] >= due
    booked_today = {call for call in slot_ids if accepted[call].data["due_at"] == TWO_PM}
    assert booked_today and booked_today & set(dialing)  # dialled from 14:00, at their place
    assert not [e for e in events if e.type == "call.connected" and e.call_id in slot_ids and e.ts < TWO_PM]
    # "3": a number the queue refuses; the caller waits on as a normal call with their patience
    bad_ids = {call for call, key in took.items() if key == "3"}
    assert bad_ids and not bad_ids & set(accepted)
    assert all(failed[call] == "invalid_number" for call in bad_ids)
    outcome = {e.call_id: e.data["outcome"] for e in events if e.type == "call.ended"}
    assert {outcome[call] for call in bad_ids} <= {"answered", "abandoned"}
    assert all(call in outcome for call in bad_ids)      # each one ended: answered or gave up


def test_ivr_callbacks_are_deterministic_for_a_seed(tmp_path):
    c, flowset = ivr_centre(tmp_path)
    trace = lambda seed: [(e.ts, e.type, e.call_id, e.agent)  # noqa: E731
                          for e in run_all(Simulator(c, hours=2.0, seed=seed, flowset=flowset))]
    first = trace(5)
    assert any(t[1] == "callback.accepted" for t in first)
    assert first == trace(5)


def test_an_ewt_offer_raised_while_the_ivr_callback_joins_is_not_heard(tmp_path):
    # Every holding caller offered a call-back takes it; the EWT rule fires as IVR call-backs join.
    c, flowset = ivr_centre(tmp_path, offer_ewt_s=60.0, acceptance=1.0)
    events = run_all(Simulator(c, hours=3.0, seed=3, flowset=flowset))
    took = choices(events)
    accepted = {e.call_id: e for e in events if e.type == "callback.accepted"}
    bad_ids = {call for call, key in took.items() if key == "3"}
    assert bad_ids and not bad_ids & set(accepted)       # refused in the IVR, then just holding
    offered = [e.call_id for e in events if e.type == "callback.offered"]
    assert len(offered) == len(set(offered))             # at most one offer per call
    held = {call for call, key in took.items() if key is None}
    assert held & set(accepted)                          # callers on hold do take the EWT offer


@pytest.mark.parametrize("answer_rate", [0.0])
def test_ivr_callback_customer_never_answering_ends_after_max_attempts(tmp_path, answer_rate):
    c, flowset = ivr_centre(tmp_path, answer_rate=answer_rate)
    events = run_all(Simulator(c, hours=3.0, seed=2, flowset=flowset))
    accepted = {e.call_id for e in events if e.type == "callback.accepted"}
    assert accepted and not [e for e in events if e.type == "callback.connected"]
    final = {e.call_id for e in events if e.type == "callback.failed" and e.data.get("final")}
    ended = {e.call_id: e.data["outcome"] for e in events if e.type == "call.ended"}
    dialled = {e.call_id for e in events if e.type == "callback.dialing"}
    assert dialled and all(ended.get(call) == "callback_failed" for call in dialled & final)
    attempts = max(e.data["attempt"] for e in events if e.type == "callback.dialing")
    assert attempts == 3                                 # the policy's max_attempts
