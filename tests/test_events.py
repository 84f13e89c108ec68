"""Event ids: kept as integers, read as well-formed UUIDs (version 8, RFC 4122 variant),
increasing within a process and fresh in a forked child.  Event figures rounded to the
millisecond by round_ms exactly as round(x, 3) rounds them; events equal as dataclasses were."""
from __future__ import annotations

import math
import os
import struct
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from router.events import Event, new_event_id, new_event_serial, round_ms


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


def _same_float(a: float, b: float) -> bool:
    """Equal to the bit (so -0.0 is not 0.0, and a NaN is the same NaN)."""
    return struct.pack("<d", a) == struct.pack("<d", b)


# ties of the third decimal, values just beside them, the signs of zero, and the ends of the fast path
_EDGES = [0.0, -0.0, 0.0005, 0.0015, 0.0025, 2.675, 1.0005, -1.0005, 1e-4, -1e-4, 4.9999e-4, -4.9999e-4,
          0.49999999999999994, 1e9 - 0.0005, 1e9 + 0.0005, 999999999.9995, 1e12, -1e12, 5e-324, 1.7976931348623157e308,
          math.inf, -math.inf, 123.4565, 123.4575, 86399.9995, 0.1 + 0.2]


@given(st.one_of(st.floats(allow_nan=False), st.floats(min_value=-1e6, max_value=1e6),
                 st.integers(-10**9, 10**9).map(lambda n: n / 2000),          # exact and near ties
                 st.integers(-10**9, 10**9).map(lambda n: n / 2000 + 1e-9),
                 st.sampled_from(_EDGES)))
@settings(max_examples=3000, deadline=None)
def test_round_ms_is_round_to_three_decimals_to_the_bit(x):
    assert _same_float(round_ms(x), float(round(x, 3)))


def test_round_ms_of_edges_and_nan():
    for x in _EDGES + [math.nextafter(e, math.inf) for e in _EDGES] + [math.nextafter(e, -math.inf) for e in _EDGES]:
        assert _same_float(round_ms(x), float(round(x, 3))), x
    assert math.isnan(round_ms(math.nan))
    assert round_ms(5) == 5.0 and isinstance(round_ms(5), float)


def test_events_compare_by_every_field_and_are_not_hashable():
    a = Event(1.0, "call.arrived", "c1", "q", None, {"x": 1}, serial=7)
    assert a == Event(1.0, "call.arrived", "c1", "q", None, {"x": 1}, serial=7)
    assert a != Event(1.0, "call.arrived", "c1", "q", None, {"x": 1}, serial=8)
    assert a != Event(1.0, "call.arrived", "c1", "q", None, {"x": 2}, serial=7)
    assert a.__eq__("not an event") is NotImplemented
    assert repr(a) == "Event(ts=1.0, type='call.arrived', call_id='c1', queue='q', agent=None, data={'x': 1})"
    try:
        hash(a)
    except TypeError:
        pass
    else:
        raise AssertionError("an event is mutable: it must not be hashable")
