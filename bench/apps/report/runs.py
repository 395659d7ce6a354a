"""The runs a report compares: valid results.json files, grouped by configuration, with statistics.

Only ``results.json`` files are read (``bench.core.results``; never logs or folder names). A
broken or partial one, a run on a subset of dev, and an older run of a configuration and seed
that ran again are skipped, with the reason.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bench.core.models import MODELS
from bench.core.results import ResultsError, find_results, load_results

__all__ = ["BACKENDS", "VERSIONS", "Group", "Run", "Skipped", "Stats", "collect_runs", "group_runs", "model_order",
           "summarize"]

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
    def model(self) -> str:
        return str(self.record["model"]["name"])

    @property
    def version(self) -> str:
        return self.record["squad_version"]

    @property
    def variant(self) -> tuple[str, str, str]:
        return (self.record["backend"], self.record["head"], self.record["dtype"])

    @property
    def group_key(self) -> tuple:
        return (self.model, self.version) + self.variant

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
    """Runs of one model, version, backend, head and dtype: different seeds of one configuration."""
    model: str
    version: str
    variant: tuple[str, str, str]
    runs: list[Run] = field(default_factory=list)

    @property
    def variant_text(self) -> str:
        return " · ".join(self.variant)

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
        group = groups.setdefault(run.group_key, Group(run.model, run.version, run.variant))
        group.runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.seed, str(r.path)))
    return [groups[k] for k in sorted(groups, key=_group_order)]


def _group_order(key: tuple) -> tuple:
    model, version, backend, head, dtype = key
    return (model_order(model), version, BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS),
            backend, head, dtype)


def model_order(name: str) -> tuple:
    """Registry order, then anything else by name."""
    order = list(MODELS)
    return (order.index(name), "") if name in order else (len(order), name)
