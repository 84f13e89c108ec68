"""The demo's call recorder: the queues' recording policy on the simulated PBX, with synthetic audio.

Theory of operation
-------------------
On Asterisk, MixMonitor writes what was said.  The demo's PBX is simulated, so
nothing was said; `DemoRecorder` follows the simulator's events and does what
the Asterisk side does with the same policy (router.recording.policy.plan, the
same sampling by a hash of the call id): ``recording.started`` (file, channels,
format) with a call's ``call.connected``, and when the call ends a WAV file of
exactly the simulated talk time, then ``recording.saved`` (file, size_bytes,
duration_s, retention_days; size and duration read back from the file by
router.recording.files.probe) — or ``recording.missing`` when the file could
not be written.

The audio is SYNTHETIC and sounds it: caller and agent take turns of tone
bursts (syllables of a sine with a soft envelope), the caller's low (300-420
Hz), the agent's high (560-760 Hz), with short gaps; a stereo policy puts the
caller left and the agent right, a mixed one both in one channel.  Spans a
supervisor or agent paused are silence.  The encoding is 8 kHz, 8-bit
unsigned PCM WAV (Chromium's <audio> plays it): 8 kB a second mixed, 16 kB
stereo.  The same call id always gives the same file.

Writing a five-minute stereo call (4.8 MB) costs milliseconds, so it runs on
a worker thread of its own (one, so files are written in call order), never
on the event loop; the saved event follows when the file is complete (written
as ``.partial``, then renamed).  `drain` waits for the writes under way.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from router.config.model import Centre
from router.events import Event
from router.recording import files
from router.recording.policy import Recording, plan

RATE = 8000                         # samples per second
SILENCE = 128                       # 8-bit unsigned PCM's zero
SYLLABLE_S, GAP_S = 0.18, 0.06      # one tone burst and the gap after it
CALLER_HZ = (300.0, 340.0, 380.0, 420.0)
AGENT_HZ = (560.0, 620.0, 690.0, 760.0)
AMPLITUDE = 56                      # of 127


def _burst(hz: float) -> bytes:
    """One syllable: `hz` under a raised-cosine envelope, then a gap of silence (mono, u8)."""
    n, gap = round(SYLLABLE_S * RATE), round(GAP_S * RATE)
    tone = bytes(SILENCE + round(AMPLITUDE * 0.5 * (1 - math.cos(2 * math.pi * i / n))
                                 * math.sin(2 * math.pi * hz * i / RATE)) for i in range(n))
    return tone + bytes([SILENCE]) * gap


def _interleave(left: bytes, right: bytes) -> bytes:
    out = bytearray(2 * len(left))
    out[0::2], out[1::2] = left, right
    return bytes(out)


_SYLLABLES = {"caller": [_burst(hz) for hz in CALLER_HZ], "agent": [_burst(hz) for hz in AGENT_HZ]}
_QUIET = bytes([SILENCE]) * len(_SYLLABLES["caller"][0])
_STEREO = {"caller": [_interleave(s, _QUIET) for s in _SYLLABLES["caller"]],
           "agent": [_interleave(_QUIET, s) for s in _SYLLABLES["agent"]]}


def synthetic_audio(call_id: str, seconds: float, stereo: bool,
                    silent: tuple[tuple[float, float], ...] = ()) -> bytes:
    """The PCM samples (u8, 8 kHz, interleaved when stereo) of a call of `seconds`: caller and
    agent turns of tone bursts, the same for the same call id; `silent` spans (s from the start)
    are silence."""
    channels = 2 if stereo else 1
    frames = max(0, round(seconds * RATE))
    frames += frames % 2 if not stereo else 0                    # an even data chunk: no pad byte
    rng = random.Random(call_id)
    voices = _STEREO if stereo else _SYLLABLES
    pause = bytes([SILENCE]) * channels
    parts: list[bytes] = []
    size, speaker, target = 0, "agent", frames * channels       # the agent greets first
    while size < target:
        for _ in range(rng.randint(4, 22)):                     # a turn of 1-5 s
            burst = rng.choice(voices[speaker])
            parts.append(burst)
            size += len(burst)
        gap = pause * round(rng.uniform(0.3, 0.9) * RATE)
        parts.append(gap)
        size += len(gap)
        speaker = "caller" if speaker == "agent" else "agent"
    data = bytearray(b"".join(parts)[:target])
    for start, end in silent:
        lo, hi = max(0, round(start * RATE)) * channels, min(frames, round(end * RATE)) * channels
        if hi > lo:
            data[lo:hi] = pause * ((hi - lo) // channels)
    return bytes(data)


def write_recording(path: Path, call_id: str, seconds: float, stereo: bool,
                    silent: tuple[tuple[float, float], ...] = ()) -> tuple[int, float]:
    """Write the call's synthetic WAV at `path` (via a .partial file); (size, duration) read back."""
    data = synthetic_audio(call_id, seconds, stereo, silent)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        out.write(files.wav_header(len(data), 2 if stereo else 1, RATE, bits=8))
        out.write(data)
    os.replace(partial, path)
    return files.probe(path)


@dataclass
class _Live:
    """A connected call being recorded."""
    recording: Recording
    queue: str
    agent: str | None
    connected_at: float
    paused_at: float | None = None
    silent: list[tuple[float, float]] = field(default_factory=list)   # paused spans, s from the start


class DemoRecorder:
    """Recordings of the simulated PBX's calls, written under `directory`."""

    def __init__(self, centre: Centre, directory: str | Path, record: Callable[[Event], None],
                 now: Callable[[], float]) -> None:
        self.centre, self.directory, self._record, self._now = centre, Path(directory), record, now
        self.live: dict[str, _Live] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def follow(self, event: Event) -> list[Event]:
        """The simulator's `event` seen: the events it brings about now (``recording.started``)."""
        if event.type == "call.connected" and event.call_id and event.queue in self.centre.queues:
            recording = plan(self.centre, event.queue, event.call_id, event.ts)
            if recording is None or recording.format != "wav":      # the demo writes WAV only
                return []
            self.live[event.call_id] = _Live(recording, event.queue, event.agent, event.ts)
            return [Event(event.ts, "recording.started", call_id=event.call_id, queue=event.queue,
                          agent=event.agent, data={"file": recording.file, "channels": recording.channels,
                                                   "format": recording.format})]
        if event.type == "call.ended" and event.call_id in self.live:
            live = self.live.pop(event.call_id)
            if live.paused_at is not None:
                live.silent.append((live.paused_at - live.connected_at, event.ts - live.connected_at))
            task = asyncio.get_running_loop().create_task(self._save(event.call_id, live, event.ts))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return []

    def recording(self, call_id: str) -> _Live | None:
        return self.live.get(call_id)

    def pause(self, call_id: str, paused: bool, at: float) -> None:
        live = self.live[call_id]
        if paused:
            live.paused_at = at
        elif live.paused_at is not None:
            live.silent.append((live.paused_at - live.connected_at, at - live.connected_at))
            live.paused_at = None

    async def _save(self, call_id: str, live: _Live, ended_at: float) -> None:
        r = live.recording
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-recording")
        try:
            path = files.resolve(self.directory, r.file)
            size, duration = await asyncio.get_running_loop().run_in_executor(
                self._pool, write_recording, path, call_id, ended_at - live.connected_at, r.channels == "stereo",
                tuple(live.silent))
        except (OSError, ValueError) as error:
            self._record(Event(max(self._now(), ended_at), "recording.missing", call_id=call_id, queue=live.queue,
                               agent=live.agent, data={"file": r.file, "reason": str(error)}))
            return
        self._record(Event(max(self._now(), ended_at), "recording.saved", call_id=call_id, queue=live.queue,
                           agent=live.agent, data={"file": r.file, "size_bytes": size,
                                                   "duration_s": round(duration, 3),
                                                   "retention_days": r.retention_days}))

    async def drain(self) -> None:
        """Wait for the files being written and their events; then the worker thread ends."""
        while self._tasks:
            await asyncio.gather(*self._tasks)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
