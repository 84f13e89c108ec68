"""Restart-proof routing on the real Asterisk: `acd-router serve` killed with SIGKILL while
callers are in the IVR, waiting, ringing and talking, then started again (DESIGN §10).

Each test runs real `serve` processes on a database of its own (`own_schema`), places
scripted callers through the sandbox and reads the outcome from the events table."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from router.pbx.ami import AmiLink
from router.store.database import connect
from router.store.kpi import compute_kpis
from router.store.writer import EventWriter
from tests.asterisk.harness import Sandbox
from tests.asterisk.test_call_flows import FLOW, PROMPTS, Router, types
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="session")]

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0          # guards against a hang, not a speed assertion
END_TIMEOUT_S = 120.0

CONFIG = textwrap.dedent("""\
    skills:
      - {id: sales, name: Sales}
      - {id: support, name: Support}
    agents:
      - {id: "1001", name: Talks, endpoint: Local/1001@agents, skills: {sales: 5}}
      - {id: "1003", name: Pauses, endpoint: Local/1003@agents, skills: {sales: 5}}
      - {id: "1004", name: Comes later, endpoint: Local/1004@agents, skills: {sales: 5}}
      - {id: "9001", name: Never answers, endpoint: Local/9001@agents, skills: {sales: 5}}
    queues:
      - {id: sales, name: Sales, skills: {sales: 1}, wrap_up_s: 1, ring_timeout_s: 20}
      - {id: support, name: Support, skills: {support: 1}}
      - {id: overflow, name: Overflow, skills: {sales: 1}}
    ami: {host: 127.0.0.1, port: 5038, username: acd-router, secret: "${ACD_AMI_SECRET}"}
    agi: {host: 127.0.0.1, port: AGI_PORT}
    flows: flows
    """)


class Serve:
    """One `acd-router serve` process; its log (stderr) goes to a file the test reads."""

    def __init__(self, tmp_path: Path, name: str, dsn: str, secret: str, agi_port: int = 4573) -> None:
        self.dir = tmp_path / name
        (self.dir / "flows").mkdir(parents=True)
        (self.dir / "flows" / "main.yaml").write_text(FLOW)
        (self.dir / "flows" / "prompts.yaml").write_text(PROMPTS)
        (self.dir / "router.yaml").write_text(CONFIG.replace("AGI_PORT", str(agi_port)))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "ACD_DATABASE_URL": dsn, "ACD_AMI_SECRET": secret}
        self.log = self.dir / "serve.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *login: str, until: bytes = b"service.started") -> None:
        args = [arg for agent in login for arg in ("--login", agent)]
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router", "serve", "--config", str(self.dir / "router.yaml"),
                "--data-dir", str(self.dir / "data"), "--web-port", "0", *args, env=self.env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        await self.wait_log(until)

    async def wait_log(self, marker: bytes, *, after: int = 0) -> int:
        """Wait until the log holds `marker` past byte `after`; the end of the log then."""
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                text = self.log.read_bytes()
                if marker in text[after:]:
                    return len(text)
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"serve exited ({self.process.returncode}):\n{text[-3000:].decode()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 40)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def feature_code(link: AmiLink, code: str, phone: str) -> None:
    await link.originate({"Channel": f"Local/{code}@agent-features", "Application": "Wait", "Data": "1",
                          "CallerID": f"Agent <{phone}>"})


async def run_events(dsn: str) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return await conn.fetch("SELECT id, ts, call_id, type, queue, agent, data FROM events "
                                "WHERE run = 'live' ORDER BY ts, id")
    finally:
        await conn.close()


async def sales_kpis(dsn: str) -> dict:
    conn = await connect(dsn)
    try:
        return (await compute_kpis(conn))["queues"]["sales"]
    finally:
        await conn.close()


async def wait_until_ended(router: Router, numbers: list[str]) -> dict[str, list[asyncpg.Record]]:
    async with asyncio.timeout(END_TIMEOUT_S):
        while True:
            calls = {number: await router.events(number) for number in numbers}
            if all(any(e["type"] == "call.ended" for e in events) for events in calls.values()):
                return calls
            await asyncio.sleep(0.5)


@asynccontextmanager
async def callers_of(asterisk: Sandbox, dsn: str, tmp_path: Path, *serves: Serve,
                     pair: bool = False) -> AsyncIterator[Router]:
    """The test's side: an AMI link placing callers and reading the events of `dsn`; at the
    end the `serves` are stopped (and the dialplan's router list put back for a pair)."""
    link = AmiLink(asterisk.host, asterisk.ami_port, asterisk.ami_username, asterisk.ami_secret)
    writer = EventWriter(dsn, spool_dir=tmp_path / "spool")
    try:
        await link.start()
        await writer.start()
        if pair:
            await set_router_agi(link, AGI_PAIR)
        yield Router(None, link, writer, dsn)                 # type: ignore[arg-type]
    finally:
        if pair:
            await set_router_agi(link, "agi://127.0.0.1:4573")
        for serve in serves:
            await serve.stop()
        await link.close()
        await writer.close()


async def test_a_router_killed_mid_shift_picks_every_caller_up_again(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    """SIGKILL with a caller ringing an agent who never answers, one talking, two waiting and
    one in the IVR's menu, and an agent paused by feature code; then a new process.  Every
    caller is served, each event happens once, the waiting callers keep their order, and the
    paused agent stays paused."""
    first = Serve(tmp_path, "first", own_schema, asterisk.ami_secret)
    second = Serve(tmp_path, "second", own_schema, asterisk.ami_secret)
    async with callers_of(asterisk, own_schema, tmp_path, first, second) as router:
        link = router.link
        await first.start("9001")
        ringing = await router.call("1", hold_s=120, talk_s=2)
        await router.wait_for(ringing, "agent.offered")
        await feature_code(link, "*45", "1001")
        talking = await router.call("1", hold_s=120, talk_s=25)
        await router.wait_for(talking, "call.connected")
        await feature_code(link, "*45", "1003")
        await feature_code(link, "*4742", "1003")
        waiting = []
        for _ in range(2):     # one after the other: callers placed together race through the IVR
            waiting.append(await router.call("1", hold_s=120, talk_s=2))
            await router.wait_for(waiting[-1], "queue.joined")
        in_ivr = await router.call("", hold_s=120, talk_s=2)   # silent: the menu waits 6 s for a key
        await router.wait_for(in_ivr, "call.arrived")
        paused = [e for e in await run_events(own_schema) if e["type"] == "agent.state" and e["agent"] == "1003"]
        assert paused and paused[-1]["data"]["state"] == "paused"
        first.kill()
        await first.process.wait()                             # type: ignore[union-attr]
        await second.start()
        await feature_code(link, "*45", "1004")
        callers = [ringing, talking, *waiting, in_ivr]
        calls = await wait_until_ended(router, callers)
        events = await run_events(own_schema)
        kpis = await sales_kpis(own_schema)
    log = second.log.read_text()
    assert "adapter.took_over" in log and '"waiting": 2' in log and '"ringing": 1' in log \
        and '"connected": 1' in log, log[-3000:]
    check_served_once(calls, events)
    assert kpis["offered"] == kpis["answered"] == len(callers) and kpis["abandoned"] == 0
    connected_at = {number: next(e["ts"] for e in events if e["type"] == "call.connected"
                                 and e["call_id"] == calls[number][0]["call_id"]) for number in waiting}
    assert connected_at[waiting[0]] < connected_at[waiting[1]]           # their places kept
    assert calls[talking][-1]["agent"] == "1001"                         # the talk went on to its end
    offered_to_1003 = [e for e in events if e["type"] == "agent.offered" and e["agent"] == "1003"]
    logins_1003 = [e for e in events if e["type"] == "agent.state" and e["agent"] == "1003"
                   and e["data"]["previous"] == "logged_out"]
    assert offered_to_1003 == [] and len(logins_1003) == 1                # still paused, never logged in again


AGI_PAIR = "agi://127.0.0.1:4573,agi://127.0.0.1:4574"


async def set_router_agi(link: AmiLink, value: str) -> None:
    """The dialplan's list of routers (a global variable, as [globals] sets it)."""
    await link.action({"Action": "Setvar", "Variable": "ROUTER_AGI", "Value": value})


def check_served_once(calls: dict[str, list[asyncpg.Record]], events: list[asyncpg.Record]) -> None:
    """Every caller answered, each of its events once; nothing offered twice at a time."""
    for number, call in calls.items():
        counts = Counter(types(call))
        assert counts["call.arrived"] == counts["queue.joined"] == counts["call.connected"] == 1, (number, call)
        assert counts["call.ended"] == 1, (number, types(call))
        assert next(e for e in call if e["type"] == "call.ended")["data"]["outcome"] == "answered"
    joined = Counter(e["call_id"] for e in events if e["type"] == "queue.joined")
    ended = Counter(e["call_id"] for e in events if e["type"] == "call.ended")
    assert joined == ended and set(joined.values()) == {1}
    ringing: dict[str, str] = {}                       # call -> agent offered and not yet settled
    for event in events:
        if event["type"] == "agent.offered":
            assert event["call_id"] not in ringing, f"{event['call_id']} offered twice at once"
            ringing[event["call_id"]] = event["agent"]
        elif event["type"] in ("agent.no_answer", "call.connected", "call.abandoned"):
            ringing.pop(event["call_id"], None)


async def test_the_standby_of_a_pair_takes_over_when_the_leader_is_killed(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    """Two serve processes on one config: the second stands by with its FastAGI port closed;
    SIGKILL of the leader mid-traffic; the standby leads and every caller is served once."""
    leader = Serve(tmp_path, "leader", own_schema, asterisk.ami_secret, agi_port=4573)
    standby = Serve(tmp_path, "standby", own_schema, asterisk.ami_secret, agi_port=4574)
    async with callers_of(asterisk, own_schema, tmp_path, leader, standby, pair=True) as router:
        await leader.start()
        await standby.start(until=b"service.standby")
        await feature_code(router.link, "*45", "1001")
        talking = await router.call("1", hold_s=120, talk_s=12)
        await router.wait_for(talking, "call.connected")
        waiting = []
        for _ in range(2):     # one after the other: callers placed together race through the IVR
            waiting.append(await router.call("1", hold_s=120, talk_s=2))
            await router.wait_for(waiting[-1], "queue.joined")
        in_ivr = await router.call("", hold_s=120, talk_s=2)
        await router.wait_for(in_ivr, "call.arrived")
        leader.kill()
        await leader.process.wait()                            # type: ignore[union-attr]
        await standby.wait_log(b"service.started")
        await feature_code(router.link, "*45", "1004")
        calls = await wait_until_ended(router, [talking, *waiting, in_ivr])
        events = await run_events(own_schema)
    check_served_once(calls, events)
    log = standby.log.read_text()
    assert log.index("service.standby") < log.index("ha.leader") < log.index("adapter.took_over")
    assert '"waiting": 2' in log and '"connected": 1' in log, log[-3000:]
    served_by_standby = {e["agent"] for e in events if e["type"] == "call.connected" and e["agent"] == "1004"}
    assert served_by_standby == {"1004"}


async def test_a_leader_cut_from_postgresql_stops_acting_and_the_standby_leads(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    """Fencing: the leader reaches PostgreSQL through a TCP proxy that is cut.  It stops
    acting at once (no AMI action, its FastAGI port closed); the standby takes the lock and
    the waiting callers over; no call is offered twice."""
    parts = urlsplit(own_schema)
    proxy = TcpProxy("127.0.0.1", parts.port or 5432)
    await proxy.start()
    leader = Serve(tmp_path, "leader", proxy.dsn(own_schema), asterisk.ami_secret, agi_port=4573)
    standby = Serve(tmp_path, "standby", own_schema, asterisk.ami_secret, agi_port=4574)
    try:
        async with callers_of(asterisk, own_schema, tmp_path, leader, standby, pair=True) as router:
            await leader.start()
            await standby.start(until=b"service.standby")
            waiting = [await router.call("1", hold_s=120, talk_s=2) for _ in range(3)]
            for number in waiting:
                await router.wait_for(number, "queue.joined")
            end_of_log = len(leader.log.read_bytes())
            proxy.cut()
            await leader.wait_log(b"service.fenced", after=end_of_log)
            await standby.wait_log(b"service.started")
            await feature_code(router.link, "*45", "1001")   # both hear it; only the new leader acts
            calls = await wait_until_ended(router, waiting)
            events = await run_events(own_schema)
            fenced_log = leader.log.read_bytes()[end_of_log:].decode()
    finally:
        await proxy.close()
    check_served_once(calls, events)
    assert "service.fenced" in fenced_log and "adapter.offered" not in fenced_log, fenced_log[-3000:]
    connected_by = Counter(e["agent"] for e in events if e["type"] == "call.connected")
    assert connected_by == {"1001": 3}


async def test_postgresql_restarted_under_the_leader(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    """The database restarts under a single router: it fences (its lock's session ended),
    leads again once PostgreSQL is back, takes its own callers over, and serves them once."""
    serve = Serve(tmp_path, "only", own_schema, asterisk.ami_secret)
    async with callers_of(asterisk, own_schema, tmp_path, serve) as router:
        await serve.start()
        waiting = []
        for _ in range(2):     # one after the other: callers placed together race through the IVR
            waiting.append(await router.call("1", hold_s=120, talk_s=2))
            await router.wait_for(waiting[-1], "queue.joined")
        end_of_log = len(serve.log.read_bytes())
        restart = await asyncio.create_subprocess_exec(
            "pg_ctlcluster", "--skip-systemctl-redirect", _cluster_version(), "main", "restart")
        assert await restart.wait() == 0
        await serve.wait_log(b"service.fenced", after=end_of_log)
        await serve.wait_log(b"service.started", after=end_of_log)
        await feature_code(router.link, "*45", "1001")
        calls = await wait_until_ended(router, waiting)
        events = await run_events(own_schema)
    check_served_once(calls, events)


def _cluster_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
