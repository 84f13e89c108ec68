"""Call-backs survive a restart: the callbacks table against a real PostgreSQL."""
from __future__ import annotations

import asyncpg
import pytest

from router.config.model import CallbackPolicy
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, CallbackAccepted, CallbackFailed, CallQueued,
                                    DialCallback)
from router.events import Event
from router.store.callbacks import DuplicateCallback, apply_events, load_open, save_accepted
from router.store.migrate import migrate
from tests.factories import centre, queue

pytestmark = pytest.mark.asyncio(loop_scope="session")      # the loop of the `conn` fixture


@pytest.fixture
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await migrate(connection)
    await connection.execute("TRUNCATE callbacks")
    yield connection
    await connection.close()


def new_engine() -> Engine:
    c = centre({"ann": {"billing": 5}}, [queue("billing", {"billing": 1}, callback=CallbackPolicy(retry_s=60.0))])
    return Engine(c)


async def accept(conn, engine, call_id, number, at):
    outputs = engine.handle(CallbackAccepted(call_id, number), at)
    await save_accepted(conn, engine.call_view(call_id))
    return outputs


async def test_pending_callbacks_come_back_in_place_order_after_a_restart(conn):
    before = new_engine()
    before.handle(CallQueued("c1", "billing", caller_id="+447700900101"), 100.0)
    before.handle(CallQueued("c2", "billing", caller_id="+447700900102"), 110.0)
    before.handle(CallQueued("c3", "billing", caller_id="+447700900103"), 120.0)
    await accept(conn, before, "c3", "+447700900103", 130.0)     # accepted first, but joined last
    await accept(conn, before, "c1", "+447700900101", 140.0)
    # the router dies here; a new one starts and loads the call-backs back
    after = new_engine()
    restored = await load_open(conn)
    assert [r.call_id for r in restored] == ["c1", "c3"]
    assert restored[0].joined_at == 100.0 and restored[0].accepted_at == 140.0
    for r in restored:
        after.handle(r, 1000.0)
    after.handle(CallQueued("fresh", "billing"), 1001.0)
    out = after.handle(AgentLogin("ann"), 1002.0)
    assert [o.call_id for o in out if isinstance(o, DialCallback)] == ["c1"]


async def test_duplicate_open_callback_is_refused_by_the_database_too(conn):
    engine = new_engine()
    engine.handle(CallQueued("c1", "billing"), 0.0)
    await accept(conn, engine, "c1", "+447700900104", 1.0)
    other = new_engine()                                        # e.g. a second router
    other.handle(CallQueued("c9", "billing"), 2.0)
    other.handle(CallbackAccepted("c9", "+447700900104"), 3.0)
    with pytest.raises(DuplicateCallback):
        await save_accepted(conn, other.call_view("c9"))


async def test_status_follows_the_events(conn):
    engine = new_engine()
    engine.handle(CallQueued("c1", "billing"), 0.0)
    await accept(conn, engine, "c1", "+447700900105", 1.0)
    events = [o for o in engine.handle(AgentLogin("ann"), 2.0) if isinstance(o, Event)]
    events += [o for o in engine.handle(AgentAnswered("c1", "ann"), 3.0) if isinstance(o, Event)]
    assert await apply_events(conn, events) == 1                # callback.dialing
    assert await conn.fetchval("SELECT status FROM callbacks") == "dialing"
    events = [o for o in engine.handle(CallbackFailed("c1", "busy"), 4.0) if isinstance(o, Event)]
    await apply_events(conn, events)
    row = await conn.fetchrow("SELECT status, attempts FROM callbacks")
    assert (row["status"], row["attempts"]) == ("pending", 1)   # retried later, still open
    assert [r.attempts for r in await load_open(conn)] == [1]
    await apply_events(conn, [Event(5.0, "callback.cancelled", "c1", "billing")])
    assert await conn.fetchval("SELECT status FROM callbacks") == "cancelled"
    assert await load_open(conn) == []
    # a closed row frees the number: a new call-back to it is accepted again
    later = new_engine()
    later.handle(CallQueued("c2", "billing"), 6.0)
    await accept(conn, later, "c2", "+447700900105", 7.0)
    assert [r.call_id for r in await load_open(conn)] == ["c2"]


async def test_due_time_is_stored_restored_and_moved_on_by_a_retry(conn):
    engine = new_engine()
    engine.handle(CallQueued("c1", "billing"), 0.0)
    outputs = engine.handle(CallbackAccepted("c1", "+447700900106", at=7200.0), 10.0)   # a slot in 2 h
    assert engine.calls["c1"].callback.due_at == 7200.0
    await save_accepted(conn, engine.call_view("c1"))
    [restored] = await load_open(conn)
    assert restored.due_at == 7200.0
    after = new_engine()                                        # restart: parked until the slot
    after.handle(restored, 100.0)
    assert [o for o in after.handle(AgentLogin("ann"), 101.0) if isinstance(o, DialCallback)] == []
    events = [o for o in outputs if isinstance(o, Event)]
    events += [o for o in after.advance(7200.0) if isinstance(o, Event)]
    assert [e.type for e in events if e.type == "callback.dialing"] == ["callback.dialing"]
    after.handle(AgentAnswered("c1", "ann"), 7201.0)
    events += [o for o in after.handle(CallbackFailed("c1", "no_answer"), 7210.0) if isinstance(o, Event)]
    await apply_events(conn, events)
    [restored] = await load_open(conn)                          # retried in 60 s: not before then
    assert (restored.attempts, restored.due_at) == (1, 7270.0)
