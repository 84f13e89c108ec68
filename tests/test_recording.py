"""Recording without Asterisk: the policy's decisions, the switchboard's recording steps, the files
(names, paths that must not escape, stereo WAV, durations), the config, and retention pruning on
real files with a real PostgreSQL (router.recording)."""
from __future__ import annotations

import array
import asyncio
import json
import struct
import uuid
import wave
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from router.cli import main
from router.config import ConfigError, parse_config
from router.config.model import RecordingPolicy, RecordingSettings
from router.engine.messages import AgentLogin
from router.events import Event
from router.ivr.session import Enqueue
from router.pbx import dialplan as dp
from router.pbx.ami import DialBegin, DialEnd, Hangup
from router.pbx.calls import Connect, MuteRecording, NotRecording, RecordingStarted, SaveRecording, Switchboard
from router.recording import files
from router.recording.policy import plan, sampled
from router.recording.prune import prune, store
from router.store.database import connect, ensure_schema
from tests.conftest import fresh_database
from tests.factories import centre, queue



CALLER, AGENT_LEG = "PJSIP/trunk-00000001", "Local/a1@agents-00000002;1"
DAY = 86_400.0
NOW = datetime(2026, 12, 4, 12, tzinfo=timezone.utc).timestamp()


# --- policy ----------------------------------------------------------------------------------

def test_sampling_is_decided_by_the_call_id_alone() -> None:
    ids = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(10_000)]
    chosen = [sampled(i, 20) for i in ids]
    assert chosen == [sampled(i, 20) for i in ids]              # a restart decides the same
    assert 0.185 <= sum(chosen) / len(ids) <= 0.215
    assert all(sampled(i, 100) for i in ids[:100]) and sum(sampled(i, 0.01) for i in ids) <= 10


def test_plan_names_the_file_from_the_call_id_and_maps_it_into_asterisk() -> None:
    c = replace(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1}, recording=RecordingPolicy(
        mode="all", retention_days=7, announce="recorded-call"))]),
        recording=RecordingSettings("/srv/rec", 90, "/var/spool/asterisk/monitor/acd"))
    r = plan(c, "sales", "5d2c", NOW)
    assert (r.file, r.capture) == ("2026/12/04/5d2c.wav", "2026/12/04/5d2c.raw")
    assert r.asterisk_path == "/var/spool/asterisk/monitor/acd/2026/12/04/5d2c.raw" and r.options == "D"
    assert (r.retention_days, r.announce) == (7, "recorded-call")
    mixed = replace(c, queues={"sales": replace(c.queues["sales"], recording=RecordingPolicy(
        mode="all", channels="mixed", format="opus"))})
    m = plan(mixed, "sales", "5d2c", NOW)
    assert (m.file, m.capture, m.options, m.retention_days) == ("2026/12/04/5d2c.opus",) * 2 + ("", 90)
    assert plan(replace(c, queues={"sales": queue("sales", {"sales": 1})}), "sales", "5d2c", NOW) is None
    with pytest.raises(files.UnsafePath):
        files.name("../x", NOW, "wav")


# --- config ----------------------------------------------------------------------------------

def test_config_reads_the_recording_sections(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("skills: [{id: s, name: S}]\nagents: [{id: a, endpoint: PJSIP/1, skills: {s: 5}}]\n"
                    "recording: {directory: rec, retention_days: 30}\n"
                    "queues:\n  - {id: q, skills: {s: 1}, recording: {mode: sample, sample_percent: 12.5,"
                    " channels: mixed, format: opus, announce: legal/recorded}}\n")
    from router.config import load_config
    c = load_config(path, environ={})
    assert c.recording == RecordingSettings(str(tmp_path / "rec"), 30, None)
    assert c.queues["q"].recording == RecordingPolicy("sample", 12.5, "mixed", "opus", None, "legal/recorded")
    bare = tmp_path / "bare.yaml"
    bare.write_text("skills: [{id: s, name: S}]\nagents: []\nqueues: [{id: q}]\n")
    assert load_config(bare, environ={}).recording == RecordingSettings(str(tmp_path / "recordings"), 90, None)
    with pytest.raises(ConfigError, match="opus recordings are mixed only"):
        parse_config("skills: [{id: s, name: S}]\nagents: []\nqueues: [{id: q, recording: {mode: all, format: opus}}]\n")


# --- the switchboard ---------------------------------------------------------------------------

class Bench:
    """The adapter's loop without I/O (as tests/test_pbx_calls.py), recording steps collected."""

    def __init__(self, policy: RecordingPolicy) -> None:
        from router.engine.engine import Engine
        self.centre = replace(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1}, recording=policy)]),
                              recording=RecordingSettings("/srv/rec", 90))
        self.engine = Engine(self.centre)
        self.board = Switchboard(self.centre, self.engine)
        self.actions: list = []

    def run(self, steps, now: float) -> None:
        pending = list(steps)
        while pending:
            item = pending.pop(0)
            if type(item).__module__ == "router.pbx.calls":
                self.actions.append(item)
                continue
            pending += self.board.on_engine(self.engine.handle(item, now), now)

    def take(self, kind):
        found = [a for a in self.actions if isinstance(a, kind)]
        self.actions = [a for a in self.actions if not isinstance(a, kind)]
        return found


def connected(bench: Bench):
    call = bench.board.ivr_started("c1", CALLER, "1.1", "0611223344")
    bench.run([bench.board.queued_from_ivr(call, Enqueue("sales", 0, {}, {}), NOW)], NOW)
    bench.run([AgentLogin("a1")], NOW + 1)
    assert bench.board.take_agi_dial(call, NOW + 1) is None      # a recorded call dials from [router-connect]
    [connect] = bench.take(Connect)
    bench.board.action_begins(connect)
    bench.run(bench.board.on_ami(DialBegin(CALLER, "1.1", AGENT_LEG, "1.2", "a1@agents"), NOW + 1), NOW + 1)
    bench.run(bench.board.on_ami(DialEnd(CALLER, "1.1", AGENT_LEG, "1.2", "ANSWER"), NOW + 2), NOW + 2)
    return call, connect


def test_a_recorded_call_carries_its_file_to_the_dialplan_and_is_saved_at_hang_up() -> None:
    bench = Bench(RecordingPolicy(mode="all", announce="recorded"))
    call, connect = connected(bench)
    assert connect.variables[dp.RECORD] == "/srv/rec/2026/12/04/c1.raw"
    assert (connect.variables[dp.RECORD_OPTIONS], connect.variables[dp.RECORD_ANNOUNCE]) == ("D", "recorded")
    [started] = bench.take(RecordingStarted)
    assert (started.queue, started.agent, started.recording.file) == ("sales", "a1", "2026/12/04/c1.wav")
    bench.run(bench.board.on_ami(Hangup(CALLER, "1.1", "1.1", "16"), NOW + 30), NOW + 30)
    [save] = bench.take(SaveRecording)
    assert save.keep and not save.swap and save.recording == started.recording


def test_a_recorded_call_offered_as_it_queues_connects_over_the_ivr_s_agi_not_a_redirect() -> None:
    """No Redirect while the caller's channel may still be in the IVR's AGI: the Connect's variables
    and ROUTER_NEXT=connect go over that AGI, and the Connect waiting for the call's lock is dropped."""
    bench = Bench(RecordingPolicy(mode="all"))
    bench.run([AgentLogin("a1")], NOW)
    call = bench.board.ivr_started("c1", CALLER, "1.1", "0611223344")
    bench.run([bench.board.queued_from_ivr(call, Enqueue("sales", 0, {}, {}), NOW + 1)], NOW + 1)
    assert bench.board.take_agi_dial(call, NOW + 1) is None
    variables = bench.board.take_agi_connect(call, NOW + 1)
    [connect] = bench.take(Connect)
    assert variables == {**connect.variables, dp.NEXT: dp.NEXT_CONNECT}
    assert variables[dp.RECORD] == "/srv/rec/2026/12/04/c1.raw" and variables[dp.TARGET] == connect.endpoint
    assert bench.board.action_begins(connect) is False                  # nothing left to Redirect
    assert bench.board.take_agi_connect(call, NOW + 1) is None           # once
    bench.run(bench.board.on_ami(DialBegin(CALLER, "1.1", AGENT_LEG, "1.2", "a1@agents"), NOW + 2), NOW + 2)
    bench.run(bench.board.on_ami(DialEnd(CALLER, "1.1", AGENT_LEG, "1.2", "ANSWER"), NOW + 3), NOW + 3)
    [started] = bench.take(RecordingStarted)
    assert (started.agent, started.recording.file) == ("a1", "2026/12/04/c1.wav")


def test_an_unrecorded_queue_sets_no_recording_variables() -> None:
    bench = Bench(RecordingPolicy(mode="none"))
    call = bench.board.ivr_started("c1", CALLER, "1.1", "0611223344")
    bench.run([bench.board.queued_from_ivr(call, Enqueue("sales", 0, {}, {}), NOW)], NOW)
    bench.run([AgentLogin("a1")], NOW + 1)
    assert bench.board.take_agi_dial(call, NOW + 1) is not None
    bench.run(bench.board.on_ami(Hangup(CALLER, "1.1", "1.1", "16"), NOW + 3), NOW + 3)
    assert bench.take(SaveRecording) == [] and bench.take(RecordingStarted) == []


def test_sensitive_nodes_and_manual_pauses_mute_while_any_holds() -> None:
    bench = Bench(RecordingPolicy(mode="all"))
    connected(bench)
    node = lambda name, **data: Event(NOW, "ivr.node", call_id="c1", data={"flow": "pay", "node": name, **data})
    [mute] = bench.board.flow_event(node("card", sensitive=True))
    assert (mute.mute, mute.paused, mute.reason, mute.by, mute.channel) == (True, True, "sensitive", "card", CALLER)
    assert bench.board.flow_event(node("card2", sensitive=True)) == []          # still in a sensitive span
    [manual] = bench.board.pause_recording("c1", True, "supervisor", "sup1")
    assert (manual.mute, manual.paused, manual.by) == (None, True, "sup1")      # already muted: event only
    [lifted] = bench.board.flow_event(node("thanks"))
    assert (lifted.mute, lifted.paused, lifted.by) == (None, False, "card")     # the supervisor's pause holds
    with pytest.raises(NotRecording):
        bench.board.pause_recording("c1", True, "agent", "a1")
    [resumed] = bench.board.pause_recording("c1", False, "agent", "a1")
    assert isinstance(resumed, MuteRecording) and resumed.mute is False
    with pytest.raises(NotRecording):
        bench.board.pause_recording("nope", True, "supervisor", "sup1")


# --- files -------------------------------------------------------------------------------------

def test_resolve_keeps_every_name_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    (root / "2026").mkdir(parents=True)
    (tmp_path / "secret.wav").write_bytes(b"x")
    (root / "2026" / "out").symlink_to(tmp_path)
    assert files.resolve(root, "2026/12/04/c1.wav") == root.resolve() / "2026/12/04/c1.wav"
    for bad in ("/etc/passwd", "../secret.wav", "2026/../../secret.wav", "2026/out/secret.wav", "", ".",
                "a\x00b", "a\\..\\b"):
        with pytest.raises(files.UnsafePath):
            files.resolve(root, bad)


def test_stereo_capture_becomes_a_wav_and_durations_come_from_the_files(tmp_path: Path) -> None:
    raw, wav_path = tmp_path / "c1.raw", tmp_path / "c1.wav"
    frames = array.array("h", [v for n in range(8000 * 3) for v in (1000, -2000)])   # 3 s: read, write
    raw.write_bytes(frames.tobytes())
    files.wav_from_raw(raw, wav_path, swap=True)
    assert not raw.exists()
    with wave.open(str(wav_path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (2, 8000, 2, 24000)
        assert array.array("h", w.readframes(2)).tolist() == [-2000, 1000, -2000, 1000]
    assert files.probe(wav_path) == (wav_path.stat().st_size, 3.0)
    unwritten = tmp_path / "open.wav"                       # Asterisk's header before it is rewritten
    unwritten.write_bytes(files.wav_header(0, 1) + bytes(16000))
    assert files.probe(unwritten)[1] == 1.0
    ogg = tmp_path / "c2.opus"
    head = b"OggS" + bytes(24) + b"OpusHead" + bytes([1, 1]) + struct.pack("<H", 312) + bytes(8)
    last = b"OggS" + bytes(2) + struct.pack("<q", 2 * 48000 + 312) + bytes(14)
    ogg.write_bytes(head + bytes(1000) + last)
    assert files.probe(ogg)[1] == 2.0
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError):
        files.probe(tmp_path / "junk.wav")


# --- retention ---------------------------------------------------------------------------------

@pytest.fixture
def own_database():
    with fresh_database() as dsn:
        asyncio.run(ensure_schema(dsn))
        yield dsn


def saved(call_id: str, file: str, days_ago: float, retention_days: int) -> Event:
    return Event(NOW - days_ago * DAY, "recording.saved", call_id=call_id, queue="sales", agent="a1",
                 data={"file": file, "size_bytes": 44, "duration_s": 0.0, "retention_days": retention_days})


@pytest.mark.asyncio(loop_scope="session")
async def test_prune_deletes_exactly_the_expired_files_and_reports_the_missing(
        own_database: str, tmp_path: Path) -> None:
    root = tmp_path / "rec"
    kept = {"new": ("2026/12/01/new.wav", 3, 30), "edge": ("2026/11/05/edge.wav", 29.9, 30)}
    expired = {"old": ("2026/10/01/old.wav", 64, 30), "short": ("2026/11/30/short.wav", 4, 3)}
    for file, _, _ in (*kept.values(), *expired.values()):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_bytes(files.wav_header(0, 1))
    (tmp_path / "outside.wav").write_bytes(b"keep me")
    events = [saved(c, f, age, days) for c, (f, age, days) in (*kept.items(), *expired.items())]
    events += [saved("gone", "2026/09/01/gone.wav", 90, 30), saved("evil", "../outside.wav", 90, 30)]
    conn = await connect(own_database)
    try:
        await store(conn, events)
        dry = await prune(conn, root, NOW, dry_run=True)
        assert sorted(p["call_id"] for p in dry.pruned) == ["old", "short"] and dry.events == []
        assert all((root / f).exists() for f, _, _ in expired.values())
        report = await prune(conn, root, NOW)
        await store(conn, report.events)
        again = await prune(conn, root, NOW)
        demo = await prune(conn, root, NOW, run="demo")
        stored = await conn.fetch("SELECT call_id, type, data FROM events WHERE type IN"
                                  " ('recording.pruned', 'recording.missing') ORDER BY call_id")
    finally:
        await conn.close()
    assert sorted(p["call_id"] for p in report.pruned) == ["old", "short"]
    assert [(p["call_id"], p["age_days"]) for p in sorted(report.pruned, key=lambda p: p["call_id"])] == [
        ("old", 64.0), ("short", 4.0)]
    assert not any((root / f).exists() for f, _, _ in expired.values())
    assert all((root / f).exists() for f, _, _ in kept.values())
    assert not (root / "2026/10/01").exists() and (root / "2026/12/01").exists()   # empty day removed
    assert (tmp_path / "outside.wav").read_bytes() == b"keep me"
    assert {m["call_id"]: m["reason"] for m in report.missing}["gone"] == "no such file"
    assert "must stay under the recordings directory" in {m["call_id"]: m["reason"] for m in report.missing}["evil"]
    assert [(r["call_id"], r["type"]) for r in stored] == [
        ("evil", "recording.missing"), ("gone", "recording.missing"), ("old", "recording.pruned"),
        ("short", "recording.pruned")]
    assert again.pruned == [] and again.missing == []                   # settled: nothing twice
    assert demo.pruned == [] and demo.missing == []                     # another run's recordings are not its
    assert report.lines()[-1] == "2 recording(s) deleted, 2 missing"


def test_cli_prune_runs_against_the_configured_store(own_database: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "rec"
    (root / "2020/01/01").mkdir(parents=True)
    (root / "2020/01/01/x.wav").write_bytes(files.wav_header(0, 1))

    async def seed() -> None:
        conn = await connect(own_database)
        try:
            await store(conn, [Event(NOW - 400 * DAY, "recording.saved", call_id="x",
                                     data={"file": "2020/01/01/x.wav", "retention_days": 90})])
        finally:
            await conn.close()

    asyncio.run(seed())
    config = tmp_path / "router.yaml"
    config.write_text(f"skills: [{{id: s, name: S}}]\nagents: []\nqueues: [{{id: q}}]\n"
                      f"database: {{dsn: '{own_database}'}}\nrecording: {{directory: rec}}\n")
    assert main(["recordings", "prune", "--config", str(config), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and [p["file"] for p in dry["pruned"]] == ["2020/01/01/x.wav"]
    assert (root / "2020/01/01/x.wav").exists()
    assert main(["recordings", "prune", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "deleted 2020/01/01/x.wav (call x," in out and not (root / "2020/01/01/x.wav").exists()


def test_a_router_that_takes_over_a_recorded_call_still_saves_its_recording() -> None:
    """Recovery reads the live channel's ROUTER_RECORD: the call's hang-up then saves the file."""
    from router.engine.engine import Engine
    from router.pbx.ami import ChannelStatus
    from router.pbx.recovery import plan as recover
    from router.store.recovery import fold
    c = replace(centre({"a1": {"sales": 5}}, [queue("sales", {"sales": 1}, recording=RecordingPolicy(
        mode="all", retention_days=7))]), recording=RecordingSettings("/srv/rec", 90, "/ast/rec"))
    t0 = NOW - 60
    store = fold([{"ts": t0 + ts, "type": kind, "call_id": "c1", "queue": q, "agent": a, "data": data}
                  for ts, kind, q, a, data in [
                      (0, "agent.state", None, "a1", {"state": "available", "previous": "logged_out"}),
                      (0, "call.arrived", None, None, {"caller_id": "0601"}),
                      (1, "queue.joined", "sales", None, {"priority": 0}),
                      (2, "agent.offered", "sales", "a1", {}), (3, "call.connected", "sales", "a1", {}),
                      (3, "agent.state", None, "a1", {"state": "on_call", "previous": "reserved"})]])
    channels = [ChannelStatus(CALLER, "u-c1", "L1", dp.CONNECT_CONTEXT, "s", "Dial", "B1",
                              {dp.CALL_ID: "c1", dp.RECORD: "/ast/rec/2026/12/04/c1.raw"}, "0601"),
                ChannelStatus(AGENT_LEG, "u-a", "L1", "agents", "a1", "Wait", "B1", {})]
    result = recover(c, channels, store, NOW)
    [(restored, record)] = result.calls
    assert record.recorded and record.recording.file == "2026/12/04/c1.wav" and record.recording.options == "D"
    assert record.recording.retention_days == 7
    board = Switchboard(c, Engine(c))
    for message in (*result.agents, restored):
        board.engine.handle(message, NOW)
    board.adopt(record)
    steps = board.on_ami(Hangup(CALLER, "u-c1", "u-c1", "16"), NOW + 5)
    [save] = [s for s in steps if isinstance(s, SaveRecording)]
    assert save.keep and save.recording.capture == "2026/12/04/c1.raw"
    assert files.resolve("/srv/rec", save.recording.file) == Path("/srv/rec/2026/12/04/c1.wav")



@pytest.mark.asyncio(loop_scope="session")
async def test_serve_prunes_daily_only_while_it_leads(own_database: str, tmp_path: Path) -> None:
    from router.recording.prune import run_daily
    root = tmp_path / "rec"
    (root / "2020/01/01").mkdir(parents=True)
    (root / "2020/01/01/y.wav").write_bytes(files.wav_header(0, 1))
    conn = await connect(own_database)
    try:
        await store(conn, [saved("y", "2020/01/01/y.wav", 400, 90)])
    finally:
        await conn.close()
    recorded: list[Event] = []
    standby = asyncio.create_task(run_daily(own_database, root, recorded.append, lambda: False,
                                            first_after_s=0, every_s=0.05))
    await asyncio.sleep(0.3)
    standby.cancel()
    assert recorded == [] and (root / "2020/01/01/y.wav").exists()
    leader = asyncio.create_task(run_daily(own_database, root, recorded.append, lambda: True,
                                           first_after_s=0, every_s=3600))
    async with asyncio.timeout(10):
        while not recorded:
            await asyncio.sleep(0.05)
    leader.cancel()
    assert [(e.type, e.call_id, e.data["file"]) for e in recorded] == [("recording.pruned", "y", "2020/01/01/y.wav")]
    assert not (root / "2020/01/01/y.wav").exists()
