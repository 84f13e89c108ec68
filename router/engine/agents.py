"""Agent states and their transitions, as a data table (h11's _state.py style).

    logged_out --login--> available --reserve--> reserved --answer--> on_call
    on_call --hangup--> wrap_up --wrap_done--> available     on_call --release--> available
    reserved --no_answer--> paused (RONA) | available      reserved --release--> available
    available --pause--> paused --resume--> available      available|paused --logout--> logged_out

A pause or log-out asked while the agent is reserved, on a call or in wrap-up is
deferred: it takes effect at the moment the agent would become available.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from router.config.model import Agent


class AgentState(enum.Enum):
    # members are singletons: identity hashing is equivalent and runs in C, while
    # Enum's own __hash__ is Python code (about a quarter of the engine's time went there)
    __hash__ = object.__hash__

    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


S = AgentState
TRANSITIONS: dict[tuple[AgentState, str], AgentState] = {
    (S.LOGGED_OUT, "login"): S.AVAILABLE,
    (S.AVAILABLE, "reserve"): S.RESERVED,
    (S.AVAILABLE, "pause"): S.PAUSED,
    (S.AVAILABLE, "logout"): S.LOGGED_OUT,
    (S.RESERVED, "answer"): S.ON_CALL,
    (S.RESERVED, "no_answer"): S.PAUSED,
    (S.RESERVED, "release"): S.AVAILABLE,
    (S.ON_CALL, "hangup"): S.WRAP_UP,
    (S.ON_CALL, "release"): S.AVAILABLE,     # a call-back whose customer did not answer
    (S.WRAP_UP, "wrap_done"): S.AVAILABLE,
    (S.PAUSED, "resume"): S.AVAILABLE,
    (S.PAUSED, "pause"): S.PAUSED,
    (S.PAUSED, "logout"): S.LOGGED_OUT,
}
DEFERRABLE: frozenset[tuple[AgentState, str]] = frozenset(
    (state, action) for state in (S.RESERVED, S.ON_CALL, S.WRAP_UP) for action in ("pause", "logout"))
BUSY_STATES = frozenset({S.ON_CALL, S.WRAP_UP})
IDLE_STATES = frozenset({S.AVAILABLE, S.RESERVED})


@dataclass
class AgentRuntime:
    """The engine's live view of one agent."""
    spec: Agent
    slot: int
    state: AgentState = S.LOGGED_OUT
    since: float | None = None          # when the current state began (None: never logged in)
    reason: str | None = None           # pause reason
    call_id: str | None = None          # the call it is reserved for / talking on / wrapping
    deferred: tuple[str, str] | None = None   # ("pause", reason) or ("logout", "")
    calls_handled: int = 0
    busy_s: float = 0.0                 # time on call + wrap-up since log-in
    idle_s: float = 0.0                 # time available + reserved since log-in
    wrap_token: int = 0
    wrap_until: float | None = None     # when the wrap-up timer ends the current wrap-up
    queues: set[str] = field(default_factory=set)   # queues whose base requirements it meets
    # the spec's fields that every transition reads, copied (compiled: C fields, read directly)
    id: str = field(init=False, default="")
    team: str | None = field(init=False, default=None)
    endpoint: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.id, self.team, self.endpoint = self.spec.id, self.spec.team, self.spec.endpoint

    @property
    def occupancy(self) -> float:
        total = self.busy_s + self.idle_s
        return self.busy_s / total if total > 0 else 0.0
