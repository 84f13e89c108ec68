"""Durable call-backs: the `callbacks` table (migrations 002 and 004).

The engine keeps a call-back as a virtual queue entry; this module keeps it in
PostgreSQL so a restart or a crash loses none.  `save_accepted` commits the row
when the caller accepts (the adapter awaits it before confirming to the caller);
`apply_events` moves the status along with the engine's callback.* and call.ended
events; `load_open` returns the pending ones as `CallbackRestored` inputs in place
order, for the engine to take back at start.  A call-back that was being dialled
when the router stopped is pending again: it is dialled anew.  `due_at` (the
engine's `CallbackState.due_at`: a chosen slot, the next opening of the call-back
hours) is stored on acceptance and moved on by a retried `callback.failed`, so a
restored call-back is not dialled before it.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterable

import asyncpg

from router.engine.engine import CallView
from router.engine.messages import CallbackRestored
from router.events import Event


class DuplicateCallback(ValueError):
    """An open call-back for this number and queue exists already."""


_STATUS_OF_EVENT = {"callback.dialing": "dialing", "callback.connected": "completed",
                    "callback.cancelled": "cancelled"}


async def save_accepted(conn: asyncpg.Connection, call: CallView) -> None:
    """Commit the accepted call-back of `call` (the engine's view once it took CallbackAccepted)."""
    if call.callback_number is None or call.callback_accepted_at is None:
        raise ValueError(f"call {call.call_id!r} has no call-back")
    try:
        await conn.execute(
            "INSERT INTO callbacks (call_id, queue, number, caller_id, priority, skills, joined_at,"
            " accepted_at, attempts, due_at) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10)",
            call.call_id, call.queue, call.callback_number, call.caller_id, call.priority,
            json.dumps(call.skills), _ts(call.joined_at), _ts(call.callback_accepted_at),
            call.callback_attempts, _ts(call.callback_due_at))
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateCallback(f"an open call-back to {call.callback_number} waits in {call.queue}") from exc


async def apply_events(conn: asyncpg.Connection, events: Iterable[Event]) -> int:
    """Follow callback.* events in the table; returns how many rows changed."""
    changed = 0
    for event in events:
        if event.call_id is None:
            continue
        if event.type == "callback.failed":
            if "attempt" not in event.data:
                continue                # refused before acceptance: there is no row
            status = "failed" if event.data.get("final") else "pending"
        else:
            status = _STATUS_OF_EVENT.get(event.type)
            if status is None:
                continue
        attempts = event.data.get("attempt")
        due_at = event.data.get("due_at") if status == "pending" else None
        result = await conn.execute(
            "UPDATE callbacks SET status = $2, attempts = coalesce($3, attempts), updated_at = $4,"
            " due_at = coalesce($5, due_at) WHERE call_id = $1 AND status IN ('pending', 'dialing')",
            event.call_id, status, attempts, _ts(event.ts), _ts(due_at))
        changed += int(result.split()[-1])
    return changed


async def load_open(conn: asyncpg.Connection) -> list[CallbackRestored]:
    """Pending call-backs (and those being dialled when the router stopped), in place order."""
    rows = await conn.fetch(
        "SELECT call_id, queue, number, caller_id, priority, skills::text AS skills, joined_at,"
        " accepted_at, attempts, due_at FROM callbacks WHERE status IN ('pending', 'dialing')"
        " ORDER BY joined_at, accepted_at, call_id")
    return [CallbackRestored(r["call_id"], r["queue"], r["number"], r["joined_at"].timestamp(),
                             r["accepted_at"].timestamp(), r["attempts"], r["caller_id"], r["priority"],
                             json.loads(r["skills"]), r["due_at"].timestamp() if r["due_at"] else None)
            for r in rows]


def _ts(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, timezone.utc)
