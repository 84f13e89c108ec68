"""Which calls are recorded, and how: a queue's policy turned into a `Recording`.

Theory of operation
-------------------
Pure functions, no I/O: the switchboard (router.pbx.calls) asks `plan` when it
offers a call to an agent, and gets what the dialplan needs to start MixMonitor
on the caller's channel, or None.  A sampled queue records a call when a hash
of the call id falls under its percentage (`sampled`): the same call id always
gets the same answer, so a router that restarts (or a standby that takes over)
decides as the first one did.  A router that takes over a connected call reads
the file from the channel's ``ROUTER_RECORD`` (`adopted`), so the recording is
still saved when the call ends.
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from router.config.model import Centre
from router.recording import files


@dataclass(frozen=True, slots=True)
class Recording:
    """One call's recording, as planned."""
    file: str                   # the saved file, relative to the recordings directory
    capture: str                # what Asterisk writes (a stereo recording's .raw), relative too
    asterisk_path: str          # `capture` as Asterisk sees it (MixMonitor's file)
    options: str                # MixMonitor options: "D" (stereo, interleaved) or ""
    channels: str               # stereo | mixed
    format: str                 # wav | opus
    retention_days: int
    announce: str | None        # prompt played to the caller before the agent is rung


def sampled(call_id: str, percent: float) -> bool:
    """Whether `call_id` falls in a `percent` sample; the same for a call id every time."""
    bucket = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big") % 10_000
    return bucket < round(percent * 100)


def plan(centre: Centre, queue: str, call_id: str, at: float) -> Recording | None:
    """The recording of `call_id` connected from `queue` at `at` (epoch s), or None."""
    policy = centre.queues[queue].recording
    if policy.mode == "none" or (policy.mode == "sample" and not sampled(call_id, policy.sample_percent)):
        return None
    file = files.name(call_id, at, policy.format)
    stereo = policy.channels == "stereo"
    capture = file[:-len(".wav")] + ".raw" if stereo else file
    settings = centre.recording
    base = settings.asterisk_directory or settings.directory
    return Recording(file, capture, posixpath.join(base, capture), "D" if stereo else "", policy.channels,
                     policy.format, policy.retention_days or settings.retention_days, policy.announce)


def adopted(centre: Centre, queue: str, asterisk_path: str) -> Recording | None:
    """The recording an earlier router started on a live channel (its ROUTER_RECORD), or None."""
    settings = centre.recording
    base = (settings.asterisk_directory or settings.directory).rstrip("/") + "/"
    capture = asterisk_path[len(base):] if asterisk_path.startswith(base) else ""
    extension = posixpath.splitext(capture)[1]
    if extension not in (".raw", ".wav", ".opus") or queue not in centre.queues:
        return None
    stereo = extension == ".raw"
    policy = centre.queues[queue].recording
    return Recording(capture[:-len(extension)] + ".wav" if stereo else capture, capture, asterisk_path,
                     "D" if stereo else "", "stereo" if stereo else "mixed", "opus" if extension == ".opus" else "wav",
                     policy.retention_days or settings.retention_days, None)
