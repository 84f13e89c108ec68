"""The Docker stack under real SIP load: build, start, wait for health, SIPp load, KPIs, tear down.

    deploy/test-stack [--calls 40] [--cps 4] [--talk-s 2] [--json] [--check] [--keep-up] [--keep DIR]

Theory of operation.  deploy/docker-compose.yml is the stack users run; this
script runs that same file, rewritten for a machine where containers get the
host's network (no bridge): `host_variant()` drops the `netns` service and the
published ports, puts every service on `network_mode: host`, PostgreSQL on
127.0.0.1:5433 (the host's own server keeps 5432), SIP on 127.0.0.1:5060, and
gives the router the SIP load centre (benchmarks/sip_centre.yaml with the
stack's AMI secret, benchmarks/sip_flows/, agents 3001-3020 logged in).  The
images, their health checks, entrypoints, secrets handling and restart
policies are the file's own.  Steps, each timed:

1. the Docker engine: used when it answers, else started here (`dockerd
   --bridge=none --iptables=false --ip6tables=false`, Debian's `docker.io`,
   installed when missing) and stopped at the end;
2. the base images (deploy/base-images: debootstrap + `docker import`, cached);
3. `build` (``build_s``), then `up -d` until PostgreSQL, Asterisk and the router
   are healthy and the router leads (``start_s``);
4. the SIP load of benchmarks/sip_load.py against the containerised Asterisk:
   SIPp agents, then the callers through the router (DID 5000) and through
   app_queue (DID 6000), with the containers' Asterisk and router CPU;
5. the KPIs, by `acd-router kpi --json` inside the router container (the
   stack's PostgreSQL), and the calls' outcomes counted there;
6. `down -v`: containers, network and volumes go, whatever happened.

The secrets are made fresh for each run and reach Compose through its
environment only (never a file, an argument or a log line).  The scripts/
asterisk-sandbox must be stopped (same ports); the script stops it and says
so.  Needs root (the engine, debootstrap), SIPp and the repository's .venv.
stdout: one JSON object with --json (else a table); progress on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks import sip_load  # noqa: E402
from router.config.model import AmiSettings  # noqa: E402
from router.logging import configure_logging  # noqa: E402

DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
PROJECT = "acd-router-test"
PG_PORT = 5433
WEB = "http://127.0.0.1:8080/healthz"
AMI = ("127.0.0.1", 5038, "acd-router")
DOCKERD_ARGS = ["--bridge=none", "--iptables=false", "--ip6tables=false"]
HEALTH_TIMEOUT_S = 180.0
SANDBOX = REPO / "scripts" / "asterisk-sandbox"


def say(message: str) -> None:
    print(f"test-stack: {message}", file=sys.stderr, flush=True)


def run(args: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 1800,
        capture: bool = False) -> subprocess.CompletedProcess[str]:
    """A command that must succeed; its output goes to stderr unless captured."""
    done = subprocess.run(args, env=env, timeout=timeout_s, text=True,
                          stdout=subprocess.PIPE if capture else sys.stderr,
                          stderr=subprocess.PIPE if capture else sys.stderr)
    if done.returncode != 0:
        detail = (done.stderr or "")[-2000:] if capture else "(output above)"
        raise SystemExit(f"test-stack: {' '.join(args[:4])} ... exited {done.returncode}: {detail}")
    return done


# ---- the engine ----------------------------------------------------------------------------------

def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(f"test-stack: {', '.join(packages)} missing; install them (Debian: apt-get install ...)")
    say(f"installing {' '.join(packages)}")
    quiet = {"env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, "capture": True}
    if subprocess.run(["apt-get", "install", "-y", "-q", *packages], capture_output=True).returncode != 0:
        run(["apt-get", "update", "-q"], **quiet)
        run(["apt-get", "install", "-y", "-q", *packages], **quiet)


@contextlib.contextmanager
def docker_engine(workdir: Path) -> Iterator[None]:
    """A Docker engine that answers: this machine's, or one started here and stopped on leaving."""
    if _engine_answers():
        yield
        return
    if shutil.which("dockerd") is None:
        _apt_install("docker.io")
    log = open(workdir / "dockerd.log", "wb")
    say("starting dockerd (host networking only)")
    proc = subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"test-stack: dockerd did not come up; see {workdir / 'dockerd.log'}")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) or v1 (Debian's docker-compose), installed when neither is there."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        _apt_install("docker-compose")
    return ["docker-compose"]


# ---- the stack on host networking ----------------------------------------------------------------

def _absolute(volume: str) -> str:
    """A bind mount `./x:/y[:ro]` relative to deploy/ made absolute; named volumes unchanged."""
    source, _, rest = volume.partition(":")
    if source.startswith((".", "/")):
        return f"{(DEPLOY / source).resolve()}:{rest}"
    return volume


def host_variant(spec: dict[str, Any], config: Path) -> dict[str, Any]:
    """deploy/docker-compose.yml on the host's network, the router on the SIP load centre `config`."""
    spec = copy.deepcopy(spec)
    services = spec["services"]
    services.pop("netns")
    for service in services.values():
        service.pop("ports", None)
        service["network_mode"] = "host"
        if "build" in service:
            service["build"]["context"] = str((DEPLOY / service["build"]["context"]).resolve())
        service["volumes"] = [_absolute(v) for v in service.get("volumes", [])]
    services["postgres"]["environment"].update(PGPORT=str(PG_PORT), POSTGRES_LISTEN_ADDRESSES="127.0.0.1")
    services["asterisk"]["environment"]["ACD_SIP_BIND"] = "127.0.0.1:5060"
    router = services["router"]
    router["environment"]["ACD_DATABASE_URL"] = (
        f"postgresql://acd_router:${{POSTGRES_PASSWORD}}@127.0.0.1:{PG_PORT}/acd_router")
    router["volumes"] = [f"{config}:/etc/acd-router/router.yaml:ro",
                         f"{REPO / 'benchmarks' / 'sip_flows'}:/etc/acd-router/ivr_flows:ro",
                         *(v for v in router["volumes"] if not v.startswith("/"))]
    router["command"] = ["acd-router", "serve", "--config", "/etc/acd-router/router.yaml",
                         *(arg for agent in sip_load.ANSWERING for arg in ("--login", agent))]
    return spec


def load_centre_config() -> dict[str, Any]:
    """benchmarks/sip_centre.yaml as the containerised router reads it."""
    config = yaml.safe_load(sip_load.CENTRE.read_text())
    config["ami"]["secret"] = "${ACD_AMI_SECRET}"
    config["flows"] = "/etc/acd-router/ivr_flows"
    config["web"] = {"enabled": True, "host": "127.0.0.1", "port": 8080}
    config["database"] = {"data_dir": "/var/lib/acd-router/pgdata"}
    return config


class Stack:
    """One Compose project of the host variant; its secrets live in this object and Compose's environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ami_secret = secrets.token_hex(24)
        self.pg_password = secrets.token_hex(24)
        config = workdir / "router.yaml"
        config.write_text(yaml.safe_dump(load_centre_config(), sort_keys=False))
        spec = host_variant(yaml.safe_load(COMPOSE_FILE.read_text()), config)
        self.file = workdir / "docker-compose.yml"
        self.file.write_text(yaml.safe_dump(spec, sort_keys=False))
        for path in (workdir, config, self.file):     # the router runs as a system user
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.compose = [*compose_command(), "-p", PROJECT, "-f", str(self.file)]
        self.env = {**os.environ, "ACD_AMI_SECRET": self.ami_secret, "POSTGRES_PASSWORD": self.pg_password}

    def __call__(self, *args: str, capture: bool = False, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, *args], env=self.env, capture=capture, timeout_s=timeout_s)

    @property
    def ami(self) -> AmiSettings:
        host, port, username = AMI
        return AmiSettings(host=host, port=port, username=username, secret=self.ami_secret)

    def container(self, service: str) -> str:
        return self("ps", "-q", service, capture=True).stdout.strip()

    def health(self) -> dict[str, str]:
        states = {}
        for service in ("postgres", "asterisk", "router"):
            cid = self.container(service)
            inspect = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}/{{.State.Health.Status}}", cid],
                                     capture_output=True, text=True) if cid else None
            states[service] = inspect.stdout.strip() if inspect and inspect.returncode == 0 else "absent"
        return states

    def wait_healthy(self) -> None:
        """Until all three services are healthy and the router leads (its /healthz says so)."""
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.health()
            if all(state == "running/healthy" for state in states.values()) and _role() == "leader":
                return
            if any(state.startswith(("exited", "dead")) for state in states.values()):
                break
            time.sleep(0.5)
        self("logs", "--tail", "40")
        raise SystemExit(f"test-stack: the stack did not become healthy: {states}, router role {_role()}")

    def main_pid(self, service: str) -> int:
        """The service's main process on this host (the child of the container's init)."""
        cid = self.container(service)
        init = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", cid], capture=True).stdout)
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        return int(children[0]) if children else init

    def kpis(self) -> dict[str, Any]:
        return json.loads(self("exec", "-T", "router", "acd-router", "kpi", "--json", capture=True).stdout)

    def outcomes(self) -> dict[str, int]:
        """call.ended outcomes in the stack's PostgreSQL, counted by psql inside its container."""
        query = ("SELECT coalesce(json_object_agg(outcome, n), '{}') FROM (SELECT data->>'outcome' AS outcome, "
                 "count(*) AS n FROM events WHERE type = 'call.ended' GROUP BY 1) AS t")
        out = self("exec", "-T", "postgres", "psql", "-At", "-U", "acd_router", "-d", "acd_router",
                   "-c", query, capture=True).stdout
        return json.loads(out.strip() or "{}")


def _role() -> str | None:
    try:
        with urllib.request.urlopen(WEB, timeout=2) as response:
            return json.load(response).get("role")
    except OSError:
        return None


def _stop_sandbox() -> None:
    if subprocess.run([str(SANDBOX), "status"], capture_output=True).returncode == 0:
        say("stopping the Asterisk sandbox (the stack uses the same ports)")
        run([str(SANDBOX), "stop"], capture=True)


# ---- the run -------------------------------------------------------------------------------------

async def _load(stack: Stack, workdir: Path, calls: int, cps: float, talk_s: float,
                patience_s: float) -> dict[str, Any]:
    metered = {"asterisk": sip_load.pid_cpu(stack.main_pid("asterisk")),
               "router": sip_load.pid_cpu(stack.main_pid("router"))}
    async with sip_load.sip_agents(workdir / "agents", stack.ami, talk_s=talk_s, ring_ms=300):
        say(f"acd-router: {calls} SIP calls at {cps:g}/s to DID {sip_load.ROUTER_DID}")
        acd, _, _ = await sip_load.measure_side(stack.ami, workdir / "acd_router", "queue.xml", sip_load.ROUTER_DID,
                                                calls=calls, cps=cps, patience_s=patience_s, metered=metered)
        await asyncio.sleep(sip_load.PAUSE_S)
        say(f"app_queue: {calls} SIP calls at {cps:g}/s to DID {sip_load.APP_QUEUE_DID}")
        app, _, _ = await sip_load.measure_side(stack.ami, workdir / "app_queue", "queue.xml",
                                                sip_load.APP_QUEUE_DID, calls=calls, cps=cps,
                                                patience_s=patience_s, metered={"asterisk": metered["asterisk"]})
    return {"acd_router": acd, "app_queue": app}


def test_stack(calls: int, cps: float, talk_s: float, patience_s: float, workdir: Path,
               keep_up: bool) -> dict[str, Any]:
    _stop_sandbox()
    with docker_engine(workdir):
        started = time.monotonic()
        run([str(DEPLOY / "base-images")])
        images_s = time.monotonic() - started
        stack = Stack(workdir)
        try:
            say("building the images")
            started = time.monotonic()
            stack("build")
            build_s = time.monotonic() - started
            say("starting the stack")
            started = time.monotonic()
            stack("up", "-d")
            stack.wait_healthy()
            start_s = time.monotonic() - started
            say(f"healthy and leading in {start_s:.1f} s")
            sides = asyncio.run(_load(stack, workdir, calls, cps, talk_s, patience_s))
            kpis, outcomes = stack.kpis(), stack.outcomes()
            health = stack.health()
        finally:
            if not keep_up:
                say("tearing down")
                stack("down", "-v", "--remove-orphans", "--timeout", "20")
    acd = sides["acd_router"]
    return {"calls": acd["calls"], "failed": acd["failed"], "answered": acd["answered"],
            "images_s": round(images_s, 1), "build_s": round(build_s, 1), "start_s": round(start_s, 1),
            "health_after_load": health, "outcomes": outcomes,
            "load": {"calls": calls, "cps": cps, "talk_s": talk_s, "agents": len(sip_load.ANSWERING)},
            **sides, "kpis": kpis}


def _table(result: dict[str, Any]) -> str:
    acd, app = result["acd_router"], result["app_queue"]
    lines = [f"images {result['images_s']} s, build {result['build_s']} s, start {result['start_s']} s",
             f"{'':28}{'acd-router':>12}{'app_queue':>12}"]
    for key in ("calls", "failed", "answered"):
        lines.append(f"{key:28}{acd[key]!s:>12}{app[key]!s:>12}")
    for key in ("post_dial_delay_ms", "answer_to_agent_ms"):
        for q in ("p50", "p99"):
            lines.append(f"{key + ' ' + q:28}{acd[key][q]!s:>12}{app[key][q]!s:>12}")
    lines.append(f"{'asterisk_cpu_s_per_call':28}{acd['asterisk_cpu_s_per_call']!s:>12}"
                 f"{app['asterisk_cpu_s_per_call']!s:>12}")
    lines.append(f"{'router_cpu_s_per_call':28}{acd['router_cpu_s_per_call']!s:>12}")
    lines.append(f"outcomes in the stack's PostgreSQL: {result['outcomes']}")
    return "\n".join(lines)


def problems(result: dict[str, Any]) -> list[str]:
    """What --check refuses: a lost or unanswered call on either side, events missing, a service unhealthy."""
    found = []
    calls = result["load"]["calls"]
    for side in ("acd_router", "app_queue"):
        figures = result[side]
        if (figures["calls"], figures["failed"], figures["answered"]) != (calls, 0, calls):
            found.append(f"{side}: {figures['calls']} calls, {figures['failed']} failed, {figures['answered']} "
                         f"answered; expected {calls}, 0, {calls}")
    if result["outcomes"].get("answered", 0) != calls:
        found.append(f"the stack's PostgreSQL has {result['outcomes']} call.ended outcomes; "
                     f"expected {calls} answered")
    unhealthy = {name: state for name, state in result["health_after_load"].items() if state != "running/healthy"}
    if unhealthy:
        found.append(f"not healthy after the load: {unhealthy}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--cps", type=float, default=4.0)
    parser.add_argument("--talk-s", type=float, default=2.0, help="agents' talk time (SIPp UAS)")
    parser.add_argument("--patience-s", type=float, default=60.0, help="callers hang up after this long")
    parser.add_argument("--keep", metavar="DIR", help="keep the generated files and SIPp's logs in DIR")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running (tear down by hand)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every call on both sides was answered, the stack's PostgreSQL holds "
                             "them all and every service stayed healthy (make test)")
    args = parser.parse_args()
    if args.calls < 1 or args.cps <= 0:
        parser.error("--calls must be at least 1 and --cps positive")
    if not sip_load.sipp_available():
        _apt_install("sip-tester")
    if shutil.which("debootstrap") is None:
        _apt_install("debootstrap")
    configure_logging(level="warning")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="acd-test-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = test_stack(args.calls, args.cps, args.talk_s, args.patience_s, workdir, args.keep_up)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result) if args.json else _table(result))
    found = problems(result) if args.check else []
    for problem in found:
        say(f"check failed: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
