"""Type stub of the compiled event encoder (router.store.cencoder), built from ext/encoder.pyx.

`encode_event(event, run)` returns the same bytes (one tuple of PostgreSQL's binary COPY
format) and raises the same InvalidEvent as the pure-Python twin
router.store.writer.encode_event_py, to which it hands every event outside its fast path.
"""
from collections.abc import Callable, Iterable

from router.events import Event

def configure(fields: dict[str, bytes], fields_max: int, field: Callable[[str, object], bytes],
              fallback: Callable[[Event, str], bytes], ts_min: float, ts_max: float) -> None: ...
def configure_event_type(cls: type) -> bool: ...
def encode_event(event: Event, run: str) -> bytes: ...
def encode_events(events: Iterable[Event], run: str) -> list[bytes]: ...
