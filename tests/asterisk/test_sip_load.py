"""Real SIP through the sandbox Asterisk: SIPp callers and SIPp agents, routed by the router and by app_queue.

benchmarks/sip_load.py's machinery at a small size.  The SIPp agents (one UAS
at 127.0.0.3:5070 answering for PJSIP/3001..3020, one at 5071 that rings and
never answers for 3901/3902) run for the whole test.  Through the router (in
process, benchmarks/sip_centre.yaml with a 5 s ring and RONA pause, agents
3001-3003 and the never-answering 3901 logged in, a database of its own):
nine callers of benchmarks/sip/menu.xml on DID 5001 press 1 by RFC 2833 DTMF,
and one caller of abandon.xml on DID 5002 (a queue nobody serves) hangs up
after 4 s.  The events table must show: each menu caller answered exactly once
and in queue `support` (the key reached the IVR), the abandoning caller
abandoned, and 3901's no-answer.  Then three callers on DID 6000 through
app_queue's Queue(bench-sip) must all be bridged to an agent.  It binds the
FastAGI port and SIP loopback ports, so it must not run beside another
Asterisk test session.  Timeouts only guard against hangs.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from router.config import check_config
from router.store.database import connect

from tests.asterisk.harness import Sandbox

from benchmarks import sip_load      # benchmarks/ as a namespace package from the repository

pytestmark = pytest.mark.asterisk

MENU_CALLS = 9
LOGIN = ("3001", "3002", "3003", "3901")


def test_sipp_is_installed() -> None:
    assert sip_load.sipp_available(), "sipp not found: apt-get install sip-tester (.ci/run installs it)"


async def _events(dsn: str, prefix: str) -> dict[str, list[dict]]:
    """Every event of the calls whose caller number starts with `prefix`, by call id, in order."""
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT call_id, type, queue, agent, data FROM events WHERE call_id IN ("
            " SELECT call_id FROM events WHERE type = 'call.arrived' AND data->>'caller_id' LIKE $1)"
            " ORDER BY ts, id", prefix + "%")
    finally:
        await conn.close()
    calls: dict[str, list[dict]] = {}
    for row in rows:
        calls.setdefault(row["call_id"], []).append(dict(row))
    return calls


async def _router_run(dsn: str, workdir: Path) -> tuple[dict, sip_load.SippRun, dict, dict]:
    centre, problems = check_config(sip_load.CENTRE)
    assert centre is not None and centre.ami is not None, [str(p) for p in problems]
    centre = dataclasses.replace(centre, queues={
        qid: dataclasses.replace(q, ring_timeout_s=5.0, rona_pause=True) for qid, q in centre.queues.items()})
    menu_prefix, abandon_prefix = sip_load.new_prefix(), sip_load.new_prefix()
    from router.pbx.service import Service

    async with sip_load.sip_agents(workdir / "agents", centre.ami, talk_s=3.0, ring_ms=200):
        service = Service(centre, auto_login=LOGIN, drain_timeout_s=30.0)
        try:
            await service.start()
            (menu, _, _), abandon = await asyncio.gather(
                sip_load.measure_side(centre.ami, workdir / "menu", "menu.xml", "5001", calls=MENU_CALLS, cps=2,
                                      patience_s=60, prefix=menu_prefix),
                sip_load.run_uac(workdir / "abandon", "abandon.xml", "5002", calls=1, cps=1, prefix=abandon_prefix,
                                 port=5064, media_port=40010, patience_s=10,
                                 variables={"abandon_ms": 4000}))
        finally:
            await service.stop()
        app = await sip_load.app_queue_side(centre.ami, workdir / "app_queue", calls=3, cps=2, patience_s=30)
    return menu, abandon, await _events(dsn, menu_prefix), {
        "abandon": await _events(dsn, abandon_prefix), "app_queue": app}


def test_sip_load_through_the_router_and_app_queue(asterisk: Sandbox, own_schema: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert sip_load.sipp_available(), "sipp not found: apt-get install sip-tester"
    monkeypatch.setenv("ACD_DATABASE_URL", own_schema)
    menu, abandon, menu_calls, other = asyncio.run(asyncio.wait_for(_router_run(own_schema, tmp_path), 150))

    # SIPp's view: every menu caller's call completed (BYE from Asterisk when the agent hung up).
    assert (menu["calls"], menu["failed"], menu["answered"]) == (MENU_CALLS, 0, MENU_CALLS)
    assert menu["post_dial_delay_ms"]["p50"] is not None and menu["answer_to_agent_ms"]["p50"] is not None
    assert (abandon.successful, abandon.failed) == (1, 0)

    # The router's events: each menu caller answered exactly once, in the queue key 1 chose.
    assert len(menu_calls) == MENU_CALLS
    for events in menu_calls.values():
        types = [e["type"] for e in events]
        assert types.count("call.connected") == 1, types
        assert [e["queue"] for e in events if e["type"] == "queue.joined"] == ["support"], types
        assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"
        assert next(e for e in events if e["type"] == "call.connected")["agent"] in LOGIN[:3]
    no_answers = [e for events in menu_calls.values() for e in events if e["type"] == "agent.no_answer"]
    assert [e["agent"] for e in no_answers] == ["3901"], no_answers

    # The abandoning caller.
    (abandoned,) = other["abandon"].values()
    types = [e["type"] for e in abandoned]
    assert "call.abandoned" in types and "call.connected" not in types, types
    assert [e["queue"] for e in abandoned if e["type"] == "queue.joined"] == ["unstaffed"]

    # app_queue on the same SIP agents.
    app = other["app_queue"]
    assert (app["calls"], app["failed"], app["answered"]) == (3, 0, 3), app
    assert app["answer_to_agent_ms"]["p50"] is not None and app["asterisk_cpu_s_per_call"] >= 0
