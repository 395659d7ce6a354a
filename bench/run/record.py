"""Build the ``results.json`` record of a run (framework-free; every backend uses it).

The schema is in ``bench.core.results``; this module gathers the facts that are the
same whatever the framework: library versions, git commit, hardware, and the
split of the scoring dict into fixed-threshold and dev-tuned metrics.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bench
from bench.core.io_utils import atomic_write_json
from bench.core.results import SCHEMA, official_dev_name, official_file_name, utc_now, write_results

__all__ = ["library_versions", "git_commit", "hardware_info", "split_metrics", "build_record",
           "write_run_outputs", "content_sha256", "eval_set_record"]


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": platform.python_version(), "bench": bench.__version__}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """Commit of the checkout the ``bench`` package runs from, or None outside a git checkout."""
    repo = Path(bench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def hardware_info(accelerator: str | None, accelerator_count: int) -> dict:
    """The machine; ``cpu`` is ``bench.run.cpu.CpuAbilities.as_record()`` (model, AVX2/AVX-512/
    AVX-512 BF16/AMX flags, native_bf16, cores available to the process)."""
    from bench.run.cpu import detect_cpu
    return {"platform": platform.platform(), "cpu": detect_cpu().as_record(), "cpu_count": os.cpu_count(),
            "accelerator": accelerator, "accelerator_count": accelerator_count}


def split_metrics(fixed: dict, tuned_source: dict | None) -> tuple[dict, dict | None]:
    """Fixed-threshold scores, and (v2.0) the threshold-tuned ones under their own names."""
    if not tuned_source or "best_exact" not in tuned_source:
        return fixed, None
    tuned = {"exact": tuned_source["best_exact"], "exact_thresh": tuned_source["best_exact_thresh"],
             "f1": tuned_source["best_f1"], "f1_thresh": tuned_source["best_f1_thresh"]}
    return fixed, tuned


def build_record(*, config, model: dict, world_size: int, global_batch_size: int, data: dict,
                 metrics: dict, timing: dict, memory: dict, versions: dict, hardware: dict) -> dict:
    """Assemble a results.json record (validated when written by bench.core.results.write_results)."""
    hyperparameters = {name: getattr(config, name) for name in config.__dataclass_fields__}
    record = {
        "schema": SCHEMA,
        "run_id": f"{Path(config.output_dir).name}-{utc_now()}",
        "created": utc_now(),
        "model": model,
        "backend": config.backend,
        "head": config.head,
        "squad_version": config.version,
        "seed": int(config.seed),
        "dtype": config.dtype,
        "world_size": int(world_size),
        "global_batch_size": int(global_batch_size),
        "hyperparameters": hyperparameters,
        "data": data,
        "metrics": metrics,
        "timing": timing,
        "memory": memory,
        "versions": versions,
        "git_commit": git_commit(),
        "hardware": hardware,
    }
    if getattr(config, "teacher_path", None) and config.do_train:     # trained with a teacher
        from bench.run.distill import distillation_record
        record["distillation"] = distillation_record(config)
    return record


def _tuned_as_official(tuned: dict | None) -> dict:
    if not tuned:
        return {}
    return {"best_exact": tuned["exact"], "best_exact_thresh": tuned["exact_thresh"],
            "best_f1": tuned["f1"], "best_f1_thresh": tuned["f1_thresh"]}


def _data_record(train, dev, train_info: dict, num_eval_features) -> dict:
    return {"train_file": train.path if train else None, "train_sha256": train.sha256 if train else None,
            "dev_file": dev.path if dev else None, "dev_sha256": dev.sha256 if dev else None,
            "num_train_features": train_info.get("num_train_features"), "num_eval_features": num_eval_features,
            "num_train_questions": len(train.examples) if train else None,
            "num_eval_questions": len(dev.examples) if dev else None,
            "eval_set": eval_set_record(dev) if dev else None}


def content_sha256(path: str | os.PathLike, stored_sha256: str | None = None) -> str:
    """sha256 of a SQuAD file's JSON bytes: decompressed for a ``.gz`` (as ``read_json_file`` reads it), the
    file's own bytes otherwise (``stored_sha256``, when the caller already has it, saves reading it again)."""
    path = Path(path)
    if path.suffix != ".gz" and stored_sha256 is not None:
        return stored_sha256
    digest = hashlib.sha256()
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def eval_set_record(dev) -> dict:
    """``data.eval_set`` of results.json (bench.core.results): which file was evaluated, how much of it, and
    whether it is the official dev file of the run's SQuAD version (``dev.version``), evaluated in full."""
    content = content_sha256(dev.path, dev.sha256)
    official = official_file_name(content)
    in_file = int(dev.stats.get("questions", len(dev.examples)))
    return {"file": str(dev.path), "name": Path(dev.path).name, "sha256": dev.sha256, "content_sha256": content,
            "num_questions": len(dev.examples), "num_questions_in_file": in_file, "official_file": official,
            "is_official_dev": official == official_dev_name(dev.version) and len(dev.examples) == in_file}


def _timing_record(train_info: dict, eval_info: dict | None, world_size: int) -> dict:
    train_seconds = train_info.get("train_seconds")
    return {"train_seconds": train_seconds,
            "eval_seconds": eval_info["eval_seconds"] if eval_info else None,
            "train_samples_per_second": train_info.get("train_samples_per_second"),
            "train_tokens_per_second": train_info.get("train_tokens_per_second"),
            "eval_samples_per_second": eval_info["eval_samples_per_second"] if eval_info else None,
            # questions evaluated (one prediction each) / one checkpoint's evaluation seconds
            "eval_questions_per_second": (
                round(len(eval_info["predictions"].predictions) / eval_info["eval_seconds"], 3)
                if eval_info and eval_info.get("eval_seconds") else None),
            # accelerators (or processes) x training hours
            "train_device_hours": round(train_seconds * world_size / 3600, 6) if train_seconds is not None else None,
            "updates": train_info.get("updates"), "skipped_updates": train_info.get("skipped_updates"),
            # the update of each --resume: train_seconds and updates above sum every segment
            "resumed_from": train_info.get("resumed_from")}


@dataclass(frozen=True)
class RunFacts:
    """What results.json records about the machine and libraries of a run (the backend's to say)."""
    memory: dict
    versions: dict
    hardware: dict


@dataclass(frozen=True)
class RunOutcome:
    """What one run produced: the model it ran, its training and evaluation records, its data."""
    model_info: dict
    world_size: int
    train_info: dict | None
    eval_info: dict | None
    train: object               # SquadDataset or None
    dev: object                 # SquadDataset or None
    num_eval_features: int | None
    evaluations: list | None = None     # --eval_interval: metrics.evaluations (bench.core.results)


def write_run_outputs(config, output_dir: Path, outcome: RunOutcome, facts: RunFacts) -> dict:
    """Write the best checkpoint's predictions, ``best_results.json`` and ``results.json``.

    A training-only run (no metrics) writes its record as ``train_results.json``: reports read
    only ``results.json``, so a run without scores never reaches a table.
    """
    from bench.core.postprocess import write_predictions

    output_dir = Path(output_dir)
    eval_info, world_size = outcome.eval_info, outcome.world_size
    metrics = {"fixed": None, "tuned": None, "best_checkpoint": None}
    if eval_info:
        write_predictions(output_dir, eval_info["predictions"])
        metrics = {**eval_info["metrics"], "best_checkpoint": eval_info["checkpoint"]}
        if outcome.evaluations is not None:
            metrics["evaluations"] = list(outcome.evaluations)
        token_accuracy = eval_info["metrics"].get("token_accuracy")
        atomic_write_json(output_dir / "best_results.json",
                          {**eval_info["metrics"]["fixed"], **_tuned_as_official(eval_info["metrics"]["tuned"]),
                           **({"token_accuracy": token_accuracy} if token_accuracy else {}),
                           "best_checkpoint": eval_info["checkpoint"]})
    train_info = outcome.train_info or {}
    record = build_record(
        config=config, model=outcome.model_info, world_size=world_size,
        global_batch_size=config.batch_size * config.num_accumulated * world_size,
        data=_data_record(outcome.train, outcome.dev, train_info, outcome.num_eval_features), metrics=metrics,
        timing=_timing_record(train_info, eval_info, world_size), memory=facts.memory, versions=facts.versions,
        hardware=facts.hardware)
    if eval_info:
        write_results(output_dir / "results.json", record)
    else:
        atomic_write_json(output_dir / "train_results.json", record)
    return record
