"""`acd-router loadtest`: scripted callers through a real Asterisk, routed by the router in process.

Theory of operation
-------------------
`run_loadtest` starts the whole router (`Service`, every agent of the config
logged in), then `place_calls` originates N scripted callers at R calls per
second: AMI ``Originate`` of ``Local/<DID>@from-trunk`` into ``[test-caller]``
(asterisk_conf/extensions.conf), which presses DIGITS a second after the IVR
answers and stays HOLD_S seconds; ``__TALK_S`` reaches the simulated agents
(``Local/<n>@agents``) through Dial's variable inheritance.  Originates go
through an `AmiLink` (bounded, at most once); the callers' fate is read by a
second, plain AMI connection that records the raw events of their channels.

Each Originate names its channels (`AmiLink` sets the Local channel's
Uniqueid to the originate id and its other half's to ``<id>;2``), so events
map to calls without guessing.  `CallTrace.observe` is a pure function of one
AMI event: the caller half (``<id>;2``, the one in the dialplan) is *queued*
when the queue mark matches (for the router: the IVR's ``ROUTER_NEXT=hold``;
for app_queue: ``QueueCallerJoin``), *dialled* at its first ``DialBegin``,
*connected* at ``DialEnd`` ANSWER, and *ended* at the ``Hangup`` of either
half.  Times are Asterisk's own (``Timestamp`` header, manager.conf
``timestampevents``), so routing times from AMI compare across routers.

Outcomes: *failed* = Originate refused, never queued (lost before the queue),
or still up at the deadline (then hung up); *connected*; otherwise
*abandoned* (queued, hung up before an agent answered).  ``cps`` is the
achieved Originate rate: accepted Originates over the time between the first
and the last acceptance.  The router's ``route_ms`` comes from its adapter
(queue join → Redirect into ``[router-connect]`` done, per offer); the
AMI-observed queue join → ``DialBegin`` is ``route_ms_ami``.
"""
from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from panoramisk import Manager

from router.config.model import AmiSettings, Centre
from router.pbx import dialplan as dp
from router.pbx.ami import AmiError, AmiLink

log = structlog.get_logger("router.pbx.loadtest")

SECRET_ENV = "ACD_AMI_SECRET"
SETTLE_S = 30.0              # after the last caller's patience, how long before calls count as stuck

QueueMark = Callable[[Mapping[str, Any]], bool]


def router_queued(event: Mapping[str, Any]) -> bool:
    """The router's IVR put the caller in a queue (``ROUTER_NEXT=hold`` set over AGI)."""
    return (event.get("Event") == "VarSet" and event.get("Variable") == dp.NEXT
            and event.get("Value") == dp.NEXT_HOLD)


def app_queue_queued(event: Mapping[str, Any]) -> bool:
    """app_queue's ``Queue()`` took the caller."""
    return event.get("Event") == "QueueCallerJoin"


@dataclass
class CallTrace:
    """What AMI said about one scripted caller (times are Asterisk's, epoch seconds)."""

    originate_id: str
    accepted_at: float | None = None    # loop time the Originate was taken
    error: str | None = None
    queued_ts: float | None = None
    dialled_ts: float | None = None
    connected: bool = False
    ended: bool = False

    @property
    def caller_uniqueid(self) -> str:
        """The Local channel's half that runs the dialplan of the DID (the queued caller)."""
        return f"{self.originate_id};2"

    def observe(self, event: Mapping[str, Any], queued: QueueMark) -> None:
        """Update from one AMI event of this call's channels."""
        name, uniqueid = event.get("Event"), event.get("Uniqueid")
        if name == "Hangup":
            self.ended = True
            return
        if uniqueid != self.caller_uniqueid:
            return
        stamp = _timestamp(event)
        if self.queued_ts is None and queued(event):
            self.queued_ts = stamp
        elif name == "DialBegin" and self.dialled_ts is None and self.queued_ts is not None:
            self.dialled_ts = stamp
        elif name == "DialEnd" and event.get("DialStatus") == "ANSWER":
            self.connected = True

    @property
    def outcome(self) -> str:
        if self.error is not None or self.queued_ts is None or not self.ended:
            return "failed"
        return "connected" if self.connected else "abandoned"

    @property
    def route_ms(self) -> float | None:
        """Queue join → first agent dialled, from Asterisk's timestamps."""
        if self.queued_ts is None or self.dialled_ts is None:
            return None
        return (self.dialled_ts - self.queued_ts) * 1000.0


def _timestamp(event: Mapping[str, Any]) -> float:
    try:
        return float(event.get("Timestamp") or "")
    except ValueError:
        return asyncio.get_running_loop().time()


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 by linear interpolation between closest ranks; None without values."""
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        position = q * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


@dataclass(frozen=True)
class LoadReport:
    """The outcome of one load run."""

    calls: int
    connected: int
    abandoned: int
    failed: int
    cps: float
    route_ms: tuple[float, ...]
    route_ms_ami: tuple[float, ...] = ()

    @classmethod
    def from_traces(cls, traces: Sequence[CallTrace], cps: float,
                    route_ms: Sequence[float] | None = None) -> LoadReport:
        """Counts from the traces; `route_ms` defaults to the AMI-observed routing times."""
        outcomes = [trace.outcome for trace in traces]
        observed = tuple(ms for trace in traces if (ms := trace.route_ms) is not None)
        return cls(calls=len(traces), connected=outcomes.count("connected"),
                   abandoned=outcomes.count("abandoned"), failed=outcomes.count("failed"), cps=cps,
                   route_ms=tuple(route_ms) if route_ms is not None else observed, route_ms_ami=observed)

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "connected": self.connected, "abandoned": self.abandoned,
                "failed": self.failed, "cps": round(self.cps, 3), "route_ms": percentiles(self.route_ms),
                "route_ms_ami": percentiles(self.route_ms_ami)}

    def summary(self) -> str:
        route, ami = percentiles(self.route_ms), percentiles(self.route_ms_ami)
        return "\n".join([
            f"calls      {self.calls}  (achieved {self.cps:.2f} calls/s)",
            f"connected  {self.connected}",
            f"abandoned  {self.abandoned}",
            f"failed     {self.failed}",
            f"route_ms   p50 {route['p50']}  p95 {route['p95']}  p99 {route['p99']}  (router: queue join -> agent dialled)",
            f"  via AMI  p50 {ami['p50']}  p95 {ami['p95']}  p99 {ami['p99']}  (Asterisk timestamps)",
        ])


@dataclass
class _Observer:
    """A plain AMI connection recording the events of the traced calls."""

    settings: AmiSettings
    queued: QueueMark
    traces: dict[str, CallTrace] = field(default_factory=dict)     # by both halves' Uniqueid
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    manager: Manager | None = None

    async def connect(self, timeout_s: float) -> None:
        self.manager = Manager(host=self.settings.host, port=self.settings.port,
                               username=self.settings.username, secret=_secret(self.settings),
                               ping_delay=3600, on_disconnect=lambda manager, exc: None)
        self.manager.register_event("*", self._record)
        await asyncio.wait_for(self.manager.connect(), timeout_s)
        login = await asyncio.wait_for(self.manager.authenticated_future, timeout_s)
        if not login.success:
            raise AmiError("AMI login refused for the load generator's observer")

    def track(self, trace: CallTrace) -> None:
        self.traces[trace.originate_id] = self.traces[trace.caller_uniqueid] = trace

    def _record(self, manager: Manager, event: Any) -> None:
        trace = self.traces.get(event.get("Uniqueid") or "")
        if trace is not None:
            trace.observe(event, self.queued)
            self.changed.set()

    def close(self) -> None:
        if self.manager is not None:
            self.manager.connection_lost = lambda exc: None     # no reconnect after our own close
            self.manager.close()


def _secret(settings: AmiSettings) -> str:
    return settings.secret or os.environ.get(SECRET_ENV, "")


async def place_calls(settings: AmiSettings, *, channel: str, calls: int, cps: float,
                      variables: Sequence[str], queued: QueueMark, hold_s: int,
                      context: str = "test-caller") -> tuple[list[CallTrace], float]:
    """Originate `calls` scripted callers at `cps`, wait until they all ended; traces and achieved cps.

    Calls still up `SETTLE_S` after the last caller's patience are hung up and count as failed."""
    link = AmiLink(settings.host, settings.port, settings.username, _secret(settings),
                   ping_interval_s=settings.ping_interval_s, ping_timeout_s=settings.ping_timeout_s,
                   action_timeout_s=settings.action_timeout_s)
    observer = _Observer(settings, queued)
    loop = asyncio.get_running_loop()
    traces = [CallTrace(link.new_originate_id()) for _ in range(calls)]
    try:
        await observer.connect(settings.action_timeout_s)
        await link.start()
        for trace in traces:
            observer.track(trace)

        async def originate(number: int, trace: CallTrace) -> None:
            try:
                await link.originate({
                    "Channel": channel, "Context": context, "Exten": "s", "Priority": "1",
                    "CallerID": f"Load <{90000000 + number}>", "Timeout": "15000",
                    "Variable": [*variables, f"HOLD_S={hold_s}"]}, originate_id=trace.originate_id)
                trace.accepted_at = loop.time()
            except AmiError as error:
                trace.error = str(error)
                trace.ended = True

        start = loop.time()
        sending: list[asyncio.Task[None]] = []
        for number, trace in enumerate(traces):
            await asyncio.sleep(max(0.0, start + number / cps - loop.time()))
            sending.append(asyncio.create_task(originate(number, trace)))
        await asyncio.gather(*sending)
        await _wait_ended(observer, traces, deadline=loop.time() + hold_s + SETTLE_S)
        for trace in traces:
            if not trace.ended:
                log.warning("loadtest.call_stuck", originate_id=trace.originate_id)
                await _hang_up(link, trace)
    finally:
        observer.close()
        await link.close()
    accepted = sorted(t.accepted_at for t in traces if t.accepted_at is not None)
    achieved = (len(accepted) - 1) / (accepted[-1] - accepted[0]) if len(accepted) > 1 and accepted[-1] > accepted[0] \
        else float(len(accepted) and cps)
    return traces, achieved


async def _wait_ended(observer: _Observer, traces: Sequence[CallTrace], *, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while not all(trace.ended for trace in traces) and loop.time() < deadline:
        observer.changed.clear()
        try:
            await asyncio.wait_for(observer.changed.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return


async def _hang_up(link: AmiLink, trace: CallTrace) -> None:
    for uniqueid in (trace.caller_uniqueid, trace.originate_id):
        try:
            await link.hangup(uniqueid)
        except AmiError:
            pass                            # that half is already gone


def default_hold_s(centre: Centre, calls: int, cps: float, talk_s: float) -> int:
    """Callers' patience: long enough for every call to be answered with all agents working."""
    rounds = math.ceil(calls / max(1, len(centre.agents)))
    return int(math.ceil(calls / cps + rounds * (talk_s + 5) + 60))


async def run_loadtest(centre: Centre, *, calls: int, cps: float, talk_s: float = 5.0, digits: str = "1",
                       did: str = "5000", hold_s: int | None = None,
                       data_dir: str | None = None) -> LoadReport:
    """The router in process under `calls` scripted callers at `cps`; every agent logged in."""
    from router.pbx.service import Service      # imports the store and the engine

    if centre.ami is None:
        raise ValueError(f"{centre.source}: no `ami:` section; the load test needs an Asterisk to call through")
    hold_s = hold_s or default_hold_s(centre, calls, cps, talk_s)
    service = Service(centre, data_dir=data_dir, auto_login=list(centre.agents), drain_timeout_s=SETTLE_S)
    try:
        await service.start()
        traces, achieved = await place_calls(
            centre.ami, channel=f"Local/{did}@from-trunk", calls=calls, cps=cps, hold_s=hold_s,
            variables=[f"DIGITS={digits}", f"__TALK_S={talk_s:g}"], queued=router_queued)
    finally:
        await service.stop()
    return LoadReport.from_traces(traces, achieved, route_ms=service.adapter.route_ms if service.adapter else ())
