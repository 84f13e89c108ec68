"""Pushes the board to any number of viewers (Server-Sent Events) without slowing routing.

Every `push_interval_s` the hub builds the board's view once, diffs it with the
previous one and, when something changed (or every few seconds, to keep the
browser's clock in step), encodes the delta once per visibility scope and puts
it in each viewer's bounded buffer, FAN_OUT_SLICE viewers per turn of the event
loop, so that routing timers run between slices rather than after 200 socket
writes.  A newcomer gets the board as last pushed (encoded once per scope), so
its snapshot and the next delta fit together.  A viewer whose buffer is full is too slow
(or gone): it is dropped, the events are not; its browser reconnects and gets
a fresh snapshot.  Routing never waits for a viewer: building a view is a read
of in-memory state, and handing out a message is a `put_nowait`.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from router.web.auth import Principal
from router.web.board import Board, View, diff, visible

log = structlog.get_logger("router.web.hub")

VIEWER_BUFFER = 32                     # messages a viewer may lag behind before it is dropped
HEARTBEAT_S = 5.0
FAN_OUT_SLICE = 10                     # viewers handed a push per turn of the event loop (benchmarks/web.py)


class Viewer:
    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.messages: asyncio.Queue[bytes | None] = asyncio.Queue(VIEWER_BUFFER)   # None: dropped
        self.dropped = False


class Hub:
    def __init__(self, board: Board, now: Callable[[], float], push_interval_s: float) -> None:
        self.board, self.now, self.push_interval_s = board, now, push_interval_s
        self.viewers: set[Viewer] = set()
        self.view: View = {}
        self.dropped_viewers = 0
        self.pushes = 0
        self._last_sent = 0.0
        self._snapshots: dict[tuple[Any, ...], bytes] = {}   # per scope, for the board last pushed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.view = self.board.view(self.now())
        self._task = asyncio.create_task(self._run(), name="router.web.hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for viewer in list(self.viewers):
            self._drop(viewer, count=False)

    def join(self, principal: Principal) -> tuple[Viewer, bytes]:
        """A new viewer and its first message: the last pushed board as it may see it (encoded
        once per scope and push); the next delta is computed from that same board."""
        viewer = Viewer(principal)
        self.viewers.add(viewer)
        scope = (principal.agent, principal.queues)
        snapshot = self._snapshots.get(scope)
        if snapshot is None:
            part = {"set": visible(principal, self.view, self._agent_queues()), "del": {}}
            snapshot = self._snapshots[scope] = self._encode("snapshot", part)
        return viewer, snapshot

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def snapshot_for(self, principal: Principal) -> dict[str, Any]:
        """The current board as `principal` may see it (for the JSON API)."""
        return visible(principal, self.board.view(self.now()), self._agent_queues())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.push_interval_s)
            try:
                for handed, _ in enumerate(self._deliveries(), 1):
                    if handed % FAN_OUT_SLICE == 0:
                        await asyncio.sleep(0)  # let routing run between slices of viewers
            except Exception:               # a bug in one push must not end the dashboard
                log.exception("web.push_failed")

    def tick(self) -> None:
        """One push, handed to every viewer at once (tests; the service pushes in slices)."""
        for _ in self._deliveries():
            pass

    def _deliveries(self) -> Iterator[Viewer]:
        """Build the board, diff it, and hand the delta to each viewer in turn (yielding each)."""
        new = self.board.view(self.now())
        delta = diff(self.view, new)
        self.view = new
        first_event, self.board.first_unpushed = self.board.first_unpushed, None
        quiet = not delta["set"] and not delta["del"]
        if not quiet:
            self._snapshots.clear()
        elif time.monotonic() - self._last_sent < HEARTBEAT_S:
            return
        self._last_sent = time.monotonic()
        self.pushes += 1
        encoded: dict[tuple[Any, ...], bytes] = {}
        agent_queues = self._agent_queues()
        for viewer in list(self.viewers):
            if viewer not in self.viewers:
                continue                    # left while an earlier slice was handed out
            principal = viewer.principal
            scope = (principal.agent, principal.queues)
            message = encoded.get(scope)
            if message is None:
                part = {"set": visible(principal, delta["set"], agent_queues),
                        "del": visible(principal, delta["del"], agent_queues)}
                message = encoded[scope] = self._encode("delta", part, first_event if not quiet else None)
            try:
                viewer.messages.put_nowait(message)
            except asyncio.QueueFull:
                self._drop(viewer)
            yield viewer

    def _drop(self, viewer: Viewer, *, count: bool = True) -> None:
        self.viewers.discard(viewer)
        viewer.dropped = True
        if count:
            self.dropped_viewers += 1
            log.warning("web.viewer_dropped", viewer=viewer.principal.name, buffer=VIEWER_BUFFER)
        while not viewer.messages.empty():
            viewer.messages.get_nowait()
        viewer.messages.put_nowait(None)

    def _agent_queues(self) -> dict[str, set[str]]:
        return {agent_id: agent.queues for agent_id, agent in self.board.engine.agents.items()}

    def _encode(self, kind: str, part: dict[str, Any], first_event: float | None = None) -> bytes:
        body = {"type": kind, "now": self.now(), "sent": time.time(), "first_event": first_event, **part}
        return b"data: " + json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n\n"
