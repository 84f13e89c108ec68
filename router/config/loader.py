"""Load and validate `router.yaml` into the typed `Centre` of `router.config.model`.

Theory of operation
-------------------
`router.yamlsrc` parses the file into a tree of positioned nodes.  The
`ConfigReader` then walks that tree once, section by section, and for every
value either converts it to the model's type or records a `Problem` at the
line and column of the offending key or value, saying what was expected.
It never stops at the first problem: a broken value only keeps the object
that holds it from being built, so one run reports everything.

Cross references (skills of agents and queues, overflow targets, schedules,
shift agents and teams, simulated queues) are checked against the ids
collected in a first pass, so a queue whose own fields are broken still
counts as existing and produces no follow-on "unknown queue" errors.

Any error makes `load_config` raise `ConfigError` (every problem, sorted by
position, one gcc-style line each); warnings alone do not raise, and
`check_config` returns them beside the centre.  The environment is read in
exactly two places: `ACD_DATABASE_URL` overrides `database.dsn`, and
`ami.secret: ${NAME}` reads the secret from `NAME`.  Secret values never
appear in messages.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from router.config.model import (STRATEGIES, TERMINAL_ACTIONS, WEEKDAYS, Agent, AgiSettings, AmiSettings,
                                 Break, CallbackPolicy, Centre, DatabaseSettings, Distribution, HaSettings, HoldPolicy,
                                 BreakRule, IvrTraffic, OverflowStep, Planning, ShiftRule,
                                 Queue, RecordingPolicy, RecordingSettings, Schedule, Shift, Simulation, Skill,
                                 WEB_ROLES, Webhook, WebSettings, WebToken)
from router.yamlsrc import Mark, Node, Problem, ProblemList, describe, did_you_mean, load, read

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "samples" / "centre.yaml"
DATABASE_URL_ENV = "ACD_DATABASE_URL"

TOP_KEYS = ("skills", "agents", "queues", "schedules", "database", "ami", "agi", "flows",
            "short_abandon_s", "timezone", "simulation", "planning", "web", "ha", "recording", "scorecards")
SKILL_KEYS = ("id", "name", "kind")
AGENT_KEYS = ("id", "name", "endpoint", "team", "skills")
QUEUE_KEYS = ("id", "name", "skills", "strategy", "priority", "weight", "service_level", "wrap_up_s",
              "ring_timeout_s", "rona_pause", "aht_estimate_s", "schedule", "overflow", "callback", "hold", "survey", "webhook",
              "recording")
CALLBACK_KEYS = ("offer_ewt_s", "max_pending", "retry_s", "max_attempts", "customer_first", "prefixes",
                 "min_digits", "max_digits", "hours", "max_days_ahead", "dial", "whisper", "offer_flow")
HOLD_KEYS = ("moh_class", "announce_s", "announce_position", "announce_ewt", "callback_key", "leave_key",
             "leave_mailbox")
HOLD_KEY_CHOICES = tuple("0123456789*#")
RECORDING_KEYS = ("directory", "retention_days", "asterisk_directory")
RECORDING_POLICY_KEYS = ("mode", "sample_percent", "channels", "format", "retention_days", "announce")
_PROMPT = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
SERVICE_LEVEL_KEYS = ("target", "within_s")
TIMED_CHANGES = ("relax", "add_skills", "copy_to", "move_to")
CONDITIONAL_KEYS = ("when", "value", "action", "target", "message")
STEP_KEYS = ("after_s",) + TIMED_CHANGES + CONDITIONAL_KEYS
CONDITIONS = ("max_wait", "no_agents", "queue_length", "ewt")
SCHEDULE_KEYS = ("id", "timezone", "hours", "holidays")
DATABASE_KEYS = ("dsn", "data_dir")
AMI_KEYS = ("host", "port", "username", "secret", "ping_interval_s", "ping_timeout_s", "action_timeout_s")
AGI_KEYS = ("host", "port")
WEB_KEYS = ("enabled", "host", "port", "tokens", "alarms", "push_interval_s", "kpi_refresh_s", "interval_minutes",
            "session_hours")
WEB_TOKEN_KEYS = ("name", "token", "sha256", "role", "queues")
WEB_ALARM_KEYS = ("caller_wait_s", "agent_paused_min")
WEBHOOK_KEYS = ("url", "timeout_s", "retries")
HA_KEYS = ("group", "retry_s", "check_interval_s", "check_timeout_s", "server_idle_timeout_s")
_HA_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SIMULATION_KEYS = ("start", "interval_minutes", "arrivals", "handle_time", "patience", "shifts",
                   "answer_delay_s", "no_answer_rate", "callback_acceptance", "rona_recovery_s", "ivr",
                   "callback_answer_rate", "weekdays", "trend_per_week", "overdispersion")
IVR_TRAFFIC_KEYS = ("flow", "arrivals", "prompt_s", "think_s", "hangup_per_prompt", "choices", "digits",
                    "survey_flow", "survey_rate")
_FLOW_NODE = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_-]+$")
DISTRIBUTION_KEYS = ("dist", "mean_s", "sd_s")
DISTRIBUTIONS = ("exponential", "lognormal", "fixed")
SHIFT_KEYS = ("agents", "team", "start", "end", "breaks")
BREAK_KEYS = ("at", "minutes")
PLANNING_KEYS = ("shrinkage", "shifts")
SHIFT_RULE_KEYS = ("name", "hours", "starts", "every_min", "breaks")
BREAK_RULE_KEYS = ("minutes", "from_h", "to_h")
INTERVAL_MINUTES = (15, 30, 60)

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_RANGE = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*$")
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class ConfigError(ValueError):
    """The config has errors; `problems` holds every error and warning, sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col))
        super().__init__("\n".join(str(p) for p in self.problems))


def default_config_path() -> Path:
    """`./router.yaml` if it exists, else the sample centre shipped with the package."""
    local = Path("router.yaml")
    return local if local.is_file() else SAMPLE_PATH


def load_config(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Centre:
    """Read, validate and build the centre; raise `ConfigError` listing every error."""
    centre, problems = check_config(path, environ=environ)
    if centre is None:
        raise ConfigError(list(problems))
    return centre


def parse_config(source: str | bytes, filename: str = "<config>", *,
                 environ: Mapping[str, str] | None = None) -> Centre:
    """`load_config` for text already in memory; `filename` names it in messages."""
    problems = ProblemList()
    root = load(source, filename, problems)
    centre = validate(root, filename, problems, environ)
    if centre is None:
        raise ConfigError(list(problems))
    return centre


def check_config(path: str | Path | None = None, *,
                 environ: Mapping[str, str] | None = None) -> tuple[Centre | None, ProblemList]:
    """The centre (None if any error) and every problem found, warnings included."""
    filename = str(path if path is not None else default_config_path())
    problems = ProblemList()
    root = read(filename, problems)
    return validate(root, filename, problems, environ), problems


def validate(root: Node | None, filename: str, problems: ProblemList,
             environ: Mapping[str, str] | None) -> Centre | None:
    """The centre of a parsed document, its problems added to `problems` (None on an error)."""
    if root is None:
        return None
    validator = ConfigReader(filename, problems, os.environ if environ is None else environ)
    centre = validator.centre(root)
    return centre if not problems.errors else None


def _owner(noun: str, ident: str | None, index: int) -> str:
    return f"{noun} {ident!r}" if ident is not None else f"{noun} #{index + 1}"


def _fmt(number: float) -> str:
    return f"{number:g}"


def _range_words(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return (f"greater than {_fmt(lo)} and at most {_fmt(hi)}" if lo_open
                else f"from {_fmt(lo)} to {_fmt(hi)}")
    if lo is not None:
        return f"greater than {_fmt(lo)}" if lo_open else f"at least {_fmt(lo)}"
    if hi is not None:
        return f"at most {_fmt(hi)}"
    return ""


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


class ConfigReader:
    """One pass over the node tree: typed readers plus one method per section."""

    def __init__(self, filename: str, problems: ProblemList, environ: Mapping[str, str]) -> None:
        self.file = filename
        self.problems = problems
        self.environ = environ
        self.error_count = 0
        self.skill_ids: dict[str, Node] = {}
        self.agent_ids: dict[str, Node] = {}
        self.queue_ids: dict[str, Node] = {}
        self.schedule_ids: dict[str, Node] = {}
        self.teams: dict[str, list[str]] = {}

    # ---- reporting and typed readers -------------------------------------------------------

    def error(self, at: Node | Mark, message: str) -> None:
        self.error_count += 1
        self.problems.error(self.file, at, message)

    def warning(self, at: Node | Mark, message: str) -> None:
        self.problems.warning(self.file, at, message)

    def fields(self, node: Node | None, owner: str, allowed: tuple[str, ...],
               required: tuple[str, ...] = ()) -> dict[str, Node] | None:
        """The known keys of a mapping; reports unknown and missing keys."""
        if node is None:
            return None
        if not node.is_mapping:
            self.error(node, f"{owner}: expected a mapping, got {describe(node.value)}")
            return None
        for key, mark in node.keys.items():
            if key not in allowed:
                self.error(mark, f"unknown key {key!r} in {owner}{did_you_mean(key, allowed)}")
        for key in required:
            if key not in node.value:
                self.error(node, f"missing required key {key!r} in {owner}")
        return {key: value for key, value in node.value.items() if key in allowed}

    def items(self, node: Node | None, what: str) -> list[Node]:
        """A list's items; null or absent is an empty list."""
        if node is None or node.value is None:
            return []
        if not node.is_sequence:
            self.error(node, f"{what}: expected a list, got {describe(node.value)}")
            return []
        return node.value

    def entries(self, node: Node | None, what: str) -> dict[str, Node]:
        """A free-form mapping's entries; null or absent is empty."""
        if node is None or node.value is None:
            return {}
        if not node.is_mapping:
            self.error(node, f"{what}: expected a mapping, got {describe(node.value)}")
            return {}
        return node.value

    def text(self, node: Node, what: str, *, nullable: bool = False, secret: bool = False) -> str | None:
        """A non-empty string; plain numbers count as their source text (ids such as 1001)."""
        value = node.value
        if value is None and nullable:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and node.text is not None:
            return node.text
        if not isinstance(value, str):
            got = "" if secret else f", got {describe(value)}"
            self.error(node, f"{what}: expected a string{got}")
            return None
        if not value.strip():
            self.error(node, f"{what}: must not be empty")
            return None
        return value

    def integer(self, node: Node, what: str, lo: int | None = None, hi: int | None = None) -> int | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{what}: expected an integer{self._range(lo, hi, False)}, "
                             f"got {describe(value)}")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.error(node, f"{what}: expected an integer {_range_words(lo, hi, False)}, got {value}")
            return None
        return value

    def number(self, node: Node, what: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.error(node, f"{what}: expected a number{self._range(lo, hi, lo_open)}, "
                             f"got {describe(value)}")
            return None
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        if too_low or (hi is not None and value > hi):
            self.error(node, f"{what}: expected a number {_range_words(lo, hi, lo_open)}, "
                             f"got {_fmt(value)}")
            return None
        return float(value)

    @staticmethod
    def _range(lo: float | None, hi: float | None, lo_open: bool) -> str:
        words = _range_words(lo, hi, lo_open)
        return f" {words}" if words else ""

    def flag(self, node: Node, what: str) -> bool | None:
        if not isinstance(node.value, bool):
            self.error(node, f"{what}: expected true or false, got {describe(node.value)}")
            return None
        return node.value

    def choice(self, node: Node, what: str, choices: tuple[str, ...], noun: str) -> str | None:
        value = self.text(node, what)
        if value is None:
            return None
        if value not in choices:
            hint = did_you_mean(value, choices) or f"; expected one of {', '.join(choices)}"
            self.error(node, f"{what}: unknown {noun} {value!r}{hint}")
            return None
        return value

    def reference(self, node: Node, what: str, known: dict[str, Any] | list[str], noun: str) -> str | None:
        """The id of an existing skill/queue/schedule/agent/team."""
        value = self.text(node, what)
        if value is not None and value not in known:
            self.error(node, f"{what}: unknown {noun} {value!r}{did_you_mean(value, known)}")
            return None
        return value

    def clock(self, node: Node, what: str) -> time | None:
        """A time of day written HH:MM (YAML 1.1 reads an unquoted 10:00 as 600; the text is used)."""
        text = node.text if isinstance(node.value, (str, int)) and not isinstance(node.value, bool) else None
        match = _CLOCK.match(text.strip()) if text is not None else None
        if match is None:
            self.error(node, f"{what}: expected a time of day HH:MM such as 08:30, "
                             f"got {describe(node.value)}")
            return None
        return time(int(match[1]), int(match[2]))

    def proficiencies(self, node: Node | None, what: str, lo: int) -> dict[str, int]:
        """A skill -> level mapping with known skills and levels lo..10."""
        levels: dict[str, int] = {}
        mapping = self.entries(node, what)
        for skill, level_node in mapping.items():
            if skill not in self.skill_ids:
                self.error(node.keys[skill], f"unknown skill {skill!r} in {what}"
                                             f"{did_you_mean(skill, self.skill_ids)}")
                continue
            level = self.integer(level_node, f"skill {skill!r} in {what}", lo, 10)
            if level is not None:
                levels[skill] = level
        return levels

    # ---- the whole file --------------------------------------------------------------------

    def centre(self, root: Node) -> Centre | None:
        top = self.fields(root, "the config", TOP_KEYS, required=("skills", "agents", "queues"))
        if top is None:
            return None
        skill_items = self.collect_ids(self.items(top.get("skills"), "'skills'"), "skill", self.skill_ids)
        agent_items = self.collect_ids(self.items(top.get("agents"), "'agents'"), "agent", self.agent_ids)
        queue_items = self.collect_ids(self.items(top.get("queues"), "'queues'"), "queue", self.queue_ids)
        schedule_items = self.collect_ids(self.items(top.get("schedules"), "'schedules'"), "schedule",
                                          self.schedule_ids)
        skills = self.build_all(skill_items, self.skill)
        agents = self.build_all(agent_items, self.agent)
        schedules = self.build_all(schedule_items, self.schedule)
        queues = self.build_all(queue_items, self.queue)
        self.warn_unserved(queues, agents)
        settings = {
            "database": self.database(top.get("database")),
            "ami": self.ami(top.get("ami")),
            "agi": self.agi(top.get("agi")),
            "web": self.web(top.get("web")),
            "ha": self.ha(top.get("ha"), root.keys.get("ha")),
            "flows": self.text(top["flows"], "'flows'", nullable=True) if "flows" in top else None,
        }
        settings["recording"] = self.recording(top.get("recording"))
        if "scorecards" in top:      # QA scorecard directory, relative to this file (router.quality)
            scorecards = self.text(top["scorecards"], "'scorecards'", nullable=True)
            settings["scorecards"] = str((Path(self.file).parent / scorecards).resolve()) if scorecards else None
        if "short_abandon_s" in top:
            settings["short_abandon_s"] = self.number(top["short_abandon_s"], "'short_abandon_s'", lo=0)
        if "timezone" in top:
            settings["timezone"] = self.timezone(top["timezone"], "'timezone'")
        simulation = self.simulation(top.get("simulation"))
        planning = self.planning(top.get("planning"))
        if self.error_count or planning is None:
            return None
        return Centre(source=self.file, skills=skills, agents=agents, queues=queues, schedules=schedules,
                      simulation=simulation, planning=planning, **settings)

    def collect_ids(self, items: list[Node], noun: str,
                    ids: dict[str, Node]) -> list[tuple[Node, str | None]]:
        """Each item with its id (None if missing or bad); reports duplicates at the second."""
        found: list[tuple[Node, str | None]] = []
        for index, item in enumerate(items):
            ident = None
            if item.is_mapping and "id" in item.value:
                ident = self.text(item.value["id"], f"'id' of {noun} #{index + 1}")
            if ident is not None and ident in ids:
                self.error(item.value["id"],
                           f"duplicate {noun} id {ident!r} (first at line {ids[ident].line})")
            elif ident is not None:
                ids[ident] = item.value["id"]
            found.append((item, ident))
        return found

    def build_all(self, items: list[tuple[Node, str | None]], build: Any) -> dict[str, Any]:
        """Validate every item; keep the ones that built without errors, by id."""
        built: dict[str, Any] = {}
        for index, (item, ident) in enumerate(items):
            before = self.error_count
            value = build(item, ident, index)
            if value is not None and self.error_count == before and ident not in built:
                built[ident] = value
        return built

    # ---- skills, agents, schedules, queues -------------------------------------------------

    def skill(self, node: Node, ident: str | None, index: int) -> Skill | None:
        owner = _owner("skill", ident, index)
        f = self.fields(node, owner, SKILL_KEYS, required=("id",))
        if f is None or ident is None:
            return None
        name = self.text(f["name"], f"'name' of {owner}") if "name" in f else ident
        kind = self.choice(f["kind"], f"'kind' of {owner}", ("skill", "language"), "kind") \
            if "kind" in f else "skill"
        return Skill(ident, name or ident, kind or "skill")

    def agent(self, node: Node, ident: str | None, index: int) -> Agent | None:
        owner = _owner("agent", ident, index)
        f = self.fields(node, owner, AGENT_KEYS, required=("id", "endpoint"))
        if f is None:
            return None
        name = self.text(f["name"], f"'name' of {owner}") if "name" in f else ident
        endpoint = self.text(f["endpoint"], f"'endpoint' of {owner}") if "endpoint" in f else None
        if endpoint is not None and "/" not in endpoint:
            self.error(f["endpoint"], f"'endpoint' of {owner}: expected a channel such as 'PJSIP/1001', "
                                      f"got {endpoint!r}")
        team = self.text(f["team"], f"'team' of {owner}", nullable=True) if "team" in f else None
        skills = self.proficiencies(f.get("skills"), owner, 1)
        if ident is not None and team is not None:
            self.teams.setdefault(team, []).append(ident)
        if ident is None or endpoint is None:
            return None
        return Agent(ident, name or ident, endpoint, skills, team)

    def schedule(self, node: Node, ident: str | None, index: int) -> Schedule | None:
        owner = _owner("schedule", ident, index)
        f = self.fields(node, owner, SCHEDULE_KEYS, required=("id", "timezone", "hours"))
        if f is None:
            return None
        timezone = self.timezone(f["timezone"], f"'timezone' of {owner}") if "timezone" in f else None
        hours: dict[str, tuple[tuple[time, time], ...]] = {}
        days = self.fields(f.get("hours"), f"'hours' of {owner}", WEEKDAYS) or {}
        for day, day_node in days.items():
            hours[day] = self.day_hours(day_node, f"{day} in {owner}")
        holidays = []
        for item in self.items(f.get("holidays"), f"'holidays' of {owner}"):
            holiday = self.day(item, f"holiday of {owner}")
            if holiday is not None:
                holidays.append(holiday)
        if ident is None or timezone is None:
            return None
        return Schedule(ident, timezone, hours, tuple(holidays))

    def timezone(self, node: Node, what: str) -> str | None:
        name = self.text(node, what)
        if name is None:
            return None
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            hint = did_you_mean(name, zoneinfo.available_timezones()) or \
                "; expected an IANA name such as 'Europe/London'"
            self.error(node, f"{what}: unknown time zone {name!r}{hint}")
            return None
        return name

    def day_hours(self, node: Node, what: str) -> tuple[tuple[time, time], ...]:
        """Open intervals of one weekday: HH:MM-HH:MM strings, start < end, no overlaps."""
        ranges = [node] if isinstance(node.value, str) else self.items(node, what)
        parsed: list[tuple[time, time, Node]] = []
        for item in ranges:
            interval = self.time_range(item, what)
            if interval is not None:
                parsed.append((*interval, item))
        ordered = sorted(parsed, key=lambda entry: entry[0])
        for (start_a, end_a, node_a), (start_b, end_b, node_b) in zip(ordered, ordered[1:]):
            if start_b < end_a:
                earlier, later = sorted((node_a, node_b), key=lambda n: (n.line, n.col))
                self.error(later, f"hours of {what}: {later.value!r} overlaps {earlier.value!r}")
        return tuple((start, end) for start, end, _ in ordered)

    def time_range(self, node: Node, what: str) -> tuple[time, time] | None:
        match = _RANGE.match(node.value) if isinstance(node.value, str) else None
        times = [self._clock_text(part) for part in match.groups()] if match else [None]
        if None in times:
            self.error(node, f"hours of {what}: expected a time range HH:MM-HH:MM such as 08:00-20:00, "
                             f"got {describe(node.value)}")
            return None
        start, end = times
        if start == time.max:
            self.error(node, f"hours of {what}: a range cannot start at 24:00")
            return None
        if start >= end:
            self.error(node, f"hours of {what}: range {node.value!r} must end after it starts")
            return None
        return start, end

    @staticmethod
    def _clock_text(text: str) -> time | None:
        if text == "24:00":
            return time.max
        match = _CLOCK.match(text)
        return time(int(match[1]), int(match[2])) if match else None

    def day(self, node: Node, what: str) -> date | None:
        value = node.value
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        self.error(node, f"{what}: expected a date YYYY-MM-DD such as 2026-12-25, got {describe(value)}")
        return None

    def queue(self, node: Node, ident: str | None, index: int) -> Queue | None:
        owner = _owner("queue", ident, index)
        f = self.fields(node, owner, QUEUE_KEYS, required=("id",))
        if f is None:
            return None
        values: dict[str, Any] = {}
        if "name" in f:
            values["name"] = self.text(f["name"], f"'name' of {owner}")
        skills = self.proficiencies(f.get("skills"), f"'skills' of {owner}", 1)
        if "strategy" in f:
            values["strategy"] = self.choice(f["strategy"], f"'strategy' of {owner}", STRATEGIES, "strategy")
        if "priority" in f:
            values["priority"] = self.integer(f["priority"], f"'priority' of {owner}")
        if "weight" in f:
            values["weight"] = self.number(f["weight"], f"'weight' of {owner}", lo=0, lo_open=True)
        level = self.fields(f.get("service_level"), f"'service_level' of {owner}", SERVICE_LEVEL_KEYS) or {}
        if "target" in level:
            values["sl_target"] = self.number(level["target"], f"service level target of {owner}",
                                              lo=0, hi=1, lo_open=True)
        if "within_s" in level:
            values["sl_threshold_s"] = self.number(level["within_s"], f"service level 'within_s' of {owner}",
                                                   lo=0, lo_open=True)
        if "wrap_up_s" in f:
            values["wrap_up_s"] = self.number(f["wrap_up_s"], f"'wrap_up_s' of {owner}", lo=0)
        if "ring_timeout_s" in f:
            values["ring_timeout_s"] = self.number(f["ring_timeout_s"], f"'ring_timeout_s' of {owner}",
                                                   lo=0, lo_open=True)
        if "rona_pause" in f:
            values["rona_pause"] = self.flag(f["rona_pause"], f"'rona_pause' of {owner}")
        if "aht_estimate_s" in f:
            values["aht_estimate_s"] = self.number(f["aht_estimate_s"], f"'aht_estimate_s' of {owner}",
                                                   lo=0, lo_open=True)
        if "schedule" in f:
            values["schedule"] = self.reference(f["schedule"], f"'schedule' of {owner}", self.schedule_ids,
                                                "schedule")
        values["overflow"] = self.overflow(f.get("overflow"), owner, ident, skills)
        if "callback" in f and f["callback"].value is not None:
            values["callback"] = self.callback_policy(f["callback"], f"'callback' of {owner}")
        elif any(step.action == "callback" for step in values["overflow"] or ()):
            values["callback"] = CallbackPolicy()       # an overflow step offers call-backs: default policy
        if "survey" in f and f["survey"].value is not None:
            values["survey"] = self.text(f["survey"], f"'survey' of {owner}")
            if values["survey"] is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", values["survey"]):
                self.error(f["survey"], f"'survey' of {owner}: expected a flow name of letters, digits, '_'"
                                        f" or '-', got {values['survey']!r}")
        if "webhook" in f and f["webhook"].value is not None:
            values["webhook"] = self.webhook(f["webhook"], f"'webhook' of {owner}")
        if "hold" in f and f["hold"].value is not None:
            hold = self.hold_policy(f["hold"], f"'hold' of {owner}")
            if hold is not None:
                values["hold"] = hold
        if "recording" in f and f["recording"].value is not None:
            recording = self.recording_policy(f["recording"], f"'recording' of {owner}")
            if recording is not None:
                values["recording"] = recording
        if ident is None:
            return None
        return Queue(ident, values.pop("name", ident) or ident, skills, **values)

    def hold_policy(self, node: Node, owner: str) -> HoldPolicy | None:
        f = self.fields(node, owner, HOLD_KEYS)
        if f is None:
            return None
        values: dict[str, Any] = {}
        if "announce_s" in f:
            values["announce_s"] = self.number(f["announce_s"], f"'announce_s' of {owner}", lo=0)
        for key in ("announce_position", "announce_ewt"):
            if key in f:
                values[key] = self.flag(f[key], f"{key!r} of {owner}")
        for key in ("moh_class", "leave_mailbox"):
            if key in f:
                values[key] = self.text(f[key], f"{key!r} of {owner}")
                if values[key] is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]+", values[key]):
                    self.error(f[key], f"{key!r} of {owner}: expected letters, digits, '_', '-', '.' or '@',"
                                       f" got {values[key]!r}")
        for key in ("callback_key", "leave_key"):
            if key in f:
                values[key] = None if f[key].value is None else self.choice(
                    f[key], f"{key!r} of {owner}", HOLD_KEY_CHOICES, "key")
        keys = [values.get("callback_key", "1"), values.get("leave_key")]
        if keys[0] is not None and keys[0] == keys[1]:
            self.error(f.get("leave_key") or node, f"{owner}: 'callback_key' and 'leave_key' are the same key")
        if any(v is None for k, v in values.items() if k not in ("callback_key", "leave_key")):
            return None
        return HoldPolicy(**values)

    def recording(self, node: Node | None) -> RecordingSettings | None:
        """The centre's `recording:`; the directory (default `recordings`) is made absolute, relative
        to the config file."""
        values: dict[str, Any] = {"directory": str((Path(self.file).parent / RecordingSettings.directory).resolve())}
        if node is None or node.value is None:
            return RecordingSettings(**values)
        f = self.fields(node, "section 'recording'", RECORDING_KEYS)
        if f is None:
            return None
        for key in ("directory", "asterisk_directory"):
            if key in f:
                text = self.text(f[key], f"{key!r} of section 'recording'")
                values[key] = None if text is None else str((Path(self.file).parent / text).resolve()
                                                            if key == "directory" else text)
                if key == "asterisk_directory" and text is not None and not text.startswith("/"):
                    self.error(f[key], f"'asterisk_directory' of section 'recording': expected an absolute path"
                                       f" (the directory as Asterisk sees it), got {text!r}")
        if "retention_days" in f:
            values["retention_days"] = self.integer(f["retention_days"], "'retention_days' of section 'recording'",
                                                    lo=1)
        if any(v is None for v in values.values()):
            return None
        return RecordingSettings(**values)

    def recording_policy(self, node: Node, owner: str) -> RecordingPolicy | None:
        f = self.fields(node, owner, RECORDING_POLICY_KEYS)
        if f is None:
            return None
        values: dict[str, Any] = {}
        for key, choices in (("mode", ("all", "sample", "none")), ("channels", ("stereo", "mixed")),
                             ("format", ("wav", "opus"))):
            if key in f:
                values[key] = self.choice(f[key], f"{key!r} of {owner}", choices, key)
        if "sample_percent" in f:
            values["sample_percent"] = self.number(f["sample_percent"], f"'sample_percent' of {owner}",
                                                   lo=0, hi=100, lo_open=True)
            if values.get("mode", "none") != "sample":
                self.error(f["sample_percent"], f"'sample_percent' of {owner}: only with mode: sample")
        elif values.get("mode") == "sample":
            self.error(f["mode"], f"{owner}: mode sample needs 'sample_percent' (greater than 0 and at most 100)")
        if "retention_days" in f:
            values["retention_days"] = self.integer(f["retention_days"], f"'retention_days' of {owner}", lo=1)
        if "announce" in f and f["announce"].value is not None:
            values["announce"] = self.text(f["announce"], f"'announce' of {owner}")
            if values["announce"] is not None and not _PROMPT.fullmatch(values["announce"]):
                self.error(f["announce"], f"'announce' of {owner}: expected a prompt name of letters, digits,"
                                          f" '_', '-' or '/', got {values['announce']!r}")
        if values.get("format") == "opus" and values.get("channels", "stereo") == "stereo":
            self.error(f["format"], f"'format' of {owner}: opus recordings are mixed only (add channels: mixed);"
                                    f" stereo recordings are WAV")
        if any(v is None for v in values.values()):
            return None
        return RecordingPolicy(**values)

    def overflow(self, node: Node | None, owner: str, ident: str | None,
                 skills: dict[str, int]) -> tuple[OverflowStep, ...]:
        minimums = dict(skills)
        steps = []
        last_after: float | None = None
        for index, item in enumerate(self.items(node, f"'overflow' of {owner}")):
            step_owner = f"overflow step {index + 1} of {owner}"
            step, after = self.overflow_step(item, step_owner, ident, minimums, last_after)
            last_after = after if after is not None else last_after
            if step is not None:
                steps.append(step)
        return tuple(steps)

    def overflow_step(self, node: Node, owner: str, queue: str | None, minimums: dict[str, int],
                      last_after: float | None) -> tuple[OverflowStep | None, float | None]:
        f = self.fields(node, owner, STEP_KEYS)
        if f is None:
            return None, None
        if "after_s" in f and "when" in f:
            self.error(node, f"{owner}: use either 'after_s' (a timed step) or 'when' (a conditional step), "
                             f"not both")
            return None, None
        if "after_s" in f:
            return self.timed_step(f, node, owner, queue, minimums, last_after)
        if "when" in f:
            return self.conditional_step(f, node, owner), None
        self.error(node, f"{owner}: expected 'after_s' (a timed step) or 'when' (a conditional step)")
        return None, None

    def timed_step(self, f: dict[str, Node], node: Node, owner: str, queue: str | None,
                   minimums: dict[str, int],
                   last_after: float | None) -> tuple[OverflowStep | None, float | None]:
        for key in CONDITIONAL_KEYS:
            if key in f:
                self.error(node.keys[key], f"{key!r} in {owner}: only conditional steps (with 'when') use it")
        after = self.number(f["after_s"], f"'after_s' of {owner}", lo=0)
        if after is not None and last_after is not None and after < last_after:
            self.error(f["after_s"], f"{owner}: timed steps must be listed in ascending 'after_s' order, "
                                     f"but {_fmt(after)} follows {_fmt(last_after)}")
        changes = [key for key in TIMED_CHANGES if key in f]
        if len(changes) != 1:
            got = f", got {', '.join(changes)}" if changes else ""
            self.error(node, f"{owner}: a timed step needs exactly one of {', '.join(TIMED_CHANGES)}{got}")
            return None, after
        change = changes[0]
        values: dict[str, Any] = {}
        if change == "relax":
            values["relax"] = self.relax(f["relax"], owner, minimums)
        elif change == "add_skills":
            values["add_skills"] = self.proficiencies(f["add_skills"], f"'add_skills' of {owner}", 1)
            if not f["add_skills"].value:
                self.error(f["add_skills"], f"'add_skills' of {owner}: expected at least one skill")
        else:
            target = self.reference(f[change], f"{change!r} of {owner}", self.queue_ids, "queue")
            if target is not None and target == queue:
                self.error(f[change], f"{change!r} of {owner}: a queue cannot overflow to itself")
            values[change] = target
        if after is None:
            return None, None
        return OverflowStep(after_s=after, **values), after

    def relax(self, node: Node, owner: str, minimums: dict[str, int]) -> dict[str, int]:
        """New, lower minimums for skills the queue requires (lowered step after step)."""
        relaxed: dict[str, int] = {}
        for skill, level_node in self.entries(node, f"'relax' of {owner}").items():
            if skill not in minimums:
                hint = did_you_mean(skill, minimums)
                self.error(node.keys[skill], f"'relax' of {owner}: the queue does not require "
                                             f"skill {skill!r}{hint}")
                continue
            level = self.integer(level_node, f"skill {skill!r} in 'relax' of {owner}", 0, 10)
            if level is None:
                continue
            if level >= minimums[skill]:
                self.error(level_node, f"'relax' of {owner}: must lower the minimum of {skill!r} "
                                       f"(now {minimums[skill]}), got {level}")
                continue
            minimums[skill] = relaxed[skill] = level
        if not relaxed and not node.value:
            self.error(node, f"'relax' of {owner}: expected at least one skill")
        return relaxed

    def conditional_step(self, f: dict[str, Node], node: Node, owner: str) -> OverflowStep | None:
        for key in TIMED_CHANGES:
            if key in f:
                self.error(node.keys[key], f"{key!r} in {owner}: only timed steps (with 'after_s') use it")
        when = self.choice(f["when"], f"'when' of {owner}", CONDITIONS, "condition")
        action = None
        if "action" not in f:
            self.error(node, f"missing required key 'action' in {owner}")
        else:
            action = self.choice(f["action"], f"'action' of {owner}", TERMINAL_ACTIONS, "action")
        values: dict[str, Any] = {}
        if when == "no_agents":
            if "value" in f:
                self.warning(f["value"], f"'value' of {owner}: not used with when: no_agents")
        elif when is not None and "value" not in f:
            self.error(node, f"missing required key 'value' in {owner} (when: {when})")
        elif when == "queue_length":
            values["value"] = self.integer(f["value"], f"'value' of {owner}", lo=1)
        elif when is not None:
            values["value"] = self.number(f["value"], f"'value' of {owner}", lo=0, lo_open=True)
        if action == "transfer" and "target" not in f:
            self.error(node, f"missing required key 'target' in {owner} (action: transfer)")
        elif "target" in f and action is not None and action != "transfer":
            self.error(f["target"], f"'target' of {owner}: only action: transfer uses it")
        elif "target" in f:
            values["target"] = self.text(f["target"], f"'target' of {owner}")
        if "message" in f:
            values["message"] = self.text(f["message"], f"'message' of {owner}")
        if when is None or action is None:
            return None
        return OverflowStep(when=when, action=action, **values)

    def warn_unserved(self, queues: dict[str, Queue], agents: dict[str, Agent]) -> None:
        for queue in queues.values():
            if not any(all(agent.skills.get(skill, 0) >= level for skill, level in queue.skills.items())
                       for agent in agents.values()):
                self.warning(self.queue_ids[queue.id], f"no agent has the skills queue {queue.id!r} requires")

    # ---- settings --------------------------------------------------------------------------

    def section(self, node: Node | None, name: str, keys: tuple[str, ...]) -> dict[str, Node] | None:
        """The known keys of an optional top-level section; None when absent or null."""
        if node is None or node.value is None:
            return None
        return self.fields(node, f"section {name!r}", keys) or {}

    def database(self, node: Node | None) -> DatabaseSettings:
        f = self.section(node, "database", DATABASE_KEYS) or {}
        values = {key: self.text(f[key], f"{key!r} of section 'database'", nullable=True)
                  for key in DATABASE_KEYS if key in f}
        override = self.environ.get(DATABASE_URL_ENV)
        if override:
            values["dsn"] = override
        return DatabaseSettings(**values)

    def ami(self, node: Node | None) -> AmiSettings | None:
        f = self.section(node, "ami", AMI_KEYS)
        if f is None:
            return None
        values: dict[str, Any] = {}
        for key in ("host", "username"):
            if key in f:
                values[key] = self.text(f[key], f"{key!r} of section 'ami'")
        if "port" in f:
            values["port"] = self.integer(f["port"], "'port' of section 'ami'", 1, 65535)
        if "secret" in f:
            values["secret"] = self.secret(f["secret"])
        for key in ("ping_interval_s", "ping_timeout_s", "action_timeout_s"):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of section 'ami'", lo=0, lo_open=True)
        return AmiSettings(**values)

    def secret(self, node: Node, what: str = "'secret' of section 'ami'") -> str | None:
        """A secret, literal or `${NAME}` from the environment; never quoted in messages."""
        value = self.text(node, what, secret=True)
        if value is None:
            return None
        reference = _ENV_REF.match(value)
        if reference is None:
            return value
        secret = self.environ.get(reference[1])
        if secret is None:
            self.error(node, f"{what}: environment variable {reference[1]!r} is not set")
        return secret

    def agi(self, node: Node | None) -> AgiSettings:
        f = self.section(node, "agi", AGI_KEYS) or {}
        values: dict[str, Any] = {}
        if "host" in f:
            values["host"] = self.text(f["host"], "'host' of section 'agi'")
        if "port" in f:
            values["port"] = self.integer(f["port"], "'port' of section 'agi'", 1, 65535)
        return AgiSettings(**values)

    def webhook(self, node: Node, owner: str) -> Webhook | None:
        f = self.fields(node, owner, WEBHOOK_KEYS, required=("url",))
        if f is None or "url" not in f:
            return None
        url = self.text(f["url"], f"'url' of {owner}")
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            self.error(f["url"], f"'url' of {owner}: expected an http:// or https:// URL, got {url!r}")
            url = None
        values: dict[str, Any] = {}
        if "timeout_s" in f:
            values["timeout_s"] = self.number(f["timeout_s"], f"'timeout_s' of {owner}", lo=0, hi=60, lo_open=True)
        if "retries" in f:
            values["retries"] = self.integer(f["retries"], f"'retries' of {owner}", 0, 10)
        return Webhook(url, **values) if url is not None else None

    def web(self, node: Node | None) -> WebSettings:
        f = self.section(node, "web", WEB_KEYS) or {}
        values: dict[str, Any] = {}
        if "enabled" in f:
            values["enabled"] = self.flag(f["enabled"], "'enabled' of section 'web'")
        if "host" in f:
            values["host"] = self.text(f["host"], "'host' of section 'web'")
        if "port" in f:
            values["port"] = self.integer(f["port"], "'port' of section 'web'", 1, 65535)
        for key, lo, hi in (("push_interval_s", 0.05, 10), ("kpi_refresh_s", 1, 3600), ("session_hours", 0.1, 720)):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of section 'web'", lo=lo, hi=hi)
        if "interval_minutes" in f:
            values["interval_minutes"] = self.choice_number(f["interval_minutes"], "'interval_minutes' of section 'web'")
        alarms = self.fields(f.get("alarms"), "'alarms' of section 'web'", WEB_ALARM_KEYS) or {}
        if "caller_wait_s" in alarms:
            values["caller_wait_alarm_s"] = self.number(alarms["caller_wait_s"], "'caller_wait_s' of web alarms",
                                                        lo=0, lo_open=True)
        if "agent_paused_min" in alarms:
            values["agent_pause_alarm_min"] = self.number(alarms["agent_paused_min"],
                                                          "'agent_paused_min' of web alarms", lo=0, lo_open=True)
        tokens = [self.web_token(item, index) for index, item in
                  enumerate(self.items(f.get("tokens"), "'tokens' of section 'web'"))]
        values["tokens"] = tuple(token for token in tokens if token is not None)
        names = [token.name for token in values["tokens"]]
        for name in {n for n in names if names.count(n) > 1}:
            self.error(f["tokens"], f"'tokens' of section 'web': the name {name!r} is used twice")
        return WebSettings(**{key: value for key, value in values.items() if value is not None})

    def ha(self, node: Node | None, at: Mark | None) -> HaSettings:
        """`ha:` (router.ha.Leadership): timings positive, and the lease (`check_interval_s +
        check_timeout_s`) and `retry_s` shorter than `server_idle_timeout_s`, so that a leader cut off
        from the database fences itself before the server frees its lock.  Those two rules are reported
        at `server_idle_timeout_s` (at `ha:` when it is left at its default), each only when the
        timings it compares are valid."""
        f = self.section(node, "ha", HA_KEYS) or {}
        values: dict[str, Any] = {}
        if "group" in f:
            group = values["group"] = self.text(f["group"], "'group' of section 'ha'")
            if group is not None and not _HA_GROUP.fullmatch(group):
                self.error(f["group"], "'group' of section 'ha': expected a name of at most 63 letters, digits, "
                                       f"'-', '_' or '.', got {describe(group)}")
        for key in HA_KEYS[1:]:
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of section 'ha'", lo=0, lo_open=True)
        settings = HaSettings(**{key: value for key, value in values.items() if value is not None})
        valid = [key for key in HA_KEYS[1:] if not (key in values and values[key] is None)]
        idle_node = f.get("server_idle_timeout_s")
        position = idle_node if idle_node is not None else at
        if "server_idle_timeout_s" not in valid or position is None:
            return settings
        where, default = ("'server_idle_timeout_s' of section 'ha'", "") if idle_node is not None \
            else ("section 'ha'", ", the default")
        idle = settings.server_idle_timeout_s
        interval, timeout = settings.check_interval_s, settings.check_timeout_s
        if {"check_interval_s", "check_timeout_s"} <= set(valid) and interval + timeout >= idle:
            self.error(position, f"{where}: 'check_interval_s' + 'check_timeout_s' ({_fmt(interval)} + "
                                 f"{_fmt(timeout)}) must be less than 'server_idle_timeout_s' ({_fmt(idle)}{default}):"
                                 f" a leader cut off from the database must fence itself before the server frees"
                                 f" its lock")
        if "retry_s" in valid and settings.retry_s >= idle:
            self.error(position, f"{where}: 'retry_s' ({_fmt(settings.retry_s)}) must be less than"
                                 f" 'server_idle_timeout_s' ({_fmt(idle)}{default}): the server would end a"
                                 f" waiting standby's session between two tries")
        return settings

    def choice_number(self, node: Node, what: str) -> int | None:
        value = self.integer(node, what)
        if value is not None and value not in INTERVAL_MINUTES:
            self.error(node, f"{what}: expected one of {', '.join(map(str, INTERVAL_MINUTES))}, got {value}")
            return None
        return value

    def web_token(self, node: Node, index: int) -> WebToken | None:
        """A token of the web API: `token` (literal or ${ENV}) or its `sha256`; never quoted back."""
        owner = f"token #{index + 1} of section 'web'"
        f = self.fields(node, owner, WEB_TOKEN_KEYS, required=("name", "role"))
        if f is None:
            return None
        name = self.text(f["name"], f"'name' of {owner}") if "name" in f else None
        owner = f"token {name!r} of section 'web'" if name else owner
        role = self.text(f["role"], f"'role' of {owner}") if "role" in f else None
        if role is not None and role not in WEB_ROLES:
            agent = role.removeprefix("agent:") if role.startswith("agent:") else None
            if agent is None:
                self.error(f["role"], f"'role' of {owner}: expected viewer, supervisor, admin or agent:<agent id>, "
                                      f"got {role!r}")
                role = None
            elif agent not in self.agent_ids:
                self.error(f["role"], f"'role' of {owner}: unknown agent {agent!r}{did_you_mean(agent, self.agent_ids)}")
                role = None
        if ("token" in f) == ("sha256" in f):
            self.error(node, f"{owner}: expected exactly one of 'token' or 'sha256'")
            return None
        digest = None
        if "sha256" in f:
            digest = self.text(f["sha256"], f"'sha256' of {owner}", secret=True)
            if digest is not None and not _SHA256.match(digest.lower()):
                self.error(f["sha256"], f"'sha256' of {owner}: expected 64 hexadecimal digits")
                digest = None
            digest = digest.lower() if digest else None
        else:
            secret = self.secret(f["token"], f"'token' of {owner}")
            if secret is not None and len(secret) < 16:
                self.error(f["token"], f"'token' of {owner}: too short, use at least 16 characters")
                secret = None
            digest = hashlib.sha256(secret.encode()).hexdigest() if secret else None
        queues = None
        if "queues" in f and f["queues"].value is not None:
            queues = tuple(q for q in (self.reference(item, f"'queues' of {owner}", self.queue_ids, "queue")
                                       for item in self.items(f["queues"], f"'queues' of {owner}")) if q)
        if name is None or role is None or digest is None:
            return None
        return WebToken(name, digest, role, queues)

    # ---- planning --------------------------------------------------------------------------

    def planning(self, node: Node | None) -> Planning | None:
        f = self.section(node, "planning", PLANNING_KEYS)
        if f is None:
            return Planning()
        owner = "section 'planning'"
        shrinkage = self.number(f["shrinkage"], f"'shrinkage' of {owner}", lo=0, hi=0.9) if "shrinkage" in f else 0.0
        rules = [self.shift_rule(item, f"shift rule #{index + 1} of {owner}")
                 for index, item in enumerate(self.items(f.get("shifts"), f"'shifts' of {owner}"))]
        names = [rule.name for rule in rules if rule is not None]
        for item, rule in zip(f["shifts"].value if "shifts" in f and f["shifts"].is_sequence else [], rules):
            if rule is not None and names.count(rule.name) > 1:
                self.error(item, f"{owner}: shift rule name {rule.name!r} is used more than once")
        if shrinkage is None or None in rules:
            return None
        return Planning(shrinkage=shrinkage, shifts=tuple(rules))  # type: ignore[arg-type]

    def shift_rule(self, node: Node, owner: str) -> ShiftRule | None:
        f = self.fields(node, owner, SHIFT_RULE_KEYS, required=("name", "hours", "starts"))
        if f is None or not {"name", "hours", "starts"} <= f.keys():
            return None
        name = self.text(f["name"], f"'name' of {owner}")
        hours = self.number(f["hours"], f"'hours' of {owner}", lo=0.5, hi=16)
        if hours is not None and hours * 60 != int(hours * 60):
            self.error(f["hours"], f"'hours' of {owner}: a shift lasts whole minutes, got {_fmt(hours)} h")
            hours = None
        match = _RANGE.match(f["starts"].value) if isinstance(f["starts"].value, str) else None
        starts = [self._clock_text(part) for part in match.groups()] if match else [None]
        if None in starts or starts[0] > starts[1]:
            self.error(f["starts"], f"'starts' of {owner}: expected the earliest and latest start HH:MM-HH:MM "
                                    f"such as 07:00-12:00, got {describe(f['starts'].value)}")
            starts = [None, None]
        every = 30
        if "every_min" in f:
            every = self.choice_number(f["every_min"], f"'every_min' of {owner}")
        breaks = [self.break_rule(item, f"break #{index + 1} of {owner}", hours)
                  for index, item in enumerate(self.items(f.get("breaks"), f"'breaks' of {owner}"))]
        if None in (name, hours, every, *starts) or None in breaks:
            return None
        return ShiftRule(name, hours, starts[0], starts[1], every, tuple(breaks))  # type: ignore[arg-type]

    def break_rule(self, node: Node, owner: str, hours: float | None) -> BreakRule | None:
        f = self.fields(node, owner, BREAK_RULE_KEYS, required=BREAK_RULE_KEYS)
        if f is None or not set(BREAK_RULE_KEYS) <= f.keys():
            return None
        minutes = self.number(f["minutes"], f"'minutes' of {owner}", lo=0, lo_open=True)
        if minutes is not None and minutes != int(minutes):
            self.error(f["minutes"], f"'minutes' of {owner}: a break lasts whole minutes, got {_fmt(minutes)}")
            return None
        from_h = self.number(f["from_h"], f"'from_h' of {owner}", lo=0)
        to_h = self.number(f["to_h"], f"'to_h' of {owner}", lo=0)
        if None in (minutes, from_h, to_h):
            return None
        if to_h < from_h:
            self.error(f["to_h"], f"{owner}: 'to_h' ({_fmt(to_h)}) is before 'from_h' ({_fmt(from_h)})")
            return None
        if hours is not None and to_h * 60 + minutes > hours * 60:
            self.error(f["to_h"], f"{owner}: a break of {_fmt(minutes)} min starting {_fmt(to_h)} h into the shift "
                                  f"ends after the shift's {_fmt(hours)} h")
            return None
        return BreakRule(minutes, from_h, to_h)

    # ---- simulation ------------------------------------------------------------------------

    def callback_policy(self, node: Node, owner: str) -> CallbackPolicy | None:
        f = self.fields(node, owner, CALLBACK_KEYS)
        if f is None:
            return None
        values: dict[str, Any] = {}
        for key in ("offer_ewt_s", "retry_s"):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of {owner}", lo=0)
        for key, lo in (("max_pending", 1), ("max_attempts", 1), ("min_digits", 1), ("max_digits", 1)):
            if key in f:
                values[key] = self.integer(f[key], f"{key!r} of {owner}", lo=lo, hi=10_000)
        if "customer_first" in f:
            values["customer_first"] = self.flag(f["customer_first"], f"'customer_first' of {owner}")
        if "hours" in f:
            values["hours"] = self.reference(f["hours"], f"'hours' of {owner}", self.schedule_ids, "schedule")
        if "max_days_ahead" in f:
            values["max_days_ahead"] = self.integer(f["max_days_ahead"], f"'max_days_ahead' of {owner}", lo=0,
                                                    hi=365)
        if "dial" in f:
            values["dial"] = self.text(f["dial"], f"'dial' of {owner}")
            if values["dial"] is not None and "{number}" not in values["dial"]:
                self.error(f["dial"], f"'dial' of {owner}: expected a dial string with {{number}},"
                                      f" e.g. 'PJSIP/{{number}}@pstn'")
        for key in ("whisper", "offer_flow"):
            if key in f:
                values[key] = None if (key == "whisper" and f[key].value is None) else self.text(
                    f[key], f"{key!r} of {owner}")
                if values[key] is not None and not re.fullmatch(r"[A-Za-z0-9_/-]+", values[key]):
                    self.error(f[key], f"{key!r} of {owner}: expected a name of letters, digits, '_', '-'"
                                       f" or '/', got {values[key]!r}")
        if "prefixes" in f:
            prefixes = [self.text(p, f"prefix of {owner}") for p in self.items(f["prefixes"], f"'prefixes' of {owner}")]
            for item, prefix in zip(f["prefixes"].value or [], prefixes):
                if prefix is not None and not re.fullmatch(r"\+?[0-9]+", prefix):
                    self.error(item, f"prefix of {owner}: expected digits with an optional leading +, got {prefix!r}")
            values["prefixes"] = tuple(prefixes)
        if values.get("min_digits") and values.get("max_digits") and values["min_digits"] > values["max_digits"]:
            self.error(f["min_digits"], f"'min_digits' of {owner} is more than 'max_digits'")
        if any(v is None for k, v in values.items() if k != "whisper") or None in values.get("prefixes", ()):
            return None
        return CallbackPolicy(**values)

    def simulation(self, node: Node | None) -> Simulation | None:
        owner = "section 'simulation'"
        if node is None or node.value is None:
            return None
        f = self.fields(node, owner, SIMULATION_KEYS,
                        required=("start", "arrivals", "handle_time", "patience"))
        if f is None:
            return None
        values: dict[str, Any] = {}
        values["start"] = self.moment(f["start"], f"'start' of {owner}") if "start" in f else None
        values["interval_minutes"] = 30
        if "interval_minutes" in f:
            values["interval_minutes"] = self.interval(f["interval_minutes"],
                                                       f"'interval_minutes' of {owner}")
        values["arrivals"] = self.arrivals(f.get("arrivals"))
        values["handle_time"] = self.distributions(f.get("handle_time"), "handle_time")
        values["patience"] = self.distributions(f.get("patience"), "patience")
        values["shifts"] = tuple(self.shifts(f.get("shifts")))
        for key in ("answer_delay_s", "rona_recovery_s"):
            if key in f:
                values[key] = self.number(f[key], f"'{key}' of {owner}", lo=0)
        for key in ("no_answer_rate", "callback_acceptance", "callback_answer_rate"):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of {owner}", lo=0, hi=1)
        if "ivr" in f and f["ivr"].value is not None:
            values["ivr"] = self.ivr_traffic(f["ivr"])
        if "weekdays" in f:
            values["weekdays"] = self.weekday_factors(f["weekdays"], f"'weekdays' of {owner}")
        if "trend_per_week" in f:
            values["trend_per_week"] = self.number(f["trend_per_week"], f"'trend_per_week' of {owner}",
                                                   lo=-1, hi=1, lo_open=True)
        if "overdispersion" in f:
            values["overdispersion"] = self.number(f["overdispersion"], f"'overdispersion' of {owner}", lo=0, hi=1)
        if any(value is None for value in values.values()):
            return None
        return Simulation(**values)

    def weekday_factors(self, node: Node, what: str) -> dict[str, float] | None:
        """`simulation.weekdays`: weekday (mon..sun) -> arrival multiplier >= 0."""
        if node.value is None:
            return {}
        days = self.fields(node, what, WEEKDAYS)
        if days is None:
            return None
        factors = {day: self.number(value, f"{day!r} of {what}", lo=0) for day, value in days.items()}
        return None if None in factors.values() else factors

    def ivr_traffic(self, node: Node) -> IvrTraffic | None:
        """`simulation.ivr`; flow and node names are checked against the flows by the simulator."""
        owner = "'ivr' of section 'simulation'"
        f = self.fields(node, owner, IVR_TRAFFIC_KEYS, required=("flow", "arrivals"))
        if f is None:
            return None
        values: dict[str, Any] = {"flow": self.text(f["flow"], f"'flow' of {owner}") if "flow" in f else None}
        counts = self.items(f.get("arrivals"), f"'arrivals' of {owner}")
        values["arrivals"] = tuple(self.number(c, f"interval {i + 1} of 'arrivals' of {owner}", lo=0)
                                   for i, c in enumerate(counts))
        for key in ("prompt_s", "think_s"):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of {owner}", lo=0)
        for key in ("hangup_per_prompt", "survey_rate"):
            if key in f:
                values[key] = self.number(f[key], f"{key!r} of {owner}", lo=0, hi=1)
        if "survey_flow" in f:
            values["survey_flow"] = self.text(f["survey_flow"], f"'survey_flow' of {owner}")
        choices: dict[str, dict[str, float]] = {}
        for where, keys_node in self.entries(f.get("choices"), f"'choices' of {owner}").items():
            if not self._flow_node(f["choices"].keys[where], where, "choices"):
                continue
            keys = {}
            for key, share in self.entries(keys_node, f"choices at {where!r}").items():
                if not re.fullmatch(r"[0-9*#]+", key):
                    self.error(keys_node.keys[key], f"choices at {where!r}: {key!r} is not a phone key")
                keys[key] = self.number(share, f"probability of {key!r} at {where!r}", lo=0, hi=1)
            if None not in keys.values() and sum(keys.values()) > 1 + 1e-9:
                self.error(keys_node, f"choices at {where!r}: probabilities add up to "
                                      f"{_fmt(sum(keys.values()))}, more than 1")
            choices[where] = keys
        values["choices"] = choices
        digits: dict[str, str] = {}
        for where, digits_node in self.entries(f.get("digits"), f"'digits' of {owner}").items():
            if self._flow_node(f["digits"].keys[where], where, "digits"):
                typed = self.text(digits_node, f"digits at {where!r}")
                if typed is not None and not re.fullmatch(r"[0-9*#]+", typed):
                    self.error(digits_node, f"digits at {where!r}: expected phone keys 0-9 * #, got {typed!r}")
                digits[where] = typed or ""
        values["digits"] = digits
        if any(value is None for value in values.values()) or None in values["arrivals"] or any(
                None in keys.values() for keys in choices.values()):
            return None
        return IvrTraffic(**values)

    def _flow_node(self, at: Mark, where: str, section: str) -> bool:
        if not _FLOW_NODE.match(where):
            self.error(at, f"{section}: expected a key of the form 'flow/node', got {where!r}")
            return False
        return True

    def moment(self, node: Node, what: str) -> datetime | None:
        value = node.value
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                pass
        if not isinstance(value, datetime):
            self.error(node, f"{what}: expected a date and time such as 2026-11-23T08:00:00, "
                             f"got {describe(node.value)}")
            return None
        return value

    def interval(self, node: Node, what: str) -> int | None:
        minutes = self.integer(node, what)
        if minutes is not None and minutes not in INTERVAL_MINUTES:
            self.error(node, f"{what}: expected 15, 30 or 60, got {minutes}")
            return None
        return minutes

    def arrivals(self, node: Node | None) -> dict[str, tuple[float, ...]] | None:
        what = "'arrivals' of section 'simulation'"
        profiles: dict[str, tuple[float, ...]] = {}
        lengths: list[tuple[str, int]] = []
        for queue, profile_node in self.entries(node, what).items():
            if queue not in self.queue_ids:
                self.error(node.keys[queue],
                           f"{what}: unknown queue {queue!r}{did_you_mean(queue, self.queue_ids)}")
                continue
            counts = self.items(profile_node, f"arrivals of queue {queue!r}")
            if not counts and profile_node.is_sequence:
                self.error(profile_node, f"arrivals of queue {queue!r}: expected at least one interval")
            numbers = [self.number(count, f"interval {index + 1} of arrivals of queue {queue!r}", lo=0)
                       for index, count in enumerate(counts)]
            if counts and None not in numbers:
                profiles[queue] = tuple(numbers)
                lengths.append((queue, len(numbers)))
        for queue, length in lengths[1:]:
            first_queue, first_length = lengths[0]
            if length != first_length:
                self.warning(node.value[queue], f"arrivals of queue {queue!r} have {length} intervals, "
                                                f"but queue {first_queue!r} has {first_length}")
        return profiles

    def distributions(self, node: Node | None, section: str) -> dict[str, Distribution] | None:
        what = f"{section!r} of section 'simulation'"
        result: dict[str, Distribution] = {}
        entries = self.entries(node, what)
        for key, dist_node in entries.items():
            if key != "default" and key not in self.queue_ids:
                self.error(node.keys[key], f"{what}: unknown queue {key!r}"
                                           f"{did_you_mean(key, [*self.queue_ids, 'default'])}")
                continue
            distribution = self.distribution(dist_node, f"{section} distribution {key!r}")
            if distribution is not None:
                result[key] = distribution
        missing = [queue for queue in self.queue_ids if queue not in entries]
        if node is not None and "default" not in entries and missing:
            self.error(node, f"{what}: needs a 'default' entry or one for every queue "
                             f"(missing: {', '.join(missing)})")
        return result

    def distribution(self, node: Node, owner: str) -> Distribution | None:
        f = self.fields(node, owner, DISTRIBUTION_KEYS, required=("dist", "mean_s"))
        if f is None:
            return None
        kind = mean = None
        if "dist" in f:
            kind = self.choice(f["dist"], f"'dist' of {owner}", DISTRIBUTIONS, "distribution")
        if "mean_s" in f:
            mean = self.number(f["mean_s"], f"'mean_s' of {owner}", lo=0, lo_open=True)
        sd = 0.0
        if kind == "lognormal" and "sd_s" not in f:
            self.error(node, f"missing required key 'sd_s' in {owner} (dist: lognormal)")
        elif kind == "lognormal":
            sd = self.number(f["sd_s"], f"'sd_s' of {owner}", lo=0, lo_open=True)
        elif kind is not None and "sd_s" in f:
            self.error(node.keys["sd_s"], f"'sd_s' of {owner}: not used with dist: {kind}")
        if kind is None or mean is None or sd is None:
            return None
        return Distribution(kind, mean, sd)

    def shifts(self, node: Node | None) -> list[Shift]:
        shifts = []
        for index, item in enumerate(self.items(node, "'shifts' of section 'simulation'")):
            shift = self.shift(item, f"shift #{index + 1}")
            if shift is not None:
                shifts.append(shift)
        return shifts

    def shift(self, node: Node, owner: str) -> Shift | None:
        f = self.fields(node, owner, SHIFT_KEYS, required=("start", "end"))
        if f is None:
            return None
        agents: list[str] = []
        if ("agents" in f) == ("team" in f):
            self.error(node, f"{owner}: expected either 'agents' (a list of agent ids) or 'team', not "
                             f"{'both' if 'team' in f else 'neither'}")
        elif "agents" in f:
            for item in self.items(f["agents"], f"'agents' of {owner}"):
                agent = self.reference(item, f"'agents' of {owner}", self.agent_ids, "agent")
                if agent is not None:
                    agents.append(agent)
            if not f["agents"].value:
                self.error(f["agents"], f"'agents' of {owner}: expected at least one agent")
        else:
            team = self.reference(f["team"], f"'team' of {owner}", self.teams, "team")
            agents = list(self.teams.get(team, ())) if team is not None else []
        start = self.clock(f["start"], f"'start' of {owner}") if "start" in f else None
        end = self.clock(f["end"], f"'end' of {owner}") if "end" in f else None
        if start is not None and start == end:
            self.error(f["end"], f"'end' of {owner}: a shift must not end when it starts")
        breaks = []
        for index, item in enumerate(self.items(f.get("breaks"), f"'breaks' of {owner}")):
            pause = self.pause(item, f"break #{index + 1} of {owner}", start, end)
            if pause is not None:
                breaks.append(pause)
        if start is None or end is None or not agents:
            return None
        return Shift(tuple(agents), start, end, tuple(breaks))

    def pause(self, node: Node, owner: str, start: time | None, end: time | None) -> Break | None:
        f = self.fields(node, owner, BREAK_KEYS, required=("at", "minutes"))
        if f is None or "at" not in f or "minutes" not in f:
            return None
        at = self.clock(f["at"], f"'at' of {owner}")
        minutes = self.number(f["minutes"], f"'minutes' of {owner}", lo=0, lo_open=True)
        if at is None or minutes is None:
            return None
        if start is not None and end is not None:
            begin, finish, offset = _minutes(start), _minutes(end), _minutes(at)
            finish += 1440 if finish <= begin else 0      # a night shift ends the next day
            offset += 1440 if offset < begin else 0
            if offset + minutes > finish:
                self.error(f["at"], f"{owner}: the break at {at:%H:%M} for {_fmt(minutes)} min is outside "
                                    f"the shift {start:%H:%M}-{end:%H:%M}")
                return None
        return Break(at, minutes)
