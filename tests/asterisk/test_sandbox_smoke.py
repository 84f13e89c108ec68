"""Smoke tests on the real Asterisk: the configuration loads, AMI and FastAGI work
end to end, and the dialplan contexts keep the contract of docs/asterisk.md.

The round trip is the router's life cycle in miniature: an AMI Originate makes
a scripted caller (Local/5000@from-trunk, which presses 2); [from-trunk] runs
our FastAGIServer's ``ivr`` route, which reads the digit with GET DATA and sets
ROUTER_NEXT=hold; the caller waits in [router-hold]; AMI Setvar + Redirect
send it to [router-connect], which dials a simulated agent; caller and agent
are bridged, the agent hangs up after TALK_S seconds and the call ends.
"""
from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from router.pbx.fastagi import AGISession, FastAGIServer

from tests.asterisk.harness import Ami, Sandbox

pytestmark = pytest.mark.asterisk
on_session_loop = pytest.mark.asyncio(loop_scope="session")   # the `ami` fixture's loop

CONTEXTS = (
    "from-trunk", "router-inbound", "router-hold", "router-connect",
    "agents", "test-caller", "agent-features",
)
_call_ids = itertools.count(1)


def named(name: str, **headers: str):
    """Predicate: an event called ``name`` whose headers have these values."""
    def matches(event) -> bool:
        return event.event == name and all(
            event.get(key) == value for key, value in headers.items()
        )
    return matches


# Start-up lines that are about Asterisk itself, not about asterisk_conf/: pjproject's notice
# that res_pjsip_pubsub registered its module while the SIP endpoint already ran (a load-order
# race inside Asterisk, seen once in a fresh sandbox; it names no file of ours).
STARTUP_NOISE = ('Module "PubSub Module" registered during operation',)


def test_configuration_loads_without_warnings_or_errors(asterisk: Sandbox) -> None:
    console = asterisk.console_log.read_text(errors="replace")
    startup = re.sub(r"\x1b\[[0-9;]*m", "", console.split("Asterisk Ready.")[0])
    problems = [line for line in startup.splitlines() if re.search(r"\b(WARNING|ERROR)\b", line)
                and not any(noise in line for noise in STARTUP_NOISE)]
    assert "Asterisk Ready." in console
    assert problems == []


def test_router_contexts_are_loaded(asterisk: Sandbox) -> None:
    shown = asterisk.cli("dialplan show router-connect")
    assert "Dial(${ROUTER_TARGET}" in shown
    assert "UserEvent(RouterDialFailed" in shown
    for context in CONTEXTS:
        assert f"[ Context '{context}' created by 'pbx_config' ]" in asterisk.cli(
            f"dialplan show {context}"
        )
    assert "Class: default" in asterisk.cli("moh show classes")


@on_session_loop
async def test_ami_login_and_ping(ami: Ami) -> None:
    pong = await ami.action({"Action": "Ping"})
    assert pong.success and pong.ping == "Pong"


@on_session_loop
async def test_ami_account_cannot_run_cli_commands(ami: Ami) -> None:
    reply = await ami.action({"Action": "Command", "Command": "core show version"})
    assert not reply.success
    assert "Permission denied" in reply.message


class IvrRoute:
    """The ``ivr`` FastAGI route: one digit, then ROUTER_NEXT=hold."""

    def __init__(self) -> None:
        self.session: asyncio.Future[AGISession] = asyncio.get_running_loop().create_future()
        self.digit: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def __call__(self, session: AGISession) -> None:
        self.session.set_result(session)
        reply = await session.send("GET DATA beep 3000 1")
        self.digit.set_result(reply.result)
        assert (await session.send("SET VARIABLE ROUTER_NEXT hold")).ok


async def originate_caller(ami: Ami, *, digits: str = "", hold_s: int = 30) -> None:
    """A scripted caller on the test DID (see [test-caller])."""
    originated = await ami.action({
        "Action": "Originate",
        "Channel": "Local/5000@from-trunk",
        "Context": "test-caller",
        "Exten": "s",
        "Priority": "1",
        "CallerID": "Test Caller <0612345678>",
        "Variable": [f"DIGITS={digits}", f"HOLD_S={hold_s}"],
        "Async": "true",
        "Timeout": "10000",
    })
    responses = originated if isinstance(originated, list) else [originated]
    assert responses[0].success, dict(responses[0])


async def call_into_hold(ami: Ami, route: IvrRoute, *, digits: str, hold_s: int) -> str:
    """Originate a scripted caller, wait until the IVR is done and it holds; its channel."""
    await originate_caller(ami, digits=digits, hold_s=hold_s)
    session = await asyncio.wait_for(route.session, 20)
    channel = session.env["agi_channel"]
    await ami.wait_event(named("Newexten", Channel=channel, Context="router-hold"))
    return channel


@on_session_loop
async def test_call_round_trip_ivr_hold_connect_bridge_hangup(asterisk: Sandbox, ami: Ami) -> None:
    route = IvrRoute()
    call_id = f"smoke-{next(_call_ids)}"
    async with FastAGIServer({"ivr": route}, asterisk.host, asterisk.agi_port):
        channel = await call_into_hold(ami, route, digits="2", hold_s=60)
        session = route.session.result()
        assert session.script == "ivr"
        assert session.args[:1] == ["5000"]             # the DID ([router-agi] runs it at exten s)
        assert session.env["agi_callerid"] == "0612345678"
        assert route.digit.result() == "2"

        await ami.set_variables(
            channel, ROUTER_TARGET="Local/1001@agents", ROUTER_CALL_ID=call_id, __TALK_S="1"
        )
        await ami.redirect(channel, "router-connect")

        dial_begin = await ami.wait_event(named("DialBegin", Channel=channel))
        assert dial_begin.get("DestChannel").startswith("Local/1001@agents-")
        await ami.wait_event(named("DialEnd", Channel=channel, DialStatus="ANSWER"))
        entered = await ami.wait_event(named("BridgeEnter", Channel=channel))
        agent_leg = dial_begin.get("DestChannel")
        await ami.wait_event(
            named("BridgeEnter", Channel=agent_leg, BridgeUniqueid=entered.get("BridgeUniqueid"))
        )
        await ami.wait_event(named("BridgeLeave", Channel=channel))
        await ami.wait_event(named("Hangup", Channel=channel))
        await ami.wait_event(named("Hangup", Channel=agent_leg))

    names = [event.event for event in ami.events if event.get("Channel") == channel]
    life_cycle = ("DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave", "Hangup")
    order = [names.index(name) for name in life_cycle]
    assert order == sorted(order)


@on_session_loop
async def test_unanswered_agent_reports_dial_failure_and_returns_caller_to_hold(
    asterisk: Sandbox, ami: Ami
) -> None:
    route = IvrRoute()
    call_id = f"rona-{next(_call_ids)}"
    async with FastAGIServer({"ivr": route}, asterisk.host, asterisk.agi_port):
        channel = await call_into_hold(ami, route, digits="1", hold_s=60)
        await ami.set_variables(
            channel,
            ROUTER_TARGET="Local/9001@agents",
            ROUTER_RING_TIMEOUT="1",
            ROUTER_CALL_ID=call_id,
        )
        await ami.redirect(channel, "router-connect")

        failed = await ami.wait_event(
            named("UserEvent", UserEvent="RouterDialFailed", Channel=channel)
        )
        assert (failed.get("call"), failed.get("status"), failed.get("target")) == (
            call_id, "NOANSWER", "Local/9001@agents"
        )
        back_in_hold = named("Newexten", Channel=channel, Context="router-hold")
        await ami.wait_event(back_in_hold, after=failed)
        hung_up = await ami.action({"Action": "Hangup", "Channel": channel})
        assert hung_up.success, dict(hung_up)
        await ami.wait_event(named("Hangup", Channel=channel))


@on_session_loop
async def test_feature_code_reports_agent_login(ami: Ami) -> None:
    originated = await ami.action({
        "Action": "Originate",
        "Channel": "Local/*45@agent-features",
        "Application": "Wait",
        "Data": "5",
        "CallerID": "Agent 1001 <1001>",
        "Async": "true",
        "Timeout": "10000",
    })
    responses = originated if isinstance(originated, list) else [originated]
    assert responses[0].success, dict(responses[0])
    login = await ami.wait_event(named("UserEvent", UserEvent="RouterAgent"))
    assert (login.get("action"), login.get("agent")) == ("login", "1001")


@on_session_loop
async def test_router_unreachable_caller_waits_then_hears_no_service_and_is_hung_up(ami: Ami) -> None:
    """Nothing listens on the FastAGI port: the caller waits ROUTER_WAIT_S seconds on music
    (the dialplan tries the routers again every second), then hears the notice."""
    await ami.action({"Action": "Setvar", "Variable": "ROUTER_WAIT_S", "Value": "2"})
    try:
        await originate_caller(ami)
        notice = await ami.wait_event(
            named("Newexten", Context="router-inbound", Application="Playback")
        )
    finally:
        await ami.action({"Action": "Setvar", "Variable": "ROUTER_WAIT_S", "Value": "30"})
    assert notice.get("AppData") == "ss-noservice"
    tries = [e for e in ami.events if named("Newexten", Channel=notice.get("Channel"), Context="router-agi",
                                            Application="AGI")(e)]
    waits = [e for e in ami.events if named("Newexten", Channel=notice.get("Channel"),
                                            Application="MusicOnHold")(e)]
    assert len(tries) == 3 and len(waits) == 2      # tried at once, then after each of 2 waits
    await ami.wait_event(named("Hangup", Channel=notice.get("Channel")))


@on_session_loop
async def test_ivr_transfer_dials_the_target(asterisk: Sandbox, ami: Ami) -> None:
    async def transfer(session: AGISession) -> None:
        for command in (
            "SET VARIABLE ROUTER_TARGET Local/1002@agents",
            "SET VARIABLE __TALK_S 1",
            "SET VARIABLE ROUTER_NEXT transfer",
        ):
            assert (await session.send(command)).ok

    async with FastAGIServer({"ivr": transfer}, asterisk.host, asterisk.agi_port):
        await originate_caller(ami)
        answered = await ami.wait_event(
            lambda event: named("DialEnd", DialStatus="ANSWER")(event)
            and event.get("DestChannel").startswith("Local/1002@agents-")
        )
        assert answered.get("Channel").startswith("Local/5000@from-trunk-")
        await ami.wait_event(named("Hangup", Channel=answered.get("Channel")))
