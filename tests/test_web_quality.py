"""Quality monitoring over HTTP against the real service and a real PostgreSQL: recordings (list,
audio with Range, path safety), call timelines, scorecards, evaluations and acknowledgements (roles,
errors, the events they record), proposals, calibration and the quality figures beside AHT, FCR, CSAT.

Calls are seeded as the router records them (call.arrived, ivr.*, queue.joined, call.connected,
agent.state, call.ended, survey.answered, recording.saved) with real WAV files in a temporary
recordings directory; evaluations go through the API, as the page sends them."""
from __future__ import annotations

import asyncio
import json
import math
import os
import struct
import textwrap
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from router.quality.scorecard import load_scorecards, score
from tests.web_harness import CENTRE, TOKENS, Live, start_live, stop_live

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]   # the loop of the fixtures

QUALITY_CENTRE = CENTRE + """\
    recording: {directory: recordings, retention_days: 30}
    scorecards: scorecards
"""

BILLING_CARD = """\
    scorecard: service
    title: Customer service calls
    queues: [billing]
    sections:
      - id: opening
        title: Opening
        weight: 1
        questions:
          - {id: greeting, text: Greeted the caller with the centre's script, kind: yes_no}
          - {id: identity, text: Verified the account holder, kind: yes_no, critical: true, allow_na: true}
      - id: resolution
        title: Resolution
        weight: 3
        questions:
          - {id: understood, text: Understood the need, kind: scale, weight: 2}
          - {id: resolved, text: Resolved the request, kind: scale}
"""

TECH_CARD = """\
    scorecard: technical
    title: Technical support calls
    queues: [tech]
    sections:
      - id: fix
        title: Fix
        weight: 1
        questions:
          - {id: fixed, text: Fixed the fault, kind: scale}
          - {id: courtesy, text: Courteous, kind: yes_no}
"""

GOOD = {"greeting": "yes", "identity": "na", "understood": 5, "resolved": 4}
POOR = {"greeting": "no", "identity": "yes", "understood": 2, "resolved": 1}


def write_wav(path: Path, seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A stereo 16-bit PCM WAV (caller left, agent right) of two tones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytearray()
    for n in range(int(seconds * rate)):
        left = int(8000 * math.sin(2 * math.pi * 440 * n / rate))
        right = int(8000 * math.sin(2 * math.pi * 660 * n / rate))
        frames += struct.pack("<hh", left, right)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path.read_bytes()


@dataclass
class Quality:
    live: Live
    directory: Path
    recordings: Path
    wav: dict[str, bytes]
    stop: asyncio.Event
    task: asyncio.Task

    async def events(self, kind: str) -> list[dict[str, Any]]:
        await self.live.pbx._store()                 # what the PBX loop has not handed to the writer yet
        await self.live.writer.flush()
        conn = await asyncpg.connect(self.live.web.dsn)
        try:
            rows = await conn.fetch("SELECT call_id, queue, agent, data::text AS data FROM events "
                                    "WHERE run = $1 AND type = $2 ORDER BY ts, id", self.live.run, kind)
        finally:
            await conn.close()
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


async def insert(dsn: str, run: str, events: list[tuple]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO events (id, ts, run, type, call_id, queue, agent, data) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
            [(uuid.uuid4(), ts, run, kind, call_id, queue, agent, json.dumps(data))
             for ts, kind, call_id, queue, agent, data in events])
    finally:
        await conn.close()


def call_events(call_id: str, queue: str, agent: str | None, t0: datetime, *, caller: str = "+447700900111",
                talk_s: float = 120.0, file: str | None = None, csat: int | None = None,
                team: str = "red", duration_s: float = 2.0) -> list[tuple]:
    """What the router records for one call through the IVR to `agent`, recorded to `file`."""
    at = lambda s: t0 + timedelta(seconds=s)     # noqa: E731
    events = [
        (at(0), "call.arrived", call_id, None, None, {"caller_id": caller, "dnis": "100"}),
        (at(1), "ivr.node", call_id, None, None, {"flow": "main", "node": "welcome"}),
        (at(2), "ivr.node", call_id, None, None, {"flow": "main", "node": "menu"}),
        (at(3), "ivr.input", call_id, None, None, {"flow": "main", "node": "menu", "input": "2"}),
        (at(4), "ivr.ended", call_id, None, None, {"flow": "main", "node": "menu", "outcome": "queued"}),
        (at(5), "queue.joined", call_id, queue, None, {"caller_id": caller, "priority": 0, "position": 1,
                                                       "sl_threshold_s": 20}),
    ]
    if agent is None:
        return events + [(at(30), "call.abandoned", call_id, queue, None, {"wait_s": 25, "where": "queue"}),
                         (at(30), "call.ended", call_id, queue, None, {"outcome": "abandoned"})]
    end = 10 + talk_s
    events += [
        (at(8), "agent.offered", call_id, queue, agent, {"ring_timeout_s": 15}),
        (at(10), "call.connected", call_id, queue, agent, {"wait_s": 5, "team": team, "skills_met": True}),
        (at(end), "agent.state", call_id, None, agent, {"state": "wrap_up", "previous": "on_call",
                                                        "previous_s": talk_s, "team": team}),
        (at(end + 0.01), "call.ended", call_id, queue, agent, {"outcome": "answered", "talk_s": talk_s}),
        (at(end + 20), "agent.state", call_id, None, agent, {"state": "available", "previous": "wrap_up",
                                                             "previous_s": 20, "team": team}),
    ]
    if file is not None:
        events.append((at(end + 1), "recording.saved", call_id, queue, agent, {
            "file": file, "size_bytes": 64044, "duration_s": duration_s, "retention_days": 30}))
    if csat is not None:
        events.append((at(end + 40), "survey.answered", call_id, queue, agent, {"question": "csat", "score": csat}))
    return events


@pytest.fixture
async def q(tmp_path: Path, database_url: str) -> AsyncIterator[Quality]:
    """The service over a centre with recordings and scorecards, five seeded calls two hours ago:
    b1 (ann, billing, recorded), b2 (ann, billing, recorded, repeat caller), t1 (bob, tech, recorded),
    n1 (ann, billing, not recorded), x1 (abandoned in billing); the PBX loop runs as in `serve`."""
    (tmp_path / "scorecards").mkdir()
    (tmp_path / "scorecards" / "service.yaml").write_text(textwrap.dedent(BILLING_CARD))
    (tmp_path / "scorecards" / "technical.yaml").write_text(textwrap.dedent(TECH_CARD))
    recordings = tmp_path / "recordings"
    wav = {name: write_wav(recordings / "2026" / f"{name}.wav", seconds)
           for name, seconds in (("b1", 2.0), ("b2", 1.0), ("t1", 1.5))}
    live = await start_live(tmp_path, database_url, centre_text=QUALITY_CENTRE)
    t0 = datetime.fromtimestamp(live.pbx.now(), timezone.utc) - timedelta(hours=2)
    await insert(live.web.dsn, live.run, [
        *call_events("b1", "billing", "ann", t0, file="2026/b1.wav", csat=5),
        *call_events("b2", "billing", "ann", t0 + timedelta(minutes=10), file="2026/b2.wav", talk_s=400, csat=1),
        *call_events("t1", "tech", "bob", t0 + timedelta(minutes=20), caller="+447700900222", file="2026/t1.wav",
                     team="blue"),
        *call_events("n1", "billing", "ann", t0 + timedelta(minutes=30), caller="+447700900333"),
        *call_events("x1", "billing", None, t0 + timedelta(minutes=40), caller="+447700900444"),
    ])
    stop = asyncio.Event()
    task = asyncio.create_task(live.pbx.run(stop))
    try:
        yield Quality(live, tmp_path, recordings, wav, stop, task)
    finally:
        stop.set()
        await task
        await stop_live(live)


async def evaluate(q: Quality, call_id: str, answers: dict, who: str = "supervisor", **extra: Any) -> tuple[int, Any]:
    return await q.live.call("POST", "/api/v1/evaluations", who, json={"call_id": call_id, "answers": answers,
                                                                       **extra})


# --- recordings ------------------------------------------------------------------------

async def test_recordings_are_listed_for_viewers_within_their_queues(q):
    live = q.live
    assert (await live.call("GET", "/api/v1/recordings"))[0] == 401
    assert (await live.call("GET", "/api/v1/recordings", "not-a-token-at-all-000"))[0] == 401
    status, body = await live.call("GET", "/api/v1/recordings", "agent")
    assert (status, body["error"]) == (403, "forbidden_role")
    status, body = await live.call("GET", "/api/v1/recordings", "viewer")
    assert status == 200, body
    assert sorted(r["call_id"] for r in body["recordings"]) == ["b1", "b2", "t1"]
    b1 = next(r for r in body["recordings"] if r["call_id"] == "b1")
    assert (b1["queue"], b1["agent"], b1["file"], b1["talk_s"], b1["evaluations"]) == (
        "billing", "ann", "2026/b1.wav", 120.0, 0)
    status, body = await live.call("GET", "/api/v1/recordings?agent=bob", "supervisor")
    assert [r["call_id"] for r in body["recordings"]] == ["t1"]
    status, body = await live.call("GET", "/api/v1/recordings?queue=billing", "viewer")
    assert sorted(r["call_id"] for r in body["recordings"]) == ["b1", "b2"]
    # a token limited to billing sees billing's recordings only, and may not ask for tech
    status, body = await live.call("GET", "/api/v1/recordings", "billing_supervisor")
    assert sorted(r["call_id"] for r in body["recordings"]) == ["b1", "b2"]
    status, body = await live.call("GET", "/api/v1/recordings?queue=tech", "billing_supervisor")
    assert (status, body["error"]) == (403, "forbidden_queue")
    status, body = await live.call("GET", "/api/v1/recordings?from=yesterday", "viewer")
    assert (status, body["error"]) == (422, "invalid_time")
    for bad in ("from=9999-12-31", "to=9999-12-31", "from=0001-01-01", "from=2026-12-01&to=2026-11-01",
                "from=2026-01-01&to=2026-12-01"):
        status, body = await live.call("GET", f"/api/v1/recordings?{bad}", "viewer")
        assert (status, body["error"]) == (422, "invalid_time"), bad
    status, body = await live.call("GET", "/api/v1/quality/proposals?week=9999-12-31", "viewer")
    assert (status, body["error"]) == (422, "invalid_time")
    status, body = await live.call("GET", "/api/v1/recordings?queue=nope", "viewer")
    assert (status, body["error"]) == (422, "unknown_queue")
    old = (datetime.fromtimestamp(live.pbx.now(), timezone.utc) - timedelta(days=30)).date().isoformat()
    status, body = await live.call("GET", f"/api/v1/recordings?from={old}&to={old}", "viewer")
    assert (status, body["recordings"]) == (200, [])


async def test_the_audio_is_served_with_range_to_a_token_or_a_session_only(q):
    live = q.live
    path = "/api/v1/recordings/b1/audio"
    assert (await live.call("GET", path))[0] == 401
    # a token in the URL is no credential
    assert (await live.call("GET", f"{path}?token={TOKENS['viewer']}"))[0] == 401
    assert (await live.call("GET", f"{path}?access_token={TOKENS['viewer']}"))[0] == 401
    headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
    async with live.http.get(live.url + path, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/wav"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Cache-Control"] == "no-store"
        assert await response.read() == q.wav["b1"]
    async with live.http.get(live.url + path, headers={**headers, "Range": "bytes=0-99"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-99/{len(q.wav['b1'])}"
        assert await response.read() == q.wav["b1"][:100]
    async with live.http.get(live.url + path, headers={**headers, "Range": "bytes=1000-"}) as response:
        assert response.status == 206
        assert await response.read() == q.wav["b1"][1000:]
    # the page's way: the session cookie of a signed-in viewer
    async with live.http.post(live.url + "/login", data={"token": TOKENS["viewer"]}, allow_redirects=False) as r:
        assert r.status == 303
    async with live.http.get(live.url + path, headers={"Range": "bytes=44-"}) as response:
        assert response.status == 206 and await response.read() == q.wav["b1"][44:]
    live.http.cookie_jar.clear()
    # the call's agent may listen to it; another queue's supervisor may not know it exists
    async with live.http.get(live.url + path, headers={"Authorization": f"Bearer {TOKENS['agent']}"}) as response:
        assert response.status == 200 and await response.read() == q.wav["b1"]
    status, body = await live.call("GET", "/api/v1/recordings/t1/audio", "agent")
    assert (status, body["error"]) == (404, "unknown_call")
    status, body = await live.call("GET", "/api/v1/recordings/t1/audio", "billing_supervisor")
    assert (status, body["error"]) == (404, "unknown_call")
    status, body = await live.call("GET", "/api/v1/recordings/n1/audio", "viewer")
    assert (status, body["error"]) == (404, "not_recorded")
    status, body = await live.call("GET", "/api/v1/recordings/nobody/audio", "viewer")
    assert (status, body["error"]) == (404, "unknown_call")


async def test_a_recording_whose_file_escapes_the_directory_is_never_served(q):
    live = q.live
    secret = q.directory / "secret.wav"
    secret.write_bytes(b"RIFF-not-for-you")
    outside = q.directory.parent / f"outside-{uuid.uuid4().hex[:6]}.wav"
    outside.write_bytes(b"RIFF-outside")
    os.symlink(outside, q.recordings / "2026" / "link.wav")
    t0 = datetime.fromtimestamp(live.pbx.now(), timezone.utc) - timedelta(hours=1)
    cases = {"e1": "../secret.wav", "e2": str(secret), "e3": "2026/../../secret.wav", "e4": "2026/link.wav"}
    events = []
    for n, (call_id, name) in enumerate(cases.items()):
        events += call_events(call_id, "billing", "ann", t0 + timedelta(minutes=n), file=name)
    await insert(live.web.dsn, live.run, events)
    try:
        for call_id in cases:
            async with live.http.get(f"{live.url}/api/v1/recordings/{call_id}/audio",
                                     headers={"Authorization": f"Bearer {TOKENS['admin']}"}) as response:
                body = await response.read()
                assert response.status == 404, (call_id, response.status)
                assert json.loads(body)["error"] == "unsafe_path", (call_id, body)
                assert b"RIFF" not in body
        # the caller's own input is no path either: a call id with a separator is just unknown
        for call_id in ("..%2Fsecret", "b1%2F..%2F..%2Fsecret", "%2E%2E"):
            status, body = await live.call("GET", f"/api/v1/recordings/{call_id}/audio", "admin")
            assert status == 404, (call_id, body)
    finally:
        outside.unlink()


async def test_a_missing_or_pruned_recording_is_reported_not_served(q):
    live = q.live
    t0 = datetime.fromtimestamp(live.pbx.now(), timezone.utc) - timedelta(hours=1)
    await insert(live.web.dsn, live.run, [
        *call_events("m1", "billing", "ann", t0, file="2026/never-written.wav"),
        (t0 + timedelta(days=1), "recording.pruned", "b2", None, None, {"file": "2026/b2.wav", "age_days": 31}),
    ])
    status, body = await live.call("GET", "/api/v1/recordings/m1/audio", "viewer")
    assert (status, body["error"]) == (404, "recording_missing")
    status, body = await live.call("GET", "/api/v1/recordings/b2/audio", "viewer")
    assert (status, body["error"]) == (404, "recording_pruned")


async def test_the_timeline_shows_the_calls_events_and_its_ivr_path(q):
    live = q.live
    status, body = await live.call("GET", "/api/v1/calls/b1/timeline", "viewer")
    assert status == 200, body
    assert (body["call_id"], body["queue"], body["agent"]) == ("b1", "billing", "ann")
    assert [e["type"] for e in body["events"]] == [
        "call.arrived", "ivr.node", "ivr.node", "ivr.input", "ivr.ended", "queue.joined", "agent.offered",
        "call.connected", "agent.state", "call.ended", "recording.saved", "agent.state", "survey.answered"]
    assert [(step["type"], step["node"], step["input"]) for step in body["ivr_path"]] == [
        ("ivr.node", "welcome", None), ("ivr.node", "menu", None), ("ivr.input", "menu", "2"),
        ("ivr.ended", "menu", None)]
    assert body["recording"] == {"file": "2026/b1.wav", "size_bytes": 64044, "duration_s": 2.0,
                                 "retention_days": 30}
    assert (await live.call("GET", "/api/v1/calls/b1/timeline"))[0] == 401
    assert (await live.call("GET", "/api/v1/calls/b1/timeline", "agent"))[0] == 200      # ann's own call
    status, body = await live.call("GET", "/api/v1/calls/t1/timeline", "agent")
    assert (status, body["error"]) == (404, "unknown_call")
    status, body = await live.call("GET", "/api/v1/calls/t1/timeline", "billing_supervisor")
    assert (status, body["error"]) == (404, "unknown_call")
    status, body = await live.call("GET", "/api/v1/calls/zz/timeline", "viewer")
    assert (status, body["error"]) == (404, "unknown_call")


# --- scorecards and evaluations ----------------------------------------------------------

async def test_scorecards_are_listed_and_found_per_queue(q):
    live = q.live
    status, body = await live.call("GET", "/api/v1/scorecards", "viewer")
    assert status == 200 and sorted(card["id"] for card in body["scorecards"]) == ["service", "technical"]
    status, card = await live.call("GET", "/api/v1/scorecards/for/billing", "supervisor")
    assert (status, card["id"], card["queues"]) == (200, "service", ["billing"])
    questions = [question for section in card["sections"] for question in section["questions"]]
    assert [(qq["id"], qq["choices"]) for qq in questions] == [
        ("greeting", ["yes", "no"]), ("identity", ["yes", "no", "na"]),
        ("understood", [1, 2, 3, 4, 5]), ("resolved", [1, 2, 3, 4, 5])]
    status, body = await live.call("GET", "/api/v1/scorecards/for/sales", "viewer")
    assert (status, body["error"]) == (404, "no_scorecard")
    status, body = await live.call("GET", "/api/v1/scorecards/for/nope", "viewer")
    assert (status, body["error"]) == (404, "unknown_queue")
    status, body = await live.call("GET", "/api/v1/scorecards/for/tech", "billing_supervisor")
    assert (status, body["error"]) == (404, "unknown_queue")
    assert (await live.call("GET", "/api/v1/scorecards"))[0] == 401


async def test_a_supervisor_evaluates_a_recorded_call_scored_by_the_server(q):
    for who, expected in ((None, 401), ("viewer", 403), ("agent", 403)):
        status, _ = await evaluate(q, "b1", GOOD, who)
        assert status == expected, who
    status, body = await evaluate(q, "b1", GOOD, comments="Clear and friendly.", score=100)   # `score` is ignored
    assert status == 200, body
    cards, problems = load_scorecards(q.directory / "scorecards", ["billing", "tech", "sales"])
    expected = score(cards["service"], GOOD)
    assert problems == []
    assert (body["score"], body["critical_failed"], body["agent"], body["queue"], body["scorecard"]) == (
        expected.value, False, "ann", "billing", "service")
    assert body["sections"] == expected.sections
    uuid.UUID(body["evaluation_id"])
    status, poor = await evaluate(q, "b2", POOR, scorecard="service", comments="")
    assert (status, poor["score"], poor["critical_failed"]) == (200, score(cards["service"], POOR).value, False)
    status, critical = await evaluate(q, "t1", {"fixed": 5, "courtesy": "yes"})
    assert (status, critical["scorecard"], critical["score"]) == (200, "technical", 100.0)

    evaluated = await q.events("qa.evaluated")
    assert [(e["call_id"], e["queue"], e["agent"]) for e in evaluated] == [
        ("b1", "billing", "ann"), ("b2", "billing", "ann"), ("t1", "tech", "bob")]
    data = evaluated[0]["data"]
    assert data == {"evaluation_id": body["evaluation_id"], "scorecard": "service",
                    "version": cards["service"].version, "evaluator": "env#2", "answers": GOOD,
                    "comments": "Clear and friendly.", "score": expected.value, "critical_failed": False}
    actions = [(e["data"]["action"], e["data"]["result"], e["call_id"]) for e in await q.events("admin.action")]
    assert actions == [("evaluation.create", "forbidden_role", None)] * 2 + [
        ("evaluation.create", "ok", "b1"), ("evaluation.create", "ok", "b2"), ("evaluation.create", "ok", "t1")]


async def test_evaluation_errors_have_stable_ids_and_record_nothing_but_the_refusal(q):
    live = q.live
    cases = [
        ({"call_id": "b1", "answers": {**GOOD, "greeting": "maybe"}}, 422, "invalid_answer", "greeting"),
        ({"call_id": "b1", "answers": {**GOOD, "understood": 6}}, 422, "invalid_answer", "understood"),
        ({"call_id": "b1", "answers": {k: v for k, v in GOOD.items() if k != "resolved"}}, 422, "invalid_answer",
         "resolved"),
        ({"call_id": "b1", "answers": {**GOOD, "speed": "yes"}}, 422, "invalid_answer", "speed"),
        ({"call_id": "b1", "answers": {**GOOD, "greeting": "na"}}, 422, "invalid_answer", "greeting"),
        ({"call_id": "b1", "answers": "all good"}, 422, "invalid_answer", "answers"),
        ({"call_id": "b1", "answers": GOOD, "scorecard": "nope"}, 422, "unknown_scorecard", "nope"),
        ({"call_id": "b1", "answers": GOOD, "scorecard": "technical"}, 422, "scorecard_not_for_queue", "technical"),
        ({"call_id": "b1", "answers": GOOD, "comments": 7}, 422, "invalid_comments", "comments"),
        ({"call_id": "b1", "answers": GOOD, "comments": "x" * 4001}, 422, "invalid_comments", "comments"),
        ({"answers": GOOD}, 422, "missing_field", "call_id"),
        ({"call_id": "nobody", "answers": GOOD}, 404, "unknown_call", "nobody"),
        ({"call_id": "n1", "answers": GOOD}, 404, "not_recorded", "n1"),
        ({"call_id": "../../etc", "answers": GOOD}, 404, "unknown_call", "etc"),
    ]
    for body, status, error, named in cases:
        got, answer = await live.call("POST", "/api/v1/evaluations", "supervisor", json=body)
        assert (got, answer["error"]) == (status, error), (body, answer)
        assert named in answer["message"], (body, answer)
    status, answer = await live.call("POST", "/api/v1/evaluations", "billing_supervisor",
                                     json={"call_id": "t1", "answers": {"fixed": 5, "courtesy": "yes"}})
    assert (status, answer["error"]) == (404, "unknown_call")
    # a signed-in page of another site cannot evaluate with the session cookie
    async with live.http.post(live.url + "/login", data={"token": TOKENS["supervisor"]}, allow_redirects=False):
        pass
    status, answer = await live.call("POST", "/api/v1/evaluations", json={"call_id": "b1", "answers": GOOD},
                                     headers={"Origin": "https://evil.example"})
    assert (status, answer["error"]) == (403, "cross_origin")
    live.http.cookie_jar.clear()
    status, answer = await live.call("POST", "/api/v1/evaluations", "supervisor", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert (status, answer["error"]) == (400, "malformed_json")
    assert await q.events("qa.evaluated") == []
    results = [e["data"]["result"] for e in await q.events("admin.action")]
    assert results == [error for _, _, error, _ in cases] + ["unknown_call"]     # malformed JSON: no action yet


async def test_evaluations_are_read_by_supervisors_and_by_the_evaluated_agent_only(q):
    live = q.live
    _, first = await evaluate(q, "b1", GOOD)
    _, second = await evaluate(q, "t1", {"fixed": 3, "courtesy": "no"})
    status, body = await live.call("GET", "/api/v1/evaluations", "supervisor")
    assert status == 200
    assert sorted(e["call_id"] for e in body["evaluations"]) == ["b1", "t1"]
    status, body = await live.call("GET", "/api/v1/evaluations?agent=bob", "viewer")
    assert [e["evaluation_id"] for e in body["evaluations"]] == [second["evaluation_id"]]
    status, body = await live.call("GET", "/api/v1/evaluations?call_id=b1", "supervisor")
    assert [e["evaluation_id"] for e in body["evaluations"]] == [first["evaluation_id"]]
    # ann's token: her own evaluation only, never bob's
    status, body = await live.call("GET", "/api/v1/evaluations", "agent")
    assert status == 200
    assert [(e["call_id"], e["agent"], e["acknowledged"]) for e in body["evaluations"]] == [("b1", "ann", False)]
    assert body["evaluations"][0]["answers"] == GOOD
    status, body = await live.call("GET", "/api/v1/evaluations?agent=bob", "agent")
    assert (status, body["error"]) == (403, "forbidden_role")
    status, body = await live.call("GET", "/api/v1/evaluations?call_id=t1", "agent")
    assert (status, body["evaluations"]) == (200, [])
    status, body = await live.call("GET", "/api/v1/evaluations", "billing_supervisor")
    assert [e["call_id"] for e in body["evaluations"]] == ["b1"]
    assert (await live.call("GET", "/api/v1/evaluations"))[0] == 401


async def test_only_the_evaluated_agent_acknowledges_and_only_once(q):
    live = q.live
    _, mine = await evaluate(q, "b1", GOOD)
    _, bobs = await evaluate(q, "t1", {"fixed": 3, "courtesy": "no"})
    path = f"/api/v1/evaluations/{mine['evaluation_id']}/acknowledge"
    assert (await live.call("POST", path, json={}))[0] == 401
    for who in ("supervisor", "admin", "viewer"):
        status, body = await live.call("POST", path, who, json={"comment": "x"})
        assert (status, body["error"]) == (403, "forbidden_role"), who
    status, body = await live.call("POST", f"/api/v1/evaluations/{bobs['evaluation_id']}/acknowledge", "agent",
                                   json={})
    assert (status, body["error"]) == (404, "unknown_evaluation")                  # not ann's
    status, body = await live.call("POST", f"/api/v1/evaluations/{uuid.uuid4()}/acknowledge", "agent", json={})
    assert (status, body["error"]) == (404, "unknown_evaluation")
    status, body = await live.call("POST", "/api/v1/evaluations/not-an-id/acknowledge", "agent", json={})
    assert (status, body["error"]) == (404, "unknown_evaluation")
    status, body = await live.call("POST", path, "agent", json={"comment": 5})
    assert (status, body["error"]) == (422, "invalid_comments")
    status, body = await live.call("POST", path, "agent", json={"comment": "Thanks, noted."})
    assert (status, body) == (200, {"ok": True, "evaluation_id": mine["evaluation_id"], "acknowledged": True})
    status, body = await live.call("POST", path, "agent", json={"comment": "again"})
    assert (status, body["error"]) == (409, "already_acknowledged")
    acknowledged = await q.events("qa.acknowledged")
    assert [(e["call_id"], e["agent"], e["data"]) for e in acknowledged] == [
        ("b1", "ann", {"evaluation_id": mine["evaluation_id"], "comment": "Thanks, noted."})]
    status, body = await live.call("GET", "/api/v1/evaluations", "agent")
    assert [(e["acknowledged"], e["ack_comment"]) for e in body["evaluations"]] == [(True, "Thanks, noted.")]
    trail = [(e["data"]["action"], e["data"]["result"]) for e in await q.events("admin.action")
             if e["data"]["action"] == "evaluation.acknowledge"]
    assert trail == [("evaluation.acknowledge", "forbidden_role")] * 3 + [
        ("evaluation.acknowledge", "unknown_evaluation")] * 3 + [
        ("evaluation.acknowledge", "invalid_comments"), ("evaluation.acknowledge", "ok"),
        ("evaluation.acknowledge", "already_acknowledged")]


# --- proposals, calibration, figures -------------------------------------------------------

async def test_proposals_calibration_and_the_quality_figures(q):
    live = q.live
    week = datetime.fromtimestamp(live.pbx.now() - 7200, ZoneInfo("Europe/London"))
    monday = (week.date() - timedelta(days=week.weekday())).isoformat()
    status, body = await live.call("GET", f"/api/v1/quality/proposals?week={monday}", "viewer")
    assert status == 200, body
    assert body["week"] == monday
    assert {agent: sorted(c["call_id"] for c in calls) for agent, calls in body["agents"].items()} == {
        "ann": ["b1", "b2"], "bob": ["t1"]}
    assert {c["call_id"]: c["reason"] for c in body["agents"]["ann"]}["b2"] == "low_csat"
    status, body = await live.call("GET", f"/api/v1/quality/proposals?week={monday}", "billing_supervisor")
    assert list(body["agents"]) == ["ann"]
    status, body = await live.call("GET", "/api/v1/quality/proposals?week=monday", "viewer")
    assert (status, body["error"]) == (422, "invalid_time")

    status, before = await live.call("GET", "/api/v1/quality/summary", "viewer")
    assert status == 200, before
    assert (before["queues"]["billing"]["quality_score"], before["queues"]["billing"]["evaluations"]) == (None, 0)
    assert before["queues"]["billing"]["aht_s"] is not None and before["queues"]["billing"]["csat_avg"] == 3.0

    _, a = await evaluate(q, "b1", GOOD)                             # supervisor
    _, b = await evaluate(q, "b1", POOR, "admin")                    # a second evaluator: calibration
    _, c = await evaluate(q, "t1", {"fixed": 5, "courtesy": "yes"})
    status, body = await live.call("GET", "/api/v1/quality/calibration", "viewer")
    assert status == 200, body
    assert [(row["call_id"], row["agent"], row["scores"], row["spread"]) for row in body["calls"]] == [
        ("b1", "ann", {"env#2": a["score"], "env#3": b["score"]}, round(abs(a["score"] - b["score"]), 2))]
    status, body = await live.call("GET", "/api/v1/quality/calibration", "billing_supervisor")
    assert [row["call_id"] for row in body["calls"]] == ["b1"]

    status, after = await live.call("GET", "/api/v1/quality/summary", "viewer")
    billing = after["queues"]["billing"]
    assert billing["evaluations"] == 2 and billing["quality_score"] == pytest.approx((a["score"] + b["score"]) / 2,
                                                                                     abs=0.01)
    assert after["queues"]["tech"]["quality_score"] == 100.0
    assert after["agents"]["ann"]["evaluations"] == 2 and after["agents"]["bob"]["quality_score"] == 100.0
    assert after["teams"]["red"]["quality_score"] == billing["quality_score"]
    assert after["total"]["evaluations"] == 3
    for key in ("aht_s", "csat_avg", "fcr_rate"):
        assert billing[key] == before["queues"]["billing"][key], key
    status, scoped = await live.call("GET", "/api/v1/quality/summary", "billing_supervisor")
    assert (list(scoped["queues"]), list(scoped["agents"]), scoped["teams"], scoped["total"]) == (
        ["billing"], ["ann"], {}, None)
    status, body = await live.call("GET", "/api/v1/quality/summary", "agent")
    assert (status, body["error"]) == (403, "forbidden_role")


async def test_the_quality_page_needs_a_supervisor_or_viewer_session(q):
    live = q.live
    async with live.http.get(live.url + "/quality", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (303, "/login")
    async with live.http.post(live.url + "/login", data={"token": TOKENS["agent"]}, allow_redirects=False):
        pass
    async with live.http.get(live.url + "/quality", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (303, "/agent")
    live.http.cookie_jar.clear()
    async with live.http.post(live.url + "/login", data={"token": TOKENS["viewer"]}, allow_redirects=False):
        pass
    async with live.http.get(live.url + "/quality") as response:
        assert response.status == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        text = await response.text()
        assert '<script src="/static/quality.js"' in text and "<style" not in text and " style=" not in text
    async with live.http.get(live.url + "/static/quality.js") as response:
        assert response.status == 200
    live.http.cookie_jar.clear()


async def test_the_dashboard_board_carries_todays_quality_from_its_kpi_read(q):
    live = q.live
    now = live.pbx.now()
    live.web.board.load_today({"queues": {"billing": {"offered": 3, "answered": 3, "quality_score": 87.5,
                                                      "evaluations": 2}},
                               "agents": {"ann": {"answered": 3, "aht_s": 100.0, "quality_score": 87.5}}}, None, now)
    status, body = await live.call("GET", "/api/v1/queues", "viewer")
    queues = {queue["id"]: queue for queue in body["queues"]}
    assert (queues["billing"]["quality_score"], queues["billing"]["evaluations"]) == (87.5, 2)
    assert (queues["tech"]["quality_score"], queues["tech"]["evaluations"]) == (None, 0)
    status, body = await live.call("GET", "/api/v1/agents", "viewer")
    agents = {agent["id"]: agent for agent in body["agents"]}
    assert (agents["ann"]["quality_today"], agents["bob"]["quality_today"]) == (87.5, None)
