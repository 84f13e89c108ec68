"""Supervisor and agent actions: one manager method per verb (wazo-agentd style).

Theory of operation
-------------------
A web handler parses and authorises; `Operations` checks the request against
the engine's state, hands the engine one input through the PBX (`Pbx.submit`,
the same path as a feature code or a simulated happening) and records an
``admin.action`` event naming who did it (token name and fingerprint, never
the token), what, on what, and how it ended.  Refusals carry a stable error id
and an HTTP status; they change nothing (the engine validates before it
mutates) and are recorded too.

The PBX is either the Asterisk adapter or the simulated PBX of the demo; both
implement `Pbx`.  Monitoring needs a real Asterisk: the simulated PBX refuses
it with ``monitor_unavailable``.  A recording's pause and resume (a supervisor,
or the agent on the call) go to `Pbx.recording`, which mutes it on Asterisk and
records ``recording.paused``/``resumed``; a call that is not being recorded (or
not paused) is ``not_recording`` (409).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from router.engine.agents import AgentState
from router.engine.engine import Engine
from router.engine.messages import (AgentLogin, AgentLogout, AgentPause, AgentResume, CancelCallback,
                                    InvalidInput, MoveCall, SetCallPriority, WrapUpDone)
from router.events import Event
from router.web.auth import Principal

log = structlog.get_logger("router.web.operations")

MONITOR_FLAGS = {"listen": "qEu", "whisper": "qwEu", "barge": "qBEu"}
# A supervisor's phone as a dial string: technology/resource, no separators AMI or ChanSpy would read.
ENDPOINT = re.compile(r"^(PJSIP|SIP|IAX2|Local|DAHDI)/[A-Za-z0-9_.+@-]{1,64}$")
PAUSE_REASON = re.compile(r"^[A-Za-z0-9 _.-]{1,32}$")
PRIORITY_RANGE = (-100, 100)


class Pbx(Protocol):
    """What the web layer needs of the PBX side (the Asterisk adapter or the simulated PBX)."""
    engine: Engine

    def now(self) -> float: ...
    def submit(self, message: Any) -> None: ...        # raises InvalidInput, changing nothing
    def record(self, event: Event) -> None: ...
    async def monitor(self, agent: str, supervisor: str, flags: str) -> dict[str, Any]: ...
    async def recording(self, call_id: str, paused: bool, reason: str, by: str) -> dict[str, Any]: ...
    async def reload_flows(self) -> dict[str, Any]: ...


class ActionError(Exception):
    """A refused action: HTTP status, stable error id, message for people."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


class MonitorUnavailable(Exception):
    """The PBX cannot monitor (the demo's simulated PBX, or no channel to spy on)."""


class RecordingUnavailable(Exception):
    """The call is not being recorded (or its recording is not paused that way)."""


@dataclass(frozen=True)
class Target:
    agent: str | None = None
    call_id: str | None = None
    queue: str | None = None


class Operations:
    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx

    @property
    def engine(self) -> Any:
        return self.pbx.engine          # the PBX side may start over with a new one (HA take-over)

    # --- agents ---------------------------------------------------------------------

    def agent_login(self, who: Principal, agent: str) -> dict[str, Any]:
        return self._agent_action(who, "agent.login", agent, AgentLogin(agent))

    def agent_logout(self, who: Principal, agent: str) -> dict[str, Any]:
        return self._agent_action(who, "agent.logout", agent, AgentLogout(agent))

    def agent_pause(self, who: Principal, agent: str, reason: Any) -> dict[str, Any]:
        if not isinstance(reason, str) or not PAUSE_REASON.match(reason):
            raise self.refuse(who, "agent.pause", Target(agent=agent), 422, "invalid_reason",
                               "reason: expected 1 to 32 letters, digits, spaces, '_', '.' or '-'")
        runtime = self._agent(who, "agent.pause", agent)
        if runtime.state is AgentState.LOGGED_OUT:
            raise self.refuse(who, "agent.pause", Target(agent=agent), 409, "agent_logged_out",
                               f"agent {agent!r} is logged out and cannot pause")
        return self._agent_action(who, "agent.pause", agent, AgentPause(agent, reason), reason=reason)

    def agent_resume(self, who: Principal, agent: str) -> dict[str, Any]:
        runtime = self._agent(who, "agent.resume", agent)
        if runtime.state is not AgentState.PAUSED and not (runtime.deferred and runtime.deferred[0] == "pause"):
            raise self.refuse(who, "agent.resume", Target(agent=agent), 409, "agent_not_paused",
                               f"agent {agent!r} is {runtime.state.value}, not paused")
        return self._agent_action(who, "agent.resume", agent, AgentResume(agent))

    def agent_ready(self, who: Principal, agent: str) -> dict[str, Any]:
        """The agent view's Ready button: log in when logged out, else resume."""
        runtime = self._agent(who, "agent.ready", agent)
        message = AgentLogin(agent) if runtime.state is AgentState.LOGGED_OUT else AgentResume(agent)
        return self._agent_action(who, "agent.ready", agent, message)

    def wrap_up_done(self, who: Principal, agent: str) -> dict[str, Any]:
        runtime = self._agent(who, "agent.wrapup", agent)
        if runtime.state is not AgentState.WRAP_UP:
            raise self.refuse(who, "agent.wrapup", Target(agent=agent), 409, "agent_not_in_wrap_up",
                               f"agent {agent!r} is {runtime.state.value}, not in wrap-up")
        return self._agent_action(who, "agent.wrapup", agent, WrapUpDone(agent))

    async def monitor(self, who: Principal, agent: str, supervisor: Any, mode: Any) -> dict[str, Any]:
        target = Target(agent=agent)
        runtime = self._agent(who, "agent.monitor", agent)
        if mode not in MONITOR_FLAGS:
            raise self.refuse(who, "agent.monitor", target, 422, "invalid_mode",
                               "mode: expected listen, whisper or barge")
        if not isinstance(supervisor, str) or not ENDPOINT.match(supervisor):
            raise self.refuse(who, "agent.monitor", target, 422, "invalid_endpoint",
                               "supervisor: expected the supervisor's phone as TECH/resource, e.g. PJSIP/2001")
        if runtime.state is not AgentState.ON_CALL:
            raise self.refuse(who, "agent.monitor", target, 409, "agent_not_on_call",
                               f"agent {agent!r} is {runtime.state.value}: there is no call to monitor")
        try:
            result = await self.pbx.monitor(agent, supervisor, MONITOR_FLAGS[mode])
        except MonitorUnavailable as error:
            raise self.refuse(who, "agent.monitor", target, 409, "monitor_unavailable", str(error)) from None
        self._audit(who, "agent.monitor", target, "ok", {"mode": mode, "supervisor": supervisor, **result})
        return {"ok": True, "agent": agent, "mode": mode, **result}

    # --- calls and call-backs --------------------------------------------------------

    def call_priority(self, who: Principal, call_id: str, priority: Any) -> dict[str, Any]:
        target = self._call_target(who, "call.priority", call_id)
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
                PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]):
            raise self.refuse(who, "call.priority", target, 422, "invalid_priority",
                               f"priority: expected an integer from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}")
        return self._call_action(who, "call.priority", target, SetCallPriority(call_id, priority),
                                 priority=priority)

    def call_move(self, who: Principal, call_id: str, queue: Any) -> dict[str, Any]:
        target = self._call_target(who, "call.move", call_id)
        if not isinstance(queue, str) or queue not in self.engine.centre.queues:
            raise self.refuse(who, "call.move", target, 422, "unknown_queue", f"queue: unknown queue {queue!r}")
        if not who.sees_queue(queue):
            raise self.refuse(who, "call.move", target, 403, "forbidden_queue",
                               f"this token may not act on queue {queue!r}")
        return self._call_action(who, "call.move", target, MoveCall(call_id, queue), to=queue)

    def callback_cancel(self, who: Principal, call_id: str) -> dict[str, Any]:
        target = self._call_target(who, "callback.cancel", call_id)
        if self.engine.calls[call_id].callback is None:
            raise self.refuse(who, "callback.cancel", target, 404, "unknown_callback",
                               f"no pending call-back {call_id!r}")
        return self._call_action(who, "callback.cancel", target, CancelCallback(call_id))

    async def recording_pause(self, who: Principal, call_id: str) -> dict[str, Any]:
        return await self._recording(who, call_id, True)

    async def recording_resume(self, who: Principal, call_id: str) -> dict[str, Any]:
        return await self._recording(who, call_id, False)

    async def _recording(self, who: Principal, call_id: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a connected call's recording: a supervisor who sees its queue, or its agent."""
        action = "call.recording_pause" if paused else "call.recording_resume"
        call = self.engine.calls.get(call_id)
        if call is None or not (who.agent == call.agent if who.agent is not None else who.sees_queue(call.queue)):
            raise self.refuse(who, action, Target(call_id=call_id), 404, "unknown_call", f"unknown call {call_id!r}")
        target = Target(call_id=call_id, queue=call.queue, agent=call.agent)
        reason = "agent" if who.agent is not None else "supervisor"
        try:
            result = await self.pbx.recording(call_id, paused, reason, who.name)
        except RecordingUnavailable as error:
            raise self.refuse(who, action, target, 409, "not_recording", str(error)) from None
        self._audit(who, action, target, "ok", {"reason": reason})
        return {"ok": True, **result}

    async def reload_flows(self, who: Principal) -> dict[str, Any]:
        result = await self.pbx.reload_flows()
        self._audit(who, "flows.reload", Target(), "ok" if result["ok"] else "invalid_flows",
                    {"version": result.get("version"), "errors": len(result.get("errors", []))})
        return result

    # --- the one path every verb takes ----------------------------------------------

    def _agent(self, who: Principal, action: str, agent: str) -> Any:
        runtime = self.engine.agents.get(agent)
        if runtime is None or not (who.agent == agent or (who.agent is None and (
                who.queues is None or runtime.queues & who.queues))):
            raise self.refuse(who, action, Target(agent=agent), 404, "unknown_agent", f"unknown agent {agent!r}")
        return runtime

    def _agent_action(self, who: Principal, action: str, agent: str, message: Any, **detail: Any) -> dict[str, Any]:
        self._agent(who, action, agent)
        self._submit(who, action, Target(agent=agent), message, detail)
        runtime = self.engine.agents[agent]
        return {"ok": True, "agent": agent, "state": runtime.state.value, "reason": runtime.reason,
                "pending": runtime.deferred[0] if runtime.deferred else None}

    def _call_target(self, who: Principal, action: str, call_id: str) -> Target:
        call = self.engine.calls.get(call_id)
        if call is None or not who.sees_queue(call.queue):
            kind = "unknown_callback" if action.startswith("callback") else "unknown_call"
            raise self.refuse(who, action, Target(call_id=call_id), 404, kind, f"unknown call {call_id!r}")
        return Target(call_id=call_id, queue=call.queue)

    def _call_action(self, who: Principal, action: str, target: Target, message: Any, **detail: Any) -> dict[str, Any]:
        self._submit(who, action, target, message, detail)
        call = self.engine.calls.get(target.call_id or "")
        return {"ok": True, "call_id": target.call_id, "queue": call.queue if call else None,
                "priority": call.priority if call else None}

    def _submit(self, who: Principal, action: str, target: Target, message: Any, detail: dict[str, Any]) -> None:
        try:
            self.pbx.submit(message)
        except InvalidInput as error:
            raise self.refuse(who, action, target, 409, "refused", str(error)) from None
        self._audit(who, action, target, "ok", detail)

    def refuse(self, who: Principal, action: str, target: Target, status: int, error: str,
               message: str) -> ActionError:
        """Record a refused action and return the error to raise."""
        self._audit(who, action, target, error, {"message": message})
        return ActionError(status, error, message)

    def _audit(self, who: Principal, action: str, target: Target, result: str, detail: dict[str, Any]) -> None:
        self.pbx.record(Event(self.pbx.now(), "admin.action", call_id=target.call_id, queue=target.queue,
                              agent=target.agent, data={"action": action, "by": who.name, "token": who.fingerprint,
                                                        "role": who.role, "result": result, **detail}))
        log.info("web.action", action=action, by=who.name, result=result, agent=target.agent,
                 call_id=target.call_id)
