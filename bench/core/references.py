"""Published SQuAD numbers as data: load and check ``reference_results/*.csv``, look numbers up.

Each CSV row is one number (one metric of one model on one SQuAD version from
one source), never an "F1/EM" pair, so nothing is parsed out of prose tables.
Loading fails with the file and line of the first bad row: an unknown column
value, a non-numeric number or a repeated key. The reports and the generated
command scripts read the numbers from here only.
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
           "DEFAULT_REFERENCE_DIR", "load_references", "find_reference", "select_references",
           "original_reference", "model_label"]

DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_results"

COLUMNS = ("model", "squad_version", "metric", "value", "precision", "source", "threshold", "std", "n",
           "superseded", "citation", "note")

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
}
# The authors' own numbers that GluonNLP quotes as "original"; in order of preference.
ORIGINAL_SOURCES = ("google_albert", "google_bert", "google_electra", "google_mobilebert", "fairseq_roberta")

# Checkpoints with published numbers that the model registry does not load.
EXTRA_MODELS = {
    "gluon_en_cased_bert_base_v1": "BERT base (cased, GluonNLP's own pretraining)",
    "distilbert_base_uncased_distilled_squad": "DistilBERT base (uncased, distilled on SQuAD)",
    "nvidia_bert_large_uncased": "BERT large (uncased, NVIDIA's pretraining)",
}

METRICS = ("exact", "f1")
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

    @property
    def key(self) -> tuple:
        return (self.source, self.model, self.squad_version, self.metric, self.precision, self.superseded)


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

    def seeds(self) -> int | None:
        value = self.number("n", required=False)
        if value is not None and (value != int(value) or value < 1):
            self.fail(f"n {self.row['n']!r} must be a positive integer")
        return None if value is None else int(value)

    def text(self, column: str, *, required: bool) -> str:
        value = (self.row.get(column) or "").strip()
        if required and not value:
            self.fail(f"{column} is empty")
        return value

    def model(self) -> str:
        name = self.text("model", required=True)
        if name not in MODELS and name not in EXTRA_MODELS:
            self.fail(f"model {name!r} is neither a registry name (bench.core.models) nor in "
                      f"bench.core.references.EXTRA_MODELS")
        return name

    def read(self) -> Reference:
        metric = self.choice("metric", METRICS)
        value = self.number("value", required=True)
        if value > 100:
            self.fail(f"value {value} is above 100 (SQuAD scores are percentages)")
        superseded = BOOLEANS.get((self.row.get("superseded") or "").strip().lower())
        if superseded is None:
            self.fail(f"superseded {self.row.get('superseded')!r} is not true/false")
        note = self.text("note", required=superseded)   # a superseded number must say why
        return Reference(
            model=self.model(), squad_version=self.choice("squad_version", VERSIONS), metric=metric,
            value=value, precision=self.choice("precision", PRECISIONS), source=self.choice("source", SOURCES),
            threshold=self.choice("threshold", THRESHOLDS), std=self.number("std", required=False),
            n=self.seeds(), superseded=superseded, citation=self.text("citation", required=True), note=note,
            file=self.path.name, line=self.line)


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
                                     f"(source, model, squad_version, metric, precision, superseded)")
            seen[ref.key] = f"{ref.file}:{ref.line}"
            references.append(ref)
    return references


def select_references(references: list[Reference], *, model: str | None = None, version: str | None = None,
                      source: str | None = None, precision: str | None = None,
                      include_superseded: bool = False) -> list[Reference]:
    """The references matching every given field (superseded ones only when asked)."""
    wanted = {"model": model, "squad_version": version, "source": source, "precision": precision}
    return [r for r in references
            if (include_superseded or not r.superseded)
            and all(v is None or getattr(r, k) == v for k, v in wanted.items())]


def find_reference(references: list[Reference], model: str, version: str, metric: str, source: str,
                   precision: str = "fp32") -> Reference | None:
    """The one current (not superseded) number for this key, or None when not reported."""
    for ref in select_references(references, model=model, version=version, source=source, precision=precision):
        if ref.metric == metric:
            return ref
    return None


def original_reference(references: list[Reference], model: str, version: str, metric: str) -> Reference | None:
    """The model authors' own number, or None. EM and F1 always come from the same source: the
    first of ORIGINAL_SOURCES with any number for this model and version."""
    for source in ORIGINAL_SOURCES:
        if select_references(references, model=model, version=version, source=source):
            return find_reference(references, model, version, metric, source)
    return None
