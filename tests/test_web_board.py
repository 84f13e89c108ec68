"""The live board: "today" comes from PostgreSQL (a restart does not zero it) plus the events
seen since; AHT counts a call once its wrap-up is over; alarms; what a scoped token sees."""
from __future__ import annotations

import asyncpg
import pytest

from router.config import load_config
from router.engine.engine import Engine
from router.engine.messages import AgentAnswered, CallFinished
from router.events import Event
from router.web.auth import Principal
from router.web.board import Board, diff, visible
from tests.web_harness import start_live, stop_live, write_centre

@pytest.fixture
def board(tmp_path) -> Board:
    centre = load_config(write_centre(tmp_path), environ={})
    return Board(centre, Engine(centre), mode="test")


def state(ts, agent, new, previous, previous_s):
    return Event(ts, "agent.state", agent=agent, data={"state": new, "previous": previous,
                                                        "previous_s": previous_s, "reason": None})


def test_aht_counts_a_call_when_its_wrap_up_ends_not_while_it_runs(board):
    board.observe(Event(1000.0, "queue.joined", call_id="c1", queue="billing", data={"caller_id": "+44"}))
    board.observe(Event(1005.0, "call.connected", call_id="c1", queue="billing", agent="ann", data={"wait_s": 5}))
    board.observe(state(1005.0, "ann", "on_call", "reserved", 5.0))
    ann = board.view(1010.0)["agents"]["ann"]
    assert (ann["calls_today"], ann["aht_today_s"]) == (1, None)          # talking: no AHT yet
    board.observe(state(1125.0, "ann", "wrap_up", "on_call", 120.0))
    assert board.view(1130.0)["agents"]["ann"]["aht_today_s"] is None
    board.observe(state(1155.0, "ann", "available", "wrap_up", 30.0))
    ann = board.view(1160.0)["agents"]["ann"]
    assert (ann["calls_today"], ann["aht_today_s"]) == (1, 150.0)
    queue = board.view(1160.0)["queues"]["billing"]
    assert (queue["offered"], queue["answered"]) == (1, 1)


def test_alarms_for_a_long_wait_a_long_pause_and_a_store_outage(tmp_path):
    from router.engine.messages import AgentLogin, AgentPause, CallQueued
    centre = load_config(write_centre(tmp_path), environ={})
    engine = Engine(centre)
    spooled = [0]
    board = Board(centre, engine, mode="test", spooled=lambda: spooled[0])
    engine.handle(CallQueued("c1", "sales"), 0.0)
    engine.handle(AgentLogin("bob"), 0.0)
    engine.handle(AgentPause("bob", "lunch"), 0.0)
    assert board.view(59.0)["alarms"] == {}
    assert set(board.view(61.0)["alarms"]) == {"wait:sales"}                  # caller_wait_s: 60
    assert set(board.view(301.0)["alarms"]) == {"wait:sales", "pause:bob"}     # agent_paused_min: 5
    spooled[0] = 12
    assert "12 events spooled" in board.view(301.0)["alarms"]["spool"]["text"]


def test_a_scoped_token_sees_its_queues_their_calls_and_their_agents(board):
    from router.engine.messages import CallQueued
    board.engine.handle(CallQueued("s1", "sales"), 0.0)
    board.engine.handle(CallQueued("b1", "billing"), 0.0)
    view = board.view(1.0)
    billing_lead = Principal("lead", "supervisor", "x" * 12, frozenset({"billing"}))
    agent_queues = {a: r.queues for a, r in board.engine.agents.items()}
    seen = visible(billing_lead, view, agent_queues)
    assert (set(seen["queues"]), set(seen["calls"]), set(seen["agents"])) == ({"billing"}, {"b1"}, {"ann"})
    ann = Principal("ann", "agent:ann", "y" * 12)
    seen = visible(ann, view, agent_queues)
    assert (set(seen["agents"]), set(seen["calls"]), set(seen["queues"])) == ({"ann"}, set(), {"billing"})
    board.engine.handle(CallQueued("b2", "billing"), 2.0)
    delta = diff(view, board.view(3.0))
    assert set(delta["set"]["calls"]) == {"b2"} and "s1" not in delta["set"].get("calls", {})


@pytest.mark.postgres
@pytest.mark.asyncio(loop_scope="session")
async def test_today_survives_a_restart_because_it_is_read_from_postgresql(tmp_path, database_url):
    first = await start_live(tmp_path, database_url)
    run = first.run
    try:
        for agent in ("bob", "cid"):
            await first.call("POST", f"/api/v1/agents/{agent}/pause", "supervisor", json={})
        for n in range(3):
            first.queue_call(f"s{n}", "sales")
        first.queue_call("b1", "billing")
        first.pbx.submit(AgentAnswered("b1", "ann"))
        first.pbx.submit(CallFinished("b1"))
        before = first.web.board.view(first.pbx.now())
        assert (before["queues"]["sales"]["offered"], before["queues"]["billing"]["answered"]) == (3, 1)
    finally:
        await stop_live(first)
    second = await start_live(tmp_path, database_url, run=run)         # a new process: a fresh engine
    try:
        assert second.web.board.view(second.pbx.now())["queues"]["sales"]["offered"] == 0
        conn = await asyncpg.connect(database_url)
        try:
            await second.web.refresh_once(conn, None)
        finally:
            await conn.close()
        after = second.web.board.view(second.pbx.now())
        assert (after["queues"]["sales"]["offered"], after["queues"]["billing"]["answered"]) == (3, 1)
        assert after["agents"]["ann"]["calls_today"] == 1
        second.queue_call("s9", "sales")                              # and live events add on top
        assert second.web.board.view(second.pbx.now())["queues"]["sales"]["offered"] == 4
        assert len(after["intraday"]["sales"]["today"]) >= 1
    finally:
        await stop_live(second)
