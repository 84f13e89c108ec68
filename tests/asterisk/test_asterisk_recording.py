"""Call recording on the real Asterisk: MixMonitor started by the router's dialplan variables.

A centre whose queue records every call (stereo WAV) runs the real adapter
against the sandbox (as tests/asterisk/test_call_flows.py does).  The caller
(``[test-caller]`` with CALLER_TONE) plays a 1000 Hz tone from its side, the
agent (``Local/7001@agents``) a 440 Hz tone from the other, so the file shows
which side each channel holds.  Asterisk runs in the sandbox's chroot: it
writes under /var/spool/asterisk/monitor/acd-router-tests, which the router
(and this test) read as ROOT + that path (`recording.asterisk_directory`
against `recording.directory`).  Nothing asserts on wall time; durations are
read from the files and compared with the router's own events.
"""
from __future__ import annotations

import array
import dataclasses
import itertools
import math
import shutil
import textwrap
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from router.config.model import CallbackPolicy, RecordingPolicy, RecordingSettings
from router.engine.messages import CallbackAccepted
from router.engine.engine import Engine
from router.ivr.registry import FlowRegistry
from router.pbx.adapter import AsteriskAdapter
from router.pbx.ami import AmiLink
from router.pbx.fastagi import FastAGIServer
from router.recording import files
from router.store.database import connect
from router.store.writer import EventWriter

from tests.asterisk.harness import Sandbox
from tests.factories import centre, queue

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="session")]

CALL_TIMEOUT_S = 60.0
CALLER_HZ, AGENT_HZ = 1000, 440
IN_CHROOT = "/var/spool/asterisk/monitor/acd-router-tests"
_numbers = itertools.count(7601)

FLOW = textwrap.dedent("""\
    flow: main
    start: sales
    nodes:
      sales: {type: queue, queue: sales}
    """)
# The queue's post-call flow (a card payment after the agent): the card entry is sensitive.
PAY_FLOW = textwrap.dedent("""\
    flow: pay
    start: intro
    variables: {card: "", queue: "", agent: ""}
    nodes:
      intro: {type: play, prompts: beep, next: card}
      card:
        type: collect
        sensitive: true
        prompt: beep
        into: card
        max_digits: 16
        first_digit_timeout_s: 3
        retries: 0
        next: thanks
        fallback: thanks
      thanks: {type: play, prompts: [beep, beep], next: wait}
      wait: {type: collect, prompt: beep, into: card, max_digits: 1, first_digit_timeout_s: 2, retries: 0,
             next: bye, fallback: bye}
      bye: {type: hangup}
    """)
PROMPTS = "languages: [en]\nprompts:\n  beep: a beep\n"


@asynccontextmanager
async def recording_router(sandbox: Sandbox, dsn: str, tmp_path: Path, *, agent: str = "7001",
                           **queue_options) -> AsyncIterator[dict]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(FLOW)
    (flows / "pay.yaml").write_text(PAY_FLOW)
    (flows / "prompts.yaml").write_text(PROMPTS)
    host_dir = sandbox.root / IN_CHROOT.lstrip("/")
    test_centre = dataclasses.replace(
        centre({agent: {"sales": 5}}, [queue("sales", {"sales": 1}, wrap_up_s=0.5, **queue_options)],
               skills=("sales",)),
        recording=RecordingSettings(directory=str(host_dir), retention_days=30, asterisk_directory=IN_CHROOT))
    registry = FlowRegistry(flows, known_queues=list(test_centre.queues), known_skills=list(test_centre.skills))
    assert registry.reload().ok
    writer = EventWriter(dsn, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    link = AmiLink(sandbox.host, sandbox.ami_port, sandbox.ami_username, sandbox.ami_secret,
                   ping_interval_s=0.5, ping_timeout_s=1.0, backoff_first_s=0.1, backoff_max_s=0.5)
    adapter = AsteriskAdapter(test_centre, Engine(test_centre), registry, writer, link)
    server = FastAGIServer(adapter.routes(), sandbox.host, sandbox.agi_port)
    await writer.start()
    try:
        await adapter.start()
        await link.start()
        await server.start()
        await adapter.login(agent)
        yield {"adapter": adapter, "link": link, "writer": writer, "directory": host_dir}
        await adapter.drain(CALL_TIMEOUT_S)
        await adapter.close()                       # the recording's file is finished by then
    finally:
        await server.close()
        await adapter.close()
        await link.close()
        await writer.close()


async def place_call(link: AmiLink, *, talk_s: int, hold_s: int = 60) -> str:
    number = str(next(_numbers))
    await link.originate({
        "Channel": "Local/5000@from-trunk", "Context": "test-caller", "Exten": "s", "Priority": "1",
        "CallerID": f"Caller <{number}>", "Timeout": "15000",
        "Variable": [f"HOLD_S={hold_s}", f"__TALK_S={talk_s}", f"CALLER_TONE={CALLER_HZ}",
                     f"__AGENT_TONE={AGENT_HZ}"]})
    return number


async def call_events(router: dict, dsn: str, number: str, until: str) -> list[asyncpg.Record]:
    """The events of the call from `number`, once one of type `until` is among them."""
    import asyncio
    async with asyncio.timeout(CALL_TIMEOUT_S):
        while True:
            await router["writer"].flush()
            conn = await connect(dsn)
            try:
                events = await conn.fetch(
                    "SELECT ts, call_id, type, queue, agent, data FROM events WHERE call_id = ("
                    " SELECT call_id FROM events WHERE type = 'call.arrived' AND data->>'caller_id' = $1"
                    " ORDER BY ts DESC LIMIT 1) ORDER BY ts, id", number)
            finally:
                await conn.close()
            if any(e["type"] == until for e in events):
                return events
            await asyncio.sleep(0.2)


def channels(path: Path) -> tuple[int, list[array.array]]:
    """The WAV's rate and its channels as sample arrays."""
    with wave.open(str(path)) as wav:
        rate, count = wav.getframerate(), wav.getnchannels()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    return rate, [samples[i::count] for i in range(count)]


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if len(samples) else 0.0


def frequency(samples, rate: int) -> float:
    """Dominant frequency by zero crossings (a pure tone)."""
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


def by(events, kind: str):
    return next(e for e in events if e["type"] == kind)


@pytest.fixture
def clean_directory(asterisk: Sandbox):
    host_dir = asterisk.root / IN_CHROOT.lstrip("/")
    shutil.rmtree(host_dir, ignore_errors=True)
    yield host_dir


async def test_connected_call_is_recorded_in_stereo_with_caller_left_and_agent_right(
        asterisk: Sandbox, schema: str, tmp_path: Path, clean_directory: Path) -> None:
    policy = RecordingPolicy(mode="all", channels="stereo", format="wav", retention_days=7)
    async with recording_router(asterisk, schema, tmp_path, recording=policy) as router:
        number = await place_call(router["link"], talk_s=4)
        events = await call_events(router, schema, number, "recording.saved")
    started, saved, ended = by(events, "recording.started"), by(events, "recording.saved"), by(events, "call.ended")
    call_id = started["call_id"]
    assert started["data"] == {"file": saved["data"]["file"], "channels": "stereo", "format": "wav"}
    assert saved["data"]["file"].endswith(f"/{call_id}.wav") and saved["data"]["retention_days"] == 7
    assert (saved["queue"], saved["agent"]) == ("sales", "7001")
    path = files.resolve(clean_directory, saved["data"]["file"])
    assert path.stat().st_size == saved["data"]["size_bytes"]
    assert not path.with_suffix(".raw").exists()            # the capture became the WAV
    rate, (left, right) = channels(path)
    duration = len(left) / rate
    print(f"recorded {duration:.2f} s; talk_s {ended['data']['talk_s']:.2f}; agent talks 4 s")
    assert abs(saved["data"]["duration_s"] - duration) < 0.01
    assert abs(duration - ended["data"]["talk_s"]) <= 1.0
    assert abs(duration - 4) <= 1.0
    middle = slice(int(rate * 1), int(rate * 3))           # inside the talk, away from the edges
    assert rms(left[middle]) > 500 and rms(right[middle]) > 500
    assert abs(frequency(left[middle], rate) - CALLER_HZ) < 50
    assert abs(frequency(right[middle], rate) - AGENT_HZ) < 50


async def test_sensitive_ivr_span_is_silent_in_the_recording(
        asterisk: Sandbox, schema: str, tmp_path: Path, clean_directory: Path) -> None:
    policy = RecordingPolicy(mode="all", channels="stereo", format="wav")
    async with recording_router(asterisk, schema, tmp_path, recording=policy, survey="pay") as router:
        number = await place_call(router["link"], talk_s=2)
        events = await call_events(router, schema, number, "recording.saved")
    paused, resumed = by(events, "recording.paused"), by(events, "recording.resumed")
    assert paused["data"] == {"reason": "sensitive", "by": "card"}
    assert resumed["data"] == {"reason": "sensitive", "by": "card"}
    span_s = resumed["ts"].timestamp() - paused["ts"].timestamp()
    saved = by(events, "recording.saved")
    rate, (left, right) = channels(files.resolve(clean_directory, saved["data"]["file"]))
    window = rate // 10
    loud = [rms(left[i:i + window]) for i in range(0, len(left) - window + 1, window)]
    quiet_runs = [len(list(run)) for silent, run in itertools.groupby(level < 50 for level in loud) if silent]
    silent_s = max(quiet_runs) / 10
    print(f"muted {span_s:.2f} s by the events; silent {silent_s:.1f} s in the file of "
          f"{len(left) / rate:.1f} s")
    assert abs(silent_s - span_s) <= 0.5
    start = next(i for i, level in enumerate(loud) if level < 50)
    assert min(loud[max(0, start - 5):start]) > 500          # the caller's tone right before ...
    after = start + max(quiet_runs)
    assert min(loud[after + 1:after + 6]) > 500             # ... and again after the span
    assert rms(right[start * window:(start + max(quiet_runs)) * window]) < 50


@pytest.mark.parametrize("fmt", ["wav", "opus"])
async def test_mixed_recording_in_each_format_after_the_announcement(
        asterisk: Sandbox, ami, schema: str, tmp_path: Path, clean_directory: Path, fmt: str) -> None:
    policy = RecordingPolicy(mode="all", channels="mixed", format=fmt, announce="beep")
    async with recording_router(asterisk, schema, tmp_path, recording=policy) as router:
        number = await place_call(router["link"], talk_s=3)
        events = await call_events(router, schema, number, "recording.saved")
    await ami.wait_event(lambda e: e.event == "Newexten" and e.get("Context") == "router-connect"
                         and e.get("AppData", "").endswith("?Playback(beep)"))   # ExecIf(LEN?Playback)
    saved, ended = by(events, "recording.saved"), by(events, "call.ended")
    path = files.resolve(clean_directory, saved["data"]["file"])
    assert path.suffix == f".{fmt}" and path.stat().st_size == saved["data"]["size_bytes"] > 0
    print(f"{fmt}: recorded {saved['data']['duration_s']:.2f} s; talk_s {ended['data']['talk_s']:.2f}")
    assert abs(saved["data"]["duration_s"] - ended["data"]["talk_s"]) <= 1.0
    if fmt == "wav":
        rate, (mixed,) = channels(path)
        assert rms(mixed[rate:2 * rate]) > 500


async def test_supervisor_pause_mutes_the_recording_until_resumed(
        asterisk: Sandbox, schema: str, tmp_path: Path, clean_directory: Path) -> None:
    import asyncio
    policy = RecordingPolicy(mode="all", channels="stereo", format="wav")
    async with recording_router(asterisk, schema, tmp_path, recording=policy) as router:
        adapter = router["adapter"]
        number = await place_call(router["link"], talk_s=6)
        events = await call_events(router, schema, number, "recording.started")
        call_id = events[0]["call_id"]
        await asyncio.sleep(1.5)
        assert await adapter.recording(call_id, True, "supervisor", "sup1") == {"call_id": call_id, "paused": True}
        await asyncio.sleep(2.0)
        await adapter.recording(call_id, False, "supervisor", "sup1")
        events = await call_events(router, schema, number, "recording.saved")
    paused, resumed = by(events, "recording.paused"), by(events, "recording.resumed")
    assert paused["data"] == resumed["data"] == {"reason": "supervisor", "by": "sup1"}
    span_s = resumed["ts"].timestamp() - paused["ts"].timestamp()
    rate, (left, right) = channels(files.resolve(clean_directory, by(events, "recording.saved")["data"]["file"]))
    window = rate // 10
    loud = [rms(left[i:i + window]) + rms(right[i:i + window]) for i in range(0, len(left) - window + 1, window)]
    quiet = [len(list(run)) for silent, run in itertools.groupby(level < 50 for level in loud) if silent]
    print(f"paused {span_s:.2f} s by the events; silent {max(quiet) / 10:.1f} s in the file")
    assert abs(max(quiet) / 10 - span_s) <= 0.5


async def test_call_back_is_recorded_with_the_customer_left(
        asterisk: Sandbox, schema: str, tmp_path: Path, clean_directory: Path) -> None:
    """Agent first: MixMonitor runs on the agent's leg (``Local/8001@agents``, silent), which then
    dials the customer (``Local/77...@customers``: a 1000 Hz tone for 5 s); the router writes the
    customer on the left all the same."""
    import asyncio
    import uuid
    policy = RecordingPolicy(mode="all", channels="stereo", format="wav")
    callback = CallbackPolicy(min_digits=4, dial="Local/{number}@customers", whisper=None)
    call_id = str(uuid.uuid4())
    async with recording_router(asterisk, schema, tmp_path, agent="8001", recording=policy,
                                callback=callback) as router:
        adapter = router["adapter"]
        await adapter.logout("8001")
        adapter._run([CallbackAccepted(call_id, "770001", queue="sales", caller_id="770001")])
        await adapter.login("8001")
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                await router["writer"].flush()
                conn = await connect(schema)
                try:
                    events = await conn.fetch("SELECT ts, type, queue, agent, data FROM events WHERE call_id = $1"
                                              " ORDER BY ts, id", call_id)
                finally:
                    await conn.close()
                if any(e["type"] == "recording.saved" for e in events):
                    break
                await asyncio.sleep(0.2)
    assert [e["type"] for e in events if e["type"].startswith("recording.")] == ["recording.started",
                                                                                 "recording.saved"]
    saved = by(events, "recording.saved")
    assert (saved["queue"], saved["agent"]) == ("sales", "8001")
    rate, (left, right) = channels(files.resolve(clean_directory, saved["data"]["file"]))
    print(f"call-back recorded {len(left) / rate:.2f} s; the customer talks 5 s")
    assert abs(len(left) / rate - 5) <= 1.0
    middle = slice(rate, 3 * rate)
    assert rms(left[middle]) > 500 and abs(frequency(left[middle], rate) - 1000) < 50
    assert rms(right[middle]) < 50                              # the simulated agent says nothing
