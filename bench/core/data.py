"""Reading SQuAD v1.1 / v2.0 JSON files into examples.

``load_squad`` turns one file in the official format (plain or gzipped JSON)
into a ``SquadDataset``. Anything wrong with the file's structure becomes a
``SquadFormatError`` whose one-line message names the file and the article or
question, instead of a ``KeyError`` from deep inside the loader.

Answer offsets are checked: an answer is usable when its text is non-empty and
``context[answer_start:answer_start + len(text)] == text``.

* An evaluation file keeps every answer as written, because scoring reads
  answer texts only; bad offsets are merely counted.
* A training file needs offsets to label token spans: a bad offset is repaired
  when the text occurs exactly once in the context, the answer is skipped
  otherwise, and an answerable question left without any answer is dropped.
  Only the first usable answer of a question is kept (official training files
  have one answer per question).

Every such case is counted in ``SquadDataset.stats`` and summed up in a single
warning line, so a noisy file does not flood the log.

A file that cannot be read at all (missing, not JSON, a corrupt, truncated or
bad-checksum ``.gz``) is a ``SquadFormatError`` naming it, never a traceback.
Whether a dataset left without questions may be used is the caller's decision
(``EmptyDataError``, raised by the run layer before training).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench.core.io_utils import read_json_file, sha256_file
from bench.core.errors import BenchError

__all__ = ["Answer", "SquadExample", "SquadDataset", "SquadFormatError", "load_squad",
           "gold_answers", "normalize_version", "EmptyDataError"]

logger = logging.getLogger(__name__)


class SquadFormatError(BenchError, ValueError):
    """A SQuAD file that cannot be read; the message names the file and the article or question id."""


class EmptyDataError(BenchError, ValueError):
    """Data that leaves nothing to train on or evaluate (no questions, or no windows cut from them);
    the message names the file, or the flag, and says why."""


@dataclass(frozen=True)
class Answer:
    text: str
    start: int          # character offset of ``text`` in the context


@dataclass
class SquadExample:
    qid: str
    title: str
    context: str
    question: str
    answers: list[Answer]            # gold answers (eval: all of them; train: repaired/validated ones)
    is_impossible: bool = False      # v2.0 unanswerable question


@dataclass
class SquadDataset:
    path: str
    version: str                     # "1.1" or "2.0"
    examples: list[SquadExample]
    sha256: str                      # of the file's bytes as stored (plain or .gz)
    stats: dict = field(default_factory=dict)   # counts: bad offsets repaired / skipped, etc.


# Spellings seen in the wild: the official v2.0 files say "v2.0", v1.1 files say "1.1".
_VERSION_SPELLINGS = {"1.1": "1.1", "v1.1": "1.1", "2.0": "2.0", "v2.0": "2.0"}

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true/false"}


def normalize_version(version: Any) -> str:
    """``"v2.0"``, ``"2.0"``, ``"1.1"``, ``"v1.1"`` -> ``"2.0"`` or ``"1.1"``; ValueError otherwise."""
    key = str(version).strip().lower()
    if key not in _VERSION_SPELLINGS:
        raise ValueError(f"unknown SQuAD version {version!r} (expected 1.1 or 2.0)")
    return _VERSION_SPELLINGS[key]


def load_squad(path: str | os.PathLike, version: str | None = None, *,
               for_training: bool = False) -> SquadDataset:
    """Read a SQuAD file (``.json`` or ``.json.gz``).

    ``version`` overrides the file's ``version`` field. Without either, the
    version is inferred: 2.0 when any question carries ``is_impossible``, else
    1.1 (``stats["version_source"]`` says which way it was decided).
    ``for_training`` validates and repairs answer offsets as described in the
    module docstring.

    ``stats`` counts ``articles``, ``paragraphs``, ``questions`` (kept),
    ``answerable``, ``unanswerable``, ``answers`` (kept), ``answers_in_file``,
    ``bad_offsets``, ``offsets_repaired``, ``answers_skipped``,
    ``questions_dropped`` and ``answerable_without_answers`` (v2.0 questions with
    ``is_impossible: false`` but no answers, scored as unanswerable).
    """
    path = Path(path)
    raw = read_json_file(path, SquadFormatError)
    articles = _articles_of(raw, path)
    version, version_source = _decide_version(raw, articles, version, path)
    reader = _Reader(str(path), version, for_training)
    for index, article in enumerate(articles):
        reader.read_article(index, article)
    reader.warn_once()
    stats = dict(reader.counts, version_source=version_source)
    return SquadDataset(path=str(path), version=version, examples=reader.examples,
                        sha256=sha256_file(path), stats=stats)


def gold_answers(dataset: SquadDataset) -> dict[str, list[str]]:
    """Question id -> gold answer texts (empty list for an unanswerable question)."""
    return {example.qid: [answer.text for answer in example.answers] for example in dataset.examples}


def _articles_of(raw: Any, path: Path) -> list:
    if not isinstance(raw, dict):
        raise SquadFormatError(f"{path}: the top level should be an object with a 'data' list, "
                               f"got {type(raw).__name__}")
    if "data" not in raw:
        raise SquadFormatError(f"{path}: missing top-level field 'data'")
    if not isinstance(raw["data"], list):
        raise SquadFormatError(f"{path}: top-level field 'data' should be a list, "
                               f"got {type(raw['data']).__name__}")
    return raw["data"]


def _decide_version(raw: dict, articles: list, override: str | None, path: Path) -> tuple[str, str]:
    """(version, how it was decided)."""
    if override is not None:
        return normalize_version(override), "argument"
    if "version" in raw:
        try:
            return normalize_version(raw["version"]), f"file ({raw['version']!r})"
        except ValueError as exc:
            raise SquadFormatError(f"{path}: field 'version': {exc}; "
                                   f"pass the version explicitly to read it anyway") from None
    if any("is_impossible" in qa for qa in _raw_questions(articles)):
        return "2.0", "inferred: no 'version' field, questions carry 'is_impossible'"
    return "1.1", "inferred: no 'version' field, no question carries 'is_impossible'"


def _raw_questions(articles: list) -> Iterator[dict]:
    """Every question object, skipping malformed parts (the full read reports those)."""
    for article in articles:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        for paragraph in paragraphs if isinstance(paragraphs, list) else []:
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            yield from (qa for qa in (qas if isinstance(qas, list) else []) if isinstance(qa, dict))


class _Place(tuple):
    """Where in the file a problem is: (article index, title, paragraph index, question index,
    question id, answer index), as far as known. Formatted only when an error is raised,
    because building a message for each of 100k questions would dominate the load time."""

    def __str__(self) -> str:
        article, title, paragraph, question, qid, answer = self + (None,) * (6 - len(self))
        parts = [f"article {article} ({title!r})" if title is not None else f"article {article}"]
        if paragraph is not None:
            parts.append(f"paragraph {paragraph}")
        if question is not None:
            parts.append(f"question {question}")
        if answer is not None:
            parts.append(f"answer {answer}")
        text = ", ".join(parts)
        return f"question {qid!r} ({text})" if qid is not None else text


class _Reader:
    """Walks the article / paragraph / question tree, validating as it goes."""

    def __init__(self, path: str, version: str, for_training: bool):
        self.path = path
        self.version = version
        self.for_training = for_training
        self.examples: list[SquadExample] = []
        self.place_seen: dict[str, _Place] = {}    # question id -> place, to name both duplicates
        self.counts: Counter = Counter({key: 0 for key in (
            "articles", "paragraphs", "questions", "answerable", "unanswerable", "answers",
            "answers_in_file", "bad_offsets", "offsets_repaired", "answers_skipped",
            "questions_dropped", "answerable_without_answers")})

    # -- helpers -----------------------------------------------------------------------------

    def fail(self, place: _Place, problem: str):
        raise SquadFormatError(f"{self.path}: {place}: {problem}")

    def expect_object(self, value: Any, place: _Place) -> None:
        if not isinstance(value, dict):
            self.fail(place, f"should be an object, got {type(value).__name__}")

    def field(self, obj: dict, key: str, kind: type, place: _Place) -> Any:
        if key not in obj:
            self.fail(place, f"missing field {key!r}")
        value = obj[key]
        # bool is a subclass of int, but true/false is never a valid offset
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(place, f"field {key!r} should be {_TYPE_NAMES[kind]}, got {type(value).__name__}")
        return value

    # -- tree walk ---------------------------------------------------------------------------

    def read_article(self, index: int, article: Any) -> None:
        self.expect_object(article, _Place((index, None)))
        title = article.get("title", "")
        if not isinstance(title, str):
            self.fail(_Place((index, None)), f"field 'title' should be a string, got {type(title).__name__}")
        paragraphs = self.field(article, "paragraphs", list, _Place((index, title)))
        for p_index, paragraph in enumerate(paragraphs):
            self.read_paragraph(title, _Place((index, title, p_index)), paragraph)
        self.counts["articles"] += 1

    def read_paragraph(self, title: str, place: _Place, paragraph: Any) -> None:
        self.expect_object(paragraph, place)
        context = self.field(paragraph, "context", str, place)
        for q_index, qa in enumerate(self.field(paragraph, "qas", list, place)):
            example = self.read_question(title, context, _Place(place + (q_index,)), qa)
            if example is not None:
                self.examples.append(example)
                self.counts["questions"] += 1
                self.counts["unanswerable" if example.is_impossible else "answerable"] += 1
                self.counts["answers"] += len(example.answers)
        self.counts["paragraphs"] += 1

    def read_question(self, title: str, context: str, place: _Place, qa: Any) -> SquadExample | None:
        self.expect_object(qa, place)
        qid = self.field(qa, "id", str, place)
        place = _Place(place + (qid,))
        if qid in self.place_seen:
            self.fail(place, f"duplicate question id (first seen in {self.place_seen[qid]})")
        self.place_seen[qid] = place
        question = self.field(qa, "question", str, place)
        impossible = self.impossible_flag(qa, place)
        answers = [] if impossible is True else self.read_answers(qa, place)
        self.counts["answers_in_file"] += len(answers)
        if not answers:
            self.check_no_answers(impossible, place)
            return SquadExample(qid, title, context, question, [], is_impossible=True)
        answers = self.usable_answers(context, answers)
        if not answers:                       # training only: no answer could be located
            self.counts["questions_dropped"] += 1
            return None
        return SquadExample(qid, title, context, question, answers, is_impossible=False)

    def impossible_flag(self, qa: dict, place: _Place) -> bool | None:
        """The ``is_impossible`` field: True / False, or None when absent."""
        if "is_impossible" not in qa:
            return None
        flag = self.field(qa, "is_impossible", bool, place)
        if flag and self.version == "1.1":
            self.fail(place, "is marked is_impossible, which SQuAD 1.1 does not allow "
                             "(read the file as version 2.0)")
        return flag

    def read_answers(self, qa: dict, place: _Place) -> list[Answer]:
        answers = []
        for a_index, item in enumerate(self.field(qa, "answers", list, place)):
            if not (isinstance(item, dict) and type(item.get("text")) is str
                    and type(item.get("answer_start")) is int):
                self.check_answer(item, _Place(place + (a_index,)))
            answers.append(Answer(item["text"], item["answer_start"]))
        return answers

    def check_answer(self, item: Any, place: _Place) -> None:
        """The slow, precise check of an answer object that failed the fast one."""
        self.expect_object(item, place)
        self.field(item, "text", str, place)
        self.field(item, "answer_start", int, place)

    def check_no_answers(self, impossible: bool | None, place: _Place) -> None:
        """A question without answers is fine only as a v2.0 unanswerable question."""
        if self.version == "1.1":
            self.fail(place, "has no answers (every SQuAD 1.1 question needs at least one)")
        if impossible is False and self.for_training:
            self.fail(place, "is answerable (is_impossible is false) but has no answers")
        if impossible is False:
            # the official v2.0 evaluation scores such a question as unanswerable; so do we
            self.counts["answerable_without_answers"] += 1

    # -- offsets -----------------------------------------------------------------------------

    def usable_answers(self, context: str, answers: list[Answer]) -> list[Answer]:
        """Eval: every answer, bad offsets counted. Training: the first usable answer, repaired if needed."""
        kept = []
        for answer in answers:
            if _points_at_text(context, answer):
                kept.append(answer)
                continue
            self.counts["bad_offsets"] += 1
            if not self.for_training:
                kept.append(answer)
                continue
            repaired = _repair(context, answer)
            self.counts["offsets_repaired" if repaired else "answers_skipped"] += 1
            if repaired:
                kept.append(repaired)
        return kept[:1] if self.for_training else kept

    def warn_once(self) -> None:
        counts = self.counts
        if counts["bad_offsets"]:
            outcome = (f"{counts['offsets_repaired']} repaired (text occurs once in the context), "
                       f"{counts['answers_skipped']} skipped, {counts['questions_dropped']} answerable "
                       f"questions left without an answer dropped" if self.for_training
                       else "all kept: evaluation scores answer texts only")
            logger.warning("%s: %d of %d answers have an answer_start that does not point at their "
                           "text: %s", self.path, counts["bad_offsets"], counts["answers_in_file"], outcome)
        if counts["answerable_without_answers"]:
            logger.warning("%s: %d questions have is_impossible false but no answers; they are scored "
                           "as unanswerable", self.path, counts["answerable_without_answers"])


def _points_at_text(context: str, answer: Answer) -> bool:
    return bool(answer.text) and answer.start >= 0 and context.startswith(answer.text, answer.start)


def _repair(context: str, answer: Answer) -> Answer | None:
    """The answer moved to the only occurrence of its text in the context, or None."""
    if not answer.text:
        return None
    first = context.find(answer.text)
    if first < 0 or context.find(answer.text, first + 1) >= 0:
        return None
    return Answer(answer.text, first)
