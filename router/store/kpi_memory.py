"""Contact-centre KPIs in Python, over events held in memory: the twin of the KPI SQL.

Theory of operation
-------------------
`router/store/kpi.py` is the one definition of the figures of DESIGN §7, in SQL
over the `events` table.  A what-if run (`simulate --no-store`, many seeds, the
staffing check) only needs the figures, so storing a simulated day in
PostgreSQL first would be most of its cost.  `kpis_from_events` computes the
same dict from the simulator's `Event` objects, statement by statement, as
`router/engine/matcher_ref.py` mirrors the compiled matcher; tests/test_kpi_twin.py
runs both on the same events (simulated days and the hand-built edge cases of
tests/test_kpi*.py) and requires equal results.  A change to one is a change
to both.

Equality rests on doing the arithmetic the way PostgreSQL does:

- Time is integer microseconds since the epoch: an event's `ts` is rounded as
  the writer's `datetime.fromtimestamp` rounds it (the fraction half to even),
  `previous_s * interval '1 second'` is `rint(previous_s * 1e6)` µs, and state
  spans, interval edges (`date_bin`) and window bounds are exact integers.
  Ties of `ts` are broken by the event id, as the SQL's ORDER BY ts, id.
- `data->>'key'` is the JSON value as text; casts to float8 and boolean follow.
- Averages and sums of float8 are cast to numeric with 15 significant digits
  (PostgreSQL's float8 -> numeric) before `round`; ratios of counts and of
  exact (numeric) seconds are exact fractions; `round` is half away from zero.
  Float sums run in event order, PostgreSQL's in its own: they can differ in
  the last bit, which shows only if a figure lies on a rounding edge at its
  15th digit (never seen in the tests).

Every figure is built the same way as in the SQL: calls by their first
`queue.joined` inside the window (entry queue and interval), everything later
follows the call; GROUPING SETS become four scopes (total, queue, interval,
interval x queue) accumulated per call; state spans are clipped to the window
and split at interval edges; agents and teams group the same rows as the agent
SQL; IVR, drop-off per node and call-back kept-place waits are windowed by
their own timestamp; quality figures take the latest evaluation per evaluator
of each window call and agent, their mean per call, and the mean of those per
scope.  Pure functions: no I/O.
"""
from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from router.events import WITHHELD_NUMBERS, Event
from router.store.kpi import FCR_HORIZON, local_origin, in_zone

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
MICROSECOND = timedelta(microseconds=1)
FCR_HORIZON_US = FCR_HORIZON // MICROSECOND
BUSY_STATES = frozenset({"on_call", "wrap_up"})
STAFFED_STATES = frozenset({"on_call", "wrap_up", "available", "reserved"})


# --- PostgreSQL's conversions ------------------------------------------------------------

def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _moment(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _text(value: Any) -> str | None:
    """`data->>'key'`: a JSON string as itself, anything else as its JSON text, null as None."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def _float(value: Any) -> float | None:
    """`(data->>'key')::float8`."""
    if value is None:
        return None
    return float(value)


def _boolean(value: Any) -> bool | None:
    """`(data->>'key')::boolean`."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("t", "true", "y", "yes", "on", "1"):
        return True
    if text in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(f"invalid input syntax for type boolean: {value!r}")


def _interval_us(seconds: float) -> int:
    """`seconds * interval '1 second'` in µs (PostgreSQL rounds with rint: half to even)."""
    return round(1_000_000.0 * seconds)


def _round(value: Decimal | Fraction, places: int) -> float:
    """numeric `round(value, places)::float8`: half away from zero."""
    scaled = Fraction(value) * 10 ** places
    whole = (scaled.numerator * 2 + scaled.denominator) // (2 * scaled.denominator) if scaled >= 0 \
        else -((-scaled.numerator * 2 + scaled.denominator) // (2 * scaled.denominator))
    return float(Decimal(whole).scaleb(-places))


def _round_float(value: float | None, places: int) -> float | None:
    """`round(value::numeric, places)::float8` of a float8: 15 significant digits first."""
    return None if value is None else _round(Decimal(f"{value:.15g}"), places)


def _ratio(numerator: int | Fraction, denominator: int | Fraction, places: int) -> float | None:
    """`round(numerator::numeric / nullif(denominator, 0), places)`."""
    return None if not denominator else _round(Fraction(numerator) / Fraction(denominator), places)


def _seconds(us: int | None, places: int = 2) -> float | None:
    return None if us is None else _round(Fraction(us, 1_000_000), places)


def _mean(values: list[float]) -> float | None:
    """`avg(float8)`: None over no values."""
    return sum(values) / len(values) if values else None


def _add(total: Any, value: Any) -> Any:
    """`sum()`: NULL until the first value."""
    return value if total is None else total + value


def _caller_number(raw: str | None) -> str | None:
    return None if (raw or "").strip(" ").lower() in WITHHELD_NUMBERS else raw


# --- the events --------------------------------------------------------------------------

@dataclass(slots=True)
class _Row:
    """One event as the `events` table holds it."""
    us: int
    type: str
    call_id: str | None
    queue: str | None
    agent: str | None
    data: dict[str, Any]
    event: Event

    @property
    def order(self) -> int:
        """The event id as an integer: PostgreSQL's uuid order, which breaks ties of `ts`."""
        return self.event.serial


def _ts_micros(ts: float) -> int:
    """Epoch seconds to µs as the writer's `datetime.fromtimestamp` rounds them (fraction half to even)."""
    fraction, whole = math.modf(ts)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def _rows(events: Iterable[Event]) -> list[_Row]:
    return [_Row(_ts_micros(e.ts), e.type, e.call_id, e.queue, e.agent, e.data, e) for e in events]


def _before(row: _Row, other: _Row) -> bool:
    """`row` sorts before `other` by (ts, id); the id is only read on a tie."""
    return row.us < other.us or (row.us == other.us and row.order < other.order)


@dataclass(slots=True)
class _Call:
    """A window call's facts (the `call_facts` row)."""
    call_id: str
    queue: str | None
    joined: int
    threshold_s: float | None
    caller_id: str | None
    bucket: int | None = None
    answered: bool = False
    wait_s: float | None = None
    skills_met: bool | None = None
    abandoned: bool = False
    abandon_wait_s: float | None = None
    callback_offered: bool = False
    callback_accepted: bool = False
    callback_completed: bool = False
    overflowed: bool = False
    ended: bool = False
    on_call_s: float | None = None
    wrap_s: float = 0.0


@dataclass(slots=True)
class _Figures:
    """The aggregates of one scope (total, queue, interval or interval x queue)."""
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    sl_base: int = 0
    sl_met: int = 0
    waits: list[float] = field(default_factory=list)
    handles: list[float] = field(default_factory=list)
    fcr_base: int = 0
    fcr_met: int = 0
    callbacks_offered: int = 0
    callbacks_accepted: int = 0
    callbacks_completed: int = 0
    overflowed: int = 0
    accurate: int = 0
    accuracy_base: int = 0
    csat: list[float] = field(default_factory=list)
    nps_answers: int = 0
    promoters: int = 0
    detractors: int = 0

    def pinned(self, occupancy: float | None, contained: int | None) -> dict[str, Any]:
        return {
            "offered": self.offered, "answered": self.answered, "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "service_level": _ratio(self.sl_met, self.sl_base, 4),
            "asa_s": _round_float(_mean(self.waits), 2),
            "aht_s": _round_float(_mean(self.handles), 2),
            "abandonment_rate": _ratio(self.abandoned - self.short_abandoned,
                                       self.offered - self.short_abandoned, 4),
            "fcr_rate": _ratio(self.fcr_met, self.fcr_base, 4),
            "occupancy": occupancy,
            "callbacks_offered": self.callbacks_offered, "callbacks_accepted": self.callbacks_accepted,
            "callbacks_completed": self.callbacks_completed, "overflowed": self.overflowed,
            "ivr_contained": contained,
            "csat_avg": _round_float(_mean(self.csat), 2),
            "nps": _ratio(100 * (self.promoters - self.detractors), self.nps_answers, 1),
            "routing_accuracy": _ratio(self.accurate, self.accuracy_base, 4),
        }


@dataclass(slots=True)
class _Floor:
    """Busy and staffed agent time of a scope, in µs; None: no span of that kind."""
    busy: int | None = None
    staffed: int | None = None

    def add(self, state: str | None, us: int) -> None:
        if state in BUSY_STATES:
            self.busy = _add(self.busy, us)
        if state in STAFFED_STATES:
            self.staffed = _add(self.staffed, us)

    def occupancy(self) -> float | None:
        return None if self.busy is None or not self.staffed else _ratio(self.busy, self.staffed, 4)

    def seconds(self) -> dict[str, float | None]:
        return {"busy_s": _seconds(self.busy or 0), "staffed_s": _seconds(self.staffed or 0)}


@dataclass(slots=True)
class _AgentFigures:
    """The aggregates of one agent or team (the agent SQL's groups)."""
    answered: int = 0
    talk_s: float | None = None
    handles: list[float] = field(default_factory=list)
    busy_s: float | None = None
    staffed_s: float | None = None
    no_answers: int = 0
    csat: list[float] = field(default_factory=list)
    accurate: int = 0
    accuracy_base: int = 0

    def merge(self, other: _AgentFigures) -> None:
        self.answered += other.answered
        if other.talk_s is not None:
            self.talk_s = _add(self.talk_s, other.talk_s)
        self.handles += other.handles
        if other.busy_s is not None:
            self.busy_s = _add(self.busy_s, other.busy_s)
        if other.staffed_s is not None:
            self.staffed_s = _add(self.staffed_s, other.staffed_s)
        self.no_answers += other.no_answers
        self.csat += other.csat
        self.accurate += other.accurate
        self.accuracy_base += other.accuracy_base

    def figures(self) -> dict[str, Any]:
        occupancy = (None if self.busy_s is None or not self.staffed_s
                     else _round_float(self.busy_s / self.staffed_s, 4))
        return {"answered": self.answered, "talk_s": _round_float(self.talk_s or 0.0, 2),
                "aht_s": _round_float(_mean(self.handles), 2), "occupancy": occupancy,
                "no_answers": self.no_answers, "csat_avg": _round_float(_mean(self.csat), 2),
                "routing_accuracy": _ratio(self.accurate, self.accuracy_base, 4)}


# --- the computation ---------------------------------------------------------------------

def kpis_from_events(
    events: Iterable[Event],
    *,
    run: str = "memory",
    start: datetime | None = None,
    end: datetime | None = None,
    interval_minutes: int | None = None,
    short_abandon_s: float = 5.0,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> dict[str, Any]:
    """`compute_kpis` over `events` (one run's, in any order): the same dict, figure for figure."""
    if interval_minutes is not None and interval_minutes <= 0:
        raise ValueError(f"interval_minutes must be positive, got {interval_minutes}")
    zone = ZoneInfo(timezone)
    width = timedelta(minutes=interval_minutes) if interval_minutes is not None else None
    start, end = in_zone(start, zone), in_zone(end, zone)
    rows = _rows(events)
    last = max((row.us for row in rows), default=None)
    t0 = _micros(start) if start is not None else min((row.us for row in rows), default=None)
    t1 = _micros(end) if end is not None else (last + 1 if last is not None else None)
    judged_at = _micros(now.astimezone(dt_timezone.utc)) if now is not None else last
    window = _Window(rows, t0, t1, width, zone)

    calls = window.calls(short_abandon_s)
    result: dict[str, Any] = window.queue_figures(calls, short_abandon_s, judged_at)
    result.update({"from": _iso(t0, zone), "to": _iso(t1, zone), "run": run, "timezone": zone.key})
    intervals = result.pop("intervals")
    result["queues"] = result.pop("queues")
    result["agents"], result["teams"] = window.agents(calls)
    window.kept_waits(result)
    window.quality(calls, result, dict(zip(window.buckets, intervals)))
    result["ivr_calls"], result["ivr_time_s"] = window.ivr()
    result["ivr_nodes"] = window.ivr_nodes()
    if width is not None:
        result["intervals"] = intervals
    return result


def _iso(us: int | None, zone: ZoneInfo) -> str | None:
    return _moment(us).astimezone(zone).isoformat() if us is not None else None


class _Window:
    """One run's rows and the window [t0, t1): the statements of kpi.py as methods."""

    def __init__(self, rows: list[_Row], t0: int | None, t1: int | None, width: timedelta | None,
                 zone: ZoneInfo) -> None:
        self.rows, self.t0, self.t1, self.zone = rows, t0, t1, zone
        self.defined = t0 is not None and t1 is not None
        self.by_call: dict[str, list[_Row]] = defaultdict(list)
        for row in rows:
            if row.call_id is not None:
                self.by_call[row.call_id].append(row)
        self.width = width // MICROSECOND if width is not None else None
        self.origin = (_micros(local_origin(_moment(t0), width, zone))
                       if t0 is not None and width is not None else None)
        self.buckets: list[int] = []
        if self.defined and self.width is not None:
            bucket = self.bin(t0)
            while bucket < t1:
                self.buckets.append(bucket)
                bucket += self.width

    def inside(self, us: int) -> bool:
        return self.defined and self.t0 <= us < self.t1

    def bin(self, us: int) -> int | None:
        """`date_bin(width, us, origin)`; None without intervals."""
        if self.width is None:
            return None
        return self.origin + (us - self.origin) // self.width * self.width

    # -- calls ---------------------------------------------------------------------------

    def calls(self, short_abandon_s: float) -> list[_Call]:
        """The window's calls by their first join, with their facts."""
        calls = []
        for call_id, rows in self.by_call.items():
            joins = [row for row in rows if row.type == "queue.joined"]
            if not any(self.inside(row.us) for row in joins):
                continue
            first = joins[0]
            for row in joins[1:]:
                if _before(row, first):
                    first = row
            if not self.inside(first.us):
                continue
            call = _Call(call_id, first.queue, first.us, _float(first.data.get("sl_threshold_s")),
                         _caller_number(_text(first.data.get("caller_id"))), self.bin(first.us))
            for row in rows:
                self._fold(call, row)
            calls.append(call)
        return calls

    @staticmethod
    def _fold(call: _Call, row: _Row) -> None:
        kind, data = row.type, row.data
        if kind == "call.connected":
            call.answered = True
            wait = _float(data.get("wait_s"))
            if wait is not None:
                call.wait_s = wait if call.wait_s is None else min(call.wait_s, wait)
            met = _boolean(data.get("skills_met"))
            if met is not None:
                call.skills_met = met if call.skills_met is None else call.skills_met and met
        elif kind == "call.abandoned":
            call.abandoned = True
            wait = _float(data.get("wait_s"))
            if wait is not None:
                call.abandon_wait_s = wait if call.abandon_wait_s is None else min(call.abandon_wait_s, wait)
        elif kind == "callback.offered":
            call.callback_offered = True
        elif kind == "callback.accepted":
            call.callback_accepted = True
        elif kind == "callback.connected":
            call.callback_completed = True
        elif kind == "queue.overflowed":
            call.overflowed = True
        elif kind == "call.ended":
            call.ended = True
        elif kind == "agent.state":
            previous, seconds = _text(data.get("previous")), _float(data.get("previous_s"))
            if previous == "on_call" and seconds is not None:
                call.on_call_s = _add(call.on_call_s, seconds)
            elif previous == "wrap_up" and seconds is not None:
                call.wrap_s += seconds

    def repeat_callers(self, calls: list[_Call]) -> set[str]:
        """Answered calls whose number joined the same queue again within 24 h."""
        joins: dict[tuple[str | None, str], list[tuple[int, str | None]]] = defaultdict(list)
        if self.defined:
            for row in self.rows:
                if row.type == "queue.joined" and self.t0 < row.us <= self.t1 + FCR_HORIZON_US:
                    caller = _text(row.data.get("caller_id"))
                    if caller is not None:
                        joins[(row.queue, caller)].append((row.us, row.call_id))
        return {call.call_id for call in calls
                if call.answered and call.caller_id is not None and any(
                    other is not None and other != call.call_id
                    and call.joined < us <= call.joined + FCR_HORIZON_US
                    for us, other in joins.get((call.queue, call.caller_id), ()))}

    # -- queue figures -------------------------------------------------------------------

    def queue_figures(self, calls: list[_Call], short_abandon_s: float, judged_at: int | None) -> dict[str, Any]:
        scopes: dict[tuple[int | None, str | None, bool], _Figures] = defaultdict(_Figures)
        repeats = self.repeat_callers(calls)
        for call in calls:
            for scope in self._scopes(call.bucket, call.queue):
                self._count(scopes[scope], call, short_abandon_s, judged_at, call.call_id in repeats)
        survey_queues = set()
        for row in self.rows:
            if row.type == "survey.answered" and self.inside(row.us):
                question, score = _text(row.data.get("question")), _float(row.data.get("score"))
                if row.queue is not None:
                    survey_queues.add(row.queue)
                for scope in self._scopes(self.bin(row.us), row.queue):
                    figures = scopes[scope]
                    if question == "csat" and score is not None:
                        figures.csat.append(score)
                    elif question == "nps":
                        figures.nps_answers += 1
                        figures.promoters += score is not None and score >= 9
                        figures.detractors += score is not None and score <= 6
        floor = self.floor()
        contained = self.contained()
        queues = sorted({call.queue for call in calls} | survey_queues, key=lambda q: (q is None, q or ""))

        def pinned(bucket: int | None, queue: str | None, per_queue: bool) -> dict[str, Any]:
            figures = scopes.get((bucket, queue, per_queue), _Figures())
            if per_queue:
                return figures.pinned(None, None)
            floor_figures = floor.get(bucket, _Floor())
            return {**figures.pinned(floor_figures.occupancy(), len(contained.get(bucket, ()))),
                    **floor_figures.seconds()}

        result = pinned(None, None, False)
        result["queues"] = {queue: pinned(None, queue, True) for queue in queues}
        result["intervals"] = [
            {"start": _iso(max(bucket, self.t0), self.zone),
             "end": _iso(min(bucket + self.width, self.t1), self.zone),
             **pinned(bucket, None, False),
             "queues": {queue: pinned(bucket, queue, True) for queue in queues}}
            for bucket in self.buckets]
        return result

    def _scopes(self, bucket: int | None, queue: str | None) -> list[tuple[int | None, str | None, bool]]:
        """GROUPING SETS ((), (queue), (bucket), (bucket, queue)) as keys (bucket, queue, per queue)."""
        scopes = [(None, None, False), (None, queue, True)]
        if bucket is not None:
            scopes += [(bucket, None, False), (bucket, queue, True)]
        return scopes

    def _count(self, figures: _Figures, call: _Call, short_abandon_s: float, judged_at: int | None,
               repeated: bool) -> None:
        short = call.abandon_wait_s is not None and call.abandon_wait_s <= short_abandon_s
        threshold_us = _interval_us(call.threshold_s or 0.0)
        sl_eligible = (not short and not call.callback_accepted
                       and (call.answered or call.abandoned or call.ended
                            or (judged_at is not None and judged_at - call.joined >= threshold_us)))
        figures.offered += 1
        figures.answered += call.answered
        figures.abandoned += call.abandoned
        figures.short_abandoned += short
        figures.sl_base += sl_eligible
        figures.sl_met += (sl_eligible and call.answered and call.wait_s is not None
                           and call.threshold_s is not None and call.wait_s <= call.threshold_s)
        if call.answered and call.wait_s is not None:
            figures.waits.append(call.wait_s)
        if call.answered and call.on_call_s is not None:
            figures.handles.append(call.on_call_s + call.wrap_s)
        eligible = call.answered and call.caller_id is not None
        figures.fcr_base += eligible
        figures.fcr_met += eligible and not repeated
        figures.callbacks_offered += call.callback_offered
        figures.callbacks_accepted += call.callback_accepted
        figures.callbacks_completed += call.callback_completed
        figures.overflowed += call.overflowed
        figures.accurate += call.answered and call.skills_met is True
        figures.accuracy_base += call.answered and call.skills_met is not None

    # -- agents' time --------------------------------------------------------------------

    @functools.cached_property
    def state_spans(self) -> list[tuple[str, str | None, int, int]]:
        """(agent, state, s0, s1): the `state_spans` CTE."""
        if not self.defined:
            return []
        t0, t1 = self.t0, self.t1
        spans = []
        latest: dict[str, _Row] = {}
        for row in self.rows:
            if row.type != "agent.state" or row.agent is None:
                continue
            held = latest.get(row.agent)
            if held is None or _before(held, row):
                latest[row.agent] = row
            seconds = _float(row.data.get("previous_s"))
            if seconds is None or row.us <= t0:
                continue
            began = row.us - _interval_us(seconds)
            if began < t1:
                spans.append((row.agent, _text(row.data.get("previous")), max(began, t0), min(row.us, t1)))
        for agent, row in latest.items():
            if row.us < t1:
                spans.append((agent, _text(row.data.get("state")), max(row.us, t0), t1))
        return spans

    def floor(self) -> dict[int | None, _Floor]:
        """Busy and staffed time, total (key None) and per interval, spans split at the edges."""
        floor: dict[int | None, _Floor] = defaultdict(_Floor)
        for _, state, s0, s1 in self.state_spans:
            floor[None].add(state, s1 - s0)
            if self.width is None:
                continue
            first = self.bin(s0)
            if s1 <= first + self.width:
                floor[first].add(state, s1 - s0)
                continue
            for bucket in self.buckets:
                if s0 < bucket + self.width and s1 > bucket:
                    floor[bucket].add(state, min(s1, bucket + self.width) - max(s0, bucket))
        return floor

    def contained(self) -> dict[int | None, set[str]]:
        """Calls whose IVR completed in the window and that never joined a queue."""
        contained: dict[int | None, set[str]] = defaultdict(set)
        for row in self.rows:
            if (row.type == "ivr.ended" and _text(row.data.get("outcome")) == "completed"
                    and self.inside(row.us) and row.call_id is not None
                    and not any(other.type == "queue.joined" for other in self.by_call[row.call_id])):
                contained[None].add(row.call_id)
                if self.width is not None:
                    contained[self.bin(row.us)].add(row.call_id)
        return contained

    # -- agents and teams ----------------------------------------------------------------

    def agents(self, calls: list[_Call]) -> tuple[dict[str, Any], dict[str, Any]]:
        figures: dict[str, _AgentFigures] = defaultdict(_AgentFigures)
        teams: dict[str, tuple[int, str]] = {}        # agent -> (ts, team) of its latest team

        def saw_team(agent: str, us: int, team: str | None) -> None:
            """The latest team seen wins; at the same instant the least (the SQL's ORDER BY agent, team)."""
            held = teams.get(agent)
            if team is not None and (held is None or us > held[0] or (us == held[0] and team < held[1])):
                teams[agent] = (us, team)

        for call in calls:
            rows = self.by_call[call.call_id]
            for connected in rows:
                if connected.type != "call.connected" or connected.agent is None:
                    continue
                agent = connected.agent
                mine = figures[agent]
                saw_team(agent, connected.us, _text(connected.data.get("team")))
                mine.answered += 1
                talk = None
                on_call, wrap = None, None
                for row in rows:
                    if row.type == "call.ended" and (row.agent == agent or row.agent is None):
                        seconds = _float(row.data.get("talk_s"))
                        if seconds is not None:
                            talk = _add(talk, seconds)
                    elif row.type == "agent.state" and row.agent == agent:
                        previous, seconds = _text(row.data.get("previous")), _float(row.data.get("previous_s"))
                        if seconds is not None and previous == "on_call":
                            on_call = _add(on_call, seconds)
                        elif seconds is not None and previous == "wrap_up":
                            wrap = _add(wrap, seconds)
                if talk is not None:
                    mine.talk_s = _add(mine.talk_s, talk)
                if on_call is not None:
                    mine.handles.append(on_call + (wrap or 0.0))
                met = _boolean(connected.data.get("skills_met"))
                mine.accurate += met is True
                mine.accuracy_base += met is not None
        for row in self.rows:
            if row.agent is None or not self.inside(row.us):
                continue
            if row.type == "agent.state":
                figures.setdefault(row.agent, _AgentFigures())      # the agent has a row
                saw_team(row.agent, row.us, _text(row.data.get("team")))
            elif row.type == "agent.no_answer":
                figures[row.agent].no_answers += 1
            elif row.type == "survey.answered" and _text(row.data.get("question")) == "csat":
                score = _float(row.data.get("score"))
                mine = figures[row.agent]
                if score is not None:
                    mine.csat.append(score)
        time: dict[str, _Floor] = defaultdict(_Floor)       # the SQL sums an agent's spans exactly (µs)
        for agent, state, s0, s1 in self.state_spans:
            figures.setdefault(agent, _AgentFigures())
            time[agent].add(state, s1 - s0)
        for agent, spans in time.items():
            if spans.busy is not None:
                figures[agent].busy_s = spans.busy / 1_000_000
            if spans.staffed is not None:
                figures[agent].staffed_s = spans.staffed / 1_000_000

        agents, team_figures = {}, {}
        for agent in sorted(figures):
            team = teams.get(agent, (0, None))[1]
            agents[agent] = {"team": team, **figures[agent].figures()}
            if team is not None:
                team_figures.setdefault(team, _AgentFigures()).merge(figures[agent])
        return agents, {team: team_figures[team].figures() for team in sorted(team_figures)}

    # -- quality -------------------------------------------------------------------------

    def quality(self, calls: list[_Call], result: dict[str, Any], intervals: dict[int, dict[str, Any]]) -> None:
        """`quality_score` and `evaluations` of every scope: the quality statement."""
        scores: dict[tuple, list[float]] = defaultdict(list)      # scope -> the calls' mean scores
        counts: dict[tuple, int] = defaultdict(int)
        for call in calls:
            latest: dict[tuple[str | None, str | None], _Row] = {}   # (agent, evaluator) -> its latest
            for row in self.by_call[call.call_id]:
                if row.type == "qa.evaluated" and _text(row.data.get("score")) is not None:
                    key = (row.agent, _text(row.data.get("evaluator")))
                    if key not in latest or _before(latest[key], row):
                        latest[key] = row
            per_agent: dict[str | None, list[float]] = defaultdict(list)
            for (agent, _), row in latest.items():
                per_agent[agent].append(_float(row.data.get("score")))
            for agent, values in per_agent.items():
                agent_figures = result["agents"].get(agent) if agent is not None else None
                keys = [("all", None), ("queue", call.queue), ("agent", agent),
                        ("team", agent_figures["team"] if agent_figures is not None else None)]
                if call.bucket is not None:
                    keys += [("bucket", call.bucket), ("bucket queue", call.bucket, call.queue)]
                for key in keys:
                    scores[key].append(_mean(values))
                    counts[key] += len(values)

        def figures(key: tuple) -> dict[str, Any]:
            return {"quality_score": _round_float(_mean(scores[key]), 2) if key in scores else None,
                    "evaluations": counts.get(key, 0)}

        result.update(figures(("all", None)))
        for queue, queue_figures in result["queues"].items():
            queue_figures.update(figures(("queue", queue)))
        for agent, agent_figures in result["agents"].items():
            agent_figures.update(figures(("agent", agent)))
        for team, team_figures in result["teams"].items():
            team_figures.update(figures(("team", team)))
        for bucket, interval in intervals.items():
            interval.update(figures(("bucket", bucket)))
            for queue, queue_figures in interval["queues"].items():
                queue_figures.update(figures(("bucket queue", bucket, queue)))

    # -- IVR and call-backs --------------------------------------------------------------

    def ivr(self) -> tuple[int, float | None]:
        """Calls whose front IVR began in the window, and their mean time in it."""
        firsts: dict[str | None, dict[str, int]] = defaultdict(dict)
        for row in self.rows:
            if row.type in ("ivr.node", "ivr.ended", "queue.joined") and self.inside(row.us):
                seen = firsts[row.call_id]
                if row.type not in seen or row.us < seen[row.type]:
                    seen[row.type] = row.us
        calls, spans = 0, []
        for seen in firsts.values():
            entered, ended, joined = seen.get("ivr.node"), seen.get("ivr.ended"), seen.get("queue.joined")
            if entered is not None and (joined is None or entered < joined):
                calls += 1
                if ended is not None:
                    spans.append(ended - entered)
        return calls, (_ratio(sum(spans), 1_000_000 * len(spans), 2) if spans else None)

    def ivr_nodes(self) -> dict[str | None, dict[str, int]]:
        entered: dict[str | None, set[str]] = {}
        ends: dict[str | None, dict[str, int]] = {}
        for row in self.rows:
            if row.type not in ("ivr.node", "ivr.ended") or not self.inside(row.us):
                continue
            flow, node = _text(row.data.get("flow")), _text(row.data.get("node"))
            key = f"{flow}/{node}" if flow is not None and node is not None else None
            entered.setdefault(key, set())
            ends.setdefault(key, {"hangup": 0, "timeout": 0})
            if row.type == "ivr.node" and row.call_id is not None:
                entered[key].add(row.call_id)
            elif row.type == "ivr.ended":
                outcome = _text(row.data.get("outcome"))
                if outcome in ("hangup", "timeout"):
                    ends[key][outcome] += 1
        return {key: {"entered": len(entered[key]), "hangups": ends[key]["hangup"],
                      "timeouts": ends[key]["timeout"]}
                for key in sorted(entered, key=lambda k: (k is None, k or ""))}

    def kept_waits(self, result: dict[str, Any]) -> None:
        """Mean kept-place wait of call-backs connected in the window, total and per queue."""
        waits: dict[str | None, list[float]] = {}
        every: list[float] = []
        for row in self.rows:
            if row.type == "callback.connected" and self.inside(row.us):
                wait = _float(row.data.get("kept_wait_s"))
                waits.setdefault(row.queue, [])
                if wait is not None:
                    waits[row.queue].append(wait)
                    every.append(wait)
        result["callback_kept_wait_s"] = _round_float(_mean(every), 2)
        for queue, figures in result["queues"].items():
            figures["callback_kept_wait_s"] = _round_float(_mean(waits[queue]), 2) if queue in waits else None
