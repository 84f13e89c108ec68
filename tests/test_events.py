"""Event ids: kept as integers, read as well-formed UUIDs (version 8, RFC 4122 variant),
increasing within a process and fresh in a forked child."""
from __future__ import annotations

import os
import uuid

from router.events import Event, new_event_id, new_event_serial


def test_an_events_id_is_the_uuid_of_its_serial():
    events = [Event(ts=0.0, type="call.arrived") for _ in range(1000)]
    for event in events:
        assert event.id == uuid.UUID(int=event.serial) and str(event.id) == str(uuid.UUID(int=event.serial))
        assert event.id.version == 8 and event.id.variant == uuid.RFC_4122
        assert hash(event.id) == hash(uuid.UUID(int=event.serial)) and event.id.bytes == event.serial.to_bytes(16)
    serials = [event.serial for event in events]
    assert serials == sorted(serials) and len(set(serials)) == len(serials)
    assert new_event_id().int > serials[-1] and new_event_serial() > serials[-1]


def test_a_forked_child_draws_ids_from_a_prefix_of_its_own():
    parent = new_event_serial()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: send one id and leave at once
        os.write(write, new_event_serial().to_bytes(16))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 16))
    os.waitpid(pid, 0)
    assert child >> 64 != parent >> 64
