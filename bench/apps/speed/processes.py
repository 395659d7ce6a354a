"""The measured processes: one fresh process per stage, a request file in, a result file out.

Ours run as ``python -m bench.apps.speed --_task NAME --_request R --_result S``; the Hugging Face
baseline runs ``hf_worker.py R S`` with the python of its own environment (baseline_env). Every
process is numbered per work folder, so that ``--resume`` finds the files of the run it continues
and reuses a result only for exactly the same request.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.apps.speed.common import REPO_ROOT, SpeedError
from bench.core.io_utils import atomic_write_json

HF_WORKER = Path(__file__).resolve().with_name("hf_worker.py")

# Measured processes are numbered per work folder from 1 in every run, so that --resume finds
# the files of the run it continues (tests call main() several times in one process).
_RUN_NUMBERS: dict[Path, itertools.count] = {}


def restart_numbering(work: Path) -> None:
    """Number the processes of a new run in ``work`` from 1 again."""
    _RUN_NUMBERS[work] = itertools.count(1)


def child_environment(threads: int | None) -> dict:
    """The environment of every measured process: the thread count, when asked for, on both sides."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"   # the Rust tokenizer's own threads would skew CPU time
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_child(task: str, request: dict, work: Path, env: dict) -> dict:
    """Run one measured task of ours in a fresh process and return its result."""
    command = [sys.executable, "-m", "bench.apps.speed", "--_task", task]
    return _run_json_process(command, task, request, work, env)


def run_hf(hf_python: Path | None, request: dict, work: Path, env: dict) -> dict:
    """Run one task of the Hugging Face baseline (hf_worker.py) in its environment."""
    if hf_python is None:
        return {"skipped": "--skip_baselines"}
    return _run_json_process([str(hf_python), str(HF_WORKER)], f"hf_{request['task']}", request, work, env,
                             positional=True)


def _run_json_process(command: list[str], name: str, request: dict, work: Path, env: dict,
                      positional: bool = False) -> dict:
    tag = f"{next(_RUN_NUMBERS.setdefault(work, itertools.count(1))):02d}_{name}"
    request_path, result_path = work / f"{tag}.request.json", work / f"{tag}.result.json"
    if _finished_before(request_path, result_path, request):
        print(f"[speed] {name}: reusing {result_path.name}", file=sys.stderr, flush=True)
        return {**json.loads(result_path.read_text(encoding="utf-8")), "inputs": request}
    result_path.unlink(missing_ok=True)        # never pair a new request with an old result
    atomic_write_json(request_path, request)
    paths = [str(request_path), str(result_path)]
    command = command + (paths if positional else ["--_request", paths[0], "--_result", paths[1]])
    seconds = _run_logged(command, name, work / f"{tag}.log", result_path, env)
    result = {**json.loads(result_path.read_text(encoding="utf-8")), "process_seconds": round(seconds, 1)}
    atomic_write_json(result_path, result)     # with its duration, so that --resume reports it too
    return {**result, "inputs": request}


def _run_logged(command: list[str], name: str, log_path: Path, result_path: Path, env: dict) -> float:
    """Run ``command`` with its output in ``log_path``; its duration, or SpeedError with the log's tail."""
    print(f"[speed] {name} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT)).returncode
    seconds = time.perf_counter() - started
    print(f" {seconds:.0f} s", file=sys.stderr, flush=True)
    if status != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SpeedError(f"{name} failed (exit {status}); log {log_path}:\n{tail}")
    return seconds


def _finished_before(request_path: Path, result_path: Path, request: dict) -> bool:
    """A result left by an interrupted run (--resume keeps the work folder) for exactly this request."""
    if not (request_path.is_file() and result_path.is_file()):
        return False
    return json.loads(request_path.read_text(encoding="utf-8")) == json.loads(json.dumps(request))
