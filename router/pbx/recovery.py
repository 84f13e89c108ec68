"""Recovery on start: the state a router takes over, planned from Asterisk and the event store.

Theory of operation
-------------------
A router that starts (after a crash, a deploy, or as the new leader of an HA group)
knows nothing; Asterisk and PostgreSQL know everything between them.  `plan` is pure:
from the live channels with their ``ROUTER_*`` variables (`AmiLink.channels`) and the
store's open calls and agents (router.store.recovery.Recovered) it makes a `Plan` the
adapter carries out in this order:

1. ``events``: what the store misses, with the times they happened (a SIGKILL can
   lose the events not yet written), and the ends of the calls whose channel went
   away while no router was there (abandoned at the moment of recovery, or, for a
   connected call, ended then);
2. ``agents``: `AgentRestored` of every agent still logged in, as they were (paused
   with their reason; on a call that is over: wrap-up ending now, so the engine
   frees them as usual);
3. ``calls``: `CallRestored` of the ringing and connected calls (their agents were
   restored available just before), then of the waiting calls in place order (join
   time, sequence), which the engine routes as it always does; each with the
   `PbxCall` record the switchboard follows it with (its agent's channel, so the
   DialEnd and Hangup still to come are recognised);
4. ``in_ivr``: the calls whose IVR was cut short; the dialplan brings them back to
   the new leader's IVR under the same call id (``call.arrived`` is not written twice).

A caller channel is one with ``ROUTER_CALL_ID``; where it stands on Asterisk decides
its phase: in a bridge → connected; in a Dial → ringing; in ``[router-hold]`` (or a
hold AGI's Gosub) with a queue known → waiting; in ``[router-inbound]`` → in the IVR.
The store gives the call's place and overflow progress; the channel variables set
when the caller queued (``ROUTER_QUEUE``, ``ROUTER_JOINED_AT``, ``ROUTER_SEQ``,
``ROUTER_PRIORITY``, ``ROUTER_SKILLS``) stand in when the store has not got the
``queue.joined`` yet.  A ringing or connected call's ``ROUTER_RECORD`` gives back
its recording (router.recording.policy.adopted), saved when the call ends.  Call-back
legs are the callbacks table's (restored as before).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.config.model import Centre
from router.engine.messages import AgentRestored, CallRestored
from router.events import Event
from router.pbx import dialplan as dp
from router.pbx.ami import ChannelStatus
from router.pbx.calls import PbxCall, Phase
from router.recording.policy import adopted
from router.store.recovery import CallLast, Recovered

VARIABLES = (dp.CALL_ID, dp.QUEUE, dp.JOINED_AT, dp.SEQ, dp.PRIORITY, dp.SKILLS, dp.TARGET, dp.RECORD)
HOLD_CONTEXTS = frozenset({dp.HOLD_CONTEXT, dp.AGI_CONTEXT})
CALLBACK_CONTEXTS = frozenset({dp.CALLBACK_CONTEXT, dp.CALLBACK_CUSTOMER_CONTEXT})


@dataclass(slots=True)
class Plan:
    events: list[Event] = field(default_factory=list)
    agents: list[AgentRestored] = field(default_factory=list)
    calls: list[tuple[CallRestored, PbxCall]] = field(default_factory=list)
    in_ivr: set[str] = field(default_factory=set)       # call ids whose call.arrived is stored
    hangups: list[str] = field(default_factory=list)    # callers whose conversation is over

    def summary(self) -> dict[str, int]:
        phases = [restored.state for restored, _ in self.calls]
        return {"agents": len(self.agents), "waiting": phases.count("waiting"),
                "ringing": phases.count("ringing"), "connected": phases.count("connected"),
                "in_ivr": len(self.in_ivr), "events_added": len(self.events)}


def plan(centre: Centre, channels: Iterable[ChannelStatus], stored: Recovered, now: float) -> Plan:
    channels = list(channels)
    result = Plan()
    agent_by_endpoint = {agent.endpoint: agent.id for agent in centre.agents.values()}
    live: dict[str, ChannelStatus] = {}
    for status in channels:
        call_id = status.variables.get(dp.CALL_ID, "")
        if call_id and status.context not in CALLBACK_CONTEXTS and call_id not in live:
            live[call_id] = status
    busy_agents: dict[str, str] = {}                     # agent -> its live call
    waiting: list[tuple[CallRestored, PbxCall]] = []
    for call_id, status in live.items():
        last = stored.calls.get(call_id)
        if last is not None and last.phase == "callback":
            continue                                     # the callbacks table has it
        if last is not None and last.phase == "connected" and not status.bridge_id and status.application != "Dial":
            # talked to an agent, then fell back to the dialplan while no router was there
            result.events.append(_answered_end(last, now))
            result.hangups.append(status.channel)
            continue
        phase = _phase(status, last)
        if phase is Phase.IVR:
            if last is not None and "call.arrived" in last.types:
                result.in_ivr.add(call_id)
            continue
        if phase is None:
            continue
        place = _place(centre, call_id, status, last)
        if place is None:
            continue                                     # neither the store nor the channel says where
        agent = (last.agent if last is not None and last.agent else
                 agent_by_endpoint.get(status.variables.get(dp.TARGET, "")))
        if phase is not Phase.WAITING and (agent is None or agent in busy_agents):
            continue                                     # an agent leg the router cannot name
        result.events += _missing(centre, call_id, status, last, place, phase, agent, now)
        restored = CallRestored(
            call_id, place["queue"], place["entry_queue"], place["caller_id"], place["priority"],
            place["skills"], place["joined_at"], place["queue_joined_at"], place["seq"], phase.value,
            agent if phase is not Phase.WAITING else None,
            (last.connected_at if last is not None and last.connected_at else now)
            if phase is Phase.CONNECTED else None,
            place["next_step"], place["moves"])
        record = PbxCall(call_id, status.channel, status.uniqueid, place["caller_id"], phase=phase,
                         agent=restored.agent, queue=place["queue"], redirected=True,
                         endpoint=centre.agents[agent].endpoint if agent in centre.agents else None,
                         agent_channel=_agent_channel(status, channels) if phase is not Phase.WAITING else None,
                         offers=1 if phase is not Phase.WAITING else 0, waiting_since=now)
        if phase is not Phase.WAITING and status.variables.get(dp.RECORD):
            record.recording = adopted(centre, place["queue"], status.variables[dp.RECORD])
            record.record_set, record.recorded = True, phase is Phase.CONNECTED and record.recording is not None
        if phase is Phase.WAITING:
            waiting.append((restored, record))
        else:
            busy_agents[agent] = call_id                 # type: ignore[index]
            result.calls.append((restored, record))
    waiting.sort(key=lambda pair: (pair[0].joined_at, pair[0].seq if pair[0].seq is not None else 0))
    result.calls += waiting
    result.events += _gone(stored, live, now)
    result.agents = _agents(centre, stored, busy_agents, now)
    return result


def _phase(status: ChannelStatus, last: CallLast | None) -> Phase | None:
    if status.bridge_id:
        return Phase.CONNECTED
    if status.application == "Dial":
        return Phase.RINGING
    queued = (last is not None and last.phase in ("waiting", "ringing", "connected")) \
        or bool(status.variables.get(dp.QUEUE))
    if status.context in HOLD_CONTEXTS and queued:
        return Phase.WAITING
    if status.context in (dp.INBOUND_CONTEXT, dp.AGI_CONTEXT):
        return Phase.IVR
    return None                                          # diverted, voicemail, a survey: not routed any more


def _place(centre: Centre, call_id: str, status: ChannelStatus, last: CallLast | None) -> dict[str, Any] | None:
    """Where the call stands in its queue: from the store, else from the channel's variables."""
    variables = status.variables
    skills = _skills(variables.get(dp.SKILLS, ""), centre)
    seq = _number(variables.get(dp.SEQ), int)
    if last is not None and last.joined_at is not None and last.queue in centre.queues:
        return {"queue": last.queue, "entry_queue": last.entry_queue or last.queue, "caller_id": last.caller_id,
                "priority": last.priority if last.priority is not None else centre.queues[last.queue].priority,
                "skills": last.skills if last.skills else skills, "joined_at": last.joined_at,
                "queue_joined_at": last.queue_joined_at or last.joined_at, "seq": seq,
                "next_step": min(last.next_step, len(centre.queues[last.queue].overflow)),
                "moves": last.moves}
    queue = variables.get(dp.QUEUE, "")
    joined_at = _number(variables.get(dp.JOINED_AT), float)
    if queue not in centre.queues or joined_at is None:
        return None
    priority = _number(variables.get(dp.PRIORITY), int)
    return {"queue": queue, "entry_queue": queue, "caller_id": last.caller_id if last else status.caller_id,
            "priority": priority if priority is not None else centre.queues[queue].priority,
            "skills": skills, "joined_at": joined_at, "queue_joined_at": joined_at, "seq": seq,
            "next_step": 0, "moves": 0}


def _missing(centre: Centre, call_id: str, status: ChannelStatus, last: CallLast | None,
             place: Mapping[str, Any], phase: Phase, agent: str | None, now: float) -> list[Event]:
    """Events of the call the store has not got (lost with the router that wrote them)."""
    types = last.types if last is not None else frozenset()
    queue, joined_at = place["queue"], place["joined_at"]
    events = []
    if "call.arrived" not in types:
        events.append(Event(joined_at, "call.arrived", call_id=call_id,
                            data={"caller_id": place["caller_id"], "dnis": None, "recovered": True}))
    if "queue.joined" not in types:
        events.append(Event(joined_at, "queue.joined", call_id=call_id, queue=queue, data={
            "caller_id": place["caller_id"], "priority": place["priority"], "position": None, "ewt_s": None,
            "sl_threshold_s": centre.queues[queue].sl_threshold_s, "recovered": True}))
    if phase is not Phase.WAITING and "agent.offered" not in types:
        events.append(Event(now, "agent.offered", call_id=call_id, queue=queue, agent=agent,
                            data={"ring_timeout_s": centre.queues[queue].ring_timeout_s, "recovered": True}))
    if phase is Phase.CONNECTED and "call.connected" not in types and agent is not None:
        spec = centre.agents[agent]
        events.append(Event(now, "call.connected", call_id=call_id, queue=queue, agent=agent, data={
            "wait_s": round(now - joined_at, 3), "team": spec.team, "skills_met": None, "recovered": True}))
    return events


def _gone(stored: Recovered, live: Mapping[str, ChannelStatus], now: float) -> list[Event]:
    """The ends of the calls whose channel went away while no router was there."""
    events = []
    for call in stored.calls.values():
        if call.call_id in live or call.phase not in ("waiting", "ringing", "connected") or call.joined_at is None:
            continue
        if call.phase == "connected":
            events.append(_answered_end(call, now))
            continue
        where = "ringing" if call.phase == "ringing" else "queue"
        events += [Event(now, "call.abandoned", call_id=call.call_id, queue=call.queue, data={
                       "wait_s": round(now - call.joined_at, 3), "where": where, "recovered": True}),
                   Event(now, "call.ended", call_id=call.call_id, queue=call.queue,
                         data={"outcome": "abandoned", "recovered": True})]
    return events


def _answered_end(call: CallLast, now: float) -> Event:
    talk_s = now - call.connected_at if call.connected_at is not None else 0.0
    return Event(now, "call.ended", call_id=call.call_id, queue=call.queue, agent=call.agent,
                 data={"outcome": "answered", "talk_s": round(talk_s, 3), "recovered": True})


def _agents(centre: Centre, stored: Recovered, busy: Mapping[str, str], now: float) -> list[AgentRestored]:
    """Every agent still logged in, as they were; one whose call is over is in wrap-up ending now."""
    restored = []
    for agent in stored.agents.values():
        if agent.agent not in centre.agents:
            continue
        if agent.state == "paused":
            restored.append(AgentRestored(agent.agent, "paused", agent.reason, agent.since))
        elif agent.state == "available" or agent.agent in busy:
            restored.append(AgentRestored(agent.agent, "available", None, agent.since))
        else:                                            # reserved, on_call, wrap_up: the call is over
            restored.append(AgentRestored(agent.agent, "wrap_up", None, agent.since, wrap_until=now,
                                          call_id=agent.call_id))
    return restored


def _agent_channel(status: ChannelStatus, channels: list[ChannelStatus]) -> str | None:
    """The agent's leg: the caller's bridge peer, or the Dial's outgoing channel (same linked id)."""
    if status.bridge_id:
        peers = [c.channel for c in channels if c.bridge_id == status.bridge_id and c.channel != status.channel]
    else:
        peers = [c.channel for c in channels if c.linkedid == status.linkedid and c.channel != status.channel]
    peers.sort(key=lambda name: (not name.endswith(";1"), ";" in name and not name.endswith(";1")))
    return peers[0] if peers else None


def _skills(text: str, centre: Centre) -> dict[str, int]:
    """``skill:level;skill:level`` (ROUTER_SKILLS), unknown skills and bad levels left out."""
    skills = {}
    for item in text.split(";"):
        name, _, level = item.partition(":")
        if name in centre.skills and level.isdigit():
            skills[name] = int(level)
    return skills


def _number(text: str | None, kind: type) -> Any:
    try:
        return kind(text) if text else None
    except ValueError:
        return None
