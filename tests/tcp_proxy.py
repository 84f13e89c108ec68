"""A loopback TCP proxy for tests that need a real network failure between a client and
a server (PostgreSQL, AMI, ...) without touching either of them.

Theory of operation
-------------------
`TcpProxy(target_host, target_port)` listens on 127.0.0.1 at a free port (`port`, known
after `start()`) and opens one connection to the target for every client it accepts,
then copies bytes both ways.  Three states, switched at once by plain (synchronous)
methods, so a test can call them from anywhere, callbacks included:

* flowing (the start, and after `restore()`): bytes are forwarded;
* `cut()`: every current connection is closed on both sides, as a crashed host or a
  reset link would look to each end, and new connections are accepted and closed at
  once (the port stays ours, so `restore()` cannot lose it to another process);
* `blackhole()`: connections stay open but nothing is forwarded in either direction,
  EOFs included: each end sees silence, as with a pulled cable or a firewall dropping
  packets.  New connections are accepted (the handshake is the kernel's) but not
  connected to the target.  Bytes sent meanwhile are held back, not dropped, as TCP
  retransmission would eventually deliver them: after `restore()` they flow on.

`close()` stops listening and closes every connection.  Counters `accepted` and
`refused` let a test wait for a client's reconnection attempts instead of sleeping.
Only loopback addresses are allowed as targets.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from urllib.parse import urlsplit, urlunsplit

FLOWING = "flowing"
CUT = "cut"
BLACKHOLE = "blackhole"
_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` (loopback only)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        if target_host != "localhost" and not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"TcpProxy forwards to loopback addresses only, not {target_host}")
        self.target = (target_host, target_port)
        self.mode = FLOWING
        self.accepted = 0
        self.refused = 0
        self._port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()

    @property
    def port(self) -> int:
        """The listening port (0 before `start()`)."""
        return self._port

    def dsn(self, dsn: str) -> str:
        """`dsn` (a URL) with its host:port replaced by this proxy's."""
        parts = urlsplit(dsn)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}127.0.0.1:{self._port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def start(self) -> None:
        """Listen on 127.0.0.1 at a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [link.task for link in self._links if link.task is not None]
        self._drop_links()
        self._flowing.set()  # wakes nothing: every link task was cancelled
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def cut(self) -> None:
        """Close every connection (both sides); close new ones at once until `restore()`."""
        self.mode = CUT
        self._flowing.clear()
        self._drop_links()

    def blackhole(self) -> None:
        """Keep connections open but forward nothing, either way, until `restore()`."""
        self.mode = BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again (held-back bytes first) and accept new connections normally."""
        self.mode = FLOWING
        self._flowing.set()

    def _drop_links(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        if self.mode == CUT or self._server is None:
            self.refused += 1
            client_writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(client_writer, asyncio.current_task())
        self._links.add(link)
        try:
            await self._flowing.wait()  # blackholed: accepted, never connected onwards
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            link.upstream = up_writer
            if link.aborted:  # cut while connecting
                return
            await asyncio.gather(self._pipe(client_reader, up_writer),
                                 self._pipe(up_reader, client_writer))
        except asyncio.CancelledError:
            pass  # cut() or close(): the link is already aborted
        finally:
            link.abort()
            self._links.discard(link)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until EOF; EOF (like data) is acted on only while flowing."""
        try:
            while True:
                data = await reader.read(_CHUNK)
                await self._flowing.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


class _Link:
    """One proxied connection: the client's side, the target's side once opened."""

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[None] | None) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.client.transport.abort()
        if self.upstream is not None:
            self.upstream.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
