"""The admin API's OpenAPI 3.0 description, served at /api/v1/openapi.json.

Written out by hand from the handlers in router.web.app; tests/test_web_openapi.py
holds the two together (every route documented, every documented route there,
and schemathesis calls each operation against the running service).
"""
from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "Malformed request", 401: "No valid token", 403: "Role or queue not allowed for this token",
             404: "Unknown id", 409: "Not possible in the current state", 422: "A value out of its domain"}
    return {str(code): {"description": words[code], **_json(ERROR)} for code in codes}


def _list(name: str, item: str) -> dict[str, Any]:
    return {"get": {
        "summary": f"The {name} as the token may see them", "operationId": f"list_{name}",
        "security": [{"bearer": []}],
        "responses": {"200": {"description": "OK", **_json({
            "type": "object", "required": [name],
            "properties": {name: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}}}})},
            **_errors(401, 403)}}}


def _action(summary: str, operation: str, parameter: str, body: dict[str, Any] | None,
            result: str, errors: tuple[int, ...], method: str = "post") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": summary, "operationId": operation, "security": [{"bearer": []}],
        "parameters": [{"name": parameter, "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Done", **_json({"$ref": f"#/components/schemas/{result}"})},
                      **_errors(*errors)}}
    if body is not None:
        spec["requestBody"] = {"required": True, **_json(body)}
    return {method: spec}


AGENT_ERRORS = (400, 401, 403, 404, 409, 422)


def _quality_paths() -> dict[str, Any]:
    """Quality monitoring (router/web/quality.py): recordings, timelines, scorecards, evaluations."""
    def query(*names: str) -> list[dict[str, Any]]:
        return [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in names]

    def path(name: str) -> list[dict[str, Any]]:
        return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]

    def read(summary: str, operation: str, result: dict[str, Any], parameters: list[dict[str, Any]],
             errors: tuple[int, ...] = (401, 403, 422)) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": operation, "security": [{"bearer": []}],
                        "parameters": parameters,
                        "responses": {"200": {"description": "OK", **_json(result)}, **_errors(*errors)}}}

    listing = {"type": "object", "additionalProperties": True}
    window = query("from", "to")
    return {
        "/api/v1/recordings": read(
            "Recorded calls (default: the last 7 days); from/to are ISO dates or date-times in the centre's time",
            "list_recordings", {"type": "object", "required": ["recordings"], "properties": {
                "from": {"type": "string"}, "to": {"type": "string"},
                "recordings": {"type": "array", "items": {"$ref": "#/components/schemas/Recording"}}}},
            window + query("agent", "queue")),
        "/api/v1/recordings/{call}/audio": {"get": {
            "summary": "The call's recording (Range requests answered); the file named by its recording.saved",
            "operationId": "recording_audio", "security": [{"bearer": []}], "parameters": path("call"),
            "responses": {"200": {"description": "The audio file",
                                  "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}},
                                              "audio/ogg": {"schema": {"type": "string", "format": "binary"}}}},
                          "206": {"description": "Part of the audio file (a Range request)",
                                  "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}},
                                              "audio/ogg": {"schema": {"type": "string", "format": "binary"}}}},
                          **_errors(401, 403, 404)}}},
        "/api/v1/calls/{call}/timeline": read(
            "The call's events in order, its IVR path and its recording", "call_timeline",
            {"type": "object", "required": ["call_id", "events", "ivr_path"], "properties": {
                "call_id": {"type": "string"}, "queue": {"type": "string", "nullable": True},
                "agent": {"type": "string", "nullable": True},
                "recording": {"type": "object", "nullable": True},
                "events": {"type": "array", "items": {"type": "object"}},
                "ivr_path": {"type": "array", "items": {"type": "object"}}}},
            path("call"), (401, 403, 404)),
        "/api/v1/scorecards": read("The QA scorecards", "list_scorecards", {
            "type": "object", "required": ["scorecards"],
            "properties": {"scorecards": {"type": "array", "items": {"type": "object"}}}}, [], (401, 403)),
        "/api/v1/scorecards/for/{queue}": read("The scorecard assigned to a queue", "scorecard_for",
                                               {"type": "object"}, path("queue"), (401, 403, 404)),
        "/api/v1/evaluations": {
            **read("Evaluations (an agent token: its own only)", "list_evaluations", {
                "type": "object", "required": ["evaluations"],
                "properties": {"evaluations": {"type": "array", "items": {"type": "object"}}}},
                query("agent", "call_id") + window, (401, 403, 404, 422)),
            "post": {
                "summary": "Score a recorded call with a scorecard (scored by the server); records qa.evaluated",
                "operationId": "evaluate", "security": [{"bearer": []}],
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["call_id", "answers"], "properties": {
                        "call_id": {"type": "string"}, "scorecard": {"type": "string"},
                        "answers": {"type": "object", "additionalProperties": {
                            "oneOf": [{"type": "string", "enum": ["yes", "no", "na"]},
                                      {"type": "integer", "minimum": 1, "maximum": 5}]}},
                        "comments": {"type": "string", "maxLength": 4000}}})},
                "responses": {"200": {"description": "Recorded", **_json({
                    "type": "object", "required": ["ok", "evaluation_id", "score"], "properties": {
                        "ok": {"type": "boolean"}, "evaluation_id": {"type": "string"},
                        "call_id": {"type": "string"}, "agent": {"type": "string"},
                        "queue": {"type": "string", "nullable": True}, "scorecard": {"type": "string"},
                        "version": {"type": "string"}, "score": {"type": "number"},
                        "critical_failed": {"type": "boolean"}, "sections": {"type": "object"}}})},
                              **_errors(400, 401, 403, 404, 409, 422)}}},
        "/api/v1/evaluations/{evaluation}/acknowledge": _action(
            "The evaluated agent acknowledges its evaluation; records qa.acknowledged", "evaluation_acknowledge",
            "evaluation", {"type": "object", "properties": {"comment": {"type": "string", "maxLength": 4000}}},
            "AcknowledgeResult", (400, 401, 403, 404, 409, 422)),
        "/api/v1/quality/proposals": read(
            "Calls proposed for evaluation per agent for the week starting on `week` (random and targeted)",
            "quality_proposals", {"type": "object", "required": ["week", "agents"], "properties": {
                "week": {"type": "string"}, "agents": listing}}, query("week")),
        "/api/v1/quality/calibration": read(
            "Calls scored by two or more evaluators, with their spread", "quality_calibration",
            {"type": "object", "required": ["calls"], "properties": {
                "from": {"type": "string"}, "to": {"type": "string"},
                "calls": {"type": "array", "items": {"type": "object"}}}}, window),
        "/api/v1/quality/summary": read(
            "Quality score and evaluations beside AHT, FCR and CSAT, per queue, team and agent",
            "quality_summary", {"type": "object", "required": ["queues", "teams", "agents"], "properties": {
                "from": {"type": "string"}, "to": {"type": "string"},
                "total": {"type": "object", "nullable": True},
                "queues": listing, "teams": listing, "agents": listing}}, window),
    }


def openapi_spec() -> dict[str, Any]:
    agent_path = "/api/v1/agents/{agent}"
    paths: dict[str, Any] = {
        "/api/v1/queues": _list("queues", "Queue"),
        "/api/v1/agents": _list("agents", "Agent"),
        "/api/v1/calls": _list("calls", "Call"),
        "/api/v1/callbacks": _list("callbacks", "Callback"),
        "/api/v1/alarms": _list("alarms", "Alarm"),
        agent_path: {"get": {
            "summary": "One agent", "operationId": "get_agent", "security": [{"bearer": []}],
            "parameters": [{"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK", **_json({"$ref": "#/components/schemas/Agent"})},
                          **_errors(401, 403, 404)}}},
        "/api/v1/me": {"get": {
            "summary": "Who the token belongs to", "operationId": "me", "security": [{"bearer": []}],
            "responses": {"200": {"description": "OK", **_json({"type": "object"})}, **_errors(401, 403)}}},
        f"{agent_path}/login": _action("Log the agent in", "agent_login", "agent", None, "AgentResult",
                                       AGENT_ERRORS),
        f"{agent_path}/logout": _action("Log the agent out (after its call, if on one)", "agent_logout", "agent",
                                        None, "AgentResult", AGENT_ERRORS),
        f"{agent_path}/pause": _action("Pause the agent with a reason", "agent_pause", "agent", {
            "type": "object", "properties": {"reason": {"type": "string", "pattern": "^[A-Za-z0-9 _.-]{1,32}$"}}},
            "AgentResult", AGENT_ERRORS),
        f"{agent_path}/resume": _action("Resume a paused agent", "agent_resume", "agent", None, "AgentResult",
                                        AGENT_ERRORS),
        f"{agent_path}/ready": _action("Log in or resume (the agent view's Ready)", "agent_ready", "agent", None,
                                       "AgentResult", AGENT_ERRORS),
        f"{agent_path}/wrapup": _action("End the agent's wrap-up now", "agent_wrapup", "agent", None,
                                        "AgentResult", AGENT_ERRORS),
        f"{agent_path}/monitor": _action(
            "Ring the supervisor's phone into ChanSpy on the agent's call", "agent_monitor", "agent", {
                "type": "object", "required": ["supervisor"], "properties": {
                    "supervisor": {"type": "string", "example": "PJSIP/2001"},
                    "mode": {"type": "string", "enum": ["listen", "whisper", "barge"], "default": "listen"}}},
            "MonitorResult", AGENT_ERRORS),
        "/api/v1/calls/{call}/priority": _action("Set a waiting call's priority", "call_priority", "call", {
            "type": "object", "required": ["priority"],
            "properties": {"priority": {"type": "integer", "minimum": -100, "maximum": 100}}},
            "CallResult", AGENT_ERRORS),
        "/api/v1/calls/{call}/move": _action("Move a waiting call to another queue; it keeps its place",
                                             "call_move", "call", {
                                                 "type": "object", "required": ["queue"],
                                                 "properties": {"queue": {"type": "string"}}},
                                             "CallResult", AGENT_ERRORS),
        **{f"/api/v1/calls/{{call}}/recording/{verb}": _action(
            f"{verb.title()} a connected call's recording (a supervisor, or the call's agent); 409 not_recording "
            f"when it is not recorded or not {'running' if verb == 'pause' else 'paused'}",
            f"call_recording_{verb}", "call", None, "RecordingPauseResult", (401, 403, 404, 409))
           for verb in ("pause", "resume")},
        "/api/v1/callbacks/{call}": _action("Cancel a pending call-back", "callback_cancel", "call", None,
                                            "CallResult", (401, 403, 404, 409), method="delete"),
        "/api/v1/flows/reload": {"post": {
            "summary": "Reload the IVR flows from disk (kept only when they have no errors)",
            "operationId": "flows_reload", "security": [{"bearer": []}],
            "responses": {"200": {"description": "Reloaded, or refused with the errors", **_json({
                "type": "object", "required": ["ok"], "properties": {
                    "ok": {"type": "boolean"}, "version": {"type": "string", "nullable": True},
                    "errors": {"type": "array", "items": {"type": "string"}}}})}, **_errors(401, 403)}}},
    }
    nullable_number = {"type": "number", "nullable": True}
    nullable_string = {"type": "string", "nullable": True}
    schemas = {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "description": "stable error id"}, "message": {"type": "string"}}},
        "Queue": {"type": "object", "required": ["id", "waiting", "agents", "offered", "answered", "abandoned"],
                  "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                 "waiting": {"type": "integer"}, "oldest_joined_at": nullable_number,
                                 "ewt_s": nullable_number, "agents": {"type": "object"},
                                 "offered": {"type": "integer"}, "answered": {"type": "integer"},
                                 "abandoned": {"type": "integer"}, "service_level": nullable_number,
                                 "sl_target": {"type": "number"}, "sl_threshold_s": {"type": "number"},
                                 "off_target": {"type": "boolean"}, "callbacks_pending": {"type": "integer"},
                                 "quality_score": nullable_number, "evaluations": {"type": "integer"}}},
        "Agent": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "team": nullable_string,
            "state": {"type": "string", "enum": ["logged_out", "available", "reserved", "on_call", "wrap_up",
                                                 "paused"]},
            "since": nullable_number, "reason": nullable_string, "call_id": nullable_string,
            "queue": nullable_string, "calls_today": {"type": "integer"}, "aht_today_s": nullable_number,
            "quality_today": nullable_number}},
        "Call": {"type": "object", "required": ["call_id", "queue", "state"], "properties": {
            "call_id": {"type": "string"}, "queue": {"type": "string"}, "caller": {"type": "string"},
            "place": {"type": "integer", "nullable": True}, "joined_at": {"type": "number"},
            "priority": {"type": "integer"}, "state": {"type": "string", "enum": ["waiting", "ringing"]}}},
        "Callback": {"type": "object", "required": ["call_id", "queue", "number", "state"], "properties": {
            "call_id": {"type": "string"}, "queue": {"type": "string"}, "number": {"type": "string"},
            "place": {"type": "integer", "nullable": True}, "joined_at": {"type": "number"},
            "attempts": {"type": "integer"}, "due_at": nullable_number,
            "state": {"type": "string", "enum": ["waiting", "scheduled", "dialing"]}}},
        "Alarm": {"type": "object", "required": ["id", "kind", "text"], "properties": {
            "id": {"type": "string"}, "kind": {"type": "string"}, "text": {"type": "string"},
            "since": nullable_number}},
        "AgentResult": {"type": "object", "required": ["ok", "agent", "state"], "properties": {
            "ok": {"type": "boolean"}, "agent": {"type": "string"}, "state": {"type": "string"},
            "reason": nullable_string, "pending": nullable_string}},
        "CallResult": {"type": "object", "required": ["ok", "call_id"], "properties": {
            "ok": {"type": "boolean"}, "call_id": {"type": "string"}, "queue": nullable_string,
            "priority": {"type": "integer", "nullable": True}}},
        "MonitorResult": {"type": "object", "required": ["ok", "agent", "mode"], "properties": {
            "ok": {"type": "boolean"}, "agent": {"type": "string"}, "mode": {"type": "string"},
            "channel": {"type": "string"}, "originate_id": {"type": "string"}}},
        "RecordingPauseResult": {"type": "object", "required": ["ok", "call_id", "paused"], "properties": {
            "ok": {"type": "boolean"}, "call_id": {"type": "string"}, "paused": {"type": "boolean"}}},
        "Recording": {"type": "object", "required": ["call_id"], "properties": {
            "call_id": {"type": "string"}, "queue": nullable_string, "agent": nullable_string,
            "connected_at": nullable_string, "talk_s": nullable_number, "file": nullable_string,
            "duration_s": nullable_number, "caller": nullable_string, "evaluations": {"type": "integer"}}},
        "AcknowledgeResult": {"type": "object", "required": ["ok", "evaluation_id"], "properties": {
            "ok": {"type": "boolean"}, "evaluation_id": {"type": "string"}, "acknowledged": {"type": "boolean"}}},
    }
    paths.update(_quality_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "acd-router admin API", "version": "1",
                 "description": "Read the live centre and act on it. Authorization: Bearer <token>; roles "
                                "viewer (reads), supervisor (agent, call and call-back actions, monitoring), "
                                "admin (everything), agent:<id> (its own agent). Every action is recorded as "
                                "an admin.action event."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
