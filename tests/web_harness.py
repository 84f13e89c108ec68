"""A running web service over the demo's simulated PBX, for the web API tests.

The centre is small and quiet (no simulated arrivals: the tests put callers in
queues themselves, as the PBX side would), the store is the session's real
PostgreSQL under a run of its own, and the service listens on a free port.
"""
from __future__ import annotations

import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from router.config import load_config
from router.engine.messages import CallQueued
from router.sim.realtime import SimulatedPbx
from router.store.database import ensure_schema
from router.store.writer import EventWriter
from router.web.server import WebService

TOKENS = {
    "viewer": "viewer-token-0000000001",
    "supervisor": "supervisor-token-00000001",
    "admin": "admin-token-0000000000001",
    "agent": "agent-token-0000000000001",            # agent:ann
    "billing_supervisor": "billing-sup-token-000001",  # supervisor of billing only (from the config)
}
ENV_TOKENS = ",".join(f"{TOKENS[name]}:{role}" for name, role in (
    ("viewer", "viewer"), ("supervisor", "supervisor"), ("admin", "admin"), ("agent", "agent:ann")))

CENTRE = """\
    timezone: Europe/London
    skills:
      - {id: en, name: English, kind: language}
      - {id: billing, name: Billing}
      - {id: tech, name: Tech}
      - {id: sales, name: Sales}
    agents:
      - {id: ann, name: Ann Lee, endpoint: PJSIP/1001, team: red, skills: {en: 8, billing: 7}}
      - {id: bob, name: Bob Ray, endpoint: PJSIP/1002, team: blue, skills: {en: 8, tech: 7}}
      - {id: cid, name: Cid Moe, endpoint: PJSIP/1003, team: blue, skills: {en: 8, tech: 7, billing: 3}}
    queues:
      - {id: billing, name: Billing, skills: {billing: 5}, service_level: {target: 0.8, within_s: 20},
         callback: {min_digits: 6}, wrap_up_s: 30}
      - {id: tech, name: Tech support, skills: {tech: 5}, service_level: {target: 0.9, within_s: 45}}
      - {id: sales, name: Sales, skills: {sales: 5}}
    flows: flows
    web:
      tokens:
        - {name: billing-lead, token: "%s", role: supervisor, queues: [billing]}
      alarms: {caller_wait_s: 60, agent_paused_min: 5}
      push_interval_s: 0.05
      kpi_refresh_s: 3600
    simulation:
      start: "2026-11-23T08:00:00"
      interval_minutes: 60
      arrivals: {billing: [0], tech: [0]}
      handle_time: {default: {dist: fixed, mean_s: 120}}
      patience: {default: {dist: fixed, mean_s: 100000}}
""" % TOKENS["billing_supervisor"]

FLOW = """\
    flow: main
    start: bye
    nodes:
      bye: {type: hangup}
"""


@dataclass
class Live:
    web: WebService
    pbx: SimulatedPbx
    writer: EventWriter
    run: str
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.web.url.rstrip("/")

    def queue_call(self, call_id: str, queue: str, caller: str = "+447700900123", **data: Any) -> None:
        """A caller joins `queue` (what the PBX side does when the IVR queues a call)."""
        self.pbx.submit(CallQueued(call_id, queue, caller_id=caller, data=data))

    async def call(self, method: str, path: str, who: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = kwargs.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {TOKENS.get(who, who)}"
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body


def write_centre(directory: Path, text: str = CENTRE) -> Path:
    (directory / "flows").mkdir(exist_ok=True)
    (directory / "flows" / "main.yaml").write_text(textwrap.dedent(FLOW))
    path = directory / "router.yaml"
    path.write_text(textwrap.dedent(text))
    return path


async def start_live(directory: Path, dsn: str, *, run: str | None = None, centre_text: str = CENTRE) -> Live:
    centre = load_config(write_centre(directory, centre_text), environ={})
    await ensure_schema(dsn)
    run = run or f"web-{uuid.uuid4().hex[:8]}"
    writer = EventWriter(dsn, run=run, spool_dir=directory / "spool")
    await writer.start()
    pbx = SimulatedPbx(centre, writer, hours=24.0, speed=1.0)
    web = WebService(centre, pbx, mode="demo", run=run, dsn=dsn, flush=writer.flush,
                     spooled=lambda: writer.backlog, port=0, environ={"ACD_WEB_TOKENS": ENV_TOKENS},
                     token_dir=directory)
    pbx.observers.append(web.observe)
    await web.start()
    pbx.catch_up()                                   # every agent logs in at the start (no shifts)
    # unsafe: keep cookies of an IP address host (127.0.0.1), as a browser does
    return Live(web, pbx, writer, run, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))


async def stop_live(live: Live) -> None:
    await live.http.close()
    await live.web.close()
    await live.pbx._store()
    await live.writer.close()
