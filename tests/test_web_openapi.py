"""The OpenAPI description against the real service: every API route documented (and nothing
documented that is not there), and schemathesis calling every operation over HTTP with generated
cases, each answer checked against the spec (no 5xx, a documented status, the documented content
type, a body of the documented schema)."""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from router.engine.messages import CallbackAccepted
from router.web.app import AGENT_VERBS
from router.web.openapi import openapi_spec
from tests.web_harness import TOKENS, Live

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]   # the loop of the fixtures

UNDOCUMENTED = {"/api/v1/stream", "/api/v1/openapi.json"}   # an event stream, and the spec itself
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MAX_EXAMPLES = 25
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


# --- the routes and the spec ---------------------------------------------------------

def app_operations(live: Live) -> set[tuple[str, str]]:
    """(METHOD, path) of every API route the app serves; `{verb}` expanded to the verbs it accepts."""
    operations = set()
    for route in live.web.web.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not path.startswith("/api/v1/") or path in UNDOCUMENTED or route.method == "HEAD":
            continue                                 # aiohttp adds HEAD to every GET by itself
        verbs = AGENT_VERBS + ("monitor",) if "{verb}" in path else (None,)
        for verb in verbs:
            operations.add((route.method, path.replace("{verb}", verb) if verb else path))
    return operations


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in METHODS}


async def test_every_api_route_is_documented_and_every_documented_route_exists(live):
    served, documented = app_operations(live), spec_operations(openapi_spec())
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    assert len(served) > 15
    # each documented path parameter is a path parameter of the operation
    for path, item in openapi_spec()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) + item.get("parameters", [])
                        if p["in"] == "path"}
            assert declared == names, (method, path)


async def test_the_service_serves_the_spec_and_it_is_valid_openapi(live):
    status, body = await live.call("GET", "/api/v1/openapi.json")
    assert status == 200 and body == openapi_spec()
    schema = schemathesis.openapi.from_dict(body)
    schema.validate()                                # against the OpenAPI 3.0 meta-schema
    problems = [str(result.err()) for result in schema.get_all_operations() if isinstance(result, Err)]
    assert problems == []


# --- schemathesis against the running service ----------------------------------------

# bodies of the centre's own values besides generated ones, so that actions get past validation
BODIES = {"call_move": [{"queue": queue} for queue in ("billing", "tech", "sales")],
          "agent_monitor": [{"supervisor": "PJSIP/2001", "mode": mode} for mode in ("listen", "whisper", "barge")],
          "call_priority": [{"priority": priority} for priority in (-100, 0, 7, 100)]}


def fuzz(url: str, token: str, ids: dict[str, list[str]], only: set[str] | None = None
         ) -> tuple[list[tuple[str, BaseException]], dict[str, Counter[int]]]:
    """Call every operation (or those in `only`, by operationId) with generated cases, positive and
    negative, with `token`; return the failures (operation, schemathesis' error: what failed and the
    case as a curl command) and the statuses seen per operation."""
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[tuple[str, BaseException]] = []
    seen: dict[str, Counter[int]] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                failures.append(("unusable operation", result.err()))
                continue
            operation = result.ok()
            operation_id = operation.definition.raw.get("operationId")
            if only is not None and operation_id not in only:
                continue
            statuses = seen.setdefault(operation.label, Counter())
            strategies = [operation.as_strategy(generation_mode=mode)
                          for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
            # real ids of the centre as well as generated ones: the 200 and 409 answers, not only 404
            for name in re.findall(r"{(\w+)}", operation.path):
                for value in ids[name]:
                    strategies.append(operation.as_strategy(path_parameters={name: value}))
                    strategies += [operation.as_strategy(path_parameters={name: value}, body=body)
                                   for body in BODIES.get(operation_id, [])]

            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
            @given(case=st.one_of(*strategies))
            def check(case: schemathesis.Case) -> None:
                response = case.call_and_validate(base_url=url, session=session, headers=headers, checks=CHECKS,
                                                  timeout=10)
                statuses[response.status_code] += 1

            try:
                check()
            except (Exception, BaseExceptionGroup) as error:    # failed checks, with the case to reproduce them
                failures.append((operation.label, error))
    return failures, seen


def describe(error: BaseException) -> str:
    """What failed, each failure of a group, and the notes (the case as a curl command)."""
    if isinstance(error, BaseExceptionGroup):
        text = "\n".join([error.message] + [describe(inner) for inner in error.exceptions])
    else:
        text = f"{type(error).__name__}: {error}"
    return "\n".join([text] + list(getattr(error, "__notes__", [])))


def report(failures: list[tuple[str, BaseException]]) -> str:
    return "\n\n".join(f"--- {label}:\n{describe(error)}" for label, error in failures)


def kinds(error: BaseException) -> set[str]:
    """The names of the failures in a schemathesis error (a group of them, or one)."""
    if isinstance(error, BaseExceptionGroup):
        return set().union(*(kinds(inner) for inner in error.exceptions))
    return {type(error).__name__}


def queue_calls(live: Live) -> dict[str, list[str]]:
    """Callers ringing ann (billing), bob or cid (tech), two waiting in sales and one in billing who
    asked for a call-back; the ids to try."""
    calls = [f"call-{n}" for n in range(5)]
    for call_id, queue in zip(calls, ("billing", "tech", "sales", "sales", "billing")):
        live.queue_call(call_id, queue, caller=f"+4477009001{call_id[-1]}0", account=f"1234{call_id[-1]}")
    live.pbx.submit(CallbackAccepted("call-4", "+447700900140"))
    return {"agent": ["ann", "bob", "cid"], "call": calls, "queue": ["billing", "tech", "sales"],
            "evaluation": ["6f1c2a52-58d4-4b7e-9a53-0c7e41f0a001"]}                     # quality monitoring


async def test_schemathesis_finds_the_service_true_to_its_spec(live):
    ids = queue_calls(live)
    failures, seen = await asyncio.to_thread(fuzz, live.url, TOKENS["supervisor"], ids)
    more, seen_by_admin = await asyncio.to_thread(fuzz, live.url, TOKENS["admin"], ids, {"flows_reload"})
    assert failures + more == [], report(failures + more)
    # every operation was called, and the answers were not all refusals
    documented = {f"{method} {path}" for method, path in spec_operations(openapi_spec())}
    assert set(seen) == documented
    assert all(sum(statuses.values()) > 0 for statuses in seen.values()), seen
    everything = sum(seen.values(), Counter())
    assert {200, 404, 409, 422} <= set(everything), everything
    assert seen_by_admin["POST /api/v1/flows/reload"][200] > 0


# --- ... and the fuzzing would notice a difference -----------------------------------

def _drop_available(spec: dict[str, Any]) -> None:
    spec["components"]["schemas"]["Agent"]["properties"]["state"]["enum"].remove("available")


def _drop_404(spec: dict[str, Any]) -> None:
    del spec["paths"]["/api/v1/agents/{agent}"]["get"]["responses"]["404"]


def _problem_json(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/api/v1/agents/{agent}"]["get"]["responses"]
    responses["404"]["content"] = {"application/problem+json": responses["404"]["content"]["application/json"]}


@pytest.mark.parametrize("change,operations,failure", [
    (_drop_available, {"get_agent", "list_agents"}, "JsonSchemaError"),
    (_drop_404, {"get_agent"}, "UndefinedStatusCode"),
    (_problem_json, {"get_agent"}, "UndefinedContentType"),
    (None, {"call_priority"}, "ServerError"),
])
async def test_schemathesis_notices_a_service_untrue_to_its_spec(live, monkeypatch, change, operations, failure):
    if change is not None:                           # the spec served promises something the service does not do
        spec = openapi_spec()
        change(spec)
        monkeypatch.setattr("router.web.app.openapi_spec", lambda: spec)
    else:                                            # the service fails
        def broken(*args: Any) -> dict[str, Any]:
            raise RuntimeError("broken")
        monkeypatch.setattr(live.web.operations, "call_priority", broken)
    failures, _ = await asyncio.to_thread(fuzz, live.url, TOKENS["supervisor"], queue_calls(live), operations)
    assert failures and all(failure in kinds(error) for _, error in failures), report(failures)
