"""Call-backs and the hold experience through the real Asterisk, recorded in PostgreSQL.

A caller joins `sales`, presses the call-back key on hold (``LATER_DIGITS`` of
``[test-caller]``: "1111", 1.5 s apart, so a key lost while an AGI starts on a
slow machine is made up by the next) and takes a call-back in the offer flow,
then hangs up.  The
call-back keeps its place in the router and in the `callbacks` table; when an
agent is free it is dialled agent first: ``Local/8001@agents`` answers and
stays, hears the whisper, then the router's dialplan dials the customer at
``Local/<number>@customers`` (numbers starting 99 never answer).  The kill test
runs ``acd-router serve`` as a process and SIGKILLs it while the call-back
waits.  Timeouts only guard against hangs; nothing asserts on wall time.
"""
from __future__ import annotations

import asyncio
import itertools
import signal
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog

from router.config.model import CallbackPolicy, HoldPolicy
from router.store.database import connect
from router.store.kpi import compute_kpis
from router.store.writer import EventWriter
from router.pbx.ami import AmiLink

from tests.asterisk.harness import Sandbox
from tests.asterisk.test_call_flows import (CALL_TIMEOUT_S, FLOW, OFFER_FLOW, PROMPTS, Router, queue,
                                            running_router, start_serve, types)

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="session")]

_numbers = itertools.count(7501)     # test_call_flows' callers count from 7001
TEST_POLICY = dict(min_digits=4, dial="Local/{number}@customers", whisper=None)


def callback_queues(**policy) -> list:
    return [queue("sales", {"sales": 1}, wrap_up_s=0.5, ring_timeout_s=8.0,
                  callback=CallbackPolicy(**{**TEST_POLICY, **policy}), hold=HoldPolicy(announce_s=0)),
            queue("support", {"support": 1}), queue("overflow", {"sales": 1})]


async def callback_row(dsn: str, call_id: str):
    conn = await connect(dsn)
    try:
        return await conn.fetchrow("SELECT status, attempts, number FROM callbacks WHERE call_id = $1", call_id)
    finally:
        await conn.close()


async def wait_for_call(router: Router, call_id: str, event_type: str, count: int = 1) -> list:
    """The events of `call_id` once `count` of `event_type` are among them."""
    async with asyncio.timeout(CALL_TIMEOUT_S):
        while True:
            await router.writer.flush()
            conn = await connect(router.dsn)
            try:
                events = await conn.fetch("SELECT type, queue, agent, data FROM events WHERE call_id = $1"
                                          " ORDER BY ts, id", call_id)
            finally:
                await conn.close()
            if sum(1 for e in events if e["type"] == event_type) >= count:
                return events
            await asyncio.sleep(0.2)


async def test_customer_who_never_answers_is_retried_then_given_up(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"8001": {"sales": 5}}
    queues = callback_queues(retry_s=1.0, max_attempts=2)
    async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=(),
                              extra_flows={"callback_offer.yaml": OFFER_FLOW}) as router:
        caller = await router.call("1", later_digits="1111", later_s=3, hold_s=30, number="990001")
        call_id = (await router.wait_for(caller, "callback.accepted"))[0]["call_id"]
        assert (await callback_row(schema, call_id))["status"] == "pending"
        await router.adapter.login("8001")
        events = await wait_for_call(router, call_id, "call.ended")
    failed = [e["data"] for e in events if e["type"] == "callback.failed"]
    assert [(f["attempt"], f["final"], f["reason"]) for f in failed] == [(1, False, "no_answer"),
                                                                           (2, True, "no_answer")]
    assert [e["data"]["agent_first"] for e in events if e["type"] == "callback.dialing"] == [True, True]
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "callback_failed"
    assert "call.abandoned" not in types(events)
    row = await callback_row(schema, call_id)
    assert (row["status"], row["attempts"]) == ("failed", 2)


async def test_waiting_caller_hears_announcements_and_leaves_by_key(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"1001": {"sales": 5}}
    queues = [queue("sales", {"sales": 1}, hold=HoldPolicy(announce_s=2, leave_key="0",
                                                           leave_mailbox="100@default")),
              queue("support", {"support": 1}), queue("overflow", {"sales": 1})]
    with structlog.testing.capture_logs() as logs:
        async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=()) as router:
            caller = await router.call("1", later_digits="0", later_s=7, hold_s=12,
                                       number=str(next(_numbers)))
            events = await router.wait_for(caller, "call.ended")
    assert types(events) == ["call.arrived", "queue.joined", "call.ended"]
    ended = next(e for e in events if e["type"] == "call.ended")["data"]
    assert (ended["outcome"], ended["to"]) == ("left", "voicemail")
    announced = [entry for entry in logs if entry["event"] == "adapter.announced"]
    assert announced and all(entry["position"] == 1 for entry in announced)    # every 2 s on hold


SERVE_CONFIG = textwrap.dedent("""\
    skills:
      - {id: sales, name: Sales}
      - {id: support, name: Support}
    agents:
      - {id: "8001", name: Agent Stays, endpoint: Local/8001@agents, skills: {sales: 5}}
    queues:
      - id: sales
        name: Sales
        skills: {sales: 1}
        wrap_up_s: 1
        ring_timeout_s: 10
        hold: {announce_s: 0}
        callback: {min_digits: 4, dial: "Local/{number}@customers", retry_s: 2}
      - {id: support, name: Support, skills: {support: 1}}
      - {id: overflow, name: Overflow, skills: {sales: 1}}
    ami: {host: 127.0.0.1, port: 5038, username: acd-router, secret: "${ACD_AMI_SECRET}"}
    agi: {host: 127.0.0.1, port: 4573}
    flows: flows
    """)


async def test_callback_survives_a_router_kill_and_is_dialled_agent_first(
        asterisk: Sandbox, own_schema: str, tmp_path: Path) -> None:
    schema = own_schema                 # serve takes over what the store's "live" run holds
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    (flows / "callback_offer.yaml").write_text(OFFER_FLOW)
    (flows / "prompts.yaml").write_text(PROMPTS)
    (tmp_path / "router.yaml").write_text(SERVE_CONFIG)
    started = datetime.now(timezone.utc)
    link = AmiLink(asterisk.host, asterisk.ami_port, asterisk.ami_username, asterisk.ami_secret)
    writer = EventWriter(schema, spool_dir=tmp_path / "spool")
    first = await start_serve(tmp_path, schema, asterisk.ami_secret)           # no agent logged in
    second = None
    try:
        await link.start()
        await writer.start()
        router = Router(None, link, writer, schema)          # type: ignore[arg-type]
        caller = await router.call("1", later_digits="1111", later_s=3, hold_s=30, talk_s=3,
                                     number=str(next(_numbers)))
        events = await router.wait_for(caller, "callback.accepted")
        call_id = events[0]["call_id"]
        assert (await callback_row(schema, call_id))["status"] == "pending"
        first.kill()                                          # a crash: no drain, no goodbye
        await first.wait()
        second = await start_serve(tmp_path, schema, asterisk.ami_secret, "8001")
        events = await wait_for_call(router, call_id, "call.ended")
        second.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(second.communicate(), CALL_TIMEOUT_S)
        assert second.returncode == 0, stderr.decode()[-2000:]
        conn = await connect(schema)
        try:
            kpis = await compute_kpis(conn, start=started)
        finally:
            await conn.close()
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await link.close()
        await writer.close()
    assert types(events) == ["call.arrived", "queue.joined", "callback.offered", "callback.accepted",
                             "agent.offered", "callback.dialing", "call.connected", "callback.connected",
                             "call.ended"]
    dialing = next(e for e in events if e["type"] == "callback.dialing")
    assert (dialing["agent"], dialing["data"]["agent_first"], dialing["data"]["attempt"]) == ("8001", True, 1)
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"
    assert (await callback_row(schema, call_id))["status"] == "completed"
    sales = kpis["queues"]["sales"]
    assert (sales["callbacks_accepted"], sales["callbacks_completed"], sales["abandoned"]) == (1, 1, 0)


async def test_agent_who_does_not_answer_a_callback_is_skipped_without_using_an_attempt(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"9001": {"sales": 9}, "8001": {"sales": 1}}             # 9001 rings and never answers
    queues = [queue("sales", {"sales": 1}, strategy="most-skilled", wrap_up_s=0.5, ring_timeout_s=4.0,
                    callback=CallbackPolicy(**TEST_POLICY), hold=HoldPolicy(announce_s=0)),
              queue("support", {"support": 1}), queue("overflow", {"sales": 1})]
    async with running_router(asterisk, schema, tmp_path, queues, agents, logged_in=(),
                              extra_flows={"callback_offer.yaml": OFFER_FLOW}) as router:
        caller = await router.call("1", later_digits="1111", later_s=3, hold_s=30, number=str(next(_numbers)))
        call_id = (await router.wait_for(caller, "callback.accepted"))[0]["call_id"]
        await router.adapter.login("9001")
        await router.adapter.login("8001")
        events = await wait_for_call(router, call_id, "call.ended")
    assert [e["agent"] for e in events if e["type"] == "agent.no_answer"] == ["9001"]
    assert [(e["agent"], e["data"]["attempt"]) for e in events if e["type"] == "callback.dialing"] == [
        ("9001", 1), ("8001", 1)]
    assert [e["agent"] for e in events if e["type"] == "callback.connected"] == ["8001"]
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"


async def test_customer_first_callback_dials_the_customer_then_the_agent(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    agents = {"8001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, callback_queues(customer_first=True), agents,
                              logged_in=(), extra_flows={"callback_offer.yaml": OFFER_FLOW}) as router:
        caller = await router.call("1", later_digits="1111", later_s=3, hold_s=30, talk_s=2,
                                   number=str(next(_numbers)))
        call_id = (await router.wait_for(caller, "callback.accepted"))[0]["call_id"]
        await router.adapter.login("8001")
        events = await wait_for_call(router, call_id, "call.ended")
    dialing = next(e for e in events if e["type"] == "callback.dialing")
    assert (dialing["agent"], dialing["data"]["agent_first"]) == ("8001", False)
    assert types(events)[-3:] == ["call.connected", "callback.connected", "call.ended"]
    assert next(e for e in events if e["type"] == "call.ended")["data"]["outcome"] == "answered"


async def test_scheduled_callback_keeps_its_slot_even_with_an_agent_free(
        asterisk: Sandbox, schema: str, tmp_path: Path) -> None:
    """The offer flow's "3" takes a call-back at the next 10:00 (UTC: the test flow has no zone)."""
    agents = {"8001": {"sales": 5}}
    async with running_router(asterisk, schema, tmp_path, callback_queues(), agents, logged_in=(),
                              extra_flows={"callback_offer.yaml": OFFER_FLOW}) as router:
        caller = await router.call("1", later_digits="1313", later_s=3, hold_s=30, number=str(next(_numbers)))
        accepted = next(e for e in await router.wait_for(caller, "callback.accepted")
                        if e["type"] == "callback.accepted")
        await router.adapter.login("8001")
        await asyncio.sleep(2.0)                   # time enough for a (wrong) dial to begin
        events = await router.events(caller)
        runtime = router.adapter.engine.calls[accepted["call_id"]]
        row = await callback_row(schema, accepted["call_id"])
    now = datetime.now(timezone.utc)
    due = datetime.fromtimestamp(accepted["data"]["due_at"], timezone.utc)
    assert (due.hour, due.minute) == (10, 0) and now < due <= now + timedelta(days=1)
    assert runtime.callback is not None and runtime.callback.due_at == accepted["data"]["due_at"]
    assert "callback.dialing" not in types(events) and row["status"] == "pending"
