"""Reading SQuAD v1.1 / v2.0 JSON files into examples.

(Data model fixed here; loading functions are filled in by the core-data work.)
"""
from __future__ import annotations

from dataclasses import dataclass, field


class SquadFormatError(ValueError):
    """A SQuAD file that cannot be read; the message names the file and the article or question id."""


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
