"""Quality queries (router/quality/store.py) against a real PostgreSQL, on events stored by the
real `EventWriter` under a run of their own: recorded calls, timelines, evaluations with their
acknowledgement, sampling proposals (targeted and seeded random) and calibration."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from router.events import Event
from router.quality import store
from router.store.writer import EventWriter

pytestmark = pytest.mark.asyncio(loop_scope="session")

WEEK = datetime(2026, 11, 30, tzinfo=timezone.utc)          # a Monday


class Log:
    """The events of recorded calls the way the router writes them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, t: datetime, type_: str, call: str | None, queue: str | None, agent: str | None, **data) -> None:
        self.events.append(Event(t.timestamp(), type_, call, queue, agent, data))

    def call(self, call: str, queue: str, agent: str, t: datetime, *, talk: float, caller: str = "+441",
             recorded: bool = True) -> None:
        self.add(t, "queue.joined", call, queue, None, caller_id=caller, priority=0, position=1, ewt_s=0,
                 sl_threshold_s=20)
        connected = t + timedelta(seconds=10)
        self.add(connected, "call.connected", call, queue, agent, wait_s=10, team="red", skills_met=True)
        if recorded:
            self.add(connected, "recording.started", call, queue, agent, file=f"2026/12/{call}.wav",
                     channels="stereo", format="wav")
        end = connected + timedelta(seconds=talk)
        self.add(end, "call.ended", call, queue, agent, outcome="answered", talk_s=talk)
        if recorded:
            self.add(end + timedelta(seconds=1), "recording.saved", call, queue, agent, file=f"2026/12/{call}.wav",
                     size_bytes=int(talk * 32000), duration_s=talk, retention_days=90)

    def evaluated(self, call: str, queue: str, agent: str, t: datetime, evaluator: str, score: float,
                  evaluation_id: str | None = None) -> str:
        evaluation_id = evaluation_id or str(uuid.uuid4())
        self.add(t, "qa.evaluated", call, queue, agent, evaluation_id=evaluation_id, scorecard="service",
                 version="abc123", evaluator=evaluator, answers={"greeting": "yes"}, comments="ok", score=score,
                 critical_failed=score == 0)
        return evaluation_id

    async def save(self, dsn: str, tmp_path) -> str:
        run = f"qa:{uuid.uuid4()}"
        async with EventWriter(dsn, run=run, spool_dir=tmp_path / "spool") as writer:
            for event in self.events:
                await writer.put(event)
            await writer.flush()
        return run


def week_log() -> Log:
    """Agent a1: r1 low CSAT, r2 long, r3 repeated by the same number 2 h later, r4-r6 plain, r7 already
    evaluated, n1 not recorded, x1 of the week before.  Agent a2: s1, s2 plain.  Billing talk: r1..r7
    = 100, 400, 100 x 5 -> mean 142.86, long from 214.29: only r2."""
    log = Log()
    day = WEEK + timedelta(days=1, hours=9)
    for n, talk in enumerate([100, 400, 100, 100, 100, 100, 100], start=1):
        log.call(f"r{n}", "billing", "a1", day + timedelta(minutes=15 * n), talk=talk, caller=f"+44{n}")
    log.add(day + timedelta(hours=3), "survey.answered", "r1", "billing", "a1", question="csat", score=1)
    log.add(day + timedelta(hours=3), "survey.answered", "r4", "billing", "a1", question="csat", score=4)
    log.evaluated("r7", "billing", "a1", day + timedelta(hours=4), "sue", 80.0)
    log.call("n1", "billing", "a1", day + timedelta(hours=5), talk=100, recorded=False)
    log.call("x1", "billing", "a1", WEEK - timedelta(hours=2), talk=100)
    log.call("s1", "general", "a2", day + timedelta(hours=6), talk=60)
    log.call("s2", "general", "a2", day + timedelta(hours=7), talk=70, caller="anonymous")
    return log


async def test_recorded_calls_filters_and_fields(conn, database_url, tmp_path):
    log = week_log()
    run = await log.save(database_url, tmp_path)
    week = await store.recorded_calls(conn, since=WEEK, until=WEEK + timedelta(days=7), run=run)
    assert [c["call_id"] for c in week] == ["s2", "s1", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]  # newest first
    r2 = next(c for c in week if c["call_id"] == "r2")
    assert r2 == {"call_id": "r2", "queue": "billing", "agent": "a1", "connected_at": "2026-12-01T09:30:10+00:00",
                  "talk_s": 400.0, "file": "2026/12/r2.wav", "duration_s": 400.0, "caller": "+442",
                  "evaluations": 0}
    assert week[0]["caller"] == ""                                   # a withheld number is no number
    assert next(c for c in week if c["call_id"] == "r7")["evaluations"] == 1
    only_a2 = await store.recorded_calls(conn, since=WEEK, until=WEEK + timedelta(days=7), agent="a2", run=run)
    assert [c["call_id"] for c in only_a2] == ["s2", "s1"]
    general = await store.recorded_calls(conn, since=WEEK, until=WEEK + timedelta(days=7), queue="general",
                                         limit=1, run=run)
    assert [c["call_id"] for c in general] == ["s2"]
    before = await store.recorded_calls(conn, since=WEEK - timedelta(days=1), until=WEEK, run=run,
                                        timezone="Europe/Madrid")
    assert [(c["call_id"], c["connected_at"]) for c in before] == [("x1", "2026-11-29T23:00:10+01:00")]


async def test_call_timeline(conn, database_url, tmp_path):
    log = week_log()
    run = await log.save(database_url, tmp_path)
    timeline = await store.call_timeline(conn, "r1", run=run)
    assert [e["type"] for e in timeline] == ["queue.joined", "call.connected", "recording.started", "call.ended",
                                             "recording.saved", "survey.answered"]
    assert timeline[4]["data"]["file"] == "2026/12/r1.wav" and timeline[1]["agent"] == "a1"
    assert await store.call_timeline(conn, "nope", run=run) == []


async def test_evaluations_and_acknowledgement(conn, database_url, tmp_path):
    log = week_log()
    t = WEEK + timedelta(days=2)
    first = log.evaluated("r1", "billing", "a1", t, "sue", 62.5)
    second = log.evaluated("s1", "general", "a2", t + timedelta(hours=1), "tom", 0.0)
    log.add(t + timedelta(hours=2), "qa.acknowledged", "r1", None, "a1", evaluation_id=first, comment="seen")
    log.add(t + timedelta(hours=3), "qa.acknowledged", "r1", None, "a1", evaluation_id=first, comment="thanks")
    log.add(t + timedelta(hours=3), "qa.acknowledged", "r1", None, "a1", evaluation_id=str(uuid.uuid4()),
            comment="another evaluation's")
    run = await log.save(database_url, tmp_path)
    a1 = await store.evaluations(conn, agent="a1", run=run)
    assert [e["call_id"] for e in a1] == ["r1", "r7"]                  # newest first
    assert a1[0] == {"evaluation_id": first, "call_id": "r1", "queue": "billing", "agent": "a1",
                     "scorecard": "service", "version": "abc123", "evaluator": "sue", "score": 62.5,
                     "critical_failed": False, "answers": {"greeting": "yes"}, "comments": "ok",
                     "ts": "2026-12-02T00:00:00+00:00", "acknowledged": True,
                     "acknowledged_at": "2026-12-02T03:00:00+00:00", "ack_comment": "thanks"}
    assert (a1[1]["acknowledged"], a1[1]["acknowledged_at"], a1[1]["ack_comment"]) == (False, None, None)
    by_call = await store.evaluations(conn, call_id="s1", run=run)
    assert [(e["evaluation_id"], e["critical_failed"]) for e in by_call] == [(second, True)]
    windowed = await store.evaluations(conn, since=t, until=t + timedelta(minutes=30), run=run)
    assert [e["evaluation_id"] for e in windowed] == [first]


async def test_proposals_targeted_then_random_unevaluated_recorded_only(conn, database_url, tmp_path):
    log = week_log()
    log.call("r9", "sales", "a3", WEEK + timedelta(days=1, hours=11), talk=100, caller="+443",
             recorded=False)                                        # r3's caller again, 1 h 15 min later
    log.add(WEEK + timedelta(days=1, hours=12), "recording.saved", "r5", "billing", "a1", file="2026/12/r5-2.wav",
            size_bytes=1, duration_s=1.0, retention_days=90)          # a second file of r5: proposed once
    run = await log.save(database_url, tmp_path)
    proposed = await store.proposals(conn, week_start=WEEK, per_agent=4, seed=7, run=run)
    assert set(proposed) == {"a1", "a2"}
    a1 = proposed["a1"]
    assert [(p["call_id"], p["reason"]) for p in a1[:3]] == [("r1", "low_csat"), ("r3", "repeat_caller"),
                                                               ("r2", "long_call")]
    assert a1[3]["reason"] == "random" and a1[3]["call_id"] in {"r4", "r5", "r6"}
    assert a1[0]["file"] == "2026/12/r1.wav" and a1[0]["evaluations"] == 0
    assert sorted((p["call_id"], p["reason"]) for p in proposed["a2"]) == [("s1", "random"), ("s2", "random")]
    again = await store.proposals(conn, week_start=WEEK, per_agent=4, seed=7, run=run)
    assert again == proposed                                        # deterministic for a seed
    picks = set()
    for seed in range(12):
        one = await store.proposals(conn, week_start=WEEK, per_agent=1, seed=seed, run=run)
        assert [p["reason"] for p in one["a1"]] == ["low_csat"]    # targeted first
        random_pick = await store.proposals(conn, week_start=WEEK, per_agent=6, seed=seed, run=run)
        assert sorted(p["call_id"] for p in random_pick["a1"]) == ["r1", "r2", "r3", "r4", "r5", "r6"]
        picks.add(random_pick["a1"][3]["call_id"])
    assert len(picks) > 1                                           # the seed moves the random picks
    assert await store.proposals(conn, week_start=WEEK + timedelta(days=7), run=run) == {}


async def test_calibration_spread_of_two_or_more_evaluators(conn, database_url, tmp_path):
    log = week_log()
    t = WEEK + timedelta(days=3)
    log.evaluated("r1", "billing", "a1", t, "sue", 70.0)
    log.evaluated("r1", "billing", "a1", t + timedelta(minutes=5), "tom", 90.0)
    log.evaluated("r1", "billing", "a1", t + timedelta(minutes=6), "sue", 75.0)      # sue's latest counts
    log.evaluated("r2", "billing", "a1", t, "sue", 50.0)
    log.evaluated("r2", "billing", "a1", t + timedelta(minutes=1), "ann", 52.5)
    log.evaluated("r2", "billing", "a1", t + timedelta(minutes=2), "tom", 40.0)
    log.evaluated("r3", "billing", "a1", t, "sue", 50.0)
    log.evaluated("r3", "billing", "a1", t + timedelta(minutes=1), "sue", 60.0)      # one evaluator only
    run = await log.save(database_url, tmp_path)
    spread = await store.calibration(conn, since=t, until=t + timedelta(hours=1), run=run)
    assert [(c["call_id"], c["agent"], c["scores"], c["spread"]) for c in spread] == [
        ("r1", "a1", {"sue": 75.0, "tom": 90.0}, 15.0),
        ("r2", "a1", {"ann": 52.5, "sue": 50.0, "tom": 40.0}, 12.5)]
    assert await store.calibration(conn, since=t + timedelta(hours=1), until=t + timedelta(hours=2), run=run) == []


async def test_kpi_command_carries_the_quality_figures(database_url, tmp_path):
    """`acd-router kpi --json` and `--csv` on a stored run: latest per evaluator, mean per call, mean of calls."""
    log = week_log()
    t = WEEK + timedelta(days=2)
    log.evaluated("r1", "billing", "a1", t, "sue", 80.0)
    log.evaluated("r1", "billing", "a1", t, "tom", 60.0)                  # r1 = 70; r7 = 80 (week_log)
    log.evaluated("s1", "general", "a2", t, "sue", 90.0)                  # s1 = 90
    run = await log.save(database_url, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "ACD_DATABASE_URL": database_url}

    def kpi(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "router", "kpi", "--run", run, *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    figures = json.loads(kpi("--json"))
    assert (figures["quality_score"], figures["evaluations"]) == (80.0, 4)           # (70 + 80 + 90) / 3
    assert {q: (f["quality_score"], f["evaluations"]) for q, f in figures["queues"].items()} == {
        "billing": (75.0, 3), "general": (90.0, 1)}
    assert {a: (f["quality_score"], f["evaluations"]) for a, f in figures["agents"].items()} == {
        "a1": (75.0, 3), "a2": (90.0, 1)}
    assert figures["teams"]["red"]["quality_score"] == 80.0
    rows = {(r["scope"], r["id"]): r for r in csv.DictReader(io.StringIO(kpi("--csv")))}
    assert (rows[("agent", "a2")]["quality_score"], rows[("total", "")]["evaluations"]) == ("90.0", "4")
