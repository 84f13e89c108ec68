"""`AmiLink`: the router's Asterisk Manager Interface link, panoramisk 1.4 made safe.

Theory of operation
-------------------
panoramisk's `AMIProtocol` parses the AMI byte stream into `Message`s and
matches responses to actions by ActionID; that part is used as is.  What
panoramisk's `Manager` does around it is replaced (see ../shared/FACTS.md):

- **Life cycle.**  `AmiLink.run()` owns the connection: connect, log in with a
  timeout, resynchronise, then wait until the link dies; reconnect with
  exponential back-off and full jitter (`BACKOFF_FIRST_S` doubling up to
  `BACKOFF_MAX_S`).  panoramisk's own reconnect timer and its re-sending of
  unanswered actions are switched off (`_Manager.connection_lost`, and every
  action counts as "forgettable").
- **Dead links.**  A watchdog sends ``Ping`` every `ping_interval_s`; no reply
  within `ping_timeout_s` means the link is dead (a half-open TCP connection
  never says so by itself): the transport is closed and `run` reconnects.
- **Actions** are bounded: `action()` waits at most `action_timeout_s` for the
  link to be up and then for the reply, and raises `AmiError` with the action's
  name (never its fields: a Login carries the secret).
- **Events** reach subscribers as typed, frozen dataclasses (`Newchannel`,
  `Hangup`, `DialBegin`, `DialEnd`, `BridgeEnter`, `BridgeLeave`, `UserEvent`,
  `DeviceStateChange`, `ContactStatus`, `PeerStatus`); other AMI events are
  ignored, a missing header is None (panoramisk reads it as '').  Each
  subscriber call is wrapped: its exception is logged and never reaches
  panoramisk, where it would break the transport.  `LinkUp` / `LinkDown` say
  when the link changes, and after every login a `Resync` carries the live
  channels (``CoreShowChannels``) and device states (``DeviceStateList``), so
  the adapter can reconcile what it missed while the link was down.
- **Originate** is idempotent across reconnects: each gets an id, sent as the
  channel's ``ChannelId`` (its Uniqueid; the Local channel's other half gets
  ``<id>;2``) and as the variable ``ACD_ORIGINATE_ID``.  One whose action got no
  response before the link died is re-sent after the reconnect only if
  CoreShowChannels shows no channel with that Uniqueid or Linkedid; one that
  got any response (Asterisk took it) is never re-sent.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import structlog
from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = structlog.get_logger("router.pbx.ami")

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0


class AmiError(Exception):
    """An AMI action failed, timed out, or the link is down."""


# --- typed events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Newchannel:
    channel: str | None
    uniqueid: str | None
    linkedid: str | None
    caller_id: str | None
    context: str | None
    exten: str | None


@dataclass(frozen=True, slots=True)
class Hangup:
    channel: str | None
    uniqueid: str | None
    linkedid: str | None
    cause: str | None


@dataclass(frozen=True, slots=True)
class DialBegin:
    channel: str | None
    uniqueid: str | None
    dest_channel: str | None
    dest_uniqueid: str | None
    dial_string: str | None


@dataclass(frozen=True, slots=True)
class DialEnd:
    channel: str | None
    uniqueid: str | None
    dest_channel: str | None
    dest_uniqueid: str | None
    dial_status: str | None


@dataclass(frozen=True, slots=True)
class BridgeEnter:
    channel: str | None
    uniqueid: str | None
    bridge_id: str | None


@dataclass(frozen=True, slots=True)
class BridgeLeave:
    channel: str | None
    uniqueid: str | None
    bridge_id: str | None


@dataclass(frozen=True, slots=True)
class UserEvent:
    name: str | None
    channel: str | None
    uniqueid: str | None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceStateChange:
    device: str | None
    state: str | None


@dataclass(frozen=True, slots=True)
class ContactStatus:
    aor: str | None
    endpoint: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class PeerStatus:
    peer: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One live channel as CoreShowChannels lists it."""
    channel: str | None
    uniqueid: str | None
    linkedid: str | None
    context: str | None
    application: str | None
    bridge_id: str | None


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """One live channel as the Status action lists it, with the channel variables asked for."""
    channel: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    application: str
    bridge_id: str | None
    variables: Mapping[str, str]
    caller_id: str = ""


@dataclass(frozen=True, slots=True)
class Resync:
    """After a login: every live channel and every device state."""
    channels: tuple[ChannelInfo, ...]
    devices: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class LinkUp:
    attempt: int


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: str


AmiEvent = Union[Newchannel, Hangup, DialBegin, DialEnd, BridgeEnter, BridgeLeave, UserEvent,
                 DeviceStateChange, ContactStatus, PeerStatus, Resync, LinkUp, LinkDown]

_USER_EVENT_HEADERS = frozenset({"event", "content", "userevent", "channel", "uniqueid", "privilege", "timestamp",
                                 "linkedid", "channelstate", "channelstatedesc", "calleridnum",
                                 "calleridname", "connectedlinenum", "connectedlinename", "language",
                                 "accountcode", "context", "exten", "priority"})


def _value(message: Message, key: str) -> str | None:
    value = message[key] if key in message else None
    if isinstance(value, list):
        value = value[-1]
    return value if value is None else str(value)


def typed_event(message: Message) -> AmiEvent | None:
    """The typed form of an AMI event message; None for events the router does not use."""
    name = (_value(message, "Event") or "").lower()
    get = lambda key: _value(message, key)  # noqa: E731
    if name == "newchannel":
        return Newchannel(get("Channel"), get("Uniqueid"), get("Linkedid"), get("CallerIDNum"),
                          get("Context"), get("Exten"))
    if name == "hangup":
        return Hangup(get("Channel"), get("Uniqueid"), get("Linkedid"), get("Cause"))
    if name == "dialbegin":
        return DialBegin(get("Channel"), get("Uniqueid"), get("DestChannel"), get("DestUniqueid"),
                         get("DialString"))
    if name == "dialend":
        return DialEnd(get("Channel"), get("Uniqueid"), get("DestChannel"), get("DestUniqueid"),
                       get("DialStatus"))
    if name == "bridgeenter":
        return BridgeEnter(get("Channel"), get("Uniqueid"), get("BridgeUniqueid"))
    if name == "bridgeleave":
        return BridgeLeave(get("Channel"), get("Uniqueid"), get("BridgeUniqueid"))
    if name == "userevent":
        fields = {key.lower(): str(value) for key, value in message.items()
                  if key.lower() not in _USER_EVENT_HEADERS and not isinstance(value, list)}
        return UserEvent(get("UserEvent"), get("Channel"), get("Uniqueid"), fields)
    if name == "devicestatechange":
        return DeviceStateChange(get("Device"), get("State"))
    if name == "contactstatus":
        return ContactStatus(get("AOR"), get("EndpointName"), get("ContactStatus"))
    if name == "peerstatus":
        return PeerStatus(get("Peer"), get("PeerStatus"))
    return None


# --- panoramisk, tamed ------------------------------------------------------------------


class _Everything:
    """A container that holds every name: panoramisk then re-sends no action after a reconnect."""

    def __contains__(self, item: object) -> bool:
        return True


class _Manager(Manager):
    """panoramisk's Manager without its reconnect timer and pinger; we own the life cycle."""

    def __init__(self, link: AmiLink, **config: Any) -> None:
        super().__init__(forgetable_actions=_Everything(), **config)
        self._link = link

    def connection_lost(self, exc: object) -> None:
        if self._link._manager is self:           # a replaced connection has nothing to report
            self._link._lost(exc)


@dataclass
class _PendingOriginate:
    id: str
    fields: dict[str, Any]
    sent: Action | None = None        # the action as last sent
    sent_on: int = 0                  # the connection (`AmiLink.connects`) it was sent on
    taken: bool = False               # Asterisk responded: it took the action, never re-send


Subscriber = Callable[[AmiEvent], None]

# OriginateResponse "Reason" (Asterisk's control frame when the dial ended) -> why it failed
ORIGINATE_REASONS = {"0": "unreachable", "1": "timeout", "3": "timeout", "4": "answered", "5": "busy",
                     "8": "unreachable"}


@dataclass(frozen=True)
class OriginateAnswer:
    """How an Originate ended: answered, or why not (timeout, busy, unreachable)."""
    originate_id: str
    answered: bool
    reason: str


class AmiLink:
    """One AMI connection with reconnect, watchdog, bounded actions and typed events."""

    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 ping_interval_s: float = 5.0, ping_timeout_s: float = 3.0,
                 action_timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                 backoff_first_s: float = BACKOFF_FIRST_S, backoff_max_s: float = BACKOFF_MAX_S) -> None:
        self.host, self.port = host, port
        self._username, self._secret = username, secret
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.action_timeout_s, self.connect_timeout_s = action_timeout_s, connect_timeout_s
        self._backoff_first_s, self._backoff_max_s = backoff_first_s, backoff_max_s
        self._subscribers: list[Subscriber] = []
        self._manager: _Manager | None = None
        self._linked = False             # logged in on the current connection
        self._up = asyncio.Event()       # logged in and resynchronised: actions may go
        self._down: asyncio.Future[str] | None = None
        self._originates: dict[str, _PendingOriginate] = {}
        self._answers: dict[str, _PendingOriginate] = {}      # taken Originates whose answer is awaited
        self._inflight: dict[str, Action] = {}   # sent on the current connection, no final reply yet
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:12]
        self.connects = 0
        self.originates_sent = 0         # Originate actions written to a socket, re-sends included

    # --- public API -------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event)` for every typed event; its exceptions are logged."""
        self._subscribers.append(callback)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def start(self) -> None:
        """Run the link in the background and wait for the first login (`AmiError` if none)."""
        self._task = asyncio.create_task(self.run(), name="router.pbx.ami")
        await self.wait_connected(self.connect_timeout_s + self.action_timeout_s)

    async def wait_connected(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        except TimeoutError:
            raise AmiError(f"AMI {self.host}:{self.port} not connected within {timeout_s} s") from None

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            while not task.done():          # a cancel that lands as a reply does may be lost (3.11)
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        self._close_transport()
        self._up.clear()

    def cut(self, reason: str = "cut") -> None:
        """Drop the current connection; `run` reconnects."""
        self._close_transport()
        self._lost(reason)

    async def action(self, action: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
        """Send one action once the link is up; its response (a list for event lists).

        Raises `AmiError` when the link stays down, no response comes within the
        timeout, the link dies first, or Asterisk answers Error."""
        timeout_s = self.action_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self._up.wait(), timeout_s)
        except TimeoutError:
            raise AmiError(f"AMI {action.get('Action')}: link down for {timeout_s} s") from None
        return await self._request(action, max(0.0, deadline - loop.time()))

    async def channels(self, variables: Sequence[str]) -> list[ChannelStatus]:
        """Every live channel with the values of `variables` (one AMI ``Status`` action)."""
        reply = await self.action({"Action": "Status", "Variables": ",".join(variables)})
        return [ChannelStatus(_value(m, "Channel") or "", _value(m, "Uniqueid") or "", _value(m, "Linkedid") or "",
                              _value(m, "Context") or "", _value(m, "Exten") or "",
                              _value(m, "Application") or "", _value(m, "BridgeID") or None, _variables(m),
                              _value(m, "CallerIDNum") or "")
                for m in _listed(reply, "Status")]

    async def pipeline(self, actions: Sequence[Mapping[str, Any]], *, timeout_s: float | None = None) -> list[Any]:
        """Send several actions back to back, then wait for every response.

        Asterisk runs the actions of one manager session in the order they
        arrive, so this keeps their order and costs one round trip, not one each.
        Raises `AmiError` like `action` (for the first action that failed)."""
        timeout_s = self.action_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self._up.wait(), timeout_s)
        except TimeoutError:
            raise AmiError(f"AMI {actions[0].get('Action') if actions else ''}: link down for {timeout_s} s") from None
        sent = [(fields.get("Action"), self._send(fields)) for fields in actions]
        return [await self._reply(name, action, max(0.0, deadline - loop.time())) for name, action in sent]

    async def setvar(self, channel: str, variable: str, value: str) -> None:
        await self.action({"Action": "Setvar", "Channel": channel, "Variable": variable, "Value": value})

    async def redirect(self, channel: str, context: str, exten: str = "s", priority: int = 1) -> None:
        await self.action({"Action": "Redirect", "Channel": channel, "Context": context,
                           "Exten": exten, "Priority": str(priority)})

    async def hangup(self, channel: str) -> None:
        await self.action({"Action": "Hangup", "Channel": channel})

    def new_originate_id(self) -> str:
        return f"acd-{self._prefix}-{next(self._ids)}"

    async def originate(self, fields: Mapping[str, Any], *, originate_id: str | None = None,
                        timeout_s: float | None = None, keep_answer: bool = False) -> str:
        """An asynchronous Originate that runs at most once, even across reconnects.

        Returns its id (the originated channel's Uniqueid) once Asterisk took it; with
        `keep_answer`, `originate_answer` then waits for how it ended."""
        originate_id = originate_id or self.new_originate_id()
        variables = fields.get("Variable", [])
        variables = [variables] if isinstance(variables, str) else list(variables)
        pending = _PendingOriginate(originate_id, {
            **fields, "Action": "Originate", "Async": "true", "ChannelId": originate_id,
            "OtherChannelId": f"{originate_id};2",
            "Variable": [*variables, f"ACD_ORIGINATE_ID={originate_id}"]})
        self._originates[originate_id] = pending
        timeout_s = self.action_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                first = await self._originate_response(pending)
        except TimeoutError:
            raise AmiError(f"AMI Originate {originate_id}: not taken within {timeout_s} s") from None
        finally:
            del self._originates[originate_id]
        if _value(first, "Response") != "Success":
            raise AmiError(f"AMI Originate {originate_id} refused: {_value(first, 'Message')}")
        if keep_answer:
            self._answers[originate_id] = pending
        return originate_id

    async def originate_answer(self, originate_id: str, timeout_s: float) -> OriginateAnswer:
        """Asterisk's OriginateResponse of an Originate made with `keep_answer`: whether the
        originated channel answered, and if not why (`ORIGINATE_REASONS`).  Raises `AmiError`
        when none comes within `timeout_s` (e.g. the link was down when it was sent)."""
        pending = self._answers.pop(originate_id, None)
        if pending is None or pending.sent is None:
            raise AmiError(f"AMI Originate {originate_id}: unknown or already awaited")
        try:
            replies = await asyncio.wait_for(asyncio.shield(pending.sent.future), timeout_s)
        except TimeoutError:
            raise AmiError(f"AMI Originate {originate_id}: no OriginateResponse within {timeout_s} s") from None
        last = replies[-1] if isinstance(replies, list) else replies
        answered = _value(last, "Response") == "Success"
        reason = _value(last, "Reason") or ""
        return OriginateAnswer(originate_id, answered, ORIGINATE_REASONS.get(reason, "unreachable"))

    # --- connection life cycle --------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect: until cancelled."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._connect_once()
            except Exception as error:       # noqa: BLE001 - any failure: log, back off, retry
                self._close_transport()
                self._linked = False
                delay = random.uniform(0, min(self._backoff_max_s,
                                              self._backoff_first_s * 2 ** min(attempt - 1, 16)))
                log.warning("ami.connect_failed", host=self.host, port=self.port, attempt=attempt,
                            reason=str(error) or type(error).__name__, retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            reason = await self._serve()
            self._notify(LinkDown(reason))
            log.warning("ami.link_down", host=self.host, port=self.port, reason=reason)

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        manager = _Manager(self, host=self.host, port=self.port, loop=loop)
        manager.register_event("*", self._dispatch)
        async with asyncio.timeout(self.connect_timeout_s):
            _, protocol = await loop.create_connection(AMIProtocol, self.host, self.port)
        protocol.factory = manager
        protocol.log = manager.log
        protocol.config = manager.config
        protocol.encoding = manager.encoding = "utf8"
        manager.protocol = protocol
        manager.responses = protocol.responses
        self._manager = manager
        self._down = loop.create_future()
        self._linked = True
        reply = await self._request({"Action": "Login", "Username": self._username,
                                     "Secret": self._secret, "Events": "on"}, self.connect_timeout_s)
        self.connects += 1
        log.info("ami.connected", host=self.host, port=self.port, connects=self.connects,
                 response=_value(reply, "Message"))
        await self._resync()
        self._up.set()
        self._notify(LinkUp(self.connects))

    async def _serve(self) -> str:
        """Ping until the link dies; returns why it died."""
        assert self._down is not None
        down = self._down
        while not down.done():
            done, _ = await asyncio.wait({down}, timeout=self.ping_interval_s)
            if done:
                break
            try:
                await self._request({"Action": "Ping"}, self.ping_timeout_s)
            except AmiError as error:
                if not down.done():
                    self.cut(f"watchdog: {error}")
        return down.result()

    def _lost(self, exc: object) -> None:
        """The connection is gone: fail what waits on it (pending Originates wait for the next)."""
        self._up.clear()
        self._linked = False
        if self._down is not None and not self._down.done():
            self._down.set_result(str(exc) if exc else "connection closed")
        originating = {id(p.sent) for p in self._originates.values()}
        inflight, self._inflight = self._inflight, {}
        for action in inflight.values():
            if self._manager is not None:
                self._manager.responses.pop(action.id, None)
            if id(action) not in originating and not action.future.done():
                action.future.set_exception(AmiError(f"AMI {action['action']}: link lost"))

    def _close_transport(self) -> None:
        manager = self._manager
        if manager is not None and manager.protocol is not None and not manager.protocol.closed:
            manager.protocol.closed = True
            manager.protocol.transport.close()

    def _send(self, fields: Mapping[str, Any]) -> Action:
        manager = self._manager
        if manager is None or not self._linked:
            raise AmiError(f"AMI {fields.get('Action')}: link down")
        action = Action(dict(fields))
        self._inflight[action.id] = action
        action.future.add_done_callback(lambda future: self._settled(action, future))
        manager.protocol.send(action, as_list=None)   # None: panoramisk detects event lists
        return action

    def _settled(self, action: Action, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(action.id) is action:
            del self._inflight[action.id]
        if not future.cancelled():
            future.exception()       # retrieved: nobody may be waiting any more

    async def _request(self, fields: Mapping[str, Any], timeout_s: float) -> Any:
        return await self._reply(fields.get("Action"), self._send(fields), timeout_s)

    async def _reply(self, name: Any, action: Any, timeout_s: float) -> Any:
        try:
            async with asyncio.timeout(timeout_s):      # not wait_for: it can swallow a cancel in 3.11
                reply = await asyncio.shield(action.future)
        except TimeoutError:
            if self._manager is not None:
                self._manager.responses.pop(action.id, None)
            raise AmiError(f"AMI {name}: no response within {timeout_s} s") from None
        first = reply[0] if isinstance(reply, list) else reply
        if _value(first, "Response") not in (None, "Success", "Follows", "Goodbye"):
            raise AmiError(f"AMI {name} failed: {_value(first, 'Message')}")
        return reply

    async def _originate_response(self, pending: _PendingOriginate) -> Message:
        """Send the Originate (once per connection at most) and wait for Asterisk's first response."""
        while True:
            await self._up.wait()
            if pending.sent is None:
                pending.sent, pending.sent_on = self._send(pending.fields), self.connects
                self.originates_sent += 1
            down = self._down
            while pending.sent.responses == [] and down is not None and not down.done():
                waiter = asyncio.ensure_future(asyncio.sleep(0.02))
                await asyncio.wait({waiter, down, pending.sent.future}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if pending.sent.responses:
                pending.taken = True
                return pending.sent.responses[0]
            await asyncio.sleep(0)          # the link died first: `_resync` decides after the reconnect

    async def _resync(self) -> None:
        timeout_s = self.action_timeout_s
        channels = await self._request({"Action": "CoreShowChannels"}, timeout_s)
        devices = await self._request({"Action": "DeviceStateList"}, timeout_s)
        infos = tuple(
            ChannelInfo(_value(m, "Channel"), _value(m, "Uniqueid"), _value(m, "Linkedid"),
                        _value(m, "Context"), _value(m, "Application"), _value(m, "BridgeId") or None)
            for m in _listed(channels, "CoreShowChannel"))
        states = {_value(m, "Device") or "": _value(m, "State") or ""
                  for m in _listed(devices, "DeviceStateChange")}
        self._settle_originates(infos)
        self._notify(Resync(infos, states))

    def _settle_originates(self, channels: tuple[ChannelInfo, ...]) -> None:
        """Originates sent on an earlier connection without any response: re-send only
        those of which Asterisk shows no channel."""
        live = {c.uniqueid for c in channels} | {c.linkedid for c in channels}
        for pending in self._originates.values():
            if pending.taken or pending.sent is None or pending.sent_on == self.connects:
                continue
            if pending.id in live:
                log.info("ami.originate_found_after_reconnect", originate_id=pending.id)
                pending.sent.responses.append(Message({"Response": "Success",
                                                       "Message": "found after reconnect"}))
            else:
                log.info("ami.originate_resent", originate_id=pending.id)
                pending.sent, pending.sent_on = self._send(pending.fields), self.connects
                self.originates_sent += 1

    # --- events ------------------------------------------------------------------------

    def _dispatch(self, manager: Manager, message: Message) -> None:
        """panoramisk's only callback: nothing raised here may reach its transport."""
        try:
            event = typed_event(message)
            if event is not None:
                self._notify(event)
        except Exception:
            log.exception("ami.bad_event")

    def _notify(self, event: AmiEvent) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("ami.subscriber_failed", event_type=type(event).__name__)


def _variables(message: Message) -> dict[str, str]:
    """The ``Variable: NAME=value`` headers of a Status event (one or several)."""
    raw = message["Variable"] if "Variable" in message else []
    pairs = raw if isinstance(raw, list) else [raw]
    return dict(str(pair).partition("=")[::2] for pair in pairs if "=" in str(pair))


def _listed(reply: Any, event_name: str) -> list[Message]:
    messages = reply if isinstance(reply, list) else [reply]
    return [m for m in messages if (_value(m, "Event") or "") == event_name]
