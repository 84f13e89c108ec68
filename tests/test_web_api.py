"""The admin API against the real service (HTTP on a free port, real PostgreSQL): every role,
every action, every error, the audit trail, sessions, the event stream and the metrics."""
from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from router.engine.messages import AgentAnswered, CallbackAccepted, CallFinished
from router.web.hub import VIEWER_BUFFER
from tests.web_harness import TOKENS, Live

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]   # the loop of the fixtures


async def state_of(live: Live, agent: str) -> str:
    status, body = await live.call("GET", f"/api/v1/agents/{agent}", "viewer")
    assert status == 200, body
    return body["state"]


async def audit(live: Live) -> list[dict]:
    await live.pbx._store()
    await live.writer.flush()
    conn = await asyncpg.connect(live.web.dsn)
    try:
        rows = await conn.fetch("SELECT agent, call_id, queue, data::text AS data FROM events "
                                "WHERE run = $1 AND type = 'admin.action' ORDER BY ts, id", live.run)
    finally:
        await conn.close()
    return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


# --- roles ---------------------------------------------------------------------------

READS = ["/api/v1/queues", "/api/v1/agents", "/api/v1/calls", "/api/v1/callbacks", "/api/v1/alarms",
         "/api/v1/agents/bob"]


async def test_reads_need_a_token_and_a_viewer_role_or_above(live):
    for path in READS:
        assert (await live.call("GET", path))[0] == 401
        assert (await live.call("GET", path, "not-a-token-at-all-000"))[0] == 401
        assert (await live.call("GET", path, "agent"))[0] == 403          # an agent sees only itself
        for who in ("viewer", "supervisor", "admin"):
            status, body = await live.call("GET", path, who)
            assert status == 200, (path, who, body)
    status, body = await live.call("GET", "/api/v1/queues")
    assert body == {"error": "unauthenticated", "message": "a valid bearer token or sign-in is required"}
    assert (await live.call("GET", "/api/v1/agents/ann", "agent"))[0] == 200
    status, me = await live.call("GET", "/api/v1/me", "agent")
    assert (status, me["role"], me["agent"]) == (200, "agent:ann", "ann")


async def test_actions_need_the_right_role_and_a_refusal_changes_nothing(live):
    live.queue_call("w1", "sales")
    actions = [("POST", "/api/v1/agents/bob/pause", {"reason": "lunch"}), ("POST", "/api/v1/agents/bob/logout", None),
               ("POST", "/api/v1/calls/w1/priority", {"priority": 5}),
               ("POST", "/api/v1/calls/w1/move", {"queue": "tech"})]
    for method, path, body in actions:
        for who in (None, "not-a-token-at-all-000", "viewer", "agent"):
            status, _ = await live.call(method, path, who, json=body)
            assert status == (401 if who in (None, "not-a-token-at-all-000") else 403), (path, who)
    assert await state_of(live, "bob") == "available"
    status, calls = await live.call("GET", "/api/v1/calls", "viewer")
    assert [(c["call_id"], c["queue"], c["priority"]) for c in calls["calls"]] == [("w1", "sales", 0)]
    assert (await live.call("POST", "/api/v1/flows/reload", "supervisor"))[0] == 403
    assert (await live.call("POST", "/api/v1/flows/reload", "admin"))[0] == 200
    assert (await live.call("POST", "/api/v1/agents/bob/pause", "agent", json={"reason": "x"}))[0] == 403
    assert [a["data"]["result"] for a in await audit(live)] == ["forbidden_role"] * 8 + ["forbidden_role", "ok",
                                                                                       "forbidden_role"]


async def test_a_queue_scoped_token_sees_and_acts_on_its_queues_only(live):
    live.queue_call("s1", "sales")
    status, queues = await live.call("GET", "/api/v1/queues", "billing_supervisor")
    assert [q["id"] for q in queues["queues"]] == ["billing"]
    status, agents = await live.call("GET", "/api/v1/agents", "billing_supervisor")
    assert sorted(a["id"] for a in agents["agents"]) == ["ann"]                 # cid's billing 3 < 5
    assert (await live.call("GET", "/api/v1/calls", "billing_supervisor"))[1] == {"calls": []}
    status, body = await live.call("POST", "/api/v1/calls/s1/priority", "billing_supervisor", json={"priority": 3})
    assert (status, body["error"]) == (404, "unknown_call")
    status, body = await live.call("POST", "/api/v1/agents/bob/pause", "billing_supervisor", json={})
    assert (status, body["error"]) == (404, "unknown_agent")
    assert (await live.call("POST", "/api/v1/agents/ann/pause", "billing_supervisor", json={}))[0] == 200


# --- every action --------------------------------------------------------------------

async def test_agent_actions_log_in_out_pause_resume_and_are_audited(live):
    status, body = await live.call("POST", "/api/v1/agents/bob/pause", "supervisor", json={"reason": "coaching"})
    assert (status, body["state"], body["reason"]) == (200, "paused", "coaching")
    status, body = await live.call("POST", "/api/v1/agents/bob/resume", "supervisor")
    assert (status, body["state"]) == (200, "available")
    status, body = await live.call("POST", "/api/v1/agents/bob/logout", "supervisor")
    assert (status, body["state"]) == (200, "logged_out")
    status, body = await live.call("POST", "/api/v1/agents/bob/login", "admin")
    assert (status, body["state"]) == (200, "available")
    trail = await audit(live)
    assert [(a["agent"], a["data"]["action"], a["data"]["by"], a["data"]["role"], a["data"]["result"])
            for a in trail] == [("bob", "agent.pause", "env#2", "supervisor", "ok"),
                                ("bob", "agent.resume", "env#2", "supervisor", "ok"),
                                ("bob", "agent.logout", "env#2", "supervisor", "ok"),
                                ("bob", "agent.login", "env#3", "admin", "ok")]
    assert trail[0]["data"]["reason"] == "coaching" and len(trail[0]["data"]["token"]) == 12


async def test_the_agent_view_actions_ready_pause_wrap_up_on_its_own_agent(live):
    status, body = await live.call("POST", "/api/v1/agents/ann/pause", "agent", json={"reason": "break"})
    assert (status, body["state"]) == (200, "paused")
    status, body = await live.call("POST", "/api/v1/agents/ann/ready", "agent")
    assert (status, body["state"]) == (200, "available")
    live.queue_call("b1", "billing")                              # ann is offered it
    live.pbx.submit(AgentAnswered("b1", "ann"))
    live.pbx.submit(CallFinished("b1"))
    assert await state_of(live, "ann") == "wrap_up"
    status, body = await live.call("POST", "/api/v1/agents/ann/wrapup", "agent")
    assert (status, body["state"]) == (200, "available")
    status, body = await live.call("POST", "/api/v1/agents/ann/wrapup", "agent")
    assert (status, body["error"]) == (409, "agent_not_in_wrap_up")
    status, body = await live.call("POST", "/api/v1/agents/ann/logout", "agent")
    assert (status, body["state"]) == (200, "logged_out")
    status, body = await live.call("POST", "/api/v1/agents/ann/ready", "agent")
    assert (status, body["state"]) == (200, "available")


async def test_call_priority_and_move_keep_the_place(live):
    for agent in ("bob", "cid"):
        await live.call("POST", f"/api/v1/agents/{agent}/pause", "supervisor", json={"reason": "meeting"})
    live.queue_call("t1", "tech")
    live.queue_call("s1", "sales")
    live.queue_call("t2", "tech")
    status, body = await live.call("POST", "/api/v1/calls/t2/priority", "supervisor", json={"priority": 7})
    assert (status, body["priority"]) == (200, 7)
    status, body = await live.call("POST", "/api/v1/calls/s1/move", "supervisor", json={"queue": "tech"})
    assert (status, body["queue"]) == (200, "tech")
    status, calls = await live.call("GET", "/api/v1/calls", "viewer")
    assert [(c["call_id"], c["place"]) for c in calls["calls"]] == [("t2", 1), ("t1", 2), ("s1", 3)]


async def test_a_supervisor_cancels_a_callback_by_delete(live):
    await live.call("POST", "/api/v1/agents/ann/pause", "supervisor", json={"reason": "meeting"})
    live.queue_call("b1", "billing", caller="+447700900555")
    live.pbx.submit(CallbackAccepted("b1", "+447700900555"))
    status, callbacks = await live.call("GET", "/api/v1/callbacks", "viewer")
    assert [(c["call_id"], c["number"], c["state"]) for c in callbacks["callbacks"]] == [
        ("b1", "+447700900555", "waiting")]
    assert (await live.call("DELETE", "/api/v1/callbacks/b1", "viewer"))[0] == 403
    status, body = await live.call("DELETE", "/api/v1/callbacks/b1", "supervisor")
    assert (status, body["ok"]) == (200, True)
    assert (await live.call("GET", "/api/v1/callbacks", "viewer"))[1] == {"callbacks": []}
    status, body = await live.call("DELETE", "/api/v1/callbacks/b1", "supervisor")
    assert (status, body["error"]) == (404, "unknown_callback")


async def test_flows_reload_and_monitoring_in_the_demo(live):
    status, body = await live.call("POST", "/api/v1/flows/reload", "admin")
    assert status == 200 and body["ok"] is True and body["errors"] == []
    live.queue_call("t1", "tech")
    agent = "bob" if await state_of(live, "bob") == "reserved" else "cid"
    live.pbx.submit(AgentAnswered("t1", agent))
    status, body = await live.call("POST", f"/api/v1/agents/{agent}/monitor", "supervisor",
                                   json={"supervisor": "PJSIP/2001", "mode": "listen"})
    assert (status, body["error"]) == (409, "monitor_unavailable")


# --- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body,status,error", [
    ("POST", "/api/v1/agents/zed/pause", {"reason": "x"}, 404, "unknown_agent"),
    ("POST", "/api/v1/agents/bob/fly", None, 404, "not_found"),
    ("POST", "/api/v1/calls/nope/priority", {"priority": 1}, 404, "unknown_call"),
    ("POST", "/api/v1/calls/nope/move", {"queue": "tech"}, 404, "unknown_call"),
    ("DELETE", "/api/v1/callbacks/nope", None, 404, "unknown_callback"),
    ("POST", "/api/v1/agents/bob/pause", "{not json", 400, "malformed_json"),
    ("POST", "/api/v1/agents/bob/pause", "[1, 2]", 400, "invalid_body"),
    ("POST", "/api/v1/agents/bob/pause", {"reason": "x; DROP TABLE events"}, 422, "invalid_reason"),
    ("POST", "/api/v1/agents/bob/pause", {"reason": 5}, 422, "invalid_reason"),
    ("POST", "/api/v1/agents/bob/resume", None, 409, "agent_not_paused"),
    ("POST", "/api/v1/calls/w1/priority", {"priority": "high"}, 422, "invalid_priority"),
    ("POST", "/api/v1/calls/w1/priority", {"priority": 1000}, 422, "invalid_priority"),
    ("POST", "/api/v1/calls/w1/priority", {}, 422, "missing_field"),
    ("POST", "/api/v1/calls/w1/move", {"queue": "nowhere"}, 422, "unknown_queue"),
    ("POST", "/api/v1/calls/w1/move", {"queue": "sales"}, 409, "refused"),          # already there
    ("POST", "/api/v1/agents/bob/monitor", {"supervisor": "PJSIP/2001\r\nAction: Hangup", "mode": "listen"},
     422, "invalid_endpoint"),
    ("POST", "/api/v1/agents/bob/monitor", {"supervisor": "PJSIP/2001", "mode": "steal"}, 422, "invalid_mode"),
    ("POST", "/api/v1/agents/bob/monitor", {"supervisor": "PJSIP/2001"}, 409, "agent_not_on_call"),
])
async def test_bad_requests_get_a_clear_json_error_and_change_nothing(live, method, path, body, status, error):
    live.queue_call("w1", "sales")
    before = await live.call("GET", "/api/v1/agents", "viewer"), await live.call("GET", "/api/v1/calls", "viewer")
    kwargs = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else \
        {"json": body}
    got_status, got = await live.call(method, path, "supervisor", **kwargs)
    assert (got_status, got["error"]) == (status, error), got
    assert isinstance(got["message"], str) and got["message"]
    after = await live.call("GET", "/api/v1/agents", "viewer"), await live.call("GET", "/api/v1/calls", "viewer")
    assert after == before


async def test_a_move_to_a_queue_no_agent_can_serve_is_refused(live):
    for agent in ("bob", "cid"):
        await live.call("POST", f"/api/v1/agents/{agent}/pause", "supervisor", json={})
    live.queue_call("w1", "tech")
    status, body = await live.call("POST", "/api/v1/calls/w1/move", "supervisor", json={"queue": "sales"})
    assert (status, body["error"]) == (409, "refused") and "no agent has the skills" in body["message"]
    status, calls = await live.call("GET", "/api/v1/calls", "viewer")
    assert [(c["call_id"], c["queue"]) for c in calls["calls"]] == [("w1", "tech")]


# --- sessions, stream, metrics, audit ------------------------------------------------

async def test_sign_in_sets_a_strict_http_only_cookie_and_cross_site_posts_are_refused(live):
    async with live.http.post(live.url + "/login", data={"token": "wrong-token-000000000"},
                              allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (303, "/login?failed=1")
    async with live.http.post(live.url + "/login", data={"token": TOKENS["supervisor"]},
                              allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (303, "/")
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKENS["supervisor"] not in cookie
    status, page = await live.call("GET", "/")
    assert status == 200 and "<html" in page.lower()
    assert (await live.call("GET", "/api/v1/queues"))[0] == 200
    status, body = await live.call("POST", "/api/v1/agents/bob/pause", json={},
                                   headers={"Origin": "https://evil.example"})
    assert (status, body["error"]) == (403, "cross_origin")
    assert await state_of(live, "bob") == "available"
    async with live.http.post(live.url + "/logout", allow_redirects=False) as response:
        assert response.status == 303
    assert (await live.call("GET", "/api/v1/queues"))[0] == 401


async def test_the_stream_starts_with_a_snapshot_and_pushes_an_action(live):
    headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
    async with live.http.get(live.url + "/api/v1/stream", headers=headers) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        messages = _sse(stream)
        first = await asyncio.wait_for(anext(messages), 5)
        assert first["type"] == "snapshot" and set(first["set"]["agents"]) == {"ann", "bob", "cid"}
        bob = first["set"]["agents"]["bob"]["state"]
        async with asyncio.timeout(5):                 # the board as last pushed, then what changed
            while bob != "available":
                bob = (await anext(messages))["set"].get("agents", {}).get("bob", {}).get("state", bob)
        await live.call("POST", "/api/v1/agents/bob/pause", "supervisor", json={"reason": "lunch"})
        async with asyncio.timeout(5):
            async for message in messages:
                bob = message["set"].get("agents", {}).get("bob")
                if bob is not None:
                    assert (bob["state"], bob["reason"]) == ("paused", "lunch")
                    break


async def test_a_viewer_that_does_not_read_is_dropped_and_routing_goes_on(live):
    hub = live.web.hub
    principal = live.web.tokens.check(TOKENS["viewer"])
    viewer, _ = hub.join(principal)
    for n in range(VIEWER_BUFFER + 2):                      # every tick has a change, nobody reads
        live.queue_call(f"c{n}", "sales")
        hub.tick()
    assert viewer.dropped and viewer not in hub.viewers and hub.dropped_viewers == 1
    assert len(live.pbx.engine.waiting("sales")) == VIEWER_BUFFER + 2


async def test_metrics_show_waiting_callers_and_sl_buckets_without_call_ids(live):
    for agent in ("bob", "cid"):
        await live.call("POST", f"/api/v1/agents/{agent}/pause", "supervisor", json={})
    live.queue_call("secret-call-id-1", "tech", caller="+447700900999")
    status, text = await live.call("GET", "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert 'acd_queue_calls_waiting{queue="tech"} 1.0' in lines
    assert 'acd_queue_calls_offered_total{queue="tech"} 1.0' in lines
    assert 'acd_agents{queue="tech",state="paused"} 2.0' in lines
    assert any(line.startswith('acd_queue_wait_seconds_bucket{le="45.0",queue="tech"}') for line in lines)
    for name in ("acd_queue_oldest_wait_seconds", "acd_callbacks_pending", "acd_events_spooled", "acd_ami_up",
                 "acd_event_loop_lag_seconds_bucket", "process_cpu_seconds_total"):
        assert any(line.startswith(name) for line in lines), name
    assert "secret-call-id-1" not in text and "+447700900999" not in text


async def test_health_and_metrics_show_the_routers_role_in_its_group(live):
    assert await live.call("GET", "/healthz") == (200, {"ok": True, "role": "leader"})
    _, text = await live.call("GET", "/metrics")
    assert "acd_router_leader 1.0" in text.splitlines()
    live.web.board.role = lambda: "standby"              # what a waiting member of an HA group reports
    assert await live.call("GET", "/healthz") == (200, {"ok": True, "role": "standby"})
    _, text = await live.call("GET", "/metrics")
    assert "acd_router_leader 0.0" in text.splitlines()
    assert live.web.board.view(live.pbx.now())["meta"]["board"]["role"] == "standby"


async def test_no_token_is_ever_stored_or_logged(live, capsys):
    await live.call("POST", "/api/v1/agents/bob/pause", "supervisor", json={})
    await live.call("POST", "/api/v1/agents/bob/pause", "viewer", json={})
    trail = await audit(live)
    assert trail and all(TOKENS[name] not in json.dumps(a) for a in trail for name in TOKENS)
    captured = capsys.readouterr()
    assert all(TOKENS[name] not in captured.out + captured.err for name in TOKENS)


async def _sse(stream):
    async for line in stream.content:
        if line.startswith(b"data: "):
            yield json.loads(line[6:])
