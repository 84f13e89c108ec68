"""The PBX side's state machine (router.pbx.calls) without Asterisk: AMI event sequences
as Asterisk 22 sends them (channel names, event order) replayed through a real engine.

`Bench` is the adapter's loop without I/O: engine inputs are fed, the engine's outputs
go back to the switchboard, actions are collected (and carried out on demand)."""
from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest

from router.engine.engine import Engine
from router.engine.messages import AgentLogin, CallbackRestored, InvalidInput
from router.events import Event
from router.ivr.session import Enqueue
from router.pbx import dialplan as dp
from router.pbx.ami import ChannelInfo, DeviceStateChange, DialBegin, DialEnd, Hangup, Resync, UserEvent
from router.pbx.calls import (TRANSITIONS, Connect, Divert, HangupChannel, OriginateCallback, Phase, Redirect,
                              Switchboard)
from tests.factories import centre, queue, step

CALLER = "PJSIP/trunk-00000001"
AGENT_LEG = "Local/a1@agents-00000002;1"
ACTIONS = (Connect, Redirect, Divert, OriginateCallback, HangupChannel)


class Bench:
    def __init__(self, centre_) -> None:
        self.centre = centre_
        self.engine = Engine(centre_)
        self.board = Switchboard(centre_, self.engine)
        self.events: list[Event] = []
        self.actions: list = []
        self.refused: list = []

    def run(self, steps, now: float) -> None:
        pending = deque(steps)
        while pending:
            item = pending.popleft()
            if isinstance(item, ACTIONS):
                self.actions.append(item)
                continue
            try:
                outputs = self.engine.handle(item, now)
            except InvalidInput:
                self.refused.append(item)
                continue
            self.events += [o for o in outputs if isinstance(o, Event)]
            pending.extend(self.board.on_engine(outputs, now))

    def ami(self, event, now: float) -> None:
        self.run(self.board.on_ami(event, now), now)

    def advance(self, now: float) -> None:
        self.run(self.board.on_engine(self._stored(self.engine.advance(now)), now), now)

    def _stored(self, outputs):
        self.events += [o for o in outputs if isinstance(o, Event)]
        return outputs

    def carry_out(self, action, now: float) -> bool:
        """The action's turn: True if it still applies (then it succeeds)."""
        self.actions.remove(action)
        if not self.board.action_begins(action):
            return False
        self.board.action_done(action, now)
        return True

    def queue_caller(self, now: float = 0.0, channel: str = CALLER, call_id: str = "c1", queue_id: str = "sales"):
        call = self.board.ivr_started(call_id, channel, "1700000000.1", "0611223344")
        self.run([self.board.queued_from_ivr(call, Enqueue(queue_id, 0, {}, {}), now)], now)
        return call

    def types(self, call_id: str = "c1") -> list[str]:
        return [e.type for e in self.events if e.call_id == call_id and e.type != "agent.state"]


@pytest.fixture
def bench() -> Bench:
    return Bench(centre({"a1": {"sales": 5}, "a2": {"sales": 3}}, [queue("sales", {"sales": 1})]))


def offered_and_ringing(bench: Bench, now: float = 1.0):
    """A waiting caller, offered to a1 who logs in; the Connect carried out; Asterisk dials."""
    call = bench.queue_caller()
    assert call.phase is Phase.WAITING
    bench.run([AgentLogin("a1")], now)
    [connect] = bench.actions
    assert isinstance(connect, Connect) and connect.variables[dp.TARGET] == "Local/a1@agents"
    assert bench.carry_out(connect, now)
    bench.ami(DialBegin(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "a1@agents"), now + 0.1)
    return call


def test_a_call_from_hold_to_the_end(bench: Bench) -> None:
    call = offered_and_ringing(bench)
    assert call.phase is Phase.RINGING and call.agent_channel == AGENT_LEG and call.redirected
    bench.ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "ANSWER"), 3.0)
    assert call.phase is Phase.CONNECTED
    bench.ami(Hangup(AGENT_LEG, "1700000000.2", "1700000000.1", "16"), 60.0)
    assert call.phase is Phase.AFTER
    bench.ami(Hangup(CALLER, "1700000000.1", "1700000000.1", "16"), 60.1)
    assert call.phase is Phase.ENDED and "c1" not in bench.board.calls and bench.board.live() == 0
    assert bench.types() == ["queue.joined", "agent.offered", "call.connected", "call.ended"]
    assert bench.board.route_ms == [1000.0]            # joined at 0, dialled at 1
    assert bench.actions == []


def test_a_decision_changes_the_phase_only_when_the_engine_takes_it(bench: Bench) -> None:
    call = offered_and_ringing(bench)
    steps = bench.board.on_ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "ANSWER"), 3.0)
    assert call.phase is Phase.RINGING                 # AgentAnswered is only asked for
    bench.run([AgentLogin("a2")], 3.0)                 # (something else happens first)
    bench.engine.handle(steps[0], 3.0)                 # the engine takes it, but nobody tells the board
    assert call.phase is Phase.RINGING
    bench.run(steps, 3.0)                              # refused now: it was answered already
    assert bench.refused == steps and call.phase is Phase.RINGING


def test_ring_timeout_redirect_then_a_late_dial_end_counts_once(bench: Bench) -> None:
    """The engine's ring timer fires (CancelOffer -> Redirect back to hold) before Asterisk's
    DialEnd NOANSWER arrives: one agent.no_answer, and the late DialEnd changes nothing."""
    call = offered_and_ringing(bench)
    bench.advance(1.0 + 15.0)
    [back] = bench.actions
    assert back == Redirect("c1", CALLER, dp.HOLD_CONTEXT)
    assert call.phase is Phase.WAITING and call.agent is None and call.agent_channel is None
    bench.ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "NOANSWER"), 16.2)
    bench.ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "ANSWER"), 16.3)
    assert bench.types().count("agent.no_answer") == 1 and "call.connected" not in bench.types()
    assert call.phase is Phase.WAITING


def test_dial_end_no_answer_before_the_engines_timer_requeues_and_offers_the_next_agent(bench: Bench) -> None:
    call = offered_and_ringing(bench)
    bench.run([AgentLogin("a2")], 2.0)
    bench.ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "NOANSWER"), 14.0)
    assert [e.data["reason"] for e in bench.events if e.type == "agent.no_answer"] == ["timeout"]
    [connect] = bench.actions                        # straight to a2: no Redirect to hold first
    assert connect.agent == "a2" and connect.offer == 2 and call.phase is Phase.RINGING
    bench.advance(16.0)                              # a1's old ring timer is stale
    assert bench.types().count("agent.no_answer") == 1
    assert bench.carry_out(connect, 14.1)


def test_an_offer_overtaken_by_the_next_one_is_not_carried_out(bench: Bench) -> None:
    call = bench.queue_caller()
    bench.run([AgentLogin("a1"), AgentLogin("a2")], 1.0)
    first = bench.actions[0]
    bench.ami(UserEvent(dp.DIAL_FAILED_EVENT, CALLER, "1700000000.1",
                        {"call": "c1", "target": "Local/a1@agents", "status": "CHANUNAVAIL"}), 1.5)
    assert [e.data["reason"] for e in bench.events if e.type == "agent.no_answer"] == ["unreachable"]
    second = bench.actions[1]
    assert not bench.carry_out(first, 2.0)           # its turn came too late
    assert bench.carry_out(second, 2.0) and call.agent == "a2"


def test_caller_hangs_up_while_ringing(bench: Bench) -> None:
    call = offered_and_ringing(bench)
    bench.ami(Hangup(CALLER, "1700000000.1", "1700000000.1", "16"), 5.0)
    assert call.phase is Phase.ENDED and bench.actions == []     # no Redirect of a channel that is gone
    bench.ami(DialEnd(CALLER, "1700000000.1", AGENT_LEG, "1700000000.2", "CANCEL"), 5.01)
    bench.ami(Hangup(AGENT_LEG, "1700000000.2", "1700000000.1", "16"), 5.02)
    abandoned = next(e for e in bench.events if e.type == "call.abandoned")
    assert abandoned.data["where"] == "ringing" and bench.types()[-2:] == ["call.abandoned", "call.ended"]
    assert bench.engine.agent_view("a1").state.value == "available"


def test_hangup_in_the_ivr_is_left_to_the_agi_route(bench: Bench) -> None:
    call = bench.board.ivr_started("c9", CALLER, "1", "0611")
    bench.ami(Hangup(CALLER, "1", "1", "16"), 1.0)
    assert call.phase is Phase.ENDED and "c9" in bench.board.calls      # the route forgets it
    bench.board.forget(call)
    assert bench.board.live() == 0


def test_resync_after_a_link_cut(bench: Bench) -> None:
    """While the link was down: caller 1's offer was answered (its channel sits in a bridge),
    caller 2's Redirect went through but the agent did not answer (back in router-hold),
    caller 3 hung up."""
    engine_centre = centre({"a1": {"sales": 5}, "a2": {"sales": 5}}, [queue("sales", {"sales": 1})])
    bench = Bench(engine_centre)
    calls = [bench.queue_caller(channel=f"PJSIP/trunk-0000000{i}", call_id=f"c{i}") for i in (1, 2, 3)]
    bench.run([AgentLogin("a1"), AgentLogin("a2")], 1.0)
    for action in list(bench.actions):
        bench.carry_out(action, 1.0)
    assert [c.phase for c in calls] == [Phase.RINGING, Phase.RINGING, Phase.WAITING]
    bench.ami(Resync((ChannelInfo(calls[0].channel, "u1", "u1", dp.CONNECT_CONTEXT, "Dial", "bridge-1"),
                      ChannelInfo(calls[1].channel, "u2", "u2", dp.HOLD_CONTEXT, "WaitExten", None)), {}), 9.0)
    assert [c.phase for c in calls] == [Phase.CONNECTED, Phase.WAITING, Phase.ENDED]
    assert bench.types("c1")[-1] == "call.connected"
    assert bench.types("c2")[-1] in ("agent.no_answer", "agent.offered")   # a2 (rona off) may get it again
    assert bench.types("c3")[-2:] == ["call.abandoned", "call.ended"]


def test_resync_leaves_an_offer_whose_redirect_did_not_go_through(bench: Bench) -> None:
    call = bench.queue_caller()
    bench.run([AgentLogin("a1")], 1.0)
    bench.ami(Resync((ChannelInfo(CALLER, "u1", "u1", dp.HOLD_CONTEXT, "WaitExten", None),), {}), 2.0)
    assert call.phase is Phase.RINGING and "agent.no_answer" not in bench.types()


def test_an_action_that_fails_turns_the_offer_into_a_miss(bench: Bench) -> None:
    call = bench.queue_caller()
    bench.run([AgentLogin("a1")], 1.0)
    [connect] = bench.actions
    bench.actions.clear()
    assert bench.board.action_begins(connect)
    bench.run(bench.board.action_failed(connect), 6.0)
    assert [e.data["reason"] for e in bench.events if e.type == "agent.no_answer"] == ["unreachable"]
    assert call.phase is Phase.WAITING


def test_the_ivrs_own_dial_takes_the_offer_made_as_the_caller_queues(bench: Bench) -> None:
    bench.run([AgentLogin("a1")], 0.0)
    call = bench.queue_caller(now=2.0)
    [connect] = bench.actions
    assert bench.board.take_agi_dial(call, 2.0) == 'EXEC Dial "Local/a1@agents,14"'
    assert not bench.carry_out(connect, 2.5)          # the AMI path is not taken too
    bench.run(bench.board.agi_dial_ended(call, call.offers, "CHANUNAVAIL"), 2.6)   # no DialBegin came
    assert [e.data["reason"] for e in bench.events if e.type == "agent.no_answer"] == ["unreachable"]


def test_overflow_on_maximum_wait_diverts_the_waiting_caller_only() -> None:
    bench = Bench(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1}, ring_timeout_s=60.0, overflow=(
        step(when="max_wait", value=30.0, action="voicemail", target="200@default"),))]))
    ringing = bench.queue_caller()
    waiting = bench.queue_caller(channel="PJSIP/trunk-00000009", call_id="c2")
    bench.run([AgentLogin("a1")], 0.5)
    bench.actions.clear()
    bench.advance(31.0)
    [divert] = bench.actions
    assert isinstance(divert, Divert) and divert.call_id == "c2"
    assert divert.variables == {dp.NEXT: dp.NEXT_VOICEMAIL, dp.MAILBOX: "200@default"}
    assert waiting.phase is Phase.DIVERTED and ringing.phase is Phase.RINGING


def test_a_caller_who_leaves_by_a_key_is_diverted_only_if_the_engine_agrees(bench: Bench) -> None:
    from router.engine.messages import CallerLeft
    call = bench.queue_caller()
    bench.run([CallerLeft("c1", "hangup")], 3.0)
    assert call.phase is Phase.DIVERTED and bench.types()[-1] == "call.ended"
    ringing = bench.queue_caller(channel="PJSIP/trunk-00000005", call_id="c5")
    bench.run([AgentLogin("a1")], 4.0)
    bench.run([CallerLeft("c5", "hangup")], 4.5)      # too late: it is being offered (the engine ignores it)
    assert ringing.phase is Phase.RINGING and "call.ended" not in bench.types("c5")


def pjsip_bench() -> Bench:
    c = centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1})])
    return Bench(replace(c, agents={"a1": replace(c.agents["a1"], endpoint="PJSIP/1001")}))


def test_an_unreachable_phone_pauses_its_agent_and_its_return_resumes_them() -> None:
    bench = pjsip_bench()
    bench.ami(DeviceStateChange("PJSIP/1001", "UNAVAILABLE"), 0.0)
    bench.run([AgentLogin("a1")], 1.0)                # logs in on a dead phone: paused at once
    view = bench.engine.agent_view("a1")
    assert (view.state.value, view.reason) == ("paused", "unreachable")
    bench.ami(DeviceStateChange("PJSIP/1001", "NOT_INUSE"), 2.0)
    assert bench.engine.agent_view("a1").state.value == "available"
    bench.run([bench.board.on_ami(UserEvent(dp.AGENT_EVENT, None, None,
                                            {"agent": "1001", "action": "pause", "reason": "lunch"}), 3.0)[0]], 3.0)
    bench.ami(DeviceStateChange("PJSIP/1001", "NOT_INUSE"), 4.0)   # not a pause the router made
    assert bench.engine.agent_view("a1").reason == "lunch"


def test_feature_codes_name_agents_by_their_phone_number() -> None:
    bench = pjsip_bench()
    for action in ("login", "pause", "unpause", "logout"):
        bench.ami(UserEvent(dp.AGENT_EVENT, None, None, {"agent": "1001", "action": action}), 1.0)
    states = [e.data["state"] for e in bench.events if e.type == "agent.state"]
    assert states == ["available", "paused", "available", "logged_out"]
    unknown = UserEvent(dp.AGENT_EVENT, None, None, {"agent": "9999", "action": "login"})
    assert bench.board.unknown_phone(unknown) == "9999" and bench.board.on_ami(unknown, 1.0) == []


def test_a_callback_agent_first_from_dial_to_end() -> None:
    bench = Bench(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1})]))
    bench.run([CallbackRestored("cb1", "sales", "0612345678", joined_at=0.0, accepted_at=0.0)], 1.0)
    bench.run([AgentLogin("a1")], 2.0)
    [originate] = bench.actions
    assert isinstance(originate, OriginateCallback) and originate.fields["Context"] == dp.CALLBACK_CONTEXT
    leg = bench.board.legs["cb1"]
    assert leg.phase is Phase.LEG_RINGING
    up = {"call": "cb1", "stage": "agent_up"}
    bench.ami(UserEvent(dp.CALLBACK_EVENT, "Local/a1@agents-00000007;1", "7", up), 5.0)
    bench.ami(UserEvent(dp.CALLBACK_EVENT, "Local/a1@agents-00000007;1", "7", {"call": "cb1",
                                                                              "stage": "customer_up"}), 9.0)
    assert leg.phase is Phase.LEG_CONNECTED and bench.board.agent_channel_of("cb1") == leg.channel
    bench.ami(Hangup("Local/a1@agents-00000007;1", "7", "7", "16"), 70.0)
    assert bench.types("cb1") == ["agent.offered", "callback.dialing", "call.connected", "callback.connected",
                                  "call.ended"]
    assert bench.board.live() == 0


def test_a_callback_whose_agent_does_not_answer_and_a_stray_leg_that_comes_up() -> None:
    bench = Bench(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1}, rona_pause=False)]))
    bench.run([CallbackRestored("cb1", "sales", "0612345678", joined_at=0.0, accepted_at=0.0)], 1.0)
    bench.run([AgentLogin("a1")], 2.0)
    leg = bench.board.legs["cb1"]
    bench.run(bench.board.originate_answered(leg, False, "timeout"), 20.0)
    assert [e.data["reason"] for e in bench.events if e.type == "agent.no_answer"] == ["timeout"]
    stray = UserEvent(dp.CALLBACK_EVENT, "Local/a1@agents-00000008;1", "8", {"call": "old", "stage": "agent_up"})
    assert bench.board.on_ami(stray, 21.0) == [HangupChannel("old", "Local/a1@agents-00000008;1")]


def test_the_transition_table() -> None:
    assert all((phase, "hangup") in TRANSITIONS for phase in Phase if phase is not Phase.ENDED)
    assert not any(source is Phase.ENDED for source, _ in TRANSITIONS)
    # every phase but the final one can be reached
    assert {target for target in TRANSITIONS.values()} | {Phase.IVR, Phase.LEG_RINGING} == set(Phase)
