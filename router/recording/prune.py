"""Retention: delete recordings past their days, and record that it was done.

Theory of operation
-------------------
The ``recording.saved`` events are the inventory: each names its file (relative
to the recordings directory) and its ``retention_days``.  `due` reads the ones
whose time is up and that no ``recording.pruned`` or ``recording.missing`` event
has settled yet (in the same run: ``live``, or the demo's ``demo``, whose
recordings are its own), so a pass repeats nothing and a run that was interrupted picks
up where it stopped.  `prune` deletes each file through
`router.recording.files.resolve` (the one place a path is built) and returns
the events to store: ``recording.pruned`` (file, age_days) for a deleted file,
``recording.missing`` (file, reason) for one that is not there, cannot be
read or deleted, or whose name would leave the directory — a line in the
report, never an exception.  A dry run deletes and records nothing.  Day
directories left empty are removed.  `acd-router recordings prune` runs it
once; `serve` runs it daily (router.pbx.service).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from router.events import Event
from router.recording import files
from router.store.database import connect

log = structlog.get_logger("router.recording")

DAY_S = 86_400.0

DUE = """
SELECT s.call_id, s.queue, s.agent, s.data->>'file' AS file, extract(epoch FROM s.ts) AS saved_at
FROM events s
WHERE s.type = 'recording.saved' AND s.run = $2
  AND s.ts + make_interval(days => (s.data->>'retention_days')::int) <= $1
  AND NOT EXISTS (SELECT 1 FROM events e
                  WHERE e.type IN ('recording.pruned', 'recording.missing') AND e.run = s.run
                    AND e.call_id = s.call_id AND e.data->>'file' = s.data->>'file'
                    AND e.ts >= s.ts)
ORDER BY s.ts
"""


@dataclass
class Report:
    """What a run did (or, dry, would do)."""
    dry_run: bool
    pruned: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        return ([f"{verb} {p['file']} (call {p['call_id']}, {p['age_days']:g} days old)" for p in self.pruned]
                + [f"missing {m['file']} (call {m['call_id']}): {m['reason']}" for m in self.missing]
                + [f"{len(self.pruned)} recording(s) {verb}, {len(self.missing)} missing"])

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "pruned": self.pruned, "missing": self.missing}


async def due(conn: Any, now: float, run: str = "live") -> list[dict[str, Any]]:
    """Saved recordings of `run` past their retention at `now` (epoch s) and not yet settled."""
    rows = await conn.fetch(DUE, datetime.fromtimestamp(now, timezone.utc), run)
    return [dict(row) for row in rows]


async def prune(conn: Any, directory: str | Path, now: float, *, dry_run: bool = False,
                run: str = "live") -> Report:
    """Delete the recordings of `run` due at `now` under `directory`; the events to store (in the
    same run) are in the report."""
    report = Report(dry_run)
    for row in await due(conn, now, run):
        age_days = round((now - float(row["saved_at"])) / DAY_S, 1)
        reason = _delete(directory, row["file"], dry_run)
        entry = {"call_id": row["call_id"], "file": row["file"]}
        if reason is None:
            report.pruned.append({**entry, "age_days": age_days})
            kind, data = "recording.pruned", {"file": row["file"], "age_days": age_days}
        else:
            report.missing.append({**entry, "reason": reason})
            kind, data = "recording.missing", {"file": row["file"], "reason": reason}
        if not dry_run:
            report.events.append(Event(now, kind, call_id=row["call_id"], queue=row["queue"], agent=row["agent"],
                                       data=data))
    return report


def _delete(directory: str | Path, file: str | None, dry_run: bool) -> str | None:
    """Delete one recording; None when done, else why it could not be."""
    try:
        path = files.resolve(directory, file or "")
    except files.UnsafePath as error:
        return str(error)
    try:
        if not path.is_file():
            return "no such file" if not path.exists() else "not a regular file"
        if not os.access(path, os.R_OK):
            return "not readable"
        if not dry_run:
            path.unlink()
            _remove_empty_parents(path.parent, Path(directory).resolve())
    except OSError as error:
        return error.strerror or str(error)
    return None


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


async def store(conn: Any, events: list[Event], run: str = "live") -> None:
    """Insert the run's events (the CLI's; `serve` hands them to its writer instead)."""
    await conn.executemany(
        "INSERT INTO events (id, ts, run, call_id, type, queue, agent, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (id) DO NOTHING",
        [(e.id, datetime.fromtimestamp(e.ts, timezone.utc), run, e.call_id, e.type, e.queue, e.agent, e.data)
         for e in events])


async def run_daily(dsn: str, directory: str | Path, record: Callable[[Event], None], acting: Callable[[], bool],
                    *, first_after_s: float = 60.0, every_s: float = DAY_S,
                    clock: Callable[[], float] = time.time, run: str = "live") -> None:
    """`serve`'s task: prune a minute after start, then daily, while this router leads (`clock`:
    the time retention is measured at; the demo's simulated clock runs faster than the wall's)."""
    await asyncio.sleep(first_after_s)
    while True:
        if acting():
            try:
                conn = await connect(dsn)
                try:
                    report = await prune(conn, directory, clock(), run=run)
                finally:
                    await conn.close()
                for event in report.events:
                    record(event)
                log.info("recording.pruned", deleted=len(report.pruned), missing=len(report.missing))
            except (OSError, asyncpg.PostgresError) as error:
                log.error("recording.prune_failed", reason=str(error))
        await asyncio.sleep(every_s)
