"""Quality monitoring on the web: recordings, call timelines, scorecards, evaluations (issue 15).

Theory of operation
-------------------
`QualityApi` adds its routes to the `WebApp` and borrows its plumbing: the same
principal check (`WebApp._require`), the same errors with stable ids, the same
audit trail (`Operations`).  What it reads comes from the `events` table of the
service's run, through `router.quality.store` (recorded calls, timelines,
evaluations, weekly proposals, calibration) and `router.store.kpi.compute_kpis`
(the quality score beside AHT, FCR and CSAT).  Events the router recorded go to
PostgreSQL through the writer, so every read flushes the writer first (as the
board's KPI refresh does): an evaluation is in the list as soon as it is made.

Writes are two, and each is an event recorded through the PBX's `record` (the
path every web action takes, so the board, the metrics and the store see it in
order) plus an ``admin.action`` naming who did it:

- ``POST /api/v1/evaluations`` (supervisor): the answers are scored here, with
  `router.quality.scorecard.score`, never trusted from the caller; the result is
  a ``qa.evaluated`` event for the call's agent.
- ``POST /api/v1/evaluations/{id}/acknowledge`` (only the evaluated agent): a
  ``qa.acknowledged`` event, once.

Recordings are served only with a token or session (never a token in the URL).
The file's name comes only from the call's ``recording.saved`` event, which the
router wrote from its own call id; it is resolved under the recordings directory
by `router.recording.files.resolve`, which refuses a name escaping it.  Caller
input (the call id in the URL) only selects the event, it is never part of a
path.  aiohttp's `FileResponse` answers Range requests, so the page's <audio>
element can seek.
"""
from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from router.config.model import Centre
from router.events import Event
from router.quality import scorecard, store
from router.recording.files import UnsafePath, resolve
from router.store.database import create_pool
from router.store.kpi import compute_kpis
from router.web.auth import SESSION_COOKIE, Principal
from router.web.operations import ActionError, Target

if TYPE_CHECKING:
    from router.web.app import WebApp

log = structlog.get_logger("router.web.quality")

MAX_COMMENT = 4000
YEARS = (1970, 9000)                                  # dates a query may name (no overflow near year 1 or 9999)
MAX_RANGE = timedelta(days=92)
DEFAULT_RANGE = timedelta(days=7)
AUDIO_TYPES = {".wav": "audio/wav", ".opus": "audio/ogg", ".ogg": "audio/ogg"}
CALL_ID = re.compile(r"^[A-Za-z0-9_.:@+-]{1,128}$")
AGENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class QualitySource:
    """What the quality API needs of the service: the centre, its database and run, the writer's flush."""
    centre: Centre
    dsn: str | None
    run: str
    flush: Callable[[], Awaitable[Any]] | None = None


class QualityApi:
    def __init__(self, app: WebApp, source: QualitySource | None) -> None:
        self.app, self.source = app, source
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._cards: dict[str, Any] | None = None
        self._acknowledged: set[str] = set()          # acknowledged by this process (a double click)
        app.app.on_cleanup.append(self._close)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/quality", self._page),
            web.get("/api/v1/recordings", self._recordings),
            web.get("/api/v1/recordings/{call}/audio", self._audio),
            web.get("/api/v1/calls/{call}/timeline", self._timeline),
            web.get("/api/v1/scorecards", self._scorecards),
            web.get("/api/v1/scorecards/for/{queue}", self._scorecard_for),
            web.get("/api/v1/evaluations", self._evaluations),
            web.post("/api/v1/evaluations", self._evaluate),
            web.post("/api/v1/evaluations/{evaluation}/acknowledge", self._acknowledge),
            web.get("/api/v1/quality/proposals", self._proposals),
            web.get("/api/v1/quality/calibration", self._calibration),
            web.get("/api/v1/quality/summary", self._summary),
        ]

    # --- plumbing -------------------------------------------------------------------

    @property
    def centre(self) -> Centre:
        return self._source().centre

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.centre.timezone)

    def _source(self) -> QualitySource:
        if self.source is None or self.source.dsn is None:
            raise ActionError(503, "no_database", "quality monitoring reads the events in PostgreSQL; "
                                                  "this service has no database")
        return self.source

    async def _conn(self) -> Any:
        """A pooled connection (made on first use, closed with the app)."""
        source = self._source()
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await create_pool(source.dsn, min_size=0, max_size=4)   # type: ignore[arg-type]
        return self._pool.acquire()

    async def _settle(self) -> None:
        """Flush the writer so that what was recorded is in PostgreSQL before a read."""
        flush = self._source().flush
        if flush is None:
            return
        try:
            async with asyncio.timeout(5.0):
                await flush()
        except TimeoutError:
            pass                                  # the writer is spooling: read what is there

    async def _close(self, _app: web.Application) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _read(self, name: str, **kwargs: Any) -> Any:
        """Call `router.quality.store.<name>` on a fresh read of the service's run."""
        function = getattr(store, name)
        kwargs.update(run=self._source().run, timezone=self.centre.timezone)
        await self._settle()
        async with await self._conn() as conn:
            return await function(conn, **kwargs)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        await self._settle()
        async with await self._conn() as conn:
            return await conn.fetch(sql, self._source().run, *args)

    def _require(self, request: web.Request, role: str, *, agent_too: bool = False) -> Principal:
        """The caller must hold `role`; with `agent_too` an agent token passes too (the handler
        then limits it to its own agent)."""
        principal = self.app._principal(request)
        own = principal.agent if principal is not None and agent_too else None
        return self.app._require(request, role, agent=own)

    def _refuse(self, who: Principal, action: str, target: Target, status: int, error: str,
                message: str) -> ActionError:
        return self.app.operations.refuse(who, action, target, status, error, message)

    def _comment(self, body: dict[str, Any], key: str, who: Principal, action: str, target: Target) -> str:
        """The free-text field `key` of a body: text of at most MAX_COMMENT characters ("" when absent)."""
        text = body.get(key)
        text = "" if text is None else text
        if not isinstance(text, str) or len(text) > MAX_COMMENT or "\x00" in text:
            raise self._refuse(who, action, target, 422, "invalid_comments",
                               f"{key}: expected text of at most {MAX_COMMENT} characters")
        return text

    def _cards_by_id(self) -> dict[str, Any]:
        if self._cards is None:
            directory = getattr(self.centre, "scorecards", None)
            if not directory:
                self._cards = {}
            else:
                cards, problems = scorecard.load_scorecards(directory, list(self.centre.queues))
                for problem in problems:
                    log.warning("web.scorecard_problem", problem=problem)
                self._cards = dict(cards)
        return self._cards

    # --- query parameters --------------------------------------------------------------

    def _moment(self, request: web.Request, name: str, *, end: bool = False) -> datetime | None:
        """A `from`/`to` query value: an ISO date (a local day; `to` includes it) or date-time
        (naive: the centre's local time)."""
        text = request.query.get(name)
        if text is None or text == "":
            return None
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime(day.year, day.month, day.day, tzinfo=self.zone)
            else:
                moment = datetime.fromisoformat(text)
            if not YEARS[0] <= moment.year <= YEARS[1]:
                raise ValueError(moment.year)
        except ValueError:
            raise ActionError(422, "invalid_time", f"{name}: expected an ISO date or date-time from {YEARS[0]} to "
                                                   f"{YEARS[1]}, e.g. 2026-12-04 or 2026-12-04T09:00") from None
        moment = moment.replace(tzinfo=self.zone) if moment.tzinfo is None else moment
        return moment + timedelta(days=1) if end and len(text) == 10 else moment

    def _window(self, request: web.Request) -> tuple[datetime, datetime]:
        """[from, to): by default the last 7 days up to now (the PBX's clock)."""
        now = datetime.fromtimestamp(self.app.operations.pbx.now(), timezone.utc)
        until = self._moment(request, "to", end=True) or now + timedelta(seconds=1)
        since = self._moment(request, "from") or until - DEFAULT_RANGE
        if since >= until:
            raise ActionError(422, "invalid_time", "from: must be before to")
        if until - since > MAX_RANGE:
            raise ActionError(422, "invalid_time", f"from..to: at most {MAX_RANGE.days} days")
        return since, until

    def _iso(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).isoformat()

    @staticmethod
    def _id(request: web.Request, name: str, pattern: re.Pattern[str], error: str) -> str | None:
        value = request.query.get(name)
        if value is None or value == "":
            return None
        if not pattern.match(value):
            raise ActionError(422, error, f"{name}: not a valid id")
        return value

    def _queue_param(self, request: web.Request, who: Principal) -> str | None:
        queue = request.query.get("queue") or None
        if queue is not None:
            if queue not in self.centre.queues:
                raise ActionError(422, "unknown_queue", f"queue: unknown queue {queue!r}")
            if not who.sees_queue(queue):
                raise ActionError(403, "forbidden_queue", f"this token may not read queue {queue!r}")
        return queue

    # --- the page -------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        session = request.cookies.get(SESSION_COOKIE)
        principal = self.app.tokens.session(session) if session else None
        if principal is None:
            raise web.HTTPSeeOther("/login")
        if principal.agent is not None:
            raise web.HTTPSeeOther("/agent")
        return self.app._file("quality.html")

    # --- a call's recording and events ---------------------------------------------------

    async def _call_facts(self, call_id: str) -> dict[str, Any] | None:
        """The call's queue and agent, and its latest recording (None when the run has no such call)."""
        rows = await self._fetch(
            "SELECT type, queue, agent, data FROM events WHERE run = $1 AND call_id = $2 "
            "AND type IN ('queue.joined', 'call.connected', 'recording.saved', 'recording.pruned', "
            "'call.arrived', 'call.ended') ORDER BY ts, id", call_id)
        if not rows:
            return None
        facts: dict[str, Any] = {"call_id": call_id, "queue": None, "agent": None, "recording": None,
                                 "pruned": set(), "queues": set()}
        for row in rows:
            if row["queue"]:
                facts["queues"].add(row["queue"])
            if row["type"] == "queue.joined" and facts["queue"] is None:
                facts["queue"] = row["queue"]
            elif row["type"] == "call.connected":
                facts["agent"], facts["queue"] = row["agent"], row["queue"] or facts["queue"]
            elif row["type"] == "recording.saved":
                facts["recording"] = {"file": (row["data"] or {}).get("file"), "queue": row["queue"],
                                      "agent": row["agent"], **(row["data"] or {})}
            elif row["type"] == "recording.pruned":
                facts["pruned"].add((row["data"] or {}).get("file"))
        if facts["recording"] is not None:
            facts["queue"] = facts["recording"]["queue"] or facts["queue"]
            facts["agent"] = facts["recording"]["agent"] or facts["agent"]
        return facts

    def _may_read_call(self, who: Principal, facts: dict[str, Any]) -> bool:
        if who.agent is not None:
            return facts["agent"] == who.agent
        return who.queues is None or bool(facts["queues"] & who.queues)

    def _call_id(self, request: web.Request) -> str:
        call_id = request.match_info["call"]
        if not CALL_ID.match(call_id):
            raise ActionError(404, "unknown_call", "unknown call")
        return call_id

    async def _readable_call(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        """The call the URL names and its facts, for a principal who may read it (else 404)."""
        who = self._require(request, "viewer", agent_too=True)
        call_id = self._call_id(request)
        facts = await self._call_facts(call_id)
        if facts is None or not self._may_read_call(who, facts):
            raise ActionError(404, "unknown_call", f"unknown call {call_id!r}")
        return call_id, facts

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        call_id, facts = await self._readable_call(request)
        recording = facts["recording"]
        if recording is None or not isinstance(recording.get("file"), str):
            raise ActionError(404, "not_recorded", f"call {call_id!r} has no saved recording")
        if recording["file"] in facts["pruned"]:
            raise ActionError(404, "recording_pruned", f"the recording of {call_id!r} was deleted past its retention")
        path = self._resolve(call_id, recording["file"])
        if not path.is_file():
            raise ActionError(404, "recording_missing", f"the recording of {call_id!r} is not on disk")
        kind = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return web.FileResponse(path, headers={"Content-Type": kind, "Content-Disposition": "inline"})

    def _resolve(self, call_id: str, name: str) -> Path:
        """The recording's file under the recordings directory; anything escaping it is refused."""
        settings = getattr(self.centre, "recording", None)
        if settings is None:
            raise ActionError(404, "not_recorded", "this centre has no recordings directory")
        directory = Path(settings.directory)
        if not directory.is_absolute():
            directory = Path(self.centre.source).resolve().parent / directory
        try:
            return Path(resolve(directory, name))
        except UnsafePath:
            log.warning("web.recording_unsafe_path", call_id=call_id)
            raise ActionError(404, "unsafe_path", f"the recording of {call_id!r} names a file outside the "
                                                  "recordings directory: not served") from None

    async def _timeline(self, request: web.Request) -> web.StreamResponse:
        call_id, facts = await self._readable_call(request)
        events = await self._read("call_timeline", call_id=call_id)
        ivr = [{"ts": e["ts"], "flow": (e.get("data") or {}).get("flow"), "node": (e.get("data") or {}).get("node"),
                "input": (e.get("data") or {}).get("input"), "type": e["type"]}
               for e in events if e["type"] in ("ivr.node", "ivr.input", "ivr.ended")]
        return web.json_response({"call_id": call_id, "queue": facts["queue"], "agent": facts["agent"],
                                  "recording": _public_recording(facts["recording"]),
                                  "events": events, "ivr_path": ivr}, dumps=_dumps)

    async def _recordings(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer")
        since, until = self._window(request)
        agent = self._id(request, "agent", AGENT_ID, "unknown_agent")
        queue = self._queue_param(request, who)
        calls = await self._read("recorded_calls", since=since, until=until, agent=agent, queue=queue)
        calls = [call for call in calls if who.sees_queue(call.get("queue"))]
        return web.json_response({"from": self._iso(since), "to": self._iso(until), "recordings": calls},
                                 dumps=_dumps)

    # --- scorecards -------------------------------------------------------------------

    async def _scorecards(self, request: web.Request) -> web.StreamResponse:
        self._require(request, "viewer", agent_too=True)
        card_json = scorecard.card_json
        return web.json_response({"scorecards": [card_json(card) for card in self._cards_by_id().values()]})

    async def _scorecard_for(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer", agent_too=True)
        queue = request.match_info["queue"]
        if queue not in self.centre.queues or not who.sees_queue(queue):
            raise ActionError(404, "unknown_queue", f"unknown queue {queue!r}")
        card = scorecard.scorecard_for(self._cards_by_id(), queue)
        if card is None:
            raise ActionError(404, "no_scorecard", f"no scorecard is assigned to queue {queue!r}")
        return web.json_response(scorecard.card_json(card))

    # --- evaluations --------------------------------------------------------------------

    async def _evaluate(self, request: web.Request) -> web.StreamResponse:
        action = "evaluation.create"
        who = self.app._require(request, "supervisor", action=action)
        body = await self.app._body(request)
        call_id = body.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise self._refuse(who, action, Target(), 422, "missing_field", "call_id: required")
        target = Target(call_id=call_id)
        facts = await self._call_facts(call_id) if CALL_ID.match(call_id) else None
        if facts is None or not self._may_read_call(who, facts):
            raise self._refuse(who, action, target, 404, "unknown_call", f"unknown call {call_id!r}")
        target = Target(call_id=call_id, queue=facts["queue"], agent=facts["agent"])
        if facts["recording"] is None:
            raise self._refuse(who, action, target, 404, "not_recorded", f"call {call_id!r} has no saved recording")
        if facts["agent"] is None:
            raise self._refuse(who, action, target, 409, "not_answered", f"call {call_id!r} was not answered")
        cards = self._cards_by_id()
        name = body.get("scorecard")
        if name is None:
            card = scorecard.scorecard_for(cards, facts["queue"])
        else:
            card = cards.get(name) if isinstance(name, str) else None
        if card is None:
            raise self._refuse(who, action, target, 422, "unknown_scorecard",
                               f"scorecard: unknown scorecard {name!r}" if name is not None
                               else f"scorecard: no scorecard is assigned to queue {facts['queue']!r}")
        if card.queues and facts["queue"] not in card.queues:
            raise self._refuse(who, action, target, 422, "scorecard_not_for_queue",
                               f"scorecard: {card.id!r} is not for queue {facts['queue']!r}")
        answers = body.get("answers")
        if not isinstance(answers, dict):
            raise self._refuse(who, action, target, 422, "invalid_answer", "answers: expected an object "
                                                                             "{question id: answer}")
        comments = self._comment(body, "comments", who, action, target)
        try:
            result = scorecard.score(card, answers)
        except scorecard.AnswerError as error:
            raise self._refuse(who, action, target, 422, "invalid_answer", str(error)) from None
        evaluation_id = str(uuid.uuid4())
        data = {"evaluation_id": evaluation_id, "scorecard": card.id, "version": card.version,
                "evaluator": who.name, "answers": answers, "comments": comments,
                "score": result.value, "critical_failed": result.critical_failed}
        pbx = self.app.operations.pbx
        pbx.record(Event(pbx.now(), "qa.evaluated", call_id=call_id, queue=facts["queue"], agent=facts["agent"],
                         data=data))
        self.app.operations._audit(who, action, target, "ok", {"evaluation_id": evaluation_id, "scorecard": card.id,
                                                              "score": result.value})
        return web.json_response({"ok": True, "evaluation_id": evaluation_id, "call_id": call_id,
                                  "queue": facts["queue"], "agent": facts["agent"], "scorecard": card.id,
                                  "version": card.version, "score": result.value,
                                  "critical_failed": result.critical_failed, "sections": result.sections})

    async def _evaluations(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer", agent_too=True)
        agent = self._id(request, "agent", AGENT_ID, "unknown_agent")
        if who.agent is not None:
            if agent is not None and agent != who.agent:
                raise ActionError(403, "forbidden_role", "an agent token reads only its own evaluations")
            agent = who.agent
        call_id = request.query.get("call_id") or None
        if call_id is not None and not CALL_ID.match(call_id):
            raise ActionError(404, "unknown_call", "unknown call")
        since = self._moment(request, "from")
        until = self._moment(request, "to", end=True)
        rows = await self._read("evaluations", agent=agent, call_id=call_id, since=since, until=until)
        rows = [row for row in rows if (who.agent is not None and row.get("agent") == who.agent)
                or (who.agent is None and who.sees_queue(row.get("queue")))]
        return web.json_response({"evaluations": rows}, dumps=_dumps)

    async def _acknowledge(self, request: web.Request) -> web.StreamResponse:
        action = "evaluation.acknowledge"
        evaluation_id = request.match_info["evaluation"]
        who = self.app._principal(request)
        if who is None:
            raise ActionError(401, "unauthenticated", "a valid bearer token or sign-in is required")
        target = Target()
        try:
            evaluation_id = str(uuid.UUID(evaluation_id))
        except ValueError:
            raise self._refuse(who, action, target, 404, "unknown_evaluation", "unknown evaluation") from None
        rows = await self._fetch(
            "SELECT type, call_id, queue, agent FROM events WHERE run = $1 AND type IN ('qa.evaluated', "
            "'qa.acknowledged') AND data->>'evaluation_id' = $2 ORDER BY ts, id", evaluation_id)
        evaluated = next((row for row in rows if row["type"] == "qa.evaluated"), None)
        if evaluated is None or (who.agent is not None and who.agent != evaluated["agent"]) or (
                who.agent is None and not who.sees_queue(evaluated["queue"])):
            raise self._refuse(who, action, target, 404, "unknown_evaluation", f"unknown evaluation {evaluation_id}")
        target = Target(call_id=evaluated["call_id"], queue=evaluated["queue"], agent=evaluated["agent"])
        if who.agent != evaluated["agent"]:
            raise self._refuse(who, action, target, 403, "forbidden_role",
                               "only the evaluated agent acknowledges an evaluation")
        if evaluation_id in self._acknowledged or any(row["type"] == "qa.acknowledged" for row in rows):
            raise self._refuse(who, action, target, 409, "already_acknowledged",
                               f"evaluation {evaluation_id} is already acknowledged")
        body = await self.app._body(request)
        comment = self._comment(body, "comment", who, action, target)
        self._acknowledged.add(evaluation_id)
        pbx = self.app.operations.pbx
        pbx.record(Event(pbx.now(), "qa.acknowledged", call_id=evaluated["call_id"], queue=evaluated["queue"],
                         agent=evaluated["agent"], data={"evaluation_id": evaluation_id, "comment": comment}))
        self.app.operations._audit(who, action, target, "ok", {"evaluation_id": evaluation_id})
        return web.json_response({"ok": True, "evaluation_id": evaluation_id, "acknowledged": True})

    # --- sampling, calibration, figures ---------------------------------------------------

    async def _proposals(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer")
        text = request.query.get("week")
        try:
            if text:
                day = date.fromisoformat(text)
                if not YEARS[0] <= day.year <= YEARS[1]:
                    raise ValueError(day.year)
            else:
                day = datetime.fromtimestamp(self.app.operations.pbx.now(), self.zone).date()
                day -= timedelta(days=day.weekday())      # this week's Monday
        except ValueError:
            raise ActionError(422, "invalid_time", "week: expected a date, e.g. 2026-11-30") from None
        start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        proposed = await self._read("proposals", week_start=start, seed=day.isoformat())
        out = {agent: [call for call in calls if who.sees_queue(call.get("queue"))]
               for agent, calls in proposed.items()}
        return web.json_response({"week": day.isoformat(), "agents": {a: c for a, c in out.items() if c}},
                                 dumps=_dumps)

    async def _calibration(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer")
        since, until = self._window(request)
        rows = await self._read("calibration", since=since, until=until)
        if who.queues is not None:
            queues = await self._queues_of([row["call_id"] for row in rows])
            rows = [row for row in rows if who.sees_queue(queues.get(row["call_id"]))]
        return web.json_response({"from": self._iso(since), "to": self._iso(until), "calls": rows}, dumps=_dumps)

    async def _queues_of(self, calls: list[str]) -> dict[str, str]:
        rows = await self._fetch("SELECT DISTINCT ON (call_id) call_id, queue FROM events WHERE run = $1 "
                                 "AND type = 'qa.evaluated' AND call_id = ANY($2::text[]) ORDER BY call_id, ts",
                                 calls)
        return {row["call_id"]: row["queue"] for row in rows}

    async def _summary(self, request: web.Request) -> web.StreamResponse:
        who = self._require(request, "viewer")
        since, until = self._window(request)
        source, centre = self._source(), self.centre
        await self._settle()
        async with await self._conn() as conn:
            kpis = await compute_kpis(conn, run=source.run, start=since, end=until,
                                      short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)

        def pick(figures: dict[str, Any], fcr: bool = True) -> dict[str, Any]:
            out = {"quality_score": figures.get("quality_score"), "evaluations": figures.get("evaluations", 0),
                   "answered": figures.get("answered"), "aht_s": figures.get("aht_s"),
                   "csat_avg": figures.get("csat_avg")}
            if fcr:
                out["fcr_rate"] = figures.get("fcr_rate")
            return out

        engine = self.app.operations.engine
        scoped = who.queues is not None
        queues = {q: {"name": centre.queues[q].name, **pick(f)} for q, f in kpis.get("queues", {}).items()
                  if q in centre.queues and who.sees_queue(q)}
        for queue in centre.queues:                    # every queue the token sees, even without calls
            if who.sees_queue(queue) and queue not in queues:
                queues[queue] = {"name": centre.queues[queue].name, **pick({})}

        def agent_visible(agent: str) -> bool:
            runtime = engine.agents.get(agent)
            return not scoped or (runtime is not None and bool(set(runtime.queues) & who.queues))  # type: ignore[operator]

        agents = {a: {"name": centre.agents[a].name if a in centre.agents else a, "team": f.get("team"),
                      **pick(f, fcr=False)}
                  for a, f in kpis.get("agents", {}).items() if agent_visible(a)}
        teams = {} if scoped else {t: pick(f, fcr=False) for t, f in kpis.get("teams", {}).items()}
        total = None if scoped else pick(kpis)
        return web.json_response({"from": self._iso(since), "to": self._iso(until), "total": total,
                                  "queues": dict(sorted(queues.items())), "teams": dict(sorted(teams.items())),
                                  "agents": dict(sorted(agents.items()))}, dumps=_dumps)


def _public_recording(recording: dict[str, Any] | None) -> dict[str, Any] | None:
    if recording is None:
        return None
    return {key: recording.get(key) for key in ("file", "size_bytes", "duration_s", "retention_days")}


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_default)
