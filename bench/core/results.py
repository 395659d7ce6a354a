"""The one record a run leaves behind: ``results.json``.

Every report reads these files and nothing else (never log files or folder
names). The schema is versioned; ``validate_results`` lists every problem in a
record and ``load_results`` turns a broken or partial file into a
``ResultsError`` that names the file, so a report can skip it and say why.

Schema ``squad-bench/results/v2`` (keys marked * may be null)::

    schema            "squad-bench/results/v2"
    run_id            str            unique id of the run (output folder name + start time)
    created           str            ISO-8601 UTC time the record was written
    model             {name*, registry_match, source, family, num_parameters}
                      what was actually loaded:
                      source          the --model_path folder, or the hub id of --model_name
                      family          the loaded config.json's model_type
                      num_parameters  parameters of the loaded QA model (backbone + head)
                      registry_match  true when the loaded checkpoint is the registry's
                                      (bench.core.models) checkpoint of ``name``: --model_name
                                      loaded from its hub id, or a --model_path folder whose
                                      config.json model_type is that name's family (the user
                                      named the folder's checkpoint; bench.run.model_source:
                                      ModelFolder.spec is not None). False otherwise, e.g.
                                      --model_path without --model_name (the flag's default is
                                      then ignored) or with a name of another family.
                      name            the registry name when registry_match, else null; never
                                      the --model_name flag's value by default
    backend           "torch" | "mxnet"
    head              a head registry name (bench.core.heads: "conditional", "basic", ...)
    squad_version     "1.1" | "2.0"
    seed              int
    dtype             "float32" | "float16" | "bfloat16" | "int8"
    world_size        int            number of training processes
    global_batch_size int            batch_size * num_accumulated * world_size
    hyperparameters   {flag: value}  every command-line flag of the run
    data              {train_file*, train_sha256*, dev_file, dev_sha256, num_train_features*, num_eval_features,
                       num_train_questions*, num_eval_questions, eval_set}
                      eval_set: the identity of the evaluation set, {file, name, sha256, content_sha256,
                      num_questions, num_questions_in_file, official_file*, is_official_dev}:
                      file / name       the dev file as given / its file name
                      sha256            of the file's bytes as stored (= dev_sha256; .gz bytes for a .gz)
                      content_sha256    of its JSON bytes (decompressed for a .gz; = sha256 for plain JSON)
                      num_questions     questions evaluated (after --max_eval_samples)
                      num_questions_in_file  questions in the file
                      official_file     the official SQuAD release file (bench.core.squad_files.SQUAD_FILES)
                                        whose published sha256 equals content_sha256, else null. The
                                        shared *.rebuilt.json.gz dev sets are not the official files.
                      is_official_dev   official_file is dev-v<squad_version>.json and every one of its
                                        questions was evaluated: the set published dev numbers are on
    metrics           {fixed: {...}, tuned*: {...}, best_checkpoint*, token_accuracy (optional),
                       evaluations (optional)}
                      fixed: the scoring dict at --null_score_diff_threshold (keys of bench.evaluate)
                      tuned: v2.0 only, {exact, exact_thresh, f1, f1_thresh} tuned on dev na-probs
                      token_accuracy: {start, end, joint, windows}, the best checkpoint's share (0..1)
                                      of the ``windows`` evaluated whose top start / top end / both
                                      equal the window labels (first gold answer; CLS = 0 where the
                                      window lacks it); bench.run.pipeline.token_accuracy. Optional:
                                      records written before it lack it
                      evaluations: with --eval_interval, every evaluation of the run in order,
                                      [{update, exact, f1, ...}]: the scoring dict's numbers at
                                      that update (HasAns_*/NoAns_*, and tuned_* on v2.0), the
                                      last one the evaluation stage's (with its ``checkpoint``).
                                      Optional; the best is still ``best_checkpoint``'s
    timing            {train_seconds*, eval_seconds, train_samples_per_second*,
                       eval_samples_per_second, train_device_hours*, eval_questions_per_second}
                      eval_questions_per_second (optional; records written before it lack it):
                      questions evaluated / eval_seconds (one checkpoint's evaluation), a number > 0
                      or null
    memory            {peak_bytes, kind}   kind: "cuda" (max allocated) or "rss"
    versions          {python, bench, <library>: version, ...; cpu_kernels: <backend>-kernels-<key> | off | not used}
    git_commit*       str
    hardware          {platform, cpu: {model, avx2, avx512, avx512_bf16, amx, native_bf16, cores...,
                      flags_left_out}
                      (bench.run.cpu), cpu_count, accelerator*, accelerator_count}
    distillation      (optional) {teacher, teacher_sha256, temperature, alpha}: the run trained with
                      --teacher_path (bench.run.distill): the teacher folder or checkpoint as given,
                      the sha256 of its weights, --distill_temperature (> 0) and --distill_alpha
                      (in [0, 1]). Absent for runs without a teacher

Schema ``squad-bench/results/v1`` records (written before the model and evaluation set were
identified) are still read: they lack ``model.registry_match`` and ``data.eval_set`` and their
``model.name`` is the --model_name flag's value, whatever was loaded. ``model_identity`` and
``evaluation_set`` give every record's model and evaluation set in the v2 form, deriving them for
v1 as the v2 writer would have where the record allows it:

* model: ``registry_match`` when ``name`` is a registry name (aliases resolved) and either no
  ``--model_path`` was given or ``model.family`` is that name's family; ``name`` null otherwise.
* evaluation set: ``is_official_dev`` only when ``data.dev_sha256`` (the stored bytes) is the
  published sha256 of the official plain dev-v<squad_version>.json and no ``--max_eval_samples``
  was given; anything else, a gzipped official file included, is an unknown evaluation set
  (``recorded`` false), never compared with published numbers.

``write_results`` writes the current schema (v2) only.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from bench.core.io_utils import atomic_write_json, read_json_file
from bench.core.errors import BenchError
from bench.core.heads import HEADS
from bench.core.models import MODELS, get_model_spec
from bench.core.squad_files import SQUAD_FILES

__all__ = ["SCHEMA", "SCHEMA_V1", "SCHEMAS", "ResultsError", "validate_results", "load_results", "write_results",
           "find_results", "utc_now", "official_file_name", "official_dev_name", "model_identity",
           "evaluation_set"]

SCHEMA = "squad-bench/results/v2"
SCHEMA_V1 = "squad-bench/results/v1"
SCHEMAS = (SCHEMA, SCHEMA_V1)        # what load_results reads; write_results writes SCHEMA only


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
# Added in v2: key -> (subkey, type) that must be present
_V2_NESTED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "model": (("name", (str, type(None))), ("registry_match", bool), ("source", str), ("family", str),
              ("num_parameters", int)),
    "data": (("eval_set", dict),),
}
_EVAL_SET_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("file", str), ("name", str), ("sha256", str), ("content_sha256", str), ("num_questions", int),
    ("num_questions_in_file", int), ("official_file", (str, type(None))), ("is_official_dev", bool))
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
    if record["schema"] not in SCHEMAS:
        problems.append(f"field 'schema' is {record['schema']!r}, expected {SCHEMA!r} (or {SCHEMA_V1!r})")
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
    problems += _token_accuracy_problems(record["metrics"])
    problems += _evaluations_problems(record["metrics"])
    problems += _distillation_problems(record)
    qps = record["timing"].get("eval_questions_per_second")
    if qps is not None and not (_is_number(qps) and qps > 0):
        problems.append("field 'timing.eval_questions_per_second' should be a number > 0 or null")
    if record["schema"] == SCHEMA:
        problems += _v2_problems(record)
    return problems


def _is_number(value) -> bool:
    """An int or float, not a bool (JSON true/false load as bools, which are ints in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _evaluations_problems(metrics: dict) -> list[str]:
    """The optional ``metrics.evaluations``: absent, or a list of {update: int >= 0, exact, f1: numbers}."""
    if "evaluations" not in metrics:
        return []
    evaluations = metrics["evaluations"]
    if not isinstance(evaluations, list):
        return ["field 'metrics.evaluations' should be a list"]
    problems = []
    for i, entry in enumerate(evaluations):
        if not isinstance(entry, dict) or not isinstance(entry.get("update"), int) or entry["update"] < 0 or not all(
                _is_number(entry.get(k)) for k in ("exact", "f1")):
            problems.append(f"field 'metrics.evaluations[{i}]' should be {{update: int >= 0, exact, f1: numbers}}")
    return problems


def _distillation_problems(record: dict) -> list[str]:
    """The optional ``distillation`` block: absent, or {teacher: str, teacher_sha256: str,
    temperature: number > 0, alpha: number in [0, 1]}."""
    if "distillation" not in record:
        return []
    block = record["distillation"]
    if not isinstance(block, dict):
        return ["field 'distillation' should be an object"]
    problems = [f"field 'distillation.{k}' should be a string" for k in ("teacher", "teacher_sha256")
                if not isinstance(block.get(k), str)]
    if not (_is_number(block.get("temperature")) and block["temperature"] > 0):
        problems.append("field 'distillation.temperature' should be a number > 0")
    if not (_is_number(block.get("alpha")) and 0.0 <= block["alpha"] <= 1.0):
        problems.append("field 'distillation.alpha' should be a number in [0, 1]")
    return problems


def _token_accuracy_problems(metrics: dict) -> list[str]:
    """The optional ``metrics.token_accuracy``: absent, or {start, end, joint} in [0, 1] and windows >= 0."""
    if "token_accuracy" not in metrics:
        return []
    accuracy = metrics["token_accuracy"]
    if not isinstance(accuracy, dict):
        return ["field 'metrics.token_accuracy' should be an object"]
    problems = []
    for sub in ("start", "end", "joint"):
        value = accuracy.get(sub)
        if not (_is_number(value) and 0.0 <= value <= 1.0):
            problems.append(f"field 'metrics.token_accuracy.{sub}' should be a number in [0, 1]")
    windows = accuracy.get("windows")
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 0:
        problems.append("field 'metrics.token_accuracy.windows' should be a non-negative int")
    return problems


def _type_problem(where: str, value: Any, typ) -> str | None:
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types:
        return f"field {where!r} should be {' or '.join(t.__name__ for t in types)}, got bool"
    if not isinstance(value, types):
        return f"field {where!r} should be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}"
    return None


def _v2_problems(record: dict) -> list[str]:
    problems = []
    for key, fields in _V2_NESTED.items():
        for sub, typ in fields:
            if sub not in record[key]:
                problems.append(f"missing field '{key}.{sub}'")
            elif (problem := _type_problem(f"{key}.{sub}", record[key][sub], typ)) is not None:
                problems.append(problem)
    if problems:
        return problems
    model = record["model"]
    if model["registry_match"] and model["name"] not in MODELS:
        problems.append(f"field 'model.name' is {model['name']!r}: registry_match needs a registry name")
    if not model["registry_match"] and model["name"] is not None:
        problems.append(f"field 'model.name' is {model['name']!r}: it must be null when registry_match is false")
    eval_set = record["data"]["eval_set"]
    for sub, typ in _EVAL_SET_FIELDS:
        if sub not in eval_set:
            problems.append(f"missing field 'data.eval_set.{sub}'")
        elif (problem := _type_problem(f"data.eval_set.{sub}", eval_set[sub], typ)) is not None:
            problems.append(problem)
    return problems


# ----------------------------------------------------------------------------- identity of model and data

def official_file_name(content_sha256: str | None) -> str | None:
    """The official SQuAD release file (``"dev-v1.1.json"``, ...) whose published sha256 this is, else None."""
    return next((name for name, sha in SQUAD_FILES.items() if sha == content_sha256), None)


def official_dev_name(version: str) -> str:
    """``"2.0"`` -> ``"dev-v2.0.json"``: the file the published dev numbers of that version are on."""
    return f"dev-v{version}.json"


def model_identity(record: dict) -> dict:
    """``{name, registry_match, source, family, num_parameters}`` of a valid v2 or v1 record.

    A v2 record's own; for v1 derived as the module docstring says (the v1 name was the
    --model_name flag's value, right only when the loaded checkpoint is that name's).
    """
    model = record["model"]
    if record["schema"] != SCHEMA_V1:
        return {key: model.get(key) for key in ("name", "registry_match", "source", "family", "num_parameters")}
    try:
        spec = get_model_spec(str(model.get("name")))
    except KeyError:
        spec = None
    if spec is not None and record["hyperparameters"].get("model_path") and spec.family != model.get("family"):
        spec = None    # --model_path held another family: the name was the ignored flag value
    return {"name": spec.name if spec else None, "registry_match": spec is not None,
            "source": model.get("source"), "family": model.get("family"),
            "num_parameters": model.get("num_parameters")}


def evaluation_set(record: dict) -> dict:
    """The evaluation set of a valid v2 or v1 record, in the v2 ``data.eval_set`` form plus
    ``recorded`` (false for a v1 record, whose set is derived: unknown unless its stored bytes are
    the official plain dev file; counts it lacks are None)."""
    data = record["data"]
    if record["schema"] != SCHEMA_V1:
        return {**data["eval_set"], "recorded": True}
    dev_file, dev_sha = data.get("dev_file"), data.get("dev_sha256")
    official = official_file_name(dev_sha)
    subset = record["hyperparameters"].get("max_eval_samples") is not None
    return {"file": dev_file, "name": Path(dev_file).name if isinstance(dev_file, str) else None,
            "sha256": dev_sha, "content_sha256": dev_sha if official else None,
            "num_questions": data.get("num_eval_questions"), "num_questions_in_file": None,
            "official_file": official,
            "is_official_dev": official == official_dev_name(record["squad_version"]) and not subset,
            "recorded": False}


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
    if isinstance(record, dict) and record.get("schema") != SCHEMA:
        problems.append(f"field 'schema' is {record.get('schema')!r}: only {SCHEMA!r} is written")
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
