"""Test harness for the sandbox Asterisk: where it is, its CLI, and a minimal AMI client.

`Ami` is panoramisk's `Manager`, logged in as the router's account, wrapped just
enough for tests: every event is recorded and `wait_event` waits for the first
recorded one that matches.  The real adapter (router/pbx) comes later.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from panoramisk import Manager
from panoramisk.message import Message

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "asterisk-sandbox"
AMI_TIMEOUT_S = 20.0           # guards against a hang, not a speed assertion


@dataclass(frozen=True)
class Sandbox:
    """How to reach the sandbox (values fixed by asterisk_conf/)."""

    host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "acd-router"
    ami_secret: str = "acd-router-sandbox"
    agi_port: int = 4573
    root: Path = Path(os.environ.get("ACD_ASTERISK_ROOT", "/var/cache/acd-router/asterisk-sid"))

    @property
    def console_log(self) -> Path:
        """Asterisk's console output since it was started (the script's ROOT.log)."""
        return self.root.parent / f"{self.root.name}.log"

    def cli(self, command: str) -> str:
        """Output of an Asterisk CLI command, run through the sandbox script."""
        done = subprocess.run(
            [str(SCRIPT), "cli", command], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise AssertionError(f"asterisk-sandbox cli {command!r} failed:\n{done.stderr}")
        return done.stdout


class Ami:
    """panoramisk's Manager with recorded events; closes without reconnecting."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.events: list[Message] = []
        self._arrived = asyncio.Event()
        self.manager = Manager(
            host=sandbox.host,
            port=sandbox.ami_port,
            username=sandbox.ami_username,
            secret=sandbox.ami_secret,
            ping_delay=3600,
            on_disconnect=lambda manager, exc: None,
        )
        self.manager.register_event("*", self._record)

    def _record(self, manager: Manager, event: Message) -> None:
        self.events.append(event)
        self._arrived.set()

    async def connect(self) -> Message:
        """Connect and log in; returns the Login response."""
        await asyncio.wait_for(self.manager.connect(), AMI_TIMEOUT_S)
        return await asyncio.wait_for(self.manager.authenticated_future, AMI_TIMEOUT_S)

    async def action(self, action: dict[str, object]) -> Message | list[Message]:
        return await asyncio.wait_for(self.manager.send_action(action), AMI_TIMEOUT_S)

    async def wait_event(
        self,
        predicate: Callable[[Message], bool],
        *,
        after: Message | None = None,
        timeout_s: float = AMI_TIMEOUT_S,
    ) -> Message:
        """The first recorded event (past or future, but later than ``after``) that matches."""
        seen = 0 if after is None else next(
            index + 1 for index, event in enumerate(self.events) if event is after
        )
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._arrived.clear()
                await self._arrived.wait()

    async def set_variables(self, channel: str, **values: str) -> None:
        """AMI Setvar of each variable on ``channel``."""
        for variable, value in values.items():
            reply = await self.action(
                {"Action": "Setvar", "Channel": channel, "Variable": variable, "Value": value}
            )
            assert reply.success, dict(reply)

    async def redirect(self, channel: str, context: str, exten: str = "s") -> None:
        """AMI Redirect of ``channel`` to ``context,exten,1``."""
        reply = await self.action(
            {"Action": "Redirect", "Channel": channel, "Context": context,
             "Exten": exten, "Priority": "1"}
        )
        assert reply.success, dict(reply)

    def close(self) -> None:
        self.manager.connection_lost = lambda exc: None    # no reconnect after our own close
        self.manager.close()
