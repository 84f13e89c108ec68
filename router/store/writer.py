"""The event writer: batched COPY behind a bounded queue, with a disk spool for outages.

Theory of operation
-------------------
Callers `put()` events (or `put_many()` a slice of them); each is validated and turned
into a row at once (a bad event raises `InvalidEvent`, a `TypeError`, to its caller and
never reaches a batch).  Rows wait in a bounded queue: when it is full `put()` waits
(back-pressure, never a drop) and `put_nowait()` raises `WriterFull`.

One background task drains the queue.  A batch is whatever arrived within
`flush_interval_s` of its first row, cut early at `batch_size` rows or when someone
awaits `flush()`.  The batch is written with one binary COPY into `events` (or into
the run's own table, `table=`: router.store.run_tables); if the ids are already there
(the same event put twice) it goes through the de-duplicating path instead (COPY into
a temp table, then `INSERT ... ON CONFLICT (id) DO NOTHING`, after dropping the rows a
run's own table, which has no key, already holds).

Outage: if writing fails for any reason (connection lost, server restarting, write
timeout), the connection is dropped and the batch is appended to the spool, an
fsync'd JSON-lines file (see `Spool`); so is every later batch while the database is
away, and routing goes on.  Reconnection is tried with exponential back-off and
jitter (0.2 s doubling to 10 s).  A new connection first replays every spool file in
name (= creation) order through the de-duplicating path, one transaction per file,
deleting each file after COMMIT; only then do normal writes resume, so events reach
the table in the order they were put.  `start()` replays the files a crashed process
left behind.  A batch leaves memory only after COMMIT or fsync.

A row is encoded once, in `put()`, straight into one tuple of PostgreSQL's binary COPY
format (`encode_event`: the id's 16 bytes, the µs since 2000, the texts, jsonb's version
byte and the compact JSON; repeated texts come from a cache), and a batch is those bytes
between COPY's header and trailer, sent with `copy_to_table(format="binary")`: no UUID or
datetime objects per event and no per-value encoding in asyncpg.  `encode_event` is the
compiled twin (ext/encoder.pyx) of `encode_event_py` when it is built (`encode_events`: a
slice in one call).  Measured with benchmarks/vs_simpy.py's events: 0.6 µs an event compiled,
2.7 µs in Python, against 9 µs for the former `(UUID, datetime, ...)` tuples plus
`copy_records_to_table`; on a slower machine at cc29610, 0.4 µs compiled (1.0 µs before it
read fields through descriptors and wrote numbers by hand) and 4.1 to 4.9 µs in Python.  The
spool keeps its JSON lines (`row_to_line` decodes a tuple; `line_to_row` + `row_to_record`
encode it again).

The queue is a list with bulk moves (`_RowQueue`): `put_many()` encodes a slice in one call
(`encode_events`) and appends it at once, and a batch leaves as one slice.  After a slice,
`put_many()` yields to the loop so the writer task sends the next COPY; PostgreSQL, another
process, then works on it while the caller (the simulator) computes the next slice.

Spool files are locked (flock) while a writer appends to them, so a writer starting
beside a live one never replays (and deletes) a file still being written.  A file
with a line that cannot be parsed (other than a torn last line, the mark of a crash
mid-write) or whose rows the database rejects is renamed `*.rejected` and logged,
never deleted.
"""
from __future__ import annotations

import asyncio
import fcntl
import io
import json
import math
import os
import random
import re
import struct
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType

import asyncpg
import structlog

from router.events import Event
from router.store import run_tables
from router.store.database import default_data_dir, dsn_target

log = structlog.get_logger("router.store")

COLUMNS = ("id", "ts", "run", "call_id", "type", "queue", "agent", "data")
Row = tuple[uuid.UUID, datetime, str, str | None, str, str | None, str | None, str]

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
SPOOL_FILE_MAX_BYTES = 64 * 1024 * 1024

_REPLAY_TABLE = "events_replay"
_CREATE_REPLAY_TABLE = (f"CREATE TEMP TABLE IF NOT EXISTS {_REPLAY_TABLE} "
                        "(LIKE events) ON COMMIT DELETE ROWS")
_INSERT_NEW = (f"INSERT INTO events ({', '.join(COLUMNS)}) "
               f"SELECT {', '.join(COLUMNS)} FROM {_REPLAY_TABLE} ON CONFLICT (id) DO NOTHING")
# Errors that say the rows themselves are bad: retrying them cannot help.
_REJECTING_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# Errors on connect that are worth retrying rather than reporting as misconfiguration.
TRANSIENT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
                    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# The C encoder json.JSONEncoder builds on every call, built once: compact, UTF-8 kept,
# NaN and infinities refused (ValueError), no circular-reference bookkeeping (event data
# are fresh dicts of plain values).  Equal output to JSONEncoder(ensure_ascii=False,
# allow_nan=False, separators=(",", ":")), at two thirds of the cost.
_encode_data = (json.encoder.c_make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",",
                                            False, False, False)
                if json.encoder.c_make_encoder is not None else None)
_DATA_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json(data: dict[str, object]) -> str:
    return "".join(_encode_data(data, 0)) if _encode_data is not None else _DATA_ENCODER.encode(data)


class WriterFull(asyncio.QueueFull):
    """`put_nowait()` found the writer's queue full."""


class InvalidEvent(TypeError, ValueError):
    """The event cannot be stored as it is (raised by `put()`, before it is queued)."""


def encode_event_py(event: Event, run: str) -> Record:
    """The `events` row for `event` as one tuple of PostgreSQL's binary COPY format (see
    `copy_payload`); raises InvalidEvent for what PostgreSQL would reject.  The reference
    and twin of the compiled `encode_event` (ext/encoder.pyx), which gives the same bytes."""
    serial = event.serial
    if type(serial) is not int or not 0 <= serial < 1 << 128:
        raise InvalidEvent(f"event id must be a 128-bit integer, not {serial!r}")
    ts = event.ts
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidEvent(f"event ts must be finite epoch seconds, not {ts!r}")
    if not _TS_MIN <= ts < _TS_MAX:
        raise InvalidEvent(f"event ts {ts!r} is out of range")
    # µs as datetime.fromtimestamp rounds them (fraction half to even), as kpi_memory does
    fraction, whole = math.modf(ts)
    micros = int(whole) * 1_000_000 + round(fraction * 1e6) - _PG_EPOCH_US
    type_ = event.type
    if not isinstance(type_, str) or not type_:
        raise InvalidEvent("event type must be a non-empty string")
    data = event.data
    if not isinstance(data, dict):
        raise InvalidEvent(f"event data must be a dict, not {type(data).__name__}")
    try:
        text = _json(data)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event data is not JSON-serialisable: {exc}") from exc
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise InvalidEvent("event data contains a NUL character (jsonb cannot store it)")
    try:
        encoded = text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidEvent(f"event data is not valid Unicode: {exc}") from exc
    fields = _FIELDS
    try:
        return b"".join((
            _HEAD(_FIELD_COUNT, 16, serial >> 64, serial & _LOW64, 8, micros),
            fields.get(run) or _field("run", run),
            _NULL if event.call_id is None else fields.get(event.call_id) or _field("call_id", event.call_id),
            fields.get(type_) or _field("type", type_),
            _NULL if event.queue is None else fields.get(event.queue) or _field("queue", event.queue),
            _NULL if event.agent is None else fields.get(event.agent) or _field("agent", event.agent),
            _JSONB_HEAD(len(encoded) + 1, 1), encoded))
    except InvalidEvent:
        raise
    except TypeError as exc:                # an unhashable value where a string belongs
        raise InvalidEvent(f"event fields must be strings or None: {exc}") from exc


def encode_events_py(events: Iterable[Event], run: str) -> list[Record]:
    """`encode_event_py` of each event, in order (the twin of the compiled `encode_events`)."""
    return [encode_event_py(event, run) for event in events]


# One tuple of binary COPY: int16 field count, then per field an int32 length (-1: NULL)
# and the value in the type's binary format: uuid 16 bytes big-endian; timestamptz int64
# µs since 2000-01-01 UTC; text UTF-8; jsonb a version byte (1) then the JSON text.
Record = bytes
_FIELD_COUNT = len(COLUMNS)
_HEAD = struct.Struct(">hiQQiq").pack
_JSONB_HEAD = struct.Struct(">ib").pack
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)
_LOW64 = (1 << 64) - 1
_PG_EPOCH_US = 946_684_800 * 1_000_000
_TS_MIN = datetime(1, 1, 2, tzinfo=timezone.utc).timestamp()   # datetime's range, as before
_TS_MAX = datetime(9999, 12, 31, tzinfo=timezone.utc).timestamp()
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
# Encoded text fields by value (run, types, queues, agents and the call ids of the calls
# under way repeat from event to event); cleared when it grows past _FIELDS_MAX.
_FIELDS: dict[str, bytes] = {}
_FIELDS_MAX = 50_000


def _field(name: str, value: object) -> bytes:
    """A text field's bytes (length prefix and UTF-8), checked, and remembered in _FIELDS."""
    _check_text(name, value)
    encoded = value.encode()  # type: ignore[union-attr]
    field = _LENGTH.pack(len(encoded)) + encoded
    if len(_FIELDS) >= _FIELDS_MAX:
        _FIELDS.clear()
    _FIELDS[value] = field  # type: ignore[index]
    return field


def copy_payload(records: Iterable[Record]) -> memoryview:
    """A whole binary COPY stream (header, tuples, trailer) for `copy_to_table(format="binary")`
    (a memoryview: asyncpg would take `bytes` for a file name)."""
    return memoryview(b"".join((_COPY_HEADER, *records, _COPY_TRAILER)))


def decode_record(record: Record) -> Row:
    """Inverse of `encode_event`'s layout: the row's values as Python objects."""
    values: list[bytes | None] = []
    at = 2
    for _ in range(_FIELD_COUNT):
        (length,) = _LENGTH.unpack_from(record, at)
        at += 4
        if length < 0:
            values.append(None)
            continue
        values.append(record[at:at + length])
        at += length
    raw_id, raw_ts, run, call_id, type_, queue, agent, data = values
    texts = [None if v is None else v.decode() for v in (run, call_id, type_, queue, agent)]
    micros = int.from_bytes(raw_ts, "big", signed=True)  # type: ignore[arg-type]
    return (uuid.UUID(bytes=raw_id), _PG_EPOCH + timedelta(microseconds=micros),  # type: ignore[arg-type]
            *texts, data[1:].decode())  # type: ignore[return-value,index]


def row_to_record(row: Row) -> Record:
    """A `Row` (as a spool line holds it) as a binary COPY tuple."""
    event_id, ts, run, call_id, type_, queue, agent, data = row
    micros = (ts - _PG_EPOCH) // timedelta(microseconds=1)
    parts = [_HEAD(_FIELD_COUNT, 16, event_id.int >> 64, event_id.int & _LOW64, 8, micros)]
    for value in (run, call_id, type_, queue, agent):
        if value is None:
            parts.append(_NULL)
        else:
            encoded = value.encode()
            parts.append(_LENGTH.pack(len(encoded)) + encoded)
    encoded = data.encode()
    parts.append(_JSONB_HEAD(len(encoded) + 1, 1) + encoded)
    return b"".join(parts)


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

# The compiled twin (router.store.cencoder, built from ext/encoder.pyx) encodes the common
# events itself and hands the rest to encode_event_py, with which it shares the field cache.
# Without it the pure-Python twin serves, more slowly (one RuntimeWarning at import); with
# ACD_REQUIRE_COMPILED=1 (CI, `make test`) a missing extension is an ImportError instead.
try:
    from router.store import cencoder
except ImportError as exc:
    if os.environ.get("ACD_REQUIRE_COMPILED") == "1":
        raise ImportError("ACD_REQUIRE_COMPILED=1 but the compiled event encoder router.store.cencoder "
                          f"does not import; build it with `python setup.py build_ext --inplace`: {exc}") from exc
    warnings.warn(f"compiled event encoder unavailable ({exc}); using the pure-Python twin, "
                  "which is slower", RuntimeWarning, stacklevel=2)
    encode_event = encode_event_py
    encode_events = encode_events_py
    COMPILED = False
else:
    cencoder.configure(_FIELDS, _FIELDS_MAX, _field, encode_event_py, _TS_MIN, _TS_MAX)
    cencoder.configure_event_type(Event)
    encode_event = cencoder.encode_event
    encode_events = cencoder.encode_events
    COMPILED = True


def _check_text(name: str, value: object) -> None:
    if value is None or (type(value) is str and value.isascii() and "\x00" not in value):
        return
    if not isinstance(value, str):
        raise InvalidEvent(f"event {name} must be a string or None, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidEvent(f"event {name} contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidEvent(f"event {name} is not valid Unicode: {exc}") from exc


def row_to_line(row: Row | Record) -> bytes:
    """One spool line: a JSON object with `data` embedded as JSON."""
    if isinstance(row, bytes):
        row = decode_record(row)
    event_id, ts, run, call_id, type_, queue, agent, data = row
    head = json.dumps({"id": str(event_id), "ts": ts.isoformat(), "run": run, "call_id": call_id,
                       "type": type_, "queue": queue, "agent": agent}, ensure_ascii=False)
    return f'{head[:-1]}, "data": {data}}}\n'.encode()


def line_to_row(line: bytes) -> Row:
    """Inverse of `row_to_line`; raises ValueError (or KeyError/TypeError) on a bad line."""
    obj = json.loads(line)
    data = _DATA_ENCODER.encode(obj["data"])
    return (uuid.UUID(obj["id"]), datetime.fromisoformat(obj["ts"]), obj["run"], obj["call_id"],
            obj["type"], obj["queue"], obj["agent"], data)


@dataclass
class SpoolFile:
    """A spool file claimed for replay (its lock held until `release()`)."""
    path: Path
    rows: list[Record]
    corrupt_lines: int
    _fd: int

    def release(self) -> None:
        os.close(self._fd)


class Spool:
    """Append-only, fsync'd JSON-lines files in one directory; name order is creation
    order (`<epoch ns, 20 digits>-<pid>.jsonl`).  Blocking I/O: call from a thread."""

    def __init__(self, directory: Path, max_file_bytes: int = SPOOL_FILE_MAX_BYTES, *, tag: str = "") -> None:
        self.directory = directory
        self._max_file_bytes = max_file_bytes
        self._tag = tag                     # tells two spools of one process apart in file names
        self._file: io.BufferedWriter | None = None
        self._last_ns = 0

    def append(self, rows: Iterable[Record | Row]) -> None:
        """Append rows to the current file (opening one if needed), then fsync."""
        if self._file is None:
            self._file = self._open_new()
        handle = self._file
        try:
            handle.write(b"".join(row_to_line(row) for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            self.seal()  # a retry starts a new file; a torn line stays at this one's end
            raise
        if handle.tell() >= self._max_file_bytes:
            self.seal()

    def seal(self) -> None:
        """Close the current file (releasing its lock); the next append starts a new one."""
        if self._file is not None:
            handle, self._file = self._file, None
            handle.close()

    def files(self) -> list[Path]:
        """Spool files waiting for replay, oldest first."""
        return sorted(self.directory.glob("*.jsonl"))

    def claim(self, path: Path) -> SpoolFile | None:
        """Lock and read `path`; None if another writer holds it or it is gone."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not path.exists():  # replayed and removed by someone else meanwhile
                os.close(fd)
                return None
            with os.fdopen(os.dup(fd), "rb") as reader:
                content = reader.read()
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        rows, corrupt = self._parse(content)
        return SpoolFile(path, rows, corrupt, fd)

    @staticmethod
    def _parse(content: bytes) -> tuple[list[Record], int]:
        """Rows of a file and the count of unreadable lines (a torn last line excepted)."""
        lines = content.split(b"\n")
        torn_tail = lines.pop()  # b"" when the file ends with a newline
        rows: list[Record] = []
        corrupt = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                rows.append(row_to_record(line_to_row(line)))
            except (ValueError, KeyError, TypeError, AttributeError):
                corrupt += 1
        if torn_tail:
            log.warning("store.spool_torn_line", bytes=len(torn_tail))
        return rows, corrupt

    def remove(self, claimed: SpoolFile) -> None:
        claimed.path.unlink(missing_ok=True)

    def reject(self, claimed: SpoolFile) -> Path:
        target = claimed.path.with_name(claimed.path.name + ".rejected")
        claimed.path.rename(target)
        return target

    def _open_new(self) -> io.BufferedWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        path = self.directory / f"{self._last_ns:020d}-{os.getpid()}{self._tag}.jsonl"
        handle = open(path, "ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the new name durable too
            finally:
                os.close(dir_fd)
        except BaseException:
            handle.close()
            raise
        log.info("store.spool_opened", file=str(path))
        return handle


class _RowQueue:
    """The writer's bounded FIFO of rows, with bulk moves (asyncio.Queue moves one item per
    call, about a microsecond each way).  The rows are a list read from a head index: a batch
    leaves as one slice, not a pop per row, and the list drops the rows taken once they are half
    of it.  `wait_room()` returns once a row fits; a batch taken wakes every waiter, and each
    checks again (so a cancelled waiter loses no wake-up)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._rows: list[Record] = []
        self._head = 0                      # rows before it are taken
        self._waiters: list[asyncio.Future[None]] = []

    def qsize(self) -> int:
        return len(self._rows) - self._head

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.maxsize

    def put_nowait(self, row: Record) -> None:
        if self.qsize() >= self.maxsize:
            raise WriterFull(f"event writer queue is full ({self.maxsize} events)")
        self._rows.append(row)

    def extend(self, rows: list[Record]) -> int:
        """Append as many of `rows` as fit, in order; how many did."""
        room = self.maxsize - self.qsize()
        if room >= len(rows):
            self._rows.extend(rows)
            return len(rows)
        if room > 0:
            self._rows.extend(rows[:room])
            return room
        return 0

    async def wait_room(self) -> None:
        while self.qsize() >= self.maxsize:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def take(self, count: int) -> list[Record]:
        """Up to `count` rows from the head, and room for the waiting putters."""
        head = self._head
        batch = self._rows[head:head + count]
        head += len(batch)
        if head * 2 >= len(self._rows):
            del self._rows[:head]
            head = 0
        self._head = head
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return batch


class EventWriter:
    """Batched COPY writer for `events` with back-pressure and a disk spool.

    `put()` waits while the queue is full; `put_nowait()` is for callers that must not
    wait (raises `WriterFull`: the caller decides what to do).  Both raise
    `InvalidEvent` (a TypeError) for events that cannot be stored.  `flush()` returns
    once everything put so far is committed or, during an outage, fsync'd to the spool.
    The schema must exist (`ensure_schema`).  `table`: where the COPYs go, `events` or
    the run's own table (`run_tables.create_run_table`); spooled rows are replayed into
    `events`, which every query on the run reads too.
    """

    def __init__(self, dsn: str, *, run: str = "live", table: str = "events", batch_size: int = 5000,
                 max_queue: int = 50_000, flush_interval_s: float = 0.2,
                 spool_dir: Path | None = None, connect_timeout_s: float = 5.0,
                 write_timeout_s: float = 30.0) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be positive")
        _check_text("run", run)
        self._dsn = dsn
        self._target = dsn_target(dsn)
        self._run = run
        self._table = table
        self._batch_size = batch_size
        self._batch_target = min(batch_size, max_queue)
        self._flush_interval_s = flush_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._write_timeout_s = write_timeout_s
        self._spool = Spool(spool_dir if spool_dir is not None else default_data_dir() / "spool")
        self._spill = Spool(self._spool.directory, tag="-spill")   # `spill()`: the caller's thread
        self._spilled = 0                   # rows spilled and not yet handed to a replay
        self._queue = _RowQueue(max_queue)
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._putting = 0
        self._accepted = 0
        self._settled = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failures = 0
        self._next_attempt = 0.0
        self._outage_started: float | None = None
        self._outage_spooled = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.batches = 0

    @property
    def connected(self) -> bool:
        """True while the writer holds a working database connection."""
        return self._conn is not None

    @property
    def backlog(self) -> int:
        """Events this process spooled to disk that are not replayed yet (0: all in PostgreSQL)."""
        return max(0, self.spooled - self.replayed)

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    async def __aenter__(self) -> EventWriter:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, replay what earlier processes spooled, start the background task.

        An unreachable database is not an error (the writer spools until it returns);
        a refused login or a missing database is raised."""
        if self._task is not None:
            raise RuntimeError("EventWriter already started")
        await asyncio.to_thread(self._spool.directory.mkdir, parents=True, exist_ok=True)
        try:
            conn = await self._connect()
        except TRANSIENT_ERRORS as exc:
            self._enter_outage(exc)
        else:
            try:
                await self._replay(conn)
            except Exception as exc:
                conn.terminate()
                if not isinstance(exc, TRANSIENT_ERRORS):
                    raise
                self._enter_outage(exc)
            else:
                self._conn = conn
        self._task = asyncio.create_task(self._drain(), name="router.store.writer")

    async def put(self, event: Event) -> None:
        """Queue an event, waiting while the queue is full."""
        row = encode_event(event, self._run)
        self._ensure_open()
        self._putting += 1
        try:
            if self._queue.full():
                await self._queue.wait_room()
            self._queue.put_nowait(row)
        finally:
            self._putting -= 1
            if self._closing:
                self._wake.set()
        self._accepted += 1
        self._nudge()

    async def put_many(self, events: Iterable[Event]) -> None:
        """Queue events in their order, waiting while the queue is full; all are encoded
        first, so an invalid one raises InvalidEvent with none of them queued (cancelled while
        it waits, the events before the wait stay queued).  Then it yields to the loop for
        three turns, enough for the writer task to take the reply of a COPY that ended and
        send the next batch (PostgreSQL's COPY then overlaps with what the caller does next)."""
        rows = encode_events(events, self._run)
        self._ensure_open()
        queue = self._queue
        self._putting += 1
        try:
            while rows:
                before = queue.qsize()
                queued = queue.extend(rows)
                if queued:
                    self._accepted += queued
                    if before == 0 or queue.qsize() >= self._batch_target:
                        self._wake.set()
                    if queued == len(rows):
                        break
                    rows = rows[queued:]
                await queue.wait_room()
        finally:
            self._putting -= 1
            if self._closing:
                self._wake.set()
        for _ in range(3):      # the writer task: takes a finished COPY's reply; is woken; sends
            await asyncio.sleep(0)

    def put_nowait(self, event: Event) -> None:
        """Queue an event without waiting; raises WriterFull when the queue is full."""
        row = encode_event(event, self._run)
        self._ensure_open()
        self._queue.put_nowait(row)     # WriterFull when full
        self._accepted += 1
        self._nudge()

    def spill(self, event: Event) -> None:
        """Store an event for a caller that may neither wait nor drop it when the queue is full:
        appended to a spool file of its own and fsync'd at once (blocking: the exception, not
        the rule), then replayed with the other spool files once the queue has drained."""
        row = encode_event(event, self._run)
        self._ensure_open()
        self._spill.append([row])
        self.spooled += 1
        self._spilled += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once every event put so far is committed or spooled."""
        self._ensure_running()
        target = self._accepted
        if self._settled >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, waiter))
        self._wake.set()
        await waiter

    async def close(self) -> None:
        """Flush, stop the background task and disconnect.  Idempotent."""
        if self._closing:
            if self._task is not None:
                await asyncio.shield(self._task)
            return
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await asyncio.to_thread(self._spool.seal)
            self._spill.seal()
            await self._disconnect()

    # -- background task -------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closing:
            raise RuntimeError("EventWriter is closed")
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is None:
            raise RuntimeError("EventWriter not started")
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise RuntimeError("EventWriter task failed") from self._task.exception()

    def _nudge(self) -> None:
        size = self._queue.qsize()
        if size == 1 or size >= self._batch_target:
            self._wake.set()

    async def _drain(self) -> None:
        try:
            while True:
                if self._conn is None and asyncio.get_running_loop().time() >= self._next_attempt:
                    await self._reconnect()
                batch = await self._collect()
                if batch is None:
                    if self._spilled and self._conn is not None:
                        await self._replay_spilled()
                    return
                if batch:
                    await self._store(batch)
                    self._settle(len(batch))
                if self._spilled and self._conn is not None and self._queue.empty():
                    await self._replay_spilled()
        except BaseException as exc:
            for _, waiter in self._flush_waiters:
                if not waiter.done():
                    waiter.set_exception(RuntimeError("EventWriter task failed"))
            self._flush_waiters.clear()
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("store.writer_failed")
            raise

    async def _collect(self) -> list[Record] | None:
        """The next batch; [] when it is time to retry the database; None when closed."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while queue.empty():
            if self._closing and self._putting == 0:
                return None
            if self._spilled and self._conn is not None:
                return []
            timeout = None if self._conn is not None else max(0.0, self._next_attempt - loop.time())
            if not await self._wait_wake(timeout):
                return []
        deadline = loop.time() + self._flush_interval_s
        while (queue.qsize() < self._batch_target and not self._closing
               and not self._flush_waiters):
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._wait_wake(remaining):
                break
        return queue.take(self._batch_size)

    async def _wait_wake(self, timeout: float | None) -> bool:
        """Wait for a nudge; False on timeout."""
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def _settle(self, count: int) -> None:
        self._settled += count
        still_waiting = []
        for target, waiter in self._flush_waiters:
            if target <= self._settled:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._flush_waiters = still_waiting

    async def _store(self, batch: list[Record]) -> None:
        """Commit the batch, or spool it if the database is away; if the spool fails
        too (disk full), keep the batch and retry both (the queue then pushes back)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._conn is None and loop.time() >= self._next_attempt:
                await self._reconnect()
            if self._conn is not None:
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._copy(self._conn, batch)
                except Exception as exc:  # whatever went wrong, the rows go to the spool
                    self._enter_outage(exc)
                else:
                    self.written += len(batch)
                    self.batches += 1
                    return
            try:
                await asyncio.to_thread(self._spool.append, batch)
            except OSError as exc:
                log.error("store.spool_failed", dir=str(self._spool.directory), error=_describe(exc))
                await asyncio.sleep(max(BACKOFF_FIRST_S, self._next_attempt - loop.time()))
                continue
            self.spooled += len(batch)
            self._outage_spooled += len(batch)
            return

    async def _copy(self, conn: asyncpg.Connection, batch: list[Record]) -> None:
        try:
            await conn.copy_to_table(self._table, source=copy_payload(batch), columns=COLUMNS, format="binary")
        except asyncpg.UniqueViolationError:
            await self._insert_new(conn, batch)

    @staticmethod
    async def _insert_new(conn: asyncpg.Connection, rows: list[Record]) -> None:
        """Insert the rows whose ids are not stored yet, in one transaction: not in `events`
        (its primary key) nor in their run's own table (router.store.run_tables)."""
        async with conn.transaction():
            await conn.execute(_CREATE_REPLAY_TABLE)
            await conn.copy_to_table(_REPLAY_TABLE, source=copy_payload(rows), columns=COLUMNS, format="binary")
            for (run,) in await conn.fetch(f"SELECT DISTINCT run FROM {_REPLAY_TABLE}"):
                table = await run_tables.own_table(conn, run)
                if table is not None:
                    await conn.execute(run_tables.DEDUP_REPLAY_SQL.format(replay=_REPLAY_TABLE, table=f'"{table}"'),
                                       run)
            await conn.execute(_INSERT_NEW)

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s,
                                     server_settings={"application_name": "acd-router event writer"})

    async def _reconnect(self) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:
            self._retry_later(exc)
            return
        try:
            await self._replay(conn)
        except Exception as exc:
            conn.terminate()
            self._retry_later(exc)
            return
        self._conn = conn
        self._failures = 0
        if self._outage_started is not None:
            log.warning("store.outage_ended", db=self._target,
                        seconds=round(time.monotonic() - self._outage_started, 3),
                        spooled=self._outage_spooled, replayed_total=self.replayed)
            self._outage_started = None

    async def _replay_spilled(self) -> None:
        """The queue drained: hand what `spill()` wrote to the database like any spool file."""
        self._spilled = 0
        self._spill.seal()
        try:
            await self._replay(self._conn)  # type: ignore[arg-type]
        except Exception as exc:
            self._enter_outage(exc)     # the files stay; the reconnect replays them

    async def _replay(self, conn: asyncpg.Connection) -> None:
        """Replay every spool file not held by a live writer, oldest first."""
        await asyncio.to_thread(self._spool.seal)
        for path in await asyncio.to_thread(self._spool.files):
            claimed = await asyncio.to_thread(self._spool.claim, path)
            if claimed is None:
                continue
            try:
                await self._replay_file(conn, claimed)
            finally:
                claimed.release()

    async def _replay_file(self, conn: asyncpg.Connection, claimed: SpoolFile) -> None:
        try:
            if claimed.rows:
                async with asyncio.timeout(self._write_timeout_s):
                    await self._insert_new(conn, claimed.rows)
        except _REJECTING_ERRORS as exc:
            target = await asyncio.to_thread(self._spool.reject, claimed)
            log.error("store.spool_rejected", file=str(target), rows=len(claimed.rows),
                      error=str(exc))
            return
        if claimed.corrupt_lines:
            target = await asyncio.to_thread(self._spool.reject, claimed)
            log.error("store.spool_rejected", file=str(target), rows=len(claimed.rows),
                      error=f"{claimed.corrupt_lines} unreadable lines (readable rows were replayed)")
        else:
            await asyncio.to_thread(self._spool.remove, claimed)
        self.replayed += len(claimed.rows)
        log.info("store.spool_replayed", file=claimed.path.name, rows=len(claimed.rows))

    def _enter_outage(self, exc: BaseException) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            self._outage_spooled = 0
            log.warning("store.outage_started", db=self._target, error=_describe(exc))
        self._retry_later(exc)

    def _retry_later(self, exc: BaseException) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** self._failures)
        self._failures = min(self._failures + 1, 16)
        delay *= random.uniform(0.5, 1.0)
        self._next_attempt = asyncio.get_running_loop().time() + delay
        log.debug("store.reconnect_scheduled", db=self._target, in_s=round(delay, 3),
                  error=_describe(exc))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.close(timeout=self._connect_timeout_s)
        except Exception:
            conn.terminate()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
