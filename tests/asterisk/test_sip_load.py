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


def test_junk_at_the_trunk_does_not_stop_good_calls(asterisk: Sandbox, own_schema: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An OPTIONS flood from two sources and ten kinds of malformed INVITE beside six good callers."""
    monkeypatch.setenv("ACD_DATABASE_URL", own_schema)
    invites = 5
    result = asyncio.run(asyncio.wait_for(sip_load.junk(6, 2, 300, 100, invites, 2, talk_s=1.0, data_dir=None,
                                                        workdir=tmp_path), 180))
    good = result["good"]
    assert (good["calls"], good["failed"], good["answered"]) == (6, 0, 6), good
    junk = result["junk"]
    # The OPTIONS answered (UDP: one may be lost): challenged from an unknown address, 200 from the trunk.
    for source, code in (("options_unknown_source", "401"), ("options_from_trunk", "200")):
        answers = junk[source]["answers"]
        assert set(answers) == {code} and answers[code] >= 0.95 * 300, (source, answers)
    # Malformed INVITEs: the unparseable ones get nothing, a bad body a 400 or 488; only the two
    # well-formed variants (a 3000-byte header, Max-Forwards 0 at a UAS) may become calls.
    bad = junk["malformed_invites"]
    assert bad["sent"] == invites * sip_load.INVITE_VARIANTS
    assert bad["answers"].get("400", 0) == 2 * invites and bad["answers"].get("488", 0) >= invites, bad
    assert bad["channels"] <= 2 * invites, bad


async def _callback_run(dsn: str, workdir: Path) -> tuple[sip_load.SippRun, sip_load.SippRun, dict[str, list[dict]]]:
    centre, problems = check_config(sip_load.CENTRE)
    assert centre is not None and centre.ami is not None, [str(p) for p in problems]
    busy_prefix, callback_prefix = sip_load.new_prefix(), sip_load.new_prefix()
    from router.pbx.service import Service

    # the agent talks 10 s: long enough for the call-back leg, which reads the number (about 6 s) first
    async with sip_load.sip_agents(workdir / "agents", centre.ami, talk_s=10.0, ring_ms=200, wait_for=("3020",)), \
            sip_load.sip_customers(workdir / "customers", talk_s=30.0):
        service = Service(centre, auto_login=("3020",), drain_timeout_s=30.0)
        try:
            await service.start()

            async def second() -> sip_load.SippRun:
                await asyncio.sleep(1.0)            # 3020 is talking to the first caller by now
                return await sip_load.run_uac(workdir / "callback", "callback.xml", "5003", calls=1, cps=1,
                                              prefix=callback_prefix, port=5064, media_port=40100, patience_s=30,
                                              variables={"patience_ms": 30000})

            busy, taken = await asyncio.gather(
                sip_load.run_uac(workdir / "busy", "queue.xml", "5003", calls=1, cps=1, prefix=busy_prefix,
                                 patience_s=30, variables={"patience_ms": 30000}),
                second())
            events: dict[str, list[dict]] = {}
            for _ in range(300):                    # the call-back: 3020 free after 10 s of talk and 1 s wrap-up
                events = await _events(dsn, callback_prefix)
                if any(e["type"] == "callback.connected" for calls in events.values() for e in calls):
                    break
                await asyncio.sleep(0.1)
        finally:
            await service.stop()
    return busy, taken, events


def test_a_caller_on_hold_takes_a_call_back_and_gets_it_over_sip(asterisk: Sandbox, own_schema: str,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """DID 5003: the only agent (3020) talks to a first caller; the second, offered a call-back on
    hold, presses 1 and hangs up; when 3020 is free the router dials 3020, then the caller's number
    on the trunk (a SIPp UAS at 127.0.0.2:5060), and bridges them."""
    monkeypatch.setenv("ACD_DATABASE_URL", own_schema)
    busy, taken, events = asyncio.run(asyncio.wait_for(_callback_run(own_schema, tmp_path), 150))
    assert (busy.successful, busy.failed) == (1, 0)
    assert (taken.successful, taken.failed) == (1, 0)        # the BYE after the confirmation
    (call,) = events.values()
    types = [e["type"] for e in call]
    assert "callback.offered" in types and "callback.accepted" in types, types
    assert "call.connected" not in types[:types.index("callback.accepted")], types
    assert types.index("callback.dialing") < types.index("callback.connected"), types
    connected = next(e for e in call if e["type"] == "callback.connected")
    assert connected["agent"] == "3020"
