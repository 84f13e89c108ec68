"""The guarded FastAGI server on real loopback sockets.

A fake Asterisk (a plain asyncio client) speaks the protocol; misbehaving
clients (half a header then EOF, silence, an oversize header, binary junk ...)
must each be dropped while a well-behaved session beside them is served.
`parse_reply` is checked on the reply shapes Asterisk sends.
"""
from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from router.pbx.fastagi import (
    AGIError,
    AGIProtocolError,
    AGIResponse,
    AGISession,
    FastAGIServer,
    parse_reply,
    reply_complete,
    script_name,
)

HANG_GUARD_S = 20.0  # only stops a broken test from hanging; never a speed assertion


def header(script: str = "ivr", **fields: str) -> bytes:
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "Local/5000@from-trunk-00000001;2",
        "agi_uniqueid": "1700000000.1",
        "agi_callerid": "0612345678",
        "agi_extension": "5000",
        **fields,
    }
    return b"".join(f"{key}: {value}\n".encode() for key, value in env.items()) + b"\n"


class Recorder:
    """An 'ivr' route that asks for one digit and records what it got."""

    def __init__(self) -> None:
        self.sessions: list[tuple[AGISession, AGIResponse]] = []

    async def __call__(self, session: AGISession) -> None:
        reply = await session.send("GET DATA beep 3000 1")
        self.sessions.append((session, reply))


async def good_asterisk(port: int, digit: str = "2") -> bytes:
    """Play Asterisk's side of one session; returns the command the route sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header())
    await writer.drain()
    command = await reader.readline()
    writer.write(f"200 result={digit}\n".encode())
    await writer.drain()
    assert await reader.read() == b""          # the route ended: connection closed
    writer.close()
    return command


async def dropped(port: int, payload: bytes, *, eof: bool) -> bytes:
    """Send ``payload`` (then EOF if asked); return what the server sent before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if eof:
        writer.write_eof()
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def serve(routes, **options) -> FastAGIServer:
    return await FastAGIServer(routes, "127.0.0.1", 0, **options).start()


# --- the bad clients ---------------------------------------------------------

BAD_CLIENTS = {
    "half header then EOF": (b"agi_network: yes\nagi_request: agi://x/ivr", True),
    "half line then EOF": (b"agi_netw", True),
    "header without its empty line, then EOF": (header()[:-1], True),
    "binary junk": (bytes(range(256)) * 4 + b"\n\n", False),
    "not an agi_ line": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    "header without agi_request": (b"agi_network: yes\n\n", False),
    "oversize header": (b"".join(b"agi_v%d: %s\n" % (i, b"x" * 60) for i in range(100)), False),
    "one endless line": (b"agi_request: " + b"y" * 5000, False),
    "unknown script": (header("nosuchscript"), False),
}


@pytest.mark.parametrize("name", BAD_CLIENTS)
async def test_bad_client_is_dropped_while_a_good_session_is_served(name: str) -> None:
    payload, eof = BAD_CLIENTS[name]
    recorder = Recorder()
    server = await serve({"ivr": recorder}, header_timeout_s=30.0, max_header_bytes=2048)
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(HANG_GUARD_S):
                sent_back, command = await asyncio.gather(
                    dropped(server.port, payload, eof=eof), good_asterisk(server.port)
                )
    finally:
        await server.close()
    assert sent_back == b""
    assert command == b"GET DATA beep 3000 1\n"
    assert [(reply.code, reply.result) for _, reply in recorder.sessions] == [(200, "2")]
    assert {entry["event"] for entry in logs} & {"fastagi.bad_header", "fastagi.unknown_script"}


async def test_silent_clients_do_not_hold_up_others_and_are_closed_after_the_timeout() -> None:
    recorder = Recorder()
    server = await serve({"ivr": recorder}, header_timeout_s=0.3)
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(HANG_GUARD_S):
                silent = asyncio.create_task(dropped(server.port, b"", eof=False))
                half = asyncio.create_task(dropped(server.port, b"agi_network: yes\n", eof=False))
                await asyncio.sleep(0)        # both connected before the good one
                await good_asterisk(server.port)
                assert await silent == b"" and await half == b""
    finally:
        await server.close()
    assert len(recorder.sessions) == 1
    assert [entry["event"] for entry in logs].count("fastagi.header_timeout") == 2


async def test_many_sessions_run_at_once() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def waits(session: AGISession) -> None:
        started.append(session.env["agi_uniqueid"])
        await release.wait()

    server = await serve({"ivr": waits})
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            clients = []
            for n in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(header(agi_uniqueid=str(n)))
                clients.append((reader, writer))
            while len(started) < 20:
                await asyncio.sleep(0.01)
            release.set()
            for reader, writer in clients:
                assert await reader.read() == b""
                writer.close()
    finally:
        await server.close()
    assert sorted(started, key=int) == [str(n) for n in range(20)]


# --- sessions ----------------------------------------------------------------

async def test_session_env_args_hangup_notice_and_multiline_errors() -> None:
    seen: dict[str, object] = {}

    async def route(session: AGISession) -> None:
        seen["script"] = session.script
        seen["args"] = session.args
        seen["callerid"] = session.env["agi_callerid"]
        seen["bad"] = await session.send("GET DATA")
        seen["unknown"] = await session.send("FROB")
        seen["after_hangup"] = await session.send("STREAM FILE beep #")
        seen["hung_up"] = session.hung_up

    server = await serve({"ivr": route})
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(header(agi_arg_1="en", agi_arg_2="vip"))
            assert await reader.readline() == b"GET DATA\n"
            writer.write(
                b"520-Invalid command syntax.  Proper usage follows:\n"
                b"Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
                b"520 End of proper usage.\n"
            )
            assert await reader.readline() == b"FROB\n"
            writer.write(b"510 Invalid or unknown command\n")
            assert await reader.readline() == b"STREAM FILE beep #\n"
            writer.write(
                b"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n"
            )
            assert await reader.read() == b""
            writer.close()
    finally:
        await server.close()
    assert seen["script"] == "ivr"
    assert seen["args"] == ["en", "vip"]
    assert seen["callerid"] == "0612345678"
    assert seen["bad"].code == 520 and "Usage: GET DATA" in seen["bad"].data
    assert seen["unknown"] == AGIResponse(510, data="Invalid or unknown command")
    assert seen["after_hangup"].code == 511 and not seen["after_hangup"].ok
    assert seen["hung_up"] is True


async def test_reply_timeout_and_eof_end_the_session_and_the_server_goes_on() -> None:
    outcomes: list[str] = []

    async def route(session: AGISession) -> None:
        try:
            await session.send("ANSWER")
        except AGIError as error:
            outcomes.append(type(error).__name__)
            raise

    server = await serve({"ivr": route}, command_timeout_s=0.3)
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            # Asterisk that never replies: the route's send times out.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(header())
            assert await reader.readline() == b"ANSWER\n"
            assert await reader.read() == b""
            writer.close()
            # Asterisk that closes instead of replying: AGIHangup.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(header())
            assert await reader.readline() == b"ANSWER\n"
            writer.close()
            while len(outcomes) < 2:
                await asyncio.sleep(0.01)
            recorder = Recorder()
            server._routes["ivr"] = recorder
            assert await good_asterisk(server.port) == b"GET DATA beep 3000 1\n"
    finally:
        await server.close()
    assert outcomes == ["AGIError", "AGIHangup"]


async def test_route_exception_is_logged_and_isolated() -> None:
    async def broken(session: AGISession) -> None:
        raise RuntimeError("bug in a route")

    recorder = Recorder()
    server = await serve({"broken": broken, "ivr": recorder})
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(HANG_GUARD_S):
                assert await dropped(server.port, header("broken"), eof=False) == b""
                await good_asterisk(server.port)
    finally:
        await server.close()
    assert "fastagi.route_failed" in [entry["event"] for entry in logs]
    assert len(recorder.sessions) == 1


async def test_command_with_a_line_break_is_refused() -> None:
    refused: list[str] = []

    async def route(session: AGISession) -> None:
        for command in ("SAY DIGITS 12\nHANGUP \"\"", "EXEC Dial PJSIP/1\r"):
            with pytest.raises(ValueError):
                await session.send(command)
            refused.append(command)

    server = await serve({"ivr": route})
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            sent = await dropped(server.port, header(), eof=False)
    finally:
        await server.close()
    assert sent == b"" and len(refused) == 2


async def test_close_cancels_running_sessions_after_the_grace_period() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(session: AGISession) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await serve({"ivr": forever})
    port = server.port
    async with asyncio.timeout(HANG_GUARD_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(header())
        await entered.wait()
        await server.close(grace_s=0.05)
        assert cancelled.is_set()
        assert await reader.read() == b""
        writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


# --- reply parsing ----------------------------------------------------------

@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["200 result=1"], AGIResponse(200, "1")),
        (["200 result=0"], AGIResponse(200, "0")),
        (["200 result=-1"], AGIResponse(200, "-1")),
        (["200 result=2 (timeout)"], AGIResponse(200, "2", "timeout")),
        (["200 result=1 (some data (nested))"], AGIResponse(200, "1", "some data (nested)")),
        (["200 result=0 endpos=8000"], AGIResponse(200, "0", extras={"endpos": "8000"})),
        (["200 result=49 (dtmf) endpos=1234"], AGIResponse(200, "49", "dtmf", {"endpos": "1234"})),
        (["200 result="], AGIResponse(200, "")),
        (["510 Invalid or unknown command"], AGIResponse(510, data="Invalid or unknown command")),
        (
            ["511 Command Not Permitted on a dead channel or intercept routine"],
            AGIResponse(511, data="Command Not Permitted on a dead channel or intercept routine"),
        ),
        (
            ["520-Invalid command syntax.", "Usage: X", "520 End of proper usage."],
            AGIResponse(520, data="Invalid command syntax.\nUsage: X\n520 End of proper usage."),
        ),
    ],
)
def test_parse_reply(lines: list[str], expected: AGIResponse) -> None:
    reply = parse_reply(lines)
    assert (reply.code, reply.result, reply.data, dict(reply.extras)) == (
        expected.code, expected.result, expected.data, dict(expected.extras)
    )
    assert reply.ok is (expected.code == 200)


@pytest.mark.parametrize(
    "line", ["", "HTTP/1.1 200 OK", "20 result=1", "200 resul=1", "abc result=1"]
)
def test_parse_reply_rejects_garbage(line: str) -> None:
    with pytest.raises(AGIProtocolError):
        parse_reply([line])


def test_reply_complete() -> None:
    assert not reply_complete([])
    assert reply_complete(["200 result=1"])
    assert not reply_complete(["520-Invalid command syntax."])
    assert not reply_complete(["520-Invalid command syntax.", "Usage: X"])
    assert reply_complete(["520-Invalid command syntax.", "Usage: X", "520 End of proper usage."])


def test_script_name() -> None:
    assert script_name("agi://127.0.0.1:4573/ivr") == "ivr"
    assert script_name("agi://127.0.0.1:4573/ivr?lang=en") == "ivr"
    assert script_name("agi://host/") == ""
