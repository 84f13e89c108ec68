"""The live board: one server-side view of the centre, shared by every viewer.

Theory of operation
-------------------
The board is pure state, no I/O.  It reads the engine directly for what the
engine knows (waiting calls and their places, agents' states, EWT) and folds
the domain events into what only the event stream says ("today" counters,
what a caller keyed in the IVR, the AHT of each agent).

"Today" follows the centre's local day.  Its counters start from PostgreSQL
(`load_today`, the KPI implementation of router/store/kpi.py over the day so
far), so a restart does not zero them, and are re-read every few seconds; the
events seen after the figures were computed are added on top, so the numbers
move between two reads.  The intraday series (per interval offered and service
level, today and yesterday) come from the same reads.

`view(now)` returns sections of keyed records (queues, agents, calls,
callbacks, offers, alarms, intraday, meta).  `diff` turns two views into a
delta (records set, keys deleted) that the hub pushes; `visible` cuts a view
or a delta down to what one principal may see.  Wait and time-in-state are not
in the records (they would change every tick): records carry the moment a wait
or a state began and the browser counts from there with the board's clock.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from router.config.model import Centre
from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.events import Event
from router.web.auth import Principal

SECTIONS = ("meta", "queues", "agents", "calls", "callbacks", "offers", "alarms", "intraday")
JOIN_KEYS = frozenset({"caller_id", "priority", "position", "ewt_s", "sl_threshold_s", "callback", "skills",
                       "recovered"})
View = dict[str, dict[str, Any]]


class Board:
    def __init__(self, centre: Centre, engine: Engine, *, mode: str, speed: float = 1.0,
                 link_up: Callable[[], bool] = lambda: True, spooled: Callable[[], int] = lambda: 0,
                 role: Callable[[], str] = lambda: "leader") -> None:
        self.centre, self.engine, self.mode, self.speed = centre, engine, mode, speed
        self.role = role                                # leader | standby (router.ha)
        self.settings = centre.web
        self.zone = ZoneInfo(centre.timezone)
        self.day: str | None = None
        self.link_up, self.spooled = link_up, spooled
        self.kpi_as_of: float | None = None
        self._base: dict[str, Any] = {}                 # today's figures from PostgreSQL
        self._intraday: dict[str, Any] = {}
        self._delta_queues: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._delta_agents: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._calls: dict[str, dict[str, Any]] = {}    # call id -> caller, entry queue, IVR answers
        self.first_unpushed: float | None = None       # wall time of the oldest event not yet pushed

    # --- input ------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Fold one domain event in (called for every event, in order)."""
        if self.first_unpushed is None:
            self.first_unpushed = time.time()
        self._roll_day(event.ts)
        kind, data = event.type, event.data
        if kind == "queue.joined":
            if event.call_id not in self._calls:
                self._calls[event.call_id] = {
                    "caller": data.get("caller_id", ""), "entry": event.queue, "callback": bool(data.get("callback")),
                    "ivr": {k: v for k, v in data.items() if k not in JOIN_KEYS}}
                self._count(event, self._delta_queues[event.queue], "offered")
        elif kind == "call.connected":
            entry = self._calls.get(event.call_id, {}).get("entry", event.queue)
            self._count(event, self._delta_queues[entry], "answered")
            self._count(event, self._delta_agents[event.agent], "answered")
        elif kind == "call.abandoned":
            entry = self._calls.get(event.call_id, {}).get("entry", event.queue)
            if data.get("wait_s", 0) > self.centre.short_abandon_s:
                self._count(event, self._delta_queues[entry], "abandoned")
        elif kind == "callback.accepted" and event.call_id in self._calls:
            self._calls[event.call_id]["callback"] = True
        elif kind == "agent.state" and data.get("previous") in ("on_call", "wrap_up"):
            self._handled(event, data)
        elif kind == "call.ended":
            self._calls.pop(event.call_id, None)

    def _handled(self, event: Event, data: dict[str, Any]) -> None:
        """Handle time (talk + wrap-up) counts for AHT once the call's wrap-up is over, so a call
        in progress does not lower an agent's AHT."""
        counters = self._delta_agents[event.agent]
        counters["open_handle_s"] += data.get("previous_s") or 0.0
        if data["previous"] == "wrap_up" or data.get("state") != "wrap_up":   # done (or no wrap-up)
            if data["previous"] == "wrap_up":
                self._count(event, counters, "handled")
                self._count(event, counters, "handle_s", counters["open_handle_s"])
            counters["open_handle_s"] = 0.0

    def _count(self, event: Event, counters: dict[str, float], key: str, amount: float = 1.0) -> None:
        if self.kpi_as_of is None or event.ts > self.kpi_as_of:
            counters[key] += amount

    def call_info(self, call_id: str | None) -> dict[str, Any]:
        """What the events said of a call in progress: caller, entry queue, IVR answers, call-back."""
        return self._calls.get(call_id or "", {})

    def load_today(self, today: dict[str, Any], yesterday: dict[str, Any] | None, as_of: float) -> None:
        """Today's figures as PostgreSQL has them up to `as_of` (and yesterday's for the chart)."""
        self._roll_day(as_of)
        self._base, self.kpi_as_of = today, as_of
        self._delta_queues.clear()
        self._delta_agents.clear()
        self._intraday = {queue: {"today": _series(today, queue), "yesterday": _series(yesterday, queue)}
                          for queue in self.centre.queues}

    def local_day(self, moment: float) -> tuple[datetime, datetime]:
        """Start and end of the centre's local day around `moment`."""
        local = datetime.fromtimestamp(moment, self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, (start + timedelta(days=1, hours=2)).replace(hour=0)

    def _roll_day(self, moment: float) -> None:
        day = datetime.fromtimestamp(moment, self.zone).date().isoformat()
        if day != self.day:
            if self.day is not None:
                self._base, self.kpi_as_of = {}, moment
                self._delta_queues.clear()
                self._delta_agents.clear()
            self.day = day

    # --- output -----------------------------------------------------------------------

    def view(self, now: float) -> View:
        """Every section of the board at `now` (the PBX's clock)."""
        self._roll_day(now)
        engine = self.engine
        queues, calls, callbacks = {}, {}, {}
        staff: dict[str, dict[str, int]] = {q: defaultdict(int) for q in self.centre.queues}
        for agent in engine.agents.values():
            for queue in agent.queues:
                staff[queue][agent.state.value] += 1
        base_queues = self._base.get("queues", {})
        for queue_id, queue in self.centre.queues.items():
            waiting = engine.waiting(queue_id)
            for place, call in enumerate(waiting, 1):
                record = {"call_id": call.call_id, "queue": queue_id, "caller": call.caller_id, "place": place,
                          "joined_at": call.joined_at, "priority": call.priority}
                if call.callback is None:
                    calls[call.call_id] = {**record, "state": "waiting"}
                else:
                    callbacks[call.call_id] = {**record, "number": call.callback.number, "state": "waiting",
                                               "attempts": call.callback.attempts, "due_at": None}
            base, delta = base_queues.get(queue_id, {}), self._delta_queues.get(queue_id, {})
            offered = (base.get("offered") or 0) + delta.get("offered", 0)
            sl = base.get("service_level")
            queues[queue_id] = {
                "id": queue_id, "name": queue.name, "waiting": sum(1 for c in waiting if c.callback is None),
                "oldest_joined_at": min((c.joined_at for c in waiting if c.callback is None), default=None),
                "ewt_s": _round(engine.ewt(queue_id)), "agents": dict(staff[queue_id]),
                "offered": int(offered), "answered": int((base.get("answered") or 0) + delta.get("answered", 0)),
                "abandoned": int((base.get("abandoned") or 0) - (base.get("short_abandoned") or 0)
                                 + delta.get("abandoned", 0)),
                "service_level": sl, "sl_target": queue.sl_target, "sl_threshold_s": queue.sl_threshold_s,
                "off_target": sl is not None and sl < queue.sl_target,
                "callbacks_pending": 0, "quality_score": base.get("quality_score"),      # QA of today's calls
                "evaluations": int(base.get("evaluations") or 0)}
        for call in engine.calls.values():
            if call.agent is not None and call.connected_at is None and call.callback is None:
                calls[call.call_id] = {"call_id": call.call_id, "queue": call.queue, "caller": call.caller_id,
                                       "place": None, "joined_at": call.joined_at, "priority": call.priority,
                                       "state": "ringing", "agent": call.agent}
            if call.callback is not None and call.connected_at is None:
                queues[call.queue]["callbacks_pending"] += 1
                if call.call_id not in callbacks:
                    callbacks[call.call_id] = {
                        "call_id": call.call_id, "queue": call.queue, "caller": call.caller_id, "place": None,
                        "joined_at": call.joined_at, "priority": call.priority, "number": call.callback.number,
                        "attempts": call.callback.attempts, "due_at": call.callback.due_at,
                        "state": "dialing" if call.agent is not None else "scheduled"}
        link_up, spooled = self.link_up(), self.spooled()
        return {
            "meta": {"board": {"mode": self.mode, "day": self.day, "timezone": self.centre.timezone,
                               "speed": self.speed, "kpi_as_of": self.kpi_as_of, "link_up": link_up, "role": self.role(),
                               "spooled": spooled, "interval_minutes": self.settings.interval_minutes}},
            "queues": queues, "agents": self._agents(), "calls": calls, "callbacks": callbacks,
            "offers": self._offers(), "alarms": self._alarms(now, queues, link_up, spooled),
            "intraday": self._intraday}

    def _agents(self) -> dict[str, Any]:
        base_agents = self._base.get("agents", {})
        agents = {}
        for agent_id, agent in self.engine.agents.items():
            base, delta = base_agents.get(agent_id, {}), self._delta_agents.get(agent_id, {})
            answered = (base.get("answered") or 0) + delta.get("answered", 0)
            handled = (base.get("answered") or 0) + delta.get("handled", 0)
            handle = (base.get("aht_s") or 0.0) * (base.get("answered") or 0) + delta.get("handle_s", 0.0)
            call = self.engine.calls.get(agent.call_id) if agent.call_id else None
            agents[agent_id] = {
                "id": agent_id, "name": agent.spec.name, "team": agent.spec.team, "state": agent.state.value,
                "since": agent.since, "reason": agent.reason, "call_id": agent.call_id,
                "queue": call.queue if call is not None else None, "queues": sorted(agent.queues),
                "calls_today": int(answered), "aht_today_s": round(handle / handled, 1) if handled else None,
                "quality_today": base.get("quality_score"),
                "pending": agent.deferred[0] if agent.deferred else None}
        return agents

    def _offers(self) -> dict[str, Any]:
        """The screen pop of each agent being offered or talking on a call."""
        offers = {}
        for agent_id, agent in self.engine.agents.items():
            if agent.call_id is None or agent.state is AgentState.WRAP_UP:
                continue
            call = self.engine.calls.get(agent.call_id)
            if call is None:
                continue
            info = self._calls.get(call.call_id, {})
            offers[agent_id] = {
                "agent": agent_id, "call_id": call.call_id, "queue": call.queue,
                "queue_name": self.centre.queues[call.queue].name,
                "caller": call.callback.number if call.callback else (info.get("caller") or call.caller_id),
                "ivr": info.get("ivr", {}), "callback": call.callback is not None or info.get("callback", False),
                "state": agent.state.value, "since": agent.since, "joined_at": call.joined_at}
        return offers

    def _alarms(self, now: float, queues: dict[str, Any], link_up: bool, spooled: int) -> dict[str, Any]:
        settings, alarms = self.settings, {}
        for queue_id, queue in queues.items():
            oldest = queue["oldest_joined_at"]
            if oldest is not None and now - oldest > settings.caller_wait_alarm_s:
                alarms[f"wait:{queue_id}"] = {"id": f"wait:{queue_id}", "kind": "long_wait", "queue": queue_id,
                                              "since": oldest + settings.caller_wait_alarm_s,
                                              "text": f"{queue['name']}: a caller has waited over "
                                                      f"{settings.caller_wait_alarm_s:g} s"}
            if queue["off_target"]:
                alarms[f"sl:{queue_id}"] = {"id": f"sl:{queue_id}", "kind": "service_level", "queue": queue_id,
                                            "since": None, "text": f"{queue['name']}: service level "
                                            f"{queue['service_level']:.0%} under the {queue['sl_target']:.0%} target"}
        limit_s = settings.agent_pause_alarm_min * 60.0
        for agent_id, agent in self.engine.agents.items():
            if agent.state is AgentState.PAUSED and agent.since is not None and now - agent.since > limit_s:
                alarms[f"pause:{agent_id}"] = {"id": f"pause:{agent_id}", "kind": "long_pause", "agent": agent_id,
                                               "queues": sorted(agent.queues), "since": agent.since + limit_s,
                                               "text": f"{agent.spec.name} paused ({agent.reason}) over "
                                                       f"{settings.agent_pause_alarm_min:g} min"}
        if not link_up:
            alarms["pbx"] = {"id": "pbx", "kind": "ami_down", "since": None,
                             "text": "AMI link to Asterisk is down: calls cannot be routed"}
        if spooled:
            alarms["spool"] = {"id": "spool", "kind": "spooling", "since": None,
                               "text": f"PostgreSQL unreachable: {spooled} events spooled to disk"}
        return alarms


def diff(old: View, new: View) -> dict[str, Any]:
    """The records of `new` that differ from `old` (`set`) and the keys gone (`del`)."""
    changed: dict[str, dict[str, Any]] = {}
    deleted: dict[str, list[str]] = {}
    for section in SECTIONS:
        before, after = old.get(section, {}), new.get(section, {})
        if before is after:
            continue
        records = {key: value for key, value in after.items() if before.get(key) != value}
        gone = [key for key in before if key not in after]
        if records:
            changed[section] = records
        if gone:
            deleted[section] = gone
    return {"set": changed, "del": deleted}


def visible(principal: Principal, part: dict[str, Any], agent_queues: dict[str, set[str]]) -> dict[str, Any]:
    """`part` (a view, or one of a delta's `set`/`del`) cut down to what `principal` may see."""
    own = principal.agent
    scope = principal.queues
    if own is None and scope is None:
        return part
    serves = agent_queues.get(own, set()) if own is not None else set()

    def keep(section: str, key: str, record: Any) -> bool:
        if section in ("meta",):
            return True
        if own is not None:
            if section in ("agents", "offers"):
                return key == own
            return section in ("queues", "intraday") and key in serves
        if section in ("queues", "intraday"):
            return key in scope
        if section in ("calls", "callbacks"):
            return record is None or record.get("queue") in scope
        if section in ("agents", "offers"):
            return bool(agent_queues.get(key, set()) & scope)
        if section == "alarms":
            return record is None or record.get("queue") in scope or bool(set(record.get("queues", ())) & scope) \
                or ("queue" not in record and "queues" not in record)
        return False

    out: dict[str, Any] = {}
    for section, records in part.items():
        if isinstance(records, dict):
            out[section] = {k: v for k, v in records.items() if keep(section, k, v)}
        else:                                   # a `del` list: a key unknown to the principal is harmless
            out[section] = [k for k in records if keep(section, k, None)]
    return out


def _series(kpis: dict[str, Any] | None, queue: str) -> list[dict[str, Any]]:
    if not kpis:
        return []
    return [{"start": interval["start"], "offered": interval["queues"].get(queue, {}).get("offered", 0),
             "service_level": interval["queues"].get(queue, {}).get("service_level")}
            for interval in kpis.get("intervals", [])]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
