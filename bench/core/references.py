"""Published SQuAD numbers as data: load and check ``reference_results/*.csv``, look numbers up.

Each CSV row is one number (one metric of one model on one SQuAD version from
one source), never an "F1/EM" pair, so nothing is parsed out of prose tables.
Loading fails with the file and line of the first bad row: an unknown column
value, a non-numeric number or a repeated key. The reports and the generated
command scripts read the numbers from here only.

Besides EM and F1 (percent), a row may hold a speed or size figure (``METRIC_UNITS``):
``eval_seconds`` (seconds to answer ``eval_questions`` questions on ``device``),
``questions_per_second`` and ``num_parameters`` (millions). The optional columns
(``OPTIONAL_COLUMNS``; a file may leave them out) say what was measured: ``unit``,
``training`` ("fine-tuned", or "distilled" with the ``teacher`` model named),
``device``, ``eval_questions`` and ``batch_size``.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.models import MODELS
from bench.core.errors import BenchError

__all__ = ["Reference", "ReferenceError", "SOURCES", "ORIGINAL_SOURCES", "EXTRA_MODELS", "COLUMNS",
           "OPTIONAL_COLUMNS", "SCORINGS", "SCORING_NOTES", "METRIC_UNITS", "SCORE_METRICS", "SPEED_METRICS", "TRAININGS",
           "DEFAULT_REFERENCE_DIR", "load_references", "find_reference", "select_references",
           "original_reference", "model_label"]

DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_results"

COLUMNS = ("model", "squad_version", "metric", "value", "precision", "source", "threshold", "std", "n",
           "superseded", "citation", "note")
# Columns a file may leave out (empty for every row then): what a speed, size or distilled number is.
OPTIONAL_COLUMNS = ("unit", "training", "teacher", "device", "eval_questions", "batch_size", "scoring")

# Short source keys and how reports name them.
SOURCES = {
    "gluonnlp": "GluonNLP (reproduced)",
    "google_albert": "Google ALBERT",
    "google_bert": "Google BERT",
    "google_electra": "Google ELECTRA",
    "google_mobilebert": "Google MobileBERT",
    "fairseq_roberta": "Fairseq RoBERTa",
    "electra_paper": "ELECTRA paper",
    "hf_run_qa": "Hugging Face run_qa",
    "hf_distillation": "Hugging Face distillation",
    "nvidia_dle": "NVIDIA Deep Learning Examples",
    "deepset": "deepset",
    "distilbert_paper": "DistilBERT paper",
    "lewtun_distillation": "lewtun DistilBERT distillation notebook",
    "wadaboa_squad_qa": "Wadaboa squad-question-answering (seed 000)",
}
# The authors' own numbers that GluonNLP quotes as "original"; in order of preference.
ORIGINAL_SOURCES = ("google_albert", "google_bert", "google_electra", "google_mobilebert", "fairseq_roberta")

# Checkpoints with published numbers that the model registry does not load.
EXTRA_MODELS = {
    "gluon_en_cased_bert_base_v1": "BERT base (cased, GluonNLP's own pretraining)",
    "distilbert_base_uncased_distilled_squad": "DistilBERT base (uncased, distilled on SQuAD)",
    "nvidia_bert_large_uncased": "BERT large (uncased, NVIDIA's pretraining)",
}

# metric -> its unit; a row's ``unit``, when given, must be this one.
METRIC_UNITS = {
    "exact": "%", "f1": "%",                       # SQuAD scores, in percent
    "eval_seconds": "s",                           # wall time to answer eval_questions questions
    "questions_per_second": "questions/s",         # questions answered per second
    "num_parameters": "millions",                  # model size as published (110 = 110M parameters)
}
METRICS = tuple(METRIC_UNITS)
SCORE_METRICS = ("exact", "f1")
SPEED_METRICS = ("eval_seconds", "questions_per_second")
TRAININGS = ("", "fine-tuned", "distilled")        # "" = not stated (fine-tuned on SQuAD)
DEVICES = ("", "cpu", "gpu")
# How EM/F1 were scored: "" (the official script: best over every gold answer) or "nearest_gold"
# (against one gold answer, the one nearest the prediction; not comparable one-to-one).
SCORINGS = ("", "nearest_gold")
SCORING_NOTES = {"nearest_gold": "scored against the nearest gold answer, not the official best over golds"}
VERSIONS = ("1.1", "2.0")
PRECISIONS = ("fp32", "amp")
THRESHOLDS = ("", "fixed", "tuned")
BOOLEANS = {"true": True, "false": False, "": False}


class ReferenceError(BenchError, ValueError):
    """A reference CSV that does not follow reference_results/README.md; names the file and line."""


@dataclass(frozen=True)
class Reference:
    model: str              # registry name, or a key of EXTRA_MODELS
    squad_version: str      # "1.1" | "2.0"
    metric: str             # "exact" | "f1"
    value: float
    precision: str          # "fp32" | "amp"
    source: str             # key of SOURCES
    threshold: str          # v2.0 null threshold: "tuned" (on dev), "fixed", or "" when not stated
    std: float | None       # spread over seeds, when the source gives one
    n: int | None           # number of seeds behind value/std
    superseded: bool        # a known-wrong number kept for the record; never compared against
    citation: str           # URL of the source
    note: str
    file: str               # where it was read from (for messages)
    line: int
    unit: str = ""          # METRIC_UNITS[metric]
    training: str = ""      # "" (not stated) | "fine-tuned" | "distilled"
    teacher: str = ""       # the teacher model of a distilled number (registry name or EXTRA_MODELS key)
    device: str = ""        # "cpu" | "gpu" for a speed number; "" when not stated
    eval_questions: int | None = None   # questions behind a speed number
    batch_size: int | None = None       # questions per forward pass of a speed number
    scoring: str = ""                   # SCORINGS: "" official, "nearest_gold"

    @property
    def key(self) -> tuple:
        return (self.source, self.model, self.squad_version, self.metric, self.precision, self.superseded,
                self.training == "distilled", self.teacher, self.device)

    @property
    def distilled(self) -> bool:
        return self.training == "distilled"


def model_label(name: str) -> str:
    """Readable model name for tables: registry display name, with cased/uncased where it matters."""
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name]
    spec = MODELS.get(name)
    if spec is None:
        return name
    if spec.family in ("bert", "distilbert"):
        return f"{spec.display_name} ({'uncased' if spec.lowercase else 'cased'})"
    return spec.display_name


class _RowReader:
    """Turns one CSV row into a Reference, raising ReferenceError naming file and line."""

    def __init__(self, path: Path, line: int, row: dict):
        self.where, self.row = f"{path}:{line}", row
        self.path, self.line = path, line

    def fail(self, message: str):
        raise ReferenceError(f"{self.where}: {message}")

    def choice(self, column: str, choices) -> str:
        value = (self.row.get(column) or "").strip()
        if value not in choices:
            self.fail(f"{column} {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value

    def number(self, column: str, *, required: bool) -> float | None:
        text = (self.row.get(column) or "").strip()
        if not text:
            if required:
                self.fail(f"{column} is empty (a number not reported gets no row)")
            return None
        try:
            value = float(text)
        except ValueError:
            self.fail(f"{column} {text!r} is not a number")
        if not math.isfinite(value) or value < 0:
            self.fail(f"{column} {text!r} must be a finite number >= 0")
        return value

    def seeds(self, column: str = "n") -> int | None:
        value = self.number(column, required=False)
        if value is not None and (value != int(value) or value < 1):
            self.fail(f"{column} {self.row[column]!r} must be a positive integer")
        return None if value is None else int(value)

    def text(self, column: str, *, required: bool) -> str:
        value = (self.row.get(column) or "").strip()
        if required and not value:
            self.fail(f"{column} is empty")
        return value

    def model(self, column: str = "model", *, required: bool = True) -> str:
        name = self.text(column, required=required)
        if name and name not in MODELS and name not in EXTRA_MODELS:
            self.fail(f"{column} {name!r} is neither a registry name (bench.core.models) nor in "
                      f"bench.core.references.EXTRA_MODELS")
        return name

    def what_was_measured(self, metric: str, value: float) -> dict:
        """The optional columns: unit, training and teacher, and the setting of a speed number."""
        unit = self.text("unit", required=False) or METRIC_UNITS[metric]
        if unit != METRIC_UNITS[metric]:
            self.fail(f"unit {unit!r} is not {metric}'s unit {METRIC_UNITS[metric]!r}")
        training = self.choice("training", TRAININGS)
        teacher = self.model("teacher", required=training == "distilled")
        if teacher and training != "distilled":
            self.fail(f"teacher {teacher!r} given for a number that is not distilled (training {training!r})")
        device = self.choice("device", DEVICES)
        eval_questions, batch_size = self.seeds("eval_questions"), self.seeds("batch_size")
        if metric in SPEED_METRICS:
            if not device or eval_questions is None:
                self.fail(f"{metric} needs device and eval_questions (what was timed)")
            if value <= 0:
                self.fail(f"{metric} {value} must be > 0")
        return {"unit": unit, "training": training, "teacher": teacher, "device": device,
                "eval_questions": eval_questions, "batch_size": batch_size, "scoring": self.choice("scoring", SCORINGS)}

    def read(self) -> Reference:
        metric = self.choice("metric", METRICS)
        value = self.number("value", required=True)
        if metric in SCORE_METRICS and value > 100:
            self.fail(f"value {value} is above 100 (SQuAD scores are percentages)")
        measured = self.what_was_measured(metric, value)
        superseded = BOOLEANS.get((self.row.get("superseded") or "").strip().lower())
        if superseded is None:
            self.fail(f"superseded {self.row.get('superseded')!r} is not true/false")
        note = self.text("note", required=superseded)   # a superseded number must say why
        return Reference(
            model=self.model(), squad_version=self.choice("squad_version", VERSIONS), metric=metric,
            value=value, precision=self.choice("precision", PRECISIONS), source=self.choice("source", SOURCES),
            threshold=self.choice("threshold", THRESHOLDS), std=self.number("std", required=False),
            n=self.seeds(), superseded=superseded, citation=self.text("citation", required=True), note=note,
            file=self.path.name, line=self.line, **measured)


def _read_csv(path: Path) -> list[Reference]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReferenceError(f"{path}:1: missing column(s) {', '.join(missing)}")
        # line numbers count the header as line 1, as an editor shows them
        return [_RowReader(path, reader.line_num, row).read() for row in reader]


def load_references(directory: str | os.PathLike = DEFAULT_REFERENCE_DIR) -> list[Reference]:
    """Every reference number in ``directory/*.csv``, validated, in file then row order."""
    directory = Path(directory)
    paths = sorted(directory.glob("*.csv"))
    if not paths:
        raise ReferenceError(f"{directory}: no reference CSV files")
    references, seen = [], {}
    for path in paths:
        for ref in _read_csv(path):
            if ref.key in seen:
                raise ReferenceError(f"{path}:{ref.line}: duplicate of {seen[ref.key]} "
                                     f"(source, model, squad_version, metric, precision, superseded, "
                                     f"training, teacher, device)")
            seen[ref.key] = f"{ref.file}:{ref.line}"
            references.append(ref)
    return references


def select_references(references: list[Reference], *, model: str | None = None, version: str | None = None,
                      source: str | None = None, precision: str | None = None,
                      include_superseded: bool = False, distilled: bool | None = None) -> list[Reference]:
    """The references matching every given field (superseded ones only when asked; ``distilled``
    True/False: only distilled / only plain numbers)."""
    wanted = {"model": model, "squad_version": version, "source": source, "precision": precision,
              "distilled": distilled}
    return [r for r in references
            if (include_superseded or not r.superseded)
            and all(v is None or getattr(r, k) == v for k, v in wanted.items())]


def find_reference(references: list[Reference], model: str, version: str, metric: str, source: str,
                   precision: str = "fp32", *, teacher: str = "", device: str | None = None) -> Reference | None:
    """The one current (not superseded) number for this key, or None when not reported. ``teacher``:
    the number of the model distilled from that teacher (default: the plain, not distilled, model);
    ``device``: of a speed number measured there (default: any)."""
    for ref in select_references(references, model=model, version=version, source=source, precision=precision,
                                 distilled=bool(teacher)):
        if ref.metric == metric and ref.teacher == teacher and device in (None, ref.device):
            return ref
    return None


def original_reference(references: list[Reference], model: str, version: str, metric: str) -> Reference | None:
    """The model authors' own number, or None. EM and F1 always come from the same source: the
    first of ORIGINAL_SOURCES with any number for this model and version."""
    for source in ORIGINAL_SOURCES:
        if select_references(references, model=model, version=version, source=source):
            return find_reference(references, model, version, metric, source)
    return None
