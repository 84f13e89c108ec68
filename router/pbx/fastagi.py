"""A guarded FastAGI server: Asterisk's ``AGI(agi://host:port/NAME)`` calls land here.

Theory of operation
-------------------
FastAGI is a line protocol over TCP.  Asterisk connects, sends a header of
``agi_key: value`` lines ended by an empty line, then the script sends one
command per line and reads one reply per command::

    200 result=1 (data) endpos=1234     success; data and key=value extras optional
    510 Invalid or unknown command
    511 Command Not Permitted on a dead channel or intercept routine
    520-Invalid command syntax.  Proper usage follows:
    ...usage lines...
    520 End of proper usage.

When the caller hangs up, Asterisk sends a lone ``HANGUP`` line once, ahead of
whatever reply comes next; later commands get 511 replies, and the socket
closes when the AGI ends.

panoramisk 1.4's FastAGI reader loops on the header without checking for EOF:
a client that sends half a header and closes freezes the whole event loop.  So
this server reads the header itself, and every read is bounded: the header
must arrive complete (ended by its empty line, not by EOF) within
``header_timeout_s`` and ``max_header_bytes``, each line must be an
``agi_*: value`` pair, and every command's reply must come within
``command_timeout_s``.  A connection that breaks a rule is logged and closed;
each connection runs in its own task, so one bad client never holds up
another.  The script name is the path of ``agi_request``
(``agi://127.0.0.1:4573/ivr?x=1`` → ``ivr``); it selects the route, an async
function that receives an `AGISession`.  A route's exception is logged and
closes only its own connection.

Commands are strings the caller builds (``GET DATA beep 3000 1``); a command
with a line break is refused, so a digit string or caller id passed in one
can never become a second command.  `parse_reply` turns reply lines into an
`AGIResponse`; it is pure and tested on its own.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger("router.pbx.fastagi")
CLOSE_TIMEOUT_S = 5.0          # sessions cancelled by `close` end within this (a stuck one is logged, not awaited)

_HEADER_LINE = re.compile(rb"(agi_[a-z0-9_]+): ?(.*?)\r?\n", re.ASCII)
_REPLY_LINE = re.compile(r"(\d{3})([ -])(.*)")
_SUCCESS = re.compile(r"result=(\S*)(?:\s+\((.*)\))?((?:\s+[\w-]+=\S*)*)\s*")
_EXTRA = re.compile(r"([\w-]+)=(\S*)")


class AGIError(Exception):
    """The FastAGI conversation cannot go on."""


class AGIHangup(AGIError):
    """Asterisk closed the connection (the channel is gone and the AGI ended)."""


class AGIProtocolError(AGIError):
    """Asterisk sent something that is not an AGI reply."""


@dataclass(frozen=True)
class AGIResponse:
    """One reply: ``code`` 200 on success; ``result`` and ``data`` as Asterisk sent them."""

    code: int
    result: str = ""
    data: str = ""
    extras: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 200


def parse_reply(lines: Sequence[str]) -> AGIResponse:
    """Parse one reply (one line, or a ``520-`` block), without line ends."""
    if not lines:
        raise AGIProtocolError("empty reply")
    match = _REPLY_LINE.fullmatch(lines[0])
    if match is None:
        raise AGIProtocolError(f"not an AGI reply: {lines[0]!r}")
    code, text = int(match[1]), match[3]
    if match[2] == "-":    # multi-line: the usage text up to the closing "NNN " line
        return AGIResponse(code, data="\n".join([text, *lines[1:]]))
    if code != 200:
        return AGIResponse(code, data=text)
    success = _SUCCESS.fullmatch(text)
    if success is None:
        raise AGIProtocolError(f"malformed 200 reply: {lines[0]!r}")
    extras = dict(_EXTRA.findall(success[3]))
    return AGIResponse(200, success[1], success[2] or "", MappingProxyType(extras))


def reply_complete(lines: Sequence[str]) -> bool:
    """Whether ``lines`` hold a whole reply (a ``NNN-`` block ends with ``NNN ``)."""
    if not lines:
        return False
    first = lines[0]
    if len(first) > 3 and first[3] == "-":
        return len(lines) > 1 and lines[-1].startswith(first[:3] + " ")
    return True


class AGISession:
    """One FastAGI conversation: the header as ``env``, then commands and replies."""

    def __init__(
        self,
        env: Mapping[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        command_timeout_s: float,
    ) -> None:
        self.env = MappingProxyType(dict(env))
        self.hung_up = False
        self._reader = reader
        self._writer = writer
        self._command_timeout_s = command_timeout_s
        self._lock = asyncio.Lock()

    @property
    def script(self) -> str:
        """The route name: the path of ``agi_request`` without its slash."""
        return script_name(self.env.get("agi_request", ""))

    @property
    def args(self) -> list[str]:
        """``agi_arg_1`` ... in order (the AGI() application's extra arguments)."""
        args = []
        while (arg := self.env.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(arg)
        return args

    async def send(self, command: str) -> AGIResponse:
        """Send one command and return its reply.

        Raises `AGIHangup` if the connection closes, `AGIError` on a reply
        timeout (the connection is then closed) and `AGIProtocolError` on
        garbage; ``ValueError`` for a command with a line break in it.
        """
        async with self._lock:
            self.write(command)
            try:
                await self._writer.drain()
            except ConnectionError as error:
                raise AGIHangup(str(error)) from error
            return await self.reply(command.split(" ", 1)[0])

    def write(self, command: str) -> None:
        """Send a command without waiting for its reply, which `reply` reads later (a command
        that runs long, such as ``EXEC Dial``).  One at a time: Asterisk reads commands
        through a stdio buffer and polls the socket, so a second line sent before the first
        reply can sit unread."""
        if "\n" in command or "\r" in command:
            raise ValueError(f"AGI command with a line break: {command!r}")
        self._writer.write(command.encode() + b"\n")

    async def reply(self, what: str = "command", *, timeout_s: float | None = -1.0) -> AGIResponse:
        """The next reply; `timeout_s` None waits as long as the command runs (EXEC Dial)."""
        timeout_s = self._command_timeout_s if timeout_s == -1.0 else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return parse_reply(await self._read_reply())
        except TimeoutError:
            self._writer.close()
            raise AGIError(f"no reply to {what} within {timeout_s} s") from None
        except ConnectionError as error:
            raise AGIHangup(str(error)) from error

    async def _read_reply(self) -> list[str]:
        lines: list[str] = []
        while not reply_complete(lines):
            try:
                raw = await self._reader.readline()
            except ValueError:        # a line longer than the stream's limit
                raise AGIProtocolError("reply line too long") from None
            if not raw.endswith(b"\n"):
                raise AGIHangup("connection closed by Asterisk")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if line == "HANGUP" and not lines:
                self.hung_up = True
                continue
            lines.append(line)
        return lines

    async def close(self) -> None:
        """Close the connection; Asterisk then continues the dialplan."""
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout=1.0)
        except (ConnectionError, TimeoutError):
            pass


AGIRoute = Callable[[AGISession], Awaitable[None]]


def script_name(request: str) -> str:
    """``agi://127.0.0.1:4573/ivr?lang=en`` → ``ivr``."""
    return urlsplit(request).path.strip("/")


class BadHeader(Exception):
    """A FastAGI header that breaks a rule; the message says which."""


async def read_header(
    reader: asyncio.StreamReader, *, max_bytes: int
) -> dict[str, str]:
    """Read ``agi_*`` lines up to the empty line; `BadHeader` on EOF, junk or size."""
    env: dict[str, str] = {}
    size = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:            # a line longer than the stream's limit
            raise BadHeader("header line too long") from None
        size += len(raw)
        if size > max_bytes:
            raise BadHeader(f"header over {max_bytes} bytes")
        if not raw.endswith(b"\n"):
            raise BadHeader(f"connection closed after {len(env)} header lines")
        if raw in (b"\n", b"\r\n"):
            if "agi_request" not in env:
                raise BadHeader("header without agi_request")
            return env
        match = _HEADER_LINE.fullmatch(raw)
        if match is None:
            raise BadHeader(f"not an agi_* header line: {raw[:80]!r}")
        env[match[1].decode()] = match[2].decode("utf-8", "replace")


class FastAGIServer:
    """Accepts FastAGI connections and runs the route named by each request.

    ``routes`` maps script names to async functions taking an `AGISession`.
    Use ``async with FastAGIServer(...)`` or `start` / `close`; ``port=0``
    picks a free port (see `port`).
    """

    def __init__(
        self,
        routes: Mapping[str, AGIRoute],
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        header_timeout_s: float = 5.0,
        max_header_bytes: int = 16384,
        command_timeout_s: float = 30.0,
    ) -> None:
        self._routes = dict(routes)
        self._host = host
        self._port = port
        self._header_timeout_s = header_timeout_s
        self._max_header_bytes = max_header_bytes
        self._command_timeout_s = command_timeout_s
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> FastAGIServer:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=self._max_header_bytes
        )
        log.info("fastagi.listening", host=self._host, port=self.port)
        return self

    async def stop_accepting(self) -> None:
        """Close the listening socket (Asterisk's next AGI() fails at once); sessions go on."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def close(self, *, grace_s: float = 0.0) -> None:
        """Stop accepting; give running sessions ``grace_s`` to finish, then cancel them."""
        await self.stop_accepting()
        if self._sessions and grace_s > 0:
            await asyncio.wait(self._sessions, timeout=grace_s)
        for task in self._sessions:
            task.cancel()
        if self._sessions:
            _, stuck = await asyncio.wait(self._sessions, timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.error("fastagi.sessions_not_closed", count=len(stuck))

    async def __aenter__(self) -> FastAGIServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of our own per connection: `close` may cancel it, which the
        # task asyncio.start_server runs this callback in does not tolerate.
        task = asyncio.create_task(self._run(reader, writer))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer, writer.get_extra_info("peername"))
        finally:
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        try:
            async with asyncio.timeout(self._header_timeout_s):
                env = await read_header(reader, max_bytes=self._max_header_bytes)
        except TimeoutError:
            log.warning("fastagi.header_timeout", peer=peer, timeout_s=self._header_timeout_s)
            return
        except BadHeader as error:
            log.warning("fastagi.bad_header", peer=peer, reason=str(error))
            return
        except ConnectionError as error:
            log.warning("fastagi.connection_lost", peer=peer, reason=str(error))
            return
        session = AGISession(env, reader, writer, self._command_timeout_s)
        route = self._routes.get(session.script)
        if route is None:
            log.warning("fastagi.unknown_script", peer=peer, script=session.script)
            return
        bound = structlog.contextvars.bound_contextvars(
            agi_script=session.script, uniqueid=env.get("agi_uniqueid", "")
        )
        with bound:
            try:
                await route(session)
            except AGIHangup:
                log.info("fastagi.hangup", peer=peer)
            except AGIError as error:
                log.warning("fastagi.session_failed", peer=peer, reason=str(error))
            except Exception:
                log.exception("fastagi.route_failed", peer=peer)
            finally:
                await session.close()
