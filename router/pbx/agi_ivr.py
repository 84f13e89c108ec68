"""Runs one `FlowSession` over one FastAGI session: the IVR of a real call.

Theory of operation
-------------------
The flow interpreter is sans-IO; this module is its driver on Asterisk.  Each
batch of outputs is carried out in order with AGI commands, and what the
caller did becomes the session's next input:

- ``Play``: ``STREAM FILE <prompt> <escape keys>`` per prompt (escape keys
  only with barge-in; a key stops the rest of the batch's prompts).  Prompts
  are names; Asterisk picks ``<language>/<name>`` from the channel's
  language, which is set with ``SET VARIABLE CHANNEL(language)`` whenever the
  flow's language changes.  A missing sound file is logged and skipped.
- ``Say``: ``SAY DIGITS`` / ``SAY NUMBER`` (``date``: ``SAY DATE`` of the
  day's epoch seconds).
- ``Collect``: ``WAIT FOR DIGIT`` key by key (first key within ``timeout_s``,
  the next within ``inter_digit_s``) until ``max_digits`` or the terminator;
  keys typed during a barge-in prompt of the same batch count first.
  Nothing typed → `NoInput`.
- the end of the IVR sets ``ROUTER_NEXT`` (and what goes with it) for the
  dialplan of ``[router-inbound]``: ``Enqueue`` → ``hold`` (the caller then
  waits in ``[router-hold]``), ``Transfer`` → ``transfer`` + ``ROUTER_TARGET``,
  ``Voicemail`` → ``voicemail`` + ``ROUTER_MAILBOX``, ``Hangup`` → ``hangup``
  (after its message), ``OfferCallback`` → the driver's ``on_callback`` decides
  (it records and persists the call-back): kept → the flow's confirmation
  prompts, then ``hangup``; refused → the ``callback-refused`` prompt, then
  ``hold`` (the caller waits in the queue instead); not needed (None: an agent
  was free and takes the call) → ``hold`` without a word.

A hang-up (the ``HANGUP`` line, a 511 reply, the connection closing) becomes
`HungUp`; a result of -1 is followed by a ``CHANNEL STATUS`` probe, because
Asterisk answers -1 both for a hang-up and for a missing sound file.  `run_flow` returns the session's last outputs so the adapter can
queue the call; events go to ``emit`` as they come.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from typing import Any

import structlog

from router.events import Event
from router.ivr.session import (Collect, Digits, Enqueue, FlowSession, Hangup, HungUp, NoInput, OfferCallback,
                                Play, PromptDone, Say, Transfer, TransferResult, Voicemail)
from router.pbx import dialplan as dp
from router.pbx.fastagi import AGIHangup, AGIResponse, AGISession

log = structlog.get_logger("router.pbx.agi_ivr")

ESCAPE_KEYS = "0123456789*#"


class CallerGone(Exception):
    """The caller hung up while the IVR was talking to them."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


class AgiFlowDriver:
    """Carries out one session's outputs on one AGI connection."""

    def __init__(self, agi: AGISession, session: FlowSession, emit: Callable[[Event], None],
                 on_callback: Callable[[OfferCallback], Awaitable[bool | None]] | None = None,
                 hold_variables: Callable[[str], dict[str, str]] | None = None,
                 on_enqueue: Callable[[Enqueue], str | None] | None = None,
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.agi = agi
        self.session = session
        self.emit = emit
        self.on_callback = on_callback
        self.hold_variables = hold_variables
        self.on_enqueue = on_enqueue
        self.settle = settle            # awaited after a batch's events, before its commands (a mute)
        self.language: str | None = None

    async def run(self) -> list[Any]:
        """Run the flow to its end; returns the commands of the final batch."""
        outputs = self.session.start()
        while True:
            commands = self._events_out(outputs)
            if self.settle is not None:
                await self.settle()
            if self.session.finished:
                await self._finish(commands)
                return commands
            try:
                caller_input = await self._carry_out(commands)
            except CallerGone:
                caller_input = HungUp()
            outputs = self.session.handle(caller_input, _now())
            if isinstance(caller_input, HungUp):
                self._events_out(outputs)
                return []

    def _events_out(self, outputs: list[Any]) -> list[Any]:
        commands = []
        for output in outputs:
            if isinstance(output, Event):
                self.emit(output)
            else:
                commands.append(output)
        return commands

    async def _send(self, command: str) -> AGIResponse:
        try:
            reply = await self.agi.send(command)
        except AGIHangup:
            raise CallerGone() from None
        if reply.code == 511 or self.agi.hung_up:
            raise CallerGone()
        return reply

    async def _probe(self) -> None:
        """After a result of -1 (hang-up, or a failure such as a missing file): `CallerGone`
        if the channel is gone.  Asterisk's HANGUP line comes after that reply, ahead of
        the next one."""
        await self._send("CHANNEL STATUS")

    async def _carry_out(self, commands: list[Any]) -> Any:
        """Play, say and collect; the input the session waits for."""
        typed = ""
        for command in commands:
            if isinstance(command, Play):
                if typed:
                    continue                      # barged in: the rest of the prompts are skipped
                typed = await self._play(command)
            elif isinstance(command, Say):
                if not typed:
                    await self._say(command)
            elif isinstance(command, Collect):
                return await self._collect(command, typed)
            elif isinstance(command, Transfer):
                await self._set(dp.TARGET, command.target)
                return TransferResult(True)       # the dialplan dials once the AGI ends
        return Digits(typed) if typed else PromptDone()

    async def _language(self, language: str) -> None:
        if language != self.language:
            await self._set("CHANNEL(language)", language)
            self.language = language

    async def _play(self, play: Play) -> str:
        await self._language(play.language)
        escape = ESCAPE_KEYS if play.barge_in else ""
        for prompt in play.prompts:
            reply = await self._send(f'STREAM FILE {_word(prompt)} "{escape}"')
            if reply.result == "-1":
                await self._probe()
                log.warning("ivr.prompt_missing", prompt=prompt, language=play.language)
            elif reply.result not in ("", "0"):
                return chr(int(reply.result))
        return ""

    async def _say(self, say: Say) -> None:
        await self._language(say.language)
        value = "".join(ch for ch in say.value if ch.isdigit()) or "0"
        if say.kind == "number":
            await self._send(f'SAY NUMBER {value} ""')
        elif say.kind == "date":
            try:
                day = date.fromisoformat(say.value)
            except ValueError:
                await self._send(f'SAY DIGITS {value} ""')
                return
            epoch = int(datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp())
            await self._send(f'SAY DATE {epoch} ""')
        else:
            await self._send(f'SAY DIGITS {value} ""')

    async def _collect(self, collect: Collect, typed: str) -> Digits | NoInput:
        keys = collect.typed + typed
        while len(keys) < collect.max_digits and not (collect.terminator and keys.endswith(collect.terminator)):
            timeout_s = collect.inter_digit_s if keys else collect.timeout_s
            reply = await self._send(f"WAIT FOR DIGIT {int(timeout_s * 1000)}")
            if reply.result == "-1":
                await self._probe()
            if reply.result in ("", "0", "-1"):
                break
            keys += chr(int(reply.result))
        return Digits(keys) if keys else NoInput()

    async def _set(self, variable: str, value: str) -> None:
        await self._send(f'SET VARIABLE {variable} "{_quoted(value)}"')

    async def _enqueue(self, enqueue: Enqueue, variables: dict[str, str]) -> None:
        """ROUTER_NEXT=hold and the hold variables in one ``EXEC MSet``; then ``on_enqueue``
        queues the call, and the command it returns (an ``EXEC Dial`` when an agent is free)
        is sent with its reply left for the caller of `run`.  Never two commands in flight:
        Asterisk reads AGI commands through a stdio buffer and polls the socket, so a second
        line that arrives with the first would sit unread."""
        pairs = ",".join(f"{name}={_quoted(value).replace(',', '')}" for name, value in variables.items())
        await self._send(f'EXEC MSet "{pairs}"')
        follow_up = self.on_enqueue(enqueue) if self.on_enqueue is not None else None
        if follow_up is not None:
            self.agi.write(follow_up)

    async def _finish(self, commands: list[Any]) -> None:
        """The IVR is over: tell [router-inbound] what comes next."""
        try:
            offer = next((c for c in commands if isinstance(c, OfferCallback)), None)
            if offer is not None:
                kept = await self.on_callback(offer) if self.on_callback is not None else False
                if not kept:
                    if kept is False:           # None: not needed, an agent takes the call now
                        await self._play(Play(("callback-refused",), False, self.session.language))
                    await self._set(dp.NEXT, dp.NEXT_HOLD)
                    return
            for command in commands:
                if isinstance(command, Play):
                    await self._play(Play(command.prompts, False, command.language))
                elif isinstance(command, Enqueue):
                    extra = self.hold_variables(command.queue) if self.hold_variables else {}
                    await self._enqueue(command, {**extra, dp.NEXT: dp.NEXT_HOLD})
                elif isinstance(command, Voicemail):
                    await self._set(dp.MAILBOX, command.box)
                    await self._set(dp.NEXT, dp.NEXT_VOICEMAIL)
                elif isinstance(command, Hangup):
                    if command.message:
                        await self._play(Play((command.message,), False, command.language))
                    await self._set(dp.NEXT, dp.NEXT_HANGUP)
                elif isinstance(command, OfferCallback):
                    await self._set(dp.NEXT, dp.NEXT_HANGUP)
            if self.session.outcome == "transferred":
                await self._set(dp.NEXT, dp.NEXT_TRANSFER)
        except CallerGone:
            log.info("ivr.caller_gone_at_end", outcome=self.session.outcome)


def _word(text: str) -> str:
    """One AGI argument without spaces or quotes (prompt names are validated names)."""
    return "".join(ch for ch in text if ch not in ' "\\\r\n') or "silence/1"


def _quoted(text: str) -> str:
    return "".join(ch for ch in text if ch not in '"\\\r\n')
