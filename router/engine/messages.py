"""What goes into the engine (inputs) and what comes out (commands).

Adapters (the Asterisk adapter, the simulated PBX, tests) translate their world
into these inputs and carry out the commands.  Domain events (router.events.Event)
come out beside the commands, in the same list, in the order they happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from router.events import Event

# --- inputs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallQueued:
    """A caller asks to be connected to an agent of `queue` (from the IVR or directly)."""
    call_id: str
    queue: str
    caller_id: str = ""
    priority: int = 0                          # added to the queue's priority (e.g. VIP)
    skills: dict[str, int] = field(default_factory=dict)   # extra requirements (language ...)
    data: dict[str, Any] = field(default_factory=dict)     # attached to queue.joined


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    call_id: str


@dataclass(frozen=True, slots=True)
class AgentAnswered:
    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class AgentMissed:
    """The offered agent did not take the call: timeout, busy or unreachable."""
    call_id: str
    agent: str
    reason: str = "timeout"


@dataclass(frozen=True, slots=True)
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
    """A pending call-back loaded back from the database after a restart, in place order."""
    call_id: str
    queue: str
    number: str
    joined_at: float
    accepted_at: float
    attempts: int = 0
    caller_id: str = ""
    priority: int = 0
    skills: dict[str, int] = field(default_factory=dict)
    due_at: float | None = None                # not dialled before (CallbackState.due_at when saved)


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
              CallbackAnswered, CallbackFailed, CallbackWithdrawn, CallerLeft, SetCallPriority, MoveCall,
              CancelCallback]

# --- commands -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferCall:
    """Ring `agent` at `endpoint` for the waiting call; bridge them when it answers."""
    call_id: str
    agent: str
    endpoint: str
    queue: str
    ring_timeout_s: float


@dataclass(frozen=True, slots=True)
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
