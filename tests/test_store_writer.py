"""EventWriter against a real PostgreSQL: batching, flush, back-pressure, outages.

Outages are real: the writer talks to the server through `TcpProxy`, an asyncio TCP
forwarder the test can pause (bytes stop flowing), cut (every connection closed, port
no longer listening) and restore.  A crash is a real SIGKILL of a child process.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.events import Event
from router.store import EventWriter, InvalidEvent, WriterFull, connect, ensure_schema
from router.store.writer import Spool, encode_event, row_to_line

REPO = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 60.0  # only stops a broken test from hanging; never a speed assertion


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream server; pause/resume, cut/restore."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def dsn(self, dsn: str) -> str:
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        """Stop listening and drop every connection, as a server crash would."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, up_writer}
        await asyncio.gather(self._pipe(client_reader, up_writer),
                             self._pipe(up_reader, client_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@pytest.fixture(scope="module")
def dsn(database_url: str) -> str:
    asyncio.run(ensure_schema(database_url))
    return database_url


@pytest.fixture
def run_label() -> str:
    """Each test writes under its own `run`, so tests sharing the database never mix."""
    return f"test:{uuid.uuid4().hex}"


@contextlib.asynccontextmanager
async def tcp_proxy(dsn: str) -> AsyncIterator[TcpProxy]:
    """A running proxy to the server behind `dsn`, on the test's own event loop."""
    parts = urlsplit(dsn)
    forwarder = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.resume()
        if forwarder._server is not None:
            await forwarder.cut()


def make_events(count: int, start_ts: float = 1_767_225_600.0) -> list[Event]:
    return [Event(ts=start_ts + i * 0.25, type="queue.joined", call_id=f"call-{i}",
                  queue="sales" if i % 2 else "support", agent=None if i % 3 else f"a{i % 7}",
                  data={"position": i, "caller_id": f"+44{i:09d}", "ewt_s": i / 4})
            for i in range(count)]


async def fetch_rows(dsn: str, run: str) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return await conn.fetch(
            "SELECT id, ts, call_id, type, queue, agent, data, xmin::text::bigint AS tx "
            "FROM events WHERE run = $1", run)
    finally:
        await conn.close()


async def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def test_20000_events_land_once_with_the_right_columns(dsn, run_label, tmp_path):
    events = make_events(20_000)
    async with EventWriter(dsn, run=run_label, spool_dir=tmp_path) as writer:
        for event in events:
            await writer.put(event)
        await writer.flush()
        assert (writer.written, writer.spooled, writer.replayed) == (20_000, 0, 0)
        assert writer.batches >= 4  # at most batch_size (5000) rows per COPY

    rows = await fetch_rows(dsn, run_label)
    assert len(rows) == 20_000
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == 20_000
    for event in events:
        row = by_id[event.id]
        assert row["ts"].tzinfo is not None and row["ts"].timestamp() == event.ts
        assert (row["call_id"], row["type"], row["queue"], row["agent"]) == (
            event.call_id, event.type, event.queue, event.agent)
        assert row["data"] == event.data

    conn = await asyncpg.connect(dsn)
    try:
        types = await conn.fetchrow(
            "SELECT pg_typeof(ts)::text AS ts, pg_typeof(data)::text AS data FROM events "
            "WHERE run = $1 LIMIT 1", run_label)
        assert dict(types) == {"ts": "timestamp with time zone", "data": "jsonb"}
        caller = await conn.fetchval(
            "SELECT data->>'caller_id' FROM events WHERE run = $1 AND (data->>'position')::int = 1234",
            run_label)
        assert caller == "+44000001234"
    finally:
        await conn.close()


async def test_flush_returns_once_everything_put_is_committed(dsn, run_label, tmp_path):
    # A flush interval far longer than the test: only flush() can get these rows out.
    async with EventWriter(dsn, run=run_label, flush_interval_s=3600, spool_dir=tmp_path) as writer:
        await writer.flush()  # nothing put yet
        for event in make_events(3):
            await writer.put(event)
        await writer.flush()
        assert len(await fetch_rows(dsn, run_label)) == 3
        writer.put_nowait(make_events(1, start_ts=1_800_000_000.0)[0])
        await writer.flush()
        assert len(await fetch_rows(dsn, run_label)) == 4
    await writer.close()  # idempotent
    with pytest.raises(RuntimeError):
        await writer.put(make_events(1)[0])


async def test_close_writes_what_is_still_queued(dsn, run_label, tmp_path):
    writer = EventWriter(dsn, run=run_label, flush_interval_s=3600, spool_dir=tmp_path)
    await writer.start()
    for event in make_events(7):
        await writer.put(event)
    await writer.close()
    assert len(await fetch_rows(dsn, run_label)) == 7


async def test_put_waits_while_the_queue_is_full(dsn, run_label, tmp_path):
    async with tcp_proxy(dsn) as proxy:
        await _put_waits_while_the_queue_is_full(dsn, run_label, proxy, tmp_path)


async def _put_waits_while_the_queue_is_full(dsn, run_label, proxy, tmp_path):
    writer = EventWriter(proxy.dsn(dsn), run=run_label, batch_size=10, max_queue=10,
                         flush_interval_s=0.01, write_timeout_s=HANG_GUARD_S, spool_dir=tmp_path)
    await writer.start()
    try:
        assert writer.connected
        events = make_events(100)
        proxy.pause()  # the database stops answering; the first COPY hangs

        async def put_all() -> None:
            for event in events:
                await writer.put(event)

        putting = asyncio.create_task(put_all())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(putting), 0.5)
        assert not putting.done()
        with pytest.raises(WriterFull):
            writer.put_nowait(make_events(1, start_ts=1_800_000_000.0)[0])
        assert isinstance(WriterFull(), asyncio.QueueFull)

        proxy.resume()
        await asyncio.wait_for(putting, HANG_GUARD_S)
        await writer.flush()
        assert writer.spooled == 0
    finally:
        proxy.resume()
        await writer.close()
    rows = await fetch_rows(dsn, run_label)
    assert sorted(row["id"] for row in rows) == sorted(event.id for event in events)


async def test_events_spilled_when_the_queue_is_full_land_once(dsn, run_label, tmp_path):
    """A caller that may neither wait nor drop (the Asterisk adapter) spills what the full
    queue refuses: fsync'd to disk at once, in PostgreSQL once the queue has drained."""
    async with tcp_proxy(dsn) as proxy:
        writer = EventWriter(proxy.dsn(dsn), run=run_label, batch_size=10, max_queue=10,
                             flush_interval_s=0.01, write_timeout_s=HANG_GUARD_S, spool_dir=tmp_path)
        await writer.start()
        try:
            proxy.pause()                                # the queue fills and stays full
            events = make_events(60)
            spilled = 0
            for event in events:
                try:
                    writer.put_nowait(event)
                except WriterFull:
                    writer.spill(event)
                    spilled += 1
            assert spilled >= 40 and writer.backlog == spilled
            assert sum(1 for line in b"".join(p.read_bytes() for p in tmp_path.glob("*-spill.jsonl"))
                       .splitlines()) == spilled         # on disk before anything was written
            proxy.resume()
            await asyncio.wait_for(writer.flush(), HANG_GUARD_S)
            await wait_until(lambda: writer.backlog == 0, "the spilled events replayed")
        finally:
            await writer.close()
    rows = await fetch_rows(dsn, run_label)
    assert sorted(str(r["id"]) for r in rows) == sorted(str(e.id) for e in events)
    assert not list(tmp_path.glob("*.jsonl"))


async def test_bad_events_are_refused_at_put_and_do_not_poison_a_batch(dsn, run_label, tmp_path):
    good = make_events(3)
    bad = [
        Event(ts=1.0, type="call.arrived", data={"when": object()}),
        Event(ts=1.0, type="call.arrived", data={"score": math.nan}),
        Event(ts=1.0, type="call.arrived", data={"caller_id": "12\x0034"}),
        Event(ts=1.0, type="call.arrived", call_id="c\x00"),
        Event(ts=1.0, type="call.arrived", agent="\ud800"),
        Event(ts=1.0, type="call.arrived", data={"name": "\udfff"}),
        Event(ts=math.inf, type="call.arrived"),
        Event(ts=1.0, type=""),
        Event(ts=1.0, type="call.arrived", serial=-1),
        Event(ts=1.0, type="call.arrived", serial=1 << 128),
    ]
    odd_but_fine = Event(ts=2.0, type="ivr.input", data={"digits": "\\u0000", "note": "ü€😀"})
    async with EventWriter(dsn, run=run_label, flush_interval_s=3600, spool_dir=tmp_path) as writer:
        await writer.put(good[0])
        for event in bad:
            with pytest.raises(TypeError):
                await writer.put(event)
            with pytest.raises(InvalidEvent):
                writer.put_nowait(event)
        await writer.put(good[1])
        await writer.put(odd_but_fine)
        await writer.put(good[2])
        await writer.flush()
        assert writer.batches == 1 and writer.spooled == 0
    rows = {row["id"]: row for row in await fetch_rows(dsn, run_label)}
    assert set(rows) == {e.id for e in good} | {odd_but_fine.id}
    assert rows[odd_but_fine.id]["data"] == odd_but_fine.data


async def test_outage_spools_then_replays_exactly_once_in_order(dsn, run_label, tmp_path):
    async with tcp_proxy(dsn) as proxy:
        await _outage_spools_then_replays(dsn, run_label, proxy, tmp_path)


async def _outage_spools_then_replays(dsn, run_label, proxy, tmp_path):
    events = make_events(600)
    before, during, after = events[:100], events[100:400], events[400:]
    writer = EventWriter(proxy.dsn(dsn), run=run_label, batch_size=50, flush_interval_s=0.02,
                         connect_timeout_s=2.0, spool_dir=tmp_path)
    await writer.start()
    try:
        assert writer.connected
        for event in before:
            await writer.put(event)
        await writer.flush()
        assert writer.written == 100

        await proxy.cut()
        for event in during:
            await writer.put(event)
        await writer.flush()  # returns: everything is fsync'd in the spool
        assert not writer.connected
        assert writer.spooled == 300 and writer.written == 100
        spooled_lines = [line for path in Spool(tmp_path).files()
                         for line in path.read_bytes().splitlines()]
        assert len(spooled_lines) == 300
        assert len(await fetch_rows(dsn, run_label)) == 100

        await proxy.restore()
        for event in after:
            await writer.put(event)
        await writer.flush()
        await wait_until(lambda: writer.connected and not Spool(tmp_path).files(),
                         "the spool to be replayed")
        await writer.flush()
        assert writer.replayed == writer.spooled
        assert writer.written + writer.replayed == 600
    finally:
        await writer.close()

    rows = await fetch_rows(dsn, run_label)
    assert len(rows) == 600
    tx_of = {row["id"]: row["tx"] for row in rows}
    assert set(tx_of) == {event.id for event in events}
    commit_order = [tx_of[event.id] for event in events]
    assert commit_order == sorted(commit_order), "events were committed out of put order"
    assert list(tmp_path.iterdir()) == []


CRASHING_CHILD = """
import asyncio, json, sys
from pathlib import Path
import structlog
from router.events import Event
from router.store import EventWriter

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main():
    spool, run = Path(sys.argv[1]), sys.argv[2]
    # Nothing listens on port 1: the writer starts in an outage and spools.
    writer = EventWriter("postgresql://postgres@127.0.0.1:1/none", run=run, batch_size=40,
                         spool_dir=spool, connect_timeout_s=1.0)
    await writer.start()
    events = [Event(ts=1_767_225_600.0 + i, type="call.arrived", call_id=f"c{i}",
                    data={"i": i}) for i in range(250)]
    for event in events:
        await writer.put(event)
    await writer.flush()
    print(json.dumps([str(e.id) for e in events]), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_spool_left_by_a_killed_process_is_replayed_at_start(dsn, run_label, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CRASHING_CHILD, str(tmp_path), run_label],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), HANG_GUARD_S)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    spooled_ids = {uuid.UUID(text) for text in json.loads(line)}
    assert Spool(tmp_path).files()

    writer = EventWriter(dsn, run=run_label, spool_dir=tmp_path)
    await writer.start()
    try:
        assert writer.replayed == 250 and writer.connected
    finally:
        await writer.close()
    rows = await fetch_rows(dsn, run_label)
    assert len(rows) == 250 and {row["id"] for row in rows} == spooled_ids
    assert list(tmp_path.iterdir()) == []


async def test_torn_last_line_is_skipped_and_corrupt_files_are_kept(dsn, run_label, tmp_path):
    events = make_events(30)
    spool = Spool(tmp_path)
    spool.append(encode_event(e, run_label) for e in events[:10])
    spool.seal()
    spool.append(encode_event(e, run_label) for e in events[10:20])
    spool.seal()
    torn, corrupt = spool.files()
    with torn.open("ab") as handle:  # a crash in the middle of a write
        handle.write(b'{"id": "0f0e')
    lines = corrupt.read_bytes().splitlines(keepends=True)
    corrupt.write_bytes(b"".join(lines[:5]) + b"this is not json\n" + b"".join(lines[5:]))

    async with EventWriter(dsn, run=run_label, spool_dir=tmp_path) as writer:
        assert writer.replayed == 20
    rows = await fetch_rows(dsn, run_label)
    assert {row["id"] for row in rows} == {e.id for e in events[:20]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [corrupt.name + ".rejected"]


async def test_replaying_rows_already_in_the_table_adds_only_the_missing(dsn, run_label, tmp_path):
    events = make_events(150)
    async with EventWriter(dsn, run=run_label, spool_dir=tmp_path / "a") as writer:
        for event in events[:100]:
            await writer.put(event)
    # The spool also holds the first 100: their COPY reached the database just before
    # the connection broke, so the writer could not know and spooled them too.
    spool = Spool(tmp_path / "b")
    spool.append(encode_event(e, run_label) for e in events)
    spool.seal()

    async with EventWriter(dsn, run=run_label, spool_dir=tmp_path / "b") as writer:
        assert writer.replayed == 150
        await writer.put(events[3])  # the same event put twice: the COPY conflict path
        await writer.put(make_events(1, start_ts=1_800_000_000.0)[0])
        await writer.flush()
        assert writer.connected and writer.spooled == 0 and writer.written == 2
    rows = await fetch_rows(dsn, run_label)
    assert len(rows) == 151 and len({row["id"] for row in rows}) == 151


async def test_unreachable_database_at_start_means_spooling_not_failure(run_label, tmp_path):
    writer = EventWriter("postgresql://postgres@127.0.0.1:1/none", run=run_label,
                         spool_dir=tmp_path, connect_timeout_s=1.0)
    await writer.start()
    try:
        await writer.put(make_events(1)[0])
        await writer.flush()
        assert not writer.connected and writer.spooled == 1
    finally:
        await writer.close()
    assert len(Spool(tmp_path).files()) == 1


async def test_missing_database_is_reported_at_start(dsn, tmp_path):
    missing = dsn.rpartition("/")[0] + f"/acd_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await EventWriter(missing, spool_dir=tmp_path).start()


def test_a_row_in_binary_copy_format_carries_the_event_exactly():
    """encode_event's binary COPY tuple decodes to the values the former path sent (a UUID, the
    datetime that `datetime.fromtimestamp` gives, the texts, the compact JSON), and a spool
    line of it parses back to the same bytes."""
    from datetime import datetime, timezone

    from router.store.writer import decode_record, line_to_row, row_to_record
    cases = [Event(ts=1_767_225_600.0 + k / 7, type="call.connected", call_id=f"c{k}", queue="q",
                   agent=None if k % 2 else "a1", data={"wait_s": k / 3, "team": "t", "ok": True})
             for k in range(50)]
    cases += [Event(ts=0.5000005, type="ivr.input", data={"note": "ü€😀", "digits": "\\u0000"}),
              Event(ts=-1.25, type="flow.reloaded", call_id="", data={}, serial=(1 << 128) - 1)]
    for event in cases:
        record = encode_event(event, "sim:ü")
        decoded = decode_record(record)
        assert decoded == (event.id, datetime.fromtimestamp(event.ts, timezone.utc), "sim:ü", event.call_id,
                           event.type, event.queue, event.agent, decoded[7])
        assert json.loads(decoded[7]) == event.data
        assert row_to_record(decoded) == record
        assert row_to_record(line_to_row(row_to_line(record))) == record


def test_spool_lines_written_before_binary_copy_still_parse(tmp_path):
    line = (b'{"id": "0b5e7c2a-1f0e-4c11-8f3a-2d7b9c4e5a61", "ts": "2026-01-01T00:00:00.125000+00:00", '
            b'"run": "sim:old", "call_id": "c1", "type": "call.arrived", "queue": null, "agent": null, '
            b'"data": {"caller_id":"+44","dnis":"100"}}\n')
    (tmp_path / "00000000000000000001-1.jsonl").write_bytes(line)
    spool = Spool(tmp_path)
    claimed = spool.claim(spool.files()[0])
    try:
        assert claimed is not None and claimed.corrupt_lines == 0
        assert row_to_line(claimed.rows[0]) == line
    finally:
        claimed.release()


async def test_put_many_keeps_order_refuses_a_bad_slice_whole_and_waits_when_full(dsn, run_label, tmp_path):
    events = make_events(2_500)
    bad = Event(ts=math.nan, type="call.arrived")
    async with EventWriter(dsn, run=run_label, batch_size=300, max_queue=700, spool_dir=tmp_path) as writer:
        with pytest.raises(InvalidEvent):
            await writer.put_many([events[0], bad])
        for start in range(0, len(events), 1_000):       # slices larger than the queue: put_many waits
            await writer.put_many(events[start:start + 1_000])
        await writer.flush()
        assert (writer.written, writer.spooled) == (2_500, 0) and writer.batches >= 9
    conn = await connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM events WHERE run = $1 ORDER BY xmin::text::bigint, ctid", run_label)]
    finally:
        await conn.close()
    assert ids == [e.id for e in events]                 # each batch in put order, batches in order


def _compiled_encoder():
    """router.store.cencoder's encode_event; a skip where it is not built, a failure under
    ACD_REQUIRE_COMPILED=1 (CI)."""
    from router.store import writer
    if not writer.COMPILED:
        if os.environ.get("ACD_REQUIRE_COMPILED") == "1":
            pytest.fail("ACD_REQUIRE_COMPILED=1 but router.store.cencoder does not import")
        pytest.skip("the compiled event encoder is not built")
    return writer.encode_event


_TEXTS = st.one_of(st.none(), st.sampled_from(["q", "a01", "c-1", "", "ü", "a\"b", "a\\b", "\t", "c\x00"]),
                   st.text(max_size=12))
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
              st.sampled_from(["plain", "\\u0000", "x\x00", "\udfff", "😀", "a\"", "\x7f"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


@given(ts=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(1 << 40), 1 << 40),
                    st.sampled_from([1_767_225_600.123, 0.5000005, -1.25, 253402300799.0, -62135596800.0])),
       type_=st.one_of(st.sampled_from(["call.connected", "", "agent.state"]), st.text(max_size=6), st.none()),
       call_id=_TEXTS, queue=_TEXTS, agent=st.one_of(_TEXTS, st.integers(0, 9)),
       data=st.one_of(st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(["wait_s", "a\"", "\\"])),
                                      _VALUES, max_size=5),
                      st.dictionaries(st.integers(0, 3), st.integers(), max_size=2),
                      st.lists(st.integers(), max_size=2)),
       serial=st.one_of(st.integers(0, (1 << 128) - 1), st.sampled_from([-1, 1 << 128, 0, (1 << 64) - 1, 1 << 64])),
       run=st.sampled_from(["sim:x", "live", "ü", "r\x00"]))
@settings(max_examples=600, deadline=None)
def test_compiled_encoder_gives_the_bytes_and_errors_of_its_python_twin(ts, type_, call_id, queue, agent, data,
                                                                        serial, run):
    from router.store.writer import encode_event_py
    compiled = _compiled_encoder()
    event = Event(ts=ts, type=type_, call_id=call_id, queue=queue, agent=agent, data=data, serial=serial)
    try:
        expected = encode_event_py(event, run)
    except InvalidEvent as exc:
        with pytest.raises(InvalidEvent) as raised:
            compiled(event, run)
        assert str(raised.value) == str(exc)
    else:
        assert compiled(event, run) == expected


@given(value=st.one_of(st.integers(-(10 ** 15), 10 ** 15).map(lambda k: k / 1000),     # round_ms's floats
                       st.integers(-(10 ** 6), 10 ** 7).map(lambda k: k / 1000),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.sampled_from([0.0, -0.0, 0.001, -0.001, 0.0005, 1e12 - 0.001, 1e12, 999999999999.999,
                                        1.0, 10.25, 1.288, 5e-324, 2.5e11, 1e15])))
@settings(max_examples=2000, deadline=None)
def test_the_compiled_encoder_writes_a_float_as_python_s_repr(value):
    """Milliseconds (the engine's round_ms) are written by the compiled encoder itself, anything
    else by Python's repr: the JSON text is the twin's either way."""
    from router.store.writer import encode_event_py
    compiled = _compiled_encoder()
    event = Event(1.0, "agent.state", None, None, None, {"previous_s": value}, serial=5)
    assert compiled(event, "sim:x") == encode_event_py(event, "sim:x")


def test_an_event_with_several_faults_gets_the_twin_s_error_from_the_compiled_encoder():
    """The twin checks the data before the text fields, and those in column order (run, call_id,
    type, queue, agent): the compiled encoder reports the same first fault (a fresh-clone CI run
    found it naming the run's NUL where the twin named the data)."""
    from router.store.writer import encode_event_py
    compiled = _compiled_encoder()
    cases = [
        (Event(1.0, "call.arrived", None, None, None, {"a": math.inf}, serial=5), "r\x00"),
        (Event(1.0, "call.arrived", None, None, None, {"a": "\udfff"}, serial=5), "r\x00"),
        (Event(1.0, "call.arrived", None, None, None, {"a": "x\x00"}, serial=5), "r\x00"),
        (Event(1.0, "t\x00", "c\x00", None, None, {}, serial=5), "sim:x"),
        (Event(1.0, "call.arrived", "c\x00", "q\x00", "a\x00", {}, serial=5), "r\x00"),
    ]
    for event, run in cases:
        with pytest.raises(InvalidEvent) as twin:
            encode_event_py(event, run)
        with pytest.raises(InvalidEvent) as built:
            compiled(event, run)
        assert str(built.value) == str(twin.value), (event, run)


def test_the_compiled_encoder_reads_an_event_s_fields_through_its_class_s_descriptors():
    """router.events.Event's fields (getters when compiled, slots when pure) are read directly; any
    other class, a subclass included, by attribute lookups: the same bytes and errors either way,
    an event with unset fields too."""
    from router.store import cencoder, writer
    compiled = _compiled_encoder()

    class Subclass(Event):
        __slots__ = ()

    class Properties:
        serial = property(lambda self: 7)

    assert cencoder.configure_event_type(Properties) is False
    try:
        assert cencoder.configure_event_type(Event) is True
    finally:
        cencoder.configure_event_type(Event)
    fields = (12.5, "call.connected", "c1", "q", "a1", {"wait_s": 1.25, "skills_met": True}, 1 << 100)
    for event in (Event(*fields[:6], serial=fields[6]), Subclass(*fields[:6], serial=fields[6])):
        assert compiled(event, "sim:x") == writer.encode_event_py(event, "sim:x")
    for unset in (Event.__new__(Event), Subclass.__new__(Subclass)):
        with pytest.raises((InvalidEvent, AttributeError)) as twin:
            writer.encode_event_py(unset, "sim:x")
        with pytest.raises(type(twin.value)) as built:
            compiled(unset, "sim:x")
        assert str(built.value) == str(twin.value)


def test_compiled_encoder_on_the_simulator_s_events():
    from benchmarks import vs_simpy
    from router.sim.simulator import Simulator
    from router.store.writer import encode_event_py
    compiled = _compiled_encoder()
    model, hours = vs_simpy.centre(500)
    sim = Simulator(model, hours=hours, seed=5)
    events = sim.run(5_000)
    assert len(events) >= 4_000
    assert [compiled(e, "sim:t") for e in events] == [encode_event_py(e, "sim:t") for e in events]
    from router.store.writer import encode_events, encode_events_py
    assert encode_events(events, "sim:t") == encode_events_py(events, "sim:t")      # a slice in one call
    with pytest.raises(InvalidEvent):
        encode_events([events[0], Event(1.0, "", None, None, None, {}, serial=1)], "sim:t")


def test_the_row_queue_keeps_order_and_bound_while_batches_leave_as_slices():
    """The writer's queue: rows leave in the order they came, at most `maxsize` wait, and the
    rows taken are dropped from its list once they are half of it."""
    from router.store.writer import WriterFull, _RowQueue
    queue = _RowQueue(10)
    assert queue.extend([b"0", b"1", b"2", b"3"]) == 4 and queue.qsize() == 4
    assert queue.take(1) == [b"0"] and queue.qsize() == 3
    assert queue.extend([bytes([48 + i]) for i in range(4, 20)]) == 7 and queue.full()   # room for 7 of 16
    with pytest.raises(WriterFull):
        queue.put_nowait(b"x")
    assert queue.take(4) == [b"1", b"2", b"3", b"4"] and len(queue._rows) == 11      # 5 of 11 taken: kept
    assert queue.take(2) == [b"5", b"6"] and len(queue._rows) == 4 and queue._head == 0  # 7 of 11: dropped
    queue.put_nowait(b"b")
    assert queue.take(100) == [b"7", b"8", b"9", b":", b"b"] and queue.empty()
    assert queue._rows == [] and queue._head == 0


def test_the_compiled_encoder_fills_and_bounds_the_field_cache_as_its_twin(monkeypatch):
    """New texts (a call id per call) are encoded and cached by the compiled encoder itself when
    ASCII without NUL, by the twin's `_field` otherwise: the same bytes as the twin's, a cache
    that stays within the twin's bound, and every cached field the twin's encoding of its text."""
    from router.store import cencoder, writer
    compiled = _compiled_encoder()
    events = [Event(1.0, "call.arrived", f"call-{i}", "q" if i % 3 else "ü", None, {"i": i}, serial=i)
              for i in range(25)]
    monkeypatch.setattr(writer, "_FIELDS_MAX", 10)
    try:
        writer._FIELDS.clear()
        cencoder.configure(writer._FIELDS, 10, writer._field, writer.encode_event_py, writer._TS_MIN, writer._TS_MAX)
        for event in events:
            assert compiled(event, "sim:cache") == writer.encode_event_py(event, "sim:cache")
            assert 0 < len(writer._FIELDS) <= 10
        with pytest.raises(InvalidEvent, match="call_id contains a NUL"):
            compiled(Event(1.0, "call.arrived", "c\x00", None, None, {}, serial=99), "sim:cache")
        cached = dict(writer._FIELDS)
    finally:
        writer._FIELDS.clear()
        monkeypatch.undo()
        cencoder.configure(writer._FIELDS, writer._FIELDS_MAX, writer._field, writer.encode_event_py,
                           writer._TS_MIN, writer._TS_MAX)
    assert "call-24" in cached and "c\x00" not in cached
    assert all(field == struct.pack(">i", len(text.encode())) + text.encode() for text, field in cached.items())
