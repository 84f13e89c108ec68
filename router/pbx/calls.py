"""The PBX side of every call as a sans-IO state machine: `Switchboard`.

Theory of operation
-------------------
Like the engine (and h11), the switchboard does no I/O and reads no clock.  It
takes three kinds of input and answers with a list of *steps*: engine inputs
(router.engine.messages) for the adapter to feed, and PBX `Action`s for the
adapter to carry out on Asterisk:

- ``on_ami(event, now)``: what Asterisk reports (DialBegin/DialEnd, Hangup,
  user events of the dialplan, device states, the Resync after a login);
- ``on_engine(outputs, now)``: what the engine decided (commands and events);
- the AGI side (``ivr_started``, ``queued_from_ivr``, ``take_agi_dial``,
  ``agi_dial_ended``, ``holding``, ``callback_kept``, ``survey_for``) and the
  actions' fate (``action_begins``, ``action_done``, ``action_failed``,
  ``originate_answered``).

Recording (docs/recording.md) is decided here too.  When a call is offered,
router.recording.policy plans its recording from the queue's policy (a hash of
the call id decides a sample); the `Connect` carries it in ``ROUTER_RECORD*``
variables and ``[router-connect]`` starts MixMonitor on the caller's channel
before it dials (a recorded call never takes the IVR's own Dial, which could
not).  ``call.connected`` → `RecordingStarted`; the caller's hang-up →
`SaveRecording`.  A recording is muted (`MuteRecording`, AMI MixMonitorMute)
while the caller is in a ``sensitive`` IVR node (`flow_event`: a survey or
payment flow after the agent) or while a supervisor or the agent paused it
(`pause_recording`); it is muted while any of those holds.  Call-backs are
recorded the same way on the leg that dials the second one.

Each call on Asterisk has a `Phase`; every change goes through `TRANSITIONS`
(a data table, as in router.engine.agents), keyed by (phase, trigger).  A
trigger that has no entry for the current phase is a race that lost (a late
DialEnd, a CancelOffer for a caller who already hung up) and changes nothing.
Two kinds of trigger, never mixed:

- *facts* of the PBX change the phase at once, before the engine hears of them:
  the caller's channel hung up, the agent's leg hung up, a call-back leg came up;
- *decisions* change it only when the engine's output says so: ``queue.joined``
  (waiting), `OfferCall` (ringing), ``call.connected`` (connected),
  ``agent.no_answer`` / `CancelOffer` (waiting again), `DivertCall`, a
  ``call.ended`` of outcome ``left``.  An input the engine refuses leaves the
  phase as it was.

A phase changes when a command is issued, not when its I/O completes, so AMI
events that race with an action are judged against what the router asked for.
An action may wait for its call's lock behind an earlier one; `action_begins`
tells the adapter whether it still applies (an offer overtaken by the IVR's own
Dial, or by a later offer, is dropped).

The engine is read through its query methods only (``call_view``,
``agent_view``).  Dialplan names come from router.pbx.dialplan.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from router.config.model import Centre
from router.engine.agents import AgentState
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentMissed, AgentPause, AgentResume,
                                    CallbackAnswered, CallbackFailed, CallerHungUp, CallFinished, CallQueued,
                                    CancelOffer, DialCallback, DivertCall, OfferCall, OfferCallback)
from router.events import Event
from router.ivr.session import Enqueue
from router.pbx import dialplan as dp
from router.pbx.ami import (AmiEvent, ContactStatus, DeviceStateChange, DialBegin, DialEnd, Hangup, Resync,
                            UserEvent)
from router.recording.policy import Recording, plan


class Phase(enum.Enum):
    __hash__ = object.__hash__          # as AgentState: identity hashing runs in C

    IVR = "ivr"                         # the DID's flow runs over FastAGI
    WAITING = "waiting"                 # in [router-hold]
    RINGING = "ringing"                 # an agent is offered the call
    CONNECTED = "connected"             # bridged with the agent
    AFTER = "after"                     # the agent hung up; the caller may take the survey
    DIVERTED = "diverted"               # sent to [router-divert], or left by a key
    CALLBACK = "callback"               # left with a call-back kept; hangs up
    ENDED = "ended"
    # a call-back being dialled (its own channels, not a caller's)
    LEG_RINGING = "leg_ringing"         # the first leg is being originated
    LEG_UP = "leg_up"                   # the first leg answered, the second rings
    LEG_CONNECTED = "leg_connected"     # both legs up
    LEG_FAILED = "leg_failed"           # the second leg failed; the first hangs up


P = Phase
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (P.IVR, "queued"): P.WAITING,
    (P.IVR, "callback_kept"): P.CALLBACK,
    (P.WAITING, "offered"): P.RINGING,
    (P.WAITING, "diverted"): P.DIVERTED,
    (P.WAITING, "left"): P.DIVERTED,
    (P.WAITING, "callback_kept"): P.CALLBACK,
    (P.RINGING, "answered"): P.CONNECTED,
    (P.RINGING, "missed"): P.WAITING,
    (P.RINGING, "cancelled"): P.WAITING,
    (P.CONNECTED, "agent_left"): P.AFTER,
    (P.LEG_RINGING, "leg_up"): P.LEG_UP,
    (P.LEG_RINGING, "cancelled"): P.ENDED,
    (P.LEG_RINGING, "not_answered"): P.ENDED,
    (P.LEG_UP, "leg_up"): P.LEG_CONNECTED,
    (P.LEG_UP, "leg_failed"): P.LEG_FAILED,
    **{(phase, "hangup"): P.ENDED for phase in Phase if phase is not P.ENDED},
}
LIVE_CALLER_PHASES = frozenset({P.WAITING, P.RINGING, P.CONNECTED, P.AFTER, P.DIVERTED, P.CALLBACK})

UNREACHABLE_REASON = "unreachable"
UNREACHABLE_DEVICE_STATES = frozenset({"UNAVAILABLE", "INVALID"})
REACHABLE_DEVICE_STATES = frozenset({"NOT_INUSE", "INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})
CONTACT_STATES = {"Unreachable": "UNAVAILABLE", "Removed": "UNAVAILABLE", "Reachable": "NOT_INUSE",
                  "Created": "NOT_INUSE"}
_ENDPOINT_NUMBER = re.compile(r"/([^/@]+)(?:@.*)?$")
_UNSAFE_IN_AGI_DIAL = ',"\\ '


# --- actions (carried out by the adapter) -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connect:
    """Setvar the target (and ring time, call id, survey) and Redirect to [router-connect]."""
    call_id: str
    channel: str
    offer: int                          # the call's offer number it carries out
    variables: dict[str, str]
    agent: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Redirect the caller to `context`,`exten` (back to hold, or to the call-back offer)."""
    call_id: str
    channel: str
    context: str
    exten: str = "s"


@dataclass(frozen=True, slots=True)
class Divert:
    """Setvar ROUTER_NEXT and what goes with it, Redirect to [router-divert]."""
    call_id: str
    channel: str
    variables: dict[str, str]
    action: str
    target: str | None


@dataclass(frozen=True, slots=True)
class OriginateCallback:
    """Originate a call-back's first leg into its context; the dialplan dials the second."""
    call_id: str
    dial: DialCallback
    fields: dict[str, Any]
    ring_s: int


@dataclass(frozen=True, slots=True)
class HangupChannel:
    call_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    """The recorded call connected: store ``recording.started``."""
    call_id: str
    queue: str | None
    agent: str | None
    recording: Recording


@dataclass(frozen=True, slots=True)
class MuteRecording:
    """Store ``recording.paused``/``resumed``; `mute` True/False: MixMonitorMute first (None:
    the recording stays muted for another reason)."""
    call_id: str
    channel: str
    mute: bool | None
    paused: bool
    reason: str                         # sensitive | supervisor | agent
    by: str                             # the IVR node, or the token name
    queue: str | None
    agent: str | None


@dataclass(frozen=True, slots=True)
class SaveRecording:
    """The recorded channel hung up: once Asterisk has closed the capture, finish the file and
    store ``recording.saved`` (or ``recording.missing``); `keep` False: the call never connected,
    a capture of its ringing is deleted."""
    call_id: str
    queue: str | None
    agent: str | None
    recording: Recording
    keep: bool
    swap: bool                          # the capture's first channel is the agent (agent-first call-back)


class NotRecording(Exception):
    """A pause or resume of a call that is not being recorded (or not paused that way)."""


Action = Union[Connect, Redirect, Divert, OriginateCallback, HangupChannel, RecordingStarted, MuteRecording,
               SaveRecording]
Step = Any                              # an engine input or an Action


class EngineView(Protocol):
    """The engine's read-only queries the switchboard relies on."""
    def call_view(self, call_id: str) -> Any: ...
    def agent_view(self, agent_id: str) -> Any: ...


@dataclass(slots=True)
class PbxCall:
    """What the PBX side knows of one call (a caller's channel, or a call-back's legs)."""
    call_id: str
    channel: str
    uniqueid: str
    caller_id: str
    phase: Phase = P.IVR
    agent: str | None = None            # offered to / connected with
    endpoint: str | None = None         # the offered agent's dial string
    agent_channel: str | None = None    # the Dial's outgoing channel (from DialBegin)
    queue: str | None = None            # queue of the current offer
    offers: int = 0                     # offers made so far (tells a late result of an earlier one)
    pending: bool = False               # the current offer's Connect has not begun yet
    redirected: bool = False            # the current offer's Redirect to router-connect went through
    dialing_in_agi: bool = False        # the offer's Dial runs over the IVR's AGI
    connecting_in_agi: bool = False     # the offer's variables went over the IVR's AGI (no Redirect)
    connect_variables: dict[str, str] = field(default_factory=dict)   # the current offer's, for the AGI path
    waiting_since: float | None = None  # joined a queue, or back in it (route time is measured from here)
    survey: dict[str, str] = field(default_factory=dict)   # queue and agent, for the survey
    dial: DialCallback | None = None    # a call-back leg: what is being dialled
    recording: Recording | None = None  # planned at the offer
    recorded: bool = False              # connected with the recording running
    record_set: bool = False            # ROUTER_RECORD was set on the channel
    announced: bool = False             # the recording prompt was played
    mutes: dict[str, str] = field(default_factory=dict)   # sensitive | manual -> who muted

    @property
    def state(self) -> str:
        return self.phase.value


class Switchboard:
    """The calls on Asterisk, their phases, and what follows from each event."""

    def __init__(self, centre: Centre, engine: EngineView) -> None:
        self.centre = centre
        self.engine = engine
        self.calls: dict[str, PbxCall] = {}          # callers, by call id
        self.legs: dict[str, PbxCall] = {}           # call-backs being dialled, by call id
        self.device_states: dict[str, str] = {}
        self.route_ms: list[float] = []              # queue join (or re-queue) -> agent dialled, per offer
        self._by_channel: dict[str, PbxCall] = {}
        self._by_agent_channel: dict[str, PbxCall] = {}
        self._agents_by_number = agent_numbers(centre)
        self._agents_by_device = {a.endpoint: a.id for a in centre.agents.values()
                                  if not a.endpoint.startswith("Local/")}   # PJSIP/1001 is its own device

    # --- transitions --------------------------------------------------------------------

    @staticmethod
    def _to(call: PbxCall, trigger: str) -> bool:
        """Apply `trigger` if the table has it for the call's phase; False: a lost race, nothing changes."""
        phase = TRANSITIONS.get((call.phase, trigger))
        if phase is None:
            return False
        call.phase = phase
        return True

    def live(self) -> int:
        """Calls and call-back legs not ended."""
        return sum(1 for c in (*self.calls.values(), *self.legs.values()) if c.phase is not P.ENDED)

    def forget(self, call: PbxCall) -> None:
        call.phase = P.ENDED
        if call.agent_channel and self._by_agent_channel.get(call.agent_channel) is call:
            del self._by_agent_channel[call.agent_channel]
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if self.legs.get(call.call_id) is call:
            del self.legs[call.call_id]
        if self._by_channel.get(call.channel) is call:
            del self._by_channel[call.channel]

    # --- the AGI side -------------------------------------------------------------------

    def adopt(self, call: PbxCall) -> None:
        """Follow a call a router before this one handled (recovery on start)."""
        self.calls[call.call_id] = call
        self._by_channel[call.channel] = call
        if call.agent_channel:
            self._by_agent_channel[call.agent_channel] = call

    def ivr_started(self, call_id: str, channel: str, uniqueid: str, caller_id: str) -> PbxCall:
        call = PbxCall(call_id, channel, uniqueid, caller_id)
        self.calls[call_id] = call
        self._by_channel[channel] = call
        return call

    @staticmethod
    def queued_from_ivr(call: PbxCall, enqueue: Enqueue, now: float) -> CallQueued:
        call.waiting_since = now
        return CallQueued(call.call_id, enqueue.queue, caller_id=call.caller_id, priority=enqueue.priority,
                          skills=dict(enqueue.skills), data=dict(enqueue.data))

    def take_agi_dial(self, call: PbxCall, now: float) -> str | None:
        """The offer made the moment the caller queued, as an AGI ``EXEC Dial`` on the IVR's own
        channel (no hold, no Redirect); None when there is none, or its endpoint needs the AMI path."""
        if call.phase is not P.RINGING or not call.pending or call.endpoint is None or call.recording is not None \
                or any(ch in call.endpoint for ch in _UNSAFE_IN_AGI_DIAL):
            return None
        call.pending, call.redirected, call.dialing_in_agi = False, True, True
        self._routed(call, now)
        ring_s = max(1, int(self.centre.queues[call.queue or ""].ring_timeout_s) - 1)
        return f'EXEC Dial "{call.endpoint},{ring_s}"'

    def take_agi_connect(self, call: PbxCall, now: float) -> dict[str, str] | None:
        """A recorded call offered the moment it queued: its Connect's variables (and
        ROUTER_NEXT=connect) go over the IVR's own AGI, and [router-inbound] goes on to
        [router-connect], so no Redirect races with the end of the IVR's AGI (a Redirect that
        reached the channel still inside its Gosub resumed [router-inbound]'s steps in the wrong
        context, and the Dial never happened).  None when there is no such offer."""
        if call.phase is not P.RINGING or not call.pending or call.recording is None \
                or any(ch in value for value in call.connect_variables.values() for ch in ",\"\\\r\n"):
            return None
        call.pending, call.redirected, call.connecting_in_agi = False, True, True
        self._routed(call, now)
        return {**call.connect_variables, dp.NEXT: dp.NEXT_CONNECT}

    @staticmethod
    def agi_dial_ended(call: PbxCall, offer: int, status: str) -> list[Step]:
        """The IVR's Dial returned without an answer: no DialBegin (so no DialEnd) means the
        dial never began, and only this says so."""
        call.dialing_in_agi = False
        if status != "ANSWER" and call.offers == offer and call.phase is P.RINGING and call.agent \
                and call.agent_channel is None:
            return [AgentMissed(call.call_id, call.agent, dp.MISSED_REASONS.get(status, "unreachable"))]
        return []

    def holding(self, channel: str) -> tuple[PbxCall, Any] | None:
        """The waiting caller on `channel` and the engine's view of it; None unless it waits
        in a queue (not offered, not a call-back)."""
        call = self._by_channel.get(channel)
        if call is None or call.phase is not P.WAITING:
            return None
        view = self.engine.call_view(call.call_id)
        if view is None or not view.waiting or view.callback_number is not None:
            return None
        return call, view

    def callback_kept(self, call: PbxCall) -> None:
        """The call-back is stored and the caller told so: they leave, the call-back keeps the place."""
        self._to(call, "callback_kept")

    def survey_for(self, channel: str) -> tuple[PbxCall | None, list[Step]]:
        """The survey AGI started on `channel`: the call, if it is to take the survey, and the
        CallFinished the dialplan got to before the agent leg's Hangup event."""
        call = self._by_channel.get(channel)
        steps: list[Step] = []
        if call is not None and call.phase is P.CONNECTED and call.agent_channel:
            steps = self._agent_leg_gone(call.agent_channel)
        if call is None or call.phase is not P.AFTER or not call.survey.get("flow"):
            return None, steps
        return call, steps

    def agent_channel_of(self, call_id: str) -> str | None:
        """The channel a supervisor listens to: the agent's leg (the call-back's agent channel)."""
        call = self.calls.get(call_id)
        if call is not None:
            return call.agent_channel
        leg = self.legs.get(call_id)
        return leg.channel or None if leg is not None else None

    def _routed(self, call: PbxCall, now: float) -> None:
        if call.waiting_since is not None:
            self.route_ms.append((now - call.waiting_since) * 1000.0)

    # --- the engine's decisions ---------------------------------------------------------

    def on_engine(self, outputs: Iterable[Any], now: float) -> list[Step]:
        steps: list[Step] = []
        for output in outputs:
            if isinstance(output, Event):
                steps += self._on_engine_event(output, now)
            elif isinstance(output, DialCallback):
                steps += self._dial_callback(output, now)
            elif output.call_id in self.legs:
                steps += self._leg_command(self.legs[output.call_id], output)
            elif output.call_id in self.calls:
                steps += self._caller_command(self.calls[output.call_id], output, now)
        return steps

    def _on_engine_event(self, event: Event, now: float) -> list[Step]:
        if event.type == "agent.state":
            return self._agent_state_changed(event)
        call = self.calls.get(event.call_id or "")
        if call is None:
            return []
        if event.type == "queue.joined":
            if self._to(call, "queued"):
                call.waiting_since = call.waiting_since or now
        elif event.type == "call.connected":
            if self._to(call, "answered") and call.recording is not None:
                call.recorded = True
                return [RecordingStarted(call.call_id, event.queue, event.agent, call.recording)]
        elif event.type == "agent.no_answer":
            if self._to(call, "missed"):
                self._requeued(call, now)
        elif event.type == "call.ended" and event.data.get("outcome") == "left":
            self._to(call, "left")
        return []

    def _caller_command(self, call: PbxCall, command: Any, now: float) -> list[Step]:
        if isinstance(command, OfferCall):
            if not self._to(call, "offered"):
                return []
            call.agent, call.endpoint, call.agent_channel, call.queue = (command.agent, command.endpoint, None,
                                                                         command.queue)
            call.offers += 1
            call.pending, call.redirected = True, False
            ring_s = max(1, int(command.ring_timeout_s) - 1)   # Asterisk reports a no-answer before
            call.connect_variables = {                           # the engine's own ring timer fires
                dp.TARGET: command.endpoint, dp.RING_TIMEOUT: str(ring_s), dp.CALL_ID: call.call_id,
                dp.SURVEY: self.centre.queues[command.queue].survey or "",
                **self._record_variables(call, command.queue, now)}
            return [Connect(call.call_id, call.channel, call.offers, call.connect_variables, command.agent,
                            command.endpoint)]
        if isinstance(command, CancelOffer):
            if call.agent != command.agent or not self._to(call, "cancelled"):
                return []
            self._requeued(call, now)
            return [Redirect(call.call_id, call.channel, dp.HOLD_CONTEXT)]
        if isinstance(command, DivertCall):
            if not self._to(call, "diverted"):
                return []
            return [Divert(call.call_id, call.channel, divert_variables(command), command.action, command.target)]
        if isinstance(command, OfferCallback) and call.phase is P.WAITING:
            return [Redirect(call.call_id, call.channel, dp.HOLD_CONTEXT, dp.HOLD_OFFER_EXTEN)]
        return []

    def _record_variables(self, call: PbxCall, queue: str, now: float) -> dict[str, str]:
        """ROUTER_RECORD* of an offer: the recording planned for the queue (the first announces it)."""
        call.recording = plan(self.centre, queue, call.call_id, now)
        recording = call.recording
        if recording is None and not call.record_set:
            return {}
        call.record_set = True
        announce = "" if recording is None or call.announced else recording.announce or ""
        call.announced = call.announced or bool(announce)
        return {dp.RECORD: recording.asterisk_path if recording else "",
                dp.RECORD_OPTIONS: recording.options if recording else "", dp.RECORD_ANNOUNCE: announce}

    # --- recording: muted spans ---------------------------------------------------------

    def flow_event(self, event: Event) -> list[Step]:
        """An IVR event of a recorded call: entering a sensitive node mutes the recording, the
        next node that is not (or the flow's end) lifts that."""
        call = self.calls.get(event.call_id or "")
        if call is None or not call.recorded or event.type not in ("ivr.node", "ivr.ended"):
            return []
        sensitive = event.type == "ivr.node" and bool(event.data.get("sensitive"))
        if sensitive == ("sensitive" in call.mutes):
            return []
        node = str(event.data.get("node", "")) if sensitive else call.mutes["sensitive"]   # the span's node
        return [self._mute(call, "sensitive", sensitive, "sensitive", node)]

    def pause_recording(self, call_id: str, paused: bool, reason: str, by: str) -> list[Step]:
        """A supervisor's or the agent's pause (or resume); NotRecording when it does not apply."""
        call = self.calls.get(call_id) or self.legs.get(call_id)
        if call is None or not call.recorded or call.phase is P.ENDED or not call.channel:
            raise NotRecording(f"call {call_id!r} is not being recorded")
        if paused == ("manual" in call.mutes):
            raise NotRecording(f"the recording of call {call_id!r} is {'already' if paused else 'not'} paused")
        return [self._mute(call, "manual", paused, reason, by)]

    def _mute(self, call: PbxCall, key: str, paused: bool, reason: str, by: str) -> MuteRecording:
        before = bool(call.mutes)
        if paused:
            call.mutes[key] = by
        else:
            call.mutes.pop(key, None)
        after = bool(call.mutes)
        return MuteRecording(call.call_id, call.channel, after if after != before else None, paused, reason, by,
                             call.queue or (call.dial.queue if call.dial else None), call.agent)

    def _recording_over(self, call: PbxCall) -> list[Step]:
        if call.recording is None:
            return []
        return [SaveRecording(call.call_id, call.queue or (call.dial.queue if call.dial else None), call.agent,
                              call.recording, call.recorded, bool(call.dial and call.dial.agent_first))]

    def _requeued(self, call: PbxCall, now: float) -> None:
        self._forget_agent_channel(call)
        call.agent, call.pending, call.waiting_since = None, False, now

    def _forget_agent_channel(self, call: PbxCall) -> None:
        if call.agent_channel and self._by_agent_channel.get(call.agent_channel) is call:
            del self._by_agent_channel[call.agent_channel]
        call.agent_channel = None

    def _agent_state_changed(self, event: Event) -> list[Step]:
        """An agent who just logged in on a phone known to be unreachable is paused at once."""
        if event.data.get("state") == "available" and event.data.get("previous") == "logged_out":
            endpoint = self.centre.agents[event.agent].endpoint if event.agent in self.centre.agents else ""
            if endpoint in self.device_states:
                return self._device_state(event.agent or "", self.device_states[endpoint])
        return []

    # --- call-backs ---------------------------------------------------------------------

    def _dial_callback(self, dial: DialCallback, now: float) -> list[Step]:
        leg = PbxCall(dial.call_id, channel="", uniqueid="", caller_id=dial.number, phase=P.LEG_RINGING,
                      agent=dial.agent, endpoint=dial.endpoint, dial=dial,
                      recording=plan(self.centre, dial.queue, dial.call_id, now))
        self.legs[dial.call_id] = leg
        queue = self.centre.queues[dial.queue]
        policy = queue.callback
        customer = (policy.dial if policy else "PJSIP/{number}@pstn").format(number=dial.number)
        ring_s = max(1, int(dial.ring_timeout_s) - 1)
        variables = {dp.CALL_ID: dial.call_id, dp.CB_NUMBER: dial.number, dp.CB_AGENT: dial.endpoint,
                     dp.CB_CUSTOMER: customer, dp.WHISPER: (policy.whisper if policy else None) or "",
                     dp.RING_TIMEOUT: str(ring_s), dp.MOH_CLASS: queue.hold.moh_class}
        if leg.recording is not None:
            variables.update({dp.RECORD: leg.recording.asterisk_path, dp.RECORD_OPTIONS: leg.recording.options,
                              dp.RECORD_ANNOUNCE: leg.recording.announce or ""})
        first, context = ((dial.endpoint, dp.CALLBACK_CONTEXT) if dial.agent_first
                          else (customer, dp.CALLBACK_CUSTOMER_CONTEXT))
        return [OriginateCallback(dial.call_id, dial, {
            "Channel": first, "Context": context, "Exten": "s", "Priority": "1", "Timeout": str(ring_s * 1000),
            "CallerID": f"{dial.queue} <{dial.number if dial.agent_first else ''}>",
            "Variable": [f"{name}={value}" for name, value in variables.items()]}, ring_s)]

    def _leg_command(self, leg: PbxCall, command: Any) -> list[Step]:
        if isinstance(command, CancelOffer) and leg.agent == command.agent and self._to(leg, "cancelled"):
            self.forget(leg)            # the engine gave up on the agent leg
            return [HangupChannel(leg.call_id, leg.channel)] if leg.channel else []
        return []

    def originate_answered(self, leg: PbxCall, answered: bool, reason: str) -> list[Step]:
        """The OriginateResponse of a call-back's first leg: not answered ends the attempt."""
        if answered or not self._to(leg, "not_answered"):
            return []
        self.forget(leg)
        dial = leg.dial
        assert dial is not None
        if dial.agent_first:
            return [AgentMissed(leg.call_id, dial.agent, reason)]
        return [CallbackFailed(leg.call_id, {"timeout": "no_answer"}.get(reason, reason))]

    def _on_callback_event(self, event: UserEvent) -> list[Step]:
        leg = self.legs.get(event.fields.get("call", ""))
        stage = event.fields.get("stage")
        up = stage in ("agent_up", "customer_up")
        if leg is None or leg.phase is P.ENDED:
            # a leg of a call-back the engine gave up on (or never knew): drop it
            return [HangupChannel(event.fields.get("call", ""), event.channel)] if up and event.channel else []
        if up:
            first = leg.phase is P.LEG_RINGING
            if not self._to(leg, "leg_up"):
                return []
            if first:
                leg.channel = event.channel or ""
                self._by_channel[leg.channel] = leg
            steps: list[Step] = [AgentAnswered(leg.call_id, leg.agent or "") if stage == "agent_up"
                                 else CallbackAnswered(leg.call_id)]
            if leg.phase is P.LEG_CONNECTED and leg.recording is not None:
                leg.recorded = True
                steps.append(RecordingStarted(leg.call_id, leg.dial.queue if leg.dial else None, leg.agent,
                                              leg.recording))
            return steps
        status = event.fields.get("status", "")
        if stage == "customer_failed" and self._to(leg, "leg_failed"):
            return [CallbackFailed(leg.call_id, dp.CALLBACK_FAILED.get(status, "unreachable"))]
        if stage == "agent_failed" and self._to(leg, "leg_failed"):
            return [AgentMissed(leg.call_id, leg.agent or "", dp.MISSED_REASONS.get(status, "unreachable"))]
        return []

    def _leg_gone(self, leg: PbxCall) -> list[Step]:
        phase = leg.phase
        self._to(leg, "hangup")
        self.forget(leg)
        saved = self._recording_over(leg) if leg.channel else []
        if phase is P.LEG_CONNECTED:
            return [CallFinished(leg.call_id), *saved]
        if phase is P.LEG_UP:                   # hung up before the second leg answered
            return [CallbackFailed(leg.call_id, "hangup"), *saved]
        return saved

    # --- the actions' fate --------------------------------------------------------------

    def action_begins(self, action: Action) -> bool:
        """Whether `action`, its turn come, still applies."""
        call = self.calls.get(action.call_id)
        if isinstance(action, Connect):
            if call is None or call.phase is not P.RINGING or call.offers != action.offer or not call.pending:
                return False            # overtaken while waiting for the call's lock
            call.pending = False
            return True
        if isinstance(action, (Redirect, Divert)):
            return call is not None and call.phase is not P.ENDED
        return True

    def action_done(self, action: Action, now: float) -> None:
        call = self.calls.get(action.call_id)
        if isinstance(action, Connect) and call is not None and call.offers == action.offer:
            call.redirected = True
            self._routed(call, now)

    def action_failed(self, action: Action) -> list[Step]:
        """An AMI action failed (link down past the action timeout): an offer that could not be
        made is a miss (unreachable), so the engine offers the call elsewhere."""
        call = self.calls.get(action.call_id)
        if isinstance(action, Connect) and call is not None and call.phase is P.RINGING \
                and call.offers == action.offer and call.agent is not None:
            return [AgentMissed(call.call_id, call.agent, "unreachable")]
        return []

    # --- what Asterisk reports ----------------------------------------------------------

    def on_ami(self, event: AmiEvent, now: float) -> list[Step]:
        if isinstance(event, DialBegin):
            call = self._by_channel.get(event.channel or "")
            if call is not None and call.phase is P.RINGING and call.agent_channel is None:
                call.agent_channel = event.dest_channel
                if event.dest_channel:
                    self._by_agent_channel[event.dest_channel] = call
            return []
        if isinstance(event, DialEnd):
            return self._dial_end(event)
        if isinstance(event, Hangup):
            channel = event.channel or ""
            call = self._by_channel.get(channel)
            if call is None:
                return self._agent_leg_gone(channel)
            return self._leg_gone(call) if self.legs.get(call.call_id) is call else self.caller_gone(call)
        if isinstance(event, UserEvent):
            return self._on_user_event(event)
        if isinstance(event, Resync):
            return self._resync(event)
        if isinstance(event, DeviceStateChange):
            self.device_states[event.device or ""] = event.state or ""
            agent = self._agents_by_device.get(event.device or "")
            return self._device_state(agent, event.state or "") if agent is not None else []
        if isinstance(event, ContactStatus):
            agent = self._agents_by_device.get(f"PJSIP/{event.endpoint}")
            if agent is not None and event.status in CONTACT_STATES:
                return self._device_state(agent, CONTACT_STATES[event.status])
        return []

    def _dial_end(self, event: DialEnd) -> list[Step]:
        call = self._by_channel.get(event.channel or "")
        if call is None or call.phase is not P.RINGING or call.agent is None:
            return []
        if call.agent_channel is None or event.dest_channel != call.agent_channel:
            return []                            # the end of an earlier, cancelled dial
        if event.dial_status == "ANSWER":
            return [AgentAnswered(call.call_id, call.agent)]
        if event.dial_status in dp.MISSED_REASONS:
            return [AgentMissed(call.call_id, call.agent, dp.MISSED_REASONS[event.dial_status])]
        return []

    def _on_user_event(self, event: UserEvent) -> list[Step]:
        if event.name == dp.CALLBACK_EVENT:
            return self._on_callback_event(event)
        if event.name == dp.DIAL_FAILED_EVENT:
            call = self.calls.get(event.fields.get("call", ""))
            # Only a dial that never began (no DialBegin, so no DialEnd) of the current offer;
            # the event of a dial that DialEnd already reported names an earlier target.
            if call is not None and call.phase is P.RINGING and call.agent is not None \
                    and call.agent_channel is None and event.fields.get("target") == call.endpoint:
                return [AgentMissed(call.call_id, call.agent,
                                    dp.MISSED_REASONS.get(event.fields.get("status", ""), "unreachable"))]
            return []
        if event.name == dp.AGENT_EVENT:
            agent = self._agents_by_number.get(event.fields.get("agent", ""))
            action = event.fields.get("action")
            if agent is None:
                return []
            return {"login": [AgentLogin(agent)], "logout": [AgentLogout(agent)],
                    "pause": [AgentPause(agent, event.fields.get("reason") or "break")],
                    "unpause": [AgentResume(agent)]}.get(action or "", [])
        return []

    def unknown_phone(self, event: AmiEvent) -> str | None:
        """The phone number of a feature-code event that names no agent (for the log)."""
        if isinstance(event, UserEvent) and event.name == dp.AGENT_EVENT:
            number = event.fields.get("agent", "")
            return None if number in self._agents_by_number else number
        return None

    def note_devices(self, event: AmiEvent) -> None:
        """Only remember device states (a standby acts on nothing)."""
        if isinstance(event, DeviceStateChange):
            self.device_states[event.device or ""] = event.state or ""
        elif isinstance(event, Resync):
            self.device_states.update(event.devices)

    def check_devices(self) -> list[Step]:
        """Pause or resume every agent by what is known of their phone (after a take-over)."""
        return [step for device, agent in self._agents_by_device.items() if device in self.device_states
                for step in self._device_state(agent, self.device_states[device])]

    def _device_state(self, agent_id: str, state: str) -> list[Step]:
        """An agent whose phone is unreachable is paused (reason ``unreachable``) instead of
        being offered calls that cannot ring; when it is back, they are resumed, but only
        from a pause the router made itself."""
        agent = self.engine.agent_view(agent_id)
        if agent is None:
            return []
        if state in UNREACHABLE_DEVICE_STATES and agent.state is AgentState.AVAILABLE:
            return [AgentPause(agent_id, UNREACHABLE_REASON)]
        if state in REACHABLE_DEVICE_STATES and agent.state is AgentState.PAUSED \
                and agent.reason == UNREACHABLE_REASON:
            return [AgentResume(agent_id)]
        return []

    def _resync(self, resync: Resync) -> list[Step]:
        """After an AMI reconnect: a call whose channel is gone hung up while the link was down;
        a ringing call whose channel sits in a bridge was answered, one back in music on hold
        after its Redirect went through was missed (an offer still waiting for the link is left
        to its pending actions)."""
        self.device_states.update(resync.devices)
        steps: list[Step] = []
        for device, state in resync.devices.items():
            if device in self._agents_by_device:
                steps += self._device_state(self._agents_by_device[device], state)
        live = {info.channel: info for info in resync.channels}
        for call in list(self.calls.values()):
            if call.phase not in LIVE_CALLER_PHASES:
                continue
            info = live.get(call.channel)
            if info is None:
                steps += self.caller_gone(call)
            elif call.phase is P.RINGING and call.agent is not None:
                if info.bridge_id:
                    steps.append(AgentAnswered(call.call_id, call.agent))
                elif info.context == dp.HOLD_CONTEXT and call.redirected:
                    steps.append(AgentMissed(call.call_id, call.agent, "timeout"))
        return steps

    def _agent_leg_gone(self, channel: str) -> list[Step]:
        """The agent's side of a connected call hung up: the call is over for the engine; the
        caller may stay for the queue's survey ([router-connect] dials with option g)."""
        call = self._by_agent_channel.pop(channel, None)
        if call is None or call.phase is not P.CONNECTED or call.agent_channel != channel:
            return []
        view = self.engine.call_view(call.call_id)
        self._to(call, "agent_left")
        if view is not None:
            call.survey = {"queue": view.queue, "agent": call.agent or "",
                           "flow": self.centre.queues[view.queue].survey or ""}
        return [CallFinished(call.call_id)]

    def caller_gone(self, call: PbxCall) -> list[Step]:
        """The caller's channel hung up (a fact: the phase ends first)."""
        phase = call.phase
        self._to(call, "hangup")
        if phase is not P.IVR:               # the AGI route forgets calls that end in the IVR
            self.forget(call)
        saved = self._recording_over(call) if call.record_set else []
        if phase is P.CONNECTED:
            return [CallFinished(call.call_id), *saved]
        if phase in (P.WAITING, P.RINGING):
            return [CallerHungUp(call.call_id), *saved]
        return saved


def divert_variables(divert: DivertCall) -> dict[str, str]:
    settings = {dp.NEXT: {"voicemail": dp.NEXT_VOICEMAIL, "transfer": dp.NEXT_TRANSFER}.get(divert.action,
                                                                                           dp.NEXT_HANGUP)}
    if divert.action == "voicemail" and divert.target:
        settings[dp.MAILBOX] = divert.target
    if divert.action == "transfer" and divert.target:
        settings[dp.TARGET] = divert.target
    if divert.message:
        settings[dp.MESSAGE] = divert.message
    return settings


def agent_numbers(centre: Centre) -> dict[str, str]:
    """Phone number (or id) -> agent id: the number a feature code reports names its agent."""
    numbers = {agent.id: agent.id for agent in centre.agents.values()}
    for agent in centre.agents.values():
        match = _ENDPOINT_NUMBER.search(agent.endpoint)
        if match is not None:
            numbers[match[1]] = agent.id
    return numbers
