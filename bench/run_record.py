"""Build the ``results.json`` record of a run (framework-free; every backend uses it).

The schema is in ``bench.results``; this module gathers the facts that are the
same whatever the framework: library versions, git commit, hardware, and the
split of the scoring dict into fixed-threshold and dev-tuned metrics.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import bench
from bench.results import SCHEMA, utc_now

__all__ = ["library_versions", "git_commit", "hardware_info", "split_metrics", "build_record"]

TUNED_KEYS = ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(accelerator: str | None, accelerator_count: int) -> dict:
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
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
    """Assemble a results.json record (validated when written by bench.results.write_results)."""
    hyperparameters = {name: getattr(config, name) for name in config.__dataclass_fields__}
    return {
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
