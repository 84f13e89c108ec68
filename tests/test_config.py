"""Config loading: the sample centre, every field type end to end, and one broken
file per class of mistake (tests/config_cases/*.yaml, whose `# expect:` header
lines are the exact problems the loader must print, in order)."""
from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime, time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import yamlsrc
from router.config import ConfigError, check_config, default_config_path, load_config, parse_config
from router.config.loader import SAMPLE_PATH
from router.config.model import (STRATEGIES, Agent, AgiSettings, AmiSettings, Break, CallbackPolicy, DatabaseSettings,
                                 Distribution, HaSettings, OverflowStep, Queue, Schedule, Shift, Skill)
from router.ha import Leadership

CASES = Path(__file__).parent / "config_cases"
MINIMAL = """\
skills:
  - {id: en, name: English, kind: language}
agents:
  - {id: a001, endpoint: PJSIP/1001, skills: {en: 8}}
queues:
  - {id: billing, skills: {en: 5}}
"""


def problem_lines(path: Path, **env: str) -> list[str]:
    _, problems = check_config(path, environ=env)
    return [str(problem) for problem in problems]


# ---- the sample centre ---------------------------------------------------------------------------

def test_sample_loads_without_errors_or_warnings():
    centre, problems = check_config(SAMPLE_PATH, environ={})
    assert [str(p) for p in problems] == []
    assert centre is not None and centre.source == str(SAMPLE_PATH)


def test_sample_is_a_realistic_centre():
    centre = load_config(SAMPLE_PATH, environ={})
    assert len(centre.agents) == 48 and len(centre.queues) >= 4 and len(centre.skills) >= 6
    assert {"en", "es"} <= {s.id for s in centre.skills.values() if s.kind == "language"}
    assert 3 <= len({a.team for a in centre.agents.values()}) <= 4
    assert any(s.holidays for s in centre.schedules.values())
    assert len({q.strategy for q in centre.queues.values()}) >= 3
    assert centre.ami is None                       # the sample runs against the simulated PBX
    sim = centre.simulation
    assert sim is not None and sim.start == datetime(2026, 11, 23, 8, 0) and sim.interval_minutes == 30
    assert all(len(profile) == 16 for profile in sim.arrivals.values())
    assert set(sim.arrivals) == set(centre.queues)
    assert 1000 <= sum(sum(profile) for profile in sim.arrivals.values()) <= 1400
    assert all(180 <= d.mean_s <= 360 and d.kind == "lognormal" for d in sim.handle_time.values())
    assert all(s.breaks for s in sim.shifts)
    assert {a for s in sim.shifts for a in s.agents} == set(centre.agents)
    kinds = [(step.when, step.action, bool(step.relax), bool(step.add_skills), step.copy_to is not None)
             for queue in centre.queues.values() for step in queue.overflow]
    assert any(relax for _, _, relax, _, _ in kinds) and any(add for *_, add, _ in kinds)
    assert any(copy for *_, copy in kinds) and ("max_wait", "voicemail", False, False, False) in kinds


def test_default_config_path_prefers_router_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == SAMPLE_PATH
    assert load_config(environ={}).source == str(SAMPLE_PATH)
    (tmp_path / "router.yaml").write_text(MINIMAL)
    assert default_config_path() == Path("router.yaml")
    assert list(load_config(environ={}).queues) == ["billing"]


# ---- every field, end to end ---------------------------------------------------------------------

FULL = """\
skills:
  - {id: en, name: English, kind: language}
  - {id: billing, name: Billing}
  - {id: general, name: General}
agents:
  - {id: a001, name: Ann Lee, endpoint: PJSIP/1001, team: red, skills: {en: 8, billing: 6}}
  - {id: 1002, endpoint: Local/1002@agents, team: red, skills: {en: 7, general: 5}}
  - {id: a003, name: Cy, endpoint: PJSIP/1003}
queues:
  - id: billing
    name: Billing
    skills: {billing: 3, en: 5}
    strategy: most-skilled
    priority: 2
    weight: 1.5
    service_level: {target: 0.9, within_s: 15}
    wrap_up_s: 0
    ring_timeout_s: 12.5
    rona_pause: false
    aht_estimate_s: 240
    schedule: office
    overflow:
      - {after_s: 0, relax: {billing: 2}}
      - {after_s: 30, relax: {billing: 1, en: 4}}
      - {after_s: 60, add_skills: {general: 5}}
      - {after_s: 90, copy_to: general}
      - {after_s: 120, move_to: general}
      - {when: max_wait, value: 600, action: voicemail}
      - {when: no_agents, action: transfer, target: "+442071234567"}
      - {when: queue_length, value: 30, action: callback}
      - {when: ewt, value: 300, action: hangup, message: closed-busy}
  - {id: general, skills: {}}
schedules:
  - id: office
    timezone: Europe/London
    hours: {mon: ["08:00-12:00", "13:00-20:00"], sat: "09:00-13:00", sun: [], fri: ["00:00-24:00"]}
    holidays: [2026-12-25, "2026-12-26"]
database: {dsn: "postgresql://db.example/acd", data_dir: /var/lib/acd}
ami: {host: pbx.example, port: 5039, username: router, secret: "${TEST_AMI_SECRET}"}
agi: {host: 0.0.0.0, port: 4574}
flows: ivr_flows
short_abandon_s: 3
simulation:
  start: 2026-11-23T08:00:00
  interval_minutes: 15
  arrivals:
    billing: [20, 35.5, 0]
    general: [1, 2, 3]
  handle_time:
    default: {dist: lognormal, mean_s: 240, sd_s: 120}
    general: {dist: fixed, mean_s: 60}
  patience:
    default: {dist: exponential, mean_s: 150}
  shifts:
    - {team: red, start: 08:00, end: "16:00", breaks: [{at: "10:00", minutes: 15}, {at: 12:00, minutes: 30}]}
    - {agents: [a003], start: "22:00", end: "06:00", breaks: [{at: "02:00", minutes: 20}]}
  answer_delay_s: 2
  no_answer_rate: 0.05
  callback_acceptance: 1
"""


def test_every_field_round_trips():
    centre = parse_config(FULL, "full.yaml", environ={"TEST_AMI_SECRET": "s3cret"})
    assert centre.source == "full.yaml"
    assert centre.skills["en"] == Skill("en", "English", "language")
    assert centre.skills["billing"] == Skill("billing", "Billing", "skill")
    assert centre.agents["a001"] == Agent("a001", "Ann Lee", "PJSIP/1001", {"en": 8, "billing": 6}, "red")
    assert centre.agents["1002"] == Agent("1002", "1002", "Local/1002@agents", {"en": 7, "general": 5}, "red")
    assert centre.agents["a003"] == Agent("a003", "Cy", "PJSIP/1003", {}, None)
    assert centre.queues["billing"] == Queue(
        "billing", "Billing", {"billing": 3, "en": 5}, strategy="most-skilled", priority=2, weight=1.5,
        sl_target=0.9, sl_threshold_s=15.0, wrap_up_s=0.0, ring_timeout_s=12.5, rona_pause=False,
        aht_estimate_s=240.0, schedule="office", overflow=(
            OverflowStep(after_s=0.0, relax={"billing": 2}),
            OverflowStep(after_s=30.0, relax={"billing": 1, "en": 4}),
            OverflowStep(after_s=60.0, add_skills={"general": 5}),
            OverflowStep(after_s=90.0, copy_to="general"),
            OverflowStep(after_s=120.0, move_to="general"),
            OverflowStep(when="max_wait", value=600.0, action="voicemail"),
            OverflowStep(when="no_agents", action="transfer", target="+442071234567"),
            OverflowStep(when="queue_length", value=30, action="callback"),
            OverflowStep(when="ewt", value=300.0, action="hangup", message="closed-busy"),
        ), callback=CallbackPolicy())                     # a callback step brings the default policy
    assert centre.queues["general"] == Queue("general", "general", {})
    assert centre.schedules["office"] == Schedule(
        "office", "Europe/London",
        {"mon": ((time(8), time(12)), (time(13), time(20))), "sat": ((time(9), time(13)),), "sun": (),
         "fri": ((time(0), time.max),)},
        (date(2026, 12, 25), date(2026, 12, 26)))
    assert centre.database == DatabaseSettings("postgresql://db.example/acd", "/var/lib/acd")
    assert centre.ami == AmiSettings("pbx.example", 5039, "router", "s3cret")
    assert centre.agi == AgiSettings("0.0.0.0", 4574)
    assert centre.flows == "ivr_flows" and centre.short_abandon_s == 3.0
    sim = centre.simulation
    assert sim.start == datetime(2026, 11, 23, 8, 0) and sim.interval_minutes == 15
    assert sim.arrivals == {"billing": (20.0, 35.5, 0.0), "general": (1.0, 2.0, 3.0)}
    assert sim.handle_time == {"default": Distribution("lognormal", 240.0, 120.0),
                               "general": Distribution("fixed", 60.0)}
    assert sim.patience == {"default": Distribution("exponential", 150.0)}
    assert sim.shifts == (
        Shift(("a001", "1002"), time(8), time(16), (Break(time(10), 15.0), Break(time(12), 30.0))),
        Shift(("a003",), time(22), time(6), (Break(time(2), 20.0),)),
    )
    assert (sim.answer_delay_s, sim.no_answer_rate, sim.callback_acceptance) == (2.0, 0.05, 1.0)
    assert all(dataclasses.is_dataclass(v) for v in (centre, sim, centre.ami))


def test_defaults_come_from_the_model():
    centre = parse_config(MINIMAL, environ={})
    assert centre.queues["billing"] == Queue("billing", "billing", {"en": 5})
    assert centre.skills["en"].kind == "language" and centre.agents["a001"].name == "a001"
    assert centre.database == DatabaseSettings() and centre.ami is None and centre.agi == AgiSettings()
    assert centre.simulation is None and centre.schedules == {} and centre.flows is None
    assert centre.ha == HaSettings() == HaSettings("acd-router", 0.5, 0.5, 1.0, 3.0)


def test_the_centre_time_zone_is_utc_unless_named_and_a_wrong_name_is_an_error_with_a_hint():
    assert parse_config(MINIMAL, environ={}).timezone == "UTC"
    assert parse_config("timezone: Asia/Kolkata\n" + MINIMAL, environ={}).timezone == "Asia/Kolkata"
    with pytest.raises(ConfigError) as caught:
        parse_config("timezone: Europe/Londn\n" + MINIMAL, "c.yaml", environ={})
    assert str(caught.value).splitlines() == [
        "c.yaml:1:11: error: 'timezone': unknown time zone 'Europe/Londn'; did you mean 'Europe/London'?"]


def test_every_strategy_is_accepted():
    for strategy in STRATEGIES:
        text = MINIMAL.replace("{id: billing, skills: {en: 5}}", f"{{id: billing, strategy: {strategy}}}")
        assert parse_config(text, environ={}).queues["billing"].strategy == strategy


# ---- ha: the active/standby group ---------------------------------------------------------------

def test_ha_section_is_read_into_ha_settings():
    text = MINIMAL + ("ha:\n  group: centre-2.prod_b\n  retry_s: 1\n  check_interval_s: 0.25\n"
                      "  check_timeout_s: 0.75\n  server_idle_timeout_s: 5\n")
    ha = parse_config(text, environ={}).ha
    assert ha == HaSettings(group="centre-2.prod_b", retry_s=1.0, check_interval_s=0.25, check_timeout_s=0.75,
                            server_idle_timeout_s=5.0)
    assert all(isinstance(getattr(ha, key), float) for key in ("retry_s", "check_interval_s", "check_timeout_s",
                                                               "server_idle_timeout_s"))
    partial = parse_config(MINIMAL + "ha: {group: 2, server_idle_timeout_s: 10}\n", environ={}).ha
    assert partial == HaSettings(group="2", server_idle_timeout_s=10.0)       # a number is its text
    assert parse_config(MINIMAL + "ha: {group: " + "g" * 63 + "}\n", environ={}).ha.group == "g" * 63


@pytest.mark.parametrize("section", ["", "ha:\n", "ha: {}\n", "ha: ~\n"])
def test_ha_defaults_when_absent_empty_or_null(section):
    assert parse_config(MINIMAL + section, environ={}).ha == HaSettings()


@pytest.mark.parametrize("section, problems", [
    ("ha: {group: " + "g" * 64 + "}", ["7:13: error: 'group' of section 'ha': expected a name of at most 63 letters, "
                                       "digits, '-', '_' or '.', got string '" + "g" * 37 + "...'"]),
    ("ha: {group: ''}", ["7:13: error: 'group' of section 'ha': must not be empty"]),
    ('ha: {group: "abc\\n"}', ["7:13: error: 'group' of section 'ha': expected a name of at most 63 letters, "
                              "digits, '-', '_' or '.', got string 'abc\\n'"]),
    ("ha: {group: [a]}", ["7:13: error: 'group' of section 'ha': expected a string, got a list"]),
    ("ha: {check_timeout_s: -1}", ["7:23: error: 'check_timeout_s' of section 'ha': "
                                   "expected a number greater than 0, got -1"]),
    ("ha: {retry_s: yes}", ["7:15: error: 'retry_s' of section 'ha': expected a number greater than 0, "
                            "got boolean true"]),
    ("ha: [1]", ["7:5: error: section 'ha': expected a mapping, got a list"]),
    # the lease (interval + timeout) must end before the server frees the lock: equal is too late
    ("ha: {check_interval_s: 1, check_timeout_s: 1, server_idle_timeout_s: 2}",
     ["7:70: error: 'server_idle_timeout_s' of section 'ha': 'check_interval_s' + 'check_timeout_s' (1 + 1) must be "
      "less than 'server_idle_timeout_s' (2): a leader cut off from the database must fence itself before the "
      "server frees its lock"]),
    # server_idle_timeout_s left at its default: reported at the section
    ("ha:\n  group: g\n  check_interval_s: 2.5", [
        "7:1: error: section 'ha': 'check_interval_s' + 'check_timeout_s' (2.5 + 1) must be less than "
        "'server_idle_timeout_s' (3, the default): a leader cut off from the database must fence itself before the "
        "server frees its lock"]),
    ("ha: {retry_s: 3}", ["7:1: error: section 'ha': 'retry_s' (3) must be less than 'server_idle_timeout_s' "
                          "(3, the default): the server would end a waiting standby's session between two tries"]),
    ("ha: {retry_s: 2, server_idle_timeout_s: 1.5}", [
        "7:41: error: 'server_idle_timeout_s' of section 'ha': 'check_interval_s' + 'check_timeout_s' (0.5 + 1) "
        "must be less than 'server_idle_timeout_s' (1.5): a leader cut off from the database must fence itself "
        "before the server frees its lock",
        "7:41: error: 'server_idle_timeout_s' of section 'ha': 'retry_s' (2) must be less than "
        "'server_idle_timeout_s' (1.5): the server would end a waiting standby's session between two tries"]),
    # a broken timing is reported once, without follow-on comparisons
    ("ha: {check_timeout_s: x, server_idle_timeout_s: 0.75}", [
        "7:23: error: 'check_timeout_s' of section 'ha': expected a number greater than 0, got string 'x'"]),
    ("ha: {retry_s: 9, server_idle_timeout_s: 0}", [
        "7:41: error: 'server_idle_timeout_s' of section 'ha': expected a number greater than 0, got 0"]),
    ("ha: {groups: x}", ["7:6: error: unknown key 'groups' in section 'ha'; did you mean 'group'?"]),
])
def test_ha_mistakes_are_reported_where_they_are(section, problems):
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + section + "\n", "c.yaml", environ={})
    assert str(caught.value).splitlines() == [f"c.yaml:{line}" for line in problems]


_TIMING = st.sampled_from([0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 6])


@settings(max_examples=150, deadline=None)
@given(retry=_TIMING, interval=_TIMING, timeout=_TIMING, idle=_TIMING)
def test_ha_loader_accepts_exactly_what_leadership_accepts(retry, interval, timeout, idle):
    """Whatever the config lets through, `router.ha.Leadership` starts with; whatever it refuses would
    have made `serve` fail at start instead of at `check`."""
    text = MINIMAL + (f"ha: {{retry_s: {retry}, check_interval_s: {interval}, check_timeout_s: {timeout}, "
                      f"server_idle_timeout_s: {idle}}}\n")
    try:
        ha = parse_config(text, environ={}).ha
    except ConfigError:
        ha = None
    try:
        Leadership("postgresql://db.example/acd", group="g", retry_s=retry, check_interval_s=interval,
                   check_timeout_s=timeout, server_idle_timeout_s=idle)
        accepted = True
    except ValueError:
        accepted = False
    assert (ha is not None) == accepted
    if ha is not None:
        assert (ha.retry_s, ha.check_interval_s, ha.check_timeout_s, ha.server_idle_timeout_s) == (
            retry, interval, timeout, idle)


# ---- environment ---------------------------------------------------------------------------------

def test_database_url_from_environment_wins():
    text = MINIMAL + "database: {dsn: postgresql://file/db}\n"
    assert parse_config(text, environ={}).database.dsn == "postgresql://file/db"
    env = {"ACD_DATABASE_URL": "postgresql://env/db"}
    assert parse_config(text, environ=env).database.dsn == "postgresql://env/db"
    assert parse_config(MINIMAL, environ=env).database.dsn == "postgresql://env/db"


def test_secret_is_read_from_environment_and_never_echoed():
    text = MINIMAL + 'ami: {secret: "${ACD_AMI_SECRET}"}\n'
    assert parse_config(text, environ={"ACD_AMI_SECRET": "hunter2"}).ami.secret == "hunter2"
    assert "hunter2" not in repr(parse_config(text, environ={"ACD_AMI_SECRET": "hunter2"}))
    with pytest.raises(ConfigError) as unset:
        parse_config(text, "c.yaml", environ={})
    assert str(unset.value) == ("c.yaml:7:15: error: 'secret' of section 'ami': "
                                "environment variable 'ACD_AMI_SECRET' is not set")
    with pytest.raises(ConfigError) as wrong_type:
        parse_config(MINIMAL + "ami: {secret: [987654321]}\n", environ={})
    assert "987654321" not in str(wrong_type.value) and "expected a string" in str(wrong_type.value)


# ---- broken files --------------------------------------------------------------------------------

CASE_FILES = sorted(CASES.glob("*.yaml"))


def test_there_is_a_case_per_mistake_class():
    names = {path.stem for path in CASE_FILES}
    assert {"unknown_key", "typo_strategy", "wrong_type", "bool_as_int", "out_of_range", "duplicate_id",
            "unknown_skill_ref", "unknown_queue_in_overflow", "unknown_schedule", "bad_time", "bad_timezone",
            "overlapping_hours", "alias_bomb", "deep_nesting", "duplicate_key", "syntax_error",
            "several_errors", "bad_web", "bad_ha"} <= names


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_broken_config_reports_exactly_the_expected_problems(path: Path):
    expected = [f"{path}:{line.removeprefix('# expect: ').rstrip()}"
                for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# expect: ")]
    assert expected, f"{path.name} has no '# expect:' header"
    assert problem_lines(path) == expected
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert str(raised.value) == "\n".join(expected)
    assert all(problem.severity in ("error", "warning") for problem in raised.value.problems)


def test_several_errors_are_all_reported():
    lines = problem_lines(CASES / "several_errors.yaml")
    assert sum(": error: " in line for line in lines) >= 15
    assert lines == sorted(lines, key=lambda line: tuple(int(n) for n in line.split(":")[1:3]))


def test_warnings_alone_do_not_raise(tmp_path):
    path = tmp_path / "warn.yaml"
    path.write_text(MINIMAL.replace("{id: billing, skills: {en: 5}}", "{id: billing, skills: {en: 9}}"))
    centre, problems = check_config(path, environ={})
    assert centre is not None and centre.queues["billing"].skills == {"en": 9}
    assert [str(p) for p in problems] == [
        f"{path}:6:10: warning: no agent has the skills queue 'billing' requires"]
    assert load_config(path, environ={}).queues["billing"].skills == {"en": 9}


def test_binary_junk_is_rejected(tmp_path):
    path = tmp_path / "junk.yaml"
    path.write_bytes(b"skills: []\nagents: \x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert problem_lines(path) == [f"{path}:2:9: error: file is not UTF-8 text (byte 0x89)"]
    path.write_bytes(b"skills: []\nagents: []\x00\x01\x02")
    assert problem_lines(path) == [f"{path}:2:11: error: file is not text: control character U+0000"]


def test_huge_file_is_rejected_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(MINIMAL + "# padding\n" * (yamlsrc.MAX_BYTES // 10 + 1))
    assert problem_lines(path) == [f"{path}:1:1: error: file is larger than 2 MB"]


def test_missing_file_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "absent.yaml"
    assert problem_lines(path) == [f"{path}:1:1: error: cannot read file: No such file or directory"]


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError) as listed:
        parse_config("- 1\n- 2\n", "c.yaml", environ={})
    assert str(listed.value) == "c.yaml:1:1: error: expected a mapping at the top level, got a list"
    with pytest.raises(ConfigError) as empty:
        parse_config("flows: x\n", "c.yaml", environ={})
    assert str(empty.value).splitlines() == [f"c.yaml:1:1: error: missing required key {key!r} in the config"
                                             for key in ("skills", "agents", "queues")]


def test_exponential_alias_bomb_finishes_fast():
    bomb = "a: &a [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(20))
    with pytest.raises(ConfigError, match="anchors and aliases are not supported"):
        parse_config(bomb, environ={})


def test_unquoted_times_of_day_are_read_as_written():
    text = MINIMAL + ("simulation:\n  start: 2026-11-23T08:00:00\n  arrivals: {billing: [1]}\n"
                      "  handle_time: {default: {dist: exponential, mean_s: 200}}\n"
                      "  patience: {default: {dist: exponential, mean_s: 100}}\n"
                      "  shifts: [{agents: [a001], start: 10:30, end: 18:00}]\n")
    shift = parse_config(text, environ={}).simulation.shifts[0]
    assert (shift.start, shift.end) == (time(10, 30), time(18, 0))


# ---- the YAML reader on its own ------------------------------------------------------------------

def test_nodes_keep_positions_of_keys_values_and_items():
    problems = yamlsrc.ProblemList()
    text = "a: 1\nb:\n  - x\n  - {c: [10:00, '10:00', 2026-12-25, ~, yes]}\n"
    root = yamlsrc.load(text, "f.yaml", problems)
    assert len(problems) == 0
    assert root.keys["b"] == yamlsrc.Mark(2, 1) and root.value["a"].mark == yamlsrc.Mark(1, 4)
    items = root.value["b"].value
    assert [item.mark for item in items] == [yamlsrc.Mark(3, 5), yamlsrc.Mark(4, 5)]
    inner = items[1].value["c"]
    assert inner.to_python() == [600, "10:00", date(2026, 12, 25), None, True]
    assert [item.text for item in inner.value] == ["10:00", "10:00", "2026-12-25", "~", "yes"]
    assert root.to_python() == {"a": 1, "b": ["x", {"c": [600, "10:00", date(2026, 12, 25), None, True]}]}


@pytest.mark.parametrize("text, line, col, message", [
    ("a: !!python/object:os.system {}\n", 1, 4,
     "tag 'tag:yaml.org,2002:python/object:os.system' is not supported"),
    ("a: 1\n---\nb: 2\n", 2, 1, "only one YAML document per file is supported"),
    ("<<: {a: 1}\n", 1, 1, "merge keys (<<) are not supported"),
    ("? [1]\n: 2\n", 1, 3, "mapping keys must be plain text, not lists or mappings"),
    ("a: " + "9" * 5000 + "\n", 1, 4, "invalid int value '99999999999999999...'"),
    ("", 1, 1, "expected a mapping at the top level, got an empty file"),
    ("a: [" * 30 + "]" * 30 + "\n", 1, 101, "nesting deeper than 50 levels"),
])
def test_hostile_yaml_gives_one_clear_problem(text, line, col, message):
    problems = yamlsrc.ProblemList()
    assert yamlsrc.load(text, "f.yaml", problems) is None
    assert [str(p) for p in problems] == [f"f.yaml:{line}:{col}: error: {message}"]


@pytest.mark.parametrize("text, line, col", [
    ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", 1, 53),                       # libyaml stops at 1000 itself
    ("".join(" " * i + f"k{i}:\n" for i in range(1200)) + " " * 1200 + "x: 1\n", 51, 51),
    ("a:\n" + "- " * 1200 + "x\n", 2, 99),
    ("a: [" * 1200 + "]" * 1200 + "\n", 1, 101),                                # `[a: [` adds two levels
    ("a: " + "{b: " * 1200 + "1" + "}" * 1200 + "\n", 1, 200),
])
def test_nesting_past_the_parsers_own_limits_gets_our_message_at_our_position(text, line, col):
    problems = yamlsrc.ProblemList()
    assert yamlsrc.load(text, "f.yaml", problems) is None
    assert [str(p) for p in problems] == [f"f.yaml:{line}:{col}: error: nesting deeper than 50 levels"]


_SCALARS = ["x", "'q, [x]'", '"a # b [c"', "1", "it's", "'it''s'", '"\\"["', "http://h/p"]


def _flow_text(rng, depth: int) -> str:
    roll = rng.random()
    if depth <= 0 or roll < 0.2:
        return rng.choice(_SCALARS)
    if roll < 0.6:
        return "[" + ", ".join(f"k: {_flow_text(rng, depth - 1)}" if rng.random() < 0.4 else _flow_text(rng, depth - 1)
                               for _ in range(rng.choice([1, 1, 2]))) + "]"
    return "{" + ", ".join(f"k{i}: {_flow_text(rng, depth - 1)}" for i in range(rng.choice([1, 1, 2]))) + "}"


def _block_lines(rng, depth: int, indent: int) -> list[str]:
    pad, lines = " " * indent, []
    for i in range(rng.choice([1, 1, 2])):
        roll = rng.random()
        mapping = indent % 2 == 0 or depth % 3 == 0
        lead = f"{pad}k{i}:" if mapping else f"{pad}-"
        if depth <= 0 or roll < 0.3:
            lines.append(f"{lead} {_flow_text(rng, min(depth, 60))}  # note")
        elif roll < 0.4:
            lines += [f"{lead} |", f"{pad}  [[[ text", f"{pad}  - not: a list"]
        elif roll < 0.55 and not mapping:
            inner = _block_lines(rng, depth - 1, indent + 2)
            lines += [f"{lead} {inner[0].lstrip(' ')}", *inner[1:]]
        else:
            lines += [lead, *_block_lines(rng, depth - 1, indent + rng.choice([1, 2]))]
    return lines


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(20, 70))
def test_the_nesting_prescan_agrees_with_the_composer(rng, depth):
    """Our pre-scan (before the parser) and the composer's exact count (after it) refuse the same
    documents at the same place, whatever mix of block, flow, quotes, comments and block scalars."""
    text = "root:\n" + "\n".join(_block_lines(rng, depth, 2)) + "\n"
    try:
        yamlsrc._Composer("f.yaml", yamlsrc.ProblemList()).compose(text)
        exact = None
    except yamlsrc._Fatal as fatal:
        exact = fatal.mark if "nesting" in fatal.message else "other"
    if exact == "other":
        return                                   # not valid YAML: the parser's syntax error comes first
    try:
        yamlsrc._check_nesting(text)
        prescan = None
    except yamlsrc._Fatal as fatal:
        prescan = fatal.mark
    assert prescan == exact


def test_problem_prints_gcc_style_and_sorts_by_position():
    problems = yamlsrc.ProblemList()
    problems.warning("f.yaml", yamlsrc.Mark(9, 1), "later")
    problems.error("f.yaml", yamlsrc.Mark(2, 7), "earlier")
    assert [str(p) for p in problems] == ["f.yaml:2:7: error: earlier", "f.yaml:9:1: warning: later"]
    assert [p.message for p in problems.errors] == ["earlier"]
    assert [p.message for p in problems.warnings] == ["later"]


def test_did_you_mean():
    assert yamlsrc.did_you_mean("stratgy", ["strategy", "priority"]) == "; did you mean 'strategy'?"
    assert yamlsrc.did_you_mean("zzz", ["strategy", "priority"]) == ""


# ---- robustness ----------------------------------------------------------------------------------

SAMPLE_TEXT = SAMPLE_PATH.read_text(encoding="utf-8")
PROBLEM_LINE = re.compile(r"^m\.yaml:\d+:\d+: (error|warning): \S.*$")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(SAMPLE_TEXT)), st.integers(0, 8),
                                st.sampled_from(["", "x", "-", ":", " ", "\n", "[", "{", "'", "1", "yes",
                                                 "  - ", "id: a001", "&a ", "*a"])),
                      min_size=1, max_size=4))
def test_mangled_sample_gives_a_centre_or_problem_lines(edits):
    text = SAMPLE_TEXT
    for position, length, insert in edits:
        text = text[:position] + insert + text[position + length:]
    try:
        parse_config(text, "m.yaml", environ={})
    except ConfigError as error:
        assert error.problems and all(PROBLEM_LINE.match(line) for line in str(error).splitlines())
