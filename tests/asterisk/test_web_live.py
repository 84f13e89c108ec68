"""Live operations on the real Asterisk: the admin API of the web service over the real adapter.

A supervisor's phone (a Local channel) listens to an agent's call through the API
(Asterisk reports ChanSpyStart on the agent's channel); a pause from the API stops
offers to that agent while /metrics shows the waiting caller, and a resume from
the API lets the call through.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.asterisk.harness import Ami, Sandbox
from tests.asterisk.test_call_flows import CALL_TIMEOUT_S, Router, running_router, sales_and_support, types
from router.web.server import WebService

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="session")]

SUPERVISOR = "supervisor-token-live-0001"


@asynccontextmanager
async def web_over(router: Router, tmp_path: Path) -> AsyncIterator[tuple[WebService, Any]]:
    adapter = router.adapter
    web = WebService(adapter.centre, adapter, mode="live", run="live", dsn=router.dsn, flush=router.writer.flush,
                     link_up=lambda: router.link.connected, port=0,
                     environ={"ACD_WEB_TOKENS": f"{SUPERVISOR}:supervisor"}, token_dir=tmp_path)
    adapter.observers.append(web.observe)
    await web.start()
    session = aiohttp.ClientSession(base_url=web.url, headers={"Authorization": f"Bearer {SUPERVISOR}"})
    try:
        yield web, session
    finally:
        await session.close()
        await web.close()


def fresh_number() -> str:
    """A caller number no other test of the session used (events are looked up by it)."""
    return f"55{uuid.uuid4().int % 10**8:08d}"


async def post(session: aiohttp.ClientSession, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with session.post(path, json=body or {}) as response:
        return response.status, await response.json()


async def agent_state(session: aiohttp.ClientSession, agent: str) -> str:
    async with session.get(f"/api/v1/agents/{agent}") as response:
        return (await response.json())["state"]


async def test_a_supervisor_listens_to_an_agents_call_through_the_api(
        asterisk: Sandbox, schema: str, tmp_path: Path, ami: Ami) -> None:
    agents = {"8001": {"sales": 5}}                     # 8xxx answers and stays on the line
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=("8001",)) as router, web_over(router, tmp_path) as (web, api):
        caller = await router.call("1", hold_s=60, talk_s=60, number=fresh_number())   # stays on a minute
        await router.wait_for(caller, "call.connected")
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while router.adapter.calls and not any(c.agent_channel for c in router.adapter.calls.values()):
                await asyncio.sleep(0.1)
        status, body = await post(api, "/api/v1/agents/8001/monitor",
                                  {"supervisor": "Local/8002@agents", "mode": "listen"})
        assert status == 200, body
        assert body["channel"].startswith("Local/8001@agents-")
        started = await ami.wait_event(lambda e: e.get("Event") == "ChanSpyStart"
                                       and e.get("SpyeeChannel") == body["channel"], timeout_s=CALL_TIMEOUT_S)
        assert started.get("SpyerChannel", "").startswith("Local/8002@agents-")
        status, refused = await post(api, "/api/v1/agents/8001/monitor",
                                     {"supervisor": "PJSIP/2001,qB", "mode": "barge"})
        assert (status, refused["error"]) == (422, "invalid_endpoint")
        await router.adapter.ami.action({"Action": "Hangup", "Channel": body["channel"]})
        await router.wait_for(caller, "call.ended")
    trail = [e for e in await audit(router) if e["data"]["action"] == "agent.monitor"]
    assert [(e["agent"], e["data"]["result"], e["data"].get("mode")) for e in trail] == [
        ("8001", "ok", "listen"), ("8001", "invalid_endpoint", None)]


async def test_a_pause_from_the_api_stops_offers_and_metrics_show_the_waiting_caller(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, sales_and_support(), agents,
                              logged_in=("1001",)) as router, web_over(router, tmp_path) as (web, api):
        status, body = await post(api, "/api/v1/agents/1001/pause", {"reason": "coaching"})
        assert (status, body["state"]) == (200, "paused")
        caller = await router.call("1", hold_s=60, talk_s=1, number=fresh_number())
        await router.wait_for(caller, "queue.joined")
        await asyncio.sleep(2.0)                         # time enough for an offer, if one were made
        assert "agent.offered" not in types(await router.events(caller))
        async with api.get("/metrics") as response:
            metrics = (await response.text()).splitlines()
        assert 'acd_queue_calls_waiting{queue="sales"} 1.0' in metrics
        assert 'acd_agents{queue="sales",state="paused"} 1.0' in metrics
        assert "acd_ami_up 1.0" in metrics
        status, body = await post(api, "/api/v1/agents/1001/resume")
        assert (status, body["state"]) == (200, "reserved")     # the waiting caller is offered at once
        events = await router.wait_for(caller, "call.ended")
    assert types(events) == ["call.arrived", "queue.joined", "agent.offered", "call.connected", "call.ended"]
    assert next(e for e in events if e["type"] == "call.connected")["agent"] == "1001"


async def audit(router: Router) -> list[Any]:
    from router.store.database import connect
    await router.writer.flush()
    conn = await connect(router.dsn)
    try:
        return await conn.fetch("SELECT agent, data FROM events WHERE type = 'admin.action' ORDER BY ts, id")
    finally:
        await conn.close()
