"""QA scorecards: the samples, one broken file (or directory) per mistake class (tests/scorecard_cases,
whose `# expect:` header lines are the exact problems in order), the scoring arithmetic on golden
evaluations computed by hand (tests/golden/scorecard_evaluations.yaml), answer errors, card_json and
the `scorecards validate` command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import load_config, parse_config
from router.quality.scorecard import (AnswerError, check_sources, card_json, load_scorecards, score,
                                      scorecard_for)
from router.yamlsrc import ProblemList

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).parent / "scorecard_cases"
GOLDEN = Path(__file__).parent / "golden"
CENTRE = load_config(None)
SAMPLES = Path(CENTRE.scorecards)


def sample_cards():
    cards, problems = load_scorecards(SAMPLES, CENTRE.queues)
    assert problems == []
    return cards


def test_the_sample_centre_names_its_scorecards_and_they_are_valid():
    assert SAMPLES == ROOT / "router" / "samples" / "scorecards"
    cards = sample_cards()
    assert sorted(cards) == ["sales", "service", "technical"]
    assert {queue: scorecard_for(cards, queue).id for queue in CENTRE.queues} == {
        "billing": "service", "general": "service", "spanish": "service", "support": "technical", "sales": "sales"}
    assert scorecard_for(cards, "nope") is None
    service = cards["service"]
    assert [s.id for s in service.sections] == ["opening", "resolution", "manner"]
    assert service.sections[1].weight == 3.0 and service.sections[1].questions[1].critical
    assert len(service.version) == 12 and service.version != cards["sales"].version


def case_targets() -> list[Path]:
    return sorted(CASES.glob("*.yaml")) + sorted(p for p in CASES.iterdir() if p.is_dir())


@pytest.mark.parametrize("target", case_targets(), ids=lambda p: p.stem)
def test_broken_scorecards_report_exactly_the_expected_problems(target: Path):
    files = [target] if target.is_file() else sorted(target.glob("*.yaml"))
    expected = [f"{file}:{line.removeprefix('# expect: ').rstrip()}" for file in files
                for line in file.read_text(encoding="utf-8").splitlines() if line.startswith("# expect: ")]
    assert expected, f"{target.name} has no '# expect:' header"
    cards, problems = load_scorecards(target, CENTRE.queues)
    assert (cards, problems) == ({}, expected)


def test_the_corpus_covers_every_mistake_class():
    names = {path.stem for path in case_targets()}
    assert {"unknown_key", "wrong_type", "duplicate_ids", "bad_weight", "unknown_queue", "two_cards_one_queue",
            "duplicate_card_id", "unknown_kind", "missing_keys", "missing_question_keys", "empty_lists", "bad_id",
            "duplicate_key", "syntax_error", "alias_bomb"} <= names


def test_a_directory_without_scorecards_and_a_missing_path(tmp_path: Path):
    assert load_scorecards(tmp_path, CENTRE.queues) == (
        {}, [f"{tmp_path}:1:1: error: no scorecard files (*.yaml) in this directory"])
    assert load_scorecards(tmp_path / "gone", None) == ({}, [f"{tmp_path / 'gone'}:1:1: error: no such file or directory"])


def test_the_version_is_the_hash_of_the_file_content(tmp_path: Path):
    text = (GOLDEN / "scorecards" / "golden.yaml").read_text()
    (tmp_path / "golden.yaml").write_text(text)
    first = load_scorecards(tmp_path, None)[0]["golden"].version
    assert load_scorecards(GOLDEN / "scorecards", None)[0]["golden"].version == first
    (tmp_path / "golden.yaml").write_text(text.replace("A scale of weight 2.5", "A scale weighing 2.5"))
    assert load_scorecards(tmp_path, None)[0]["golden"].version != first


def golden_evaluations() -> list[dict]:
    return yaml.safe_load((GOLDEN / "scorecard_evaluations.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", golden_evaluations(), ids=lambda case: case["name"])
def test_golden_evaluations(case: dict):
    cards = {**sample_cards(), **load_scorecards(GOLDEN / "scorecards", None)[0]}
    result = score(cards[case["card"]], case["answers"])
    assert (result.value, result.critical_failed, result.sections) == (
        case["score"], case["critical_failed"], case["sections"])


def golden_card():
    return load_scorecards(GOLDEN / "scorecards", None)[0]["golden"]


@pytest.mark.parametrize("answers, question, message", [
    ({"a1": "yes", "a2": 2, "b1": "no", "b2": 4, "c1": 3, "zz": "yes"}, "zz", "no such question in scorecard 'golden'"),
    ({"a1": "yes", "a2": 2, "b1": "no", "b2": 4}, "c1", 'no answer (answer "na" where n.a. is allowed)'),
    ({"a1": "na", "a2": 2, "b1": "no", "b2": 4, "c1": 3}, "a1", "n.a. is not allowed for this question"),
    ({"a1": True, "a2": 2, "b1": "no", "b2": 4, "c1": 3}, "a1", "expected \"yes\", \"no\", got True"),
    ({"a1": "yes", "a2": 6, "b1": "no", "b2": 4, "c1": 3}, "a2", "expected an integer from 1 to 5 or \"na\", got 6"),
    ({"a1": "yes", "a2": 2.5, "b1": "no", "b2": 4, "c1": 3}, "a2", "expected an integer from 1 to 5 or \"na\", got 2.5"),
    ({"a1": "yes", "a2": 2, "b1": "maybe", "b2": 4, "c1": 3}, "b1", "expected \"yes\", \"no\" or \"na\", got 'maybe'"),
    ({"a1": "yes", "a2": 2, "b1": "no", "b2": 4, "c1": True}, "c1", "expected an integer from 1 to 5, got True"),
    ({"a1": "yes", "a2": 2, "b1": "no", "b2": 4, "c1": "\u00b2"}, "c1", "expected an integer from 1 to 5, got '\u00b2'"),
    ({"a1": "yes", "a2": 2, "b1": "no", "b2": 4, "c1": [3]}, "c1", "expected an integer from 1 to 5, got [3]"),
])
def test_answers_outside_the_card_raise_answer_error(answers, question, message):
    with pytest.raises(AnswerError) as error:
        score(golden_card(), answers)
    assert (error.value.question_id, error.value.message) == (question, message)


def test_an_evaluation_with_every_question_na_has_nothing_to_score():
    problems = ProblemList()
    cards = check_sources([("optional.yaml", "scorecard: optional\nsections:\n  - id: s\n    questions:\n"
                                             "      - {id: q, text: Q, kind: yes_no, allow_na: true}\n")],
                          problems, None)
    assert list(problems) == []
    with pytest.raises(AnswerError, match="every question is answered n.a."):
        score(cards["optional"], {"q": "na"})
    assert score(cards["optional"], {"q": "yes"}).value == 100.0


def test_card_json_lists_each_question_with_its_choices():
    rendered = card_json(golden_card())
    assert rendered["id"] == "golden" and rendered["queues"] == [] and len(rendered["version"]) == 12
    a, b, c = rendered["sections"]
    assert (a["id"], a["title"], a["weight"]) == ("a", "a", 2.0)
    assert a["questions"][0] == {"id": "a1", "text": "A yes/no question of weight 3", "kind": "yes_no",
                                 "weight": 3.0, "critical": False, "allow_na": False, "choices": ["yes", "no"]}
    assert b["questions"][1]["choices"] == [1, 2, 3, 4, 5, "na"] and b["questions"][1]["critical"]


def test_the_config_resolves_scorecards_beside_the_config_file(tmp_path: Path):
    text = (ROOT / "router" / "samples" / "centre.yaml").read_text(encoding="utf-8")
    config = tmp_path / "router.yaml"
    config.write_text(text.replace("scorecards: scorecards ", "scorecards: qa/cards "), encoding="utf-8")
    assert load_config(config).scorecards == str(tmp_path / "qa" / "cards")
    without = parse_config(text.replace("scorecards: scorecards ", "scorecards: null "), str(config))
    assert without.scorecards is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", "scorecards", "validate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_scorecards_validate_command():
    ok = run_cli()
    assert ok.returncode == 0 and ok.stdout == ""
    assert ok.stderr.startswith(f"{SAMPLES}: 3 scorecard(s) valid (sales ")
    bad = run_cli(str(CASES / "unknown_queue.yaml"), str(CASES / "two_cards_one_queue"))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        f"{CASES / 'unknown_queue.yaml'}:4:10: error: unknown queue 'biling' in scorecard 'service'; "
        "did you mean 'billing'?",
        f"{CASES / 'unknown_queue.yaml'}:4:27: error: queue 'general' listed twice in scorecard 'service'",
        f"{CASES / 'two_cards_one_queue' / 'b.yaml'}:3:17: error: queue 'general' already has scorecard "
        "'service' (a.yaml:2); a queue has one scorecard"]
