"""Discrete-event simulation of a contact centre around the real engine.

The `Simulator` is the simulated PBX and the people on it: callers arrive by
the traffic model (straight into a queue, or into an IVR flow that the real
interpreter runs and simulated callers answer), wait with a limited patience,
agents work shifts with breaks, answer after a ring delay (or not: RONA), talk
for a sampled handle time; some callers stay for the post-call survey.  Call-backs
are taken on the engine's offer (`callback_acceptance`) or by an IVR flow that ends in
a `callback` node (handed to the engine as the Asterisk adapter does), and the
customer answers the dialled leg with `callback_answer_rate`.  It
turns these happenings into engine inputs and carries out the engine's commands,
on a virtual clock: the next thing to happen is the earlier of the simulator's
own agenda and the engine's next timer.  Nothing here awaits or reads a clock,
so a seed fixes every decision; `run(max_events)` returns the domain events of a
slice so that an async driver can stream them to the store.

A run may start at any instant (`start`, the demo's "now"), not only at the
configured `simulation.start`.  Shift and break times are times of day in the
centre's zone and repeat every day of the run: a shift under way at the start
is logged in at the start (on its break if one is under way), one that is over
is skipped, one past midnight ends the next day.  The arrival profile keeps its
phase: its intervals start where they would have started counting from
`simulation.start`, so a run that starts at 14:50 plays the 14:30 interval.
A run of `days` is a history instead: whole local days from `simulation.start`
(to midnight after the last one), each playing the profile once with the
weekday, trend, overdispersion and holidays of `traffic.history`; the calls
still in progress at the end play out.
A supervisor's input (`apply`, the demo's dashboard) changes the engine's
state under the simulated people: a break of an agent a supervisor logged out
is skipped.  An input of the simulator's own that the engine refuses is a bug
of the simulator: it is logged with its context, counted in `refused`, and the run
goes on.
"""
from __future__ import annotations

import gc
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from heapq import heappop, heappush
from typing import Any, Callable
from zoneinfo import ZoneInfo

import structlog

from router.config.model import Centre, Simulation
from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentPause, AgentResume,
                                    CallbackAccepted, CallbackAnswered, CallbackFailed, CallerHungUp,
                                    CallFinished, CallQueued, CancelOffer, DialCallback, DivertCall,
                                    InvalidInput, OfferCall, OfferCallback)
from router.events import Event, new_event
from router.ivr.model import FlowSet
from router.ivr.session import Enqueue, FlowSession
from router.ivr.session import OfferCallback as IvrCallback
from router import schedules
from router.sim import traffic
from router.sim.ivr_callers import IvrCallerModel

log = structlog.get_logger("router.sim")


@dataclass(frozen=True, slots=True)
class SimStats:
    calls: int
    agents: int
    simulated_s: float


class Simulator:
    def __init__(self, centre: Centre, *, hours: float = 8.0, seed: int = 0,
                 model: Simulation | None = None, flowset: FlowSet | None = None,
                 start: datetime | None = None, days: int | None = None) -> None:
        model = model or centre.simulation
        if model is None:
            raise ValueError(f"{centre.source}: no `simulation` section to simulate")
        if model.ivr is not None:
            _check_ivr_traffic(centre, model, flowset)
        self.flowset, self.seed = flowset, seed
        self._callers = IvrCallerModel(model.ivr, random.Random(f"ivr:{seed}")) if model.ivr else None
        self._sessions: dict[str, FlowSession] = {}   # calls in the IVR or in the survey
        self.centre, self.model, self.hours = centre, model, hours
        self.engine = Engine(centre, seed=seed)
        self.zone = ZoneInfo(centre.timezone)
        anchor = _in_zone(model.start, self.zone).timestamp()
        self.start = _in_zone(start, self.zone).timestamp() if start is not None else anchor
        self.clock = self.start
        self.refused = 0                          # inputs of ours the engine refused (each one a bug)
        self._handle_rng = random.Random(f"handle:{seed}")
        self._patience_rng = random.Random(f"patience:{seed}")
        self._answer_rng = random.Random(f"answer:{seed}")
        # what the simulated world does next, (when, seq, kind, payload) in heaps: the callers' give-ups
        # apart (most never happen: the call is answered first, and they would deepen every heap
        # operation), and the arrivals one at a time (see _push_arrival); the next is the least of both
        self._agenda: list[tuple[float, int, str, Any]] = []
        self._patience: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._ringing: dict[str, str] = {}        # call -> agent being rung
        self._live: set[str] = set()              # calls not yet ended
        self._talking: set[str] = set()           # calls connected to an agent
        self.days = days                          # None: a run of `hours`
        if days is None:
            self.arrivals = traffic.arrivals(model, hours, seed, phase_s=self.start - anchor)
        else:
            if start is not None or days < 1:
                raise ValueError("a run of days starts at simulation.start and lasts at least one day")
            calendar = traffic.history_days(model, days, self.zone)
            midnight = datetime.combine(calendar[-1].date + timedelta(days=1), time(), tzinfo=self.zone)
            self.hours = (midnight.timestamp() - self.start) / 3600.0
            self.arrivals = traffic.history(model, calendar, seed, self._queue_closed)
        self._survey_rng = random.Random(f"survey:{seed}")
        self._callback_rng = random.Random(f"callback:{seed}")
        self._callbacks: set[str] = set()          # calls turned into call-backs (caller gone)
        self._next_arrival = 0
        self._seq = len(self.arrivals)            # arrival n has seq n + 1
        self._push_arrival()
        self._plan_shifts()

    def _queue_closed(self, queue: str, offset_s: float) -> bool:
        """Whether `queue`'s schedule is closed `offset_s` after `simulation.start` (no schedule: open)."""
        schedule = self.centre.schedules.get(self.centre.queues[queue].schedule or "")
        return schedule is not None and not schedules.is_open(schedule, _aware(self.start + offset_s))

    @property
    def done(self) -> bool:
        return not self._agenda and not self._patience and self.engine.next_deadline() is None

    @property
    def stats(self) -> SimStats:
        return SimStats(len(self.arrivals), len(self.centre.agents), self.clock - self.start)

    def next_time(self) -> float | None:
        """When the next thing happens (epoch seconds of the virtual clock); None at the end."""
        engine_at = self.engine.next_deadline()
        agenda_at = min((h[0][0] for h in (self._agenda, self._patience) if h), default=None)
        if engine_at is None or agenda_at is None:
            return agenda_at if engine_at is None else engine_at
        return min(engine_at, agenda_at)

    def run_until(self, until: float) -> list[Event]:
        """Everything that happens up to and including `until` (for real-time drivers)."""
        events: list[Event] = []
        while (at := self.next_time()) is not None and at <= until:
            self._step(events, self.engine.next_deadline())
        return events

    def apply(self, message: Any, now: float) -> list[Event]:
        """An input from outside the simulated world (a supervisor) at `now`; call `run_until(now)`
        first.  Raises InvalidInput, changing nothing, when it does not fit."""
        events: list[Event] = []
        self.clock = max(self.clock, now)
        self._carry_out(self.engine.handle(message, self.clock), events)
        return events

    def run(self, max_events: int = 10_000) -> list[Event]:
        """Advance the virtual clock until about `max_events` events happened (or the end).

        The cycle collector pauses for the slice, as `timeit` pauses it: a slice allocates tens
        of thousands of short-lived objects (events, their data, heap entries) that form no
        cycles, and its passes over them every 700 allocations cost a tenth of a long run's
        time.  It runs as usual between slices, so a cycle made in one is collected after it."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            events: list[Event] = []
            agenda, patience, next_deadline = self._agenda, self._patience, self.engine.next_deadline
            while len(events) < max_events:
                engine_at = next_deadline()
                if not agenda and not patience and engine_at is None:
                    break                                      # done
                self._step(events, engine_at)
            return events
        finally:
            if collecting:
                gc.enable()

    def _step(self, events: list[Event], engine_at: float | None) -> None:
        """The next happening: the simulated world's or the engine's timer (due `engine_at`),
        whichever is first."""
        agenda, patience = self._agenda, self._patience
        if patience and not self._live:
            patience.clear()                   # every call has ended: the give-ups left would do nothing
            if not agenda and engine_at is None:
                return                         # and they were all there was: the run is over
        if patience and (not agenda or patience[0] < agenda[0]):
            agenda = patience
        if agenda and (engine_at is None or agenda[0][0] < engine_at):
            when, _, kind, payload = heappop(agenda)
            self.clock = when
            if kind == "arrive":               # the happenings of every call as C calls, the rest by the table
                outputs = self._arrive(payload, when, events)
            elif kind == "answer":
                outputs = self._answer(payload, when, events)
            elif kind == "hang_up":
                outputs = self._hang_up(payload, when, events)
            else:
                outputs = self._happenings[kind](self, payload, when, events)
        else:
            self.clock = max(self.clock, engine_at)  # type: ignore[type-var]
            outputs = self.engine.advance(engine_at)  # type: ignore[arg-type]
        if outputs:
            self._carry_out(outputs, events)

    # --- the simulated world ---------------------------------------------------

    def _at(self, when: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heappush(self._agenda, (when, self._seq, kind, payload))

    def _push_arrival(self) -> None:
        """The next call of the traffic onto the agenda, as the one before it arrives: its entry is
        the one it would have had among all arrivals pushed first (seq n + 1), so the order is the
        same while the heap stays small."""
        n = self._next_arrival
        if n < len(self.arrivals):
            self._next_arrival = n + 1
            arrival = self.arrivals[n]
            kind = "arrive" if arrival.queue is not None else "ivr_arrive"
            heappush(self._agenda, (self.start + arrival.offset_s, n + 1, kind,
                                    (f"sim{self.seed}-{n:07d}", arrival)))

    def _arrive(self, payload: Any, now: float, events: list[Event]) -> list[Any]:
        call_id, arrival = payload
        self._push_arrival()
        self._live.add(call_id)
        # by position: new_event(ts, type, call_id, queue, agent, data), CallQueued(call_id, queue, caller_id)
        events.append(new_event(now, "call.arrived", call_id, arrival.queue, None,
                                {"caller_id": arrival.caller_id, "dnis": arrival.queue}))
        return self._enqueue(CallQueued(call_id, arrival.queue, arrival.caller_id), now)

    def _ivr_arrive(self, payload: Any, now: float, events: list[Event]) -> list[Any]:
        call_id, arrival = payload
        self._push_arrival()
        self._live.add(call_id)
        flow = self.model.ivr.flow  # type: ignore[union-attr]
        events.append(Event(now, "call.arrived", call_id=call_id,
                            data={"caller_id": arrival.caller_id, "dnis": flow}))
        session = FlowSession(self.flowset, flow, call_id=call_id, caller_id=arrival.caller_id,  # type: ignore[arg-type]
                              dnis=flow, now=_aware(now), rng_seed=self.seed)
        self._sessions[call_id] = session
        return self._ivr_continue(session, session.start(), now, events)

    def _ivr_input(self, payload: Any, now: float, events: list[Event]) -> list[Any]:
        call_id, caller_input = payload
        session = self._sessions[call_id]
        return self._ivr_continue(session, session.handle(caller_input, _aware(now)), now, events)

    def _give_up(self, call_id: str, now: float, events: list[Event]) -> list[Any]:
        if call_id in self._live and call_id not in self._talking and call_id not in self._callbacks:
            self._live.discard(call_id)
            self._ringing.pop(call_id, None)
            return self._input(CallerHungUp(call_id), now)
        return []

    def _answer(self, payload: Any, now: float, events: list[Event]) -> list[Any]:
        call_id, agent = payload
        if self._ringing.get(call_id) != agent:
            return []                                      # offer cancelled meanwhile
        del self._ringing[call_id]
        call = self.engine.calls[call_id]
        if call.callback is not None and not call.callback.customer_up:
            self._dial_customer(call_id, now)              # agent first: now ring the customer
        else:
            self._start_talk(call_id, call.queue, now)
        return self._input(AgentAnswered(call_id, agent), now)

    def _accept_callback(self, call_id: str, now: float, events: list[Event]) -> list[Any]:
        calls = self.engine.calls
        if (call_id not in self._live or call_id in self._callbacks or call_id not in calls
                or calls[call_id].slot is None or calls[call_id].callback is not None):
            return []                                      # answered, gone or already a call-back
        self._callbacks.add(call_id)
        return self._input(CallbackAccepted(call_id, calls[call_id].caller_id), now)

    def _customer(self, payload: Any, now: float, events: list[Event]) -> list[Any]:
        call_id, answered = payload
        call = self.engine.calls.get(call_id)
        if call is None or call.agent is None:
            return []
        if not answered:
            return self._input(CallbackFailed(call_id, "no_answer"), now)
        outputs = self._input(CallbackAnswered(call_id), now)
        if call.connected_at is not None:                  # agent already on: talk starts
            self._start_talk(call_id, call.queue, now)
        elif self._answer_rng.random() >= self.model.no_answer_rate:   # customer first: ring the agent
            self._at(now + self.model.answer_delay_s, "answer", (call_id, call.agent))
        return outputs

    def _hang_up(self, call_id: str, now: float, events: list[Event]) -> list[Any]:
        self._talking.discard(call_id)
        self._live.discard(call_id)
        call = self.engine.calls[call_id]
        outputs = self._input(CallFinished(call_id), now)
        ivr = self.model.ivr
        if ivr and ivr.survey_flow and self._survey_rng.random() < ivr.survey_rate:
            session = FlowSession(self.flowset, ivr.survey_flow, call_id=call_id,  # type: ignore[arg-type]
                                  caller_id=call.caller_id, dnis=ivr.survey_flow, now=_aware(now),
                                  rng_seed=self.seed, context={"queue": call.queue, "agent": call.agent})
            self._sessions[call_id] = session
            outputs += self._ivr_continue(session, session.start(), now, events)
        return outputs

    def _login(self, agent: str, now: float, events: list[Event]) -> list[Any]:
        return self._input(AgentLogin(agent), now)

    def _logout(self, agent: str, now: float, events: list[Event]) -> list[Any]:
        return self._input(AgentLogout(agent), now)

    def _pause(self, agent: str, now: float, events: list[Event]) -> list[Any]:
        if self.engine.agents[agent].state is AgentState.LOGGED_OUT:
            return []                                      # a supervisor logged them out before the break
        return self._input(AgentPause(agent, "break"), now)

    def _resume(self, agent: str, now: float, events: list[Event]) -> list[Any]:
        return self._input(AgentResume(agent), now)

    def _rona_over(self, agent: str, now: float, events: list[Event]) -> list[Any]:
        if self.engine.agents[agent].reason == "rona":     # still paused for RONA, not on a break since
            return self._input(AgentResume(agent), now)
        return []

    # what happens for each kind of agenda entry: (self, payload, now, events) -> engine outputs
    _happenings: dict[str, Callable[..., list[Any]]] = {
        "arrive": _arrive, "ivr_arrive": _ivr_arrive, "ivr_input": _ivr_input, "give_up": _give_up,
        "answer": _answer, "accept_callback": _accept_callback, "customer": _customer, "hang_up": _hang_up,
        "login": _login, "logout": _logout, "pause": _pause, "resume": _resume, "rona_over": _rona_over,
    }

    def _start_talk(self, call_id: str, queue: str, now: float) -> None:
        self._talking.add(call_id)
        talk = traffic.sample(traffic.for_queue(self.model.handle_time, queue), self._handle_rng)
        self._at(now + talk, "hang_up", call_id)

    def _dial_customer(self, call_id: str, now: float) -> None:
        """The customer leg of a call-back: answered after a few rings, or not (after 30 s)."""
        answered = self._callback_rng.random() < self.model.callback_answer_rate
        self._at(now + (self.model.answer_delay_s + 5.0 if answered else 30.0), "customer", (call_id, answered))

    def _enqueue(self, queued: CallQueued, now: float) -> list[Any]:
        """A caller joins a queue and will wait as long as their patience lasts."""
        self._wait_patiently(queued.call_id, queued.queue, now)
        return self._input(queued, now)

    def _input(self, message: Any, now: float) -> list[Any]:
        """Feed one input of the simulated world to the engine.  A refusal is our bug, not the
        run's end: logged with its context, counted, and the run goes on."""
        try:
            return self.engine.handle(message, now)
        except InvalidInput as exc:
            self.refused += 1
            log.error("simulator input refused", input=repr(message), reason=str(exc),
                      at=_aware(now).isoformat(), seed=self.seed)
            return []

    def _wait_patiently(self, call_id: str, queue: str, now: float) -> None:
        patience = traffic.sample(traffic.for_queue(self.model.patience, queue), self._patience_rng)
        self._seq += 1
        heappush(self._patience, (now + patience, self._seq, "give_up", call_id))

    def _ivr_callback(self, session: FlowSession, offer: IvrCallback, now: float) -> list[Any]:
        """The flow ended in a `callback` node: hand it to the engine as the Asterisk adapter does.

        Kept: the caller hangs up and the call-back waits at its place (dialled later, the customer
        answering with `callback_answer_rate`).  Refused (bad number, duplicate, slot outside the
        hours ...) or an agent was free: the engine keeps it as a waiting call and the caller
        waits on with their patience, as on Asterisk after the 'callback-refused' prompt."""
        call_id = session.call_id
        accepted = CallbackAccepted(call_id, offer.number, queue=offer.queue,
                                    caller_id=session.variables["caller_id"],
                                    at=offer.at.timestamp() if offer.at else None)
        try:
            outputs = self.engine.handle(accepted, now)
        except InvalidInput:
            self._live.discard(call_id)                 # the adapter logs it and the call ends
            return []
        # The caller is still in the IVR at this instant: an OfferCallback the queue's EWT rule
        # raised while the call joined is not heard (the adapter only offers to callers on hold).
        outputs = [o for o in outputs if not (isinstance(o, OfferCallback) and o.call_id == call_id)]
        call = self.engine.calls.get(call_id)
        if call is None:
            if not any(isinstance(o, DivertCall) and o.call_id == call_id for o in outputs):
                self._live.discard(call_id)
        elif call.callback is not None:
            self._callbacks.add(call_id)                # kept: the caller hangs up
        elif call.connected_at is None:
            self._wait_patiently(call_id, call.queue, now)
        return outputs

    def _ivr_continue(self, session: FlowSession, outputs: list[Any], now: float,
                      events: list[Event]) -> list[Any]:
        """Record what the flow did, then queue the call, end it, or schedule the caller's answer."""
        call_id = session.call_id
        events.extend(o for o in outputs if isinstance(o, Event))
        if session.finished:
            del self._sessions[call_id]
            offer = next((o for o in outputs if isinstance(o, IvrCallback)), None)
            if offer is not None and call_id in self._live and call_id not in self.engine.calls:
                return self._ivr_callback(session, offer, now)
            enqueue = next((o for o in outputs if isinstance(o, Enqueue)), None)
            if enqueue is not None:
                return self._enqueue(CallQueued(call_id, enqueue.queue, caller_id=session.variables["caller_id"],
                                                priority=enqueue.priority, skills=dict(enqueue.skills),
                                                data=dict(enqueue.data)), now)
            self._live.discard(call_id)                 # ended in the IVR: self-service, voicemail, hang-up
            return []
        answer = self._callers.respond(session, outputs)  # type: ignore[union-attr]
        if answer is not None:
            delay, caller_input = answer
            self._at(now + delay, "ivr_input", (call_id, caller_input))
        return []

    def _carry_out(self, outputs: list[Any], events: list[Event]) -> None:
        for out in outputs:
            if isinstance(out, Event):
                self._record(out, events)
            elif isinstance(out, OfferCall):
                self._ring(out)
            elif isinstance(out, CancelOffer):
                if self._ringing.get(out.call_id) == out.agent:
                    del self._ringing[out.call_id]
            elif isinstance(out, DivertCall):
                self._live.discard(out.call_id)
            elif isinstance(out, OfferCallback):
                if self._callback_rng.random() < self.model.callback_acceptance:
                    self._at(self.clock + 5.0, "accept_callback", out.call_id)
            elif isinstance(out, DialCallback):
                self._ringing[out.call_id] = out.agent
                if out.agent_first:
                    if self._answer_rng.random() >= self.model.no_answer_rate:
                        delay = min(self.model.answer_delay_s, out.ring_timeout_s * 0.999)
                        self._at(self.clock + delay, "answer", (out.call_id, out.agent))
                else:
                    self._dial_customer(out.call_id, self.clock)

    def _record(self, event: Event, events: list[Event]) -> None:
        events.append(event)
        if event.type == "agent.state" and event.data["reason"] == "rona":
            self._at(self.clock + self.model.rona_recovery_s, "rona_over", event.agent)

    def _ring(self, offer: OfferCall) -> None:
        """The agent's phone rings: answered after the ring delay, or not (RONA: the ring timeout)."""
        self._ringing[offer.call_id] = offer.agent
        if self._answer_rng.random() >= self.model.no_answer_rate:
            delay = min(self.model.answer_delay_s, offer.ring_timeout_s * 0.999)
            self._at(self.clock + delay, "answer", (offer.call_id, offer.agent))

    def _plan_shifts(self) -> None:
        """Log-ins, breaks and log-outs of every day of the run (see the module's head)."""
        end = self.start + self.hours * 3600.0
        spans: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        breaks: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        if not self.model.shifts:
            for agent in self.centre.agents:
                spans[agent].append((self.start, end))
        day = datetime.fromtimestamp(self.start, self.zone).date() - timedelta(days=1)   # a night shift
        last = datetime.fromtimestamp(end, self.zone).date()
        while self.model.shifts and day <= last:
            for shift in self.model.shifts:
                begin = self._instant(day, shift.start)
                finish = self._instant(day + timedelta(days=shift.end <= shift.start), shift.end)
                on, off = max(begin, self.start), min(finish, end)
                if on >= off:
                    continue
                for agent in shift.agents:
                    spans[agent].append((on, off))
                for pause in shift.breaks:
                    at = self._instant(day + timedelta(days=pause.at < shift.start), pause.at)
                    if at < off and at + pause.minutes * 60.0 > on:
                        for agent in shift.agents:
                            breaks[agent].append((max(at, on), at + pause.minutes * 60.0))
            day += timedelta(days=1)
        for agent, agent_spans in spans.items():
            agent_breaks = _merged(breaks[agent])
            for on, off in _merged(agent_spans):
                self._at(on, "login", agent)
                for pause, resume in agent_breaks:
                    if on <= pause < off:
                        self._at(pause, "pause", agent)
                        if resume < off:
                            self._at(resume, "resume", agent)
                self._at(off, "logout", agent)

    def _instant(self, day: date, at: time) -> float:
        """Epoch seconds of a time of day on a local date of the centre's zone."""
        return datetime.combine(day, at, tzinfo=self.zone).timestamp()


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching spans joined, in time order."""
    out: list[tuple[float, float]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((begin, end))
    return out


def _check_ivr_traffic(centre: Centre, model: Simulation, flowset: FlowSet | None) -> None:
    """The IVR traffic model must name flows and nodes that exist."""
    ivr = model.ivr
    if flowset is None:
        raise ValueError(f"{centre.source}: simulation.ivr needs the centre's flows")
    for flow in filter(None, (ivr.flow, ivr.survey_flow)):  # type: ignore[union-attr]
        if flow not in flowset.flows:
            raise ValueError(f"{centre.source}: simulation.ivr: no flow {flow!r} "
                             f"(flows: {', '.join(sorted(flowset.flows))})")
    for section, keys in (("choices", ivr.choices), ("digits", ivr.digits)):  # type: ignore[union-attr]
        for where in keys:
            flow, _, node = where.partition("/")
            if flow not in flowset.flows or node not in flowset.flows[flow].nodes:
                raise ValueError(f"{centre.source}: simulation.ivr.{section}: no node {where!r} in the flows")


def _aware(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


def _in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    """A configured moment: without an offset it is a local time of the centre's zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)
