"""AmiLink against a tiny fake AMI server on a real loopback TCP socket.

These are the faults a real Asterisk cannot be made to show on demand: a
half-open link (the server reads but never answers), garbage on the wire, a
subscriber that raises, a connection that dies after an Originate was written
but before Asterisk answered it.  The real-Asterisk behaviour is covered in
tests/asterisk/.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from router.pbx.ami import (AmiError, AmiLink, DialEnd, Hangup, LinkDown, LinkUp, Newchannel, Resync,
                            UserEvent)

pytestmark = pytest.mark.asyncio(loop_scope="session")    # the loop of the `fake` fixture

SECRET = "s3cret-never-logged"
TIMEOUT_S = 10.0                       # guards against a hang, not a speed assertion


class FakeAmi:
    """Speaks just enough AMI: Login, Ping, CoreShowChannels, DeviceStateList, Originate."""

    def __init__(self) -> None:
        self.actions: list[dict[str, str]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.mute = False                 # read actions, answer nothing (half-open link)
        self.swallow_originates = 0       # drop the connection on the next N Originates, unanswered
        self.channels: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None
        self.logins = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def originates(self) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action") == "Originate"]

    async def push(self, text: str) -> None:
        """Send raw text to every connected client."""
        for writer in self.writers:
            if not writer.is_closing():
                writer.write(text.encode())
                await writer.drain()

    async def event(self, **headers: str) -> None:
        await self.push("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                action = await self._read_action(reader)
                if action is None:
                    return
                self.actions.append(action)
                if self.mute:
                    continue
                reply = self._reply(action)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply.encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):    # client gone, or the fake closing
            return

    @staticmethod
    async def _read_action(reader: asyncio.StreamReader) -> dict[str, str] | None:
        action: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                if action:
                    return action
                continue
            key, _, value = text.partition(": ")
            action[key] = value if key not in action else f"{action[key]}|{value}"

    def _reply(self, action: dict[str, str]) -> str | None:
        name, action_id = action.get("Action"), action.get("ActionID", "")
        head = f"ActionID: {action_id}\r\n"
        if name == "Login":
            self.logins += 1
            return f"Response: Success\r\n{head}Message: Authentication accepted\r\n\r\n"
        if name == "Ping":
            return f"Response: Success\r\n{head}Ping: Pong\r\n\r\n"
        if name == "CoreShowChannels":
            items = "".join(
                f"Event: CoreShowChannel\r\n{head}Channel: {c['Channel']}\r\nUniqueid: {c['Uniqueid']}\r\n"
                f"Linkedid: {c['Uniqueid']}\r\nContext: test\r\nApplication: Wait\r\n\r\n"
                for c in self.channels)
            return (f"Response: Success\r\n{head}EventList: start\r\nMessage: Channels will follow\r\n\r\n"
                    f"{items}Event: CoreShowChannelsComplete\r\n{head}EventList: Complete\r\n"
                    f"ListItems: {len(self.channels)}\r\n\r\n")
        if name == "DeviceStateList":
            return (f"Response: Success\r\n{head}EventList: start\r\nMessage: Device State Changes will "
                    f"follow\r\n\r\nEvent: DeviceStateChange\r\n{head}Device: PJSIP/1001\r\n"
                    f"State: NOT_INUSE\r\n\r\nEvent: DeviceStateListComplete\r\n{head}EventList: Complete\r\n"
                    f"ListItems: 1\r\n\r\n")
        if name in ("Setvar", "Redirect"):
            if action.get("Channel") == "gone":
                return f"Response: Error\r\n{head}Message: No such channel\r\n\r\n"
            return f"Response: Success\r\n{head}Message: {name} done\r\n\r\n"
        if name == "Originate":
            if self.swallow_originates:
                self.swallow_originates -= 1
                return None
            self.channels.append({"Channel": "Local/1@test-0001;1", "Uniqueid": action["ChannelId"]})
            return f"Response: Success\r\n{head}Message: Originate successfully queued\r\n\r\n"
        return f"Response: Error\r\n{head}Message: Invalid/unknown command\r\n\r\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def link_to(fake: FakeAmi, **options: float) -> AmiLink:
    settings = {"ping_interval_s": 0.2, "ping_timeout_s": 0.3, "action_timeout_s": 2.0, "connect_timeout_s": 1.0,
                "backoff_first_s": 0.05, "backoff_max_s": 0.2, **options}
    return AmiLink("127.0.0.1", fake.server.sockets[0].getsockname()[1], "acd-router", SECRET, **settings)


async def wait_for(predicate, timeout_s: float = TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_events_arrive_typed_with_none_for_missing_headers(fake: FakeAmi) -> None:
    link = link_to(fake)
    seen: list[object] = []
    link.subscribe(seen.append)
    await link.start()
    try:
        assert isinstance(seen[0], Resync) and seen[0].devices == {"PJSIP/1001": "NOT_INUSE"}
        assert isinstance(seen[1], LinkUp)
        await fake.event(Event="Newchannel", Channel="PJSIP/1001-1", Uniqueid="1.1", Linkedid="1.1")
        await fake.event(Event="SomethingElse", Foo="bar")
        await fake.event(Event="DialEnd", Channel="PJSIP/1001-1", DialStatus="ANSWER")
        await fake.event(Event="UserEvent", UserEvent="RouterAgent", Channel="X", action="login",
                         agent="1001")
        await wait_for(lambda: len(seen) >= 5)
        assert seen[2] == Newchannel("PJSIP/1001-1", "1.1", "1.1", None, None, None)
        assert seen[3] == DialEnd("PJSIP/1001-1", None, None, None, "ANSWER")
        assert isinstance(seen[4], UserEvent) and seen[4].name == "RouterAgent"
        assert seen[4].fields == {"action": "login", "agent": "1001"}
    finally:
        await link.close()


async def test_garbage_on_the_wire_is_skipped(fake: FakeAmi) -> None:
    link = link_to(fake)
    seen: list[object] = []
    link.subscribe(seen.append)
    await link.start()
    try:
        await fake.push("this is not AMI\r\n\x00\xff junk without a colon\r\n\r\n: \r\n\r\n")
        await fake.event(Event="Hangup", Channel="PJSIP/1001-1", Uniqueid="1.1", Cause="16")
        await wait_for(lambda: any(isinstance(e, Hangup) for e in seen))
        assert (await link.action({"Action": "Ping"})).get("Ping") == "Pong"
        assert link.connects == 1
    finally:
        await link.close()


async def test_a_raising_subscriber_is_logged_and_breaks_nothing(fake: FakeAmi) -> None:
    link = link_to(fake)
    seen: list[object] = []

    def explode(event: object) -> None:
        if isinstance(event, Hangup):
            raise RuntimeError("handler bug")

    link.subscribe(explode)
    link.subscribe(seen.append)
    await link.start()
    try:
        with capture_logs() as logs:
            await fake.event(Event="Hangup", Channel="A", Uniqueid="1", Cause="16")
            await fake.event(Event="Hangup", Channel="B", Uniqueid="2", Cause="16")
            await wait_for(lambda: sum(isinstance(e, Hangup) for e in seen) == 2)
        assert [entry["event"] for entry in logs].count("ami.subscriber_failed") == 2
        assert (await link.action({"Action": "Ping"})).get("Ping") == "Pong"
        assert link.connects == 1
    finally:
        await link.close()


async def test_half_open_link_is_detected_by_the_watchdog_and_reconnected(fake: FakeAmi) -> None:
    link = link_to(fake)
    seen: list[object] = []
    link.subscribe(seen.append)
    await link.start()
    try:
        fake.mute = True                      # the server reads and never answers again
        await wait_for(lambda: any(isinstance(e, LinkDown) for e in seen))
        fake.mute = False
        await wait_for(lambda: link.connects >= 2 and link.connected)
        down = next(e for e in seen if isinstance(e, LinkDown))
        assert "watchdog" in down.reason
        assert (await link.action({"Action": "Ping"})).get("Ping") == "Pong"
    finally:
        await link.close()


async def test_actions_are_bounded_and_fail_with_a_clear_error(fake: FakeAmi) -> None:
    link = link_to(fake, ping_interval_s=60)
    await link.start()
    try:
        fake.mute = True
        with pytest.raises(AmiError, match="Setvar: no response within"):
            await link.setvar("PJSIP/1-1", "X", "1")
        fake.mute = False
        with pytest.raises(AmiError, match="Bogus failed: Invalid/unknown command"):
            await link.action({"Action": "Bogus"})
    finally:
        await link.close()


async def test_connects_with_backoff_once_the_server_appears() -> None:
    server = FakeAmi()
    probe = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    link = AmiLink("127.0.0.1", port, "acd-router", SECRET, backoff_first_s=0.05, backoff_max_s=0.2)
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.sleep(0.3)              # a few refused attempts
        assert not link.connected
        server.server = await asyncio.start_server(server._client, "127.0.0.1", port)
        await link.wait_connected(TIMEOUT_S)
        assert server.logins == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await link.close()
        await server.close()


async def test_unanswered_originate_found_after_reconnect_is_not_sent_again(fake: FakeAmi) -> None:
    link = link_to(fake)
    await link.start()
    try:
        fake.swallow_originates = 1           # Asterisk took it, the link died before the response
        originate_id = link.new_originate_id()
        fake.channels.append({"Channel": "Local/1@test-0001;1", "Uniqueid": originate_id})
        taken = await asyncio.wait_for(
            link.originate({"Channel": "Local/1@test", "Application": "Wait", "Data": "1"},
                           originate_id=originate_id), TIMEOUT_S)
        assert taken == originate_id
        assert len(fake.originates()) == 1
        assert link.connects == 2
        sent = fake.originates()[0]
        assert sent["ChannelId"] == originate_id
        assert f"ACD_ORIGINATE_ID={originate_id}" in sent["Variable"].split("|")
    finally:
        await link.close()


async def test_unanswered_originate_without_a_channel_is_sent_again_once(fake: FakeAmi) -> None:
    link = link_to(fake)
    await link.start()
    try:
        fake.swallow_originates = 1           # lost before Asterisk saw it: no channel appears
        taken = await asyncio.wait_for(
            link.originate({"Channel": "Local/1@test", "Application": "Wait", "Data": "1"}), TIMEOUT_S)
        assert [o["ChannelId"] for o in fake.originates()] == [taken, taken]
        assert link.originates_sent == 2
        assert [c["Uniqueid"] for c in fake.channels] == [taken]
    finally:
        await link.close()


async def test_the_secret_never_reaches_the_logs(fake: FakeAmi) -> None:
    with capture_logs() as logs:
        link = link_to(fake)
        await link.start()
        link.cut("test")
        await link.wait_connected(TIMEOUT_S)
        await link.close()
    assert logs and SECRET not in repr(logs)


async def test_pipeline_keeps_the_order_and_reports_a_failed_action(fake):
    link = link_to(fake)
    await link.start()
    try:
        actions = [{"Action": "Setvar", "Channel": "SIP/a-1", "Variable": f"V{n}", "Value": str(n)} for n in range(3)]
        actions.append({"Action": "Redirect", "Channel": "SIP/a-1", "Context": "c", "Exten": "s", "Priority": "1"})
        replies = await link.pipeline(actions)
        assert len(replies) == 4
        sent = [(a["Action"], a.get("Variable")) for a in fake.actions if a["Action"] in ("Setvar", "Redirect")]
        assert sent == [("Setvar", "V0"), ("Setvar", "V1"), ("Setvar", "V2"), ("Redirect", None)]
        with pytest.raises(AmiError, match="Redirect failed: No such channel"):
            await link.pipeline([{"Action": "Setvar", "Channel": "SIP/a-1", "Variable": "X", "Value": "1"},
                                 {"Action": "Redirect", "Channel": "gone", "Context": "c"}])
    finally:
        await link.close()
