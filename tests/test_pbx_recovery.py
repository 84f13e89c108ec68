"""Recovery on start, planned (router.pbx.recovery) from channels as Asterisk's Status lists
them and the store's fold, then carried out on a real engine and switchboard."""
from __future__ import annotations

from router.engine.engine import Engine
from router.engine.messages import AgentLogin
from router.pbx import dialplan as dp
from router.pbx.ami import ChannelStatus, DialEnd, Hangup
from router.pbx.calls import Connect, Phase, Switchboard
from router.pbx.recovery import plan
from router.store.recovery import fold
from tests.factories import centre, queue

NOW = 1_800_000_100.0
T0 = 1_800_000_000.0


def row(ts, type_, call_id=None, queue=None, agent=None, **data):
    return {"ts": T0 + ts, "type": type_, "call_id": call_id, "queue": queue, "agent": agent, "data": data}


def caller(call_id, channel, context, *, app="WaitExten", bridge=None, linkedid=None, number="", **variables):
    return ChannelStatus(channel, f"u-{call_id}", linkedid or f"u-{call_id}", context, "s", app, bridge,
                         {dp.CALL_ID: call_id, **variables}, number)


def leg(channel, linkedid, bridge=None):
    return ChannelStatus(channel, f"u-{channel}", linkedid, "agents", "1001", "Wait", bridge, {})


CENTRE = centre({"a1": {"sales": 5}, "a2": {"sales": 5}, "a3": {"sales": 5}, "a4": {"sales": 5}},
                [queue("sales", {"sales": 1}, priority=2, wrap_up_s=5.0)])

STORE = fold([
    row(0, "agent.state", agent="a1", state="available", previous="logged_out"),
    row(0, "agent.state", agent="a2", state="available", previous="logged_out"),
    row(0, "agent.state", agent="a3", state="available", previous="logged_out"),
    row(0.5, "agent.state", agent="a3", state="paused", previous="available", reason="lunch"),
    row(1, "call.arrived", "ring", caller_id="0601"), row(2, "queue.joined", "ring", "sales", priority=2),
    row(3, "agent.offered", "ring", "sales", "a1"),
    row(3, "agent.state", "ring", agent="a1", state="reserved", previous="available"),
    row(4, "call.arrived", "talk", caller_id="0602"), row(5, "queue.joined", "talk", "sales", priority=2,
                                                          skills={"es": 3}),
    row(6, "agent.offered", "talk", "sales", "a2"), row(7, "call.connected", "talk", "sales", "a2"),
    row(7, "agent.state", "talk", agent="a2", state="on_call", previous="reserved"),
    row(8, "call.arrived", "wait2", caller_id="0604"), row(9, "queue.joined", "wait2", "sales", priority=2),
    row(10, "call.arrived", "wait1", caller_id="0603"),
    row(10.5, "call.arrived", "gone", caller_id="0605"), row(11, "queue.joined", "gone", "sales", priority=2),
    row(12, "call.arrived", "ivr", caller_id="0606"),
])
# wait1's queue.joined never reached the store: its channel variables say where it stands
CHANNELS = [
    caller("ring", "PJSIP/t-1", dp.CONNECT_CONTEXT, app="Dial", linkedid="L1"),
    leg("Local/a1@agents-01;1", "L1"), leg("Local/a1@agents-01;2", "L1"),
    caller("talk", "PJSIP/t-2", dp.CONNECT_CONTEXT, app="Dial", bridge="B2", linkedid="L2"),
    leg("Local/a2@agents-02;1", "L2", bridge="B2"), leg("Local/a2@agents-02;2", "L2"),
    caller("wait2", "PJSIP/t-4", dp.HOLD_CONTEXT),
    caller("wait1", "PJSIP/t-3", dp.AGI_CONTEXT, app="AGI", number="0603", **{dp.QUEUE: "sales", dp.JOINED_AT: str(T0 + 8.5),
                                                               dp.SEQ: "9", dp.PRIORITY: "2"}),
    caller("ivr", "PJSIP/t-6", dp.INBOUND_CONTEXT, app="AGI"),
]


def test_the_plan_puts_every_call_back_where_it_stood() -> None:
    result = plan(CENTRE, CHANNELS, STORE, NOW)
    restored = {r.call_id: (r.state, r.agent) for r, _ in result.calls}
    assert restored == {"ring": ("ringing", "a1"), "talk": ("connected", "a2"), "wait1": ("waiting", None),
                        "wait2": ("waiting", None)}
    assert [r.call_id for r, _ in result.calls][-2:] == ["wait1", "wait2"]      # place order
    records = {record.call_id: record for _, record in result.calls}
    assert records["ring"].agent_channel == "Local/a1@agents-01;1"
    assert records["talk"].agent_channel == "Local/a2@agents-02;1"
    talk = next(r for r, _ in result.calls if r.call_id == "talk")
    assert talk.connected_at == T0 + 7 and talk.skills == {"es": 3} and talk.priority == 2
    assert result.in_ivr == {"ivr"}
    agents = {a.agent: (a.state, a.reason) for a in result.agents}
    assert agents == {"a1": ("available", None), "a2": ("available", None), "a3": ("paused", "lunch")}
    added = [(e.type, e.call_id) for e in result.events]
    assert added == [("queue.joined", "wait1"), ("call.abandoned", "gone"), ("call.ended", "gone")]
    joined = next(e for e in result.events if e.type == "queue.joined")
    assert (joined.ts, joined.data["caller_id"]) == (T0 + 8.5, "0603")


def test_carried_out_on_an_engine_the_calls_go_on_as_before() -> None:
    engine = Engine(CENTRE)
    board = Switchboard(CENTRE, engine)
    result = plan(CENTRE, CHANNELS, STORE, NOW)
    for message in result.agents:
        assert engine.handle(message, NOW) == []                   # silent
    for restored, record in result.calls:
        board.adopt(record)
        assert board.on_engine(engine.handle(restored, NOW), NOW) == []   # nobody free: nothing routed
    assert [c.call_id for c in engine.waiting("sales")] == ["wait1", "wait2"]
    assert engine.agent_view("a1").state.value == "reserved" and engine.agent_view("a2").state.value == "on_call"
    [answered] = board.on_ami(DialEnd("PJSIP/t-1", "u-ring", "Local/a1@agents-01;1", "x", "ANSWER"), NOW + 1)
    outputs = engine.handle(answered, NOW + 1)
    assert [e.type for e in outputs if hasattr(e, "type") and e.type != "agent.state"] == ["call.connected"]
    board.on_engine(outputs, NOW + 1)
    assert board.calls["ring"].phase is Phase.CONNECTED
    [finished] = board.on_ami(Hangup("Local/a2@agents-02;1", "x", "x", "16"), NOW + 30)
    ended = engine.handle(finished, NOW + 30)
    assert next(e for e in ended if e.type == "call.ended").data["talk_s"] == round(NOW + 30 - (T0 + 7), 3)
    steps = board.on_engine(engine.handle(AgentLogin("a4"), NOW + 31), NOW + 31)
    assert [s.call_id for s in steps if isinstance(s, Connect)] == ["wait1"]     # the oldest first


def test_a_caller_whose_conversation_ended_meanwhile_is_hung_up_and_its_end_recorded() -> None:
    store = fold([row(1, "call.arrived", "c", caller_id="0601"), row(2, "queue.joined", "c", "sales", priority=2),
                  row(3, "agent.offered", "c", "sales", "a1"), row(4, "call.connected", "c", "sales", "a1"),
                  row(4, "agent.state", "c", agent="a1", state="on_call", previous="reserved")])
    result = plan(CENTRE, [caller("c", "PJSIP/t-9", dp.HOLD_CONTEXT)], store, NOW)
    assert result.calls == [] and result.hangups == ["PJSIP/t-9"]
    assert [(e.type, e.data["outcome"]) for e in result.events] == [("call.ended", "answered")]
    assert [(a.agent, a.state, a.wrap_until) for a in result.agents] == [("a1", "wrap_up", NOW)]


def test_channels_that_are_no_callers_and_values_that_are_no_numbers_are_left_alone() -> None:
    channels = [ChannelStatus("PJSIP/1001-01", "u", "u", "agent-features", "*45", "Playback", None, {}),
                caller("x", "PJSIP/t-7", dp.HOLD_CONTEXT, **{dp.QUEUE: "sales", dp.JOINED_AT: "soon"}),
                caller("y", "PJSIP/t-8", dp.HOLD_CONTEXT, **{dp.QUEUE: "nosuch", dp.JOINED_AT: "1"}),
                caller("z", "PJSIP/t-9", dp.DIVERT_CONTEXT, app="VoiceMail")]
    result = plan(CENTRE, channels, fold([]), NOW)
    assert result.calls == [] and result.events == [] and result.hangups == []
