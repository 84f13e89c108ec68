"""Call life cycles through the real Asterisk, routed by the real adapter, recorded in PostgreSQL.

Each test builds a small centre (agents are ``Local/<n>@agents``: <n> answers
and talks TALK_S seconds, 9xxx never answers) and an IVR flow whose menu picks
the queue, runs `AsteriskAdapter` in process (AmiLink to the sandbox, our
FastAGI server on 127.0.0.1:4573, the engine, an EventWriter on this session's
database) and places scripted callers: AMI Originates of
``Local/5000@from-trunk`` into ``[test-caller]`` that press DIGITS and stay
HOLD_S seconds.  Assertions read the events the router wrote.  Timeouts only
guard against hangs; nothing asserts on wall time.  Only one FastAGI server
may bind the dialplan's port, so these tests run one at a time.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from router.config.model import CallbackPolicy, OverflowStep
from router.engine.engine import Engine
from router.ivr.registry import FlowRegistry
from router.pbx.adapter import AsteriskAdapter
from router.pbx.ami import AmiLink
from router.pbx.calls import Phase
from router.pbx.fastagi import FastAGIServer
from router.store.callback_store import CallbackStore
from router.store.database import connect
from router.store.writer import EventWriter

from tests.asterisk.harness import Ami, Sandbox
from tests.factories import centre, queue

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="session")]

CALL_TIMEOUT_S = 60.0
_numbers = itertools.count(7001)

FLOW = textwrap.dedent("""\
    flow: main
    start: choose
    nodes:
      choose:
        type: menu
        prompt: beep
        options: {"1": sales, "2": support, "3": overflow}
        timeout_s: 6
        retries: 0
        fallback: sales
      sales: {type: queue, queue: sales}
      support: {type: queue, queue: support}
      overflow: {type: queue, queue: overflow}
    """)
PROMPTS = "languages: [en]\nprompts:\n  beep: a beep\n"
OFFER_FLOW = textwrap.dedent("""\
    flow: callback_offer
    start: offer
    nodes:
      offer:
        type: menu
        prompt: beep
        options: {"1": take, "3": at_ten, "9": stay}
        timeout_s: 4
        retries: 0
        fallback: stay
      take: {type: callback, queue: sales, prompt: beep}
      at_ten: {type: callback, queue: sales, at: "10:00", prompt: beep}
      stay: {type: queue, queue: sales}
    """)


@dataclass
class Router:
    adapter: AsteriskAdapter
    link: AmiLink
    writer: EventWriter
    dsn: str
    originated: dict[str, str] = field(default_factory=dict)    # caller number -> Originate id

    async def call(self, digits: str, *, hold_s: int = 60, talk_s: int = 2, later_digits: str = "",
                   later_s: int = 0, number: str | None = None) -> str:
        """Place a scripted caller through the router's own AMI link; its caller number.
        `later_digits` are pressed `later_s` seconds after `digits` (keys on hold)."""
        number = number or str(next(_numbers))
        later = [f"LATER_DIGITS={later_digits}", f"LATER_S={later_s}"] if later_digits else []
        self.originated[number] = await self.link.originate({
            "Channel": "Local/5000@from-trunk", "Context": "test-caller", "Exten": "s", "Priority": "1",
            "CallerID": f"Caller <{number}>", "Timeout": "15000",
            "Variable": [f"DIGITS={digits}", f"HOLD_S={hold_s}", f"__TALK_S={talk_s}", *later]})
        return number

    async def events(self, number: str) -> list[asyncpg.Record]:
        """Every event of the call from `number`, in order."""
        await self.writer.flush()
        conn = await connect(self.dsn)
        try:
            return await conn.fetch(
                "SELECT call_id, type, queue, agent, data FROM events WHERE call_id = ("
                " SELECT call_id FROM events WHERE type = 'call.arrived' AND data->>'caller_id' = $1"
                " ORDER BY ts DESC LIMIT 1) ORDER BY ts, id", number)
        finally:
            await conn.close()

    async def wait_for(self, number: str, event_type: str) -> list[asyncpg.Record]:
        """The call's events once one of `event_type` is among them."""
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                events = await self.events(number)
                if any(e["type"] == event_type for e in events):
                    return events
                await asyncio.sleep(0.2)


@asynccontextmanager
async def running_router(sandbox: Sandbox, dsn: str, tmp_path: Path, queues, agents, *,
                         logged_in: tuple[str, ...], ami_port: int | None = None,
                         extra_flows: dict[str, str] | None = None,
                         endpoints: dict[str, str] | None = None) -> AsyncIterator[Router]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    (flows / "prompts.yaml").write_text(PROMPTS)
    for name, text in (extra_flows or {}).items():
        (flows / name).write_text(text)
    test_centre = centre(agents, queues, skills=("sales", "support"))
    if endpoints:
        test_centre = dataclasses.replace(test_centre, agents={
            a.id: dataclasses.replace(a, endpoint=endpoints.get(a.id, a.endpoint))
            for a in test_centre.agents.values()})
    registry = FlowRegistry(flows, known_queues=list(test_centre.queues), known_skills=list(test_centre.skills))
    assert registry.reload().ok
    writer = EventWriter(dsn, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    link = AmiLink(sandbox.host, ami_port or sandbox.ami_port, sandbox.ami_username, sandbox.ami_secret,
                   ping_interval_s=0.5, ping_timeout_s=1.0, backoff_first_s=0.1, backoff_max_s=0.5)
    callbacks = CallbackStore(dsn)
    adapter = AsteriskAdapter(test_centre, Engine(test_centre), registry, writer, link, callback_store=callbacks)
    server = FastAGIServer(adapter.routes(), sandbox.host, sandbox.agi_port)
    await writer.start()
    await callbacks.start()
    try:
        await adapter.start()
        await link.start()
        await server.start()
        for agent in logged_in:
            await adapter.login(agent)
        yield Router(adapter, link, writer, dsn)
        await adapter.drain(CALL_TIMEOUT_S)
    finally:
        await server.close()
        await adapter.close()
        await link.close()
        await callbacks.close()
        await writer.close()


def types(events: list[asyncpg.Record]) -> list[str]:
    """The call's life cycle: its event types without the IVR steps and agent states."""
    return [e["type"] for e in events if not e["type"].startswith("ivr.") and e["type"] != "agent.state"]


def sales_and_support(**options) -> list:
    """The queues of the test flow; "overflow" sends callers to voicemail after 2 s."""
    return [queue("sales", {"sales": 1}, wrap_up_s=0.5, **options),
            queue("support", {"support": 1}, wrap_up_s=0.5),
            queue("overflow", {"sales": 1}, overflow=(
                OverflowStep(when="max_wait", value=2.0, action="voicemail", target="100@default"),))]


async def test_ivr_digit_picks_the_queue_and_the_skilled_agent_answers(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}, "1002": {"support": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=("1001", "1002")) as router:
        support_caller = await router.call("2")
        sales_caller = await router.call("1")
        support = await router.wait_for(support_caller, "call.ended")
        sales = await router.wait_for(sales_caller, "call.ended")
    assert types(support) == ["call.arrived", "queue.joined", "agent.offered", "call.connected", "call.ended"]
    joined = next(e for e in support if e["type"] == "queue.joined")
    assert joined["queue"] == "support"
    connected = next(e for e in support if e["type"] == "call.connected")
    assert connected["agent"] == "1002"
    assert next(e for e in support if e["type"] == "call.ended")["data"]["outcome"] == "answered"
    assert next(e for e in sales if e["type"] == "call.connected")["agent"] == "1001"
    menu = [e for e in support if e["type"] == "ivr.input"]
    assert menu[0]["data"]["value"] == "2"
    assert router.adapter.route_ms and all(ms >= 0 for ms in router.adapter.route_ms)


async def test_rona_pauses_the_agent_and_the_next_agent_gets_the_call(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"9001": {"sales": 9}, "1001": {"sales": 5}}
    queues = sales_and_support(strategy="most-skilled", ring_timeout_s=3.0)
    async with running_router(asterisk, schema, tmp_path, queues, agents,
                              logged_in=("9001", "1001")) as router:
        caller = await router.call("1")
        events = await router.wait_for(caller, "call.ended")
    offered = [e["agent"] for e in events if e["type"] == "agent.offered"]
    assert offered == ["9001", "1001"]
    missed = next(e for e in events if e["type"] == "agent.no_answer")
    assert (missed["agent"], missed["data"]["reason"]) == ("9001", "timeout")
    paused = [e for e in events if e["type"] == "agent.state" and e["agent"] == "9001"
              and e["data"]["state"] == "paused"]
    assert paused and paused[0]["data"]["reason"] == "rona"
    assert next(e for e in events if e["type"] == "call.connected")["agent"] == "1001"


async def test_caller_who_hangs_up_while_waiting_is_abandoned(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=()) as router:       # nobody to answer
        caller = await router.call("1", hold_s=3)
        events = await router.wait_for(caller, "call.ended")
    assert types(events) == ["call.arrived", "queue.joined", "call.abandoned", "call.ended"]
    abandoned = next(e for e in events if e["type"] == "call.abandoned")
    assert abandoned["queue"] == "sales" and abandoned["data"]["where"] == "queue"
    assert abandoned["data"]["wait_s"] > 0


async def test_overflow_on_maximum_wait_diverts_to_voicemail(
        asterisk: Sandbox, ami: Ami, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=()) as router:
        caller = await router.call("3", hold_s=8)
        events = await router.wait_for(caller, "call.ended")
        await ami.wait_event(lambda e: e.event == "Newexten" and e.get("Context") == "router-divert"
                             and e.get("Application") == "VoiceMail")
    overflowed = next(e for e in events if e["type"] == "queue.overflowed")
    assert (overflowed["queue"], overflowed["data"]["action"], overflowed["data"]["when"]) == (
        "overflow", "voicemail", "max_wait")
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "overflow"


class TcpProxy:
    """A TCP relay to Asterisk's AMI port that the test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.up = False
        for client, upstream in self.pairs:
            client.close()
            upstream.close()
        self.pairs.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pairs.append((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def test_ami_link_cut_and_restored_mid_traffic_loses_no_call_and_runs_no_originate_twice(
        asterisk: Sandbox, ami: Ami, schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy(asterisk.ami_port)
    port = await proxy.start()
    agents = {"1001": {"sales": 5}, "1002": {"sales": 5}}
    try:
        async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                                  logged_in=("1001", "1002"), ami_port=port) as router:
            callers = [await router.call("1", talk_s=1)]
            callers.append(await router.call("1", talk_s=1))
            proxy.cut()
            placing = [asyncio.create_task(router.call("1", talk_s=1)) for _ in range(3)]
            await asyncio.sleep(1.5)
            proxy.up = True
            callers += await asyncio.gather(*placing)
            callers.append(await router.call("1", talk_s=1))
            calls = [await router.wait_for(number, "call.ended") for number in callers]
            assert router.link.connects >= 2
    finally:
        await proxy.close()
    for events in calls:
        assert types(events)[-1] == "call.ended"
        assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"
    channels_made = {number: sum(1 for e in ami.events if e.event == "Newchannel"
                                 and e.get("Uniqueid") == router.originated[number]) for number in callers}
    assert channels_made == {number: 1 for number in callers}


SERVE_CONFIG = textwrap.dedent("""\
    skills:
      - {id: sales, name: Sales}
      - {id: support, name: Support}
    agents:
      - {id: "1001", name: Agent One, endpoint: Local/1001@agents, skills: {sales: 5}}
    queues:
      - {id: sales, name: Sales, skills: {sales: 1}, wrap_up_s: 1}
      - {id: support, name: Support, skills: {support: 1}}
      - {id: overflow, name: Overflow, skills: {sales: 1}}
    ami: {host: 127.0.0.1, port: 5038, username: acd-router, secret: "${ACD_AMI_SECRET}"}
    agi: {host: 127.0.0.1, port: 4573}
    flows: flows
    """)


async def start_serve(tmp_path: Path, dsn: str, secret: str, *login: str) -> asyncio.subprocess.Process:
    """`acd-router serve` on tmp_path/router.yaml as a process, once it says service.started."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "ACD_DATABASE_URL": dsn, "ACD_AMI_SECRET": secret}
    args = [arg for agent in login for arg in ("--login", agent)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(tmp_path / "router.yaml"),
        "--data-dir", str(tmp_path / "data"), "--web-port", "0", *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while b"service.started" not in (line := await process.stderr.readline()):  # type: ignore[union-attr]
                assert line, "acd-router serve exited before it started"
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process


async def test_serve_routes_a_call_and_drains_it_on_sigterm(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    schema = own_schema
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "main.yaml").write_text(FLOW)
    (tmp_path / "flows" / "prompts.yaml").write_text(PROMPTS)
    (tmp_path / "router.yaml").write_text(SERVE_CONFIG)
    process = await start_serve(tmp_path, schema, asterisk.ami_secret, "1001")
    link = AmiLink(asterisk.host, asterisk.ami_port, asterisk.ami_username, asterisk.ami_secret)
    writer = EventWriter(schema, spool_dir=tmp_path / "spool")
    try:
        await link.start()
        await writer.start()
        router = Router(None, link, writer, schema)          # type: ignore[arg-type]
        caller = await router.call("1", talk_s=3)
        await router.wait_for(caller, "call.connected")
        process.send_signal(signal.SIGTERM)                  # mid-call: the call may finish
        _, stderr = await asyncio.wait_for(process.communicate(), CALL_TIMEOUT_S)
        events = await router.events(caller)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await link.close()
        await writer.close()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"service.drained" in stderr and b'"complete": true' in stderr
    assert types(events)[-1] == "call.ended"
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"


async def test_feature_codes_log_an_agent_in_and_pause_them(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=()) as router:
        for code in ("*45", "*4742"):
            await router.link.originate({"Channel": f"Local/{code}@agent-features", "Application": "Wait",
                                         "Data": "1", "CallerID": "Agent <1001>"})
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while router.adapter.engine.agents["1001"].state.value != "paused":
                await asyncio.sleep(0.1)
        await router.writer.flush()
        conn = await connect(schema)
        try:
            states = await conn.fetch("SELECT data FROM events WHERE type = 'agent.state' AND agent = '1001'"
                                      " AND ts >= now() - interval '1 minute' ORDER BY ts, id")
        finally:
            await conn.close()
    assert [(s["data"]["state"], s["data"]["reason"]) for s in states][-2:] == [
        ("available", None), ("paused", "42")]


async def test_caller_who_hangs_up_in_the_ivr_never_joins_a_queue(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=("1001",)) as router:
        caller = await router.call("", hold_s=2)            # silent in the menu, gone after 2 s
        events = await router.wait_for(caller, "ivr.ended")
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while router.adapter.calls:
                await asyncio.sleep(0.1)
    assert next(e for e in events if e["type"] == "ivr.ended")["data"]["outcome"] == "hangup"
    assert "queue.joined" not in types(events)


async def test_a_callback_offer_leaves_the_caller_waiting_until_answered(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    """The engine offers a call-back (EWT over the bound): the caller is taken into the offer
    flow, keeps their place (not a divert), and the agent who logs in meanwhile gets the call:
    the router's Redirect ends the offer's AGI and connects them."""
    agents = {"1001": {"sales": 5}}
    queues = sales_and_support(callback=CallbackPolicy(offer_ewt_s=0.0))
    async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=(),
                              extra_flows={"callback_offer.yaml": OFFER_FLOW}) as router:
        caller = await router.call("1", hold_s=30)
        await router.wait_for(caller, "callback.offered")
        await asyncio.sleep(0.5)                 # give a (wrongly) scheduled divert task time to run
        [live] = [c for c in router.adapter.calls.values() if c.caller_id == caller]
        assert live.phase is Phase.WAITING       # still on hold, not taken for a divert
        await router.adapter.login("1001")
        events = await router.wait_for(caller, "call.ended")
    assert types(events) == ["call.arrived", "queue.joined", "callback.offered", "agent.offered",
                             "call.connected", "call.ended"]
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"


SURVEY_FLOW = textwrap.dedent("""\
    flow: survey
    start: csat
    variables: {queue: "", agent: ""}
    nodes:
      csat: {type: survey, question: csat, prompt: beep, retries: 1, next: bye}
      bye: {type: hangup}
    """)


@pytest.mark.parametrize("agent_free", [True, False], ids=["dialled-from-the-ivr", "connected-from-hold"])
async def test_caller_takes_the_post_call_survey_after_the_agent_hangs_up(
        asterisk: Sandbox, schema: str, tmp_path: Path, agent_free: bool) -> None:
    """Free agent: the IVR's AGI dials them and runs the survey; otherwise the caller waits,
    is Redirected to [router-connect], and its Dial (option g) leads to the survey AGI."""
    agents = {"1001": {"sales": 5}}
    queues = [queue("sales", {"sales": 1}, wrap_up_s=0.5, survey="survey"),
              queue("support", {"support": 1}), queue("overflow", {"sales": 1})]
    async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=("1001",) if agent_free else (),
                              extra_flows={"survey.yaml": SURVEY_FLOW}) as router:
        # "4" three times, 1.5 s apart from about 6 s on: the survey takes the first it hears
        caller = await router.call("1", talk_s=2, later_digits="444", later_s=5, hold_s=20)
        if not agent_free:
            await router.wait_for(caller, "queue.joined")
            await router.adapter.login("1001")
        events = await router.wait_for(caller, "survey.answered")
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while router.adapter.calls:                  # the caller hangs up after the survey
                await asyncio.sleep(0.1)
    assert types(events) == ["call.arrived", "queue.joined", "agent.offered", "call.connected", "call.ended",
                             "survey.answered"]
    ended = next(e for e in events if e["type"] == "call.ended")["data"]
    assert ended["outcome"] == "answered" and ended["talk_s"] < 10      # ended when the agent hung up
    answer = next(e for e in events if e["type"] == "survey.answered")
    assert (answer["queue"], answer["agent"], answer["data"]["question"], answer["data"]["score"]) == (
        "sales", "1001", "csat", 4)


async def test_agent_whose_phone_is_unreachable_is_paused_and_skipped(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    """PJSIP/1001 has no registered contact in the sandbox: its device state is UNAVAILABLE."""
    agents = {"1001": {"sales": 9}, "1002": {"sales": 1}}
    queues = [queue("sales", {"sales": 1}, strategy="most-skilled", wrap_up_s=0.5),
              queue("support", {"support": 1}), queue("overflow", {"sales": 1})]
    async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=("1001", "1002"),
                              endpoints={"1001": "PJSIP/1001"}) as router:
        engine_agent = router.adapter.engine.agents["1001"]
        assert (engine_agent.state.value, engine_agent.reason) == ("paused", "unreachable")
        caller = await router.call("1", talk_s=1)
        events = await router.wait_for(caller, "call.ended")
    assert [e["agent"] for e in events if e["type"] == "call.connected"] == ["1002"]
    assert "agent.no_answer" not in types(events)
