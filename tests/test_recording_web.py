"""Pausing and resuming a call's recording through the web API, over the demo's simulated PBX
(no audio there: the pause is the event).  A supervisor or the agent on the call may; the
answers carry stable error ids; every attempt is in the audit trail."""
from __future__ import annotations

import json

import asyncpg
import pytest

from router.engine.messages import AgentAnswered
from tests.web_harness import CENTRE, start_live, stop_live

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

RECORDED = CENTRE.replace("callback: {min_digits: 6}, wrap_up_s: 30}",
                          "callback: {min_digits: 6}, wrap_up_s: 30, recording: {mode: all}}")


@pytest.fixture
async def live(tmp_path, database_url):
    assert RECORDED != CENTRE
    service = await start_live(tmp_path, database_url, centre_text=RECORDED)
    try:
        yield service
    finally:
        await stop_live(service)


async def events(live, *types: str) -> list[dict]:
    await live.pbx._store()
    await live.writer.flush()
    conn = await asyncpg.connect(live.web.dsn)
    try:
        rows = await conn.fetch("SELECT type, call_id, agent, data::text AS data FROM events WHERE run = $1"
                                " AND type = ANY($2) ORDER BY ts, id", live.run, list(types))
    finally:
        await conn.close()
    return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


async def test_supervisor_and_agent_pause_and_resume_a_recording(live) -> None:
    live.queue_call("b1", "billing")                        # recorded queue: ann takes it
    live.queue_call("t1", "tech")                           # not recorded
    live.pbx.submit(AgentAnswered("b1", "ann"))
    tech_agent = live.pbx.engine.calls["t1"].agent
    live.pbx.submit(AgentAnswered("t1", tech_agent))
    pause, resume = "/api/v1/calls/b1/recording/pause", "/api/v1/calls/b1/recording/resume"

    assert (await live.call("POST", "/api/v1/calls/t1/recording/pause", "supervisor"))[1]["error"] == \
        "not_recording"
    assert (await live.call("POST", resume, "supervisor"))[1]["error"] == "not_recording"
    status, body = await live.call("POST", pause, "viewer")
    assert (status, body["error"]) == (403, "forbidden_role")
    status, body = await live.call("POST", pause, "agent")                    # ann, on the call
    assert (status, body) == (200, {"ok": True, "call_id": "b1", "paused": True})
    status, body = await live.call("POST", pause, "supervisor")
    assert (status, body["error"]) == (409, "not_recording")
    status, body = await live.call("POST", resume, "billing_supervisor")
    assert (status, body["paused"]) == (200, False)
    status, body = await live.call("POST", "/api/v1/calls/t1/recording/pause", "agent")   # not ann's call
    assert (status, body["error"]) == (403, "forbidden_role")
    assert (await live.call("POST", "/api/v1/calls/nope/recording/pause", "supervisor"))[1]["error"] == \
        "unknown_call"
    assert (await live.call("POST", "/api/v1/calls/b1/recording/stop", "supervisor"))[0] == 404

    changes = await events(live, "recording.paused", "recording.resumed")
    assert [(e["type"], e["call_id"], e["agent"], e["data"]["reason"]) for e in changes] == [
        ("recording.paused", "b1", "ann", "agent"), ("recording.resumed", "b1", "ann", "supervisor")]
    assert changes[1]["data"]["by"] == "billing-lead"
    audit = [e["data"] for e in await events(live, "admin.action")
             if e["data"]["action"].startswith("call.recording")]
    assert [(a["action"], a["result"]) for a in audit] == [
        ("call.recording_pause", "not_recording"), ("call.recording_resume", "not_recording"),
        ("call.recording_pause", "forbidden_role"), ("call.recording_pause", "ok"),
        ("call.recording_pause", "not_recording"), ("call.recording_resume", "ok"),
        ("call.recording_pause", "forbidden_role"), ("call.recording_pause", "unknown_call")]
