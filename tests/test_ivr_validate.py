"""Flow validation: the samples, one broken file per mistake class (tests/flow_cases, whose
`# expect:` header lines are the exact problems in order), hostile input, the JSON Schema,
graphs and the `flows` commands."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.config import load_config
from router.ivr import check_flows, check_sources, render
from router.ivr.schema import NODE_TYPES, json_schema, json_schema_text
from router.yamlsrc import ProblemList

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).parent / "flow_cases"
SAMPLES = ROOT / "ivr_flows"
CENTRE = load_config(None)
REFERENCES = {"known_queues": CENTRE.queues, "schedules": CENTRE.schedules, "known_skills": CENTRE.skills}


def problem_lines(path: Path) -> list[str]:
    _, problems = check_flows(path, **REFERENCES)
    return [str(problem) for problem in problems]


def test_samples_are_valid_without_warnings():
    flowset, problems = check_flows(SAMPLES, **REFERENCES)
    assert [str(p) for p in problems] == []
    assert set(flowset.flows) == {"main", "account", "survey", "callback_offer"}
    assert flowset.languages == ("en", "es")


@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_broken_flow_reports_exactly_the_expected_problems(path: Path):
    expected = [f"{path}:{line.removeprefix('# expect: ').rstrip()}"
                for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# expect: ")]
    assert expected, f"{path.name} has no '# expect:' header"
    assert problem_lines(path) == expected


def test_the_corpus_covers_every_mistake_class():
    names = {path.stem for path in CASES.glob("*.yaml")}
    assert {"unknown_key", "wrong_type", "unknown_node", "unknown_queue", "unknown_schedule", "unknown_prompt",
            "unknown_subflow", "variable_never_set", "unreachable_node", "loop_without_input",
            "menu_without_fallback", "expression_syntax", "expression_type", "alias_bomb", "deep_nesting",
            "duplicate_key", "syntax_error"} <= names


def check(text: str | bytes, name: str = "f.yaml") -> list[str]:
    problems = ProblemList()
    check_sources([(name, text)], problems, **REFERENCES)
    return [str(problem) for problem in problems]


def test_hostile_inputs_get_one_clear_error(tmp_path: Path):
    bomb = "flow: x\na: &a [" + ",".join(["lol"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    assert check(bomb) == ["f.yaml:2:4: error: anchors and aliases are not supported"]
    assert check("flow: x\nnodes: " + "[" * 10_000 + "]" * 10_000) == [
        "f.yaml:2:57: error: nesting deeper than 50 levels"]
    assert check(b"flow: x\n\x00\xff\xfe binary") == ["f.yaml:2:2: error: file is not UTF-8 text (byte 0xff)"]
    assert "f.yaml:2:1: error: duplicate key 'flow' (first at line 1)" in check(
        "flow: a\nflow: b\nstart: s\nnodes: {s: {type: return}}\n")
    huge = tmp_path / "huge.yaml"
    with open(huge, "w") as stream:
        stream.write("flow: huge\nstart: n0\nnodes:\n")
        for index in range(60_000):
            stream.write(f"  n{index}: {{type: play, prompts: p, next: n{index + 1}}}\n")
    assert problem_lines(huge) == [f"{huge}:1:1: error: file is larger than 2 MB"]


def test_a_file_without_a_flow_or_prompts_says_what_it_needs():
    assert check("description: nothing\n") == [
        "f.yaml:1:1: error: a flow file needs 'flow', 'start' and 'nodes' (or 'prompts' for a prompt catalogue)"]


def test_subflow_references_resolve_across_files(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("prompts: {p: P}\nflow: a\nstart: s\nnodes:\n"
                                     "  s: {type: subflow, flow: b, next: e}\n  e: {type: hangup}\n")
    (tmp_path / "b.yaml").write_text("flow: b\nstart: r\nnodes:\n  r: {type: return}\n")
    (tmp_path / "a.test.yaml").write_text("not: a flow\n")
    flowset, problems = check_flows(tmp_path, **REFERENCES)
    assert list(problems) == [] and set(flowset.flows) == {"a", "b"}
    (tmp_path / "b.yaml").write_text("flow: b\nstart: r\nnodes:\n  r: {type: subflow, flow: a, next: x}\n"
                                     "  x: {type: return}\n")
    assert problem_lines(tmp_path) == [
        f"{tmp_path}/a.yaml:5:3: error: subflow node 's': flows call each other in a circle (a -> b -> a); "
        f"use 'goto' to jump instead",
        f"{tmp_path}/b.yaml:4:3: error: subflow node 'r': flows call each other in a circle (b -> a -> b); "
        f"use 'goto' to jump instead"]


def test_committed_json_schema_is_the_generated_one():
    assert (ROOT / "docs" / "flow.schema.json").read_text(encoding="utf-8") == json_schema_text()
    schema = json_schema()
    node_rules = schema["properties"]["nodes"]["additionalProperties"]["allOf"]
    assert [rule["if"]["properties"]["type"]["const"] for rule in node_rules] == list(NODE_TYPES)
    menu = node_rules[list(NODE_TYPES).index("menu")]["then"]
    assert menu["required"] == ["type", "prompt", "options"] and "fallback" in menu["properties"]


def test_sample_flows_declare_the_schema_for_editors():
    for path in SAMPLES.glob("*.yaml"):
        if not path.name.endswith(".test.yaml"):
            assert path.read_text().startswith("# yaml-language-server: $schema=../docs/flow.schema.json")


def test_graphs_in_mermaid_and_dot():
    flowset, _ = check_flows(SAMPLES, **REFERENCES)
    mermaid = render(flowset.flows["main"], "mermaid")
    assert mermaid.splitlines()[1] == "flowchart TD"
    assert '-->|"key 1"|' in mermaid and '-->|"50%"|' in mermaid and "start((start))" in mermaid
    dot = render(flowset.flows["account"], "dot")
    assert dot.startswith('digraph "account" {') and dot.rstrip().endswith("}")
    assert '"ask_account" -> "skipped" [label="fallback"];' in dot
    with pytest.raises(ValueError, match="unknown graph format"):
        render(flowset.flows["main"], "svg")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_cli_validate_and_test_pass_on_the_samples():
    validated = run_cli("flows", "validate", "ivr_flows")
    assert validated.returncode == 0, validated.stderr
    tested = run_cli("flows", "test", "ivr_flows")
    assert tested.returncode == 0, tested.stderr
    assert "0 failed" in tested.stderr


def test_cli_reports_every_problem_and_exits_1():
    result = run_cli("flows", "validate", str(CASES / "expression_type.yaml"), str(CASES / "unknown_queue.yaml"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert sum(": error: " in line for line in lines) == 5
    assert f"{CASES / 'unknown_queue.yaml'}:8:12: error: 'queue' of queue node 'billing': unknown queue " \
           f"'biling'; did you mean 'billing'?" in lines


def test_cli_graph(tmp_path: Path):
    result = run_cli("flows", "graph", "ivr_flows/main.yaml", "--format", "dot")
    assert result.returncode == 0 and result.stdout.startswith('digraph "main"')
    assert run_cli("flows", "graph", "ivr_flows/main.yaml").stdout.startswith("%% flow main")


def test_cli_test_reports_a_failing_case_at_its_expectation(tmp_path: Path):
    for path in SAMPLES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    test_file = tmp_path / "survey.test.yaml"
    test_file.write_text(test_file.read_text().replace("surveys: {csat: 5, nps: 9}", "surveys: {csat: 4, nps: 9}"))
    result = run_cli("flows", "test", str(tmp_path))
    assert result.returncode == 1
    assert f"{test_file}:9:16: error: case 'Both questions answered': expected surveys " \
           f"{{'csat': 4, 'nps': 9}}, got {{'csat': 5, 'nps': 9}}" in result.stderr.splitlines()
    assert "16 passed, 1 failed" in result.stderr
