"""The HTTP face of `serve`: dashboard, agent view, admin API, event stream and metrics (aiohttp).

Handlers only parse, authorise and answer; what an action does lives in
`router.web.operations`, what the board shows in `router.web.board`.  Every
API error is JSON ``{"error": <stable id>, "message": ...}``: 400 malformed
request, 401 no valid token, 403 a role or queue the token lacks, 404 unknown
id, 409 not possible in the current state, 422 a value out of its domain.

Authentication: ``Authorization: Bearer <token>`` (scripts) or the
``acd_session`` cookie set by ``POST /login`` (the pages): HttpOnly,
SameSite=Strict, Secure behind HTTPS.  A request carrying the cookie that
changes something must come from this origin (its ``Origin`` header, when
sent, must match).  Tokens never appear in URLs or logs.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from router.web.auth import SESSION_COOKIE, Principal, TokenBook
from router.web.hub import Hub
from router.web.metrics import Metrics
from router.web.openapi import openapi_spec
from router.web.operations import ActionError, Operations, Target
from router.web.quality import QualityApi, QualitySource

log = structlog.get_logger("router.web.app")

PRINCIPAL = web.AppKey("principal", Principal)
STATIC = resources.files("router.web") / "static"
PAGES = {"/": "dashboard.html", "/agent": "agent.html", "/login": "login.html"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
AGENT_VERBS = ("login", "logout", "pause", "resume", "ready", "wrapup")   # an agent may do these to itself
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


class WebApp:
    def __init__(self, tokens: TokenBook, hub: Hub, operations: Operations, metrics: Metrics,
                 quality: QualitySource | None = None) -> None:
        self.tokens, self.hub, self.operations, self.metrics = tokens, hub, operations, metrics
        self.app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024)
        self.app.router.add_routes([
            web.get("/", self._page), web.get("/agent", self._page), web.get("/login", self._page),
            web.post("/login", self._login), web.post("/logout", self._logout),
            web.get("/static/{name}", self._static), web.get("/healthz", self._health),
            web.get("/metrics", self._metrics),
            web.get("/api/v1/openapi.json", self._openapi),
            web.get("/api/v1/me", self._me), web.get("/api/v1/stream", self._stream),
            web.get("/api/v1/queues", self._section("queues")), web.get("/api/v1/agents", self._section("agents")),
            web.get("/api/v1/calls", self._section("calls")), web.get("/api/v1/callbacks", self._section("callbacks")),
            web.get("/api/v1/alarms", self._section("alarms")),
            web.get("/api/v1/agents/{agent}", self._agent),
            web.post("/api/v1/agents/{agent}/{verb}", self._agent_verb),
            web.post("/api/v1/calls/{call}/priority", self._call_priority),
            web.post("/api/v1/calls/{call}/move", self._call_move),
            web.post("/api/v1/calls/{call}/recording/pause", self._call_recording),
            web.post("/api/v1/calls/{call}/recording/resume", self._call_recording),
            web.delete("/api/v1/callbacks/{call}", self._callback_cancel),
            web.post("/api/v1/flows/reload", self._reload),
        ])
        self.quality = QualityApi(self, quality)         # recordings, timelines, scorecards, evaluations
        self.app.router.add_routes(self.quality.routes())

    # --- plumbing -------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith("/api/")
        try:
            response = await handler(request)
        except ActionError as error:
            response = api_error(error.status, error.error, error.message)
        except web.HTTPException as error:
            if not api or error.status < 400:
                raise
            names = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
            response = api_error(error.status, names.get(error.status, "http_error"), error.reason)
        response.headers.update(SECURITY_HEADERS)
        if api:
            response.headers["Cache-Control"] = "no-store"
        return response

    def _principal(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            return self.tokens.check(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        session = request.cookies.get(SESSION_COOKIE)
        if not session:
            return None
        principal = self.tokens.session(session)
        origin = request.headers.get("Origin")
        if principal is not None and request.method not in ("GET", "HEAD") and origin is not None:
            if origin.split("://", 1)[-1] != request.host:
                raise ActionError(403, "cross_origin", "a request from another site may not use the session")
        return principal

    def _require(self, request: web.Request, role: str, agent: str | None = None, *,
                 action: str | None = None, target: Target | None = None) -> Principal:
        """The caller, who must hold `role` or higher, or be the agent `agent` (when given).
        A refused `action` is recorded (who tried, what, on what)."""
        principal = self._principal(request)
        if principal is None:
            raise ActionError(401, "unauthenticated", "a valid bearer token or sign-in is required")
        if (agent is not None and principal.agent == agent) or principal.at_least(role):
            return principal
        message = f"this needs the {role} role" + (f" or the agent {agent!r}" if agent else "")
        if action is not None:
            raise self.operations.refuse(principal, action, target or Target(), 403, "forbidden_role", message)
        raise ActionError(403, "forbidden_role", message)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ActionError(400, "malformed_json", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ActionError(400, "invalid_body", "the body must be a JSON object")
        return body

    # --- pages ----------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        page = PAGES[request.path]
        if page != "login.html":
            session = request.cookies.get(SESSION_COOKIE)
            principal = self.tokens.session(session) if session else None
            if principal is None:
                raise web.HTTPSeeOther("/login")
            if (page == "agent.html") != (principal.agent is not None):
                raise web.HTTPSeeOther("/agent" if principal.agent else "/")
        return self._file(page)

    def _file(self, name: str, status: int = 200) -> web.Response:
        resource = STATIC / name
        if "/" in name or name.startswith(".") or not resource.is_file():
            raise web.HTTPNotFound()
        types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                 ".txt": "text/plain"}
        kind = types.get(name[name.rfind("."):], "application/octet-stream")
        return web.Response(body=resource.read_bytes(), status=status, content_type=kind, charset="utf-8"
                            if kind.startswith("text") else None)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        principal = self.tokens.check(token) if isinstance(token, str) and token else None
        if principal is None:
            log.warning("web.sign_in_refused", peer=request.remote)
            raise web.HTTPSeeOther("/login?failed=1")
        response = web.Response(status=303, headers={"Location": "/agent" if principal.agent else "/"})
        response.set_cookie(SESSION_COOKIE, self.tokens.open_session(principal), httponly=True,
                            samesite="Strict", path="/",
                            secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
                            max_age=int(self.tokens.session_s))
        log.info("web.signed_in", by=principal.name, role=principal.role)
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            self.tokens.close_session(session)
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "role": self.hub.board.role()})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(openapi_spec())

    # --- reads ----------------------------------------------------------------------

    async def _me(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "viewer", agent=self._principal_agent(request))
        return web.json_response({"name": principal.name, "role": principal.role, "agent": principal.agent,
                                  "queues": sorted(principal.queues) if principal.queues is not None else None})

    def _principal_agent(self, request: web.Request) -> str | None:
        principal = self._principal(request)
        return principal.agent if principal is not None else None

    def _section(self, section: str) -> Handler:
        async def read(request: web.Request) -> web.StreamResponse:
            principal = self._require(request, "viewer")
            return web.json_response({section: list(self.hub.snapshot_for(principal)[section].values())})
        return read

    async def _agent(self, request: web.Request) -> web.StreamResponse:
        agent = request.match_info["agent"]
        principal = self._require(request, "viewer", agent=agent)
        record = self.hub.snapshot_for(principal)["agents"].get(agent)
        if record is None:
            raise ActionError(404, "unknown_agent", f"unknown agent {agent!r}")
        return web.json_response(record)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "viewer", agent=self._principal_agent(request))
        viewer, first = self.hub.join(principal)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n" + first)
            while True:
                message = await viewer.messages.get()
                if message is None:
                    break                   # too slow: dropped; the browser reconnects for a fresh snapshot
                await response.write(message)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.hub.leave(viewer)
        return response

    # --- actions --------------------------------------------------------------------

    async def _agent_verb(self, request: web.Request) -> web.StreamResponse:
        agent, verb = request.match_info["agent"], request.match_info["verb"]
        ops = self.operations
        if verb == "monitor":
            principal = self._require(request, "supervisor", action="agent.monitor", target=Target(agent=agent))
            body = await self._body(request)
            return web.json_response(await ops.monitor(principal, agent, body.get("supervisor"),
                                                       body.get("mode", "listen")))
        if verb not in AGENT_VERBS:
            raise ActionError(404, "not_found", f"unknown agent action {verb!r}")
        principal = self._require(request, "supervisor", agent=agent, action=f"agent.{verb}",
                                  target=Target(agent=agent))
        body = await self._body(request)
        if verb == "pause":
            return web.json_response(ops.agent_pause(principal, agent, body.get("reason", "break")))
        actions = {"login": ops.agent_login, "logout": ops.agent_logout, "resume": ops.agent_resume,
                   "ready": ops.agent_ready, "wrapup": ops.wrap_up_done}
        return web.json_response(actions[verb](principal, agent))

    async def _call_priority(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "supervisor", action="call.priority",
                                  target=Target(call_id=request.match_info["call"]))
        body = await self._body(request)
        if "priority" not in body:
            raise ActionError(422, "missing_field", "priority: required")
        return web.json_response(self.operations.call_priority(principal, request.match_info["call"],
                                                               body["priority"]))

    async def _call_move(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "supervisor", action="call.move",
                                  target=Target(call_id=request.match_info["call"]))
        body = await self._body(request)
        if "queue" not in body:
            raise ActionError(422, "missing_field", "queue: required")
        return web.json_response(self.operations.call_move(principal, request.match_info["call"], body["queue"]))

    async def _call_recording(self, request: web.Request) -> web.StreamResponse:
        """Pause or resume a call's recording: a supervisor, or the agent on the call."""
        call_id, verb = request.match_info["call"], request.path.rsplit("/", 1)[1]
        live = self.operations.engine.calls.get(call_id)
        principal = self._require(request, "supervisor", agent=live.agent if live else None,
                                  action=f"call.recording_{verb}", target=Target(call_id=call_id))
        ops = self.operations
        return web.json_response(await (ops.recording_pause if verb == "pause" else ops.recording_resume)(
            principal, call_id))

    async def _callback_cancel(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "supervisor", action="callback.cancel",
                                  target=Target(call_id=request.match_info["call"]))
        return web.json_response(self.operations.callback_cancel(principal, request.match_info["call"]))

    async def _reload(self, request: web.Request) -> web.StreamResponse:
        principal = self._require(request, "admin", action="flows.reload")
        return web.json_response(await self.operations.reload_flows(principal))
