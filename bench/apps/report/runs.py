"""The runs a report compares: valid results.json files, grouped by configuration, with statistics.

Only ``results.json`` files are read (``bench.core.results``; never logs or folder names). A
broken or partial one, a run on a subset of dev, and an older run of a configuration and seed
that ran again are skipped, with the reason.

A run is *comparable* with the published numbers only when its model is the registry's checkpoint
(``model.registry_match``) and it was evaluated on the official dev file of its SQuAD version in
full (``data.eval_set.is_official_dev``); schema v1 records are read through
``bench.core.results.model_identity`` / ``evaluation_set``. Every other run keeps its own rows,
labelled with its model and evaluation set, and its reasons (``Run.not_compared``).

A run trained with a teacher (results.json ``distillation``) is its own configuration: its group
carries the teacher as given (``Group.teacher``), so it never mixes with plain runs of the model.
Model size is ``model.num_parameters``; CPU speed is ``timing.eval_questions_per_second`` of a
run whose ``hardware`` has no accelerator (``Run.cpu_questions_per_second``).
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bench.core.families import FAMILIES
from bench.core.models import MODELS
from bench.core.references import model_label
from bench.core.results import (ResultsError, evaluation_set, find_results, load_results, model_identity,
                                official_dev_name)

__all__ = ["BACKENDS", "VERSIONS", "Group", "Run", "Skipped", "Stats", "collect_runs", "group_runs", "model_order",
           "summarize", "parameters_text"]

VERSIONS = ("2.0", "1.1")   # the recipes target 2.0, so it comes first
BACKENDS = ("torch", "mxnet")


@dataclass(frozen=True)
class Run:
    """One valid results.json."""
    path: Path
    record: dict

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def identity(self) -> dict:
        """The model actually loaded (``bench.core.results.model_identity``; v1 records derived)."""
        return model_identity(self.record)

    @property
    def registered(self) -> bool:
        return bool(self.identity["registry_match"])

    @property
    def model(self) -> str:
        """The model's key: its registry name, or (not the registry's checkpoint) its source folder / hub id."""
        identity = self.identity
        return str(identity["name"]) if identity["registry_match"] else f"{identity['source']}"

    @property
    def model_text(self) -> str:
        """Table label: the registry's display name, or family, size and source of any other model."""
        if self.registered:
            return model_label(self.model)
        identity = self.identity
        family = FAMILIES[identity["family"]].display_name if identity["family"] in FAMILIES else identity["family"]
        return f"{family}, {_count(identity['num_parameters'])} parameters: {identity['source']}"

    @property
    def eval_set(self) -> dict:
        """``data.eval_set`` (``bench.core.results.evaluation_set``; v1 records derived, ``recorded`` false)."""
        return evaluation_set(self.record)

    @property
    def eval_key(self) -> str:
        """The evaluation set's identity: the sha256 of its JSON bytes (v1: of the stored file)."""
        eval_set = self.eval_set
        return str(eval_set["content_sha256"] or eval_set["sha256"])

    @property
    def eval_text(self) -> str:
        """"dev-v2.0.json (official)", or the set's file name and question count."""
        eval_set = self.eval_set
        if eval_set["is_official_dev"]:
            return f"{official_dev_name(self.version)} (official)"
        n, in_file = eval_set["num_questions"], eval_set["num_questions_in_file"]
        if n is None:
            count = "question count unknown"
        elif in_file is not None and in_file != n:
            count = f"{n:,} of {in_file:,} questions"
        else:
            count = f"{n:,} questions"
        return f"{eval_set['name']} ({count})"

    @property
    def not_compared(self) -> list[str]:
        """Why the published numbers do not apply to this run; empty when they do."""
        reasons = [] if self.registered else ["not a registry model (`model.registry_match` false)"]
        eval_set, official = self.eval_set, official_dev_name(self.version)
        if eval_set["is_official_dev"]:
            return reasons
        if not eval_set["recorded"]:
            reasons.append(f"evaluation set unknown (schema v1 record; its file is not the official {official})")
        elif eval_set["official_file"] and eval_set["official_file"] != official:
            reasons.append(f"evaluated on {eval_set['official_file']}, not the official {official}")
        else:
            reasons.append(f"not the official {official}")
        return reasons

    @property
    def version(self) -> str:
        return self.record["squad_version"]

    @property
    def variant(self) -> tuple[str, str, str]:
        return (self.record["backend"], self.record["head"], self.record["dtype"])

    @property
    def teacher(self) -> str:
        """The teacher as given (results.json ``distillation.teacher``); "" for a run without one."""
        block = self.record.get("distillation")
        return str(block.get("teacher") or "") if isinstance(block, dict) else ""

    @property
    def num_parameters(self) -> int | None:
        value = self.record["model"].get("num_parameters")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def on_cpu(self) -> bool:
        """No accelerator in ``hardware``: the evaluation ran on the CPU."""
        hardware = self.record["hardware"]
        return not hardware.get("accelerator") and not hardware.get("accelerator_count")

    @property
    def cpu_questions_per_second(self) -> float | None:
        """``timing.eval_questions_per_second`` of a run on the CPU; None on an accelerator or when absent."""
        return self.timing("eval_questions_per_second") if self.on_cpu else None

    @property
    def group_key(self) -> tuple:
        return (self.model, self.version, self.eval_key) + self.variant + (self.teacher,)

    @property
    def seed(self) -> int:
        return self.record["seed"]

    def fixed(self, metric: str) -> float | None:
        """EM ('exact') or F1 at the fixed threshold; v1.1 scoring calls EM 'exact_match'."""
        key = "exact_match" if metric == "exact" and self.version == "1.1" else metric
        return _number(self.record["metrics"]["fixed"].get(key))

    def tuned(self, metric: str) -> float | None:
        """v2.0 EM/F1 at the threshold tuned on dev; None for v1.1 or when missing."""
        tuned = self.record["metrics"].get("tuned")
        if self.version != "2.0" or not isinstance(tuned, dict):
            return None
        return _number(tuned.get(metric))

    def timing(self, key: str) -> float | None:
        return _number(self.record["timing"].get(key))


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str
    replaced_by: Path | None = None   # the newer run of the same configuration and seed


def parameters_text(value) -> str:
    """A parameter count as a table shows it: 108.9M."""
    return _count(value)


def _count(value) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "unknown"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return str(value)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _load(path: Path) -> Run | Skipped:
    try:
        record = load_results(path)
    except ResultsError as exc:
        reason = str(exc)
        return Skipped(path, reason.split(": ", 1)[1] if reason.startswith(f"{path}: ") else reason)
    subset = record["hyperparameters"].get("max_eval_samples")
    if subset is not None:   # a score on part of dev says nothing next to full-dev published numbers
        return Skipped(path, f"evaluated on a subset of dev (--max_eval_samples {subset}): "
                             "not comparable with full-dev numbers")
    return Run(path, record)


def _drop_repeated_seeds(runs: list[Run]) -> tuple[list[Run], list[Skipped]]:
    """Keep the newest run of each (configuration, seed); a re-run replaces, never double-counts."""
    newest: dict[tuple, Run] = {}
    skipped = []
    for run in sorted(runs, key=lambda r: (r.record["created"], str(r.path)), reverse=True):
        key = run.group_key + (run.seed,)
        if key in newest:
            skipped.append(Skipped(run.path, "older run of the same configuration and seed as",
                                   replaced_by=newest[key].path))
        else:
            newest[key] = run
    return list(newest.values()), skipped


def collect_runs(roots: Iterable[str | os.PathLike]) -> tuple[list[Run], list[Skipped]]:
    """Valid runs and the results.json files skipped with the reason, both sorted by path."""
    runs, skipped = [], []
    for path in find_results(list(roots)):
        loaded = _load(path)
        (runs if isinstance(loaded, Run) else skipped).append(loaded)
    runs, repeated = _drop_repeated_seeds(runs)
    return sorted(runs, key=lambda r: str(r.path)), sorted(skipped + repeated, key=lambda s: str(s.path))


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    mean: float
    std: float | None    # sample standard deviation (n - 1); None for one run


def summarize(values: Iterable[float | None]) -> Stats | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stats(len(values), statistics.median(values), statistics.fmean(values), std)


@dataclass
class Group:
    """Runs of one model, version, evaluation set, backend, head and dtype: different seeds of one
    configuration."""
    model: str
    version: str
    eval_key: str
    variant: tuple[str, str, str]
    teacher: str = ""      # distillation.teacher as given; "" for runs without a teacher
    runs: list[Run] = field(default_factory=list)

    @property
    def variant_text(self) -> str:
        return " · ".join(self.variant) + (f" · distilled from {self.teacher}" if self.teacher else "")

    @property
    def variant_key(self) -> str:
        """The configuration in results.csv's ``variant`` column."""
        return "/".join(self.variant) + (f"/distilled:{self.teacher}" if self.teacher else "")

    @property
    def num_parameters(self) -> int | None:
        return self.runs[0].num_parameters

    @property
    def parameters_text(self) -> str:
        return _count(self.num_parameters) if self.num_parameters is not None else "—"

    def cpu_questions_per_second(self) -> Stats | None:
        return summarize(r.cpu_questions_per_second for r in self.runs)

    @property
    def model_text(self) -> str:
        return self.runs[0].model_text

    @property
    def eval_text(self) -> str:
        return self.runs[0].eval_text

    @property
    def not_compared(self) -> list[str]:
        return list(dict.fromkeys(reason for run in self.runs for reason in run.not_compared))

    @property
    def comparable(self) -> bool:
        """Model, SQuAD version and evaluation set are those of the published numbers."""
        return not self.not_compared

    def fixed(self, metric: str) -> Stats | None:
        return summarize(r.fixed(metric) for r in self.runs)

    def tuned(self, metric: str) -> Stats | None:
        return summarize(r.tuned(metric) for r in self.runs)

    def timing(self, key: str) -> Stats | None:
        return summarize(r.timing(key) for r in self.runs)

    def ours(self, metric: str) -> Stats | None:
        """What compares with GluonNLP: tuned on v2.0 (its best_results.json is dev-tuned), else fixed."""
        return self.tuned(metric) if self.version == "2.0" else self.fixed(metric)


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        group = groups.setdefault(run.group_key, Group(run.model, run.version, run.eval_key, run.variant,
                                                       run.teacher))
        group.runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.seed, str(r.path)))
    return [groups[k] for k in sorted(groups, key=_group_order)]


def _group_order(key: tuple) -> tuple:
    model, version, eval_key, backend, head, dtype, teacher = key
    return (model_order(model), version, eval_key,
            BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS), backend, head, dtype, teacher)


def model_order(name: str) -> tuple:
    """Registry order, then anything else by name."""
    order = list(MODELS)
    return (order.index(name), "") if name in order else (len(order), name)
