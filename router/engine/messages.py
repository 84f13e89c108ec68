"""What goes into the engine (inputs) and what comes out (commands).

Adapters (the Asterisk adapter, the simulated PBX, tests) translate their world
into these inputs and carry out the commands.  Domain events (router.events.Event)
come out beside the commands, in the same list, in the order they happened.

The restore inputs (AgentRestored, CallRestored, CallbackRestored) rebuild the state
of a router that restarted; they emit no events of their own, since those are in the
store already.  Restore the agents first, then the calls that hold an agent (ringing,
connected), then the waiting calls and call-backs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator, KeysView, Mapping
from typing import Any, Union

from router.events import Event


class _Nothing(Mapping[str, Any]):
    """The default of a message's mapping fields: empty, immutable and hashable, so that a frozen
    dataclass takes it as its default (a default_factory costs a compiled message two imports).
    `keys()` is an empty dict's view: dict(m) and {**m} call it for every call queued, and
    Mapping's own builds a KeysView in Python each time."""
    __slots__ = ()

    def keys(self) -> KeysView[str]:
        return _NO_KEYS

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


_NO_KEYS: KeysView[str] = {}.keys()
NOTHING: Mapping[str, Any] = _Nothing()

# --- inputs ---------------------------------------------------------------


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class CallQueued:
    """A caller asks to be connected to an agent of `queue` (from the IVR or directly)."""
    call_id: str
    queue: str
    caller_id: str = ""
    priority: int = 0                          # added to the queue's priority (e.g. VIP)
    skills: Mapping[str, int] = NOTHING        # extra requirements (language ...)
    data: Mapping[str, Any] = NOTHING          # attached to queue.joined


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class CallerHungUp:
    call_id: str


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class AgentAnswered:
    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class AgentMissed:
    """The offered agent did not take the call: timeout, busy or unreachable."""
    call_id: str
    agent: str
    reason: str = "timeout"


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class CallFinished:
    """A connected call ended (either side hung up)."""
    call_id: str


@dataclass(frozen=True, slots=True)
class AgentLogin:
    agent: str


@dataclass(frozen=True, slots=True)
class AgentLogout:
    agent: str


@dataclass(frozen=True, slots=True)
class AgentPause:
    agent: str
    reason: str = "break"


@dataclass(frozen=True, slots=True)
class AgentResume:
    agent: str


@dataclass(frozen=True, slots=True)
class WrapUpDone:
    """The agent ends wrap-up before its timer does."""
    agent: str


@dataclass(frozen=True, slots=True)
class CallbackAccepted:
    """The caller takes a call-back to `number` and will hang up, keeping their place.

    For a waiting call `queue` is None; for a caller who accepts before queueing
    (in the IVR), `queue` and the other fields say where the call-back waits.
    `at` (epoch seconds) is a slot the caller chose: not dialled before it; it must
    lie within the call-back hours and `max_days_ahead`, else callback.failed says
    outside_hours, too_far or in_the_past."""
    call_id: str
    number: str
    queue: str | None = None
    caller_id: str = ""
    priority: int = 0
    skills: dict[str, int] = field(default_factory=dict)
    at: float | None = None


@dataclass(frozen=True, slots=True)
class CallbackWithdrawn:
    """An accepted call-back could not be kept (not stored): the caller, still on the
    line, waits on as a normal call at the same place."""
    call_id: str


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """A waiting caller leaves the queue by a key (to voicemail or hanging up): not an abandon."""
    call_id: str
    to: str = "voicemail"


@dataclass(frozen=True, slots=True)
class CallbackRestored:
    """A pending call-back loaded back from the database after a restart, in place order.
    `priority` is the total the call had (the queue's included, as stored); None: the queue's."""
    call_id: str
    queue: str
    number: str
    joined_at: float
    accepted_at: float
    attempts: int = 0
    caller_id: str = ""
    priority: int | None = None
    skills: dict[str, int] = field(default_factory=dict)
    due_at: float | None = None                # not dialled before (CallbackState.due_at when saved)


@dataclass(frozen=True, slots=True)
class AgentRestored:
    """A logged-in agent rebuilt after a restart (from Asterisk and the store): straight from
    logged_out into `state`, silently (no agent.state event: the store has it already).

    `state` is "available", "paused" (with its `reason`) or "wrap_up"; an agent that was
    logged out is simply not restored, and one that was ringing or talking is restored
    "available" and then taken by the CallRestored of its call.  `since` (default: now)
    is when the state began (time in state; the longest-idle order of available agents);
    the CallRestored keeps it, so for an agent ringing or talking give when that began.
    A wrap-up ends at `wrap_until` (default: now, i.e. at the next `advance`); `call_id` is
    the call being wrapped up, kept only for "wrap_up".  Busy and idle times start from
    zero.  An available agent takes a waiting call at once, as after a log-in: restore the
    agents and their ringing and connected calls before the waiting calls.  InvalidInput
    for an unknown agent, one not logged out, or another state."""
    agent: str
    state: str
    reason: str | None = None
    since: float | None = None
    wrap_until: float | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallRestored:
    """A live call (not a call-back: CallbackRestored) rebuilt after a restart, silently:
    no event for the restore itself (the store has queue.joined, agent.offered ... already);
    routing that follows from it (a waiting call offered to a free agent) is reported as usual.

    The fields are those of router.engine.engine.CallView.  `priority` is the call's total
    priority as it was, the queue's priority INCLUDED (unlike CallQueued.priority);
    `skills` the call's extra requirements.  `joined_at` and `seq` give it back its
    original place (seq None: after every call known so far; later calls always come after
    it); `queue_joined_at`, `next_step` and `moves` where it is in its current queue's
    overflow steps (the requirements those steps relaxed or widened are re-applied).
    `state`:
      "waiting"   back among the waiting calls at its place, its step and max-wait timers
                  counting from `queue_joined_at`: those that fell due during the outage
                  fire, in their order, at the next `advance`; then routed like a call
                  that starts waiting.
      "ringing"   Asterisk is ringing `agent`, which must be available (restored just
                  before): it becomes reserved for the call and the queue's ring timeout
                  runs from now; no OfferCall (the phone is ringing already).
      "connected" `agent` (available, restored just before) is on the call since
                  `connected_at`.
    InvalidInput (nothing changed) for an unknown queue, skill or agent, a call id already
    known, an agent missing, unavailable or given for a waiting call, a connected call
    without `connected_at`, or a `next_step` beyond the queue's steps."""
    call_id: str
    queue: str
    entry_queue: str
    caller_id: str
    priority: int
    skills: dict[str, int]
    joined_at: float
    queue_joined_at: float
    seq: int | None = None
    state: str = "waiting"
    agent: str | None = None
    connected_at: float | None = None
    next_step: int = 0
    moves: int = 0


@dataclass(frozen=True, slots=True)
class CallbackAnswered:
    """The customer leg of a call-back answered: agent and customer are bridged."""
    call_id: str


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """The customer leg of a call-back failed: no answer, busy or unreachable."""
    call_id: str
    reason: str = "no_answer"


@dataclass(frozen=True, slots=True)
class SetCallPriority:
    """A supervisor sets a waiting call's priority (higher is served first); it keeps its
    arrival order among the calls of its new priority."""
    call_id: str
    priority: int


@dataclass(frozen=True, slots=True)
class MoveCall:
    """A supervisor moves a waiting call (or a call-back not being dialled) to `queue`: it
    keeps its place (first join and arrival order), takes that queue's skill minimums and
    starts its overflow steps from there."""
    call_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class CancelCallback:
    """A supervisor cancels a pending call-back (not while it is being dialled)."""
    call_id: str


Input = Union[CallQueued, CallerHungUp, AgentAnswered, AgentMissed, CallFinished, AgentLogin,
              AgentLogout, AgentPause, AgentResume, WrapUpDone, CallbackAccepted, CallbackRestored,
              AgentRestored, CallRestored, CallbackAnswered, CallbackFailed, CallbackWithdrawn, CallerLeft,
              SetCallPriority, MoveCall, CancelCallback]

# --- commands -------------------------------------------------------------


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class OfferCall:
    """Ring `agent` at `endpoint` for the waiting call; bridge them when it answers."""
    call_id: str
    agent: str
    endpoint: str
    queue: str
    ring_timeout_s: float


@dataclass(frozen=True)   # compiled: an extension type (ext/router/engine/messages.pxd)
class CancelOffer:
    """Stop ringing `agent` (caller gone or ring timeout); the caller stays put."""
    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class DivertCall:
    """Take the caller out of the queue: voicemail, transfer, callback or hang-up."""
    call_id: str
    action: str
    target: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class DialCallback:
    """Dial a call-back: the agent (with a whisper naming queue and caller) then the
    customer at `number`, or the customer first when `agent_first` is false."""
    call_id: str
    agent: str
    endpoint: str
    number: str
    queue: str
    agent_first: bool
    attempt: int
    ring_timeout_s: float


@dataclass(frozen=True, slots=True)
class OfferCallback:
    """Offer the waiting caller a call-back (they keep their place either way);
    the adapter answers with CallbackAccepted if they take it."""
    call_id: str
    queue: str
    ewt_s: float | None


Command = Union[OfferCall, CancelOffer, DivertCall, DialCallback, OfferCallback]
Output = Union[Command, Event]


class InvalidInput(ValueError):
    """An input that does not fit the current state (unknown agent, impossible transition)."""
