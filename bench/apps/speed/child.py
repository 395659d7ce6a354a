"""Entry of one measured process (``python -m bench.apps.speed --_task NAME --_request R --_result S``).

torch and transformers are imported in these processes only, never in the parent, which only
orchestrates and scores.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.apps.speed.measure import peak_memory
from bench.apps.speed.tasks_cpu import task_cpu_peak
from bench.apps.speed.tasks_frameworks import task_frameworks
from bench.apps.speed.tasks_gpu import task_gpu
from bench.apps.speed.tasks_inference import task_eval_full, task_inference
from bench.apps.speed.tasks_model import task_prepare_model
from bench.apps.speed.tasks_postprocess import task_features, task_postprocess
from bench.apps.speed.tasks_training import task_training
from bench.core.io_utils import atomic_write_json

TASKS = {"prepare_model": task_prepare_model, "inference": task_inference, "training": task_training,
         "eval_full": task_eval_full, "postprocess": task_postprocess, "features": task_features, "gpu": task_gpu,
         "cpu_peak": task_cpu_peak, "frameworks": task_frameworks}


def child_main(task: str, request_path: Path, result_path: Path) -> int:
    """Run ``task`` on the request file and write its result with the process's peak memory."""
    request = json.loads(request_path.read_text(encoding="utf-8"))
    result = TASKS[task](request)
    result["peak_memory"] = peak_memory()
    atomic_write_json(result_path, result)
    return 0
