"""Who may do what on the web API: bearer tokens, roles, queue scopes and sign-in sessions.

Tokens come from the config (`web.tokens`, kept only as SHA-256) and from the
environment (`ACD_WEB_TOKENS="tokenA:admin,tokenB:viewer,tokenC:agent:a001"`,
hashed as they are read).  A request proves a token by `Authorization: Bearer`
or by the session cookie that `POST /login` sets; either way it becomes a
`Principal`.  A token is never logged, stored or echoed: the audit trail names
its holder and a fingerprint (the first 12 hex digits of its hash).

Roles nest: `viewer` reads, `supervisor` also acts on agents, calls and
call-backs and monitors, `admin` also reloads flows.  `agent:<id>` sees and
acts on that one agent only (the agent view).  A token may be limited to some
queues: it sees those queues, their calls and the agents able to serve them.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router.config.model import WEB_ROLES, WebToken

TOKENS_ENV = "ACD_WEB_TOKENS"
SESSION_COOKIE = "acd_session"
RANK = {"viewer": 1, "supervisor": 2, "admin": 3}
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Principal:
    """The holder of a valid token, as the API sees them."""
    name: str
    role: str                              # viewer | supervisor | admin | agent:<id>
    fingerprint: str                       # first 12 hex digits of the token's SHA-256
    queues: frozenset[str] | None = None   # None: every queue

    @property
    def agent(self) -> str | None:
        """The agent id of an agent token, else None."""
        return self.role.removeprefix("agent:") if self.role.startswith("agent:") else None

    def at_least(self, role: str) -> bool:
        """True when this role includes `role` (viewer < supervisor < admin)."""
        return RANK.get(self.role, 0) >= RANK[role]

    def sees_queue(self, queue: str | None) -> bool:
        return self.queues is None or queue in self.queues


class TokenError(ValueError):
    """ACD_WEB_TOKENS cannot be read; the message never quotes a token."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_from_env(value: str, known_agents: Iterable[str]) -> list[WebToken]:
    """Parse ACD_WEB_TOKENS: comma-separated `token:role` (role viewer, supervisor, admin or agent:<id>)."""
    agents = set(known_agents)
    tokens = []
    for index, entry in enumerate(part.strip() for part in value.split(",")):
        if not entry:
            continue
        token, sep, role = entry.partition(":")
        where = f"{TOKENS_ENV} entry #{index + 1}"
        if not sep or not token:
            raise TokenError(f"{where}: expected TOKEN:ROLE")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenError(f"{where}: the token is too short, use at least {MIN_TOKEN_CHARS} characters")
        if role not in WEB_ROLES and not (role.startswith("agent:") and role[6:] in agents):
            raise TokenError(f"{where}: unknown role {role!r}; expected viewer, supervisor, admin "
                             f"or agent:<agent id> of the config")
        tokens.append(WebToken(f"env#{index + 1}", digest(token), role))
    return tokens


class TokenBook:
    """The valid tokens (by hash) and the signed-in sessions."""

    def __init__(self, tokens: Iterable[WebToken], *, session_s: float = 12 * 3600.0) -> None:
        self._by_digest: dict[str, Principal] = {}
        for token in tokens:
            self._by_digest[token.sha256] = Principal(
                token.name, token.role, token.sha256[:12],
                frozenset(token.queues) if token.queues is not None else None)
        self.session_s = session_s
        self._sessions: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def for_centre(cls, tokens: Iterable[WebToken], environ: Mapping[str, str], agents: Iterable[str],
                   session_s: float) -> TokenBook:
        return cls([*tokens, *tokens_from_env(environ.get(TOKENS_ENV, ""), agents)], session_s=session_s)

    def __len__(self) -> int:
        return len(self._by_digest)

    def check(self, token: str) -> Principal | None:
        """The principal of a presented token; comparison in constant time per stored hash."""
        presented = digest(token)
        found = None
        for stored, principal in self._by_digest.items():
            if hmac.compare_digest(stored, presented):
                found = principal
        return found

    def open_session(self, principal: Principal) -> str:
        self._expire()
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (principal, time.monotonic() + self.session_s)
        return session

    def session(self, session: str) -> Principal | None:
        entry = self._sessions.get(session)
        if entry is None or entry[1] < time.monotonic():
            self._sessions.pop(session, None)
            return None
        return entry[0]

    def close_session(self, session: str) -> None:
        self._sessions.pop(session, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [key for key, (_, until) in self._sessions.items() if until < now]:
            del self._sessions[key]
