"""The routing engine: a pure state machine over calls, queues and agents.

Theory of operation
-------------------
`Engine.handle(input, now)` applies one input (router.engine.messages) at time
`now` and returns what follows from it: commands for the PBX and domain events
for the store, in order.  `Engine.advance(now)` fires the engine's own timers
that are due (ring timeout, wrap-up end, overflow steps, maximum wait);
`next_deadline()` says when the next one is.  There is no I/O, no await and no
clock inside: the adapter owns time, so the same engine runs live, in the
simulator on a virtual clock and in tests, with identical decisions for a seed.

Matching happens in two directions, both delegated to the matcher (compiled or
reference, same algorithm): a call that starts waiting (or whose requirements
were relaxed) looks for the best available agent by its queue's strategy; an
agent that becomes available takes the best waiting call it can serve across
every queue (priority, then weighted wait).  A call keeps its place: its
`enqueued_at` and arrival sequence survive a ring-no-answer (RONA), a move or a
copy to another queue.

A call-back is a call whose caller hung up: it stays among the waiting calls
as a virtual entry with the same place (enqueued_at, sequence), takes part in
matching and in timed overflow steps like any call, and is dialled (agent
first by default) when an agent is chosen for it; a failed customer leg waits
`retry_s` out of the matcher and comes back at its place, until `max_attempts`.
One call-back per number waits in a queue, and a pending one is cancelled when
the same number gets through to that queue by calling in.

Call-back hours (the policy's `hours` schedule, else the queue's, else always
open) bound when call-backs are offered and dialled.  Outside them no offer is
made (the caller just keeps waiting), but a caller who asks anyway is accepted.
A call-back is never dialled outside its hours, nor before its `due_at` (the
slot a caller chose, or the end of a retry wait): it is *parked* - out of the
matcher, keeping `joined_at` and its sequence - and a `callback_due` timer puts
it back at its original place at the first open moment (router.schedules.
next_open).  Parking happens on acceptance, after a failed attempt, on restore,
and lazily for a call-back still waiting when the hours close: the moment an
agent would take it, it is parked instead and the agent looks again.  Call-backs
due at the same instant (an opening) are routed in place order once all are
back; hours that never open (router.schedules.HORIZON_DAYS) refuse or end it.

Overflow steps are per queue and run per call: timed steps relax or widen the
call's requirements or move/copy it; conditional steps divert it (voicemail,
transfer, callback, hang-up) on maximum wait, on arrival when the queue is too
long or its EWT too high, or when no logged-in agent can serve the queue.

Timers fire in the order of their deadlines, but never before the latest `now`
the engine was given: one whose deadline had passed when it was armed (a step
re-armed after a ring-no-answer, one of a call restored after an outage) fires
at that `now`, so that what follows from it (an offer, its ring timeout) runs on
the real clock instead of a past one.

Restore: a router that restarts rebuilds its state, from Asterisk and the store,
through silent inputs that emit no events of their own (the store has them):
AgentRestored puts a logged-out agent straight into available, paused or wrap-up;
CallRestored brings back a waiting call at its original place (joined_at and
sequence, later calls sort after it) with its overflow clock counting from when
it joined its queue (steps and max-wait due during the outage fire, in order, at
the next `advance`), or a call ringing (its ring timer restarts, no new offer) or
connected to an agent restored just before; CallbackRestored a pending call-back.
Routing that follows (an agent available with calls waiting, a call that starts
waiting) is reported as usual, so the agents and the calls that hold one go first,
the waiting calls after.  `call_view`, `call_views` and `agent_view(s)` are the
read-only picture adapters use instead of the engine's internals; a CallView holds
all a CallRestored of the same call needs.

Compiled (router/_twins.py), the records are extension types and the hot methods C calls,
declared in ext/router/engine/engine.pxd; a C call takes its arguments by position, hence
`_emit(now, type, call, agent, data)` and `_transition(agent, action, now, call_id, reason)`
without keywords.  This file is also the pure-Python twin, and decides identically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from heapq import heappop, heappush
from typing import Any, Callable

from router.config.model import Centre, OverflowStep, Queue, Schedule
from router.engine import matcher as matcher_module
from router.engine.agents import (BUSY_STATES, DEFERRABLE, IDLE_STATES, TRANSITIONS, AgentRuntime,
                                  AgentState)
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentMissed, AgentPause,
                                    AgentRestored, AgentResume, CallbackAccepted, CallbackAnswered,
                                    CallbackFailed, CallbackRestored, CallbackWithdrawn, CallerHungUp, CallerLeft,
                                    CallFinished, CallQueued, CallRestored, CancelCallback, CancelOffer,
                                    DialCallback, DivertCall, InvalidInput, MoveCall, OfferCall, OfferCallback,
                                    Output, SetCallPriority, WrapUpDone)
from router.events import new_event, round_ms
from router.schedules import is_open, next_open

# the states as module constants: compiled, a module global is a cached lookup, while
# `AgentState.X` goes through the Enum class's attribute hook every time
LOGGED_OUT, AVAILABLE, RESERVED, ON_CALL, WRAP_UP, PAUSED = (
    AgentState.LOGGED_OUT, AgentState.AVAILABLE, AgentState.RESERVED, AgentState.ON_CALL, AgentState.WRAP_UP,
    AgentState.PAUSED)
STRATEGY_CODES = {
    "longest-idle": matcher_module.LONGEST_IDLE,
    "most-skilled": matcher_module.MOST_SKILLED,
    "least-occupied": matcher_module.LEAST_OCCUPIED,
    "round-robin": matcher_module.ROUND_ROBIN,
    "fewest-calls": matcher_module.FEWEST_CALLS,
    "random": matcher_module.RANDOM,
}
CALL_STATES = frozenset({RESERVED, ON_CALL, WRAP_UP})
UNSTAFFED_STATES = frozenset({LOGGED_OUT, PAUSED})
RESTORED_STATES = {"available": AVAILABLE, "paused": PAUSED, "wrap_up": WRAP_UP}
RESTORED_CALL_STATES = ("waiting", "ringing", "connected")
AHT_SMOOTHING = 0.2          # weight of the newest handle time in a queue's AHT estimate
MAX_MOVES = 8                # a call moved this often stops following move_to steps


@dataclass
class CallbackState:
    number: str
    accepted_at: float
    attempts: int = 0             # customer legs dialled so far
    customer_up: bool = False
    due_at: float | None = None   # not dialled before this (chosen slot, opening, retry); None: no wait


@dataclass
class CallRuntime:
    """The engine's live view of one call that joined a queue."""
    call_id: str
    entry_queue: str
    queue: str
    caller_id: str
    priority: int
    extra_skills: dict[str, int]
    joined_at: float              # first queue.joined: the call's place and its wait
    queue_joined_at: float        # when it entered its current queue (steps count from here)
    seq: int
    requirement_sets: list[dict[str, int]]
    slot: int | None = None       # matcher slot while waiting
    agent: str | None = None      # offered to / connected with
    connected_at: float | None = None
    next_step: int = 0
    token: int = 0                # invalidates timers of an earlier phase
    moves: int = 0
    copied_to: set[str] | None = None    # queues it was copied to (None: none yet; no default_factory, see Event)
    callback: CallbackState | None = None
    callback_offered: bool = False


@dataclass(frozen=True, slots=True)
class CallView:
    """A read-only copy of one live call (see Engine.call_view); it holds what a
    CallRestored of the same call needs (priority is the total, the queue's included)."""
    call_id: str
    queue: str                    # where it waits now
    entry_queue: str              # where it first joined
    caller_id: str
    priority: int
    joined_at: float              # its place (and wait) ...
    queue_joined_at: float        # ... and when it entered `queue` (its overflow clock)
    seq: int                      # arrival order among calls that joined at the same instant
    waiting: bool                 # among the waiting calls (False: ringing, connected, a parked call-back)
    agent: str | None             # offered to (ringing) or connected with
    connected: bool
    callback_number: str | None   # a call-back (restored by CallbackRestored, not CallRestored)
    next_step: int
    moves: int
    skills: dict[str, int]        # the call's extra requirements (a copy)
    connected_at: float | None = None
    callback_accepted_at: float | None = None   # a call-back: when the caller took it ...
    callback_attempts: int = 0                  # ... customer legs dialled so far ...
    callback_due_at: float | None = None        # ... and not dialled before


@dataclass(frozen=True, slots=True)
class AgentView:
    """A read-only copy of one agent (see Engine.agent_view)."""
    agent: str
    state: AgentState
    reason: str | None            # pause reason
    call_id: str | None           # reserved for, talking on, wrapping up
    endpoint: str
    since: float | None           # when the state began (None: never logged in)
    wrap_until: float | None = None   # when a wrap-up ends by itself (wrap_up only)


class Engine:
    def __init__(self, centre: Centre, *, seed: int = 0, call_capacity: int = 20_000,
                 matcher_factory: Callable[..., Any] | None = None) -> None:
        self.centre = centre
        self._skill_index = {skill_id: i for i, skill_id in enumerate(centre.skills)}
        self._queue_index = {queue_id: i for i, queue_id in enumerate(centre.queues)}
        self._queues = centre.queues
        factory = matcher_factory or matcher_module.Matcher
        self.matcher = factory(max(1, len(self._skill_index)), max(1, len(centre.agents)),
                               call_capacity, max(1, len(centre.queues)), seed)
        self.agents: dict[str, AgentRuntime] = {}
        self._agent_by_slot: list[AgentRuntime] = []
        for slot, spec in enumerate(centre.agents.values()):
            runtime = AgentRuntime(spec=spec, slot=slot)
            runtime.queues = {q.id for q in centre.queues.values() if meets(spec.skills, q.skills)}
            self.agents[spec.id] = runtime
            self._agent_by_slot.append(runtime)
        self.calls: dict[str, CallRuntime] = {}
        self._call_by_slot: dict[int, CallRuntime] = {}
        self._free_slots = list(range(call_capacity - 1, -1, -1))
        self._waiting: dict[str, dict[str, CallRuntime]] = {q: {} for q in centre.queues}
        self._aht: dict[str, float] = {q.id: q.aht_estimate_s for q in centre.queues.values()}
        self._callback_hours = {q.id: _callback_schedule(centre, q) for q in centre.queues.values()}
        self._logged_in: dict[str, int] = {q: 0 for q in centre.queues}   # per queue, agents able to serve it
        self._staffed: dict[str, int] = {q: 0 for q in centre.queues}     # ... and logged in, not paused
        self._timers: list[tuple[float, int, str, str, int]] = []
        self._timer_seq = 0
        self._call_seq = 0
        self._pending_callbacks: dict[tuple[str, str], str] = {}   # (queue, number) -> call id
        self._woken: list[CallRuntime] = []     # call-backs back in line this instant, not yet routed
        self._clock = -math.inf                 # the latest `now` given: no timer fires before it
        self._out: list[Output] = []

    # --- public API -------------------------------------------------------

    def handle(self, message: Any, now: float) -> list[Output]:
        """Apply one input at time `now`; returns commands and events in order."""
        handler = self._handlers.get(type(message))
        if handler is None:
            raise InvalidInput(f"unknown input {type(message).__name__}")
        handler(self, message, now)
        if now > self._clock:
            self._clock = now
        if self._woken:
            self._route_woken(now)
        return self._take_output()

    def advance(self, now: float) -> list[Output]:
        """Fire every timer due at or before `now`, each at its own deadline, or at the latest
        time already given when that deadline had passed (a late timer does not go back in time)."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, key, token = heappop(timers)
            if when < self._clock:
                when = self._clock
            else:
                self._clock = when
            self._fire(kind, key, token, when)
            if self._woken and not (timers and max(timers[0][0], self._clock) == when):
                self._route_woken(when)
        if now > self._clock:
            self._clock = now
        return self._take_output()

    def next_deadline(self) -> float | None:
        """When `advance` next has something to do; None when no timer is pending."""
        timers = self._timers
        while timers:
            _, _, kind, key, token = timers[0]
            if self._timer_live(kind, key, token):
                break
            heappop(timers)
        return max(timers[0][0], self._clock) if timers else None

    def ewt(self, queue: str, position: int | None = None) -> float | None:
        """Estimated wait for `position` (default: one more caller) in `queue`; None if nobody serves it."""
        staffed = self._staffed[queue]
        if staffed == 0:
            return None
        if position is None:
            position = len(self._waiting[queue]) + 1
        return position * self._aht[queue] / staffed

    def position(self, call_id: str) -> int:
        """1-based place of a waiting call in its queue (priority, then arrival)."""
        call = self.calls[call_id]
        return 1 + sum(1 for other in self._waiting[call.queue].values()
                       if (other.priority, -other.joined_at, -other.seq)
                       > (call.priority, -call.joined_at, -call.seq))

    def waiting(self, queue: str) -> list[CallRuntime]:
        """The calls (and call-backs) waiting in `queue` in the order they would be served."""
        return sorted(self._waiting[queue].values(), key=lambda c: (-c.priority, c.joined_at, c.seq))

    def snapshot(self) -> dict[str, Any]:
        """Live view for supervisors: per queue waiting calls, per state agent counts."""
        queues = {}
        for queue_id, waiting in self._waiting.items():
            queues[queue_id] = {"waiting": len(waiting), "ewt_s": self.ewt(queue_id)}
        states: dict[str, int] = {}
        for agent in self.agents.values():
            states[agent.state.value] = states.get(agent.state.value, 0) + 1
        return {"queues": queues, "agents": states, "calls": len(self.calls)}

    def call_view(self, call_id: str) -> CallView | None:
        """A read-only copy of a live call; None when the engine does not know it (any more)."""
        call = self.calls.get(call_id)
        return None if call is None else _call_view(call)

    def call_views(self) -> list[CallView]:
        """Every live call (waiting, ringing, connected, call-backs), in arrival order."""
        return [_call_view(call) for call in sorted(self.calls.values(), key=lambda c: (c.joined_at, c.seq))]

    def agent_view(self, agent_id: str) -> AgentView | None:
        """A read-only copy of an agent; None for an agent the centre does not have."""
        agent = self.agents.get(agent_id)
        return None if agent is None else _agent_view(agent)

    def agent_views(self) -> list[AgentView]:
        """Every agent of the centre, logged out too, in the centre's order."""
        return [_agent_view(agent) for agent in self._agent_by_slot]

    # --- inputs -----------------------------------------------------------

    def _on_call_queued(self, msg: CallQueued, now: float, *, offer_callback: bool = True) -> None:
        call, position, ewt = self._join(msg, now)
        queue = self._queue(call.queue)
        if self._divert_on_arrival(call, queue, position, ewt, now):
            return
        self._start_waiting(call, now)
        policy = queue.callback
        if (offer_callback and policy is not None and policy.offer_ewt_s is not None and call.slot is not None
                and (ewt is None or ewt > policy.offer_ewt_s)):
            self._offer_callback(call, now, "ewt")

    def _join(self, msg: CallQueued, now: float) -> tuple[CallRuntime, int, float | None]:
        """A new call joins its queue (queue.joined); returns it with its position and EWT."""
        queue = self._queue(msg.queue)
        if msg.call_id in self.calls:
            raise InvalidInput(f"call {msg.call_id!r} is already queued")
        for skill in msg.skills:
            if skill not in self._skill_index:
                raise InvalidInput(f"call {msg.call_id!r} asks for unknown skill {skill!r}")
        self._call_seq += 1
        # by position (keywords cost twice the time): call_id, entry_queue, queue, caller_id, priority,
        # extra_skills, joined_at, queue_joined_at, seq, requirement_sets
        call = CallRuntime(msg.call_id, queue.id, queue.id, msg.caller_id, queue.priority + msg.priority,
                           dict(msg.skills), now, now, self._call_seq, [{**queue.skills, **msg.skills}])
        self.calls[call.call_id] = call
        position = 1 + sum(1 for other in self._waiting[queue.id].values() if other.priority >= call.priority)
        ewt = self.ewt(queue.id, position)
        self._emit(now, "queue.joined", call, None, {
            **msg.data, "caller_id": msg.caller_id, "priority": call.priority,
            "position": position, "ewt_s": None if ewt is None else round(ewt, 1),
            "sl_threshold_s": queue.sl_threshold_s, **({"skills": dict(msg.skills)} if msg.skills else {})})
        return call, position, ewt

    def _start_waiting(self, call: CallRuntime, now: float) -> None:
        """Among the waiting calls at its place, step timers armed, routed at once if it can be."""
        self._wait(call, now)
        self._schedule_steps(call, self._queue(call.queue))
        self._route_call(call, now)

    def _on_caller_hung_up(self, msg: CallerHungUp, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            return                      # not (or no longer) ours: IVR-only call, already ended
        if call.callback is not None and call.connected_at is None:
            return                      # the caller hangs up after accepting: the call-back keeps the place
        if call.connected_at is not None:
            self._finish_connected(call, now)
            return
        where = "queue"
        if call.agent is not None:      # ringing an agent
            where = "ringing"
            agent = self.agents[call.agent]
            self._out.append(CancelOffer(call.call_id, agent.id))
            self._transition(agent, "release", now, call.call_id)
            call.agent = None
        else:
            self._unwait(call)
        wait_s = now - call.joined_at
        self._emit(now, "call.abandoned", call, None, {"wait_s": round_ms(wait_s), "where": where})
        self._emit(now, "call.ended", call, None, {"outcome": "abandoned"})
        del self.calls[call.call_id]

    def _on_agent_answered(self, msg: AgentAnswered, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.agent != msg.agent or call.connected_at is not None:
            raise InvalidInput(f"agent {msg.agent!r} answered call {msg.call_id!r} it was not offered")
        agent = self.agents[msg.agent]
        call.token += 1                 # the ring timeout no longer applies
        agent.calls_handled += 1
        self._transition(agent, "answer", now, call.call_id)
        if call.callback is None or call.callback.customer_up:
            self._connect(call, agent, now)

    def _connect(self, call: CallRuntime, agent: AgentRuntime, now: float) -> None:
        call.connected_at = now
        # routing accuracy: the agent meets the call's original requirements (no relaxed or widened step)
        if call.extra_skills:
            skills_met = meets(agent.spec.skills, {**self._queue(call.entry_queue).skills, **call.extra_skills})
        else:                           # the entry queue's own minimums, known per agent
            skills_met = call.entry_queue in agent.queues
        self._emit(now, "call.connected", call, agent.id, {
            "wait_s": round_ms(now - call.joined_at), "team": agent.team, "skills_met": skills_met})
        if call.callback is not None:
            self._emit(now, "callback.connected", call, agent.id, {
                "number": call.callback.number, "attempt": call.callback.attempts,
                "kept_wait_s": round_ms(now - call.callback.accepted_at)})
        else:
            self._cancel_pending_callback(call.queue, call.caller_id, call.call_id, now)

    def _on_agent_missed(self, msg: AgentMissed, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.agent != msg.agent or call.connected_at is not None:
            return                      # the ring timeout got there first: nothing left to do
        self._ring_no_answer(call, msg.reason, now, False)

    def _on_call_finished(self, msg: CallFinished, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            return
        if call.connected_at is None:
            self._on_caller_hung_up(CallerHungUp(msg.call_id), now)
            return
        self._finish_connected(call, now)

    def _on_agent_login(self, msg: AgentLogin, now: float) -> None:
        agent = self._agent(msg.agent)
        if agent.state is not LOGGED_OUT:
            return                      # already logged in: log-in is idempotent
        self._set_matcher_skills(agent)
        agent.busy_s = agent.idle_s = 0.0
        self._transition(agent, "login", now)

    def _set_matcher_skills(self, agent: AgentRuntime) -> None:
        self.matcher.set_agent(agent.slot, [(self._skill_index[s], p) for s, p in agent.spec.skills.items()])

    def _on_agent_logout(self, msg: AgentLogout, now: float) -> None:
        agent = self._agent(msg.agent)
        if agent.state is LOGGED_OUT:
            return
        self._transition(agent, "logout", now)

    def _on_agent_pause(self, msg: AgentPause, now: float) -> None:
        agent = self._agent(msg.agent)
        if agent.state is LOGGED_OUT:
            raise InvalidInput(f"agent {msg.agent!r} is logged out and cannot pause")
        self._transition(agent, "pause", now, None, msg.reason)

    def _on_agent_resume(self, msg: AgentResume, now: float) -> None:
        agent = self._agent(msg.agent)
        if agent.deferred is not None and agent.deferred[0] == "pause":
            agent.deferred = None       # resume before the deferred pause took effect
            return
        if agent.state is PAUSED:
            self._transition(agent, "resume", now)

    def _on_wrap_up_done(self, msg: WrapUpDone, now: float) -> None:
        agent = self._agent(msg.agent)
        if agent.state is WRAP_UP:
            self._transition(agent, "wrap_done", now, agent.call_id)

    def _on_callback_accepted(self, msg: CallbackAccepted, now: float) -> None:
        """A waiting caller, or one in the IVR (`queue` set), takes a call-back: dialled when its
        turn comes within the call-back hours, or not before the slot `at` they chose."""
        call = self.calls.get(msg.call_id)
        arrival: tuple[int, float | None] | None = None
        if call is None and msg.at is not None and msg.queue is not None:
            call, position, ewt = self._join(CallQueued(msg.call_id, msg.queue, msg.caller_id, msg.priority,
                                                        msg.skills, {"callback": True}), now)
            arrival = position, ewt         # a chosen slot: not routed now, not even to a free agent
        if call is None:
            if msg.queue is None:
                raise InvalidInput(f"call {msg.call_id!r} is not queued: say which queue the call-back is for")
            self._on_call_queued(CallQueued(msg.call_id, msg.queue, msg.caller_id, msg.priority, msg.skills,
                                            {"callback": True}), now, offer_callback=False)  # asked already
            call = self.calls.get(msg.call_id)
            if call is None or call.agent is not None:
                return                  # diverted on arrival, or an agent was free: no call-back needed
        if arrival is None and (call.callback is not None or call.agent is not None or call.slot is None):
            raise InvalidInput(f"call {msg.call_id!r} cannot take a call-back now")
        policy = self._queue(call.queue).callback
        due_at = msg.at if msg.at is not None else self._dial_time(call.queue, None, now)
        refusal = (self._callback_refusal(call.queue, msg.number) or self._slot_refusal(call.queue, msg.at, now)
                   or (None if due_at is not None else "outside_hours"))     # the hours never open
        if not call.callback_offered:
            call.callback_offered = True
            self._emit(now, "callback.offered", call, None, {"reason": "request"})
        if refusal or due_at is None:
            self._emit(now, "callback.failed", call, None, {"number": msg.number, "reason": refusal,
                                                           "final": True})
            if arrival is not None and not self._divert_on_arrival(call, self._queue(call.queue), *arrival, now):
                self._start_waiting(call, now)
            return                      # still a waiting call, the caller is told why
        call.callback = CallbackState(msg.number, accepted_at=now, due_at=due_at if due_at > now else None)
        self._pending_callbacks[(call.queue, msg.number)] = call.call_id
        self._emit(now, "callback.accepted", call, None, {
            "number": msg.number, "position": self.position(call.call_id),
            "customer_first": policy.customer_first if policy else False,
            "scheduled": msg.at is not None, "due_at": call.callback.due_at})
        if call.callback.due_at is not None:
            self._park(call, call.callback.due_at)
        elif arrival is not None:
            self._start_waiting(call, now)

    def _slot_refusal(self, queue_id: str, at: float | None, now: float) -> str | None:
        """Why the slot a caller chose cannot be kept; None when it can (or there is none)."""
        if at is None:
            return None
        policy = self._queue(queue_id).callback
        if at < now:
            return "in_the_past"
        if policy is not None and at > now + policy.max_days_ahead * 86400.0:
            return "too_far"
        if not self._callback_open(queue_id, at):
            return "outside_hours"
        return None

    def _callback_open(self, queue_id: str, moment: float) -> bool:
        hours = self._callback_hours[queue_id]
        return hours is None or is_open(hours, _moment(moment))

    def _dial_time(self, queue_id: str, due_at: float | None, now: float) -> float | None:
        """The first moment from `due_at` (or now) within the call-back hours; None if they never open."""
        start = now if due_at is None or due_at < now else due_at
        hours = self._callback_hours[queue_id]
        if hours is None or is_open(hours, _moment(start)):
            return start
        opening = next_open(hours, _moment(start))
        return None if opening is None else opening.timestamp()

    def _park(self, call: CallRuntime, until: float) -> None:
        """Take a call-back out of the matcher, keeping its place, until `until`."""
        self._unwait(call)
        call.token += 1
        call.callback.due_at = until  # type: ignore[union-attr]
        self._schedule(until, "callback_due", call.call_id, call.token)

    def _parked(self, call: CallRuntime, now: float) -> bool:
        """False if `call` may be offered now; True for a call-back that may not be dialled yet,
        which is parked (or given up when its hours never open)."""
        if call.callback is None:
            return False
        when = self._dial_time(call.queue, call.callback.due_at, now)
        if when == now:
            return False
        if when is None:
            self._emit(now, "callback.failed", call, None, {
                "number": call.callback.number, "reason": "outside_hours", "attempt": call.callback.attempts,
                "final": True, "due_at": None})
            self._end_callback(call, "callback_failed", now)
        else:
            self._park(call, when)
        return True

    def _offer_callback(self, call: CallRuntime, now: float, reason: str) -> None:
        """Ask the caller once whether they want a call-back instead of waiting (within call-back hours)."""
        if call.callback_offered or call.callback is not None or not self._callback_open(call.queue, now):
            return
        call.callback_offered = True
        ewt = self.ewt(call.queue, self.position(call.call_id)) if call.slot is not None else None
        self._emit(now, "callback.offered", call, None, {"reason": reason,
                                                        "ewt_s": None if ewt is None else round(ewt, 1)})
        self._out.append(OfferCallback(call.call_id, call.queue, ewt))

    def _callback_refusal(self, queue_id: str, number: str) -> str | None:
        policy = self._queue(queue_id).callback
        if policy is None:
            return "not_offered"
        digits = number.removeprefix("+")
        if not (digits.isdigit() and policy.min_digits <= len(digits) <= policy.max_digits) or (
                policy.prefixes and not number.startswith(policy.prefixes)):
            return "invalid_number"
        if (queue_id, number) in self._pending_callbacks:
            return "duplicate"
        if sum(1 for q, _ in self._pending_callbacks if q == queue_id) >= policy.max_pending:
            return "too_many"
        return None

    def _on_callback_restored(self, msg: CallbackRestored, now: float) -> None:
        queue = self._queue(msg.queue)
        if msg.call_id in self.calls:
            raise InvalidInput(f"call {msg.call_id!r} is already queued")
        self._call_seq += 1
        call = CallRuntime(
            call_id=msg.call_id, entry_queue=queue.id, queue=queue.id, caller_id=msg.caller_id,
            priority=queue.priority if msg.priority is None else msg.priority, extra_skills=dict(msg.skills),
            joined_at=msg.joined_at, queue_joined_at=msg.joined_at, seq=self._call_seq, requirement_sets=[{**queue.skills, **msg.skills}],
            callback=CallbackState(msg.number, msg.accepted_at, msg.attempts, due_at=msg.due_at))
        self.calls[call.call_id] = call
        self._pending_callbacks[(queue.id, msg.number)] = call.call_id
        self._callback_due(call, now)

    # --- restore after a restart ---------------------------------------------

    def _on_agent_restored(self, msg: AgentRestored, now: float) -> None:
        """A logged-out agent straight into available, paused or wrap-up, without an event."""
        agent = self._agent(msg.agent)
        state = RESTORED_STATES.get(msg.state)
        if state is None:
            raise InvalidInput(f"agent {msg.agent!r} cannot be restored {msg.state!r}: "
                               f"only {', '.join(RESTORED_STATES)}")
        if agent.state is not LOGGED_OUT:
            raise InvalidInput(f"agent {msg.agent!r} is {agent.state.value}: only a logged-out agent is restored")
        since = now if msg.since is None else _instant(msg.since, f"agent {msg.agent!r}: since")
        wrap_until = (now if msg.wrap_until is None
                      else _instant(msg.wrap_until, f"agent {msg.agent!r}: wrap_until"))
        self._set_matcher_skills(agent)
        agent.busy_s = agent.idle_s = 0.0
        agent.deferred = None
        self._restore_agent_state(agent, state, since, reason=msg.reason,
                                  call_id=msg.call_id if state is WRAP_UP else None)
        if state is WRAP_UP:
            agent.wrap_token += 1
            agent.wrap_until = wrap_until
            self._schedule(wrap_until, "wrap", agent.id, agent.wrap_token)
        elif state is AVAILABLE:
            self._route_agent(agent, now)   # as after a log-in: it takes a waiting call

    def _restore_agent_state(self, agent: AgentRuntime, state: AgentState, since: float, *,
                             reason: str | None = None, call_id: str | None = None) -> None:
        """`_enter` without the event, the time accounting and the routing."""
        self._count_staffing(agent, agent.state, state)
        agent.state, agent.since = state, since
        agent.reason = reason if state is PAUSED else None
        agent.call_id = call_id if state in CALL_STATES else None
        self.matcher.set_agent_counters(agent.slot, agent.calls_handled, agent.occupancy)
        self.matcher.set_agent_available(agent.slot, state is AVAILABLE, since)

    def _on_call_restored(self, msg: CallRestored, now: float) -> None:
        """A waiting, ringing or connected call back in the engine, without an event; every
        check comes before the first change, so a refused restore changes nothing."""
        queue = self._queue(msg.queue)
        self._queue(msg.entry_queue)
        what = f"call {msg.call_id!r}"
        if msg.call_id in self.calls:
            raise InvalidInput(f"{what} is already known")
        for skill in msg.skills:
            if skill not in self._skill_index:
                raise InvalidInput(f"{what} asks for unknown skill {skill!r}")
        if msg.state not in RESTORED_CALL_STATES:
            raise InvalidInput(f"{what} cannot be restored {msg.state!r}: only {', '.join(RESTORED_CALL_STATES)}")
        joined_at = _instant(msg.joined_at, f"{what}: joined_at")
        queue_joined_at = _instant(msg.queue_joined_at, f"{what}: queue_joined_at")
        if msg.seq is not None and (not isinstance(msg.seq, int) or msg.seq < 0):
            raise InvalidInput(f"{what}: seq must be a whole number from 0, not {msg.seq!r}")
        if not (isinstance(msg.next_step, int) and 0 <= msg.next_step <= len(queue.overflow)):
            raise InvalidInput(f"{what}: next_step {msg.next_step!r} is not a step of queue {queue.id!r} "
                               f"(0 to {len(queue.overflow)})")
        if not (isinstance(msg.moves, int) and msg.moves >= 0):
            raise InvalidInput(f"{what}: moves must be a whole number from 0, not {msg.moves!r}")
        agent: AgentRuntime | None = None
        if msg.state == "waiting":
            if msg.agent is not None:
                raise InvalidInput(f"{what} is waiting: it has no agent ({msg.agent!r} given)")
            if not self._free_slots:
                raise InvalidInput("call capacity exhausted")
        else:
            if msg.agent is None:
                raise InvalidInput(f"{what} is {msg.state}: say which agent")
            agent = self._agent(msg.agent)
            if agent.state is not AVAILABLE:
                raise InvalidInput(f"{what} is {msg.state} with agent {msg.agent!r}, which is "
                                   f"{agent.state.value}: restore the agent available first")
        if msg.state == "connected":
            if msg.connected_at is None:
                raise InvalidInput(f"{what} is connected: say since when (connected_at)")
            connected_at: float | None = _instant(msg.connected_at, f"{what}: connected_at")
        elif msg.connected_at is not None:
            raise InvalidInput(f"{what} is {msg.state}: connected_at is for a connected call")
        else:
            connected_at = None
        call = CallRuntime(
            call_id=msg.call_id, entry_queue=msg.entry_queue, queue=queue.id, caller_id=msg.caller_id,
            priority=msg.priority, extra_skills=dict(msg.skills), joined_at=joined_at,
            queue_joined_at=queue_joined_at, seq=-1, requirement_sets=[{**queue.skills, **msg.skills}],
            next_step=msg.next_step, moves=msg.moves)
        for step in queue.overflow[:msg.next_step]:     # what the steps already run did to its requirements
            if step.after_s is not None and not step.move_to:
                self._apply_timed_step(call, step)
        if len(call.requirement_sets) > matcher_module.MAX_SETS_PER_CALL:
            raise InvalidInput(f"{what}: its steps give more than {matcher_module.MAX_SETS_PER_CALL} skill sets")
        # checked: from here on nothing fails
        if msg.seq is None:
            self._call_seq += 1
            call.seq = self._call_seq
        else:
            call.seq = msg.seq
            self._call_seq = max(self._call_seq, msg.seq)
        self.calls[call.call_id] = call
        if agent is None:
            self._start_waiting(call, now)      # at its place, steps due, routed
            return
        call.agent = agent.id
        since = now if agent.since is None else agent.since     # as AgentRestored left it
        if connected_at is None:                # ringing: Asterisk rings already, the timeout restarts
            self._restore_agent_state(agent, RESERVED, since, call_id=call.call_id)
            self._schedule(now + queue.ring_timeout_s, "ring", call.call_id, call.token)
        else:
            call.connected_at = connected_at
            self._restore_agent_state(agent, ON_CALL, since, call_id=call.call_id)

    def _callback_due(self, call: CallRuntime, now: float) -> None:
        """A call-back may be dialled from now: back at its original place (routed with the others
        due this instant, in place order), or parked again until it may."""
        if not self._parked(call, now):
            self._wait(call, now)
            self._schedule_steps(call, self._queue(call.queue))
            self._woken.append(call)

    def _route_woken(self, now: float) -> None:
        """Route the call-backs that came back at `now` in the order they would be served, so that
        several due at one opening reach free agents by their places, not by their timers."""
        woken, self._woken = self._woken, []
        for call in sorted(woken, key=lambda c: (-c.priority, c.joined_at, c.seq)):
            self._route_call(call, now)

    def _on_callback_answered(self, msg: CallbackAnswered, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.callback is None or call.agent is None or call.connected_at is not None:
            raise InvalidInput(f"call-back {msg.call_id!r} is not being dialled")
        call.callback.customer_up = True
        agent = self.agents[call.agent]
        if agent.state is ON_CALL:
            self._connect(call, agent, now)

    def _on_callback_failed(self, msg: CallbackFailed, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.callback is None or call.agent is None or call.connected_at is not None:
            raise InvalidInput(f"call-back {msg.call_id!r} is not being dialled")
        agent = self.agents[call.agent]
        call.agent = None
        call.token += 1
        self._transition(agent, "release", now, call.call_id)
        policy = self._queue(call.queue).callback
        final = policy is None or call.callback.attempts >= policy.max_attempts
        retry_at = None if final else now + policy.retry_s  # type: ignore[union-attr]
        due_at = None if retry_at is None else self._dial_time(call.queue, retry_at, now)
        self._emit(now, "callback.failed", call, None, {
            "number": call.callback.number, "reason": msg.reason, "attempt": call.callback.attempts,
            "final": due_at is None, "retry_at": retry_at, "due_at": due_at})
        if due_at is None:
            self._end_callback(call, "callback_failed", now)
        else:
            self._park(call, due_at)        # waits out retry_s, and for the call-back hours to open

    def _end_callback(self, call: CallRuntime, outcome: str, now: float) -> None:
        self._unwait(call)
        call.token += 1
        self._pending_callbacks.pop((call.queue, call.callback.number), None)  # type: ignore[union-attr]
        self._emit(now, "call.ended", call, None, {"outcome": outcome})
        del self.calls[call.call_id]

    def _cancel_pending_callback(self, queue_id: str, number: str, by_call: str, now: float) -> None:
        """The customer got through by calling in: their pending call-back is not needed."""
        call_id = self._pending_callbacks.get((queue_id, number)) if number else None
        call = self.calls.get(call_id) if call_id else None
        if call is None or call.agent is not None:
            return                      # none, or already being dialled
        self._emit(now, "callback.cancelled", call, None, {"number": number, "reason": "caller_answered",
                                                          "by": by_call})
        self._end_callback(call, "callback_cancelled", now)

    def _on_callback_withdrawn(self, msg: CallbackWithdrawn, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.callback is None or call.agent is not None:
            return
        self._pending_callbacks.pop((call.queue, call.callback.number), None)
        call.callback = None
        self._emit(now, "callback.cancelled", call, None, {"reason": "not_stored"})
        if call.slot is None:           # parked (outside the hours, or a chosen slot): back in line
            call.token += 1             # its callback_due timer no longer applies
            self._start_waiting(call, now)

    def _on_caller_left(self, msg: CallerLeft, now: float) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.slot is None or call.callback is not None:
            return                      # not waiting (ringing an agent, connected, a call-back)
        self._unwait(call)
        self._emit(now, "call.ended", call, None, {"outcome": "left", "to": msg.to,
                                                  "wait_s": round_ms(now - call.joined_at)})
        del self.calls[call.call_id]

    # --- supervisor actions -------------------------------------------------

    def _waiting_call(self, call_id: str) -> CallRuntime:
        """A call a supervisor may change: waiting, or a call-back not being dialled."""
        call = self.calls.get(call_id)
        if call is None:
            raise InvalidInput(f"unknown call {call_id!r}")
        if call.agent is not None or call.connected_at is not None:
            raise InvalidInput(f"call {call_id!r} is not waiting: it is ringing an agent or connected")
        return call

    def _on_set_call_priority(self, msg: SetCallPriority, now: float) -> None:
        call = self._waiting_call(msg.call_id)
        previous = call.priority
        if msg.priority == previous:
            return
        waiting = call.slot is not None
        self._unwait(call)
        call.priority = msg.priority
        self._emit(now, "call.priority_changed", call, None, {"priority": msg.priority, "previous": previous})
        if waiting:                     # a parked call-back takes it when it comes back
            self._wait(call, now)
            self._route_call(call, now)

    def _on_move_call(self, msg: MoveCall, now: float) -> None:
        call = self._waiting_call(msg.call_id)
        target = self._queue(msg.queue)
        if target.id == call.queue:
            raise InvalidInput(f"call {msg.call_id!r} is already in queue {target.id!r}")
        requirements = {**target.skills, **call.extra_skills}
        if not any(meets(agent.spec.skills, requirements) for agent in self.agents.values()):
            raise InvalidInput(f"no agent has the skills queue {target.id!r} needs for call {msg.call_id!r}")
        if call.callback is not None:
            key = (target.id, call.callback.number)
            if key in self._pending_callbacks:
                raise InvalidInput(f"queue {target.id!r} already holds a call-back to this number")
            del self._pending_callbacks[(call.queue, call.callback.number)]
            self._pending_callbacks[key] = call.call_id
        waiting = call.slot is not None
        self._unwait(call)
        previous = call.queue
        call.queue, call.queue_joined_at, call.next_step = target.id, now, 0
        call.requirement_sets = [requirements]
        self._emit(now, "call.moved", call, None, {"from": previous, "to": target.id,
                                                  "wait_s": round_ms(now - call.joined_at)})
        if waiting:                     # a parked call-back keeps its timer and waits there
            call.token += 1             # the old queue's step and max-wait timers no longer apply
            self._start_waiting(call, now)

    def _on_cancel_callback(self, msg: CancelCallback, now: float) -> None:
        call = self._waiting_call(msg.call_id)
        if call.callback is None:
            raise InvalidInput(f"call {msg.call_id!r} is not a call-back")
        self._emit(now, "callback.cancelled", call, None, {"number": call.callback.number,
                                                          "reason": "supervisor"})
        self._end_callback(call, "callback_cancelled", now)

    _handlers: dict[type, Callable[..., None]] = {
        CallQueued: _on_call_queued, CallerHungUp: _on_caller_hung_up,
        AgentAnswered: _on_agent_answered, AgentMissed: _on_agent_missed,
        CallFinished: _on_call_finished, AgentLogin: _on_agent_login,
        AgentLogout: _on_agent_logout, AgentPause: _on_agent_pause,
        AgentResume: _on_agent_resume, WrapUpDone: _on_wrap_up_done,
        CallbackAccepted: _on_callback_accepted, CallbackRestored: _on_callback_restored,
        AgentRestored: _on_agent_restored, CallRestored: _on_call_restored,
        CallbackAnswered: _on_callback_answered, CallbackFailed: _on_callback_failed,
        CallbackWithdrawn: _on_callback_withdrawn, CallerLeft: _on_caller_left,
        SetCallPriority: _on_set_call_priority, MoveCall: _on_move_call, CancelCallback: _on_cancel_callback,
    }

    # --- timers -----------------------------------------------------------

    def _schedule(self, when: float, kind: str, key: str, token: int) -> None:
        self._timer_seq += 1
        heappush(self._timers, (when, self._timer_seq, kind, key, token))

    def _timer_live(self, kind: str, key: str, token: int) -> bool:
        """False for a timer whose subject moved on (its token is outdated)."""
        if kind == "wrap":
            agent = self.agents[key]
            return agent.state is WRAP_UP and agent.wrap_token == token
        call = self.calls.get(key)
        return call is not None and call.token == token

    def _fire(self, kind: str, key: str, token: int, when: float) -> None:
        if not self._timer_live(kind, key, token):
            return
        if kind == "wrap":
            agent = self.agents[key]
            self._transition(agent, "wrap_done", when, agent.call_id)
            return
        call = self.calls[key]
        if kind == "ring":
            self._ring_no_answer(call, "timeout", when, True)
        elif kind == "step":
            self._run_timed_step(call, when)
        elif kind == "callback_due":
            self._callback_due(call, when)
        elif kind == "max_wait" and call.slot is not None and call.callback is None:
            step = next(s for s in self._queue(call.queue).overflow if s.when == "max_wait")
            self._divert(call, step, when)

    # --- waiting and matching ---------------------------------------------

    def _wait(self, call: CallRuntime, now: float) -> None:
        """Put the call (back) among the waiting calls at its original place."""
        if not self._free_slots:
            raise InvalidInput("call capacity exhausted")
        queue = self._queue(call.queue)
        call.slot = self._free_slots.pop()
        self._call_by_slot[call.slot] = call
        self.matcher.add_call(call.slot, self._queue_index[call.queue], call.priority, call.joined_at,
                              call.seq, queue.weight, self._matcher_sets(call))
        self._waiting[call.queue][call.call_id] = call

    def _unwait(self, call: CallRuntime) -> None:
        if call.slot is None:
            return
        self.matcher.remove_call(call.slot)
        del self._call_by_slot[call.slot]
        self._free_slots.append(call.slot)
        call.slot = None
        self._waiting[call.queue].pop(call.call_id, None)

    def _matcher_sets(self, call: CallRuntime) -> list[list[tuple[int, int]]]:
        index = self._skill_index
        return [[(index[s], m) for s, m in reqs.items()] for reqs in call.requirement_sets]

    def _route_call(self, call: CallRuntime, now: float) -> None:
        if call.slot is None or self._parked(call, now):
            return
        strategy = STRATEGY_CODES[self._queue(call.queue).strategy]
        slot = self.matcher.pick_agent(call.slot, strategy, now)
        if slot >= 0:
            self._offer(call, self._agent_by_slot[slot], now)

    def _route_agent(self, agent: AgentRuntime, now: float) -> None:
        """Offer the best waiting call to a free agent; a call-back found outside its hours is
        parked and the agent looks again."""
        while agent.state is AVAILABLE:
            slot = self.matcher.pick_call(agent.slot, now)
            if slot < 0:
                return
            call = self._call_by_slot[slot]
            if not self._parked(call, now):
                self._offer(call, agent, now)

    def _offer(self, call: CallRuntime, agent: AgentRuntime, now: float) -> None:
        queue = self._queue(call.queue)
        self._unwait(call)
        call.agent = agent.id
        call.token += 1
        self._transition(agent, "reserve", now, call.call_id)
        self._emit(now, "agent.offered", call, agent.id,
                   {"ring_timeout_s": queue.ring_timeout_s})
        if call.callback is None:
            self._out.append(OfferCall(call.call_id, agent.id, agent.endpoint, call.queue,
                                       queue.ring_timeout_s))
            self._schedule(now + queue.ring_timeout_s, "ring", call.call_id, call.token)
            return
        call.callback.attempts += 1
        call.callback.customer_up = False
        agent_first = not (queue.callback and queue.callback.customer_first)
        self._emit(now, "callback.dialing", call, agent.id, {
            "number": call.callback.number, "attempt": call.callback.attempts, "agent_first": agent_first})
        self._out.append(DialCallback(call.call_id, agent.id, agent.endpoint, call.callback.number,
                                      call.queue, agent_first, call.callback.attempts, queue.ring_timeout_s))
        if agent_first:
            self._schedule(now + queue.ring_timeout_s, "ring", call.call_id, call.token)

    def _ring_no_answer(self, call: CallRuntime, reason: str, now: float, cancel: bool) -> None:
        agent = self.agents[call.agent]  # type: ignore[index]
        queue = self._queue(call.queue)
        if cancel:
            self._out.append(CancelOffer(call.call_id, agent.id))
        self._emit(now, "agent.no_answer", call, agent.id, {"reason": reason})
        if call.callback is not None:
            call.callback.attempts -= 1  # the agent leg failed: the customer was not dialled
        call.agent = None
        call.token += 1
        self._wait(call, now)           # back at its original place
        self._reschedule_timers(call)
        if queue.rona_pause:
            self._transition(agent, "no_answer", now, call.call_id, "rona")
        else:
            self._transition(agent, "release", now, call.call_id)
        self._route_call(call, now)

    def _finish_connected(self, call: CallRuntime, now: float) -> None:
        agent = self.agents[call.agent]  # type: ignore[index]
        talk_s = now - call.connected_at  # type: ignore[operator]
        self._emit(now, "call.ended", call, agent.id,
                   {"outcome": "answered", "talk_s": round_ms(talk_s)})
        if call.callback is not None:
            self._pending_callbacks.pop((call.queue, call.callback.number), None)
        wrap_s = self._queue(call.queue).wrap_up_s
        aht = self._aht[call.queue]
        self._aht[call.queue] = aht + AHT_SMOOTHING * (talk_s + wrap_s - aht)
        del self.calls[call.call_id]
        agent.wrap_token += 1
        self._transition(agent, "hangup", now, call.call_id)
        agent.wrap_until = now + wrap_s
        self._schedule(agent.wrap_until, "wrap", agent.id, agent.wrap_token)

    # --- overflow -----------------------------------------------------------

    def _schedule_steps(self, call: CallRuntime, queue: Queue) -> None:
        """Timers for the next timed step and for a max-wait step of the call's current queue."""
        steps = queue.overflow
        while call.next_step < len(steps) and steps[call.next_step].after_s is None:
            call.next_step += 1
        if call.next_step < len(steps):
            self._schedule(call.queue_joined_at + steps[call.next_step].after_s, "step",  # type: ignore[operator]
                           call.call_id, call.token)
        for step in steps:
            if step.when == "max_wait":
                self._schedule(call.queue_joined_at + step.value, "max_wait", call.call_id, call.token)
                break

    def _reschedule_timers(self, call: CallRuntime) -> None:
        """After a re-queue the token changed: re-arm the step and max-wait timers."""
        self._schedule_steps(call, self._queue(call.queue))

    def _run_timed_step(self, call: CallRuntime, now: float) -> None:
        if call.slot is None:
            return
        queue = self._queue(call.queue)
        index = call.next_step
        step = queue.overflow[index]
        call.next_step += 1
        action, target = self._apply_timed_step(call, step)
        if action == "none":
            self._schedule_steps(call, queue)
            return
        self._emit(now, "queue.overflowed", call, None, {
            "step": index, "action": action, "to": target, "wait_s": round_ms(now - call.joined_at)})
        if action == "move":
            self._unwait(call)
            call.queue = target  # type: ignore[assignment]
            call.queue_joined_at = now
            call.next_step = 0
            call.moves += 1
            self._wait(call, now)
            call.token += 1
            self._schedule_steps(call, self._queue(call.queue))
        else:
            self.matcher.set_call_requirements(call.slot, self._matcher_sets(call))
            call.token += 1
            self._schedule_steps(call, queue)
        self._route_call(call, now)

    def _apply_timed_step(self, call: CallRuntime, step: OverflowStep) -> tuple[str, str | None]:
        if step.relax:
            for reqs in call.requirement_sets:
                for skill, minimum in step.relax.items():
                    if skill in reqs and minimum < reqs[skill]:
                        reqs[skill] = minimum
            return "relax", None
        if step.add_skills:
            call.requirement_sets.append({**step.add_skills, **call.extra_skills})
            return "add_skills", None
        if step.copy_to:
            if call.copied_to is None:
                call.copied_to = set()
            if step.copy_to not in call.copied_to:
                call.copied_to.add(step.copy_to)
                call.requirement_sets.append({**self._queue(step.copy_to).skills, **call.extra_skills})
            return "copy", step.copy_to
        if step.move_to and call.moves < MAX_MOVES:
            call.requirement_sets = [{**self._queue(step.move_to).skills, **call.extra_skills}]
            return "move", step.move_to
        return "none", None

    def _divert_on_arrival(self, call: CallRuntime, queue: Queue, position: int, ewt: float | None,
                           now: float) -> bool:
        """Conditional steps checked when a call arrives; True if the call was diverted."""
        for step in queue.overflow:
            if step.when == "queue_length" and len(self._waiting[queue.id]) >= step.value:
                return self._divert(call, step, now)
            if step.when == "ewt" and (ewt is None or ewt > step.value):
                return self._divert(call, step, now)
            if step.when == "no_agents" and not self._queue_staffed(queue.id):
                return self._divert(call, step, now)
        return False

    def _queue_staffed(self, queue_id: str) -> bool:
        return self._logged_in[queue_id] > 0

    def _divert(self, call: CallRuntime, step: OverflowStep, now: float) -> bool:
        if call.callback is not None:
            return False                # nobody is on the line to divert: the call-back keeps waiting
        if step.action == "callback":
            self._offer_callback(call, now, step.when or "overflow")
            return False                # offered: the caller keeps waiting unless they accept
        index = self._queue(call.queue).overflow.index(step)
        self._unwait(call)
        call.token += 1
        self._emit(now, "queue.overflowed", call, None, {
            "step": index, "action": step.action, "to": step.target, "when": step.when,
            "wait_s": round_ms(now - call.joined_at)})
        self._out.append(DivertCall(call.call_id, step.action or "hangup", step.target, step.message))
        self._emit(now, "call.ended", call, None, {"outcome": "overflow", "action": step.action})
        del self.calls[call.call_id]
        return True

    def _divert_unstaffed(self, now: float) -> None:
        """After a log-out: divert waiting calls of queues nobody logged in can serve."""
        for queue_id, waiting in self._waiting.items():
            if not waiting or self._queue_staffed(queue_id):
                continue
            step = next((s for s in self._queue(queue_id).overflow if s.when == "no_agents"), None)
            if step is None:
                continue
            for call in sorted(waiting.values(), key=lambda c: c.seq):
                self._divert(call, step, now)

    # --- agent transitions --------------------------------------------------

    def _transition(self, agent: AgentRuntime, action: str, now: float, call_id: str | None = None,
                    reason: str | None = None) -> None:
        edge = (agent.state, action)
        if edge in DEFERRABLE:
            agent.deferred = (action, reason or "")
            return
        new_state = TRANSITIONS.get(edge)
        if new_state is None:
            raise InvalidInput(f"agent {agent.id!r} cannot {action} while {agent.state.value}")
        if new_state is AVAILABLE and agent.deferred is not None:
            deferred_action, deferred_reason = agent.deferred
            agent.deferred = None
            new_state = PAUSED if deferred_action == "pause" else LOGGED_OUT
            reason = deferred_reason or None
        self._enter(agent, new_state, now, call_id, reason)

    def _enter(self, agent: AgentRuntime, state: AgentState, now: float, call_id: str | None,
               reason: str | None) -> None:
        previous, since = agent.state, agent.since
        spent = 0.0 if since is None else now - since
        if previous in BUSY_STATES:
            agent.busy_s += spent
        elif previous in IDLE_STATES:
            agent.idle_s += spent
        if previous in UNSTAFFED_STATES or state in UNSTAFFED_STATES:   # else no count changes
            self._count_staffing(agent, previous, state)
        agent.state, agent.since = state, now
        agent.reason = reason if state is PAUSED else None
        agent.call_id = call_id if state in CALL_STATES else None
        # the event by new_event (the hot path's Event): ts, type, call_id, queue, agent, data
        self._out.append(new_event(now, "agent.state", call_id, None, agent.id, {
            "state": _STATE_NAMES[state], "previous": _STATE_NAMES[previous], "previous_s": round_ms(spent),
            "reason": agent.reason, "team": agent.team}))
        matcher = self.matcher
        if state is LOGGED_OUT:
            matcher.remove_agent(agent.slot)
            self._divert_unstaffed(now)
            return
        matcher.set_agent_counters(agent.slot, agent.calls_handled, agent.occupancy)
        matcher.set_agent_available(agent.slot, state is AVAILABLE, now)
        if state is AVAILABLE:
            self._route_agent(agent, now)

    def _count_staffing(self, agent: AgentRuntime, previous: AgentState, state: AgentState) -> None:
        """Keep per-queue counts of logged-in and of staffed (logged in, not paused) agents."""
        logged_in = (state is not LOGGED_OUT) - (previous is not LOGGED_OUT)
        staffed = (state not in UNSTAFFED_STATES) - (previous not in UNSTAFFED_STATES)
        if logged_in or staffed:
            for queue_id in agent.queues:
                self._logged_in[queue_id] += logged_in
                self._staffed[queue_id] += staffed

    # --- helpers --------------------------------------------------------------

    def _emit(self, now: float, type_: str, call: CallRuntime, agent: str | None,
              data: dict[str, Any]) -> None:
        self._out.append(new_event(now, type_, call.call_id, call.queue, agent, data))

    def _take_output(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _queue(self, queue_id: str) -> Queue:
        try:
            return self._queues[queue_id]
        except KeyError:
            raise InvalidInput(f"unknown queue {queue_id!r}") from None

    def _agent(self, agent_id: str) -> AgentRuntime:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise InvalidInput(f"unknown agent {agent_id!r}") from None


_STATE_NAMES: dict[AgentState, str] = {state: state.value for state in AgentState}   # Enum.value is Python code


def meets(skills: dict[str, int], requirements: dict[str, int]) -> bool:
    """Whether an agent's skills reach every minimum (the engine's rule; schedules count by it too)."""
    return all(skills.get(skill, 0) >= minimum for skill, minimum in requirements.items())


def _callback_schedule(centre: Centre, queue: Queue) -> Schedule | None:
    """The schedule bounding a queue's call-backs: the policy's hours, else the queue's; None: always open."""
    name = (queue.callback.hours if queue.callback else None) or queue.schedule
    if name is None:
        return None
    if name not in centre.schedules:
        raise ValueError(f"queue {queue.id!r}: unknown schedule {name!r}")
    return centre.schedules[name]


def _call_view(call: CallRuntime) -> CallView:
    return CallView(
        call_id=call.call_id, queue=call.queue, entry_queue=call.entry_queue, caller_id=call.caller_id,
        priority=call.priority, joined_at=call.joined_at, queue_joined_at=call.queue_joined_at, seq=call.seq,
        waiting=call.slot is not None, agent=call.agent, connected=call.connected_at is not None,
        callback_number=None if call.callback is None else call.callback.number,
        next_step=call.next_step, moves=call.moves, skills=dict(call.extra_skills), connected_at=call.connected_at,
        **({} if call.callback is None else {"callback_accepted_at": call.callback.accepted_at,
                                             "callback_attempts": call.callback.attempts,
                                             "callback_due_at": call.callback.due_at}))


def _agent_view(agent: AgentRuntime) -> AgentView:
    return AgentView(agent=agent.id, state=agent.state, reason=agent.reason, call_id=agent.call_id,
                     endpoint=agent.endpoint, since=agent.since,
                     wrap_until=agent.wrap_until if agent.state is WRAP_UP else None)


def _instant(value: float, what: str) -> float:
    """A finite time (epoch seconds) from a restore input, else InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a time in epoch seconds, not {value!r}")
    return float(value)


def _moment(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)
