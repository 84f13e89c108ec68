"""QA scorecards: the YAML format, its validation, and the scoring arithmetic.

Theory of operation
-------------------
A scorecard is one YAML file in the centre's `scorecards:` directory::

    scorecard: billing_qa              # the card's id, unique across the directory
    title: Billing calls
    queues: [billing]                  # the queues whose calls it scores (a queue: one card)
    sections:
      - id: opening
        title: Opening
        weight: 1                      # > 0; relative to the other sections
        questions:
          - {id: greeting, text: Greeted with the centre's script, kind: yes_no}
          - {id: identity, text: Verified the account holder, kind: yes_no, critical: true}
          - {id: tone, text: Tone and courtesy, kind: scale, weight: 2, allow_na: true}

Files are read by `router.yamlsrc` (positions, hostile input refused) and
checked with the config loader's typed readers, so every mistake of every file
is reported at once as ``FILE:LINE:COL: error: MESSAGE``: unknown keys (with
did-you-mean), wrong types, missing keys, duplicate card/section/question ids,
weights <= 0, unknown queues, a queue claimed by two cards.  Question ids are
unique within a card (answers are keyed by them).  A card's `version` is the
first 12 hex digits of the SHA-256 of its file's bytes: an evaluation records
it, so a later edit of the card never reinterprets old answers.

Scoring (`score`)
-----------------
Each answer becomes a value from 0 to 1:

- yes_no: "yes" = 1, "no" = 0;
- scale (1-5): (v - 1) / 4, so 1 = 0, 3 = 0.5, 5 = 1;
- "na" (only where the question has `allow_na: true`) drops the question: it
  counts in neither the numerator nor the denominator of its section.

A section's score is the weighted mean of its answered questions,
sum(weight x value) / sum(weight); a section whose questions are all n.a. has
no score (None) and drops out of the total the same way.  The total is the
section-weighted mean of the scored sections, x 100, rounded to 2 places
(section scores are reported on the same 0-100 scale).  A critical question
answered "no" (or 1 on a scale) is a critical failure: the total is 0 and
`critical_failed` is true, the section scores stay as computed.  Every
question needs an answer (n.a. is an answer); an evaluation where everything
is n.a. has nothing to score.  Problems with answers raise `AnswerError`.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from router.config.loader import ConfigReader
from router.yamlsrc import MAX_BYTES, Mark, Node, ProblemList, did_you_mean, load

KINDS = ("yes_no", "scale")
CARD_KEYS = ("scorecard", "title", "description", "queues", "sections")
SECTION_KEYS = ("id", "title", "weight", "questions")
QUESTION_KEYS = ("id", "text", "kind", "weight", "critical", "allow_na")
NA = "na"
SCALE = (1, 2, 3, 4, 5)
MAX_FILES = 200
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    kind: str            # "yes_no" | "scale"
    weight: float
    critical: bool
    allow_na: bool


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    weight: float
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Scorecard:
    id: str
    title: str
    version: str
    queues: tuple[str, ...]
    sections: tuple[Section, ...]
    file: str = ""

    def questions(self) -> dict[str, Question]:
        """Every question of the card, by id, in card order."""
        return {q.id: q for section in self.sections for q in section.questions}


@dataclass(frozen=True)
class Score:
    value: float                         # 0..100, 2 places
    critical_failed: bool
    sections: dict[str, float | None]    # 0..100, 2 places; None: every question n.a.


class AnswerError(ValueError):
    """An answer set that does not fit the card (unknown question, missing answer, bad value)."""

    def __init__(self, question_id: str, message: str) -> None:
        super().__init__(f"{question_id}: {message}" if question_id else message)
        self.question_id = question_id
        self.message = message


# ---- loading ---------------------------------------------------------------------------------

def scorecard_files(directory: Path) -> list[Path]:
    """The scorecard files of a directory, in name order."""
    return sorted(path for path in directory.iterdir() if path.is_file() and path.suffix in (".yaml", ".yml"))


def load_scorecards(directory: str | Path, queues: Iterable[str] | None) -> tuple[dict[str, Scorecard], list[str]]:
    """The cards of a directory (or one file) by id, and every problem as a
    "FILE:LINE:COL: error: MESSAGE" line; no cards at all when there is any error.
    `queues` are the centre's queue ids (None: not checked)."""
    root = Path(directory)
    problems = ProblemList()
    if root.is_dir():
        files = scorecard_files(root)
        if not files:
            problems.error(str(root), Mark(1, 1), "no scorecard files (*.yaml) in this directory")
        elif len(files) > MAX_FILES:
            problems.error(str(root), Mark(1, 1), f"more than {MAX_FILES} scorecard files")
            files = []
    elif root.is_file():
        files = [root]
    else:
        problems.error(str(root), Mark(1, 1), "no such file or directory")
        files = []
    sources: list[tuple[str, bytes]] = []
    for file in files:
        try:
            with open(file, "rb") as stream:
                sources.append((str(file), stream.read(MAX_BYTES + 1)))
        except OSError as exc:
            problems.error(str(file), Mark(1, 1), f"cannot read file: {exc.strerror or exc}")
    cards = check_sources(sources, problems, queues)
    return (cards if not problems.errors else {}), [str(problem) for problem in problems]


def check_sources(sources: list[tuple[str, bytes | str]], problems: ProblemList,
                  queues: Iterable[str] | None) -> dict[str, Scorecard]:
    """Check scorecard files already in memory (name, content) as one directory."""
    known = list(queues) if queues is not None else None
    cards: dict[str, Scorecard] = {}
    card_marks: dict[str, tuple[str, Mark]] = {}
    claims: dict[str, tuple[str, str, Mark]] = {}          # queue -> (card, file, mark)
    for name, content in sources:
        data = content.encode("utf-8") if isinstance(content, str) else content
        root = load(data, name, problems)
        if root is None:
            continue
        reader = _CardReader(name, problems, known)
        card = reader.card(root, hashlib.sha256(data).hexdigest()[:12])
        ident_node = root.value.get("scorecard") if root.is_mapping else None
        if card is None or ident_node is None:
            continue
        if card.id in card_marks:
            first_file, first = card_marks[card.id]
            reader.error(ident_node, f"duplicate scorecard id {card.id!r} (first in {Path(first_file).name}:{first.line})")
            continue
        card_marks[card.id] = (name, ident_node.mark)
        for queue, mark in reader.queue_marks.items():
            if queue in claims:
                other, other_file, other_mark = claims[queue]
                reader.error(mark, f"queue {queue!r} already has scorecard {other!r} "
                                   f"({Path(other_file).name}:{other_mark.line}); a queue has one scorecard")
            else:
                claims[queue] = (card.id, name, mark)
        if reader.error_count == 0:
            cards[card.id] = card
    return cards


class _CardReader(ConfigReader):
    """The config loader's typed readers, bound to one scorecard file."""

    def __init__(self, filename: str, problems: ProblemList, known_queues: list[str] | None) -> None:
        super().__init__(filename, problems, {})
        self.known_queues = known_queues
        self.queue_marks: dict[str, Mark] = {}

    def ident(self, node: Node, what: str) -> str | None:
        value = self.text(node, what)
        if value is not None and not _ID.match(value):
            self.error(node, f"{what}: {value!r} is not an id (letters, digits, _ and -, at most 64)")
            return None
        return value

    def card(self, root: Node, version: str) -> Scorecard | None:
        top = self.fields(root, "the scorecard", CARD_KEYS, required=("scorecard", "sections"))
        if top is None:
            return None
        ident = self.ident(top["scorecard"], "'scorecard'") if "scorecard" in top else None
        owner = f"scorecard {ident!r}" if ident else "the scorecard"
        title = self.text(top["title"], f"'title' of {owner}") if "title" in top else None
        if "description" in top:
            self.text(top["description"], f"'description' of {owner}", nullable=True)
        queues: list[str] = []
        for node in self.items(top.get("queues"), f"'queues' of {owner}"):
            queue = self.text(node, f"queue of {owner}")
            if queue is None:
                continue
            if self.known_queues is not None and queue not in self.known_queues:
                self.error(node, f"unknown queue {queue!r} in {owner}{did_you_mean(queue, self.known_queues)}")
            elif queue in self.queue_marks:
                self.error(node, f"queue {queue!r} listed twice in {owner}")
            else:
                self.queue_marks[queue] = node.mark
                queues.append(queue)
        section_nodes = self.items(top.get("sections"), f"'sections' of {owner}")
        if "sections" in top and not section_nodes and top["sections"].is_sequence:
            self.error(top["sections"], f"'sections' of {owner}: a scorecard needs at least one section")
        section_ids: dict[str, Mark] = {}
        question_ids: dict[str, Mark] = {}
        sections = [self.section(node, index, owner, section_ids, question_ids)
                    for index, node in enumerate(section_nodes)]
        if self.error_count or ident is None:
            return None
        return Scorecard(id=ident, title=title or ident, version=version, queues=tuple(queues),
                         sections=tuple(s for s in sections if s is not None), file=self.file)

    def claim(self, node: Node, ident: str, kind: str, seen: dict[str, Mark]) -> bool:
        """Record `ident` as taken; an id seen before is an error naming its first line (False)."""
        if ident in seen:
            self.error(node, f"duplicate {kind} id {ident!r} (first at line {seen[ident].line})")
            return False
        seen[ident] = node.mark
        return True

    def section(self, node: Node, index: int, card: str, section_ids: dict[str, Mark],
                question_ids: dict[str, Mark]) -> Section | None:
        fields = self.fields(node, f"section #{index + 1} of {card}", SECTION_KEYS, required=("id", "questions"))
        if fields is None:
            return None
        ident = self.ident(fields["id"], f"'id' of section #{index + 1}") if "id" in fields else None
        owner = f"section {ident!r}" if ident else f"section #{index + 1}"
        if ident is not None:
            self.claim(fields["id"], ident, "section", section_ids)
        title = self.text(fields["title"], f"'title' of {owner}") if "title" in fields else None
        weight = self.number(fields["weight"], f"'weight' of {owner}", lo=0, lo_open=True) if "weight" in fields else 1.0
        question_nodes = self.items(fields.get("questions"), f"'questions' of {owner}")
        if "questions" in fields and not question_nodes and fields["questions"].is_sequence:
            self.error(fields["questions"], f"'questions' of {owner}: a section needs at least one question")
        questions = [self.question(q, i, owner, question_ids) for i, q in enumerate(question_nodes)]
        if ident is None or weight is None or any(q is None for q in questions):
            return None
        return Section(id=ident, title=title or ident, weight=weight, questions=tuple(questions))

    def question(self, node: Node, index: int, section: str, question_ids: dict[str, Mark]) -> Question | None:
        fields = self.fields(node, f"question #{index + 1} of {section}", QUESTION_KEYS,
                             required=("id", "text", "kind"))
        if fields is None:
            return None
        ident = self.ident(fields["id"], f"'id' of question #{index + 1} of {section}") if "id" in fields else None
        owner = f"question {ident!r}" if ident else f"question #{index + 1} of {section}"
        if ident is not None and not self.claim(fields["id"], ident, "question", question_ids):
            ident = None
        text = self.text(fields["text"], f"'text' of {owner}") if "text" in fields else None
        kind = self.choice(fields["kind"], f"'kind' of {owner}", KINDS, "question kind") if "kind" in fields else None
        weight = self.number(fields["weight"], f"'weight' of {owner}", lo=0, lo_open=True) if "weight" in fields else 1.0
        critical = self.flag(fields["critical"], f"'critical' of {owner}") if "critical" in fields else False
        allow_na = self.flag(fields["allow_na"], f"'allow_na' of {owner}") if "allow_na" in fields else False
        if None in (ident, text, kind, weight, critical, allow_na):
            return None
        return Question(id=ident, text=text, kind=kind, weight=weight, critical=critical, allow_na=allow_na)


# ---- use -------------------------------------------------------------------------------------

def scorecard_for(cards: Mapping[str, Scorecard], queue: str) -> Scorecard | None:
    """The card assigned to `queue` (validation lets a queue have at most one)."""
    for card in cards.values():
        if queue in card.queues:
            return card
    return None


def answer_value(question: Question, answer: object) -> float | None:
    """An answer as a value from 0 to 1, None for n.a.; raises AnswerError outside the domain."""
    if answer == NA and isinstance(answer, str):
        if not question.allow_na:
            raise AnswerError(question.id, "n.a. is not allowed for this question")
        return None
    na_hint = ' or "na"' if question.allow_na else ""
    if question.kind == "yes_no":
        if answer == "yes" and isinstance(answer, str):
            return 1.0
        if answer == "no" and isinstance(answer, str):
            return 0.0
        raise AnswerError(question.id, f'expected "yes", "no"{na_hint}, got {answer!r}')
    level = answer
    if isinstance(answer, str) and answer.strip() in ("1", "2", "3", "4", "5"):   # a form's text
        level = int(answer.strip())
    if isinstance(level, bool) or not isinstance(level, int) or level not in SCALE:
        raise AnswerError(question.id, f"expected an integer from 1 to 5{na_hint}, got {answer!r}")
    return (level - 1) / 4


def score(card: Scorecard, answers: Mapping[str, object]) -> Score:
    """The evaluation's score by the arithmetic of the module head."""
    questions = card.questions()
    for question_id in answers:
        if question_id not in questions:
            raise AnswerError(str(question_id), f"no such question in scorecard {card.id!r}"
                                                f"{did_you_mean(str(question_id), questions)}")
    critical_failed = False
    sections: dict[str, float | None] = {}
    total = weights = 0.0
    for section in card.sections:
        points = denominator = 0.0
        for question in section.questions:
            if question.id not in answers:
                raise AnswerError(question.id, "no answer (answer \"na\" where n.a. is allowed)")
            value = answer_value(question, answers[question.id])
            if value is None:
                continue
            critical_failed = critical_failed or (question.critical and value == 0.0)
            points += question.weight * value
            denominator += question.weight
        section_value = points / denominator if denominator else None
        sections[section.id] = round(100 * section_value, 2) if section_value is not None else None
        if section_value is not None:
            total += section.weight * section_value
            weights += section.weight
    if not weights:
        raise AnswerError("", "every question is answered n.a.: nothing to score")
    value = 0.0 if critical_failed else round(100 * total / weights, 2)
    return Score(value=value, critical_failed=critical_failed, sections=sections)


def card_json(card: Scorecard) -> dict:
    """The card as the evaluation page renders it: each question with the answers it takes."""
    def choices(question: Question) -> list[object]:
        base: list[object] = ["yes", "no"] if question.kind == "yes_no" else list(SCALE)
        return base + ([NA] if question.allow_na else [])

    return {
        "id": card.id, "title": card.title, "version": card.version, "queues": list(card.queues),
        "sections": [{
            "id": section.id, "title": section.title, "weight": section.weight,
            "questions": [{"id": q.id, "text": q.text, "kind": q.kind, "weight": q.weight,
                           "critical": q.critical, "allow_na": q.allow_na, "choices": choices(q)}
                          for q in section.questions],
        } for section in card.sections],
    }
