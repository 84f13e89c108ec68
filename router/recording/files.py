"""Recording files: their names, the one place their paths are built, what is in them.

Theory of operation
-------------------
A recording's name is made by the router from its own call id and the day the
call connected (`name`: ``2026/12/04/<call id>.wav``), never from caller input,
and is stored in events as a name *relative* to the recordings directory.
Whoever opens, serves or deletes a recording goes through `resolve`, which
refuses a name that is absolute, climbs with ``..``, or leads (through a
symlink) out of the directory.

Asterisk writes the files (MixMonitor).  A mixed recording is the file Asterisk
wrote (WAV or Ogg/Opus).  A stereo one is captured with MixMonitor's ``D``
option, which writes raw interleaved 16-bit samples at 8 kHz (the ``.raw``
capture); `wav_from_raw` wraps it as a two-channel WAV, caller left and agent
right, and removes the capture.  `probe` reads size and duration from the file
itself: the WAV header's data size, or the last Ogg page's granule position.
"""
from __future__ import annotations

import array
import os
import struct
from datetime import datetime, timezone
from pathlib import Path

RAW_RATE = 8000                         # MixMonitor's .raw (signed linear, 8 kHz)
CHUNK_BYTES = 1 << 20                   # a multiple of 4: whole sample pairs
EXTENSIONS = {"wav": "wav", "opus": "opus"}


class UnsafePath(ValueError):
    """A recording name that would lead out of the recordings directory."""


def name(call_id: str, at: float, fmt: str) -> str:
    """The relative file name of a call's recording: day of `at` (UTC) / call id . extension."""
    if not call_id or not all(ch.isalnum() or ch in "-_" for ch in call_id):
        raise UnsafePath(f"not a call id: {call_id!r}")
    day = datetime.fromtimestamp(at, timezone.utc)
    return f"{day:%Y/%m/%d}/{call_id}.{EXTENSIONS[fmt]}"


def resolve(directory: str | Path, file: str) -> Path:
    """The path of recording `file` under `directory`; UnsafePath if it would leave it."""
    if not isinstance(file, str) or not file or "\x00" in file or "\\" in file:
        raise UnsafePath(f"not a recording name: {file!r}")
    relative = Path(file)
    if relative.is_absolute() or ".." in relative.parts:
        raise UnsafePath(f"recording name must stay under the recordings directory: {file!r}")
    root = Path(directory).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise UnsafePath(f"recording name leads out of the recordings directory: {file!r}")
    return path


def wav_header(data_bytes: int, channels: int, rate: int = RAW_RATE, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


def wav_from_raw(raw: Path, wav: Path, *, swap: bool = False) -> None:
    """Wrap MixMonitor's interleaved capture (read, write) as a stereo WAV, in chunks; `swap` puts
    the write side left (the recorded channel was the agent's).  The capture is removed."""
    frames = raw.stat().st_size // 4 * 4                  # whole (read, write) sample pairs
    partial = wav.with_suffix(".partial")
    with open(raw, "rb") as source, open(partial, "wb") as out:
        out.write(wav_header(frames, 2))
        left = frames
        while left:
            chunk = source.read(min(left, CHUNK_BYTES))
            left -= len(chunk)
            if swap:
                samples = array.array("h", chunk)       # pairs moved whole: byte order does not matter
                samples[0::2], samples[1::2] = samples[1::2], samples[0::2]
                chunk = samples.tobytes()
            out.write(chunk)
    os.replace(partial, wav)
    raw.unlink()


def probe(path: Path) -> tuple[int, float]:
    """(size in bytes, duration in seconds) of a WAV or Ogg/Opus file, from the file itself."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4096)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            return size, _wav_duration(head, size)
        if head[:4] == b"OggS":
            handle.seek(max(0, size - 65536))
            return size, _ogg_duration(head, handle.read())
    raise ValueError(f"{path.name}: neither WAV nor Ogg")


def _wav_duration(head: bytes, size: int) -> float:
    at, rate, block, data = 12, 0, 0, None
    while at + 8 <= len(head):
        chunk, length = head[at:at + 4], struct.unpack("<I", head[at + 4:at + 8])[0]
        if chunk == b"fmt ":
            _, _, rate, _, block = struct.unpack("<HHIIH", head[at + 8:at + 22])
        elif chunk == b"data":
            unwritten = length in (0, 0xFFFFFFFF)        # a header not rewritten yet: count what is there
            data = size - at - 8 if unwritten else min(length, size - at - 8)
            break
        at += 8 + length + (length & 1)
    if not rate or not block or data is None:
        raise ValueError("WAV without fmt or data chunk")
    return data / (rate * block)


def _ogg_duration(head: bytes, tail: bytes) -> float:
    """Opus: the last page's granule position (48 kHz samples) less the header's pre-skip."""
    at = head.find(b"OpusHead")
    pre_skip = struct.unpack("<H", head[at + 10:at + 12])[0] if at >= 0 else 0
    last = tail.rfind(b"OggS")
    if last < 0 or last + 14 > len(tail):
        raise ValueError("Ogg without pages")
    granule = struct.unpack("<q", tail[last + 6:last + 14])[0]
    return max(0, granule - pre_skip) / 48000
