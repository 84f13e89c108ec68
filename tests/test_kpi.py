"""KPI SQL against a real PostgreSQL, on small scenarios computed by hand.

Each test writes the events the engine would write for a handful of calls
under a run id of its own (so tests never see each other's rows), then checks
`compute_kpis` figure by figure.  The arithmetic is in the comments.
"""
from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from router.report import format_kpi_table, kpi_csv, kpi_json
from router.store.kpi import PINNED_KEYS, compute_kpis

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = datetime(2024, 3, 4, 9, 0, tzinfo=timezone.utc)
SL_THRESHOLD_S = 20


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Scenario:
    """Builds the events of one run the way the engine records them."""

    def __init__(self) -> None:
        self.run = f"sim:{uuid.uuid4()}"
        self.rows: list[tuple] = []

    def event(self, t: float, type_: str, call_id: str | None = None, queue: str | None = None,
              agent: str | None = None, **data) -> None:
        self.rows.append((uuid.uuid4(), at(t), self.run, call_id, type_, queue, agent,
                          json.dumps(data)))

    def joined(self, call: str, queue: str, t: float, caller: str = "") -> None:
        self.event(t, "queue.joined", call, queue, caller_id=caller, priority=0, position=1,
                   ewt_s=0, sl_threshold_s=SL_THRESHOLD_S)

    def answered(self, call: str, queue: str, t: float, *, wait: float, agent: str, talk: float,
                 wrap: float = 0, team: str = "blue", caller: str = "") -> None:
        """Joined at t, connected after `wait`, talked `talk`, wrapped up `wrap`."""
        self.joined(call, queue, t, caller)
        self.connected(call, queue, t + wait, wait=wait, agent=agent, talk=talk, wrap=wrap,
                       team=team)

    def connected(self, call: str, queue: str, t: float, *, wait: float, agent: str,
                  talk: float, wrap: float = 0, team: str = "blue", skills_met: bool = True) -> None:
        self.event(t, "call.connected", call, queue, agent, wait_s=wait, team=team, skills_met=skills_met)
        self.event(t + talk, "call.ended", call, queue, agent, outcome="answered", talk_s=talk)
        self.event(t + talk, "agent.state", call, None, agent, state="wrap_up",
                   previous="on_call", previous_s=talk, team=team)
        if wrap:
            self.event(t + talk + wrap, "agent.state", call, None, agent, state="available",
                       previous="wrap_up", previous_s=wrap, team=team)

    def abandoned(self, call: str, queue: str, t: float, *, wait: float, caller: str = "") -> None:
        self.joined(call, queue, t, caller)
        self.event(t + wait, "call.abandoned", call, queue, wait_s=wait, where="queue")
        self.event(t + wait, "call.ended", call, queue, outcome="abandoned")

    def agent_state(self, agent: str, t: float, previous: str, seconds: float,
                    team: str = "blue") -> None:
        self.event(t, "agent.state", None, None, agent, state="available", previous=previous,
                   previous_s=seconds, team=team)

    def survey(self, call: str, queue: str, agent: str, t: float, question: str,
               score: int) -> None:
        self.event(t, "survey.answered", call, queue, agent, question=question, score=score)

    def ivr_ended(self, call: str, t: float, outcome: str) -> None:
        self.event(t - 10, "call.arrived", call, caller_id="555", dnis="100")
        self.event(t, "ivr.ended", call, flow="main", node="end", outcome=outcome)

    async def save(self, conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO events (id, ts, run, call_id, type, queue, agent, data)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)", self.rows)


def centre_scenario() -> Scenario:
    """Two queues, two agents, every kind of outcome (figures in test_centre_*)."""
    s = Scenario()
    # sales: c1 within SL (wait 10), c2 over SL (wait 30), c3 short abandon (3 s),
    # c4 long abandon (40 s), c5 call-back accepted and completed, c6 declined a
    # call-back and was answered within SL (wait 15).
    s.event(2, "agent.offered", "c1", "sales", "a2", ring_timeout_s=15)
    s.event(5, "agent.no_answer", "c1", "sales", "a2", reason="timeout")
    s.answered("c1", "sales", 0, wait=10, agent="a1", talk=100, wrap=20, caller="111")
    s.answered("c2", "sales", 60, wait=30, agent="a2", talk=200, team="red", caller="222")
    s.abandoned("c3", "sales", 120, wait=3, caller="333")
    s.abandoned("c4", "sales", 180, wait=40, caller="444")
    s.joined("c5", "sales", 240, caller="555")
    s.event(260, "callback.offered", "c5", "sales", number="555", attempt=0)
    s.event(262, "callback.accepted", "c5", "sales", number="555", attempt=0)
    s.event(900, "callback.dialing", "c5", "sales", number="555", attempt=1)
    s.event(910, "callback.connected", "c5", "sales", number="555", attempt=1)
    s.event(280, "callback.offered", "c6", "sales", number="666", attempt=0)
    s.answered("c6", "sales", 270, wait=15, agent="a1", talk=50, wrap=10, caller="666")
    # support: c7 moved to sales by overflow after 30 s, answered from sales at 45 s by a2, who
    # lacks support's own skills (routing accuracy: not a match).
    s.joined("c7", "support", 300, caller="777")
    s.event(330, "queue.overflowed", "c7", "support", step=0, action="move", to="sales",
            wait_s=30)
    s.joined("c7", "sales", 330, caller="777")
    s.connected("c7", "sales", 345, wait=45, agent="a2", talk=80, team="red", skills_met=False)
    # idle time: a1 available 230 s, a2 available 120 s and paused 500 s (not staffed)
    s.agent_state("a1", 600, "available", 230)
    s.agent_state("a2", 600, "available", 120, team="red")
    s.agent_state("a2", 700, "paused", 500, team="red")
    # surveys
    s.survey("c1", "sales", "a1", 1000, "csat", 5)
    s.survey("c2", "sales", "a2", 1000, "csat", 2)
    s.survey("c7", "support", "a2", 1000, "csat", 4)
    s.survey("c1", "sales", "a1", 1001, "nps", 10)
    s.survey("c2", "sales", "a2", 1001, "nps", 3)
    s.survey("c6", "sales", "a1", 1001, "nps", 9)
    s.survey("c7", "support", "a2", 1001, "nps", 7)
    # IVR: one contained, one hang-up, one timeout
    s.ivr_ended("i1", 500, "completed")
    s.ivr_ended("i2", 510, "hangup")
    s.ivr_ended("i3", 520, "timeout")
    return s


async def test_centre_totals(conn):
    s = centre_scenario()
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert {key: k[key] for key in PINNED_KEYS} == {
        "offered": 7,                   # c1..c7 (c7 once, for support)
        "answered": 4,                  # c1 c2 c6 c7
        "abandoned": 2,                 # c3 c4
        "short_abandoned": 1,           # c3 (3 s <= 5 s)
        "service_level": 0.4,           # within 20 s: c1 c6 = 2 / (7 - 1 short - 1 callback)
        "asa_s": 25.0,                  # (10 + 30 + 15 + 45) / 4
        "aht_s": 115.0,                 # (100+20 + 200 + 50+10 + 80) / 4 = 460 / 4
        "abandonment_rate": 0.1667,     # (2 - 1) / (7 - 1)
        "fcr_rate": 1.0,                # no caller joined the same queue again
        "occupancy": 0.3042,            # busy 120+20+50+10 + 200+80 = 460 / (460 + 230 + 120 + 401 + 301):
                                        # a1 available from 600, a2 from 700, to the end of the data (1001)
        "callbacks_offered": 2,         # c5 c6
        "callbacks_accepted": 1,        # c5
        "callbacks_completed": 1,       # c5
        "overflowed": 1,                # c7
        "ivr_contained": 1,             # i1 (i2 hang-up, i3 timeout)
        "csat_avg": 3.67,               # (5 + 2 + 4) / 3
        "nps": 25.0,                    # 100 * (2 promoters - 1 detractor) / 4
        "routing_accuracy": 0.75,       # c1 c2 c6 by agents meeting the entry queue's skills, c7 not: 3 / 4
    }
    assert k["run"] == s.run
    assert k["from"] == T0.isoformat()
    # default end: the last event (survey at +1001 s) + 1 µs, exclusive
    assert k["to"] == (at(1001) + timedelta(microseconds=1)).isoformat()
    assert "intervals" not in k


async def test_centre_per_queue(conn):
    s = centre_scenario()
    await s.save(conn)
    queues = (await compute_kpis(conn, run=s.run))["queues"]
    assert set(queues) == {"sales", "support"}
    sales, support = queues["sales"], queues["support"]
    assert (sales["offered"], sales["answered"], sales["abandoned"]) == (6, 3, 2)
    assert sales["service_level"] == 0.5        # 2 / (6 - 1 - 1)
    assert sales["asa_s"] == 18.33              # (10 + 30 + 15) / 3
    assert sales["aht_s"] == 126.67             # (120 + 200 + 60) / 3
    assert sales["abandonment_rate"] == 0.2     # (2 - 1) / (6 - 1)
    assert sales["overflowed"] == 0             # c7 moved INTO sales: counts for support
    assert sales["csat_avg"] == 3.5             # (5 + 2) / 2
    assert sales["nps"] == 33.3                 # 100 * (2 - 1) / 3
    assert (sales["callbacks_offered"], sales["callbacks_accepted"]) == (2, 1)
    assert support["offered"] == 1 and support["answered"] == 1 and support["overflowed"] == 1
    assert support["service_level"] == 0.0      # 45 s > 20 s, 0 / 1
    assert support["asa_s"] == 45.0 and support["aht_s"] == 80.0
    assert support["abandonment_rate"] == 0.0
    assert support["csat_avg"] == 4.0 and support["nps"] == 0.0   # one passive (7)
    assert (sales["routing_accuracy"], support["routing_accuracy"]) == (1.0, 0.0)
    for figures in queues.values():             # centre-wide figures only
        assert figures["occupancy"] is None and figures["ivr_contained"] is None


async def test_centre_agents_and_teams(conn):
    s = centre_scenario()
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert k["agents"] == {
        "a1": {"team": "blue", "answered": 2, "talk_s": 150.0,   # c1 100 + c6 50
               "aht_s": 90.0,                                     # (120 + 60) / 2
               "occupancy": 0.2219,                               # 180 / (180 + 230 + 401 open)
               "no_answers": 0, "csat_avg": 5.0, "routing_accuracy": 1.0,
               "quality_score": None, "evaluations": 0},                 # no qa.evaluated events
        "a2": {"team": "red", "answered": 2, "talk_s": 280.0,    # c2 200 + c7 80
               "aht_s": 140.0,                                    # (200 + 80) / 2
               "occupancy": 0.3994,                               # 280 / (280 + 120 + 301 open); pause out
               "no_answers": 1, "csat_avg": 3.0,                  # (2 + 4) / 2
               "routing_accuracy": 0.5,                           # c2 yes, c7 no
               "quality_score": None, "evaluations": 0},
    }
    assert k["teams"] == {
        "blue": {key: v for key, v in k["agents"]["a1"].items() if key != "team"},
        "red": {key: v for key, v in k["agents"]["a2"].items() if key != "team"},
    }


async def test_empty_window_gives_nulls_not_errors(conn):
    k = await compute_kpis(conn, run=f"sim:{uuid.uuid4()}", interval_minutes=15)
    assert k["offered"] == 0 and k["answered"] == 0 and k["ivr_contained"] == 0
    for ratio in ("service_level", "asa_s", "aht_s", "abandonment_rate", "fcr_rate",
                  "occupancy", "csat_avg", "nps"):
        assert k[ratio] is None
    assert k["queues"] == {} and k["agents"] == {} and k["teams"] == {}
    assert k["intervals"] == [] and k["from"] is None and k["to"] is None


async def test_window_without_answers_has_null_ratios_but_counts(conn):
    s = Scenario()
    s.abandoned("c1", "sales", 0, wait=2)       # only a short abandon
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert (k["offered"], k["abandoned"], k["short_abandoned"]) == (1, 1, 1)
    assert k["service_level"] is None           # 0 / (1 - 1 - 0)
    assert k["abandonment_rate"] is None        # (1 - 1) / (1 - 1)
    assert k["asa_s"] is None and k["fcr_rate"] is None


async def test_runs_are_isolated(conn):
    live, sim = Scenario(), Scenario()
    live.answered("c1", "sales", 0, wait=5, agent="a1", talk=60)
    sim.answered("c1", "sales", 0, wait=50, agent="a1", talk=60)   # same call id, other run
    sim.abandoned("c2", "sales", 10, wait=30)
    await live.save(conn)
    await sim.save(conn)
    k_live = await compute_kpis(conn, run=live.run)
    k_sim = await compute_kpis(conn, run=sim.run)
    assert (k_live["offered"], k_live["answered"], k_live["service_level"]) == (1, 1, 1.0)
    assert (k_sim["offered"], k_sim["answered"], k_sim["service_level"]) == (2, 1, 0.0)
    assert k_sim["asa_s"] == 50.0 and k_live["asa_s"] == 5.0


async def test_fcr_repeat_within_24h_vs_after_25h(conn):
    s = Scenario()
    s.answered("c1", "sales", 0, wait=5, agent="a1", talk=60, caller="111")
    s.answered("c2", "sales", 60, wait=5, agent="a1", talk=60, caller="222")
    s.answered("c3", "sales", 120, wait=5, agent="a1", talk=60, caller="333")
    s.answered("c4", "sales", 180, wait=5, agent="a1", talk=60, caller="")    # no number
    s.abandoned("c5", "sales", 240, wait=30, caller="555")                   # not answered
    s.joined("r1", "sales", 23 * 3600, caller="111")      # 111 calls sales again after 23 h
    s.joined("r2", "sales", 25 * 3600, caller="222")      # 222 after 25 h: c2 was resolved
    s.joined("r3", "support", 3600, caller="333")         # 333 calls another queue
    await s.save(conn)
    # window: the first hour; the repeats after it still count against c1
    k = await compute_kpis(conn, run=s.run, start=T0, end=at(3600))
    assert k["offered"] == 5
    assert k["fcr_rate"] == 0.6667              # resolved c2 c3 / eligible c1 c2 c3 = 2 / 3
    # the later window holds r1 r2 r3, unanswered: no FCR base
    assert (await compute_kpis(conn, run=s.run, start=at(3600)))["fcr_rate"] is None


async def test_window_attributes_calls_by_first_join(conn):
    s = Scenario()
    # c1 entered sales before the window and overflowed into support inside it: not offered
    s.joined("c1", "sales", 0)
    s.event(120, "queue.overflowed", "c1", "sales", step=0, action="copy", to="support",
            wait_s=120)
    s.joined("c1", "support", 120)
    s.connected("c1", "support", 130, wait=130, agent="a1", talk=60)
    # c2 entered inside the window, answered after its end: offered and answered
    s.answered("c2", "support", 500, wait=200, agent="a1", talk=60)
    # c3 after the window
    s.answered("c3", "support", 700, wait=5, agent="a1", talk=60)
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run, start=at(100), end=at(600))
    assert (k["offered"], k["answered"], k["overflowed"]) == (1, 1, 0)
    assert k["asa_s"] == 200.0 and list(k["queues"]) == ["support"]
    assert k["agents"]["a1"]["answered"] == 1
    assert k["from"] == at(100).isoformat() and k["to"] == at(600).isoformat()
    naive = await compute_kpis(conn, run=s.run, start=at(100).replace(tzinfo=None),
                               end=at(600).replace(tzinfo=None))
    assert naive == k                           # naive datetimes are UTC


async def test_short_abandon_threshold_is_a_parameter(conn):
    s = Scenario()
    s.abandoned("c1", "sales", 0, wait=3)
    s.abandoned("c2", "sales", 10, wait=8)
    s.answered("c3", "sales", 20, wait=5, agent="a1", talk=60)
    await s.save(conn)
    default = await compute_kpis(conn, run=s.run)
    assert default["short_abandoned"] == 1
    assert default["abandonment_rate"] == 0.5   # (2 - 1) / (3 - 1)
    assert default["service_level"] == 0.5      # 1 / (3 - 1)
    wide = await compute_kpis(conn, run=s.run, short_abandon_s=10)
    assert wide["short_abandoned"] == 2
    assert wide["abandonment_rate"] == 0.0      # (2 - 2) / (3 - 2)
    assert wide["service_level"] == 1.0         # 1 / (3 - 2)


async def test_ivr_containment(conn):
    s = Scenario()
    s.ivr_ended("i1", 10, "completed")          # self-service: contained
    s.ivr_ended("i2", 20, "completed")          # contained
    s.ivr_ended("i3", 30, "hangup")             # caller hung up in a menu
    s.ivr_ended("i4", 40, "timeout")            # menu timeout loop
    s.ivr_ended("i5", 50, "completed")          # ... but went on to a queue: not contained
    s.joined("i5", "sales", 50)
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert k["ivr_contained"] == 2 and k["offered"] == 1
    assert k["queues"]["sales"]["ivr_contained"] is None
    assert (await compute_kpis(conn, run=s.run, start=at(15)))["ivr_contained"] == 1


async def test_wrap_up_joins_aht_and_missing_talk_is_left_out(conn):
    s = Scenario()
    s.answered("c1", "sales", 0, wait=5, agent="a1", talk=100, wrap=30)
    s.joined("c2", "sales", 10)                 # still talking: no call.ended yet
    s.event(20, "call.connected", "c2", "sales", "a2", wait_s=10, team="blue")
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert k["answered"] == 2
    assert k["asa_s"] == 7.5                    # (5 + 10) / 2
    assert k["aht_s"] == 130.0                  # c1 only: 100 talk + 30 wrap-up
    assert k["agents"]["a2"]["aht_s"] is None and k["agents"]["a2"]["talk_s"] == 0.0


async def test_intervals_bucket_calls_by_first_join(conn):
    s = Scenario()
    s.answered("c1", "sales", 5 * 60, wait=10, agent="a1", talk=60)        # 09:05
    s.abandoned("c2", "support", 20 * 60, wait=60)                          # 09:20
    s.answered("c3", "sales", 29 * 60 + 50, wait=40, agent="a1", talk=60)  # 09:29:50, answered 09:30:30
    s.answered("c4", "sales", 70 * 60, wait=5, agent="a1", talk=60)        # 10:10
    s.survey("c4", "sales", "a1", 72 * 60, "csat", 4)
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run, start=at(7 * 60), end=at(90 * 60),
                           interval_minutes=30)
    # window 09:07-10:30: c1 is before it; buckets on the local clock: 09:00 09:30 10:00, the first
    # labelled from the window's start, not as the whole half hour
    assert [i["start"] for i in k["intervals"]] == [
        at(7 * 60).isoformat(), at(30 * 60).isoformat(), at(60 * 60).isoformat()]
    assert k["intervals"][0]["end"] == at(30 * 60).isoformat()
    first, empty, last = k["intervals"]
    assert (first["offered"], first["answered"], first["abandoned"]) == (2, 1, 1)   # c2 c3
    assert first["service_level"] == 0.0        # c3 waited 40 s: 0 / 2
    assert first["queues"]["sales"]["offered"] == 1
    assert first["queues"]["support"]["abandoned"] == 1
    assert (empty["offered"], empty["service_level"], empty["csat_avg"]) == (0, None, None)
    assert empty["queues"]["sales"]["offered"] == 0        # every queue in every interval
    assert (last["offered"], last["service_level"], last["csat_avg"]) == (1, 1.0, 4.0)
    assert last["queues"]["support"]["offered"] == 0
    assert last["queues"]["sales"]["csat_avg"] == 4.0
    assert sum(i["offered"] for i in k["intervals"]) == k["offered"] == 3


async def test_interval_must_be_positive(conn):
    with pytest.raises(ValueError):
        await compute_kpis(conn, run="live", interval_minutes=0)


async def test_table_csv_and_json_show_the_figures(conn):
    s = centre_scenario()
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run, interval_minutes=60)

    table = format_kpi_table(k)
    lines = table.splitlines()
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert total.split()[:8] == ["TOTAL", "7", "4", "2", "40.0", "25.0", "115.0", "16.7"]
    sales = next(line for line in lines if line.startswith("sales"))
    assert sales.split()[:5] == ["sales", "6", "3", "2", "50.0"]
    support = next(line for line in lines if line.startswith("support"))
    assert "—" in support                       # occupancy is not per queue
    red = next(line for line in lines if line.startswith("red"))
    assert red.split()[:3] == ["red", "1", "2"]     # one agent, 2 answered
    assert any(line.startswith(at(0).strftime("%Y-%m-%d %H:%M")) for line in lines)

    rows = list(csv.DictReader(io.StringIO(kpi_csv(k))))
    assert list(rows[0])[:3 + len(PINNED_KEYS)] == ["scope", "id", "interval_start",
                                                     *PINNED_KEYS]
    total_row = next(r for r in rows if r["scope"] == "total")
    assert (total_row["offered"], total_row["service_level"], total_row["nps"]) == (
        "7", "0.4", "25.0")
    sales_row = next(r for r in rows if r["scope"] == "queue" and r["id"] == "sales")
    assert sales_row["occupancy"] == "" and sales_row["asa_s"] == "18.33"
    agent_row = next(r for r in rows if r["scope"] == "agent" and r["id"] == "a2")
    assert (agent_row["answered"], agent_row["occupancy"], agent_row["offered"]) == (
        "2", "0.3994", "")
    assert any(r["scope"] == "team" and r["id"] == "blue" for r in rows)
    interval_rows = [r for r in rows if r["scope"] == "interval" and r["id"] == ""]
    assert [r["interval_start"] for r in interval_rows] == [at(0).isoformat()]
    assert interval_rows[0]["offered"] == "7"

    assert json.loads(kpi_json(k)) == k


async def test_time_in_ivr_and_drop_off_per_node(conn):
    s = Scenario()
    # q1 goes through the IVR in 40 s, then queues, answered; later takes the survey (not IVR time)
    s.event(0, "ivr.node", "q1", flow="main", node="welcome")
    s.event(8, "ivr.node", "q1", flow="main", node="main_menu")
    s.event(40, "ivr.ended", "q1", flow="main", node="billing_queue", outcome="queued")
    s.answered("q1", "billing", 40, wait=10, agent="a1", talk=100)
    s.event(200, "ivr.node", "q1", flow="survey", node="csat")
    s.event(230, "ivr.ended", "q1", flow="survey", node="thanks", outcome="completed")
    # h1 hangs up in the main menu after 20 s; t1 stays silent there until 50 s
    s.event(100, "ivr.node", "h1", flow="main", node="welcome")
    s.event(108, "ivr.node", "h1", flow="main", node="main_menu")
    s.event(120, "ivr.ended", "h1", flow="main", node="main_menu", outcome="hangup")
    s.event(300, "ivr.node", "t1", flow="main", node="main_menu")
    s.event(350, "ivr.ended", "t1", flow="main", node="main_menu", outcome="timeout")
    # d1 called the queue directly and only took the survey: no front IVR
    s.answered("d1", "billing", 400, wait=5, agent="a1", talk=60)
    s.event(500, "ivr.node", "d1", flow="survey", node="csat")
    s.event(520, "ivr.ended", "d1", flow="survey", node="thanks", outcome="completed")
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert k["ivr_calls"] == 3                          # q1, h1, t1
    assert k["ivr_time_s"] == round((40 + 20 + 50) / 3, 2)
    assert k["ivr_nodes"]["main/main_menu"] == {"entered": 3, "hangups": 1, "timeouts": 1}
    assert k["ivr_nodes"]["main/welcome"] == {"entered": 2, "hangups": 0, "timeouts": 0}
    assert k["ivr_nodes"]["survey/csat"]["entered"] == 2


async def test_callback_kept_place_wait(conn):
    s = Scenario()
    s.joined("k1", "sales", 0, caller="111")
    s.event(10, "callback.accepted", "k1", "sales", number="111")
    s.event(310, "callback.connected", "k1", "sales", "a1", number="111", attempt=1, kept_wait_s=300.0)
    s.joined("k2", "support", 5, caller="222")
    s.event(15, "callback.accepted", "k2", "support", number="222")
    s.event(115, "callback.connected", "k2", "support", "a2", number="222", attempt=2, kept_wait_s=100.0)
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run)
    assert k["callback_kept_wait_s"] == 200.0                 # (300 + 100) / 2
    assert k["queues"]["sales"]["callback_kept_wait_s"] == 300.0
    assert k["callbacks_accepted"] == 2 and k["callbacks_completed"] == 2


async def test_an_agent_first_callback_handle_time_is_the_agents_whole_leg_as_occupancy_counts_it(conn):
    s = Scenario()
    s.joined("k1", "sales", 0, caller="111")
    s.event(10, "callback.accepted", "k1", "sales", number="111")
    s.event(95, "callback.dialing", "k1", "sales", "a1", number="111", attempt=1)
    s.event(100, "agent.state", "k1", None, "a1", state="on_call", previous="reserved", previous_s=5, team="blue")
    s.event(125, "call.connected", "k1", "sales", "a1", wait_s=125, team="blue", skills_met=True)  # customer up
    s.event(185, "call.ended", "k1", "sales", "a1", outcome="answered", talk_s=60)
    s.event(185, "agent.state", "k1", None, "a1", state="wrap_up", previous="on_call", previous_s=85, team="blue")
    s.event(200, "agent.state", "k1", None, "a1", state="available", previous="wrap_up", previous_s=15,
            team="blue")
    await s.save(conn)
    k = await compute_kpis(conn, run=s.run, end=at(200))
    # the agent's leg: 25 s dialling and ringing the customer + 60 s talk + 15 s wrap-up
    assert k["aht_s"] == 100.0 and k["agents"]["a1"]["aht_s"] == 100.0
    assert k["agents"]["a1"]["talk_s"] == 60.0                       # the customer's talk
    assert k["busy_s"] == 100.0 == k["aht_s"] * k["answered"]         # occupancy counts the same time
