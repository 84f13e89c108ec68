"""CRM screen-pop webhooks against a real HTTP server: what an offered call posts, and that a slow,
dead or failing CRM never holds up routing (the pop is retried, then counted as failed)."""
from __future__ import annotations

import asyncio
import socket
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.engine.agents import AgentState
from router.engine.messages import AgentAnswered, CallFinished
from tests.web_harness import CENTRE, Live, start_live, stop_live

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]   # the loop of the fixtures

QUEUE_LINES = {"billing": "{id: billing, name: Billing,", "tech": "{id: tech, name: Tech support,"}


# --- a CRM that records what it is sent ----------------------------------------------

@dataclass
class Crm:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)       # every attempt's body, in order
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)                # when each attempt arrived (monotonic)
    answered: int = 0                                               # attempts the CRM answered
    release: asyncio.Event = field(default_factory=asyncio.Event)   # lets a hanging CRM answer


@asynccontextmanager
async def crm_server(behaviour: str = "ok") -> AsyncIterator[Crm]:
    """A CRM on 127.0.0.1 (a free port) at /pop: "ok" answers 200, "hang" answers only when
    released (or after 5 s), "fail_first" answers 500 to the first attempt and 200 after."""
    crm = Crm("")

    async def pop(request: web.Request) -> web.Response:
        crm.posts.append(await request.json())
        crm.headers.append(dict(request.headers))
        crm.times.append(time.monotonic())
        if behaviour == "hang":
            try:
                await asyncio.wait_for(crm.release.wait(), 5)
            except TimeoutError:
                pass
        status = 500 if behaviour == "fail_first" and len(crm.posts) == 1 else 200
        crm.answered += 1
        return web.json_response({"ok": status == 200}, status=status)

    app = web.Application()
    app.router.add_post("/pop", pop)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    crm.url = f"http://127.0.0.1:{runner.addresses[0][1]}/pop"
    try:
        yield crm
    finally:
        crm.release.set()
        await runner.cleanup()


@asynccontextmanager
async def dead_crm() -> AsyncIterator[str]:
    """The URL of a port that is bound but never listens: every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/pop"


# --- the service, its queues with webhooks -------------------------------------------

def centre_with_webhooks(hooks: dict[str, dict[str, Any]]) -> str:
    text = textwrap.dedent(CENTRE)
    for queue, hook in hooks.items():
        line = QUEUE_LINES[queue]
        assert text.count(line) == 1, f"the harness's centre changed: no {line!r}"
        settings = ", ".join(f"{key}: {value!r}" if key != "url" else f'url: "{value}"' for key, value in hook.items())
        text = text.replace(line, f"{line} webhook: {{{settings}}},")
    return text


async def start_with_webhooks(directory: Path, dsn: str, hooks: dict[str, dict[str, Any]]) -> Live:
    """tests.web_harness.start_live over a centre whose `hooks` queues have webhooks."""
    live = await start_live(directory, dsn, run=f"webhook-{uuid.uuid4().hex[:8]}",
                            centre_text=centre_with_webhooks(hooks))
    assert {queue: live.web.centre.queues[queue].webhook.url for queue in hooks} == {
        queue: hook["url"] for queue, hook in hooks.items()}
    return live


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


# --- the tests -----------------------------------------------------------------------

async def test_an_offered_call_pops_the_crm_with_the_caller_and_the_ivr_answers(tmp_path, database_url):
    async with crm_server() as crm:
        live = await start_with_webhooks(tmp_path, database_url,
                                         {"billing": {"url": crm.url, "timeout_s": 1, "retries": 2}})
        try:
            live.queue_call("c1", "billing", caller="+447700900123", account="12345")
            assert live.pbx.engine.calls["c1"].agent == "ann"            # offered at once
            live.queue_call("t1", "tech", caller="+447700900456", account="999")   # tech has no webhook
            assert live.pbx.engine.calls["t1"].agent in ("bob", "cid")
            await until(lambda: live.web.webhooks.sent, 5, "the pop sent")
            await asyncio.sleep(0.3)                 # nothing more comes
            assert len(crm.posts) == 1, crm.posts
            pop = crm.posts[0]
            assert {key: value for key, value in pop.items() if key != "ts"} == {
                "event": "call.offered", "call_id": "c1", "queue": "billing", "agent": "ann",
                "caller": "+447700900123", "ivr": {"account": "12345"}, "callback": False}
            assert isinstance(pop["ts"], (int, float)) and abs(pop["ts"] - live.pbx.now()) < 5
            assert crm.headers[0]["Content-Type"].startswith("application/json")
            assert crm.headers[0]["User-Agent"] == "acd-router"
            hooks = live.web.webhooks
            assert (hooks.sent, hooks.failed, hooks.dropped) == (1, 0, 0)
        finally:
            await stop_live(live)


async def test_a_hanging_or_dead_crm_never_holds_up_routing(tmp_path, database_url):
    async with crm_server("hang") as crm, dead_crm() as dead:
        hooks = {"billing": {"url": crm.url, "timeout_s": 0.6, "retries": 1},
                 "tech": {"url": dead, "timeout_s": 0.6, "retries": 1}}
        live = await start_with_webhooks(tmp_path, database_url, hooks)
        try:
            engine, webhooks = live.pbx.engine, live.web.webhooks
            for call_id, queue in (("b1", "billing"), ("t1", "tech"), ("t2", "tech"), ("b2", "billing")):
                live.queue_call(call_id, queue)
            # every offer is made as the caller joins, before any webhook is even tried
            assert {agent: engine.agents[agent].state for agent in ("ann", "bob", "cid")} == dict.fromkeys(
                ("ann", "bob", "cid"), AgentState.RESERVED)
            assert engine.calls["b1"].agent == "ann" and {engine.calls["t1"].agent, engine.calls["t2"].agent} == {
                "bob", "cid"} and engine.calls["b2"].agent is None
            assert len(crm.posts) == 0
            # the CRM holds the first pop (b1's) ... and the service goes on meanwhile
            await until(lambda: crm.posts, 2, "the first attempt reached the CRM")
            started = time.monotonic()
            status, calls = await live.call("GET", "/api/v1/calls", "viewer")
            assert status == 200 and {c["call_id"]: c["state"] for c in calls["calls"]} == {
                "b1": "ringing", "t1": "ringing", "t2": "ringing", "b2": "waiting"}
            live.pbx.submit(AgentAnswered("b1", "ann"))
            live.pbx.submit(CallFinished("b1"))
            status, body = await live.call("POST", "/api/v1/agents/ann/wrapup", "supervisor")
            assert (status, body["state"]) == (200, "reserved")       # offered b2 at once
            assert engine.calls["b2"].agent == "ann"
            assert time.monotonic() - started < 0.5                   # less than the CRM's timeout
            assert (webhooks.sent, webhooks.failed, crm.answered) == (0, 0, 0)   # still on the first attempt
            # each pop: an attempt, a retry, given up (b1 and b2 time out, t1 and t2 are refused)
            await until(lambda: webhooks.failed == 4, 8, "four pops given up")
            assert (webhooks.sent, webhooks.failed, webhooks.dropped) == (0, 4, 0)
            assert [pop["call_id"] for pop in crm.posts] == ["b1", "b1", "b2", "b2"]
        finally:
            await stop_live(live)


async def test_a_pop_the_crm_fails_is_retried_and_delivered(tmp_path, database_url):
    async with crm_server("fail_first") as crm:
        live = await start_with_webhooks(tmp_path, database_url,
                                         {"billing": {"url": crm.url, "timeout_s": 1, "retries": 2}})
        try:
            live.queue_call("c1", "billing", caller="+447700900123", account="12345")
            assert live.pbx.engine.calls["c1"].agent == "ann"
            await until(lambda: live.web.webhooks.sent, 5, "the pop delivered")
            webhooks = live.web.webhooks
            assert (webhooks.sent, webhooks.failed) == (1, 0)
            assert len(crm.posts) == 2 and crm.posts[0] == crm.posts[1] and crm.posts[0]["call_id"] == "c1"
            assert crm.times[1] - crm.times[0] >= 0.4                  # after a backoff
        finally:
            await stop_live(live)
