"""`AsteriskAdapter`: the routing engine and the IVR on a real Asterisk.

Theory of operation
-------------------
The adapter owns time and I/O; the engine and the flow interpreter decide.
Every input is fed with ``now`` from one clock: epoch seconds derived from the
event loop's monotonic clock (anchored once to ``time.time()``), so a wall
clock step never reorders timers.  One task sleeps until the engine's
``next_deadline()`` (woken early when an input changes it) and calls
``advance(now)``.

A call's life (see docs/asterisk.md for the dialplan side):

1. ``[router-inbound]`` runs ``AGI(…/ivr)``: `ivr` (the FastAGI route) makes
   the call id, writes ``call.arrived`` and runs the DID's flow with
   `AgiFlowDriver`.  Queue → ``ROUTER_NEXT=hold`` and the engine gets
   `CallQueued`; the caller waits in ``[router-hold]``.
2. `OfferCall` → AMI ``Setvar`` ROUTER_TARGET (the agent's endpoint),
   ROUTER_RING_TIMEOUT, ROUTER_CALL_ID, then ``Redirect`` to
   ``router-connect,s,1``, which Dials.  The dial's ring time is a second
   shorter than the engine's, so Asterisk reports a no-answer before the
   engine's own ring timer would cancel an offer that is being answered.
3. ``DialEnd`` on the caller's channel: ANSWER → `AgentAnswered`; NOANSWER,
   BUSY, CHANUNAVAIL, CONGESTION → `AgentMissed` (timeout, busy, unreachable);
   the dialplan has already put the caller back on hold.  A dial that failed
   without a DialEnd is caught by ``UserEvent RouterDialFailed``.
4. ``Hangup`` of the caller's channel → `CallerHungUp` (waiting or ringing) or
   `CallFinished` (connected).
5. `CancelOffer` → ``Redirect`` back to ``router-hold`` (ends the Dial);
   `DivertCall` → Setvar ROUTER_NEXT (+ ROUTER_TARGET / ROUTER_MAILBOX /
   ROUTER_MESSAGE) and ``Redirect`` to ``router-divert,s,1``.

AMI actions of one call run in order under the call's lock; the FastAGI route
holds that lock while the IVR runs, so an offer made the moment the call is
queued waits until the AGI has ended.  A call's state is updated when a
command is issued, not when its I/O completes, so AMI events that race with
it are judged against what the router asked for.  An action that fails (link
down longer than the action timeout) turns an offer into `AgentMissed`
(unreachable).

After an AMI reconnect the link's `Resync` (live channels) is reconciled: a
call whose channel is gone hung up while the link was down; a ringing call
whose channel sits in a bridge was answered, one back in music on hold after
its Redirect went through was missed (an offer still waiting for the link is
left to its pending actions).

Agents log in, out, pause and resume with feature codes (``UserEvent
RouterAgent``; ``agent`` is the phone's number, matched to the agent whose
endpoint ends in ``/<number>`` or whose id is that number) and with the async
methods `login`, `logout`, `pause`, `resume`.

Events go to the `EventWriter` through a bounded local buffer drained by one
task, so neither the AMI reader nor the AGI route ever waits for PostgreSQL.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog

from router.config.model import Centre
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentMissed, AgentPause,
                                    AgentResume, CallerHungUp, CallFinished, CallQueued, CancelOffer,
                                    DialCallback, DivertCall, InvalidInput, OfferCall, OfferCallback)
from router.events import Event
from router.ivr.registry import FlowRegistry
from router.ivr.session import Enqueue
from router.pbx.agi_ivr import AgiFlowDriver
from router.pbx.ami import (AmiError, AmiEvent, AmiLink, ContactStatus, DeviceStateChange, DialBegin, DialEnd,
                            Hangup, LinkDown, LinkUp, Resync, UserEvent)
from router.pbx.fastagi import AGIError, AGISession
from router.store.writer import EventWriter

log = structlog.get_logger("router.pbx.adapter")

MISSED_REASONS = {"NOANSWER": "timeout", "BUSY": "busy", "CHANUNAVAIL": "unreachable",
                  "CONGESTION": "unreachable"}
HOLD_CONTEXT = "router-hold"
CONNECT_CONTEXT = "router-connect"
DIVERT_CONTEXT = "router-divert"
_ENDPOINT_NUMBER = re.compile(r"/([^/@]+)(?:@.*)?$")


@dataclass
class LiveCall:
    """What the adapter knows of one call on Asterisk."""
    call_id: str
    channel: str
    uniqueid: str
    caller_id: str
    state: str = "ivr"                  # ivr | queued | ringing | connected | diverted | ended
    agent: str | None = None            # offered to / connected with
    endpoint: str | None = None         # the offered agent's dial string
    agent_channel: str | None = None    # the Dial's outgoing channel (from DialBegin)
    redirected: bool = False            # the current offer's Redirect to router-connect went through
    queued_at: float | None = None      # loop time the call joined a queue
    offered_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AsteriskAdapter:
    """Drives `engine` and the flows of `registry` from Asterisk over `ami` and FastAGI."""

    def __init__(self, centre: Centre, engine: Engine, registry: FlowRegistry, writer: EventWriter | None,
                 ami: AmiLink, *, default_flow: str = "main", flows_by_dnis: Mapping[str, str] | None = None,
                 event_buffer: int = 10_000) -> None:
        self.centre = centre
        self.engine = engine
        self.registry = registry
        self.writer = writer
        self.ami = ami
        self.default_flow = default_flow
        self.flows_by_dnis = dict(flows_by_dnis or {})
        self.calls: dict[str, LiveCall] = {}
        self.device_states: dict[str, str] = {}
        self.draining = False
        self.route_ms: list[float] = []     # queue join (or re-queue) → agent dialled, per offer
        self.events_dropped = 0
        self._by_channel: dict[str, LiveCall] = {}
        self._agents_by_number = self._agent_numbers(centre)
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(event_buffer)   # None: stop
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._epoch_offset = 0.0
        self._idle = asyncio.Event()

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._epoch_offset = time.time() - loop.time()
        self.ami.subscribe(self._on_ami)
        self._background = [asyncio.create_task(self._timers(), name="router.pbx.timers"),
                            asyncio.create_task(self._pump_events(), name="router.pbx.events")]

    def now(self) -> float:
        """Epoch seconds on the loop's monotonic clock."""
        return self._epoch_offset + asyncio.get_running_loop().time()

    def routes(self) -> dict[str, Any]:
        """The FastAGI routes this adapter serves."""
        return {"ivr": self.ivr}

    async def drain(self, timeout_s: float) -> bool:
        """Take no new calls; wait up to `timeout_s` for the calls in progress to end."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout_s):
                while self._live_calls():
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            log.warning("adapter.drain_timeout", calls=len(self._live_calls()), timeout_s=timeout_s)
            return False
        return True

    async def close(self) -> None:
        """Stop the timers, finish the AMI actions under way and hand every event to the writer."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.ami.action_timeout_s)
        for task in self._background:
            if task.get_name() == "router.pbx.timers":
                task.cancel()
        await self._events.put(None)
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- agents ---------------------------------------------------------------------------

    async def login(self, agent: str) -> None:
        self._feed(AgentLogin(agent))

    async def logout(self, agent: str) -> None:
        self._feed(AgentLogout(agent))

    async def pause(self, agent: str, reason: str = "break") -> None:
        self._feed(AgentPause(agent, reason))

    async def resume(self, agent: str) -> None:
        self._feed(AgentResume(agent))

    # --- the IVR (FastAGI route) -------------------------------------------------------

    async def ivr(self, agi: AGISession) -> None:
        env = agi.env
        if self.draining:
            log.info("adapter.refused_draining", channel=env.get("agi_channel"))
            await agi.send('SET VARIABLE ROUTER_NEXT "hangup"')
            return
        call = LiveCall(call_id=str(uuid.uuid4()), channel=env.get("agi_channel", ""),
                        uniqueid=env.get("agi_uniqueid", ""), caller_id=env.get("agi_callerid", ""))
        dnis = env.get("agi_extension", "")
        self.calls[call.call_id] = call
        self._by_channel[call.channel] = call
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            async with call.lock:
                try:
                    enqueue = await self._run_ivr(agi, call, dnis)
                except BaseException:
                    self._forget(call)
                    raise
                if enqueue is None or call.state == "ended":
                    self._forget(call)
                    return
                await agi.close()               # the dialplan goes on to [router-hold]
                if call.state == "ended":       # hung up meanwhile
                    self._forget(call)
                    return
                call.state = "queued"
                call.queued_at = asyncio.get_running_loop().time()
                self._feed(CallQueued(call.call_id, enqueue.queue, caller_id=call.caller_id,
                                      priority=enqueue.priority, skills=dict(enqueue.skills),
                                      data=dict(enqueue.data)))

    async def _run_ivr(self, agi: AGISession, call: LiveCall, dnis: str) -> Enqueue | None:
        """The DID's flow, to its end; the Enqueue it ended with, if any."""
        self._emit(Event(self.now(), "call.arrived", call_id=call.call_id,
                         data={"caller_id": call.caller_id, "dnis": dnis}))
        await agi.send(f'SET VARIABLE ROUTER_CALL_ID "{call.call_id}"')
        flow = self.flows_by_dnis.get(dnis, self.default_flow)
        session = self.registry.session(flow, call_id=call.call_id, caller_id=call.caller_id, dnis=dnis,
                                        now=datetime.now(timezone.utc),
                                        language=agi.env.get("agi_language") or None)
        try:
            final = await AgiFlowDriver(agi, session, self._emit).run()
        except AGIError:
            log.warning("adapter.ivr_failed", exc_info=True)
            return None
        return next((c for c in final if isinstance(c, Enqueue)), None)

    # --- engine in and out ----------------------------------------------------------------

    def _feed(self, message: Any) -> None:
        try:
            outputs = self.engine.handle(message, self.now())
        except InvalidInput as error:
            log.warning("adapter.engine_refused", input=type(message).__name__, reason=str(error))
            return
        self._apply(outputs)
        self._wake.set()

    def _apply(self, outputs: list[Any]) -> None:
        for output in outputs:
            if isinstance(output, Event):
                self._emit(output)
            else:
                self._command(output)

    def _command(self, command: OfferCall | CancelOffer | DivertCall | OfferCallback | DialCallback) -> None:
        if isinstance(command, (OfferCallback, DialCallback)):
            # call-backs over Asterisk are not built yet: the caller simply keeps waiting
            log.info("adapter.callback_not_supported", command=type(command).__name__, call_id=command.call_id)
            return
        call = self.calls.get(command.call_id)
        if call is None or call.state == "ended":
            return
        if isinstance(command, OfferCall):
            call.state, call.agent, call.agent_channel = "ringing", command.agent, None
            call.endpoint, call.redirected = command.endpoint, False
            call.offered_at = asyncio.get_running_loop().time()
            work = self._offer(call, command)
        elif isinstance(command, CancelOffer):
            if call.state != "ringing" or call.agent != command.agent:
                return
            call.state, call.agent, call.agent_channel = "queued", None, None
            call.queued_at = asyncio.get_running_loop().time()
            work = self._redirect(call, HOLD_CONTEXT)
        else:
            call.state = "diverted"
            work = self._divert(call, command)
        task = asyncio.create_task(self._locked(call, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _locked(self, call: LiveCall, work: Any) -> None:
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            async with call.lock:
                try:
                    await work
                except AmiError as error:
                    log.warning("adapter.action_failed", reason=str(error), state=call.state)
                    if call.state == "ringing" and call.agent is not None:
                        agent, call.state, call.agent = call.agent, "queued", None
                        self._feed(AgentMissed(call.call_id, agent, "unreachable"))

    async def _offer(self, call: LiveCall, offer: OfferCall) -> None:
        if call.state != "ringing" or call.agent != offer.agent:
            return                              # overtaken while waiting for the lock
        ring_s = max(1, int(offer.ring_timeout_s) - 1)
        await self.ami.pipeline(_set_and_redirect(call.channel, CONNECT_CONTEXT, {
            "ROUTER_TARGET": offer.endpoint, "ROUTER_RING_TIMEOUT": str(ring_s), "ROUTER_CALL_ID": call.call_id}))
        call.redirected = True
        if call.queued_at is not None:
            self.route_ms.append((asyncio.get_running_loop().time() - call.queued_at) * 1000.0)
        log.info("adapter.offered", agent=offer.agent, endpoint=offer.endpoint)

    async def _redirect(self, call: LiveCall, context: str) -> None:
        if call.state != "ended":
            await self.ami.redirect(call.channel, context)

    async def _divert(self, call: LiveCall, divert: DivertCall) -> None:
        settings = {"ROUTER_NEXT": {"voicemail": "voicemail", "transfer": "transfer"}.get(divert.action,
                                                                                            "hangup")}
        if divert.action == "voicemail" and divert.target:
            settings["ROUTER_MAILBOX"] = divert.target
        if divert.action == "transfer" and divert.target:
            settings["ROUTER_TARGET"] = divert.target
        if divert.message:
            settings["ROUTER_MESSAGE"] = divert.message
        await self.ami.pipeline(_set_and_redirect(call.channel, DIVERT_CONTEXT, settings))
        log.info("adapter.diverted", action=divert.action, target=divert.target)

    async def _timers(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - self.now())
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            try:
                self._apply(self.engine.advance(self.now()))
            except Exception:            # a bug in one timer must not stop all the others
                log.exception("adapter.timer_failed")

    # --- events to the store -------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Store an event from outside the call flow (e.g. ``flow.reloaded``)."""
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if self.writer is None:
            return
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.events_dropped += 1
            log.error("adapter.event_buffer_full", type=event.type, dropped=self.events_dropped)

    async def _pump_events(self) -> None:
        while True:
            event = await self._events.get()
            if event is None:
                return
            try:
                await self.writer.put(event)    # type: ignore[union-attr]
            except Exception:
                log.exception("adapter.event_rejected", type=event.type)

    # --- AMI events ------------------------------------------------------------------------

    def _on_ami(self, event: AmiEvent) -> None:
        if isinstance(event, DialBegin):
            call = self._by_channel.get(event.channel or "")
            if call is not None and call.state == "ringing" and call.agent_channel is None:
                call.agent_channel = event.dest_channel
        elif isinstance(event, DialEnd):
            self._on_dial_end(event)
        elif isinstance(event, Hangup):
            call = self._by_channel.get(event.channel or "")
            if call is not None:
                self._caller_gone(call)
        elif isinstance(event, UserEvent):
            self._on_user_event(event)
        elif isinstance(event, Resync):
            self._on_resync(event)
        elif isinstance(event, (LinkDown, LinkUp)):
            log.info("adapter.ami_link", state=type(event).__name__)
        elif isinstance(event, DeviceStateChange):
            self.device_states[event.device or ""] = event.state or ""
        elif isinstance(event, ContactStatus):
            log.info("adapter.contact_status", endpoint=event.endpoint, status=event.status)

    def _on_dial_end(self, event: DialEnd) -> None:
        call = self._by_channel.get(event.channel or "")
        if call is None or call.state != "ringing" or call.agent is None:
            return
        if call.agent_channel is None or event.dest_channel != call.agent_channel:
            return                               # the end of an earlier, cancelled dial
        agent = call.agent
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            log.info("adapter.dial_end", agent=agent, status=event.dial_status)
            if event.dial_status == "ANSWER":
                call.state = "connected"
                self._feed(AgentAnswered(call.call_id, agent))
            elif event.dial_status in MISSED_REASONS:
                call.state, call.agent, call.agent_channel = "queued", None, None
                call.queued_at = asyncio.get_running_loop().time()
                self._feed(AgentMissed(call.call_id, agent, MISSED_REASONS[event.dial_status]))

    def _on_user_event(self, event: UserEvent) -> None:
        if event.name == "RouterDialFailed":
            call = self.calls.get(event.fields.get("call", ""))
            # Only a dial that never began (no DialBegin, so no DialEnd) of the current offer;
            # the event of a dial that DialEnd already reported names an earlier target.
            if call is not None and call.state == "ringing" and call.agent is not None \
                    and call.agent_channel is None and event.fields.get("target") == call.endpoint:
                agent, call.state, call.agent = call.agent, "queued", None
                call.queued_at = asyncio.get_running_loop().time()
                reason = MISSED_REASONS.get(event.fields.get("status", ""), "unreachable")
                self._feed(AgentMissed(call.call_id, agent, reason))
        elif event.name == "RouterAgent":
            agent = self._agents_by_number.get(event.fields.get("agent", ""))
            action = event.fields.get("action")
            if agent is None:
                log.warning("adapter.unknown_agent_phone", number=event.fields.get("agent"))
                return
            if action == "login":
                self._feed(AgentLogin(agent))
            elif action == "logout":
                self._feed(AgentLogout(agent))
            elif action == "pause":
                self._feed(AgentPause(agent, event.fields.get("reason") or "break"))
            elif action == "unpause":
                self._feed(AgentResume(agent))

    def _on_resync(self, resync: Resync) -> None:
        self.device_states.update(resync.devices)
        live = {info.channel: info for info in resync.channels}
        for call in list(self.calls.values()):
            if call.state not in ("queued", "ringing", "connected", "diverted"):
                continue
            info = live.get(call.channel)
            if info is None:
                log.info("adapter.resync_gone", call_id=call.call_id, state=call.state)
                self._caller_gone(call)
            elif call.state == "ringing" and call.agent is not None:
                if info.bridge_id:
                    call.state = "connected"
                    self._feed(AgentAnswered(call.call_id, call.agent))
                elif info.context == HOLD_CONTEXT and call.redirected:
                    agent, call.state, call.agent = call.agent, "queued", None
                    self._feed(AgentMissed(call.call_id, agent, "timeout"))
        log.info("adapter.resynced", channels=len(resync.channels), calls=len(self._live_calls()))

    def _caller_gone(self, call: LiveCall) -> None:
        state, call.state = call.state, "ended"
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            if state == "connected":
                self._feed(CallFinished(call.call_id))
            elif state in ("queued", "ringing"):
                self._feed(CallerHungUp(call.call_id))
        if state != "ivr":                   # the AGI route forgets calls that end in the IVR
            self._forget(call)

    def _forget(self, call: LiveCall) -> None:
        call.state = "ended"
        self.calls.pop(call.call_id, None)
        if self._by_channel.get(call.channel) is call:
            del self._by_channel[call.channel]
        if not self._live_calls():
            self._idle.set()

    def _live_calls(self) -> list[LiveCall]:
        return [call for call in self.calls.values() if call.state != "ended"]

    @staticmethod
    def _agent_numbers(centre: Centre) -> dict[str, str]:
        numbers = {agent.id: agent.id for agent in centre.agents.values()}
        for agent in centre.agents.values():
            match = _ENDPOINT_NUMBER.search(agent.endpoint)
            if match is not None:
                numbers[match[1]] = agent.id
        return numbers


def _set_and_redirect(channel: str, context: str, variables: dict[str, str]) -> list[dict[str, str]]:
    """Setvar actions then the Redirect that uses them, for `AmiLink.pipeline` (one round trip)."""
    return [*({"Action": "Setvar", "Channel": channel, "Variable": name, "Value": value}
              for name, value in variables.items()),
            {"Action": "Redirect", "Channel": channel, "Context": context, "Exten": "s", "Priority": "1"}]
