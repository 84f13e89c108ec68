"""router.store.recovery: what the event store says about agents and open calls of a run.

`fold` is checked on hand-written event rows (one phase, one rule at a time) and against
the real engine's own state after a scenario; `load` against a real PostgreSQL, with the
events written by the real `EventWriter`, across runs and a time window.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from router.config.model import CallbackPolicy
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentPause, CallbackAccepted,
                                    CallerHungUp, CallQueued, MoveCall, SetCallPriority)
from router.events import Event
from router.store import EventWriter
from router.store import recovery
from router.store.recovery import AgentLast, fold, load
from tests.factories import centre, queue, step


def on_postgres(test):
    """A database test, on the loop of the `conn` fixture."""
    return pytest.mark.postgres(pytest.mark.asyncio(loop_scope="session")(test))


def ev(ts: float, type_: str, call_id: str | None = None, queue: str | None = None,
       agent: str | None = None, **data) -> dict:
    return {"ts": ts, "type": type_, "call_id": call_id, "queue": queue, "agent": agent, "data": data}


def arrived(call: str, ts: float, caller: str = "+441", dnis: str = "100") -> dict:
    return ev(ts, "call.arrived", call, caller_id=caller, dnis=dnis)


def joined(call: str, queue: str, ts: float, priority: int = 0, caller: str = "+441") -> dict:
    return ev(ts, "queue.joined", call, queue, caller_id=caller, priority=priority, position=1, ewt_s=None,
              sl_threshold_s=20.0)


def state(agent: str, ts: float, new: str, previous: str, reason: str | None = None,
          call_id: str | None = None) -> dict:
    return ev(ts, "agent.state", call_id, None, agent, state=new, previous=previous, previous_s=1.0,
              reason=reason, team="red")


def queued_call(call: str = "c1", queue: str = "billing", at: float = 10.0, priority: int = 0) -> list[dict]:
    """A call that went through the IVR into `queue` at `at`."""
    return [arrived(call, at - 8), ev(at - 7, "ivr.node", call, flow="main", node="welcome"),
            ev(at, "ivr.ended", call, flow="main", node="to_billing", outcome="queued", queue=queue),
            joined(call, queue, at, priority)]


# --- fold: phases ------------------------------------------------------------------------------

def test_a_call_in_the_ivr_is_in_phase_ivr_with_what_its_arrival_said():
    rows = [arrived("c1", 100.0, caller="+4420", dnis="8000"),
            ev(100.5, "ivr.node", "c1", flow="main", node="welcome"),
            ev(103.0, "ivr.input", "c1", flow="main", node="menu", input="digits")]
    call = fold(rows).calls["c1"]
    assert (call.phase, call.arrived_at, call.caller_id, call.dnis) == ("ivr", 100.0, "+4420", "8000")
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at, call.priority) == (
        None, None, None, None, None)
    assert (call.agent, call.connected_at, call.next_step, call.moves) == (None, None, 0, 0)
    assert call.types == {"call.arrived", "ivr.node", "ivr.input"} and call.last_ts == 103.0


@pytest.mark.parametrize("outcome", ["completed", "transferred", "transfer_failed", "hangup", "timeout", "error"])
def test_an_ivr_that_ended_the_call_before_any_queue_ends_it(outcome):
    rows = [arrived("c1", 100.0), ev(101.0, "ivr.node", "c1", flow="main", node="n"),
            ev(102.0, "ivr.ended", "c1", flow="main", node="n", outcome=outcome)]
    assert fold(rows).calls == {}


@pytest.mark.parametrize("outcome", ["queued", "callback"])
def test_an_ivr_that_handed_the_call_on_keeps_it_in_the_ivr_until_it_joins(outcome):
    # the queue.joined that follows is missing (lost tail, or not written yet): still ours
    rows = [arrived("c1", 100.0), ev(102.0, "ivr.ended", "c1", flow="main", node="n", outcome=outcome,
                                     queue="billing")]
    call = fold(rows).calls["c1"]
    assert call.phase == "ivr" and "ivr.ended" in call.types and "queue.joined" not in call.types


def test_a_queued_call_is_waiting_at_its_first_join():
    call = fold(queued_call("c1", "billing", at=10.0, priority=3)).calls["c1"]
    assert call.phase == "waiting"
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at, call.priority) == (
        "billing", "billing", 10.0, 10.0, 3)
    assert (call.arrived_at, call.caller_id, call.dnis, call.next_step, call.moves) == (2.0, "+441", "100", 0, 0)


def test_a_call_queued_without_ivr_takes_its_caller_from_the_join():
    call = fold([joined("c1", "sales", 5.0, caller="+3361")]).calls["c1"]
    assert (call.phase, call.arrived_at, call.caller_id, call.dnis) == ("waiting", None, "+3361", None)


def test_ringing_until_no_answer_then_ringing_another_agent_then_connected():
    rows = queued_call("c1") + [ev(12.0, "agent.offered", "c1", "billing", "ann", ring_timeout_s=15.0)]
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent) == ("ringing", "ann")

    rows.append(ev(27.0, "agent.no_answer", "c1", "billing", "ann", reason="timeout"))
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent) == ("waiting", None)

    rows.append(ev(30.0, "agent.offered", "c1", "billing", "bob", ring_timeout_s=15.0))
    assert (fold(rows).calls["c1"].phase, fold(rows).calls["c1"].agent) == ("ringing", "bob")

    rows.append(ev(33.0, "call.connected", "c1", "billing", "bob", wait_s=23.0, team="red", skills_met=True))
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent, call.connected_at, call.last_ts) == ("connected", "bob", 33.0, 33.0)


def test_a_no_answer_of_an_earlier_offer_does_not_clear_the_current_one():
    rows = queued_call("c1") + [ev(12.0, "agent.offered", "c1", "billing", "bob"),
                                ev(12.0, "agent.no_answer", "c1", "billing", "ann", reason="busy")]
    assert fold(rows).calls["c1"].agent == "bob"


def test_an_accepted_callback_is_in_phase_callback_while_pending_and_dialled():
    rows = queued_call("c1") + [
        ev(40.0, "callback.offered", "c1", "billing", reason="ewt", ewt_s=300.0),
        ev(45.0, "callback.accepted", "c1", "billing", number="0123456789", position=2)]
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent) == ("callback", None)

    rows += [ev(90.0, "agent.offered", "c1", "billing", "ann"),
             ev(90.0, "callback.dialing", "c1", "billing", "ann", number="0123456789", attempt=1)]
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent) == ("callback", "ann")

    # the customer did not answer; a retry waits: still a call-back, no agent
    rows.append(ev(120.0, "callback.failed", "c1", "billing", number="0123456789", reason="no_answer",
                   attempt=1, final=False, retry_at=420.0, due_at=420.0))
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent) == ("callback", None)

    rows += [ev(420.0, "agent.offered", "c1", "billing", "bob"),
             ev(425.0, "call.connected", "c1", "billing", "bob", wait_s=415.0),
             ev(425.0, "callback.connected", "c1", "billing", "bob", number="0123456789", attempt=2)]
    call = fold(rows).calls["c1"]
    assert (call.phase, call.agent, call.connected_at) == ("connected", "bob", 425.0)


def test_a_withdrawn_callback_waits_on_as_a_normal_call():
    rows = queued_call("c1") + [
        ev(45.0, "callback.accepted", "c1", "billing", number="0123456789"),
        ev(45.5, "callback.cancelled", "c1", "billing", reason="not_stored")]
    assert fold(rows).calls["c1"].phase == "waiting"


def test_a_callback_refused_at_acceptance_leaves_the_call_waiting():
    rows = queued_call("c1") + [
        ev(45.0, "callback.offered", "c1", "billing", reason="request"),
        ev(45.0, "callback.failed", "c1", "billing", number="12", reason="invalid_number", final=True)]
    assert fold(rows).calls["c1"].phase == "waiting"


# --- fold: moves, steps, priority ----------------------------------------------------------

def test_overflow_steps_moves_and_priority_changes_follow_the_current_queue():
    rows = queued_call("c1", "support", at=10.0, priority=1)
    rows.append(ev(40.0, "queue.overflowed", "c1", "support", step=0, action="relax", to=None, wait_s=30.0))
    call = fold(rows).calls["c1"]
    assert (call.queue, call.next_step, call.moves) == ("support", 1, 0)

    rows.append(ev(70.0, "queue.overflowed", "c1", "support", step=2, action="move", to="sales", wait_s=60.0))
    call = fold(rows).calls["c1"]
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at) == ("support", "sales", 10.0, 70.0)
    assert (call.next_step, call.moves, call.phase) == (0, 1, "waiting")

    rows.append(ev(90.0, "queue.overflowed", "c1", "sales", step=0, action="copy", to="tech", wait_s=80.0))
    assert (fold(rows).calls["c1"].queue, fold(rows).calls["c1"].next_step) == ("sales", 1)

    rows.append(ev(95.0, "call.priority_changed", "c1", "sales", priority=9, previous=1))
    rows.append(ev(100.0, "call.moved", "c1", "billing", **{"from": "sales", "to": "billing", "wait_s": 90.0}))
    call = fold(rows).calls["c1"]
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at) == (
        "support", "billing", 10.0, 100.0)
    assert (call.next_step, call.moves, call.priority) == (0, 2, 9)

    rows.append(ev(130.0, "queue.overflowed", "c1", "billing", step=1, action="add_skills", to=None, wait_s=120.0))
    call = fold(rows).calls["c1"]
    assert (call.next_step, call.moves, call.priority, call.last_ts) == (2, 2, 9, 130.0)
    assert {"queue.overflowed", "call.moved", "call.priority_changed"} <= call.types


def test_only_steps_recorded_in_the_current_queue_count():
    rows = queued_call("c1", "support", at=10.0) + [
        ev(40.0, "queue.overflowed", "c1", "support", step=0, action="move", to="sales", wait_s=30.0),
        ev(40.0, "queue.overflowed", "c1", "support", step=3, action="relax", wait_s=30.0)]
    assert (fold(rows).calls["c1"].queue, fold(rows).calls["c1"].next_step) == ("sales", 0)


def test_a_second_join_keeps_the_first_place_and_makes_its_queue_current():
    rows = queued_call("c1", "support", at=10.0) + [
        ev(40.0, "queue.overflowed", "c1", "support", step=0, action="move", to="sales", wait_s=30.0),
        joined("c1", "sales", 40.0, priority=4)]          # hand-made logs model a move so
    call = fold(rows).calls["c1"]
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at, call.moves, call.priority) == (
        "support", "sales", 10.0, 40.0, 1, 0)
    rows.append(joined("c1", "tech", 50.0))
    call = fold(rows).calls["c1"]
    assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at, call.moves) == (
        "support", "tech", 10.0, 50.0, 1)


def test_a_repeated_arrival_keeps_the_first():
    rows = [arrived("c1", 1.0, caller="+441", dnis="100"), arrived("c1", 2.0, caller="+449", dnis="999")]
    call = fold(rows).calls["c1"]
    assert (call.arrived_at, call.caller_id, call.dnis, call.last_ts) == (1.0, "+441", "100", 2.0)


# --- fold: ended calls ---------------------------------------------------------------------

ENDINGS = {
    "answered": [ev(20.0, "agent.offered", "c1", "billing", "ann"),
                 ev(22.0, "call.connected", "c1", "billing", "ann", wait_s=12.0),
                 ev(80.0, "call.ended", "c1", "billing", "ann", outcome="answered", talk_s=58.0)],
    "abandoned": [ev(30.0, "call.abandoned", "c1", "billing", wait_s=20.0, where="queue"),
                  ev(30.0, "call.ended", "c1", "billing", outcome="abandoned")],
    "abandoned, call.ended lost": [ev(30.0, "call.abandoned", "c1", "billing", wait_s=20.0, where="queue")],
    "left": [ev(30.0, "call.ended", "c1", "billing", outcome="left", to="voicemail", wait_s=20.0)],
    "diverted": [ev(310.0, "queue.overflowed", "c1", "billing", step=1, action="voicemail", to="vm",
                    when="max_wait", wait_s=300.0)],
    "callback failed": [ev(45.0, "callback.accepted", "c1", "billing", number="0123456789"),
                        ev(90.0, "agent.offered", "c1", "billing", "ann"),
                        ev(95.0, "callback.failed", "c1", "billing", number="0123456789", reason="busy",
                           attempt=3, final=True, due_at=None)],
    "callback cancelled": [ev(45.0, "callback.accepted", "c1", "billing", number="0123456789"),
                           ev(60.0, "callback.cancelled", "c1", "billing", number="0123456789",
                              reason="supervisor"),
                           ev(60.0, "call.ended", "c1", "billing", outcome="callback_cancelled")],
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_ended_calls_are_left_out_and_the_others_kept(ending):
    rows = queued_call("c1") + queued_call("c2", at=11.0) + ENDINGS[ending]
    assert set(fold(rows).calls) == {"c2"}


def test_what_comes_after_the_end_does_not_bring_a_call_back():
    rows = queued_call("c1") + ENDINGS["answered"] + [
        state("ann", 80.0, "wrap_up", "on_call", call_id="c1"),
        ev(81.0, "ivr.node", "c1", flow="survey", node="csat"),                 # the post-call survey
        ev(85.0, "survey.answered", "c1", "billing", "ann", question="csat", score=5),
        ev(86.0, "ivr.ended", "c1", flow="survey", node="bye", outcome="completed"),
        state("ann", 90.0, "available", "wrap_up", call_id="c1"),
        ev(91.0, "admin.action", "c1", action="move", result="unknown_call")]
    assert fold(rows).calls == {}


def test_an_ivr_ending_after_the_join_is_a_hold_offer_not_the_end():
    rows = queued_call("c1") + [
        ev(50.0, "ivr.node", "c1", flow="callback_offer", node="ask"),
        ev(55.0, "ivr.ended", "c1", flow="callback_offer", node="no", outcome="completed")]
    assert fold(rows).calls["c1"].phase == "waiting"


def test_rows_of_a_call_that_neither_arrived_nor_joined_make_no_call():
    rows = [state("ann", 5.0, "wrap_up", "on_call", call_id="old"),
            ev(6.0, "survey.answered", "old", "billing", "ann", question="csat", score=4)]
    assert fold(rows).calls == {}


# --- fold: agents --------------------------------------------------------------------------

def test_an_agents_last_state_with_its_pause_reason_and_logged_out_agents_left_out():
    rows = [state("ann", 1.0, "available", "logged_out"),
            state("ann", 5.0, "paused", "available", reason="lunch"),
            state("bob", 2.0, "available", "logged_out"),
            state("bob", 3.0, "reserved", "available", call_id="c9"),
            state("bob", 4.0, "on_call", "reserved", call_id="c9"),
            state("cat", 1.0, "available", "logged_out"),
            state("cat", 6.0, "logged_out", "available"),
            state("dan", 1.0, "available", "logged_out"),
            state("dan", 2.0, "wrap_up", "on_call", call_id="c8"),
            state("dan", 3.0, "available", "wrap_up", call_id="c8")]
    agents = fold(rows).agents
    assert agents == {
        "ann": AgentLast("ann", "paused", "lunch", 5.0, None),
        "bob": AgentLast("bob", "on_call", None, 4.0, "c9"),
        "dan": AgentLast("dan", "available", None, 3.0, None),   # the wrap-up's call is done
    }


def test_equal_timestamps_apply_in_the_order_given():
    rows = [state("ann", 1.0, "available", "logged_out"),
            state("ann", 9.0, "wrap_up", "on_call", call_id="c1"),
            state("ann", 9.0, "available", "wrap_up", call_id="c1")]   # a wrap-up of 0 s
    assert fold(rows).agents["ann"].state == "available"


def test_last_event_ts_is_the_newest_row_whatever_its_type():
    rows = [*queued_call("c1", at=10.0), ev(50.0, "flow.reloaded", version=2, ok=True, errors=[])]
    assert fold(rows).last_event_ts == 50.0
    assert fold([]) == recovery.Recovered(agents={}, calls={}, last_event_ts=None)


# --- fold against the engine's own state -------------------------------------------------------

def engine_scenario(base: float = 0.0) -> tuple[Engine, list[Event]]:
    """A real engine through every phase; its events and its final state."""
    c = centre({"ann": {"billing": 5, "en": 5}, "bob": {"tech": 5, "en": 5}, "cat": {"sales": 5},
                "dan": {"sales": 5}},
               [queue("billing", {"billing": 1}, callback=CallbackPolicy(),
                      overflow=(step(after_s=30.0, add_skills={"en": 1}), step(after_s=60.0, move_to="tech"))),
                queue("tech", {"tech": 1}, priority=1),
                queue("sales", {"sales": 1}, ring_timeout_s=1000.0)])
    engine = Engine(c)
    out: list = []
    script = [(0.0, AgentLogin("ann")), (0.0, AgentLogin("bob")), (0.0, AgentLogin("dan")),
              (0.5, AgentLogout("dan")), (1.0, AgentPause("ann", "lunch")),
              (1.0, CallQueued("busy", "tech", caller_id="+441")), (2.0, AgentAnswered("busy", "bob")),
              (3.0, CallQueued("w1", "billing", caller_id="+442", priority=2)),
              (5.0, CallQueued("w2", "billing", caller_id="+443")), (6.0, SetCallPriority("w2", 7)),
              (7.0, MoveCall("w2", "sales")), (8.0, CallQueued("r1", "sales", caller_id="+444")),
              (9.0, AgentLogin("cat")),
              (10.0, CallQueued("gone", "billing")), (11.0, CallerHungUp("gone")),
              (12.0, CallbackAccepted("cb1", "0123456789", queue="billing", caller_id="+445"))]
    for at, message in script:
        out += engine.advance(base + at)
        out += engine.handle(message, base + at)
    out += engine.advance(base + 63.0)
    return engine, [o for o in out if isinstance(o, Event)]


def assert_matches_engine(recovered, engine: Engine, *, phases: dict[str, str]) -> None:
    assert set(recovered.calls) == set(engine.calls) == set(phases)
    for call_id, runtime in engine.calls.items():
        call = recovered.calls[call_id]
        assert (call.entry_queue, call.queue, call.joined_at, call.queue_joined_at, call.priority) == (
            runtime.entry_queue, runtime.queue, runtime.joined_at, runtime.queue_joined_at, runtime.priority), call_id
        assert (call.agent, call.connected_at, call.next_step, call.caller_id) == (
            runtime.agent, runtime.connected_at, runtime.next_step, runtime.caller_id), call_id
        assert call.phase == phases[call_id], call_id
    logged_in = {a: r for a, r in engine.agents.items() if r.state.value != "logged_out"}
    assert set(recovered.agents) == set(logged_in)
    for agent_id, runtime in logged_in.items():
        assert recovered.agents[agent_id] == AgentLast(agent_id, runtime.state.value, runtime.reason,
                                                       runtime.since, runtime.call_id)


ENGINE_PHASES = {"busy": "connected", "w1": "waiting", "w2": "ringing", "r1": "waiting", "cb1": "callback"}


def test_fold_of_the_engines_events_agrees_with_the_engines_state():
    engine, events = engine_scenario()
    recovered = fold({"ts": e.ts, "call_id": e.call_id, "type": e.type, "queue": e.queue, "agent": e.agent,
                      "data": e.data} for e in events)
    assert_matches_engine(recovered, engine, phases=ENGINE_PHASES)
    # the scenario did what it says: an overflow move (w1), a supervisor move and priority (w2)
    assert (recovered.calls["w1"].moves, engine.calls["w1"].moves) == (1, 1)
    assert recovered.calls["w2"].moves == 1 and engine.calls["w2"].moves == 0   # the engine counts overflow moves
    assert recovered.calls["w2"].priority == 7 and recovered.calls["cb1"].next_step == 1
    assert recovered.agents["ann"].reason == "lunch" and recovered.agents["cat"].call_id == "w2"


# --- load: against PostgreSQL -------------------------------------------------------------------

def rows_of(events: list[Event]) -> list[dict]:
    return [{"ts": e.ts, "call_id": e.call_id, "type": e.type, "queue": e.queue, "agent": e.agent,
             "data": e.data} for e in events]


async def write(dsn: str, run: str, events: list[Event], spool_dir) -> None:
    async with EventWriter(dsn, run=run, spool_dir=spool_dir) as writer:
        for event in events:
            await writer.put(event)
        await writer.flush()


def copy_of(events: list[Event]) -> list[Event]:
    """The same facts under new ids (an event id is unique across runs)."""
    return [Event(e.ts, e.type, e.call_id, e.queue, e.agent, dict(e.data)) for e in events]


@on_postgres
async def test_load_reads_the_runs_window_as_fold_would(conn, database_url, tmp_path):
    run, other = f"test:{uuid.uuid4().hex}", f"test:{uuid.uuid4().hex}"
    base = float(int(time.time()) - 3600)
    engine, events = engine_scenario(base)
    old = [Event(base - 2 * 86400, "queue.joined", "ancient", "billing", data={"priority": 0, "caller_id": ""}),
           Event(base - 2 * 86400, "agent.state", None, None, "eve",
                 data={"state": "available", "previous": "logged_out", "previous_s": 0.0, "reason": None})]
    newest = Event(base + 100.0, "flow.reloaded", data={"version": 2, "ok": True, "errors": []})
    await write(database_url, run, old + events + [newest], tmp_path / "a")

    # the other run: the same calls ended, the same agents logged out, and a call of its own
    others = copy_of(events) + [
        Event(base + 70.0, "call.ended", call_id, "billing", data={"outcome": "abandoned"})
        for call_id in engine.calls] + [
        Event(base + 70.0, "agent.state", None, None, agent,
              data={"state": "logged_out", "previous": "available", "previous_s": 1.0, "reason": None})
        for agent in engine.agents] + [
        Event(base + 80.0, "queue.joined", "theirs", "sales", data={"priority": 0, "caller_id": ""}),
        Event(base + 200.0, "flow.reloaded", data={"version": 3, "ok": True, "errors": []})]
    await write(database_url, other, others, tmp_path / "b")

    recovered = await load(conn, run=run)
    assert_matches_engine(recovered, engine, phases=ENGINE_PHASES)
    assert recovered == fold(rows_of(events + [newest]))
    assert recovered.last_event_ts == base + 100.0

    theirs = await load(database_url, run=other)          # a DSN works too
    assert set(theirs.calls) == {"theirs"} and theirs.agents == {}
    assert theirs.last_event_ts == base + 200.0

    # a window reaching back far enough sees the old events as well
    wider = await load(conn, run=run, since=base - 3 * 86400)
    assert set(wider.calls) == set(engine.calls) | {"ancient"}
    assert wider.agents["eve"] == AgentLast("eve", "available", None, base - 2 * 86400, None)
    # from base + 9.5: "gone" joined and ended, "cb1" joined; w1's move at 63 alone is no call
    narrower = await load(conn, run=run, since=base + 9.5)
    assert set(narrower.calls) == {"cb1"} and narrower.agents == {}
    assert (narrower.calls["cb1"].phase, narrower.calls["cb1"].next_step) == ("callback", 1)
    assert narrower.last_event_ts == base + 100.0


@on_postgres
async def test_load_leaves_out_calls_ended_in_the_store_and_in_the_ivr(conn, tmp_path):
    run = f"test:{uuid.uuid4().hex}"
    t = time.time() - 600
    rows = []
    for call, outcome in (("ivr-hangup", "hangup"), ("ivr-completed", "completed"), ("ivr-queued", "queued")):
        rows += [arrived(call, t), ev(t + 1, "ivr.ended", call, flow="main", node="n", outcome=outcome)]
    rows += [arrived("in-ivr", t + 2)]
    rows += queued_call("answered", at=t + 3) + [ev(t + 4, "call.connected", "answered", "billing", "ann"),
                                                 ev(t + 9, "call.ended", "answered", "billing", "ann",
                                                    outcome="answered", talk_s=5.0)]
    rows += queued_call("torn", at=t + 5) + [ev(t + 6, "call.abandoned", "torn", "billing", where="queue")]
    rows += queued_call("holding", at=t + 7) + [
        ev(t + 8, "ivr.ended", "holding", flow="callback_offer", node="no", outcome="completed")]
    await conn.executemany(
        "INSERT INTO events (id, ts, run, call_id, type, queue, agent, data) VALUES ($1, $2, $3, $4, $5, $6, $7,"
        " $8::jsonb)",
        [(uuid.uuid4(), datetime.fromtimestamp(r["ts"], timezone.utc), run, r["call_id"], r["type"], r["queue"],
          r["agent"], json.dumps(r["data"])) for r in rows])
    recovered = await load(conn, run=run)
    assert {c: call.phase for c, call in recovered.calls.items()} == {
        "ivr-queued": "ivr", "in-ivr": "ivr", "holding": "waiting"}
    assert set(fold(rows).calls) == set(recovered.calls)
    # the store already leaves the ended calls out: only the open ones' events are read
    ids = [r["call_id"] for r in await conn.fetch(recovery.OPEN_CALLS_SQL, run,
                                                  datetime.fromtimestamp(t - 60, timezone.utc),
                                                  list(recovery.TERMINAL_IVR_OUTCOMES))]
    assert sorted(ids) == ["holding", "in-ivr", "ivr-queued", "torn"]


@on_postgres
async def test_load_takes_a_pool(conn, database_url, tmp_path):
    run = f"test:{uuid.uuid4().hex}"
    t = float(int(time.time()) - 60)
    await write(database_url, run, [
        Event(t, "agent.state", None, None, "ann",
              data={"state": "paused", "previous": "available", "previous_s": 3.0, "reason": "training"})],
        tmp_path)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        recovered = await load(pool, run=run)
    finally:
        await pool.close()
    assert recovered.agents == {"ann": AgentLast("ann", "paused", "training", t, None)}
    assert recovered.calls == {} and recovered.last_event_ts == t


@on_postgres
async def test_the_agent_query_and_the_call_events_query_use_the_indexes(conn):
    run = f"test:{uuid.uuid4().hex}"
    now = datetime.now(timezone.utc)
    types = ("queue.joined", "agent.offered", "call.connected", "call.ended", "ivr.node", "call.arrived")
    rows = [(uuid.uuid4(), now - timedelta(seconds=i * 30), run, f"c{i // 6}", types[i % len(types)], "billing",
             None, "{}") for i in range(6000)]
    rows += [(uuid.uuid4(), now - timedelta(seconds=i * 900), run, None, "agent.state", None, f"a{i % 20}",
              '{"state": "available"}') for i in range(100)]
    await conn.copy_records_to_table("events", records=rows,
                                     columns=("id", "ts", "run", "call_id", "type", "queue", "agent", "data"))
    await conn.execute("ANALYZE events")
    since = now - timedelta(days=1)
    agents_plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + recovery.AGENTS_SQL, run, since))
    assert "events_run_type_ts" in agents_plan and "Seq Scan" not in agents_plan, agents_plan
    calls_plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + recovery.CALL_EVENTS_SQL,
                                                          ["c1", "c2", "c3"], run, since))
    assert "events_call_id" in calls_plan and "Seq Scan" not in calls_plan, calls_plan
