"""The demo records calls: `acd-router serve` without `ami:` (router.sim.realtime.run_demo) on the
sample centre, in-process at high speed on a real PostgreSQL (a database of this module's own: the
demo's run is always 'demo') with a free web port, is stopped as Ctrl-C stops it.  The sampled calls
of the queues that record (the sample centre's policy, router.recording.policy.sampled) get
recording.started at connect and recording.saved at the end, with a synthetic WAV of the simulated
talk time under the demo's data directory, stereo where the policy says; the recordings API lists
them and serves the audio to a supervisor; the prune deletes them past their retention.  Also: an
event a web action records on the simulated PBX reaches the writer at once (read-after-write)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import wave
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from router import cli
from router.config import load_config
from router.events import Event
from router.recording import files
from router.recording.policy import sampled
from router.sim.realtime import demo_recordings, run_demo
from router.sim.recording import DemoRecorder, synthetic_audio
from router.store.database import ensure_schema
from tests.conftest import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

SUPERVISOR = "demo-recordings-supervisor-01"
START = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/London"))   # a Monday's morning peak
SPEED = 1800.0                                                             # 30 simulated minutes a second


@pytest.fixture(scope="module")
def demo_dsn() -> Iterator[str]:
    with fresh_database() as dsn:
        yield dsn


async def rows(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def demo_events(dsn: str, *types: str) -> list[dict[str, Any]]:
    found = await rows(dsn, "SELECT type, call_id, queue, agent, extract(epoch FROM ts)::float8 AS ts,"
                            " data::text AS data FROM events WHERE run = 'demo' AND type = ANY($1) ORDER BY ts, id",
                       list(types))
    return [{**row, "data": json.loads(row["data"])} for row in found]


def read_wav(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path)) as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes() / wav.getframerate()


async def test_the_demo_records_sampled_calls_as_synthetic_wav_files(tmp_path, demo_dsn, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ACD_DATABASE_URL", demo_dsn)
    monkeypatch.setenv("ACD_WEB_TOKENS", f"{SUPERVISOR}:supervisor")
    centre = load_config(None)                                   # the packaged sample centre
    policies = {q: centre.queues[q].recording for q in centre.queues}
    recorded_queues = {q for q, p in policies.items() if p.mode != "none"}
    assert recorded_queues == {"billing", "support", "sales"}
    assert {policies[q].channels for q in recorded_queues} == {"stereo", "mixed"}
    data_dir = tmp_path / "data"
    directory = data_dir / "recordings"
    assert demo_recordings(centre, data_dir).recording.directory == str(directory)

    await ensure_schema(demo_dsn)                                 # so the test may read while the demo starts
    ready: list[Any] = []
    demo = asyncio.create_task(run_demo(centre, data_dir=str(data_dir), speed=SPEED, seed=3, start=START,
                                        hours=24.0, web_port=0, on_ready=ready.append))
    # until a stereo and a mixed recording are saved (the demo's own clock; a dead demo fails here)
    saved: list[dict[str, Any]] = []
    while not demo.done():
        saved = await demo_events(demo_dsn, "recording.saved")
        if {policies[e["queue"]].channels for e in saved} == {"stereo", "mixed"}:
            break
        await asyncio.sleep(0.1)
    assert not demo.done(), demo.exception() if demo.done() else None
    web = ready[0]

    # the recordings API lists them, and serves a recording's audio to a supervisor
    headers = {"Authorization": f"Bearer {SUPERVISOR}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(web.url.rstrip("/") + "/api/v1/recordings", headers=headers) as response:
            assert response.status == 200
            listed = {r["call_id"]: r for r in (await response.json())["recordings"]}
        assert {e["call_id"] for e in saved} <= set(listed)
        first = saved[0]
        assert listed[first["call_id"]]["file"] == first["data"]["file"]
        async with http.get(web.url.rstrip("/") + f"/api/v1/recordings/{first['call_id']}/audio",
                            headers=headers) as response:
            assert response.status == 200
            assert response.content_type in ("audio/wav", "audio/x-wav")
            audio = await response.read()
        assert audio == (directory / first["data"]["file"]).read_bytes()
        async with http.get(web.url.rstrip("/") + f"/api/v1/recordings/{first['call_id']}/audio") as response:
            assert response.status == 401                          # no token, no audio

    os.kill(os.getpid(), signal.SIGINT)                            # Ctrl-C: the demo stops
    await demo

    # every sampled call of a recording queue that ended was recorded; no other call was
    connected = {e["call_id"]: e for e in await demo_events(demo_dsn, "call.connected")}
    ended = {e["call_id"]: e for e in await demo_events(demo_dsn, "call.ended") if e["call_id"] in connected}
    started = {e["call_id"]: e for e in await demo_events(demo_dsn, "recording.started")}
    saved_by_call = {e["call_id"]: e for e in await demo_events(demo_dsn, "recording.saved")}
    expected = {c for c, e in connected.items() if e["queue"] in recorded_queues
                and policies[e["queue"]].mode == "sample" and sampled(c, policies[e["queue"]].sample_percent)}
    assert set(started) == expected
    assert set(saved_by_call) == expected & set(ended)
    assert len(saved_by_call) >= 2, saved_by_call
    assert not await demo_events(demo_dsn, "recording.missing")

    for call_id, event in saved_by_call.items():
        policy = policies[event["queue"]]
        begun, connect, end = started[call_id], connected[call_id], ended[call_id]
        assert (begun["ts"], begun["queue"], begun["agent"]) == (connect["ts"], connect["queue"], connect["agent"])
        assert begun["data"] == {"file": event["data"]["file"], "channels": policy.channels, "format": "wav"}
        assert event["agent"] == connect["agent"] and event["ts"] >= end["ts"]
        path = files.resolve(directory, event["data"]["file"])
        assert path.is_file() and path.is_relative_to(data_dir)
        assert event["data"]["file"] == files.name(call_id, connect["ts"], "wav")
        channels, width, rate, seconds = read_wav(path)
        assert (channels, width, rate) == (2 if policy.channels == "stereo" else 1, 1, 8000)
        talk_s = end["data"]["talk_s"]
        assert abs(seconds - talk_s) <= 1.0
        assert event["data"]["size_bytes"] == path.stat().st_size
        assert event["data"]["duration_s"] == pytest.approx(seconds, abs=0.001)
        assert event["data"]["retention_days"] == centre.recording.retention_days == 1
    stereo = next(e for e in saved_by_call.values() if policies[e["queue"]].channels == "stereo")
    with wave.open(str(directory / stereo["data"]["file"])) as wav:
        frames = wav.readframes(wav.getnframes())
    left, right = frames[0::2], frames[1::2]
    assert left.strip(b"\x80") and right.strip(b"\x80")           # the caller left, the agent right

    # retention: once their day is up (START is weeks ago), `recordings prune --run demo` finds them under
    # the demo's data directory, as the demo's daily prune does, and deletes them with their day directories
    capsys.readouterr()
    argv = ["recordings", "prune", "--run", "demo", "--data-dir", str(data_dir), "--json"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert {p["call_id"] for p in report["pruned"]} == set(saved_by_call) and report["missing"] == []
    assert not any(path.is_file() for path in directory.rglob("*"))
    assert len(await demo_events(demo_dsn, "recording.pruned")) == len(saved_by_call)


async def test_synthetic_audio_is_the_talk_time_with_turns_and_silent_pauses() -> None:
    stereo = synthetic_audio("c000042", 12.5, True)
    assert len(stereo) == 12.5 * 8000 * 2
    assert stereo == synthetic_audio("c000042", 12.5, True)        # the same call, the same file
    left, right = stereo[0::2], stereo[1::2]
    assert left.strip(b"\x80") and right.strip(b"\x80")
    # a turn is one voice: wherever the caller (left) speaks, the agent (right) is silent
    assert not any(a != 0x80 and b != 0x80 for a, b in zip(left, right))
    paused = synthetic_audio("c000042", 12.5, False, ((2.0, 7.0),))
    assert len(paused) == 12.5 * 8000
    assert set(paused[2 * 8000:7 * 8000]) == {0x80} and paused[:2 * 8000].strip(b"\x80")


async def test_a_paused_span_is_silence_in_the_demo_recording(tmp_path) -> None:
    centre = load_config(None)
    policy = centre.queues["billing"].recording
    call_id = next(f"c{i}" for i in range(10_000) if sampled(f"c{i}", policy.sample_percent))
    skipped = next(f"c{i}" for i in range(10_000) if not sampled(f"c{i}", policy.sample_percent))
    stored: list[Event] = []
    t0 = START.timestamp()
    recorder = DemoRecorder(centre, tmp_path, stored.append, lambda: t0 + 10.5)
    assert recorder.follow(Event(t0, "call.connected", call_id=skipped, queue="billing", agent="a001")) == []
    assert recorder.follow(Event(t0, "call.connected", call_id="s1", queue="spanish", agent="a002")) == []
    [begun] = recorder.follow(Event(t0, "call.connected", call_id=call_id, queue="billing", agent="a001"))
    assert (begun.type, begun.data["channels"]) == ("recording.started", "stereo")
    recorder.pause(call_id, True, t0 + 2.0)                 # a supervisor's pause, then resume
    recorder.pause(call_id, False, t0 + 5.0)
    recorder.follow(Event(t0 + 10.0, "call.ended", call_id=call_id, queue="billing", agent="a001",
                          data={"outcome": "answered", "talk_s": 10.0}))
    await recorder.drain()
    [saved] = stored
    assert (saved.type, saved.ts, saved.data["duration_s"]) == ("recording.saved", t0 + 10.5, 10.0)
    with wave.open(str(tmp_path / saved.data["file"])) as wav:
        frames = wav.readframes(wav.getnframes())
    assert set(frames[2 * 8000 * 2:5 * 8000 * 2]) == {0x80}    # both channels silent while paused
    assert frames[:2 * 8000 * 2].strip(b"\x80") and frames[5 * 8000 * 2:].strip(b"\x80")


async def test_an_event_a_web_action_records_reaches_the_writer_at_once(live) -> None:
    """`record` stores behind the outbox's simulator events: a flush alone (no PBX loop) has both."""
    live.queue_call("raw1", "billing")                     # simulator events in the outbox
    mark = Event(live.pbx.now(), "admin.action", call_id="raw1", data={"action": "test.mark", "by": "test"})
    live.pbx.record(mark)
    await live.writer.flush()
    stored = await rows(live.web.dsn, "SELECT type FROM events WHERE run = $1 AND call_id = 'raw1' ORDER BY ts, id",
                        live.run)
    assert {"queue.joined", "admin.action"} <= {r["type"] for r in stored}


async def test_a_config_that_names_a_recordings_directory_keeps_it(tmp_path) -> None:
    centre = load_config(None)
    named = replace(centre, recording=replace(centre.recording, directory=str(tmp_path / "elsewhere")))
    assert demo_recordings(named, tmp_path / "data").recording.directory == str(tmp_path / "elsewhere")
    assert demo_recordings(centre, tmp_path / "data").recording.directory == str(tmp_path / "data" / "recordings")
