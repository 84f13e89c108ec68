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
2. An agent free the moment the caller queues: ``EXEC Dial`` over the IVR's
   own AGI (`_queued_from_ivr`, `_dial_in_agi`; no hold, no Redirect).
   Otherwise, later: `OfferCall` → AMI ``Setvar`` ROUTER_TARGET (the agent's endpoint),
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
6. The Hangup of the Dial's agent leg of a connected call → `CallFinished`;
   the caller stays for the queue's survey (AGI route `survey`) if it has one.

Holding callers run short AGIs that never take the call's lock, so an offer's
Redirect simply ends them: `announce` (position, estimated wait; a key during
it counts as pressed on hold), `hold-key` (the queue's call-back key runs its
offer flow; its leave key → `CallerLeft`) and `callback-offer` (where the
engine's `OfferCallback` sends the caller).  A call-back taken there or in
the IVR is `CallbackAccepted`, saved by the `CallbackStore` before the caller
hears the confirmation (not saved → `CallbackWithdrawn`, the caller waits on).
`DialCallback` → an Originate of the first leg (agent, or customer) into
``router-callback`` / ``router-callback-customer``; its OriginateResponse says
if it did not answer (`AgentMissed` / `CallbackFailed`), ``UserEvent
RouterCallback`` the rest (`AgentAnswered`, `CallbackAnswered`,
`CallbackFailed`), the leg's Hangup ends it.  Agents whose phone is
unreachable (device state, PJSIP contact status) are paused with reason
``unreachable`` and resumed when it is back.

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
endpoint ends in ``/<number>`` or whose id is that number), with the async
methods `login`, `logout`, `pause`, `resume`, and from the web API: `submit`
applies a supervisor's input (refusing it, unchanged, when it does not fit),
`monitor` originates the supervisor's phone into ChanSpy on the agent's leg,
`reload_flows` reloads the flow set; `observers` (the web service) see every
event before it is stored.

Events go to the `EventWriter` through a bounded local buffer drained by one
task, so neither the AMI reader nor the AGI route ever waits for PostgreSQL.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog

from router.config.model import Centre
from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentMissed, AgentPause,
                                    AgentResume, CallbackAccepted, CallbackAnswered, CallbackFailed,
                                    CallbackWithdrawn, CallerHungUp, CallerLeft, CallFinished, CallQueued, CancelOffer, DialCallback, DivertCall,
                                    InvalidInput, OfferCall, OfferCallback)
from router.events import Event, caller_number
from router.ivr.registry import FlowRegistry
from router.ivr import session as ivr
from router.ivr.session import Enqueue
from router.pbx.agi_ivr import AgiFlowDriver
from router.pbx.ami import (AmiError, AmiEvent, AmiLink, ContactStatus, DeviceStateChange, DialBegin, DialEnd,
                            Hangup, LinkDown, LinkUp, Resync, UserEvent)
from router.pbx.fastagi import AGIError, AGIHangup, AGISession
from router.store.callback_store import CallbackStore
from router.store.writer import EventWriter
from router.web.operations import MonitorUnavailable

log = structlog.get_logger("router.pbx.adapter")

MISSED_REASONS = {"NOANSWER": "timeout", "BUSY": "busy", "CHANUNAVAIL": "unreachable",
                  "CONGESTION": "unreachable"}
HOLD_CONTEXT = "router-hold"
CONNECT_CONTEXT = "router-connect"
DIVERT_CONTEXT = "router-divert"
CALLBACK_CONTEXT = "router-callback"                 # agent first: the agent's leg runs it
CALLBACK_CUSTOMER_CONTEXT = "router-callback-customer"
HOLD_KEYS = "0123456789*#"
UNREACHABLE_REASON = "unreachable"
UNREACHABLE_DEVICE_STATES = frozenset({"UNAVAILABLE", "INVALID"})
REACHABLE_DEVICE_STATES = frozenset({"NOT_INUSE", "INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})
CONTACT_STATES = {"Unreachable": "UNAVAILABLE", "Removed": "UNAVAILABLE", "Reachable": "NOT_INUSE",
                  "Created": "NOT_INUSE"}
CALLBACK_FAILED = {"NOANSWER": "no_answer", "BUSY": "busy"}      # DIALSTATUS -> CallbackFailed reason
_ENDPOINT_NUMBER = re.compile(r"/([^/@]+)(?:@.*)?$")


@dataclass
class LiveCall:
    """What the adapter knows of one call on Asterisk."""
    call_id: str
    channel: str
    uniqueid: str
    caller_id: str
    state: str = "ivr"                  # ivr | queued | ringing | connected | diverted | callback | ended
                                        # (a call-back leg: ringing | up | connected | ended)
    agent: str | None = None            # offered to / connected with
    endpoint: str | None = None         # the offered agent's dial string
    agent_channel: str | None = None    # the Dial's outgoing channel (from DialBegin)
    redirected: bool = False            # the current offer's Redirect to router-connect went through
    pending_offer: OfferCall | None = None   # the offer whose actions wait for the call's lock
    dialing_in_agi: bool = False        # the offer's Dial runs over the IVR's AGI
    queue: str | None = None            # queue of the current offer
    offers: int = 0                     # offers made so far (tells a late result of an earlier one)
    survey_context: dict[str, str] = field(default_factory=dict)   # queue and agent, for the survey
    queued_at: float | None = None      # loop time the call joined a queue
    offered_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AsteriskAdapter:
    """Drives `engine` and the flows of `registry` from Asterisk over `ami` and FastAGI."""

    def __init__(self, centre: Centre, engine: Engine, registry: FlowRegistry, writer: EventWriter | None,
                 ami: AmiLink, *, default_flow: str = "main", flows_by_dnis: Mapping[str, str] | None = None,
                 event_buffer: int = 10_000, callback_store: CallbackStore | None = None) -> None:
        self.centre = centre
        self.engine = engine
        self.registry = registry
        self.writer = writer
        self.ami = ami
        self.default_flow = default_flow
        self.flows_by_dnis = dict(flows_by_dnis or {})
        self.calls: dict[str, LiveCall] = {}
        self.callbacks: dict[str, LiveCall] = {}     # call-backs being dialled, by call id
        self.callback_store = callback_store
        self.device_states: dict[str, str] = {}
        self.draining = False
        self.route_ms: list[float] = []     # queue join (or re-queue) → agent dialled, per offer
        self.events_dropped = 0
        self._by_channel: dict[str, LiveCall] = {}
        self._by_agent_channel: dict[str, LiveCall] = {}   # the Dial's agent leg -> its call
        self._agents_by_number = self._agent_numbers(centre)
        self._agents_by_device = {a.endpoint: a.id for a in centre.agents.values()
                                  if not a.endpoint.startswith("Local/")}   # PJSIP/1001 is its own device
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(event_buffer)   # None: stop
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._epoch_offset = 0.0
        self._idle = asyncio.Event()
        self.observers: list[Callable[[Event], None]] = []   # the web service's board and metrics

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
        return {"ivr": self.ivr, "announce": self.announce, "hold-key": self.hold_key,
                "callback-offer": self.callback_offer, "survey": self.survey}

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

    async def restore_callbacks(self) -> int:
        """Take back the open call-backs of the store (after a restart), in place order."""
        if self.callback_store is None:
            return 0
        changed = await self.callback_store.reconcile()
        restored = await self.callback_store.load_open()
        for callback in restored:
            self._feed(callback)
        log.info("adapter.callbacks_restored", count=len(restored), reconciled=changed)
        return len(restored)

    async def login(self, agent: str) -> None:
        self._logged_in(agent)

    def _logged_in(self, agent: str) -> None:
        self._feed(AgentLogin(agent))
        self._logged_in_device(agent)

    def _logged_in_device(self, agent: str) -> None:
        """A phone known to be unreachable pauses the agent who just logged in on it."""
        endpoint = self.centre.agents[agent].endpoint if agent in self.centre.agents else ""
        if endpoint in self.device_states:
            self._device_state(agent, self.device_states[endpoint])

    async def logout(self, agent: str) -> None:
        self._feed(AgentLogout(agent))

    async def pause(self, agent: str, reason: str = "break") -> None:
        self._feed(AgentPause(agent, reason))

    async def resume(self, agent: str) -> None:
        self._feed(AgentResume(agent))

    # --- the web API's side (router.web.operations.Pbx) -------------------------------------

    def submit(self, message: Any) -> None:
        """A supervisor's input: applied now, or InvalidInput raised with nothing changed."""
        self._apply(self.engine.handle(message, self.now()))
        self._wake.set()
        if isinstance(message, AgentLogin):
            self._logged_in_device(message.agent)

    async def monitor(self, agent: str, supervisor: str, flags: str) -> dict[str, Any]:
        """Originate the supervisor's phone into ChanSpy on the agent's leg of its current call."""
        call_id = self.engine.agents[agent].call_id
        call = self.calls.get(call_id or "") or self.callbacks.get(call_id or "")
        channel = None
        if call is not None:
            channel = call.agent_channel if call.call_id in self.calls else call.channel
        if not channel:
            raise MonitorUnavailable(f"agent {agent!r}: no channel of its call is known yet")
        try:
            originate_id = await self.ami.originate({
                "Channel": supervisor, "Application": "ChanSpy", "Data": f"{channel},{flags}",
                "CallerID": f"Monitor {agent} <monitor>"})
        except AmiError as error:
            raise MonitorUnavailable(f"Asterisk did not take the monitoring call: {error}") from None
        log.info("adapter.monitor", agent=agent, channel=channel, flags=flags)
        return {"channel": channel, "originate_id": originate_id}

    async def reload_flows(self) -> dict[str, Any]:
        result = self.registry.reload(self.now())
        self.record(result.event)
        return {"ok": result.ok, "version": result.version,
                "errors": [str(p) for p in result.problems if p.severity == "error"]}

    # --- the IVR (FastAGI route) -------------------------------------------------------

    async def ivr(self, agi: AGISession) -> None:
        env = agi.env
        if self.draining:
            log.info("adapter.refused_draining", channel=env.get("agi_channel"))
            await agi.send('SET VARIABLE ROUTER_NEXT "hangup"')
            return
        call = LiveCall(call_id=str(uuid.uuid4()), channel=env.get("agi_channel", ""),
                        uniqueid=env.get("agi_uniqueid", ""), caller_id=caller_number(env.get("agi_callerid")))
        dnis = env.get("agi_extension", "")
        self.calls[call.call_id] = call
        self._by_channel[call.channel] = call
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            async with call.lock:
                try:
                    final, dialing = await self._run_ivr(agi, call, dnis)
                except BaseException:
                    self._forget(call)
                    raise
                if call.call_id not in self.engine.calls or call.state in ("callback", "ended"):
                    self._forget(call)          # ended in the IVR, hung up, or left with a call-back
                    return
                if not any(isinstance(c, Enqueue) for c in final):
                    # a refused call-back: the engine queued the call, the driver set no hold variables
                    await self._hold_settings(agi, self.engine.calls[call.call_id].queue)
                    if call.state == "ivr":
                        call.state, call.queued_at = "queued", asyncio.get_running_loop().time()
                if not dialing:
                    await agi.close()           # the dialplan goes on to [router-hold]
                    if call.state == "ended":   # hung up meanwhile
                        self._forget(call)
                    return
            await self._dial_in_agi(agi, call)  # without the lock: a Redirect may end it

    def _queued_from_ivr(self, call: LiveCall, enqueue: Enqueue) -> str | None:
        """The IVR put the caller in a queue (its ROUTER_NEXT=hold is on its way to Asterisk):
        tell the engine; if it offers the call at once, the Dial goes out over the same AGI
        right behind, without music, Redirect or AMI round trip."""
        call.state, call.queued_at = "queued", asyncio.get_running_loop().time()
        self._feed(CallQueued(call.call_id, enqueue.queue, caller_id=call.caller_id, priority=enqueue.priority,
                              skills=dict(enqueue.skills), data=dict(enqueue.data)))
        offer = call.pending_offer
        if call.state != "ringing" or offer is None or any(ch in offer.endpoint for ch in ',"\\ '):
            return None                         # waits; or an endpoint only the AMI path can carry
        call.pending_offer, call.redirected, call.dialing_in_agi = None, True, True
        self.route_ms.append((asyncio.get_running_loop().time() - call.queued_at) * 1000.0)
        log.info("adapter.offered", agent=offer.agent, endpoint=offer.endpoint, via="agi")
        return f'EXEC Dial "{offer.endpoint},{max(1, int(offer.ring_timeout_s) - 1)}"'

    async def _dial_in_agi(self, agi: AGISession, call: LiveCall) -> None:
        """Wait for the Dial sent behind the IVR's last command.  Answered: it returns when
        the agent hangs up (the call's end comes from the agent leg's Hangup event), and the
        caller takes the queue's survey.  Not answered: DialEnd reports it, or nothing does
        when the dial never began; the caller goes on to [router-hold] (ROUTER_NEXT=hold)."""
        offer_number = call.offers
        try:
            await agi.reply("EXEC Dial", timeout_s=None)
            if agi.hung_up:
                return                          # the caller hung up, or a Redirect took the call
            status = (await agi.send("GET VARIABLE DIALSTATUS")).data
            call.dialing_in_agi = False
            if status == "ANSWER":
                if call.queue is not None and self.centre.queues[call.queue].survey:
                    await self._run_survey(agi, call, {"queue": call.queue, "agent": call.agent or ""})
                await agi.send('SET VARIABLE ROUTER_NEXT "hangup"')
            elif call.offers == offer_number and call.state == "ringing" and call.agent is not None \
                    and call.agent_channel is None:
                agent, call.state, call.agent = call.agent, "queued", None     # no DialBegin, no DialEnd
                call.queued_at = asyncio.get_running_loop().time()
                self._feed(AgentMissed(call.call_id, agent, MISSED_REASONS.get(status, "unreachable")))
        except AGIError:
            log.info("adapter.dial_in_agi_ended", hung_up=agi.hung_up)
        finally:
            call.dialing_in_agi = False
            await agi.close()

    def _hold_variables(self, queue_id: str) -> dict[str, str]:
        """What [router-hold] needs to know of the queue: music class, announcement period."""
        hold = self.centre.queues[queue_id].hold
        return {"ROUTER_MOH_CLASS": hold.moh_class, "ROUTER_ANNOUNCE_S": str(int(hold.announce_s))}

    async def _hold_settings(self, agi: AGISession, queue_id: str) -> None:
        try:
            for name, value in self._hold_variables(queue_id).items():
                await agi.send(f'SET VARIABLE {name} "{value}"')
        except AGIError:
            log.info("adapter.hold_settings_lost")     # the caller hung up: the Hangup event follows

    async def _run_ivr(self, agi: AGISession, call: LiveCall, dnis: str) -> tuple[list[Any], bool]:
        """The DID's flow, to its end: the commands it ended with, and whether a Dial to a free
        agent is under way on the AGI."""
        self._emit(Event(self.now(), "call.arrived", call_id=call.call_id,
                         data={"caller_id": call.caller_id, "dnis": dnis}))
        await agi.send(f'SET VARIABLE ROUTER_CALL_ID "{call.call_id}"')
        flow = self.flows_by_dnis.get(dnis, self.default_flow)
        session = self.registry.session(flow, call_id=call.call_id, caller_id=call.caller_id, dnis=dnis,
                                        now=datetime.now(timezone.utc),
                                        language=agi.env.get("agi_language") or None)
        async def on_callback(offer: ivr.OfferCallback) -> bool | None:
            self._feed(CallbackAccepted(call.call_id, offer.number, queue=offer.queue, caller_id=call.caller_id,
                                        **self._slot(offer)))
            if call.state == "ringing":
                return None                     # an agent was free: no call-back needed
            return await self._keep_callback(call)

        driver = AgiFlowDriver(agi, session, self._emit, on_callback, self._hold_variables,
                               functools.partial(self._queued_from_ivr, call))
        try:
            final = await driver.run()
        except AGIError:
            log.warning("adapter.ivr_failed", exc_info=True)
            return [], False
        return final, call.dialing_in_agi

    async def survey(self, agi: AGISession) -> None:
        """After the agent hung up: the queue's post-call survey (``survey.answered`` events)."""
        call = self._by_channel.get(agi.env.get("agi_channel", ""))
        if call is not None and call.state == "connected" and call.agent_channel:
            self._agent_leg_gone(call.agent_channel)   # the dialplan got here before the Hangup event
        if call is None or call.state != "survey":
            return
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            await self._run_survey(agi, call, call.survey_context)

    async def _run_survey(self, agi: AGISession, call: LiveCall, context: dict[str, str]) -> None:
        flow = self.centre.queues[context["queue"]].survey
        try:
            session = self.registry.session(flow or "", call_id=call.call_id, caller_id=call.caller_id,
                                            dnis="", now=datetime.now(timezone.utc),
                                            language=agi.env.get("agi_language") or None, context=context)
        except (KeyError, RuntimeError) as error:
            log.error("adapter.survey_flow_unusable", flow=flow, reason=str(error))
            return
        try:
            await AgiFlowDriver(agi, session, self._emit).run()
        except AGIError:
            log.warning("adapter.survey_failed", exc_info=True)

    # --- holding callers (FastAGI routes of [router-hold]) ----------------------------

    def _holding(self, agi: AGISession) -> tuple[LiveCall, Any] | None:
        """The waiting call on the AGI's channel and its engine runtime; None if it is not waiting."""
        call = self._by_channel.get(agi.env.get("agi_channel", ""))
        runtime = self.engine.calls.get(call.call_id) if call is not None else None
        if call is None or call.state != "queued" or runtime is None or runtime.slot is None \
                or runtime.callback is not None:
            return None
        return call, runtime

    async def announce(self, agi: AGISession) -> None:
        """Every ROUTER_ANNOUNCE_S seconds on hold: the caller's position and estimated wait."""
        holding = self._holding(agi)
        if holding is None:
            return
        call, runtime = holding
        hold = self.centre.queues[runtime.queue].hold
        position = self.engine.position(call.call_id)
        ewt = self.engine.ewt(runtime.queue, position)
        prompts: list[str | tuple[str, int]] = []
        if hold.announce_position:
            prompts += ["queue-youarenext"] if position <= 1 else [
                "queue-thereare", ("number", position), "queue-callswaiting"]
        if hold.announce_ewt and ewt is not None and position > 1:
            minutes = round(ewt / 60)
            prompts += ["queue-holdtime", *(["queue-less-than", ("number", 1)] if minutes < 1 else
                                            [("number", minutes)]), "queue-minutes"]
        if prompts:
            prompts.append("queue-thankyou")
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            log.info("adapter.announced", position=position, ewt_s=None if ewt is None else round(ewt, 1))
            try:
                for prompt in prompts:
                    command = (f'SAY NUMBER {int(prompt[1])} "{HOLD_KEYS}"' if isinstance(prompt, tuple)
                               else f'STREAM FILE {prompt} "{HOLD_KEYS}"')
                    reply = await agi.send(command)
                    if agi.hung_up:
                        return              # hung up, or taken away by the router's Redirect
                    if reply.result not in ("", "0", "-1"):
                        await self._on_hold_key(agi, call, runtime, chr(int(reply.result)))
                        return              # a key during the announcement counts as pressed on hold
            except AGIHangup:
                return

    async def hold_key(self, agi: AGISession) -> None:
        """A key pressed on hold: the queue's call-back key or leave key; others are ignored."""
        holding = self._holding(agi)
        if holding is not None:
            with structlog.contextvars.bound_contextvars(call_id=holding[0].call_id):
                await self._on_hold_key(agi, *holding, agi.env.get("agi_extension", ""))

    async def _on_hold_key(self, agi: AGISession, call: LiveCall, runtime: Any, key: str) -> None:
        queue = self.centre.queues[runtime.queue]
        log.info("adapter.hold_key", key=key)
        if key == queue.hold.callback_key and queue.callback is not None:
            await self._offer_callback_over_agi(agi, call, queue.callback.offer_flow)
        elif key == queue.hold.leave_key:
            mailbox = queue.hold.leave_mailbox
            call.state = "diverted"
            self._feed(CallerLeft(call.call_id, "voicemail" if mailbox else "hangup"))
            if mailbox:
                await agi.send(f'SET VARIABLE ROUTER_MAILBOX "{mailbox}"')
            await agi.send(f'SET VARIABLE ROUTER_NEXT "{"voicemail" if mailbox else "hangup"}"')
        else:
            await agi.send('SET VARIABLE ROUTER_NEXT "hold"')

    async def callback_offer(self, agi: AGISession) -> None:
        """The router offers a call-back (the estimated wait passed the queue's bound)."""
        holding = self._holding(agi)
        if holding is None:
            return
        call, runtime = holding
        policy = self.centre.queues[runtime.queue].callback
        if policy is not None:
            with structlog.contextvars.bound_contextvars(call_id=call.call_id):
                await self._offer_callback_over_agi(agi, call, policy.offer_flow)

    async def _offer_callback_over_agi(self, agi: AGISession, call: LiveCall, flow: str) -> None:
        """Run the queue's offer flow: it ends in a `callback` node (taken) or anything else (wait on)."""
        await agi.send('SET VARIABLE ROUTER_NEXT "hold"')
        try:
            session = self.registry.session(flow, call_id=call.call_id, caller_id=call.caller_id, dnis="",
                                            now=datetime.now(timezone.utc),
                                            language=agi.env.get("agi_language") or None)
        except (KeyError, ValueError, RuntimeError) as error:
            log.error("adapter.callback_flow_missing", flow=flow, reason=str(error))
            return

        async def on_callback(offer: ivr.OfferCallback) -> bool:
            if call.state != "queued":
                return False                    # being connected meanwhile
            self._feed(CallbackAccepted(call.call_id, offer.number, **self._slot(offer)))
            return await self._keep_callback(call)

        try:
            await AgiFlowDriver(agi, session, self._emit, on_callback).run()
        except AGIError:
            log.warning("adapter.callback_offer_failed", exc_info=True)

    @staticmethod
    def _slot(offer: ivr.OfferCallback) -> dict[str, Any]:
        at = getattr(offer, "at", None)
        return {} if at is None else {"at": at.timestamp()}

    async def _keep_callback(self, call: LiveCall) -> bool:
        """After CallbackAccepted: True once the call-back is committed to the database (the
        caller may hang up), False if the engine refused it or it could not be stored."""
        runtime = self.engine.calls.get(call.call_id)
        if runtime is None or runtime.callback is None:
            return False
        if self.callback_store is not None:
            try:
                await self.callback_store.save(runtime)
            except Exception as error:      # the database is away, or a duplicate slipped through
                log.error("adapter.callback_not_saved", reason=str(error))
                self._feed(CallbackWithdrawn(call.call_id))
                return False
        call.state = "callback"
        log.info("adapter.callback_kept", number_digits=len(runtime.callback.number))
        return True

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
        if isinstance(command, DialCallback):
            leg = LiveCall(command.call_id, channel="", uniqueid="", caller_id=command.number, state="ringing",
                           agent=command.agent, endpoint=command.endpoint)
            self.callbacks[command.call_id] = leg
            self._start(leg, self._dial_callback(leg, command))
            return
        if isinstance(command, CancelOffer) and command.call_id in self.callbacks:
            leg = self.callbacks[command.call_id]
            if leg.state == "ringing" and leg.agent == command.agent:
                leg.state = "ended"             # the engine gave up on the agent leg
                self._start(leg, self._hangup_leg(leg))
            return
        call = self.calls.get(command.call_id)
        if call is None or call.state == "ended":
            return
        if isinstance(command, OfferCallback):
            if call.state == "queued":
                self._start(call, self._redirect(call, HOLD_CONTEXT, "offer"))
            return
        if isinstance(command, OfferCall):
            call.state, call.agent, call.agent_channel = "ringing", command.agent, None
            call.endpoint, call.redirected, call.pending_offer = command.endpoint, False, command
            call.queue, call.offers = command.queue, call.offers + 1
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
        self._start(call, work)

    def _start(self, call: LiveCall, work: Any) -> None:
        self._spawn(self._locked(call, work))

    def _spawn(self, work: Any) -> None:
        """Run `work` as a task that `close` waits for."""
        task = asyncio.create_task(work)
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
        if call.state != "ringing" or call.agent != offer.agent or call.pending_offer is not offer:
            return                              # overtaken while waiting for the lock
        call.pending_offer = None
        ring_s = max(1, int(offer.ring_timeout_s) - 1)
        await self.ami.pipeline(_set_and_redirect(call.channel, CONNECT_CONTEXT, {
            "ROUTER_TARGET": offer.endpoint, "ROUTER_RING_TIMEOUT": str(ring_s), "ROUTER_CALL_ID": call.call_id,
            "ROUTER_SURVEY": self.centre.queues[offer.queue].survey or ""}))
        call.redirected = True
        if call.queued_at is not None:
            self.route_ms.append((asyncio.get_running_loop().time() - call.queued_at) * 1000.0)
        log.info("adapter.offered", agent=offer.agent, endpoint=offer.endpoint)

    async def _redirect(self, call: LiveCall, context: str, exten: str = "s") -> None:
        if call.state != "ended":
            await self.ami.redirect(call.channel, context, exten)

    # --- call-backs ------------------------------------------------------------------------

    async def _dial_callback(self, leg: LiveCall, dial: DialCallback) -> None:
        """Originate the first leg (agent, or customer when not `agent_first`); the dialplan
        dials the second.  A first leg that does not answer ends here; the rest arrives as
        UserEvent RouterCallback and Hangup."""
        policy = self.centre.queues[dial.queue].callback
        customer = (policy.dial if policy else "PJSIP/{number}@pstn").format(number=dial.number)
        ring_s = max(1, int(dial.ring_timeout_s) - 1)
        variables = {"ROUTER_CALL_ID": dial.call_id, "ROUTER_CB_NUMBER": dial.number,
                     "ROUTER_CB_AGENT": dial.endpoint, "ROUTER_CB_CUSTOMER": customer,
                     "ROUTER_WHISPER": (policy.whisper if policy else None) or "",
                     "ROUTER_RING_TIMEOUT": str(ring_s),
                     "ROUTER_MOH_CLASS": self.centre.queues[dial.queue].hold.moh_class}
        first, context = (dial.endpoint, CALLBACK_CONTEXT) if dial.agent_first else (customer,
                                                                                      CALLBACK_CUSTOMER_CONTEXT)
        log.info("adapter.callback_dialing", agent=dial.agent, attempt=dial.attempt, agent_first=dial.agent_first)
        originate_id = await self.ami.originate({
            "Channel": first, "Context": context, "Exten": "s", "Priority": "1", "Timeout": str(ring_s * 1000),
            "CallerID": f"{dial.queue} <{dial.number if dial.agent_first else ''}>",
            "Variable": [f"{name}={value}" for name, value in variables.items()]}, keep_answer=True)
        leg.uniqueid = originate_id
        try:
            answer = await self.ami.originate_answer(originate_id, ring_s + self.ami.action_timeout_s)
        except AmiError as error:
            log.warning("adapter.callback_answer_unknown", reason=str(error))
            return                      # the engine's ring timer (agent first) or a Hangup settles it
        if answer.answered or leg.state != "ringing":
            return
        leg.state = "ended"
        self.callbacks.pop(leg.call_id, None)
        if dial.agent_first:
            self._feed(AgentMissed(leg.call_id, dial.agent, answer.reason))
        else:
            self._feed(CallbackFailed(leg.call_id, {"timeout": "no_answer"}.get(answer.reason, answer.reason)))

    async def _hangup_leg(self, leg: LiveCall) -> None:
        if leg.channel:
            await self.ami.hangup(leg.channel)

    def _on_callback_event(self, event: UserEvent) -> None:
        leg = self.callbacks.get(event.fields.get("call", ""))
        stage = event.fields.get("stage")
        if leg is None:
            if stage in ("agent_up", "customer_up") and event.channel:
                self._spawn(self._quiet_hangup(event.channel))
            return
        with structlog.contextvars.bound_contextvars(call_id=leg.call_id):
            log.info("adapter.callback_stage", stage=stage, status=event.fields.get("status"))
            if leg.state == "ended":                 # cancelled while ringing: drop the leg
                if event.channel and stage in ("agent_up", "customer_up"):
                    self._spawn(self._quiet_hangup(event.channel))
                return
            if leg.state == "ringing" and stage in ("agent_up", "customer_up"):
                leg.state, leg.channel = "up", event.channel or ""
                self._by_channel[leg.channel] = leg
                self._feed(AgentAnswered(leg.call_id, leg.agent) if stage == "agent_up"  # type: ignore[arg-type]
                           else CallbackAnswered(leg.call_id))
            elif leg.state == "up" and stage in ("agent_up", "customer_up"):
                leg.state = "connected"
                self._feed(AgentAnswered(leg.call_id, leg.agent) if stage == "agent_up"  # type: ignore[arg-type]
                           else CallbackAnswered(leg.call_id))
            elif leg.state == "up" and stage == "customer_failed":
                leg.state = "failed"
                self._feed(CallbackFailed(leg.call_id, CALLBACK_FAILED.get(event.fields.get("status", ""),
                                                                           "unreachable")))
            elif leg.state == "up" and stage == "agent_failed":
                leg.state = "failed"
                self._feed(AgentMissed(leg.call_id, leg.agent or "",  # type: ignore[arg-type]
                                       MISSED_REASONS.get(event.fields.get("status", ""), "unreachable")))

    async def _quiet_hangup(self, channel: str) -> None:
        try:
            await self.ami.hangup(channel)
        except AmiError as error:
            log.warning("adapter.hangup_failed", reason=str(error))

    def _callback_leg_gone(self, leg: LiveCall) -> None:
        state, leg.state = leg.state, "ended"
        if self._by_channel.get(leg.channel) is leg:
            del self._by_channel[leg.channel]
        self.callbacks.pop(leg.call_id, None)
        with structlog.contextvars.bound_contextvars(call_id=leg.call_id):
            if state == "connected":
                self._feed(CallFinished(leg.call_id))
            elif state == "up":                  # hung up before the second leg answered
                self._feed(CallbackFailed(leg.call_id, "hangup"))
        if not self._live_calls():
            self._idle.set()

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
        for observe in self.observers:
            observe(event)
        if self.callback_store is not None:
            self.callback_store.follow(event)
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
                if event.dest_channel:
                    self._by_agent_channel[event.dest_channel] = call
        elif isinstance(event, DialEnd):
            self._on_dial_end(event)
        elif isinstance(event, Hangup):
            call = self._by_channel.get(event.channel or "")
            if call is not None and call.call_id in self.callbacks and self.callbacks[call.call_id] is call:
                self._callback_leg_gone(call)
            elif call is not None:
                self._caller_gone(call)
            else:
                self._agent_leg_gone(event.channel or "")
        elif isinstance(event, UserEvent):
            self._on_user_event(event)
        elif isinstance(event, Resync):
            self._on_resync(event)
        elif isinstance(event, (LinkDown, LinkUp)):
            log.info("adapter.ami_link", state=type(event).__name__)
        elif isinstance(event, DeviceStateChange):
            self.device_states[event.device or ""] = event.state or ""
            agent = self._agents_by_device.get(event.device or "")
            if agent is not None:
                self._device_state(agent, event.state or "")
        elif isinstance(event, ContactStatus):
            log.info("adapter.contact_status", endpoint=event.endpoint, status=event.status)
            agent = self._agents_by_device.get(f"PJSIP/{event.endpoint}")
            if agent is not None and event.status in CONTACT_STATES:
                self._device_state(agent, CONTACT_STATES[event.status])

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
        if event.name == "RouterCallback":
            self._on_callback_event(event)
        elif event.name == "RouterDialFailed":
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
                self._logged_in(agent)
            elif action == "logout":
                self._feed(AgentLogout(agent))
            elif action == "pause":
                self._feed(AgentPause(agent, event.fields.get("reason") or "break"))
            elif action == "unpause":
                self._feed(AgentResume(agent))

    def _device_state(self, agent_id: str, state: str) -> None:
        """An agent whose phone is unreachable is paused (reason ``unreachable``) instead of
        being offered calls that cannot ring; when it is back, the router resumes them, but
        only from a pause it made itself."""
        agent = self.engine.agents.get(agent_id)
        if agent is None:
            return
        if state in UNREACHABLE_DEVICE_STATES and agent.state is AgentState.AVAILABLE:
            log.info("adapter.agent_unreachable", agent=agent_id, device_state=state)
            self._feed(AgentPause(agent_id, UNREACHABLE_REASON))
        elif state in REACHABLE_DEVICE_STATES and agent.state is AgentState.PAUSED \
                and agent.reason == UNREACHABLE_REASON:
            log.info("adapter.agent_reachable", agent=agent_id, device_state=state)
            self._feed(AgentResume(agent_id))

    def _on_resync(self, resync: Resync) -> None:
        self.device_states.update(resync.devices)
        for device, state in resync.devices.items():
            if device in self._agents_by_device:
                self._device_state(self._agents_by_device[device], state)
        live = {info.channel: info for info in resync.channels}
        for call in list(self.calls.values()):
            if call.state not in ("queued", "ringing", "connected", "diverted", "callback", "survey", "after"):
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

    def _agent_leg_gone(self, channel: str) -> None:
        """The agent's side of a connected call hung up: the call is over for the engine; the
        caller may stay for the queue's survey ([router-connect] dials with option g)."""
        call = self._by_agent_channel.pop(channel, None)
        if call is None or call.state != "connected" or call.agent_channel != channel:
            return
        runtime = self.engine.calls.get(call.call_id)
        call.state = "survey" if runtime is not None and self.centre.queues[runtime.queue].survey else "after"
        call.survey_context = {"queue": runtime.queue, "agent": call.agent or ""} if runtime else {}
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            self._feed(CallFinished(call.call_id))

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
        if call.agent_channel and self._by_agent_channel.get(call.agent_channel) is call:
            del self._by_agent_channel[call.agent_channel]
        self.calls.pop(call.call_id, None)
        if self._by_channel.get(call.channel) is call:
            del self._by_channel[call.channel]
        if not self._live_calls():
            self._idle.set()

    def _live_calls(self) -> list[LiveCall]:
        return [call for call in (*self.calls.values(), *self.callbacks.values()) if call.state != "ended"]

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
