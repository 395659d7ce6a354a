"""The parent process of ``squad-bench speed``: settings, the measured processes of every figure in
turn (ours and the baseline alternating over the repeats), and the speed.json report."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench.apps.speed.baseline_env import ensure_hf_env, hf_versions
from bench.apps.speed.common import GEMM_SIZE, MEASURED, MODES, SCHEMA, TARGETS, WINDOW, SpeedError
from bench.apps.speed.figures import (best_runs, compare_frameworks, compare_inference, compare_postprocess,
                                      compare_training, memory_figure, peak_fractions, training_dtypes)
from bench.apps.speed.processes import child_environment, restart_numbering, run_child, run_hf
from bench.core.assets import shared_squad_dir
from bench.run.registry import unavailable_reason


def run_benchmark(args) -> dict:
    """Every selected figure, measured in child processes; the speed.json report."""
    mode = "quick" if args.quick else "full"
    selected = parse_figures(args.figures)
    settings = run_settings(mode, args)
    work = Path(args.out) / "work"
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    restart_numbering(work)
    env = child_environment(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = data_files()
    model = run_child("prepare_model", {"model_path": args.model_path, "quick": args.quick,
                                        "checkpoint": args.checkpoint, "out_dir": str(work / "qa_model")}, work, env)
    hf_python = None if args.skip_baselines else ensure_hf_env(Path(args.hf_env))
    context = {"work": work, "env": env, "hf": hf_python, "model": model, "data": data, "settings": settings,
               "threads": args.threads}
    figures = measure_figures(context, selected, args)
    return {"schema": SCHEMA, "mode": mode, "settings": {**settings, **WINDOW}, "targets": TARGETS,
            "model": {k: v for k, v in model.items() if k != "peak_memory"},
            "machine": machine_info(model, args.threads, load_before), "versions": model["versions"],
            "hf_versions": hf_versions(figures), "baselines_skipped": hf_python is None,
            "figures": figures, "seconds": round(time.perf_counter() - started, 1)}


def run_settings(mode: str, args) -> dict:
    """The mode's sizes, with --questions/--repeats and the --max_questions cap applied."""
    settings = {**MODES[mode], "feature_questions": None,
                **{k: v for k, v in (("questions", args.questions), ("repeats", args.repeats)) if v is not None}}
    if args.max_questions:
        for key in ("questions", "eval_questions", "postprocess_questions", "feature_questions"):
            settings[key] = min(settings[key] or args.max_questions, args.max_questions)
    return settings


def measure_figures(ctx: dict, selected: list[str], args) -> dict:
    figures = {}
    probe = cpu_peak_probe(ctx)
    for name, measure in (("inference", figure_inference), ("training", figure_training),
                          ("eval_full", figure_eval_full), ("postprocess", figure_postprocess),
                          ("features", figure_features), ("frameworks", figure_frameworks)):
        figures[name] = measure(ctx) if name in selected else {"skipped": "not selected (--figures)"}
    if ctx["model"]["device"] == "cuda":
        figures["gpu"] = run_child("gpu", {"data": ctx["data"], "compile": args.compile,
                                           "peak_tflops": args.peak_tflops, "work": str(ctx["work"])},
                                   ctx["work"], ctx["env"])
    figures["cpu_peak"] = probe if probe.get("skipped") else {
        **probe, "fractions": peak_fractions(figures, ctx["model"]["matmul_parameters"],
                                             {dtype: peak["flops_per_s"] for dtype, peak in probe["peaks"].items()})}
    figures["memory"] = memory_figure(figures)
    return figures


def cpu_peak_probe(ctx: dict) -> dict:
    """The CPU's float32 (and, where native, bfloat16) GEMM peak in its own process (tasks_cpu)."""
    model = ctx["model"]
    if model["device"] != "cpu":
        return {"skipped": "the model runs on the GPU (its figure reads MFU against the GPU's peak)"}
    dtypes = ["float32"] + (["bfloat16"] if model["native_bf16"] else [])
    return run_child("cpu_peak", {"size": GEMM_SIZE, "seconds": ctx["settings"]["gemm_seconds"], "dtypes": dtypes},
                     ctx["work"], ctx["env"])


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


def machine_info(model: dict, threads: int | None, load_before: tuple) -> dict:
    from bench.run.record import hardware_info

    return {**hardware_info(model.get("accelerator"), 1 if model["device"] == "cuda" else 0),
            "device": model["device"], "native_bf16": model["native_bf16"], "torch_threads": model["threads"],
            "threads_flag": threads, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------------------------------- the figures
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
    for _ in range(settings["repeats"]):
        ours.append(run_child("inference", ours_request, work, ctx["env"]))   # writes the questions file
        theirs.append(run_hf(ctx["hf"], hf_request, work, ctx["env"]))
    return compare_inference(best_runs(ours), best_runs(theirs), ours[-1], ctx["data"])


def figure_training(ctx: dict) -> dict:
    settings, work = ctx["settings"], ctx["work"]
    dtypes, skipped = training_dtypes(ctx["model"]["device"], ctx["model"]["default_dtype"], ctx["model"]["native_bf16"])
    request = {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["train"],
               "features_file": str(work / "train_features_padded.npz"), "batch_size": settings["train_batch"],
               "warmup_steps": settings["train_warmup"], "steps": settings["train_steps"], "dtypes": dtypes, **WINDOW}
    ours = run_child("training", request, work, ctx["env"])
    hf_request = {"task": "train", "model_dir": request["model_dir"], "features_file": request["features_file"],
                  "batch_size": request["batch_size"], "warmup_steps": request["warmup_steps"],
                  "steps": request["steps"], "threads": ctx["threads"],
                  "runs": [{"name": dtype, "bf16": dtype == "bfloat16"} for dtype in dtypes
                           if dtype in ("float32", "bfloat16")]}
    return compare_training(ours, run_hf(ctx["hf"], hf_request, work, ctx["env"]), skipped)


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
    return compare_postprocess(ours, theirs)


def figure_features(ctx: dict) -> dict:
    return run_child("features", {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["dev20"],
                                  "repeats": ctx["settings"]["feature_repeats"],
                                  "questions": ctx["settings"]["feature_questions"], "cache_dir": str(ctx["work"] / "cache"),
                                  "family": ctx["model"]["family"], **WINDOW}, ctx["work"], ctx["env"])


def figure_frameworks(ctx: dict) -> dict:
    """The MXNet backend against the torch backend: the same model, windows and batches, float32 on the CPU,
    each in its own process, alternating over the repeats (``tasks_frameworks``)."""
    missing = unavailable_reason("mxnet")
    if missing:
        return {"skipped": f"MXNet is not installed ({missing})"}
    if ctx["model"]["device"] != "cpu":
        return {"skipped": "the mxnet pip wheel is CPU-only, so the backends are compared on the CPU only"}
    settings = ctx["settings"]
    request = {"model_dir": ctx["model"]["model_dir"], "data": ctx["data"]["train"], "batch_size": settings["train_batch"],
               "warmup_steps": settings["train_warmup"], "steps": settings["train_steps"],
               "eval_windows": settings["eval_windows"], **WINDOW}
    runs = {"torch": [], "mxnet": []}
    for _ in range(settings["repeats"]):
        for backend, results in runs.items():
            results.append(run_child("frameworks", {**request, "backend": backend}, ctx["work"], ctx["env"]))
    return compare_frameworks(runs)
