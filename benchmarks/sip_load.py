"""Real SIP load on the sandbox Asterisk: the same SIPp callers through acd-router and through app_queue.

    python benchmarks/sip_load.py [--calls 30] [--cps 3] [--talk-s 2] [--json]
    python benchmarks/sip_load.py --knee 4,8,16,24,32 [--step-s 15] [--talk-s 0.5] [--ring-ms 100] [--json]
    python benchmarks/sip_load.py --junk [--calls 30] [--options 1500] [--invites 50] [--json]

Needs SIPp (Debian's `sip-tester`) and the sandbox Asterisk (started with
scripts/asterisk-sandbox if it is not running, and stopped again afterwards
unless ACD_ASTERISK_KEEP=1).  Loopback only:

* agents: two SIPp UAS processes at 127.0.0.3 — benchmarks/sip/agent.xml on
  port 5070 answers for PJSIP/3001..3020 (rings ``--ring-ms``, talks
  ``--talk-s``, hangs up), benchmarks/sip/no_answer.xml on 5071 rings for
  3901/3902 and never answers.  Their contacts are static in
  asterisk_conf/pjsip.conf; both answer OPTIONS, so after the UAS start every
  endpoint is qualified (AMI PJSIPQualify) and the run waits until Asterisk's
  device states say the agents are reachable.
* callers: one SIPp UAC process from 127.0.0.2 (the `pstn` trunk) per side,
  benchmarks/sip/queue.xml: INVITE, ACK, RTP (g711a.pcap), then wait for the
  BYE Asterisk sends when the agent hangs up.
* acd-router: DID 5000, the router in process (`Service`, as
  router/pbx/loadtest.py's `run_loadtest` runs it) on benchmarks/sip_centre.yaml,
  agents 3001-3020 logged in; the flow queues DID 5000 at once.
* app_queue: DID 6000 → ``[bench-sip]`` → ``Queue(bench-sip)``, the same twenty
  PJSIP agents, leastrecent, 14 s ring, 1 s wrap-up (asterisk_conf/queues.conf).

Figures per side: ``calls`` and ``failed`` (SIPp's successful/failed calls),
``answered`` (callers bridged to an agent, from AMI), ``post_dial_delay_ms``
(INVITE → 200 OK, SIPp's response-time distance "pdd", per call from its
-trace_rtt file), ``answer_to_agent_ms`` (the caller channel's ``Newstate`` Up
→ its ``DialEnd`` ANSWER, Asterisk's event timestamps on this script's own AMI
link: the same definition for both sides), ``asterisk_cpu_s_per_call``
(utime+stime of the Asterisk process from /proc, over the side's run, per
call) and ``process_cpu_s_per_call`` (this Python process: the router, its
event writer and the AMI observer for acd_router; the observer alone for
app_queue).  ``ratios`` are acd_router / app_queue.  PostgreSQL:
ACD_DATABASE_URL, else the embedded server in --data-dir (or the router's
default data directory).  stdout: one JSON object with --json (else a table);
progress on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import glob
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoramisk import Manager  # noqa: E402

from benchmarks.sandbox import sandbox_running  # noqa: E402
from router.config import check_config  # noqa: E402
from router.config.model import AmiSettings, Centre  # noqa: E402
from router.logging import configure_logging  # noqa: E402
from router.pbx.loadtest import percentiles  # noqa: E402

SCENARIOS = REPO / "benchmarks" / "sip"
CENTRE = REPO / "benchmarks" / "sip_centre.yaml"
ASTERISK_ROOT = Path(os.environ.get("ACD_ASTERISK_ROOT", "/var/cache/acd-router/asterisk-sid"))
SIPP = os.environ.get("ACD_SIPP", "sipp")

ASTERISK_SIP = "127.0.0.1:5060"
CALLER_IP = "127.0.0.2"            # pjsip.conf: the `pstn` trunk's identify
AGENT_IP = "127.0.0.3"             # pjsip.conf: the static contacts of 3001-3020 (5070) and 3901-3902 (5071)
AGENT_PORT, NO_ANSWER_PORT = 5070, 5071
CUSTOMER_PORT = 5060               # pjsip.conf: the `pstn` trunk's contact, sip:127.0.0.2:5060 (call-backs)
ANSWERING = tuple(str(n) for n in range(3001, 3021))
NEVER_ANSWERING = ("3901", "3902")
ROUTER_DID, APP_QUEUE_DID = "5000", "6000"
PAUSE_S = 3.0                      # between the sides: the last agents hang up, app_queue's wrap-up ends
SETTLE_S = 30.0                    # SIPp's global timeout beyond the last caller's patience
READY_TIMEOUT_S = 15.0             # agents reachable after the UAS started (qualify)
REQUALIFY_S = 2.0                  # a contact still unreachable is qualified again this often
SETTLE_S = 3.5                     # and all reachable this long: past an OPTIONS' qualify_timeout (3 s)


def say(message: str) -> None:
    print(f"sip_load: {message}", file=sys.stderr, flush=True)


# ---- SIPp ---------------------------------------------------------------------------------------

@dataclass
class SippRun:
    """One finished SIPp UAC process: SIPp's own counts and per-call post-dial delays."""

    scenario: str
    returncode: int
    successful: int
    failed: int
    pdd_ms: list[float]
    workdir: Path

    @property
    def calls(self) -> int:
        return self.successful + self.failed


def sipp_available() -> bool:
    return shutil.which(SIPP) is not None


def _stat_counts(path: Path) -> tuple[int, int]:
    """SuccessfulCall(C) and FailedCall(C) of the last line of a -trace_stat file."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    header = lines[0].split(";")
    last = lines[-1].split(";")
    values = dict(zip(header, last))
    return int(values["SuccessfulCall(C)"]), int(values["FailedCall(C)"])


def _rtt_ms(workdir: Path, scenario: str, rtd: str = "pdd") -> list[float]:
    """The response times named `rtd` of a -trace_rtt file (Date_ms;response_time_ms;rtd_no)."""
    values: list[float] = []
    for name in glob.glob(str(workdir / f"{Path(scenario).stem}_*_rtt.csv")):
        for line in Path(name).read_text().splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) == 3 and parts[2] == rtd:
                values.append(float(parts[1]))
    return values


async def run_uac(workdir: Path, scenario: str, did: str, *, calls: int, cps: float, prefix: str,
                  port: int = 5062, media_port: int = 40000, variables: dict[str, Any] | None = None,
                  patience_s: float = 60.0, source_ip: str = CALLER_IP, trace_msg: bool = False) -> SippRun:
    """`calls` SIPp callers of `scenario` to `did` at `cps`, from `source_ip`; waits until SIPp exits.

    SIPp's global timeout (calls / cps + patience + SETTLE_S, -timeout_error) bounds the run: no
    call is left behind, a stuck run fails.  `trace_msg` keeps every message (see `answers`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCENARIOS / scenario, workdir / scenario)
    timeout_s = int(calls / cps + patience_s + SETTLE_S)
    args = [SIPP, ASTERISK_SIP, "-sf", scenario, "-s", did, "-i", source_ip, "-p", str(port),
            "-mi", source_ip, "-mp", str(media_port), "-m", str(calls), "-r", f"{cps:g}", "-l", str(calls),
            *(["-trace_msg"] if trace_msg else []),
            "-key", "caller_prefix", prefix, "-nostdin", "-aa", "-max_recv_loops", "1000",
            "-trace_stat", "-stf", "stats.csv", "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-trace_err",
            "-recv_timeout", str(int((patience_s + 30) * 1000)),
            "-timeout", f"{timeout_s}s", "-timeout_error"]
    for name, value in (variables or {}).items():
        args += ["-set", name, str(value)]
    with open(workdir / f"{Path(scenario).stem}.out", "wb") as out:
        proc = await asyncio.create_subprocess_exec(*args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL)
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout_s + 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"sipp {scenario} did not exit; see {workdir}") from None
    if returncode not in (0, 1) or not (workdir / "stats.csv").exists():
        tail = (workdir / f"{Path(scenario).stem}.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sipp {scenario} exited {returncode}:\n{tail}")
    successful, failed = _stat_counts(workdir / "stats.csv")
    return SippRun(scenario, returncode, successful, failed, _rtt_ms(workdir, scenario), workdir)


@contextlib.asynccontextmanager
async def sip_uas(workdir: Path, *servers: tuple[str, str, int, int, Sequence[str]]) -> AsyncIterator[None]:
    """SIPp UAS processes, one per (scenario, address, port, media port, extra arguments), until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[asyncio.subprocess.Process] = []
    try:
        for scenario, ip, port, media_port, extra in servers:
            shutil.copy(SCENARIOS / scenario, workdir / scenario)
            with open(workdir / f"{Path(scenario).stem}-{port}.out", "wb") as out:
                procs.append(await asyncio.create_subprocess_exec(
                    SIPP, "-sf", scenario, "-i", ip, "-p", str(port), "-mi", ip, "-mp", str(media_port),
                    "-nostdin", "-trace_err", "-max_recv_loops", "1000", *extra,
                    cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        await asyncio.sleep(0.3)
        for proc in procs:
            if proc.returncode is not None:
                raise RuntimeError(f"a SIPp UAS exited at once ({proc.returncode}); see {workdir}")
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _talking(ring_ms: int, talk_s: float) -> list[str]:
    return ["-set", "ring_ms", str(ring_ms), "-set", "talk_ms", str(int(talk_s * 1000))]


@contextlib.asynccontextmanager
async def sip_agents(workdir: Path, settings: AmiSettings, *, talk_s: float, ring_ms: int,
                     wait_for: Sequence[str] = ANSWERING + NEVER_ANSWERING) -> AsyncIterator[None]:
    """The SIPp UAS agents, running and reachable (qualified) until the block ends."""
    async with sip_uas(workdir, ("agent.xml", AGENT_IP, AGENT_PORT, 41000, _talking(ring_ms, talk_s)),
                       ("no_answer.xml", AGENT_IP, NO_ANSWER_PORT, 41010, ())):
        await _qualify(settings, wait_for)
        yield


def sip_customers(workdir: Path, *, talk_s: float, ring_ms: int = 200) -> contextlib.AbstractAsyncContextManager[None]:
    """Callers' phones for call-backs: a SIPp UAS (agent.xml) at the `pstn` trunk's contact, 127.0.0.2:5060,
    answering every number the router dials there."""
    return sip_uas(workdir, ("agent.xml", CALLER_IP, CUSTOMER_PORT, 41100, _talking(ring_ms, talk_s)))


async def _manager(settings: AmiSettings) -> Manager:
    manager = Manager(host=settings.host, port=settings.port, username=settings.username,
                      secret=settings.secret or os.environ.get("ACD_AMI_SECRET", ""), ping_delay=3600,
                      on_disconnect=lambda manager, exc: None)
    await asyncio.wait_for(manager.connect(), 10)
    login = await asyncio.wait_for(manager.authenticated_future, 10)
    if not login.success:
        raise RuntimeError("AMI login refused")
    return manager


def _close(manager: Manager) -> None:
    manager.connection_lost = lambda exc: None          # no reconnect after our own close
    manager.close()


async def _qualify(settings: AmiSettings, endpoints: Sequence[str]) -> None:
    """Qualify the agents' contacts now (not at the next 30 s round) and wait until all are reachable.
    A contact still down is qualified again every REQUALIFY_S: an OPTIONS that reached a SIPp UAS
    before it was listening (a loaded machine) is lost, and Asterisk would not ask again for 30 s.
    All must then stay reachable for SETTLE_S: such a lost OPTIONS can time out after the contact
    answered a later one and mark it unreachable again, and the router pauses that agent until
    the next qualify round finds it (the likely cause of a fresh-clone CI run in which 3901 was
    never offered a call in test_sip_load)."""
    manager = await _manager(settings)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        down, asked, reachable_since = list(endpoints), -REQUALIFY_S, None
        while True:
            if time.monotonic() - asked >= REQUALIFY_S:
                for endpoint in down:
                    await asyncio.wait_for(manager.send_action({"Action": "PJSIPQualify", "Endpoint": endpoint}), 10)
                asked = time.monotonic()
            states = await asyncio.wait_for(manager.send_action({"Action": "DeviceStateList"}), 10)
            states = states if isinstance(states, list) else [states]
            down = [e for e in endpoints
                    if not any(s.get("Device") == f"PJSIP/{e}" and s.get("State") not in ("UNAVAILABLE", "INVALID")
                               for s in states)]
            now = time.monotonic()
            if down:
                reachable_since = None
                if now > deadline:
                    raise RuntimeError(f"SIP agents not reachable after qualify: {', '.join(down)}")
            elif reachable_since is None:
                reachable_since = now
            elif now - reachable_since >= SETTLE_S:
                return
            await asyncio.sleep(0.3)
    finally:
        _close(manager)


# ---- AMI: when callers were answered and bridged ------------------------------------------------

@dataclass
class CallerChannel:
    uniqueid: str
    number: str
    up_ts: float | None = None
    answered_ts: float | None = None       # first DialEnd ANSWER on the caller's channel
    hung_up: bool = False

    @property
    def answer_to_agent_ms(self) -> float | None:
        if self.up_ts is None or self.answered_ts is None:
            return None
        return (self.answered_ts - self.up_ts) * 1000.0


@dataclass
class CallerObserver:
    """A plain AMI connection recording the trunk callers whose number starts with `prefix`."""

    settings: AmiSettings
    prefix: str
    callers: dict[str, CallerChannel] = field(default_factory=dict)
    manager: Manager | None = None

    async def __aenter__(self) -> CallerObserver:
        self.manager = await _manager(self.settings)
        self.manager.register_event("*", self._record)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.manager is not None:
            _close(self.manager)

    def _record(self, manager: Manager, event: Any) -> None:
        uniqueid = event.get("Uniqueid") or ""
        caller = self.callers.get(uniqueid)
        if caller is None:
            if not (event.get("Channel") or "").startswith("PJSIP/pstn-"):
                return
            number = event.get("CallerIDNum") or ""
            if not number.startswith(self.prefix):
                return
            caller = self.callers[uniqueid] = CallerChannel(uniqueid, number)
        name = event.get("Event")
        try:
            stamp = float(event.get("Timestamp") or "")
        except ValueError:
            stamp = time.time()
        if name == "Newstate" and event.get("ChannelState") == "6" and caller.up_ts is None:
            caller.up_ts = stamp
        elif name == "DialEnd" and event.get("DialStatus") == "ANSWER" and caller.answered_ts is None:
            caller.answered_ts = stamp
        elif name == "Hangup":
            caller.hung_up = True

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until every observed caller's Hangup arrived."""
        deadline = time.monotonic() + timeout_s
        while any(not c.hung_up for c in self.callers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)


# ---- CPU -----------------------------------------------------------------------------------------

def asterisk_pid() -> int:
    """The sandbox Asterisk's pid (scripts/asterisk-sandbox's ROOT.pid), checked against /proc."""
    pidfile = ASTERISK_ROOT.parent / f"{ASTERISK_ROOT.name}.pid"
    pid = int(pidfile.read_text().split()[0])
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm != "asterisk":
        raise RuntimeError(f"{pidfile}: pid {pid} is {comm!r}, not asterisk")
    return pid


CpuReader = Callable[[], float]           # CPU seconds so far of something


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> CpuReader:
    return functools.partial(process_cpu_s, pid)


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def command_cpu_s(comm: str) -> float:
    """CPU seconds of every process named `comm` now (PostgreSQL's backends: a backend that exits
    between two readings is missed, so over a run it is a lower bound)."""
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            if text[text.index("(") + 1:text.rindex(")")] == comm:
                fields = text.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine, all cores (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# ---- one side ------------------------------------------------------------------------------------

def new_prefix() -> str:
    """A caller-number prefix unique to one SIPp process of one run (digits only)."""
    return f"9{random.randrange(10 ** 6):06d}"


async def measure_side(settings: AmiSettings, workdir: Path, scenario: str, did: str, *, calls: int, cps: float,
                       patience_s: float, variables: dict[str, Any] | None = None, prefix: str | None = None,
                       metered: dict[str, CpuReader] | None = None) -> tuple[dict[str, Any], SippRun, CallerObserver]:
    """One SIPp UAC run with the AMI observer and the CPU readings around it.

    `metered` reads CPU seconds, ``{name: reader}`` (default: the sandbox's Asterisk); each gives
    ``<name>_cpu_s_per_call``, this process ``process_cpu_s_per_call``, and ``wall_s`` is the run's."""
    prefix = prefix or new_prefix()
    metered = {"process": self_cpu_s, **(metered or {"asterisk": pid_cpu(asterisk_pid())})}
    async with CallerObserver(settings, prefix) as observer:
        before, started = {name: read() for name, read in metered.items()}, time.monotonic()
        run = await run_uac(workdir, scenario, did, calls=calls, cps=cps, prefix=prefix, patience_s=patience_s,
                            variables={"patience_ms": int(patience_s * 1000), **(variables or {})})
        await observer.settle()
        after, wall_s = {name: read() for name, read in metered.items()}, time.monotonic() - started
    waits = [ms for c in observer.callers.values() if (ms := c.answer_to_agent_ms) is not None]
    pdd, att = percentiles(run.pdd_ms), percentiles(waits)
    per_call = max(1, run.calls)
    figures = {
        "calls": run.calls, "failed": run.failed,
        "answered": sum(1 for c in observer.callers.values() if c.answered_ts is not None),
        "post_dial_delay_ms": {"p50": pdd["p50"], "p99": pdd["p99"]},
        "answer_to_agent_ms": {"p50": att["p50"], "p99": att["p99"]},
        **{f"{name}_cpu_s_per_call": round((after[name] - before[name]) / per_call, 5) for name in metered},
        "wall_s": round(wall_s, 2),
    }
    return figures, run, observer


async def router_side(centre: Centre, workdir: Path, *, calls: int, cps: float, patience_s: float,
                      login: Sequence[str], data_dir: str | None, scenario: str = "queue.xml",
                      did: str = ROUTER_DID, prefix: str | None = None,
                      metered: dict[str, CpuReader] | None = None) -> dict[str, Any]:
    """The router in process (as `run_loadtest` runs it) under one SIPp UAC run."""
    from router.pbx.service import Service      # imports the store and the engine

    assert centre.ami is not None
    service = Service(centre, data_dir=data_dir, auto_login=list(login), drain_timeout_s=SETTLE_S)
    try:
        await service.start()
        figures, _, _ = await measure_side(centre.ami, workdir, scenario, did, calls=calls, cps=cps,
                                           patience_s=patience_s, prefix=prefix, metered=metered)
    finally:
        await service.stop()
    figures["router_cpu_s_per_call"] = figures["process_cpu_s_per_call"]
    return figures


async def app_queue_side(settings: AmiSettings, workdir: Path, *, calls: int, cps: float, patience_s: float,
                         did: str = APP_QUEUE_DID, metered: dict[str, CpuReader] | None = None) -> dict[str, Any]:
    figures, _, _ = await measure_side(settings, workdir, "queue.xml", did, calls=calls, cps=cps,
                                       patience_s=patience_s, metered=metered)
    figures["router_cpu_s_per_call"] = None
    return figures


def _ratio(acd: float | None, app: float | None) -> float | None:
    return None if acd is None or not app else round(acd / app, 3)


async def compare(calls: int, cps: float, talk_s: float, ring_ms: int, patience_s: float,
                  data_dir: str | None, workdir: Path) -> dict[str, Any]:
    centre, problems = check_config(CENTRE)
    if centre is None or centre.ami is None:
        raise SystemExit(f"{CENTRE}: {problems.errors}")
    async with sip_agents(workdir / "agents", centre.ami, talk_s=talk_s, ring_ms=ring_ms):
        say(f"acd-router: {calls} SIP calls at {cps:g}/s to DID {ROUTER_DID}")
        acd = await router_side(centre, workdir / "acd_router", calls=calls, cps=cps, patience_s=patience_s,
                                login=ANSWERING, data_dir=data_dir)
        await asyncio.sleep(PAUSE_S)
        say(f"app_queue: {calls} SIP calls at {cps:g}/s to DID {APP_QUEUE_DID}")
        app = await app_queue_side(centre.ami, workdir / "app_queue", calls=calls, cps=cps, patience_s=patience_s)
    ratios = {
        "post_dial_delay_ms_p50": _ratio(acd["post_dial_delay_ms"]["p50"], app["post_dial_delay_ms"]["p50"]),
        "post_dial_delay_ms_p99": _ratio(acd["post_dial_delay_ms"]["p99"], app["post_dial_delay_ms"]["p99"]),
        "answer_to_agent_ms_p50": _ratio(acd["answer_to_agent_ms"]["p50"], app["answer_to_agent_ms"]["p50"]),
        "answer_to_agent_ms_p99": _ratio(acd["answer_to_agent_ms"]["p99"], app["answer_to_agent_ms"]["p99"]),
        "asterisk_cpu_s_per_call": _ratio(acd["asterisk_cpu_s_per_call"], app["asterisk_cpu_s_per_call"]),
    }
    return {"load": {"calls": calls, "cps": cps, "talk_s": talk_s, "ring_ms": ring_ms, "agents": len(ANSWERING),
                     "scenario": "queue.xml", "dids": {"acd_router": ROUTER_DID, "app_queue": APP_QUEUE_DID}},
            "acd_router": acd, "app_queue": app, "ratios": ratios}


# ---- junk at the trunk: OPTIONS floods and malformed INVITEs beside good calls -------------------

JUNK_IP = "127.0.0.4"              # nothing in pjsip.conf identifies it
INVITE_VARIANTS = 10               # benchmarks/sip/junk_invite.xml sends this many per SIPp call


def answers(workdir: Path) -> dict[str, int]:
    """Status codes of the responses in a -trace_msg log, counted: ``{"401": 12, ...}``."""
    counts: dict[str, int] = {}
    for name in glob.glob(str(workdir / "*_messages.log")):
        received = False                 # the first non-blank line after this header is the start line
        for line in Path(name).read_text(errors="replace").splitlines():
            if line.startswith("UDP message received"):
                received = True
            elif received and line.strip():
                received = False
                if line.startswith("SIP/2.0 "):
                    code = line.split()[1]
                    counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))


async def junk(calls: int, cps: float, options: int, options_rate: float, invites: int, invite_rate: float,
               talk_s: float, data_dir: str | None, workdir: Path) -> dict[str, Any]:
    """Good callers through the router while the trunk gets junk; what the junk got, and the good calls' fate.

    At the same time: `calls` good callers (queue.xml, DID 5000) at `cps`; `options` OPTIONS at
    `options_rate` from an unknown address (127.0.0.4) and as many from the trunk's (127.0.0.2);
    `invites` SIPp calls of junk_invite.xml (INVITE_VARIANTS malformed INVITEs each) at
    `invite_rate` from the trunk.  ``junk.*.answers`` counts Asterisk's responses by status;
    ``channels`` is how many junk INVITEs became a channel on Asterisk (AMI), i.e. got through."""
    from router.pbx.service import Service

    centre, problems = check_config(CENTRE)
    if centre is None or centre.ami is None:
        raise SystemExit(f"{CENTRE}: {problems.errors}")
    good_prefix, junk_prefix = new_prefix(), new_prefix()
    async with sip_agents(workdir / "agents", centre.ami, talk_s=talk_s, ring_ms=100):
        service = Service(centre, data_dir=data_dir, auto_login=list(ANSWERING), drain_timeout_s=SETTLE_S)
        try:
            await service.start()
            async with CallerObserver(centre.ami, junk_prefix) as junk_channels:
                good, unknown, trunk, bad = await asyncio.gather(
                    measure_side(centre.ami, workdir / "good", "queue.xml", ROUTER_DID, calls=calls, cps=cps,
                                 patience_s=60, prefix=good_prefix),
                    run_uac(workdir / "options_unknown", "junk_options.xml", ROUTER_DID, calls=options,
                            cps=options_rate, prefix=junk_prefix, port=5068, media_port=40300, patience_s=5,
                            source_ip=JUNK_IP, trace_msg=True),
                    run_uac(workdir / "options_trunk", "junk_options.xml", ROUTER_DID, calls=options,
                            cps=options_rate, prefix=junk_prefix, port=5069, media_port=40400, patience_s=5,
                            trace_msg=True),
                    run_uac(workdir / "invites", "junk_invite.xml", ROUTER_DID, calls=invites, cps=invite_rate,
                            prefix=junk_prefix, port=5066, media_port=40200, patience_s=5, trace_msg=True))
                await junk_channels.settle(timeout_s=40)      # a junk call that got through, unACKed, ends at 32 s
        finally:
            await service.stop()
    good_figures = good[0]
    return {
        "load": {"good_calls": calls, "cps": cps, "options_per_source": options, "options_rate": options_rate,
                 "junk_invites": invites * INVITE_VARIANTS, "invite_rate": invite_rate * INVITE_VARIANTS},
        "good": {key: good_figures[key] for key in ("calls", "failed", "answered", "post_dial_delay_ms",
                                                    "answer_to_agent_ms", "asterisk_cpu_s_per_call")},
        "junk": {
            "options_unknown_source": {"sent": unknown.calls, "answers": answers(unknown.workdir)},
            "options_from_trunk": {"sent": trunk.calls, "answers": answers(trunk.workdir)},
            "malformed_invites": {"sent": bad.calls * INVITE_VARIANTS, "answers": answers(bad.workdir),
                                  "channels": len(junk_channels.callers)},
        },
    }


# ---- the knee: the highest sustained rate with under 1 % failed calls -----------------------------

KNEE_FAILED = 0.01
NOWRAP_DID = "6001"                # Queue(bench-sip-nowrap): app_queue without wrap-up


async def quiet(settings: AmiSettings, timeout_s: float = 60.0) -> int:
    """Wait until Asterisk has no channel left (an overloaded step leaves callers behind that would
    weigh on the next); past `timeout_s`, hang up what is left.  Returns how many were hung up."""
    manager = await _manager(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            listed = await asyncio.wait_for(manager.send_action({"Action": "CoreShowChannels"}), 30)
            listed = listed if isinstance(listed, list) else [listed]
            channels = [m for m in listed if m.get("Event") == "CoreShowChannel"]
            if not channels:
                return 0
            if time.monotonic() > deadline:
                for channel in channels:
                    await asyncio.wait_for(manager.send_action({"Action": "Hangup", "Channel": channel["Channel"]}), 10)
                await asyncio.sleep(3)
                return len(channels)
            await asyncio.sleep(1)
    finally:
        _close(manager)


def _utilisation(figures: dict[str, Any], calls: int) -> dict[str, float]:
    """CPU seconds per wall second (1.0 = one core busy) of each metered thing over a step."""
    wall = max(figures["wall_s"], 1e-9)
    return {key[:-len("_cpu_s_per_call")]: round(value * calls / wall, 3)
            for key, value in figures.items() if key.endswith("_cpu_s_per_call") and value is not None}


async def knee(steps: Sequence[float], step_s: float, talk_s: float, ring_ms: int, patience_s: float,
               data_dir: str | None, workdir: Path) -> dict[str, Any]:
    """Each side through rising rates (calls = rate x step_s) until a step fails 1 % or more of its calls.

    Failed: SIPp's failed calls, or callers never bridged to an agent (a caller who gives up after
    --patience-s is a success to SIPp), whichever is more.  Every step starts on a quiet Asterisk
    (`quiet`: no channel left; ``left_behind`` counts those hung up after a step).

    The agents must not be the limit: no wrap-up on either side (the router's queues at wrap_up_s 0,
    app_queue's `bench-sip-nowrap`), so twenty agents serve up to 20 / (talk + ring) calls a second;
    ``agent_capacity_cps`` says where that is.  Each step reports the CPU used per wall second by
    Asterisk, the router (this process; the SIPp processes are not in it), PostgreSQL's processes
    and the whole machine (``machine``, over all cores: os.cpu_count() is the ceiling)."""
    centre, problems = check_config(CENTRE)
    if centre is None or centre.ami is None:
        raise SystemExit(f"{CENTRE}: {problems.errors}")
    centre = dataclasses.replace(centre, queues={qid: dataclasses.replace(q, wrap_up_s=0.0)
                                                 for qid, q in centre.queues.items()})
    result: dict[str, Any] = {"load": {"steps_cps": list(steps), "step_s": step_s, "talk_s": talk_s,
                                       "ring_ms": ring_ms, "patience_s": patience_s, "agents": len(ANSWERING),
                                       "agent_capacity_cps": round(len(ANSWERING) / (talk_s + ring_ms / 1000), 1),
                                       "cores": os.cpu_count(), "dids": {"acd_router": ROUTER_DID,
                                                                         "app_queue": NOWRAP_DID}}}
    async with sip_agents(workdir / "agents", centre.ami, talk_s=talk_s, ring_ms=ring_ms):
        for side in ("acd_router", "app_queue"):
            rows = []
            for cps in steps:
                calls = max(1, round(cps * step_s))
                await quiet(centre.ami)
                metered = {"asterisk": pid_cpu(asterisk_pid()), "postgres": functools.partial(command_cpu_s, "postgres"),
                           "machine": machine_busy_s}
                say(f"{side}: {calls} calls at {cps:g}/s")
                where = workdir / side / f"{cps:g}"
                if side == "acd_router":
                    figures = await router_side(centre, where, calls=calls, cps=cps, patience_s=patience_s,
                                                login=ANSWERING, data_dir=data_dir, metered=metered)
                else:
                    figures = await app_queue_side(centre.ami, where, calls=calls, cps=cps, patience_s=patience_s,
                                                   did=NOWRAP_DID, metered=metered)
                # a caller who gave up (never bridged) is a SIPp success, and a loss here
                lost = max(figures["failed"], figures["calls"] - figures["answered"])
                failed = lost / max(1, figures["calls"])
                rows.append({"cps": cps, "calls": figures["calls"], "failed": figures["failed"],
                             "answered": figures["answered"], "failed_ratio": round(failed, 4),
                             "left_behind": await quiet(centre.ami),
                             "post_dial_delay_ms": figures["post_dial_delay_ms"],
                             "answer_to_agent_ms": figures["answer_to_agent_ms"],
                             "cpu_per_wall_s": _utilisation(figures, figures["calls"])})
                await asyncio.sleep(PAUSE_S)
                if failed >= KNEE_FAILED:
                    break
            passed = [row["cps"] for row in rows if row["failed_ratio"] < KNEE_FAILED]
            first_fail = next((row["cps"] for row in rows if row["failed_ratio"] >= KNEE_FAILED), None)
            result[side] = {"knee_cps": max(passed) if passed else None, "first_failing_cps": first_fail,
                            "steps": rows}
    return result


# ---- command line --------------------------------------------------------------------------------

def _table(result: dict[str, Any]) -> str:
    lines = [f"{'':28}{'acd-router':>12}{'app_queue':>12}{'ratio':>8}"]
    acd, app, ratios = result["acd_router"], result["app_queue"], result["ratios"]
    for key in ("calls", "failed", "answered"):
        lines.append(f"{key:28}{acd[key]!s:>12}{app[key]!s:>12}")
    for key in ("post_dial_delay_ms", "answer_to_agent_ms"):
        for q in ("p50", "p99"):
            lines.append(f"{key + ' ' + q:28}{acd[key][q]!s:>12}{app[key][q]!s:>12}"
                         f"{ratios.get(f'{key}_{q}')!s:>8}")
    lines.append(f"{'asterisk_cpu_s_per_call':28}{acd['asterisk_cpu_s_per_call']!s:>12}"
                 f"{app['asterisk_cpu_s_per_call']!s:>12}{ratios['asterisk_cpu_s_per_call']!s:>8}")
    lines.append(f"{'router_cpu_s_per_call':28}{acd['router_cpu_s_per_call']!s:>12}")
    return "\n".join(lines)


def _knee_table(result: dict[str, Any]) -> str:
    lines = []
    for side in ("acd_router", "app_queue"):
        lines.append(f"{side}: knee {result[side]['knee_cps']} cps (first failing step: "
                     f"{result[side]['first_failing_cps']})")
        lines.append(f"  {'cps':>6}{'calls':>7}{'failed':>7}{'att p50':>9}{'att p99':>9}  cpu per wall second")
        for row in result[side]["steps"]:
            att = row["answer_to_agent_ms"]
            lines.append(f"  {row['cps']:>6g}{row['calls']:>7}{row['failed']:>7}{att['p50']!s:>9}{att['p99']!s:>9}  "
                         + ", ".join(f"{k} {v}" for k, v in row["cpu_per_wall_s"].items()))
    return "\n".join(lines)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rising rates such as 5,10,20, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates) or rates != sorted(rates):
        raise argparse.ArgumentTypeError(f"expected rising positive rates such as 5,10,20, got {text!r}")
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--cps", type=float, default=3.0)
    parser.add_argument("--talk-s", type=float, default=2.0, help="agents' talk time (SIPp UAS)")
    parser.add_argument("--ring-ms", type=int, default=300, help="agents' ring time before answering")
    parser.add_argument("--patience-s", type=float, default=60.0, help="callers hang up after this long")
    parser.add_argument("--data-dir", help="embedded PostgreSQL data directory (without ACD_DATABASE_URL)")
    parser.add_argument("--keep", metavar="DIR", help="keep SIPp's files (logs, stats) in DIR")
    parser.add_argument("--knee", metavar="CPS,CPS,...", type=_rates,
                        help="find the knee instead: these rising rates, --step-s seconds each, both sides")
    parser.add_argument("--step-s", type=float, default=15.0, help="with --knee: seconds of calls per rate")
    parser.add_argument("--junk", action="store_true",
                        help="instead: --calls good callers through the router while the trunk gets an OPTIONS "
                             "flood (--options at --options-rate, from two sources) and malformed INVITEs "
                             "(--invites SIPp calls of benchmarks/sip/junk_invite.xml at --invite-rate)")
    parser.add_argument("--options", type=int, default=1500)
    parser.add_argument("--options-rate", type=float, default=150.0)
    parser.add_argument("--invites", type=int, default=50, help=f"x{INVITE_VARIANTS} malformed INVITEs")
    parser.add_argument("--invite-rate", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.calls < 1 or args.cps <= 0 or args.step_s <= 0:
        parser.error("--calls must be at least 1, --cps and --step-s positive")
    if not sipp_available():
        raise SystemExit("sipp not found: apt-get install sip-tester")
    configure_logging(level="warning")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="acd-sip-load-"))
    try:
        with sandbox_running():
            if args.knee:
                result = asyncio.run(knee(args.knee, args.step_s, args.talk_s, args.ring_ms, args.patience_s,
                                          args.data_dir, workdir))
            elif args.junk:
                result = asyncio.run(junk(args.calls, args.cps, args.options, args.options_rate, args.invites,
                                          args.invite_rate, args.talk_s, args.data_dir, workdir))
            else:
                result = asyncio.run(compare(args.calls, args.cps, args.talk_s, args.ring_ms, args.patience_s,
                                             args.data_dir, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    table = _knee_table if args.knee else (lambda r: json.dumps(r, indent=2)) if args.junk else _table
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
