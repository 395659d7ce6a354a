"""``squad-bench speed``: our inference, training, evaluation, post-processing and feature
building, timed next to the Hugging Face baselines, written to ``speed.json`` and ``speed.md``.

    squad-bench speed --quick                 # tiny random BERT, < 3 minutes on 2 CPU cores
    squad-bench speed                         # all-MiniLM-L6-v2, < 20 minutes on 2 CPU cores
    squad-bench speed --model_path DIR        # any local BERT-style folder (a *ForQuestionAnswering
                                              # checkpoint keeps its trained head)
    squad-bench speed --quick --skip_baselines  # no Hugging Face environment (CI)

Figures (CPU float32 unless said; the GPU is used when there is one):

1. ``inference``: end to end (tokenize, windows, model, post-process, answers) on real SQuAD 1.1
   dev questions, against transformers' ``QuestionAnsweringPipeline`` (removed in transformers 5.x,
   so it runs from transformers 4.57.6 in a virtual environment this command creates, see
   ``ensure_hf_env``). Two comparisons: each side as it runs by default (the pipeline: float32,
   batch 1; ours: bfloat16 autocast where the CPU has native bf16, ``--eval_batch_size`` 16), and
   the same dtype and batch (float32, batch 16). Both are scored against the gold answers; answer
   agreement is the share of questions where the two answer strings are equal. Plus dynamic int8.
2. ``training``: samples/s and real (non-pad) tokens/s of our training step
   (``Trainer.run_update``: dynamic padding + length grouping, and with every batch padded to
   max_seq_length) against ``transformers.Trainer`` with ``AutoModelForQuestionAnswering`` on the
   same windows padded to max_seq_length as ``run_qa.py`` does, float32 and bfloat16.
3. ``eval_full``: the dev-v2.0 set (11,873 questions; a subset with ``--quick``): features,
   forward passes, post-processing and scoring timed apart.
4. ``postprocess``: vectorized post-processing against the reference loop
   (``benchmarks/postprocess_speed.py``) and against the pipeline's own post-processing on the
   same logits (inside the 4.57.6 environment).
5. ``features``: feature building on dev-v2.0, cold and from the cache.
6. Peak memory of every measured process (resident set; ``torch.cuda.max_memory_allocated`` on GPUs).
GPU only: ``gpu``: ELECTRA-base training sequences/s at 384 in bfloat16 and float16 with MFU,
and the dev-v2.0 evaluation time.

Every measured stage runs in its own process (``python -m bench.apps.speed --_task NAME ...``), so
its peak resident memory is its own; our side and the baseline alternate over the repeats, and
the best (fastest) repeat is reported, with process CPU seconds next to wall seconds: on a shared
machine wall time also counts the time other processes hold the cores.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir
from bench.core.errors import BenchError
from bench.core.io_utils import atomic_write_json, atomic_write_text

__all__ = ["main", "answer_agreement", "ensure_hf_env", "mfu", "peak_flops", "render_markdown",
           "HF_ENV_PACKAGES", "FIGURES"]

REPO_ROOT = Path(__file__).resolve().parents[2]
HF_WORKER = REPO_ROOT / "benchmarks" / "speed_hf_baseline.py"
POSTPROCESS_BENCHMARK = REPO_ROOT / "benchmarks" / "postprocess_speed.py"
REFERENCE_POSTPROCESS = REPO_ROOT / "tests" / "reference_postprocess.py"
HF_ENV_PACKAGES = ("torch==2.13.0", "transformers==4.57.6", "accelerate==1.12.0")
DEFAULT_HF_ENV = Path.home() / ".cache" / "squad-bench" / "hf-4.57.6"
FIGURES = ("inference", "training", "eval_full", "postprocess", "features", "memory")
MEASURED = FIGURES[:-1]          # memory is gathered from the others
SCHEMA = "squad-bench/speed/v1"

# What each mode measures. Quick: a tiny random BERT and small samples, to check the machinery.
MODES = {
    "quick": {"questions": 100, "repeats": 1, "train_batch": 8, "train_warmup": 1, "train_steps": 3,
              "eval_questions": 300, "postprocess_questions": 500, "feature_repeats": 1},
    "full": {"questions": 1000, "repeats": 2, "train_batch": 8, "train_warmup": 2, "train_steps": 12,
             "eval_questions": None, "postprocess_questions": None, "feature_repeats": 3},
}
# Run-script defaults the figures use (bench.core.flags): windows, answers, evaluation batch.
WINDOW = {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30,
          "n_best_size": 20, "eval_batch_size": 16}
TARGETS = {"inference_default": 3.0, "inference_same": 1.2, "f1_gap": 1.0, "train_dynamic": 1.5,
           "train_padded": 1.0, "feature_cache": 20.0}
# Published anchors for the GPU figure (NVIDIA Deep Learning Examples, AMP).
GPU_ANCHORS = {"electra_base_a100_40gb_amp_seq_per_s": 317.0, "bert_large_a100_80gb_amp_seq_per_s": 110.5}
# Dense bf16/fp16 tensor-core peak FLOP/s by GPU name (first match wins), for MFU.
PEAK_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
              ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("V100", 125e12), ("T4", 65e12),
              ("RTX 4090", 165e12), ("A6000", 155e12))


class SpeedError(BenchError, RuntimeError):
    """A benchmark stage that could not run; the message says which and why."""


# ============================================================================== command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squad-bench speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random BERT and small samples (< 3 min)")
    parser.add_argument("--model_path", default=None, help="local Hugging Face model folder (default: "
                        "all-MiniLM-L6-v2; a tiny random BERT with --quick)")
    parser.add_argument("--out", default="reports/speed", help="folder for speed.json and speed.md")
    parser.add_argument("--skip_baselines", action="store_true",
                        help="run our side only (no Hugging Face environment); baseline figures are marked skipped")
    parser.add_argument("--hf_env", default=str(DEFAULT_HF_ENV),
                        help="virtual environment with transformers 4.57.6 (created when missing)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's default, the physical cores)")
    parser.add_argument("--questions", type=int, default=None, help="questions in figure 1 (default 1000; 200 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of figure 1 (best is reported)")
    parser.add_argument("--max_questions", type=int, default=None,
                        help="cap on the questions of every figure (smoke tests; numbers then mean little)")
    parser.add_argument("--checkpoint", default=None,
                        help="a --head basic checkpoint of this project (e.g. runs/demo/run/checkpoints/update_N) "
                             "for the backbone and QA head, so that EM/F1 mean something")
    parser.add_argument("--figures", default=",".join(MEASURED),
                        help=f"comma-separated subset of {','.join(MEASURED)} (postprocess needs inference)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the results of an interrupted run with the same --out (and the same requests)")
    parser.add_argument("--compile", action="store_true", help="GPU figure: torch.compile the backbone")
    parser.add_argument("--peak_tflops", type=float, default=None, help="GPU peak for MFU (default: by GPU name)")
    parser.add_argument("--_task", default=None, help=argparse.SUPPRESS)       # internal: one measured process
    parser.add_argument("--_request", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args._task:
        return child_main(args._task, Path(args._request), Path(args._result))
    try:
        report = run_benchmark(args)
    except (SpeedError, FileNotFoundError) as exc:
        print(f"speed: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write_json(out / "speed.json", report)
    markdown = render_markdown(report)
    atomic_write_text(out / "speed.md", markdown)
    print(markdown)
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0


# ============================================================================== orchestration
def run_benchmark(args) -> dict:
    mode = "quick" if args.quick else "full"
    selected = parse_figures(args.figures)
    settings = {**MODES[mode], "feature_questions": None,
                **{k: v for k, v in (("questions", args.questions), ("repeats", args.repeats)) if v is not None}}
    if args.max_questions:
        for key in ("questions", "eval_questions", "postprocess_questions", "feature_questions"):
            settings[key] = min(settings[key] or args.max_questions, args.max_questions)
    work = Path(args.out) / "work"
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    _RUN_NUMBERS[work] = itertools.count(1)
    env = child_environment(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = data_files()
    model = run_child("prepare_model", {"model_path": args.model_path, "quick": args.quick,
                                        "checkpoint": args.checkpoint, "out_dir": str(work / "qa_model")}, work, env)
    hf_python = None if args.skip_baselines else ensure_hf_env(Path(args.hf_env))
    context = {"work": work, "env": env, "hf": hf_python, "model": model, "data": data, "settings": settings,
               "threads": args.threads}
    figures = {}
    for name, measure in (("inference", figure_inference), ("training", figure_training),
                          ("eval_full", figure_eval_full), ("postprocess", figure_postprocess),
                          ("features", figure_features)):
        figures[name] = measure(context) if name in selected else {"skipped": "not selected (--figures)"}
    if model["device"] == "cuda":
        figures["gpu"] = run_child("gpu", {"data": data, "compile": args.compile, "peak_tflops": args.peak_tflops,
                                           "work": str(work)}, work, env)
    figures["memory"] = memory_figure(figures)
    return {"schema": SCHEMA, "mode": mode, "settings": {**settings, **WINDOW}, "targets": TARGETS,
            "model": {k: v for k, v in model.items() if k != "peak_memory"},
            "machine": machine_info(model, args.threads, load_before), "versions": model["versions"],
            "hf_versions": hf_versions(figures), "baselines_skipped": hf_python is None,
            "figures": figures, "seconds": round(time.perf_counter() - started, 1)}


def parse_figures(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MEASURED))
    if unknown:
        raise SpeedError(f"--figures: unknown {', '.join(unknown)}; choose from {', '.join(MEASURED)}")
    if "postprocess" in names and "inference" not in names:
        raise SpeedError("--figures: postprocess compares on figure 1's logits, so it needs inference too")
    return names


def data_files() -> dict:
    squad = shared_squad_dir()
    if squad is None:
        raise SpeedError("the shared SQuAD folder (../shared/data/squad) was not found; set SQUAD_BENCH_DATA")
    files = {"dev11": squad / "dev-v1.1.rebuilt.json.gz", "dev20": squad / "dev-v2.0.rebuilt.json.gz",
             "train": squad / "train-v2.0.first10.json.gz"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SpeedError(f"missing SQuAD files: {', '.join(missing)}")
    return {name: str(path) for name, path in files.items()}


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
    """Run one task of the Hugging Face baseline (benchmarks/speed_hf_baseline.py) in its environment."""
    if hf_python is None:
        return {"skipped": "--skip_baselines"}
    return _run_json_process([str(hf_python), str(HF_WORKER)], f"hf_{request['task']}", request, work, env,
                             positional=True)


# Measured processes are numbered per work folder from 1 in every run, so that --resume finds
# the files of the run it continues (tests call main() several times in one process).
_RUN_NUMBERS: dict[Path, itertools.count] = {}


def _run_json_process(command: list[str], name: str, request: dict, work: Path, env: dict,
                      positional: bool = False) -> dict:
    tag = f"{next(_RUN_NUMBERS.setdefault(work, itertools.count(1))):02d}_{name}"
    request_path, result_path, log_path = (work / f"{tag}.request.json", work / f"{tag}.result.json",
                                           work / f"{tag}.log")
    if _finished_before(request_path, result_path, request):
        print(f"[speed] {name}: reusing {result_path.name}", file=sys.stderr, flush=True)
        return {**json.loads(result_path.read_text(encoding="utf-8")), "inputs": request}
    result_path.unlink(missing_ok=True)        # never pair a new request with an old result
    atomic_write_json(request_path, request)
    paths = [str(request_path), str(result_path)]
    command = command + (paths if positional else ["--_request", paths[0], "--_result", paths[1]])
    print(f"[speed] {name} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT)).returncode
    seconds = time.perf_counter() - started
    print(f" {seconds:.0f} s", file=sys.stderr, flush=True)
    if status != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SpeedError(f"{name} failed (exit {status}); log {log_path}:\n{tail}")
    result = {**json.loads(result_path.read_text(encoding="utf-8")), "process_seconds": round(seconds, 1)}
    atomic_write_json(result_path, result)     # with its duration, so that --resume reports it too
    return {**result, "inputs": request}


def _finished_before(request_path: Path, result_path: Path, request: dict) -> bool:
    """A result left by an interrupted run (--resume keeps the work folder) for exactly this request."""
    if not (request_path.is_file() and result_path.is_file()):
        return False
    return json.loads(request_path.read_text(encoding="utf-8")) == json.loads(json.dumps(request))


# ============================================================================== Hugging Face environment
def ensure_hf_env(path: Path) -> Path:
    """The python of a virtual environment with HF_ENV_PACKAGES, created (or completed) when needed.

    A marker file lists what was installed, so later runs reuse the environment at once.
    ``torch==2.13.0`` resolves to the local CPU wheel on a machine without a GPU.
    """
    python = path / "bin" / "python"
    marker = path / "squad-bench-packages.txt"
    wanted = "\n".join(HF_ENV_PACKAGES)
    if python.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return python
    print(f"[speed] setting up the Hugging Face baseline environment in {path} "
          f"({' '.join(HF_ENV_PACKAGES)}) ...", file=sys.stderr, flush=True)
    if not python.is_file():
        _checked([sys.executable, "-m", "venv", str(path)], "python -m venv")
    _checked([str(python), "-m", "pip", "install", "--quiet", *HF_ENV_PACKAGES], "pip install")
    marker.write_text(wanted, encoding="utf-8")
    return python


def _checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SpeedError(f"{what} failed while setting up the baseline environment (pass --skip_baselines "
                         f"to run without it):\n{done.stderr[-2000:]}")


def hf_versions(figures: dict) -> dict | None:
    for figure in figures.values():
        for value in figure.values() if isinstance(figure, dict) else ():
            if isinstance(value, dict) and "versions" in value and value.get("task"):
                return value["versions"]
    return None


# ============================================================================== figure 1: inference
def figure_inference(ctx: dict) -> dict:
    settings, work = ctx["settings"], ctx["work"]
    questions_file = work / "inference_questions.json"
    ours_request = {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["dev11"],
                    "questions": settings["questions"], "questions_file": str(questions_file),
                    "logits_file": str(work / "inference_logits.npz"), **WINDOW}
    hf_request = {"task": "pipeline", "model_dir": ctx["model"]["model_dir"], "questions_file": str(questions_file),
                  "threads": ctx["threads"], **WINDOW,
                  "runs": [{"name": "default", "batch_size": None, "dtype": "float32"},
                           {"name": "same", "batch_size": WINDOW["eval_batch_size"], "dtype": "float32"}]}
    ours, theirs = [], []
    for repeat in range(settings["repeats"]):
        ours.append(run_child("inference", ours_request, work, ctx["env"]))   # writes the questions file
        theirs.append(run_hf(ctx["hf"], hf_request, work, ctx["env"]))
    return compare_inference(best_runs(ours), best_runs(theirs), ours[-1], ctx)


def best_runs(results: list[dict]) -> dict:
    """Per run name, the repeat with the shortest wall time, plus every repeat's wall/CPU seconds."""
    if results[0].get("skipped"):
        return results[0]
    best = {}
    for result in results:
        for name, run in result["runs"].items():
            if name not in best or run["wall_s"] < best[name]["wall_s"]:
                best[name] = dict(run)
    for name in best:
        best[name]["all_repeats"] = [[r["runs"][name]["wall_s"], r["runs"][name]["cpu_s"]] for r in results]
    return {**results[-1], "runs": best}


def compare_inference(ours: dict, theirs: dict, last: dict, ctx: dict) -> dict:
    figure = {"ours": _without_answers(ours), "hf_pipeline": _without_answers(theirs),
              "questions": last["questions"], "data": ctx["data"]["dev11"]}
    if theirs.get("skipped"):
        figure.update({"speedup_default": None, "speedup_same": None, "agreement": None})
        return figure
    gold = ctx["data"]["dev11"]
    for name in ("default", "same"):
        figure["hf_pipeline"]["runs"][name]["scores"] = score_answers(gold, last["question_ids"],
                                                                      theirs["runs"][name]["answers"])
    pairs = {"default": ("default", "default"), "same": ("same", "same")}
    figure["speedup_default"], figure["speedup_same"] = (
        _ratio(ours["runs"][a]["questions_per_s"], theirs["runs"][b]["questions_per_s"]) for a, b in pairs.values())
    figure["f1_gap_default"] = round(ours["runs"]["default"]["scores"]["f1"]
                                     - figure["hf_pipeline"]["runs"]["default"]["scores"]["f1"], 3)
    figure["agreement"] = {name: answer_agreement(ours["runs"][a]["answers"], theirs["runs"][b]["answers"])
                           for name, (a, b) in pairs.items()}
    return figure


def _without_answers(result: dict) -> dict:
    if result.get("skipped"):
        return result
    return {**result, "runs": {name: {k: v for k, v in run.items() if k != "answers"}
                               for name, run in result["runs"].items()}}


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def score_answers(data_file: str, question_ids: list[str], answers: dict) -> dict:
    """EM/F1 (bench.evaluate) of ``answers`` on the questions ``question_ids`` of ``data_file``."""
    import dataclasses

    from bench.core.data import load_squad
    from bench.core.scoring import evaluate

    dataset = load_squad(data_file)
    wanted = set(question_ids)
    subset = dataclasses.replace(dataset, examples=[ex for ex in dataset.examples if ex.qid in wanted])
    scores = evaluate(subset, answers)
    return {"exact_match": round(scores.get("exact_match", scores.get("exact")), 3), "f1": round(scores["f1"], 3)}


def answer_agreement(ours: dict, theirs: dict) -> dict:
    """How often two systems give the same answer to the same question.

    ``exact``: share of the common questions whose answer strings are identical; ``normalized``:
    identical after SQuAD's answer normalization (case, punctuation, articles, whitespace).
    """
    from bench.core.scoring import normalize_answer

    common = sorted(set(ours) & set(theirs))
    if not common:
        return {"questions": 0, "exact": None, "normalized": None}
    exact = sum(ours[q] == theirs[q] for q in common)
    normalized = sum(normalize_answer(ours[q]) == normalize_answer(theirs[q]) for q in common)
    return {"questions": len(common), "exact": round(exact / len(common), 4),
            "normalized": round(normalized / len(common), 4)}


# ============================================================================== figure 2: training
def figure_training(ctx: dict) -> dict:
    settings, work = ctx["settings"], ctx["work"]
    request = {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["train"],
               "features_file": str(work / "train_features_padded.npz"), "batch_size": settings["train_batch"],
               "warmup_steps": settings["train_warmup"], "steps": settings["train_steps"], **WINDOW}
    ours = run_child("training", request, work, ctx["env"])
    hf_request = {"task": "train", "model_dir": request["model_dir"], "features_file": request["features_file"],
                  "batch_size": request["batch_size"], "warmup_steps": request["warmup_steps"],
                  "steps": request["steps"], "threads": ctx["threads"],
                  "runs": [{"name": "float32", "bf16": False}, {"name": "bfloat16", "bf16": True}]}
    theirs = run_hf(ctx["hf"], hf_request, work, ctx["env"])
    figure = {"ours": ours, "hf_trainer": theirs, "speedups": {}}
    if not theirs.get("skipped"):
        for name, run in ours["runs"].items():
            baseline = theirs["runs"].get(run["dtype"])
            figure["speedups"][name] = _ratio(run["samples_per_s"], baseline["samples_per_s"]) if baseline else None
    return figure


# ============================================================================== figures 3-5
def figure_eval_full(ctx: dict) -> dict:
    return run_child("eval_full", {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["dev20"],
                                   "questions": ctx["settings"]["eval_questions"], **WINDOW},
                     ctx["work"], ctx["env"])


def figure_postprocess(ctx: dict) -> dict:
    work = ctx["work"]
    request = {"data": ctx["data"]["dev20"], "questions": ctx["settings"]["postprocess_questions"],
               "model_dir": ctx["model"]["model_dir"], "questions_file": str(work / "inference_questions.json"),
               "logits_file": str(work / "inference_logits.npz"), "dev11": ctx["data"]["dev11"],
               "work": str(work), "family": ctx["model"]["family"], **WINDOW}
    ours = run_child("postprocess", request, work, ctx["env"])
    theirs = run_hf(ctx["hf"], {"task": "postprocess", "model_dir": request["model_dir"],
                                "questions_file": request["questions_file"], "logits_file": request["logits_file"],
                                "threads": ctx["threads"], **WINDOW}, work, ctx["env"])
    figure = {"ours": {k: v for k, v in ours.items() if k != "answers"}, "hf_pipeline_postprocess":
              {k: v for k, v in theirs.items() if k != "answers"}}
    if not theirs.get("skipped"):
        figure["speedup_vs_hf_cpu"] = _ratio(theirs["cpu_s"], ours["same_logits"]["cpu_s"])
        figure["speedup_vs_hf_wall"] = _ratio(theirs["wall_s"], ours["same_logits"]["wall_s"])
        figure["agreement_vs_hf"] = answer_agreement(ours["answers"], theirs["answers"])
    return figure


def figure_features(ctx: dict) -> dict:
    return run_child("features", {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["dev20"],
                                  "repeats": ctx["settings"]["feature_repeats"],
                                  "questions": ctx["settings"]["feature_questions"], "cache_dir": str(ctx["work"] / "cache"),
                                  "family": ctx["model"]["family"], **WINDOW}, ctx["work"], ctx["env"])


def memory_figure(figures: dict) -> dict:
    """Figure 6: the peak memory every measured process reported, by figure and side."""
    table = {}
    for figure_name, figure in figures.items():
        for side, result in figure.items():
            if isinstance(result, dict) and "peak_memory" in result:
                table[f"{figure_name}/{side}"] = result["peak_memory"]
            if isinstance(result, dict) and "stage_peak_rss" in result:
                for stage, peak in result["stage_peak_rss"].items():
                    table[f"{figure_name}/{side}/{stage}"] = {"kind": "rss_sampled", "bytes": peak}
        if isinstance(figure, dict) and "stage_peak_rss" in figure:
            for stage, peak in figure["stage_peak_rss"].items():
                table[f"{figure_name}/{stage}"] = {"kind": "rss_sampled", "bytes": peak}
        if isinstance(figure, dict) and "peak_memory" in figure:
            table[figure_name] = figure["peak_memory"]
    return table


def machine_info(model: dict, threads: int | None, load_before: tuple) -> dict:
    from bench.run.record import hardware_info

    return {**hardware_info(model.get("accelerator"), 1 if model["device"] == "cuda" else 0),
            "device": model["device"], "native_bf16": model["native_bf16"], "torch_threads": model["threads"],
            "threads_flag": threads, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


# ============================================================================== GPU helpers
def peak_flops(device_name: str) -> float | None:
    """Dense bf16/fp16 tensor-core peak FLOP/s of a GPU, by name; None when unknown."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu(num_parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: 6 x parameters x tokens/s (forward + backward) over the peak."""
    if not peak:
        return None
    return round(6.0 * num_parameters * tokens_per_s / peak, 4)


# ============================================================================== markdown
def render_markdown(report: dict) -> str:
    figures = report["figures"]
    lines = [f"# Speed ({report['mode']} mode)", "", _machine_line(report), ""]
    for title, key, render in _SECTIONS:
        figure = figures.get(key)
        if isinstance(figure, dict) and figure.get("skipped"):
            lines += [f"## {title}", "", f"Not run: {figure['skipped']}.", ""]
        else:
            lines += render(figures, report)
    lines += [f"Total {report['seconds']:.0f} s. Wall seconds are the best repeat; CPU seconds are process "
              f"CPU time (see speed.json for every repeat).", ""]
    return "\n".join(lines)


def _machine_line(report: dict) -> str:
    machine, model = report["machine"], report["model"]
    hf = report.get("hf_versions") or {}
    baseline = ("baselines skipped (--skip_baselines)" if report["baselines_skipped"]
                else f"baseline: transformers {hf.get('transformers')} / torch {hf.get('torch')}")
    return (f"Model {model['name']} ({model['num_parameters'] / 1e6:.1f} M parameters, QA head "
            f"{model['head_source']}); {machine['device']} ({machine['cpu']}, {machine['cpu_count']} cores, "
            f"{machine['torch_threads']} torch threads, native bf16: {machine['native_bf16']}); "
            f"ours: torch {report['versions'].get('torch')} / transformers {report['versions'].get('transformers')}; "
            f"{baseline}. Load average before/after: {machine['load_average_before'][0]} / "
            f"{machine['load_average_after'][0]}.")


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def _target(value, target, higher=True) -> str:
    if value is None:
        return f"target {'≥' if higher else '≤'} {target}"
    met = value >= target if higher else abs(value) <= target
    return f"{'met' if met else 'NOT met'} (target {'≥' if higher else '≤'} {target})"


def _md_inference(figures: dict, report: dict) -> list[str]:
    fig = figures["inference"]
    ours, hf = fig["ours"]["runs"], fig["hf_pipeline"]
    hf_runs = {} if hf.get("skipped") else hf["runs"]
    lines = [f"## 1. Inference end to end ({fig['questions']} SQuAD 1.1 dev questions)", "",
             "| run | dtype | batch | questions/s | wall s | CPU s | EM | F1 |", "|---|---|---|---|---|---|---|---|"]
    for label, run in [(f"ours, {k}", v) for k, v in ours.items()] + [(f"HF pipeline, {k}", v) for k, v in hf_runs.items()]:
        scores = run.get("scores", {})
        lines.append(f"| {label} | {run['dtype']} | {run['batch_size']} | {_fmt(run['questions_per_s'])} | "
                     f"{_fmt(run['wall_s'], 2)} | {_fmt(run['cpu_s'], 2)} | {_fmt(scores.get('exact_match'), 2)} | "
                     f"{_fmt(scores.get('f1'), 2)} |")
    lines.append("")
    if hf.get("skipped"):
        return lines + ["Baseline skipped: no ratios.", ""]
    agreement = fig["agreement"]
    int8 = ours.get("int8")
    lines += [f"- Defaults (ours {ours['default']['dtype']} batch {ours['default']['batch_size']} vs pipeline "
              f"float32 batch 1): **{_fmt(fig['speedup_default'], 2)}×** — {_target(fig['speedup_default'], TARGETS['inference_default'])}; "
              f"F1 gap {_fmt(fig['f1_gap_default'], 2)} — {_target(fig['f1_gap_default'], TARGETS['f1_gap'], higher=False)}.",
              f"- Same dtype and batch (float32, batch {WINDOW['eval_batch_size']}): **{_fmt(fig['speedup_same'], 2)}×** — "
              f"{_target(fig['speedup_same'], TARGETS['inference_same'])}.",
              f"- Answer agreement (identical strings): defaults {_fmt(100 * agreement['default']['exact'], 1)}%, "
              f"same {_fmt(100 * agreement['same']['exact'], 1)}% (after SQuAD normalization "
              f"{_fmt(100 * agreement['default']['normalized'], 1)}% / {_fmt(100 * agreement['same']['normalized'], 1)}%)."]
    if int8:
        lines.append(f"- int8 (dynamic, linear layers): {_fmt(int8['questions_per_s'])} q/s, EM/F1 change vs float32 "
                     f"{_fmt(int8['delta_vs_float32']['exact_match'], 2)} / {_fmt(int8['delta_vs_float32']['f1'], 2)}.")
    return lines + [""]


def _md_training(figures: dict, report: dict) -> list[str]:
    fig = figures["training"]
    ours, hf = fig["ours"], fig["hf_trainer"]
    lines = [f"## 2. Training throughput (batch {ours['batch_size']}, max_seq_length {ours['max_seq_length']}, "
             f"{ours['steps']} steps after {ours['warmup_steps']} warm-up)", "",
             "| run | dtype | batches | samples/s | real tokens/s | padded tokens/s | CPU s/step | vs Trainer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in ours["runs"].items():
        lines.append(f"| ours {name} | {run['dtype']} | {run['batches']} | {_fmt(run['samples_per_s'], 2)} | "
                     f"{_fmt(run['real_tokens_per_s'], 0)} | {_fmt(run['padded_tokens_per_s'], 0)} | "
                     f"{_fmt(run['cpu_s'] / run['steps'], 2)} | {_fmt(fig['speedups'].get(name), 2, '×')} |")
    for name, run in ({} if hf.get("skipped") else hf["runs"]).items():
        lines.append(f"| HF Trainer ({run['optimizer']}) | {run['dtype']} | padded to {ours['max_seq_length']} | "
                     f"{_fmt(run['samples_per_s'], 2)} | {_fmt(run['real_tokens_per_s'], 0)} | "
                     f"{_fmt(run['padded_tokens_per_s'], 0)} | {_fmt(run['cpu_s'] / run['steps'], 2)} | 1× |")
    lines.append("")
    if not hf.get("skipped"):
        for name, ratio in fig["speedups"].items():
            target = TARGETS["train_padded"] if "padded" in name else TARGETS["train_dynamic"]
            lines.append(f"- ours {name}: {_fmt(ratio, 2)}× Trainer — {_target(ratio, target)}.")
        lines.append("")
    return lines


def _md_eval_full(figures: dict, report: dict) -> list[str]:
    fig = figures["eval_full"]
    s = fig["stages"]
    return [f"## 3. Evaluation of dev-v2.0 ({fig['questions']:,} questions, {fig['windows']:,} windows, "
            f"{fig['dtype']}, batch {fig['batch_size']})", "",
            "| stage | wall s | CPU s | peak RSS MiB |", "|---|---|---|---|"] + [
            f"| {name} | {_fmt(t['wall_s'], 2)} | {_fmt(t['cpu_s'], 2)} | "
            f"{_fmt(fig['stage_peak_rss'].get(name, 0) / 2**20, 0)} |" for name, t in s.items()] + [
            "", f"- {fig['windows_per_s']:.1f} windows/s in the forward passes; EM {fig['scores']['exact']:.2f} / "
            f"F1 {fig['scores']['f1']:.2f} at the fixed threshold.", ""]


def _md_postprocess(figures: dict, report: dict) -> list[str]:
    fig = figures["postprocess"]
    ours, ref = fig["ours"], fig["ours"].get("reference")
    lines = ["## 4. Post-processing", ""]
    if ref and not ref.get("skipped"):
        lines.append(f"- Vectorized vs reference loop ({ref['questions']:,} dev-v2.0 questions, {ref['windows']:,} "
                     f"windows, random logits): {ref['vectorized_cpu_s']:.3f} s vs {ref['reference_cpu_s']:.3f} s CPU = "
                     f"**{ref['speedup_cpu']:.1f}×** (with every n-best dict built: {ref['speedup_with_to_dict_cpu']:.1f}×).")
    else:
        lines.append(f"- Reference loop: {(ref or {}).get('skipped', 'not run')}.")
    same = ours["same_logits"]
    hf = fig["hf_pipeline_postprocess"]
    if hf.get("skipped"):
        lines.append(f"- Ours on figure 1's float32 logits: {same['cpu_s']:.3f} s CPU for {same['questions']} questions; "
                     f"pipeline post-processing skipped.")
    else:
        lines.append(f"- Same logits as the pipeline ({same['questions']} questions of figure 1, float32): ours "
                     f"{same['cpu_s']:.3f} s CPU (n_best_size {WINDOW['n_best_size']}) vs the pipeline's "
                     f"postprocess {hf['cpu_s']:.3f} s CPU (top_k 1) = **{_fmt(fig['speedup_vs_hf_cpu'], 1)}×**; "
                     f"identical answers {_fmt(100 * fig['agreement_vs_hf']['exact'], 1)}%.")
    return lines + [""]


def _md_features(figures: dict, report: dict) -> list[str]:
    fig = figures["features"]
    return ["## 5. Feature building (dev-v2.0)", "",
            f"- {fig['questions']:,} questions → {fig['windows']:,} windows: cold {fig['cold_wall_s']:.3f} s "
            f"({fig['cold_examples_per_s']:,.0f} examples/s), cached {fig['cached_wall_s'] * 1000:.1f} ms "
            f"({fig['cached_examples_per_s']:,.0f} examples/s): **{fig['cache_speedup']:.0f}×** — "
            f"{_target(fig['cache_speedup'], TARGETS['feature_cache'])}.", ""]


def _md_gpu(figures: dict, report: dict) -> list[str]:
    fig = figures.get("gpu")
    if not fig:
        return ["## GPU", "", "No GPU here: the GPU figure (ELECTRA-base training at 384 in bf16/fp16, MFU, "
                "evaluation time) was not run.", ""]
    lines = [f"## GPU ({fig['device_name']}): ELECTRA-base, max_seq_length 384", "",
             "| dtype | sequences/s | real tokens/s | MFU |", "|---|---|---|---|"]
    for name, run in fig["runs"].items():
        lines.append(f"| {name} | {_fmt(run['samples_per_s'], 1)} | {_fmt(run['real_tokens_per_s'], 0)} | "
                     f"{_fmt(100 * run['mfu'] if run['mfu'] else None, 1, '%')} |")
    lines += ["", f"- Anchors: NVIDIA DLE ELECTRA-base {GPU_ANCHORS['electra_base_a100_40gb_amp_seq_per_s']} seq/s "
              f"(A100-40GB, AMP); BERT-large {GPU_ANCHORS['bert_large_a100_80gb_amp_seq_per_s']} seq/s (A100-80GB, AMP).",
              f"- dev-v2.0 evaluation: {fig['eval']['wall_s']:.1f} s ({fig['eval']['windows_per_s']:.0f} windows/s).", ""]
    return lines


def _md_memory(figures: dict, report: dict) -> list[str]:
    lines = ["## 6. Peak memory", "", "| process / stage | kind | MiB |", "|---|---|---|"]
    for name, peak in figures["memory"].items():
        lines.append(f"| {name} | {peak['kind']} | {peak['bytes'] / 2**20:,.0f} |")
    return lines + [""]


_SECTIONS = (("1. Inference end to end", "inference", _md_inference), ("2. Training throughput", "training", _md_training),
             ("3. Evaluation of dev-v2.0", "eval_full", _md_eval_full), ("4. Post-processing", "postprocess", _md_postprocess),
             ("5. Feature building", "features", _md_features), ("GPU", "gpu", _md_gpu), ("6. Peak memory", "memory", _md_memory))


# ============================================================================== measured processes
# Everything below runs in a child process (``--_task``); torch and transformers are imported there,
# never in the parent, which only orchestrates and scores.
def child_main(task: str, request_path: Path, result_path: Path) -> int:
    """Entry point of one measured process: run ``task`` and write its result with the peak memory."""
    request = json.loads(request_path.read_text(encoding="utf-8"))
    result = TASKS[task](request)
    result["peak_memory"] = peak_memory()
    atomic_write_json(result_path, result)
    return 0


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict:
    wall, cpu = clock()
    return {"wall_s": round(wall - start[0], 4), "cpu_s": round(cpu - start[1], 4)}


def peak_memory() -> dict:
    """This process's peak: torch.cuda.max_memory_allocated on a GPU, else the peak resident set."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated())}
    return {"kind": "rss", "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


class StagePeaks:
    """Peak resident set per named stage of one process, sampled every 20 ms by a background thread.

    Why sampling: ru_maxrss only grows, so the peak of a later, smaller stage would be hidden.
    """

    def __init__(self):
        self.peaks: dict[str, int] = {}
        self._stage, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stage(self, name: str):
        self._stage = name
        self.peaks.setdefault(name, _current_rss())
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.peaks[self._stage] = max(self.peaks[self._stage], _current_rss())
        self._stage = None

    def _sample(self):
        while not self._stop.wait(0.02):
            stage = self._stage
            if stage is not None:
                self.peaks[stage] = max(self.peaks.get(stage, 0), _current_rss())

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ----------------------------------------------------------------------------------------- model
def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _default_dtype() -> str:
    from bench.apps.demo import default_dtype
    return default_dtype()


def task_prepare_model(request: dict) -> dict:
    """The model folder both sides load: a *ForQuestionAnswering checkpoint (config, weights, tokenizer)."""
    import torch

    out_dir = Path(request["out_dir"])
    base = request["model_path"]
    if base is None and request["quick"]:
        base, name = str(_write_tiny_bert(out_dir.parent / "tiny_bert")), "tiny random BERT (2 layers, hidden 64)"
    elif base is None:
        if minilm_model_dir() is None:
            raise SpeedError(f"all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL_HINT}")
        base, name = str(minilm_model_dir()), "all-MiniLM-L6-v2"
    else:
        name = Path(base).name
    head_source = _write_qa_folder(Path(base), out_dir, request.get("checkpoint"))
    model = _load_qa_model(str(out_dir), _device())
    return {"name": name, "source": base, "model_dir": str(out_dir), "family": model.family,
            "head_source": head_source, "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "device": _device().type, "native_bf16": _default_dtype() == "bfloat16" and _device().type == "cpu",
            "default_dtype": _default_dtype(), "threads": torch.get_num_threads(),
            "accelerator": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": _our_versions()}


def _our_versions() -> dict:
    from bench.run.record import library_versions
    return library_versions(("torch", "transformers", "tokenizers", "numpy"))


def _write_tiny_bert(out_dir: Path) -> Path:
    """A 2-layer, hidden-64 random BERT with the real WordPiece tokenizer (from all-MiniLM-L6-v2)."""
    import torch
    from transformers import BertConfig, BertModel

    source = minilm_model_dir()
    if source is None:
        raise SpeedError(f"--quick borrows the WordPiece tokenizer of all-MiniLM-L6-v2: {MINILM_INSTALL_HINT}")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(str(out_dir))
    _copy_tokenizer(source, out_dir)
    return out_dir


def _copy_tokenizer(source: Path, out_dir: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt",
                 "vocab.json", "spiece.model"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)


def _write_qa_folder(base: Path, out_dir: Path, checkpoint: str | None = None) -> str:
    """Save ``base`` as an AutoModelForQuestionAnswering folder; returns where its QA head came from.

    ``checkpoint`` (ours, basic head) overrides backbone and head. A folder that already has a QA
    head keeps it; otherwise the head is drawn with a fixed seed, so both sides load the same weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    config = AutoConfig.from_pretrained(str(base))
    trained = any(arch.endswith("ForQuestionAnswering") for arch in (config.architectures or []))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForQuestionAnswering.from_pretrained(str(base), dtype=torch.float32)
    if checkpoint:
        _load_our_checkpoint(model, Path(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    _copy_tokenizer(base, out_dir)
    if checkpoint:
        return f"trained (--checkpoint {checkpoint})"
    return "trained (from the folder)" if trained else "untrained (seeded random): EM/F1 only compare the two sides"


def _load_our_checkpoint(model, checkpoint: Path) -> None:
    """Copy a QAModel checkpoint (backbone.*, head.span_scores.*) into a *ForQuestionAnswering model."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint))
    if "head.span_scores.weight" not in state:
        raise SpeedError(f"--checkpoint {checkpoint}: no basic head (head.span_scores); train with --head basic")
    prefix = model.base_model_prefix
    mapped = {f"{prefix}.{key[len('backbone.'):]}": value for key, value in state.items()
              if key.startswith("backbone.")}
    mapped.update({"qa_outputs.weight": state["head.span_scores.weight"],
                   "qa_outputs.bias": state["head.span_scores.bias"]})
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise SpeedError(f"--checkpoint {checkpoint} does not match the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def _load_qa_model(model_dir: str, device):
    """Our QAModel (basic head) with the folder's backbone and its qa_outputs weights as the head."""
    from safetensors.torch import load_file

    from bench.backends.torch.modeling import build_qa_model, resolve_model_source

    model = build_qa_model(resolve_model_source("bert_base", model_dir), head="basic", dropout=0.1)
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    model.head.span_scores.weight.data.copy_(weights["qa_outputs.weight"])
    model.head.span_scores.bias.data.copy_(weights["qa_outputs.bias"])
    return model.to(device).eval()


def _load_tokenizer(model_dir: str):
    from bench.backends.torch.modeling import load_tokenizer, resolve_model_source
    return load_tokenizer(resolve_model_source("bert_base", model_dir))


def _feature_params(family: str, stride_mode: str, request: dict):
    from bench.core.features import FeatureParams
    from bench.run.pipeline import ROBERTA_STYLE_TYPES

    style = "roberta" if family in ROBERTA_STYLE_TYPES else "bert"
    return FeatureParams(max_seq_length=request["max_seq_length"], max_query_length=request["max_query_length"],
                         doc_stride=request["doc_stride"], stride_mode=stride_mode, input_style=style)


def _autocast(dtype: str, device):
    """An autocast context for float16/bfloat16, else a null context (float32, int8)."""
    from bench.backends.torch.runner import autocast_factory
    return autocast_factory(dtype if dtype in ("float16", "bfloat16") else "float32", device)()


# ----------------------------------------------------------------------------------------- answering
def answer_questions(run_model, tokenizer, dataset, params, request: dict, *, autocast_dtype: str, batch_size: int,
                     version_2: bool = False) -> tuple[dict, object, dict]:
    """Our whole answering path: windows, forward passes, post-processing. Returns (answers, features, logits).

    ``run_model, autocast_dtype`` come from inference_model(model, dtype), called once, untimed.
    """
    from bench.core.features import build_features
    from bench.core.postprocess import candidates_from_logits, null_scores_from_logits, postprocess

    features = build_features(dataset.examples, tokenizer, params, is_training=False)
    logits = predict_logits(run_model, features, autocast_dtype=autocast_dtype, batch_size=batch_size,
                            pad_id=tokenizer.pad_token_id or 0)
    candidates = candidates_from_logits(logits["start_logits"], logits["end_logits"], features,
                                        request["n_best_size"])
    nulls = null_scores_from_logits(logits["start_logits"], logits["end_logits"])
    preds = postprocess(dataset, features, candidates, nulls, n_best_size=request["n_best_size"],
                        max_answer_length=request["max_answer_length"], version_2_with_negative=version_2)
    return preds.predictions, features, logits


def predict_logits(run_model, features, *, autocast_dtype: str, batch_size: int, pad_id: int) -> dict:
    """Forward passes over every window; ``run_model, autocast_dtype`` come from inference_model(model, dtype)."""
    import numpy as np

    from bench.backends.torch.inference import predict_windows

    device = next(run_model.parameters()).device
    return predict_windows(run_model, features, np.arange(len(features)), batch_size=batch_size, pad_id=pad_id,
                           device=device, autocast=_autocast(autocast_dtype, device))


def _subset(dataset, limit):
    from bench.run.pipeline import subset
    return subset(dataset, limit, seed=0)


def task_inference(request: dict) -> dict:
    """Figure 1, our side: default (bf16 where native), float32 at batch 16, int8; plus logits for figure 4."""
    from bench.core.data import load_squad
    from bench.core.scoring import evaluate
    from bench.backends.torch.modeling import inference_model

    dataset = _subset(load_squad(request["data"]), request["questions"])
    _write_questions(dataset, Path(request["questions_file"]))
    model, tokenizer = _load_qa_model(request["model_dir"], _device()), _load_tokenizer(request["model_dir"])
    params = _feature_params(model.family, "overlap", request)   # Hugging Face's doc_stride is an overlap
    runs = {"default": (_default_dtype(), request["eval_batch_size"]), "same": ("float32", request["eval_batch_size"])}
    if _device().type == "cpu":
        runs["int8"] = ("int8", request["eval_batch_size"])
    results = {}
    for name, (dtype, batch_size) in runs.items():
        run_model, autocast_dtype = inference_model(model, dtype)
        answer_questions(run_model, tokenizer, _subset(dataset, 16), params, request, autocast_dtype=autocast_dtype,
                         batch_size=batch_size)                                    # warm-up, not timed
        start = clock()
        answers, features, logits = answer_questions(run_model, tokenizer, dataset, params, request,
                                                     autocast_dtype=autocast_dtype, batch_size=batch_size)
        timing = since(start)
        scores = evaluate(dataset, answers)
        results[name] = {**timing, "dtype": dtype, "batch_size": batch_size, "windows": len(features),
                         "questions_per_s": round(len(dataset.examples) / timing["wall_s"], 2),
                         "scores": {"exact_match": round(scores["exact_match"], 3), "f1": round(scores["f1"], 3)},
                         "answers": answers}
        if name == "same":
            _save_logits(Path(request["logits_file"]), features, logits)
    if "int8" in results:
        results["int8"]["delta_vs_float32"] = {k: round(results["int8"]["scores"][k] - results["same"]["scores"][k], 3)
                                               for k in ("exact_match", "f1")}
    return {"runs": results, "questions": len(dataset.examples), "question_ids": [ex.qid for ex in dataset.examples],
            "threads": _threads()}


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def _write_questions(dataset, path: Path) -> None:
    atomic_write_json(path, [{"id": ex.qid, "question": ex.question, "context": ex.context}
                             for ex in dataset.examples], indent=None)


def _save_logits(path: Path, features, logits: dict) -> None:
    """Start/end logits and token ids per window, padded, for the pipeline's post-processing (figure 4)."""
    import numpy as np

    from bench.core.features import batch_arrays

    ids = batch_arrays(features, np.arange(len(features)), pad_id=0)["input_ids"].astype(np.int32)
    width = ids.shape[1]
    np.savez(path, input_ids=ids, start_logits=logits["start_logits"][:, :width],
             end_logits=logits["end_logits"][:, :width])


# ----------------------------------------------------------------------------------------- training
def task_training(request: dict) -> dict:
    """Figure 2, our side: Trainer.run_update with dynamic padding + length grouping, and padded batches."""
    from bench.core.data import load_squad
    from bench.core.features import build_features

    model = _load_qa_model(request["model_dir"], _device())
    tokenizer = _load_tokenizer(request["model_dir"])
    dataset = load_squad(request["data"], for_training=True)
    params = _feature_params(model.family, "overlap", request)   # run_qa.py's doc_stride is an overlap too
    features = build_features(dataset.examples, tokenizer, params, is_training=True)
    _save_padded_features(Path(request["features_file"]), features, tokenizer.pad_token_id or 0)
    del model
    runs = {}
    for dtype in ("float32", _default_dtype() if _default_dtype() != "float32" else "bfloat16"):
        for batches in ("dynamic", "padded"):
            runs[f"{dtype} {batches}"] = train_steps(request, features, dtype=dtype, padded=batches == "padded",
                                                     pad_id=tokenizer.pad_token_id or 0)
    return {"runs": runs, "windows": len(features), "batch_size": request["batch_size"],
            "max_seq_length": request["max_seq_length"], "steps": request["steps"],
            "warmup_steps": request["warmup_steps"], "threads": _threads()}


def train_steps(request: dict, features, *, dtype: str, padded: bool, pad_id: int,
                model_dir: str | None = None, compile_backbone: bool = False) -> dict:
    """Time ``steps`` optimizer updates of our real training step after ``warmup_steps`` untimed ones."""
    import numpy as np
    import torch

    from bench.core.flags import config_from_dict
    from bench.run.distributed import detect_world
    from bench.run.pipeline import plan_epoch
    from bench.backends.torch.dist import init_comm
    from bench.backends.torch.optim import build_optimizer, build_scheduler
    from bench.backends.torch.runner import autocast_factory
    from bench.backends.torch.train_loop import Trainer

    device = _device()
    config = config_from_dict({"do_train": True, "model_path": model_dir or request["model_dir"], "head": "basic",
                               "batch_size": request["batch_size"], "dtype": dtype, "length_grouping": not padded,
                               "round_to": request["max_seq_length"] if padded else None, "lr": 3e-5,
                               "gpus": "0" if device.type == "cuda" else "-1", "max_seq_length": request["max_seq_length"],
                               "doc_stride": request["doc_stride"], "stride_mode": "overlap"})
    torch.manual_seed(0)
    model = _load_qa_model(config.model_path, device).train()
    if compile_backbone:
        model.backbone.compile(dynamic=True)
    comm = init_comm(detect_world("device", config.gpus))
    optimizer = build_optimizer(model, config)
    total = request["warmup_steps"] + request["steps"]
    scaler = torch.amp.GradScaler(device.type) if dtype == "float16" else None
    trainer = Trainer(config=config, model=model, train_model=model, optimizer=optimizer,
                      scheduler=build_scheduler(optimizer, total, 0), scaler=scaler, comm=comm, features=features,
                      order=np.random.default_rng(0).permutation(len(features)), total_updates=total, pad_id=pad_id,
                      device=device, autocast_factory=autocast_factory(dtype, device), ckpt_root=Path("."),
                      log_path=None)
    plan = plan_epoch(features, trainer.order, epoch=0, rank=0, world_size=1, seed=0, batch_size=config.batch_size,
                      num_accumulated=1, length_grouping=not padded)
    updates = plan.updates[:total]
    for micro_batches in updates[:request["warmup_steps"]]:
        trainer.run_update(micro_batches)
    _synchronize(device)
    tokens_before, start = trainer.stats.tokens, clock()
    for micro_batches in updates[request["warmup_steps"]:]:
        trainer.run_update(micro_batches)
    _synchronize(device)
    timing = since(start)
    samples = sum(len(mb) for update in updates[request["warmup_steps"]:] for mb in update)
    return {**timing, "dtype": dtype, "batches": "padded to max_seq_length" if padded else "dynamic + length grouping",
            "steps": len(updates) - request["warmup_steps"], "samples": samples,
            "samples_per_s": round(samples / timing["wall_s"], 3),
            "real_tokens_per_s": round((trainer.stats.tokens - tokens_before) / timing["wall_s"], 1),
            "padded_tokens_per_s": round(_padded_tokens(features, updates[request["warmup_steps"]:], trainer.round_to)
                                         / timing["wall_s"], 1),
            "optimizer": _optimizer_kind(optimizer)}


def _synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _padded_tokens(features, updates, round_to: int | None) -> int:
    """Tokens the model actually processed, padding included (batch x its width, rounded up to ``round_to``)."""
    def width(batch) -> int:
        longest = int(features.lengths[batch].max())
        return -(-longest // round_to) * round_to if round_to else longest
    return sum(len(mb) * width(mb) for update in updates for mb in update)


def _optimizer_kind(optimizer) -> str:
    group = optimizer.param_groups[0]
    return f"AdamW ({'fused' if group.get('fused') else 'foreach' if group.get('foreach') else 'for-loop'})"


def _save_padded_features(path: Path, features, pad_id: int) -> None:
    """The training windows padded to max_seq_length, as run_qa.py feeds transformers.Trainer."""
    import numpy as np

    from bench.core.features import batch_arrays

    arrays = batch_arrays(features, np.arange(len(features)), pad_id=pad_id, round_to=features.params.max_seq_length)
    np.savez(path, **{name: arrays[name].astype(np.int32) for name in
                      ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")})


# ----------------------------------------------------------------------------------------- eval, post, features
def task_eval_full(request: dict) -> dict:
    """Figure 3: dev-v2.0 with our defaults, stage by stage (features, forward, post-processing, scoring)."""
    from bench.core.data import load_squad
    from bench.core.scoring import evaluate
    from bench.core.features import build_features
    from bench.core.postprocess import candidates_from_logits, null_scores_from_logits, postprocess
    from bench.backends.torch.modeling import inference_model

    peaks, stages = StagePeaks(), {}
    dataset = _subset(load_squad(request["data"]), request["questions"])
    model, tokenizer = _load_qa_model(request["model_dir"], _device()), _load_tokenizer(request["model_dir"])
    params, dtype = _feature_params(model.family, "step", request), _default_dtype()
    run_model, autocast_dtype = inference_model(model, dtype)
    with peaks.stage("features"):
        start = clock()
        features = build_features(dataset.examples, tokenizer, params, is_training=False)
        stages["features"] = since(start)
    with peaks.stage("forward"):
        start = clock()
        logits = predict_logits(run_model, features, autocast_dtype=autocast_dtype,
                                batch_size=request["eval_batch_size"], pad_id=tokenizer.pad_token_id or 0)
        stages["forward"] = since(start)
    with peaks.stage("postprocess"):
        start = clock()
        candidates = candidates_from_logits(logits["start_logits"], logits["end_logits"], features,
                                            request["n_best_size"])
        preds = postprocess(dataset, features, candidates,
                            null_scores_from_logits(logits["start_logits"], logits["end_logits"]),
                            n_best_size=request["n_best_size"], max_answer_length=request["max_answer_length"])
        stages["postprocess"] = since(start)
    with peaks.stage("scoring"):
        start = clock()
        scores = evaluate(dataset, preds.predictions, na_probs=preds.na_prob)
        stages["scoring"] = since(start)
    return {"questions": len(dataset.examples), "windows": len(features), "dtype": dtype,
            "batch_size": request["eval_batch_size"], "stages": stages, "stage_peak_rss": peaks.close(),
            "windows_per_s": round(len(features) / stages["forward"]["wall_s"], 2),
            "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 3),
            "scores": {"exact": round(scores["exact"], 3), "f1": round(scores["f1"], 3),
                       "best_f1": round(scores.get("best_f1", scores["f1"]), 3)}, "threads": _threads()}


def task_postprocess(request: dict) -> dict:
    """Figure 4, our side: vectorized vs the reference loop; ours on figure 1's float32 logits."""
    result = {"reference": _reference_comparison(request)}
    result.update(_same_logits(request))
    return result


def _reference_comparison(request: dict) -> dict:
    """benchmarks/postprocess_speed.py (reused as is) on dev-v2.0, or a subset of it."""
    if not (POSTPROCESS_BENCHMARK.is_file() and REFERENCE_POSTPROCESS.is_file()):
        return {"skipped": "benchmarks/postprocess_speed.py or tests/reference_postprocess.py is not in this checkout"}
    data = request["data"]
    if request["questions"]:
        from bench.core.data import load_squad
        data = str(Path(request["work"]) / "postprocess_subset.json")
        _write_squad_subset(_subset(load_squad(request["data"]), request["questions"]), Path(data))
    spec = importlib.util.spec_from_file_location("postprocess_speed", POSTPROCESS_BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--data", data, "--repeats", "1" if request["questions"] else "2",
                          "--max-seq-length", str(request["max_seq_length"]),
                          "--doc-stride", str(request["doc_stride"])])
    return {k: v for k, v in report.items() if k != "all_runs"}


def _write_squad_subset(dataset, path: Path) -> None:
    """A SQuAD file with just these examples (one paragraph per question; contexts repeat)."""
    articles = [{"title": "subset", "paragraphs": [
        {"context": ex.context, "qas": [{"id": ex.qid, "question": ex.question, "is_impossible": ex.is_impossible,
                                         "answers": [{"text": a.text, "answer_start": a.start} for a in ex.answers]}]}
        for ex in dataset.examples]}]
    atomic_write_json(path, {"version": dataset.version, "data": articles}, indent=None)


def _same_logits(request: dict) -> dict:
    """Our post-processing of figure 1's float32 logits (the ones the pipeline's post-processing gets)."""
    import numpy as np

    from bench.core.data import load_squad
    from bench.core.features import build_features
    from bench.core.postprocess import candidates_from_logits, null_scores_from_logits, postprocess

    dataset = _subset(load_squad(request["dev11"]), len(json.loads(Path(request["questions_file"]).read_text())))
    tokenizer = _load_tokenizer(request["model_dir"])
    params = _feature_params(request["family"], "overlap", request)
    features = build_features(dataset.examples, tokenizer, params, is_training=False)
    with np.load(request["logits_file"]) as stored:
        start_logits, end_logits = stored["start_logits"], stored["end_logits"]
    begin = clock()
    candidates = candidates_from_logits(start_logits, end_logits, features, request["n_best_size"])
    preds = postprocess(dataset, features, candidates, null_scores_from_logits(start_logits, end_logits),
                        n_best_size=request["n_best_size"], max_answer_length=request["max_answer_length"],
                        version_2_with_negative=False)
    return {"same_logits": {**since(begin), "questions": len(dataset.examples), "windows": len(features)},
            "answers": preds.predictions}


def task_features(request: dict) -> dict:
    """Figure 5: build_features on dev-v2.0 cold (best of N) and load_or_build_features from the cache."""
    from bench.core.data import load_squad
    from bench.core.features import build_features, load_or_build_features

    dataset = _subset(load_squad(request["data"]), request["questions"])
    tokenizer = _load_tokenizer(request["model_dir"])
    params = _feature_params(request["family"], "step", request)
    cold, features = _best(lambda: build_features(dataset.examples, tokenizer, params, is_training=False),
                           request["repeats"])

    def cached():
        return load_or_build_features(dataset.examples, tokenizer, params, is_training=False,
                                      data_sha256=dataset.sha256, cache_dir=request["cache_dir"])
    cached()                                                   # builds and writes the cache file
    warm, loaded = _best(cached, max(3, request["repeats"]))
    if len(loaded) != len(features):
        raise SpeedError("cached features differ from the built ones")
    n = len(dataset.examples)
    return {"questions": n, "windows": len(features), "cold_wall_s": cold["wall_s"], "cold_cpu_s": cold["cpu_s"],
            "cached_wall_s": warm["wall_s"], "cached_cpu_s": warm["cpu_s"],
            "cold_examples_per_s": round(n / cold["wall_s"], 1), "cached_examples_per_s": round(n / warm["wall_s"], 1),
            "cache_speedup": round(cold["wall_s"] / warm["wall_s"], 1), "params": dict(params.__dict__)}


def _best(fn, repeats: int) -> tuple[dict, object]:
    """The fastest of ``repeats`` calls (wall and CPU seconds) and the last result."""
    timings, result = [], None
    for _ in range(repeats):
        start = clock()
        result = fn()
        timings.append(since(start))
    return min(timings, key=lambda t: t["wall_s"]), result


# ----------------------------------------------------------------------------------------- GPU
ELECTRA_BASE = {"embedding_size": 768, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072}


def task_gpu(request: dict) -> dict:
    """GPU figure: ELECTRA-base (random weights: speed does not depend on them) at 384, bf16 and fp16."""
    import torch

    from bench.core.data import load_squad
    from bench.core.features import build_features

    model_dir = _write_electra(Path(request["work"]) / "electra_base", request.get("electra_config", ELECTRA_BASE))
    tokenizer = _load_tokenizer(str(model_dir))
    window = {**WINDOW, **request.get("window", {})}
    train_request = {**window, "batch_size": request.get("batch_size", 32), "warmup_steps": request.get("warmup", 5),
                     "steps": request.get("steps", 30), "model_dir": str(model_dir)}
    model = _load_qa_model(str(model_dir), _device())
    params = _feature_params(model.family, "overlap", window)
    features = build_features(load_squad(request["data"]["train"], for_training=True).examples, tokenizer, params,
                              is_training=True)
    num_parameters = sum(p.numel() for p in model.parameters())
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = request["peak_tflops"] * 1e12 if request.get("peak_tflops") else peak_flops(device_name)
    runs = {}
    for dtype in request.get("dtypes", ("bfloat16", "float16")):
        run = train_steps(train_request, features, dtype=dtype, padded=False, pad_id=tokenizer.pad_token_id or 0,
                          model_dir=str(model_dir), compile_backbone=request.get("compile", False))
        runs[dtype] = {**run, "mfu": mfu(num_parameters, run["real_tokens_per_s"], peak)}
    return {"device_name": device_name, "num_parameters": num_parameters, "peak_flops": peak, "runs": runs,
            "anchors": GPU_ANCHORS, "eval": _gpu_eval(model, tokenizer, request, window)}


def _gpu_eval(model, tokenizer, request: dict, window: dict) -> dict:
    from bench.core.data import load_squad
    from bench.core.features import build_features
    from bench.backends.torch.modeling import inference_model

    dataset = _subset(load_squad(request["data"]["dev20"]), request.get("eval_questions"))
    features = build_features(dataset.examples, tokenizer, _feature_params(model.family, "step", window), is_training=False)
    run_model, autocast_dtype = inference_model(model.eval(), "bfloat16")
    start = clock()
    predict_logits(run_model, features, autocast_dtype=autocast_dtype, batch_size=request.get("eval_batch_size", 128),
                   pad_id=tokenizer.pad_token_id or 0)
    _synchronize(_device())
    timing = since(start)
    return {**timing, "windows": len(features), "windows_per_s": round(len(features) / timing["wall_s"], 1)}


def _write_electra(out_dir: Path, sizes: dict) -> Path:
    """A random ELECTRA of ``sizes`` as a QA folder (speed does not depend on the weights' values)."""
    import torch
    from transformers import ElectraConfig, ElectraModel

    if minilm_model_dir() is None:
        raise SpeedError(f"the GPU figure borrows the WordPiece tokenizer of all-MiniLM-L6-v2: {MINILM_INSTALL_HINT}")
    base = out_dir.parent / f"{out_dir.name}_backbone"
    base.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ElectraModel(ElectraConfig(**sizes)).save_pretrained(str(base))
    _copy_tokenizer(minilm_model_dir(), base)
    _write_qa_folder(base, out_dir)
    return out_dir


TASKS = {"prepare_model": task_prepare_model, "inference": task_inference, "training": task_training,
         "eval_full": task_eval_full, "postprocess": task_postprocess, "features": task_features, "gpu": task_gpu}


if __name__ == "__main__":
    sys.exit(main())
