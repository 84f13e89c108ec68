"""Discrete-event simulation of a contact centre around the real engine.

The `Simulator` is the simulated PBX and the people on it: callers arrive by
the traffic model, wait with a limited patience, agents work shifts with breaks,
answer after a ring delay (or not: RONA), talk for a sampled handle time.  It
turns these happenings into engine inputs and carries out the engine's commands,
on a virtual clock: the next thing to happen is the earlier of the simulator's
own agenda and the engine's next timer.  Nothing here awaits or reads a clock,
so a seed fixes every decision; `run(max_events)` returns the domain events of a
slice so that an async driver can stream them to the store.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any

from router.config.model import Centre, Simulation
from router.engine.engine import Engine
from router.engine.messages import (AgentAnswered, AgentLogin, AgentLogout, AgentPause, AgentResume,
                                    CallerHungUp, CallFinished, CallQueued, CancelOffer, DivertCall,
                                    OfferCall)
from router.events import Event
from router.sim import traffic


@dataclass(frozen=True, slots=True)
class SimStats:
    calls: int
    agents: int
    simulated_s: float


class Simulator:
    def __init__(self, centre: Centre, *, hours: float = 8.0, seed: int = 0,
                 model: Simulation | None = None) -> None:
        model = model or centre.simulation
        if model is None:
            raise ValueError(f"{centre.source}: no `simulation` section to simulate")
        self.centre, self.model, self.hours = centre, model, hours
        self.engine = Engine(centre, seed=seed)
        self.start = _utc(model.start).timestamp()
        self.clock = self.start
        self._handle_rng = random.Random(f"handle:{seed}")
        self._patience_rng = random.Random(f"patience:{seed}")
        self._answer_rng = random.Random(f"answer:{seed}")
        self._agenda: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._ringing: dict[str, str] = {}        # call -> agent being rung
        self._live: set[str] = set()              # calls not yet ended
        self._talking: set[str] = set()           # calls connected to an agent
        self.arrivals = traffic.arrivals(model, hours, seed)
        for n, arrival in enumerate(self.arrivals):
            self._at(self.start + arrival.offset_s, "arrive", (f"sim{seed}-{n:07d}", arrival))
        self._plan_shifts()

    @property
    def done(self) -> bool:
        return not self._agenda and self.engine.next_deadline() is None

    @property
    def stats(self) -> SimStats:
        return SimStats(len(self.arrivals), len(self.centre.agents), self.clock - self.start)

    def run(self, max_events: int = 10_000) -> list[Event]:
        """Advance the virtual clock until about `max_events` events happened (or the end)."""
        events: list[Event] = []
        while len(events) < max_events and not self.done:
            engine_at = self.engine.next_deadline()
            if self._agenda and (engine_at is None or self._agenda[0][0] < engine_at):
                when, _, kind, payload = heapq.heappop(self._agenda)
                self.clock = when
                outputs = self._happen(kind, payload, when, events)
            else:
                self.clock = max(self.clock, engine_at)  # type: ignore[type-var]
                outputs = self.engine.advance(engine_at)  # type: ignore[arg-type]
            self._carry_out(outputs, events)
        return events

    # --- the simulated world ---------------------------------------------------

    def _at(self, when: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._agenda, (when, self._seq, kind, payload))

    def _happen(self, kind: str, payload: Any, now: float, events: list[Event]) -> list[Any]:
        engine = self.engine
        if kind == "arrive":
            call_id, arrival = payload
            self._live.add(call_id)
            events.append(Event(now, "call.arrived", call_id=call_id, queue=arrival.queue,
                                data={"caller_id": arrival.caller_id, "dnis": arrival.queue}))
            patience = traffic.sample(traffic.for_queue(self.model.patience, arrival.queue), self._patience_rng)
            self._at(now + patience, "give_up", call_id)
            return engine.handle(CallQueued(call_id, arrival.queue, caller_id=arrival.caller_id), now)
        if kind == "give_up":
            if payload in self._live and payload not in self._talking:
                self._live.discard(payload)
                self._ringing.pop(payload, None)
                return engine.handle(CallerHungUp(payload), now)
            return []
        if kind == "answer":
            call_id, agent = payload
            if self._ringing.get(call_id) != agent:
                return []                                  # offer cancelled meanwhile
            del self._ringing[call_id]
            self._talking.add(call_id)
            queue = engine.calls[call_id].queue
            talk = traffic.sample(traffic.for_queue(self.model.handle_time, queue), self._handle_rng)
            self._at(now + talk, "hang_up", call_id)
            return engine.handle(AgentAnswered(call_id, agent), now)
        if kind == "hang_up":
            self._talking.discard(payload)
            self._live.discard(payload)
            return engine.handle(CallFinished(payload), now)
        if kind == "login":
            return engine.handle(AgentLogin(payload), now)
        if kind == "logout":
            return engine.handle(AgentLogout(payload), now)
        if kind == "pause":
            return engine.handle(AgentPause(payload, "break"), now)
        if kind == "resume":
            return engine.handle(AgentResume(payload), now)
        if kind == "rona_over":
            if engine.agents[payload].reason == "rona":      # still paused for RONA, not on a break since
                return engine.handle(AgentResume(payload), now)
            return []
        raise AssertionError(kind)

    def _carry_out(self, outputs: list[Any], events: list[Event]) -> None:
        for out in outputs:
            if isinstance(out, Event):
                events.append(out)
                if out.type == "agent.state" and out.data["reason"] == "rona":
                    self._at(self.clock + self.model.rona_recovery_s, "rona_over", out.agent)
            elif isinstance(out, OfferCall):
                self._ringing[out.call_id] = out.agent
                if self._answer_rng.random() >= self.model.no_answer_rate:
                    delay = min(self.model.answer_delay_s, out.ring_timeout_s * 0.999)
                    self._at(self.clock + delay, "answer", (out.call_id, out.agent))
            elif isinstance(out, CancelOffer):
                if self._ringing.get(out.call_id) == out.agent:
                    del self._ringing[out.call_id]
            elif isinstance(out, DivertCall):
                self._live.discard(out.call_id)

    def _plan_shifts(self) -> None:
        day = _utc(self.model.start)
        end = self.start + self.hours * 3600.0
        if not self.model.shifts:
            for agent in self.centre.agents:
                self._at(self.start, "login", agent)
                self._at(end, "logout", agent)
            return
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        for shift in self.model.shifts:
            begin, finish = _at_time(midnight, shift.start), _at_time(midnight, shift.end)
            if finish <= begin:
                finish += 86400.0                          # a night shift ends the next day
            if begin >= end:
                continue                                   # starts after the simulated period
            for agent in shift.agents:
                self._at(max(begin, self.start), "login", agent)
                self._at(min(finish, end), "logout", agent)
                for pause in shift.breaks:
                    at = _at_time(midnight, pause.at)
                    if at < begin:
                        at += 86400.0
                    if at >= min(finish, end):
                        continue
                    self._at(at, "pause", agent)
                    self._at(at + pause.minutes * 60.0, "resume", agent)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _at_time(midnight: datetime, at: time) -> float:
    return (midnight + timedelta(hours=at.hour, minutes=at.minute, seconds=at.second)).timestamp()
