"""The one record a run leaves behind: ``results.json``.

Every report reads these files and nothing else (never log files or folder
names). The schema is versioned; ``validate_results`` lists every problem in a
record and ``load_results`` turns a broken or partial file into a
``ResultsError`` that names the file, so a report can skip it and say why.

Schema ``squad-bench/results/v1`` (keys marked * may be null)::

    schema            "squad-bench/results/v1"
    run_id            str            unique id of the run (output folder name + start time)
    created           str            ISO-8601 UTC time the record was written
    model             {name, source, family, num_parameters}
    backend           "torch" | "mxnet"
    head              a head registry name (bench.core.heads: "conditional", "basic", ...)
    squad_version     "1.1" | "2.0"
    seed              int
    dtype             "float32" | "float16" | "bfloat16" | "int8"
    world_size        int            number of training processes
    global_batch_size int            batch_size * num_accumulated * world_size
    hyperparameters   {flag: value}  every command-line flag of the run
    data              {train_file*, train_sha256*, dev_file, dev_sha256, num_train_features*, num_eval_features}
    metrics           {fixed: {...}, tuned*: {...}, best_checkpoint*}
                      fixed: the scoring dict at --null_score_diff_threshold (keys of bench.evaluate)
                      tuned: v2.0 only, {exact, exact_thresh, f1, f1_thresh} tuned on dev na-probs
    timing            {train_seconds*, eval_seconds, train_samples_per_second*,
                       eval_samples_per_second, train_device_hours*}
    memory            {peak_bytes, kind}   kind: "cuda" (max allocated) or "rss"
    versions          {python, bench, <library>: version, ...}
    git_commit*       str
    hardware          {platform, cpu, cpu_count, accelerator*, accelerator_count}
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from bench.core.io_utils import atomic_write_json, read_json_file
from bench.core.errors import BenchError
from bench.core.heads import HEADS

__all__ = ["SCHEMA", "ResultsError", "validate_results", "load_results", "write_results",
           "find_results", "utc_now"]

SCHEMA = "squad-bench/results/v1"


class ResultsError(BenchError, ValueError):
    """A results.json file that is missing, unreadable or does not follow the schema."""


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str, "run_id": str, "created": str, "model": dict, "backend": str, "head": str,
    "squad_version": str, "seed": int, "dtype": str, "world_size": int, "global_batch_size": int,
    "hyperparameters": dict, "data": dict, "metrics": dict, "timing": dict, "memory": dict,
    "versions": dict, "hardware": dict,
}
_NESTED_REQUIRED = {
    "model": ("name", "source", "family"),
    "metrics": ("fixed",),
    "timing": ("eval_seconds",),
}
_CHOICES = {
    "backend": ("torch", "mxnet"), "squad_version": ("1.1", "2.0"),
    "dtype": ("float32", "float16", "bfloat16", "int8"),
}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def validate_results(record: Any) -> list[str]:
    """Return a list of human-readable problems; empty means the record is valid."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for key, typ in _REQUIRED.items():
        if key not in record:
            problems.append(f"missing field {key!r}")
        elif not isinstance(record[key], typ) or (typ is int and isinstance(record[key], bool)):
            problems.append(f"field {key!r} should be {typ.__name__}, got {type(record[key]).__name__}")
    if problems:
        return problems
    if record["schema"] != SCHEMA:
        problems.append(f"field 'schema' is {record['schema']!r}, expected {SCHEMA!r}")
    for key, choices in {**_CHOICES, "head": tuple(HEADS)}.items():
        if record[key] not in choices:
            problems.append(f"field {key!r} is {record[key]!r}, expected one of {choices}")
    for key, subkeys in _NESTED_REQUIRED.items():
        problems += [f"missing field '{key}.{sub}'" for sub in subkeys if sub not in record[key]]
    fixed = record["metrics"].get("fixed")
    if isinstance(fixed, dict):
        em_key = "exact_match" if record["squad_version"] == "1.1" else "exact"
        for metric in (em_key, "f1"):
            if not isinstance(fixed.get(metric), (int, float)):
                problems.append(f"field 'metrics.fixed.{metric}' should be a number")
    elif "fixed" in record["metrics"]:
        problems.append("field 'metrics.fixed' should be an object")
    return problems


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate one results.json; raise ResultsError naming the file on any problem."""
    record = read_json_file(path, error_cls=ResultsError)
    problems = validate_results(record)
    if problems:
        raise ResultsError(f"{path}: " + "; ".join(problems))
    return record


def write_results(path: str | os.PathLike, record: dict) -> None:
    """Validate, then write atomically. A record that fails validation is a bug: raise."""
    problems = validate_results(record)
    if problems:
        raise ResultsError(f"refusing to write invalid {path}: " + "; ".join(problems))
    atomic_write_json(path, record)


def find_results(roots: list[str | os.PathLike]) -> list[Path]:
    """Every results.json below the given folders (or the files themselves), sorted."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if root.is_file():
            found.add(root)
        elif root.is_dir():
            found.update(root.rglob("results.json"))
    return sorted(found)
