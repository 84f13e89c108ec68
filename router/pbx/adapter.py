"""`AsteriskAdapter`: the routing engine and the IVR on a real Asterisk.

Theory of operation
-------------------
The adapter owns time and I/O; it decides nothing.  Three pure state machines
decide: the engine (routing), the flow interpreter (IVR) and the switchboard
(router.pbx.calls: what each call is on the PBX side, what an AMI event or an
engine decision means for it).  The adapter's one loop, `_run`, takes *steps*
from the switchboard: an engine input is fed to the engine, whose outputs go
back to the switchboard (events to the store first); an `Action` is carried out
on Asterisk.  Every input is fed with ``now`` from one clock: epoch seconds
derived from the event loop's monotonic clock (anchored once to ``time.time()``),
so a wall clock step never reorders timers; flows get the same instant.  One task
sleeps until the engine's ``next_deadline()`` (woken early when an input changes
it) and calls ``advance(now)``.

A call's life (see docs/asterisk.md for the dialplan side, router.pbx.dialplan
for the names):

1. ``[router-inbound]`` runs ``AGI(…/ivr)``: `ivr` (the FastAGI route) makes
   the call id, writes ``call.arrived`` and runs the DID's flow with
   `AgiFlowDriver`.  Queue → ``ROUTER_NEXT=hold`` and the engine gets
   `CallQueued`; the caller waits in ``[router-hold]``.
2. An agent free the moment the caller queues: ``EXEC Dial`` over the IVR's
   own AGI (`Switchboard.take_agi_dial`; no hold, no Redirect).  Otherwise,
   later: `Connect` → AMI ``Setvar`` ROUTER_TARGET, ROUTER_RING_TIMEOUT,
   ROUTER_CALL_ID, then ``Redirect`` to ``router-connect,s,1``, which Dials.
3. DialEnd, Hangup, the dialplan's user events and device states go to the
   switchboard, which answers with engine inputs (AgentAnswered, AgentMissed,
   CallerHungUp, CallFinished, pauses of unreachable agents ...).
4. The engine's commands come back as actions: `Redirect` (back to hold, or to
   the call-back offer), `Divert`, `OriginateCallback`, `HangupChannel`.

Holding callers run short AGIs that never take the call's lock, so an offer's
Redirect simply ends them: `announce` (position, estimated wait; a key during
it counts as pressed on hold), `hold-key` (the queue's call-back key runs its
offer flow; its leave key → `CallerLeft`) and `callback-offer` (where the
engine's `OfferCallback` sends the caller).  A call-back taken there or in
the IVR is `CallbackAccepted`, saved by the `CallbackStore` before the caller
hears the confirmation (not saved → `CallbackWithdrawn`, the caller waits on).

AMI actions of one call run in order under the call's lock; the FastAGI route
holds that lock while the IVR runs, so an offer made the moment the call is
queued waits until the AGI has ended, and then `Switchboard.action_begins`
says whether it still applies.  An action that fails (link down longer than
the action timeout) goes back to the switchboard (`action_failed`: an offer
that could not be made is a miss).

Agents log in, out, pause and resume with feature codes (``UserEvent
RouterAgent``), with the async methods `login`, `logout`, `pause`, `resume`,
and from the web API: `submit` applies a supervisor's input (refusing it,
unchanged, when it does not fit), `monitor` originates the supervisor's phone
into ChanSpy on the agent's leg, `reload_flows` reloads the flow set;
`observers` (the web service) see every event before it is stored.

Leadership (router.ha, via router.pbx.service): an adapter starts as a standby
that acts on nothing (``leading`` False; it only keeps device states).  `take_over`
reads Asterisk's live channels and the store and carries out the recovery plan
(router.pbx.recovery), holding back the AMI events that arrive meanwhile;
`stand_down` (fencing: the lease ran out, checked before every action through
``may_act``) stops every engine input and AMI action at once; `reset` leaves a
fresh engine and switchboard for the next take-over.

Recording (docs/recording.md): the switchboard plans it and the dialplan starts
MixMonitor; the adapter stores ``recording.started``, mutes with AMI
``MixMonitorMute`` (a sensitive IVR node — the flow driver waits for the mute
before the node's prompts — or `recording`, the web API's pause and resume)
and, when the call is over, waits for Asterisk to close the capture, finishes
the file (router.recording.files) and stores ``recording.saved``.

Events go to the `EventWriter` without waiting (its queue); when that queue is
full an event is spilled to the writer's disk spool at once, never dropped, so
neither the AMI reader nor the AGI route ever waits for PostgreSQL.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import structlog

from router.config.model import Centre
from router.engine.engine import Engine
from router.engine.messages import (AgentLogin, AgentLogout, AgentPause, AgentResume, CallbackAccepted,
                                    CallbackWithdrawn, CallerLeft, InvalidInput)
from router.events import Event, caller_number
from router.ivr import session as ivr
from router.ivr.registry import FlowRegistry
from router.ivr.session import Enqueue
from router.pbx import dialplan as dp
from router.pbx import recovery
from router.pbx.agi_ivr import AgiFlowDriver
from router.pbx.ami import AmiError, AmiEvent, AmiLink, LinkDown, LinkUp, Resync
from router.pbx.calls import (Action, Connect, Divert, HangupChannel, MuteRecording, NotRecording, OriginateCallback,
                              PbxCall, Phase, RecordingStarted, Redirect, SaveRecording, Step, Switchboard)
from router.pbx.fastagi import AGIError, AGIHangup, AGISession
from router.recording import files
from router.store.callback_store import CallbackStore
from router.store.recovery import Recovered
from router.store.writer import EventWriter, WriterFull
from router.web.operations import MonitorUnavailable, RecordingUnavailable

log = structlog.get_logger("router.pbx.adapter")

CAPTURE_SETTLE_S = 0.3         # a capture whose size stays put this long is closed by Asterisk
CAPTURE_WAIT_S = 15.0          # ... and one that does not appear or settle by then is missing
_CALL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")   # uuid4 text


class AsteriskAdapter:
    """Drives `engine` and the flows of `registry` from Asterisk over `ami` and FastAGI."""

    def __init__(self, centre: Centre, engine: Engine, registry: FlowRegistry, writer: EventWriter | None,
                 ami: AmiLink, *, default_flow: str = "main", flows_by_dnis: Mapping[str, str] | None = None,
                 callback_store: CallbackStore | None = None) -> None:
        self.centre = centre
        self.engine = engine
        self.registry = registry
        self.writer = writer
        self.ami = ami
        self.default_flow = default_flow
        self.flows_by_dnis = dict(flows_by_dnis or {})
        self.board = Switchboard(centre, engine)
        self.callback_store = callback_store
        self.draining = False
        self.events_spilled = 0             # events the writer's full queue sent straight to disk
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer_task: asyncio.Task[None] | None = None
        self._epoch_offset = 0.0
        self._idle = asyncio.Event()
        self.observers: list[Callable[[Event], None]] = []   # the web service's board and metrics
        self._arrivals_stored: set[str] = set()   # calls in the IVR when the last router died (recovery)
        self.leading = True                 # False: a standby or a fenced leader, which acts on nothing
        self.may_act: Callable[[], bool] = lambda: True   # the HA lease, checked before every action
        self._held: list[AmiEvent] | None = None   # AMI events held back while a take-over recovers
        self._mutes: dict[str, asyncio.Task[Any]] = {}   # a call's MixMonitorMute under way

    @property
    def calls(self) -> dict[str, PbxCall]:
        """The callers on Asterisk, by call id."""
        return self.board.calls

    @property
    def route_ms(self) -> list[float]:
        """Queue join (or re-queue) → agent dialled, per offer."""
        return self.board.route_ms

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._epoch_offset = time.time() - loop.time()
        self.ami.subscribe(self._on_ami)
        self._timer_task = asyncio.create_task(self._timers(), name="router.pbx.timers")

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
                while self.board.live():
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            log.warning("adapter.drain_timeout", calls=self.board.live(), timeout_s=timeout_s,
                        phases=sorted(c.phase.value for c in (*self.board.calls.values(), *self.board.legs.values())))
            return False
        return True

    async def close(self) -> None:
        """Stop the timers and finish the AMI actions under way."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.ami.action_timeout_s)
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.wait({self._timer_task}, timeout=self.ami.action_timeout_s)

    # --- leadership: take-over with recovery, and fencing --------------------------------------

    async def take_over(self, stored: Callable[[], Awaitable[Recovered]]) -> recovery.Plan:
        """Become the acting router: rebuild the state from Asterisk's live channels and the
        store (`stored` loads it) and carry out the plan (router.pbx.recovery).  AMI events
        that arrive meanwhile are held back and handled after, in order."""
        self._held = []
        try:
            channels = await self.ami.channels(recovery.VARIABLES)
            plan = recovery.plan(self.centre, channels, await stored(), self.now())
        except BaseException:
            self._held = None
            raise
        self.leading = True
        for event in plan.events:
            self._emit(event)
        self._arrivals_stored = set(plan.in_ivr)
        self._run(plan.agents)
        for restored, record in plan.calls:
            self.board.adopt(record)
            try:
                self._apply(restored)
            except InvalidInput as error:
                self.board.forget(record)
                log.warning("adapter.recovery_refused", call_id=restored.call_id, reason=str(error))
        for channel in plan.hangups:
            self._execute(HangupChannel("", channel))
        self._run(self.board.check_devices())
        held, self._held = self._held, None
        for event in held:
            self._dispatch(event)
        log.info("adapter.took_over", channels=len(channels), **plan.summary())
        return plan

    def _acting(self) -> bool:
        if self.leading and not self.may_act():
            self.stand_down()                # the lease ran out before the loss was reported
        return self.leading

    def stand_down(self) -> None:
        """Fencing: from now on act on nothing (no engine input, no AMI action); `reset` then
        leaves an empty state for the next take-over."""
        if self.leading:
            self.leading = False
            log.warning("adapter.fenced", calls=self.board.live())

    def reset(self) -> None:
        """A fresh engine and switchboard (the old state is stale once another router led)."""
        devices = self.board.device_states
        self.engine = Engine(self.centre)
        self.board = Switchboard(self.centre, self.engine)
        self.board.device_states.update(devices)        # facts about phones stay true
        self._locks.clear()
        self._arrivals_stored = set()
        self._wake.set()

    # --- agents ---------------------------------------------------------------------------

    async def restore_callbacks(self) -> int:
        """Take back the open call-backs of the store (after a restart), in place order."""
        if self.callback_store is None:
            return 0
        changed = await self.callback_store.reconcile()
        restored = await self.callback_store.load_open()
        self._run(restored)
        log.info("adapter.callbacks_restored", count=len(restored), reconciled=changed)
        return len(restored)

    async def login(self, agent: str) -> None:
        self._run([AgentLogin(agent)])

    async def logout(self, agent: str) -> None:
        self._run([AgentLogout(agent)])

    async def pause(self, agent: str, reason: str = "break") -> None:
        self._run([AgentPause(agent, reason)])

    async def resume(self, agent: str) -> None:
        self._run([AgentResume(agent)])

    # --- the web API's side (router.web.operations.Pbx) -------------------------------------

    def submit(self, message: Any) -> None:
        """A supervisor's input: applied now, or InvalidInput raised with nothing changed."""
        if not self.leading:
            raise InvalidInput("this router is not the leader of its group")
        self._apply(message)

    def _apply(self, message: Any) -> None:
        """Feed one input; InvalidInput raised (nothing changed) if the engine refuses it."""
        now = self.now()
        self._run(self._outputs(self.engine.handle(message, now), now))

    async def monitor(self, agent: str, supervisor: str, flags: str) -> dict[str, Any]:
        """Originate the supervisor's phone into ChanSpy on the agent's leg of its current call."""
        view = self.engine.agent_view(agent)
        channel = self.board.agent_channel_of(view.call_id) if view is not None and view.call_id else None
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

    async def recording(self, call_id: str, paused: bool, reason: str, by: str) -> dict[str, Any]:
        """Pause or resume the recording of a call (a supervisor or the agent); RecordingUnavailable
        when it is not being recorded, or not paused that way."""
        try:
            steps = self.board.pause_recording(call_id, paused, reason, by)
        except NotRecording as error:
            raise RecordingUnavailable(str(error)) from None
        self._run(steps)
        await self._settle(call_id)
        return {"call_id": call_id, "paused": paused}

    async def reload_flows(self) -> dict[str, Any]:
        result = self.registry.reload(self.now())
        self.record(result.event)
        return {"ok": result.ok, "version": result.version,
                "errors": [str(p) for p in result.problems if p.severity == "error"]}

    # --- the one loop: steps in, engine fed, actions carried out ------------------------------

    def _run(self, steps: Iterable[Step]) -> None:
        """Carry out `steps` in order, with what each one leads to after it (nothing unless leading)."""
        if not self._acting():
            return
        pending: deque[Step] = deque(steps)
        while pending:
            step = pending.popleft()
            if isinstance(step, (Connect, Redirect, Divert, OriginateCallback, HangupChannel)):
                self._execute(step)
                continue
            if isinstance(step, (RecordingStarted, MuteRecording, SaveRecording)):
                self._recording_step(step)
                continue
            now = self.now()
            try:
                outputs = self.engine.handle(step, now)
            except InvalidInput as error:
                log.warning("adapter.engine_refused", input=type(step).__name__, reason=str(error))
                continue
            pending.extend(self._outputs(outputs, now))
        self._wake.set()
        if not self.board.live():
            self._idle.set()

    def _outputs(self, outputs: list[Any], now: float) -> list[Step]:
        """Store the engine's events, hand all its outputs to the switchboard: the steps that follow."""
        for output in outputs:
            if isinstance(output, Event):
                self._emit(output)
        return self.board.on_engine(outputs, now)

    def _execute(self, action: Action) -> None:
        """Carry out an action as a task, after the call's earlier ones (the call's lock)."""
        if not self._acting():
            return
        task = asyncio.create_task(self._locked(action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, call_id: str) -> asyncio.Lock:
        lock = self._locks.get(call_id)
        if lock is None:
            lock = self._locks[call_id] = asyncio.Lock()
        return lock

    async def _locked(self, action: Action) -> None:
        with structlog.contextvars.bound_contextvars(call_id=action.call_id):
            async with self._lock(action.call_id):
                await self._carry_out_if_current(action)
            self._drop_lock(action.call_id)

    async def _carry_out_if_current(self, action: Action) -> None:
        if not self._acting() or not self.board.action_begins(action):   # fenced while it waited
            return
        try:
            follow_up = await self._carry_out(action)
        except AmiError as error:
            log.warning("adapter.action_failed", action=type(action).__name__, reason=str(error))
            self._run(self.board.action_failed(action))
            return
        self.board.action_done(action, self.now())
        self._run(follow_up)

    def _drop_lock(self, call_id: str) -> None:
        """Forget the lock of a call that is over once nobody holds or waits for it."""
        lock = self._locks.get(call_id)
        if lock is not None and not lock.locked() and call_id not in self.board.calls \
                and call_id not in self.board.legs:
            del self._locks[call_id]

    async def _carry_out(self, action: Action) -> list[Step]:
        if isinstance(action, Connect):
            await self.ami.pipeline(dp.set_and_redirect(action.channel, dp.CONNECT_CONTEXT, action.variables))
            log.info("adapter.offered", agent=action.agent, endpoint=action.endpoint)
        elif isinstance(action, Redirect):
            await self.ami.redirect(action.channel, action.context, action.exten)
        elif isinstance(action, Divert):
            await self.ami.pipeline(dp.set_and_redirect(action.channel, dp.DIVERT_CONTEXT, action.variables))
            log.info("adapter.diverted", action=action.action, target=action.target)
        elif isinstance(action, HangupChannel):
            try:
                await self.ami.hangup(action.channel)
            except AmiError as error:
                log.warning("adapter.hangup_failed", reason=str(error))
        else:
            return await self._originate_callback(action)
        return []

    async def _originate_callback(self, action: OriginateCallback) -> list[Step]:
        """Originate the first leg (agent, or customer); a first leg that does not answer ends
        here, the rest arrives as UserEvent RouterCallback and Hangup."""
        dial = action.dial
        log.info("adapter.callback_dialing", agent=dial.agent, attempt=dial.attempt, agent_first=dial.agent_first)
        originate_id = await self.ami.originate(action.fields, keep_answer=True)
        try:
            answer = await self.ami.originate_answer(originate_id, action.ring_s + self.ami.action_timeout_s)
        except AmiError as error:
            log.warning("adapter.callback_answer_unknown", reason=str(error))
            return []                   # the engine's ring timer (agent first) or a Hangup settles it
        leg = self.board.legs.get(action.call_id)
        return self.board.originate_answered(leg, answer.answered, answer.reason) if leg is not None else []

    # --- recording -------------------------------------------------------------------------

    def _recording_step(self, step: RecordingStarted | MuteRecording | SaveRecording) -> None:
        """Stored at once (started), or carried out beside the call's lock: a mute must not wait
        behind the call's actions, and the file is the adapter's own."""
        if isinstance(step, RecordingStarted):
            r = step.recording
            self._emit(Event(self.now(), "recording.started", call_id=step.call_id, queue=step.queue,
                             agent=step.agent, data={"file": r.file, "channels": r.channels, "format": r.format}))
            return
        if isinstance(step, MuteRecording):
            previous = self._mutes.get(step.call_id)
            task = asyncio.create_task(self._mute_recording(step, previous))
            self._mutes[step.call_id] = task
            task.add_done_callback(functools.partial(self._mute_done, step.call_id))
        else:
            task = asyncio.create_task(self._save_recording(step))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _mute_done(self, call_id: str, task: asyncio.Task[Any]) -> None:
        if self._mutes.get(call_id) is task:
            del self._mutes[call_id]

    async def _settle(self, call_id: str) -> None:
        """Wait for the call's mute under way (the flow driver, before a node's prompts)."""
        task = self._mutes.get(call_id)
        if task is not None:
            await asyncio.wait({task})

    async def _mute_recording(self, step: MuteRecording, previous: asyncio.Task[Any] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})          # in order, per call
        if step.mute is not None:
            try:
                await self.ami.action({"Action": "MixMonitorMute", "Channel": step.channel, "Direction": "both",
                                       "State": "1" if step.mute else "0"})
            except AmiError as error:
                log.error("adapter.recording_mute_failed", call_id=step.call_id, mute=step.mute, reason=str(error))
        self._emit(Event(self.now(), "recording.paused" if step.paused else "recording.resumed",
                         call_id=step.call_id, queue=step.queue, agent=step.agent,
                         data={"reason": step.reason, "by": step.by}))

    async def _save_recording(self, step: SaveRecording) -> None:
        """Wait until Asterisk has closed the capture, then finish it and store what it holds."""
        r = step.recording
        directory = self.centre.recording.directory
        try:
            capture, saved = files.resolve(directory, r.capture), files.resolve(directory, r.file)
        except files.UnsafePath as error:
            log.error("adapter.recording_unsafe", reason=str(error))
            return
        closed = await _settled(capture)
        if not step.keep:
            if closed:
                capture.unlink(missing_ok=True)     # ringing of an offer that was not answered
            return
        try:
            if not closed:
                raise OSError(f"Asterisk wrote no file {r.capture} within {CAPTURE_WAIT_S:g} s")
            if capture != saved:
                await asyncio.to_thread(files.wav_from_raw, capture, saved, swap=step.swap)
            size, duration = files.probe(saved)
        except (OSError, ValueError) as error:
            log.error("adapter.recording_missing", call_id=step.call_id, reason=str(error))
            self._emit(Event(self.now(), "recording.missing", call_id=step.call_id, queue=step.queue,
                             agent=step.agent, data={"file": r.file, "reason": str(error)}))
            return
        self._emit(Event(self.now(), "recording.saved", call_id=step.call_id, queue=step.queue, agent=step.agent,
                         data={"file": r.file, "size_bytes": size, "duration_s": round(duration, 3),
                               "retention_days": r.retention_days}))

    async def _timers(self) -> None:
        while True:
            deadline = self.engine.next_deadline() if self.leading else None   # a standby sleeps
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - self.now())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if not self._acting():
                continue                 # a standby's engine has no timers; a fenced one's are stale
            try:
                now = self.now()
                self._run(self._outputs(self.engine.advance(now), now))
            except Exception:            # a bug in one timer must not stop all the others
                log.exception("adapter.timer_failed")

    # --- the IVR (FastAGI route) -------------------------------------------------------

    async def ivr(self, agi: AGISession) -> None:
        env = agi.env
        if self.draining:
            log.info("adapter.refused_draining", channel=env.get("agi_channel"))
            await agi.send(f'SET VARIABLE {dp.NEXT} "{dp.NEXT_HANGUP}"')
            return
        args = agi.args             # [router-inbound] passes the DID and the call id a router gave it before
        dnis = args[0] if args and args[0] else env.get("agi_extension", "")
        resumed = args[1] if len(args) > 1 and _CALL_ID.fullmatch(args[1]) and args[1] not in self.board.calls \
            else None
        call = self.board.ivr_started(resumed or str(uuid.uuid4()), env.get("agi_channel", ""),
                                      env.get("agi_uniqueid", ""), caller_number(env.get("agi_callerid")))
        try:
            await self._ivr(agi, call, dnis, resumed=resumed is not None)
        finally:
            self._drop_lock(call.call_id)

    async def _ivr(self, agi: AGISession, call: PbxCall, dnis: str, *, resumed: bool) -> None:
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            async with self._lock(call.call_id):
                try:
                    final, dialing = await self._run_ivr(agi, call, dnis, resumed=resumed)
                except BaseException:
                    self._forget(call)
                    raise
                view = self.engine.call_view(call.call_id)
                if view is None or call.phase in (Phase.CALLBACK, Phase.ENDED):
                    self._forget(call)          # ended in the IVR, hung up, or left with a call-back
                    return
                if not any(isinstance(c, Enqueue) for c in final):
                    # a refused call-back: the engine queued the call, the driver set no hold variables
                    await self._hold_settings(agi, view.queue)
                if not dialing:
                    if call.connecting_in_agi:  # the MSet of the offer's variables, sent behind the IVR
                        call.connecting_in_agi = False
                        try:
                            await agi.reply("EXEC MSet")
                        except AGIError:
                            log.info("adapter.connect_in_agi_ended", hung_up=agi.hung_up)
                    await self._mark_place(agi, view)
                    await agi.close()           # the dialplan goes on to [router-hold]
                    if call.phase is Phase.ENDED:   # hung up meanwhile
                        self._forget(call)
                    return
            await self._dial_in_agi(agi, call)  # without the lock: a Redirect may end it

    def _forget(self, call: PbxCall) -> None:
        self.board.forget(call)
        if not self.board.live():
            self._idle.set()

    def _queued_from_ivr(self, call: PbxCall, enqueue: Enqueue) -> str | None:
        """The IVR put the caller in a queue (its ROUTER_NEXT=hold is on its way to Asterisk):
        tell the engine; if it offers the call at once, the Dial goes out over the same AGI
        right behind, without music, Redirect or AMI round trip."""
        self._run([self.board.queued_from_ivr(call, enqueue, self.now())])
        command = self.board.take_agi_dial(call, self.now())     # route time: the engine's included
        if command is not None:
            log.info("adapter.offered", agent=call.agent, endpoint=call.endpoint, via="agi")
            return command
        variables = self.board.take_agi_connect(call, self.now())
        if variables is None:
            return None
        log.info("adapter.offered", agent=call.agent, endpoint=call.endpoint, via="agi-connect")
        return 'EXEC MSet "{}"'.format(",".join(f"{k}={v}" for k, v in variables.items()))

    async def _dial_in_agi(self, agi: AGISession, call: PbxCall) -> None:
        """Wait for the Dial sent behind the IVR's last command.  Answered: it returns when
        the agent hangs up (the call's end comes from the agent leg's Hangup event), and the
        caller takes the queue's survey.  Not answered: DialEnd reports it, or nothing does
        when the dial never began; the caller goes on to [router-hold] (ROUTER_NEXT=hold)."""
        offer = call.offers
        try:
            await agi.reply("EXEC Dial", timeout_s=None)
            if agi.hung_up:
                return                          # the caller hung up, or a Redirect took the call
            status = (await agi.send("GET VARIABLE DIALSTATUS")).data
            self._run(self.board.agi_dial_ended(call, offer, status))
            if status == "ANSWER":
                if call.queue is not None and self.centre.queues[call.queue].survey:
                    await self._run_survey(agi, call, {"queue": call.queue, "agent": call.agent or ""})
                await agi.send(f'SET VARIABLE {dp.NEXT} "{dp.NEXT_HANGUP}"')
        except AGIError:
            log.info("adapter.dial_in_agi_ended", hung_up=agi.hung_up)
        finally:
            call.dialing_in_agi = False
            await agi.close()

    async def _mark_place(self, agi: AGISession, view: Any) -> None:
        """Where the caller stands, on their channel: a router that takes over after this one
        puts them back there even if the store has not got their ``queue.joined`` yet."""
        values = {dp.QUEUE: view.queue, dp.JOINED_AT: f"{view.joined_at:.6f}", dp.SEQ: str(view.seq),
                  dp.PRIORITY: str(view.priority), dp.SKILLS: ";".join(f"{k}:{v}" for k, v in view.skills.items())}
        try:
            await agi.send('EXEC MSet "{}"'.format(",".join(f"{k}={v}" for k, v in values.items())))
        except AGIError:
            log.info("adapter.place_not_marked")       # the caller hung up: the Hangup event follows

    def _hold_variables(self, queue_id: str) -> dict[str, str]:
        """What [router-hold] needs to know of the queue: music class, announcement period."""
        hold = self.centre.queues[queue_id].hold
        return {dp.MOH_CLASS: hold.moh_class, dp.ANNOUNCE_S: str(int(hold.announce_s))}

    async def _hold_settings(self, agi: AGISession, queue_id: str) -> None:
        try:
            for name, value in self._hold_variables(queue_id).items():
                await agi.send(f'SET VARIABLE {name} "{value}"')
        except AGIError:
            log.info("adapter.hold_settings_lost")     # the caller hung up: the Hangup event follows

    def _flow_session(self, agi: AGISession, flow: str, call: PbxCall, dnis: str = "",
                      context: dict[str, str] | None = None) -> ivr.FlowSession:
        return self.registry.session(flow, call_id=call.call_id, caller_id=call.caller_id, dnis=dnis,
                                     now=datetime.fromtimestamp(self.now(), timezone.utc),
                                     language=agi.env.get("agi_language") or None,
                                     **({"context": context} if context is not None else {}))

    async def _run_ivr(self, agi: AGISession, call: PbxCall, dnis: str, *,
                       resumed: bool) -> tuple[list[Any], bool]:
        """The DID's flow, to its end: the commands it ended with, and whether a Dial to a free
        agent is under way on the AGI.  A resumed call (its router went away during the IVR)
        keeps its call id and starts the flow again; its arrival is not recorded twice."""
        if not resumed or call.call_id not in self._arrivals_stored:
            self._emit(Event(self.now(), "call.arrived", call_id=call.call_id,
                             data={"caller_id": call.caller_id, "dnis": dnis}))
        else:
            log.info("adapter.ivr_resumed", call_id=call.call_id)
        self._arrivals_stored.discard(call.call_id)
        if not resumed:
            await agi.send(f'SET VARIABLE {dp.CALL_ID} "{call.call_id}"')
        session = self._flow_session(agi, self.flows_by_dnis.get(dnis, self.default_flow), call, dnis)

        async def on_callback(offer: ivr.OfferCallback) -> bool | None:
            self._run([CallbackAccepted(call.call_id, offer.number, queue=offer.queue, caller_id=call.caller_id,
                                        **self._slot(offer))])
            if call.phase is Phase.RINGING:
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
        call, steps = self.board.survey_for(agi.env.get("agi_channel", ""))
        self._run(steps)
        if call is None:
            return
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            await self._run_survey(agi, call, {k: v for k, v in call.survey.items() if k != "flow"})

    async def _run_survey(self, agi: AGISession, call: PbxCall, context: dict[str, str]) -> None:
        flow = self.centre.queues[context["queue"]].survey
        try:
            session = self._flow_session(agi, flow or "", call, context=context)
        except (KeyError, RuntimeError) as error:
            log.error("adapter.survey_flow_unusable", flow=flow, reason=str(error))
            return
        try:
            await AgiFlowDriver(agi, session, self._flow_emit,
                                settle=functools.partial(self._settle, call.call_id)).run()
        except AGIError:
            log.warning("adapter.survey_failed", exc_info=True)

    # --- holding callers (FastAGI routes of [router-hold]) ----------------------------

    async def announce(self, agi: AGISession) -> None:
        """Every ROUTER_ANNOUNCE_S seconds on hold: the caller's position and estimated wait."""
        holding = self.board.holding(agi.env.get("agi_channel", ""))
        if holding is None:
            return
        call, view = holding
        hold = self.centre.queues[view.queue].hold
        position = self.engine.position(call.call_id)
        ewt = self.engine.ewt(view.queue, position)
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
                    command = (f'SAY NUMBER {int(prompt[1])} "{dp.HOLD_KEYS}"' if isinstance(prompt, tuple)
                               else f'STREAM FILE {prompt} "{dp.HOLD_KEYS}"')
                    reply = await agi.send(command)
                    if agi.hung_up:
                        return              # hung up, or taken away by the router's Redirect
                    if reply.result not in ("", "0", "-1"):
                        await self._on_hold_key(agi, call, view.queue, chr(int(reply.result)))
                        return              # a key during the announcement counts as pressed on hold
            except AGIHangup:
                return

    async def hold_key(self, agi: AGISession) -> None:
        """A key pressed on hold: the queue's call-back key or leave key; others are ignored."""
        holding = self.board.holding(agi.env.get("agi_channel", ""))
        if holding is not None:
            call, view = holding
            with structlog.contextvars.bound_contextvars(call_id=call.call_id):
                key = agi.args[0] if agi.args else agi.env.get("agi_extension", "")
                await self._on_hold_key(agi, call, view.queue, key)

    async def _on_hold_key(self, agi: AGISession, call: PbxCall, queue_id: str, key: str) -> None:
        queue = self.centre.queues[queue_id]
        log.info("adapter.hold_key", key=key)
        if key == queue.hold.callback_key and queue.callback is not None:
            await self._offer_callback_over_agi(agi, call, queue.callback.offer_flow)
        elif key == queue.hold.leave_key:
            mailbox = queue.hold.leave_mailbox
            self._run([CallerLeft(call.call_id, "voicemail" if mailbox else "hangup")])
            if mailbox:
                await agi.send(f'SET VARIABLE {dp.MAILBOX} "{mailbox}"')
            await agi.send(f'SET VARIABLE {dp.NEXT} "{dp.NEXT_VOICEMAIL if mailbox else dp.NEXT_HANGUP}"')
        else:
            await agi.send(f'SET VARIABLE {dp.NEXT} "{dp.NEXT_HOLD}"')

    async def callback_offer(self, agi: AGISession) -> None:
        """The router offers a call-back (the estimated wait passed the queue's bound)."""
        holding = self.board.holding(agi.env.get("agi_channel", ""))
        if holding is None:
            return
        call, view = holding
        policy = self.centre.queues[view.queue].callback
        if policy is not None:
            with structlog.contextvars.bound_contextvars(call_id=call.call_id):
                await self._offer_callback_over_agi(agi, call, policy.offer_flow)

    async def _offer_callback_over_agi(self, agi: AGISession, call: PbxCall, flow: str) -> None:
        """Run the queue's offer flow: it ends in a `callback` node (taken) or anything else (wait on)."""
        await agi.send(f'SET VARIABLE {dp.NEXT} "{dp.NEXT_HOLD}"')
        try:
            session = self._flow_session(agi, flow, call)
        except (KeyError, ValueError, RuntimeError) as error:
            log.error("adapter.callback_flow_missing", flow=flow, reason=str(error))
            return

        async def on_callback(offer: ivr.OfferCallback) -> bool:
            if call.phase is not Phase.WAITING:
                return False                    # being connected meanwhile
            self._run([CallbackAccepted(call.call_id, offer.number, **self._slot(offer))])
            return await self._keep_callback(call)

        try:
            await AgiFlowDriver(agi, session, self._emit, on_callback).run()
        except AGIError:
            log.warning("adapter.callback_offer_failed", exc_info=True)

    @staticmethod
    def _slot(offer: ivr.OfferCallback) -> dict[str, Any]:
        at = getattr(offer, "at", None)
        return {} if at is None else {"at": at.timestamp()}

    async def _keep_callback(self, call: PbxCall) -> bool:
        """After CallbackAccepted: True once the call-back is committed to the database (the
        caller may hang up), False if the engine refused it or it could not be stored."""
        view = self.engine.call_view(call.call_id)
        if view is None or view.callback_number is None:
            return False
        if self.callback_store is not None:
            try:
                await self.callback_store.save(view)
            except Exception as error:      # the database is away, or a duplicate slipped through
                log.error("adapter.callback_not_saved", reason=str(error))
                self._run([CallbackWithdrawn(call.call_id)])
                return False
        self.board.callback_kept(call)
        log.info("adapter.callback_kept", number_digits=len(view.callback_number))
        return True

    # --- events to the store -------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Store an event from outside the call flow (e.g. ``flow.reloaded``)."""
        self._emit(event)

    def _flow_emit(self, event: Event) -> None:
        """An IVR event: stored, and the recording muted or unmuted on a sensitive node."""
        self._emit(event)
        if event.type in ("ivr.node", "ivr.ended"):
            self._run(self.board.flow_event(event))

    def _emit(self, event: Event) -> None:
        for observe in self.observers:
            observe(event)
        if self.callback_store is not None:
            self.callback_store.follow(event)
        if self.writer is None:
            return
        try:
            self.writer.put_nowait(event)
        except WriterFull:
            self.events_spilled += 1
            self.writer.spill(event)
            if self.events_spilled == 1 or self.events_spilled % 1000 == 0:
                log.warning("adapter.events_spilled", spilled=self.events_spilled)

    # --- AMI events ------------------------------------------------------------------------

    def _on_ami(self, event: AmiEvent) -> None:
        if isinstance(event, (LinkDown, LinkUp)):
            log.info("adapter.ami_link", state=type(event).__name__)
            return
        if self._held is not None:
            self._held.append(event)        # a take-over is reading Asterisk's channels
            return
        if not self.leading:
            self.board.note_devices(event)  # a standby keeps device states warm, nothing else
            return
        self._dispatch(event)

    def _dispatch(self, event: AmiEvent) -> None:
        unknown = self.board.unknown_phone(event)
        if unknown is not None:
            log.warning("adapter.unknown_agent_phone", number=unknown)
        steps = self.board.on_ami(event, self.now())
        self._run(steps)
        if isinstance(event, Resync):
            log.info("adapter.resynced", channels=len(event.channels), calls=self.board.live())


async def _settled(path: Any) -> bool:
    """Whether `path` exists and its size stayed put for CAPTURE_SETTLE_S (Asterisk closed it),
    waiting up to CAPTURE_WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline, last = loop.time() + CAPTURE_WAIT_S, -1
    while loop.time() < deadline:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        if size >= 0 and size == last:
            return True
        last = size
        await asyncio.sleep(CAPTURE_SETTLE_S)
    return False
