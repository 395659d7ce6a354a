"""The recurrent baselines against a small transformer, measured on real data (CPU).

    python benchmarks/recurrent.py [--out runs/recurrent] [--minilm_run runs/demo]
    python benchmarks/recurrent.py --smoke        # tiny limits: checks the pipeline end to end in a minute

Trains the LSTM baseline and BiDAF from scratch (``--model_name lstm_baseline`` / ``bidaf``, the recipes
in ``RECIPES``; docs/recurrent-baselines.md) on the answerable questions of the first 10 articles of
SQuAD v2.0 train (``--version 1.1``), evaluates each on XQuAD-en (1,190 SQuAD 1.1 dev questions), and
puts MiniLM-L6 beside them: the results.json of a run by the demo's recipe (``--minilm_run``: a
``squad-bench demo`` output folder or ``benchmarks/distill.py``'s teacher), or, without one, a run of
``bench.apps.demo.DEMO_FLAGS`` made here. Printed per model: EM, F1, parameters, training time and the
CPU questions/s of the XQuAD-en evaluation (features built before the clock starts). Everything runs
through the real CLI (``python -m bench.cli run``), one process per model; a folder that already holds
a finished run of the same flags is reused. Results: ``<out>/recurrent_results.json`` and a Markdown table
on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.demo import DEMO_FLAGS  # noqa: E402  (MiniLM's recipe, as the demo runs it)
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir  # noqa: E402
from benchmarks import cli_runs  # noqa: E402

# Shared by both recurrent models: answerable questions, basic head, windows long enough for nearly every
# context of the subset (the longest is ~600 tokens: 2 windows), a constant LR as both were published with.
COMMON = {"version": "1.1", "head": "basic", "max_seq_length": 400, "doc_stride": 128, "max_query_length": 64,
          "batch_size": 32, "eval_batch_size": 64, "length_grouping": True, "lr_schedule": "constant",
          "warmup_ratio": 0.0, "wd": 0.0, "max_grad_norm": 5.0, "classifier_dropout": 0.2, "rnn_dropout": 0.2,
          "rnn_hidden_size": 100, "word_dim": 100, "log_interval": 20, "max_saved_ckpt": 1, "seed": 100}
RECIPES = {
    # Seed 000: Adam lr 1e-3, constant schedule.
    "lstm_baseline": {"optimizer": "adamw", "lr": 1e-3, "epochs": 8},
    # Seo et al. 2017 and seed 000: Adadelta lr 0.5, constant schedule; hidden 100.
    # 2 epochs: about 10 minutes on 2 CPU cores (the paper trains 12, seed 000 18, on the full training set).
    "bidaf": {"optimizer": "adadelta", "lr": 0.5, "epochs": 2},
}
SMOKE_LIMITS = {"max_train_samples": 24, "max_eval_samples": 12, "num_train_steps": 2, "epochs": 1}


def _run(flags: dict) -> dict:
    return cli_runs.run(flags, benchmark="recurrent")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/recurrent", help="folder for every run and the results")
    parser.add_argument("--minilm_run", default=None,
                        help="a finished run of the demo's recipe (its results.json); default: train one here")
    parser.add_argument("--word_vectors", default=None, help="the run script's --word_vectors for both models")
    parser.add_argument("--gpus", default="-1", help="the run script's --gpus (-1: CPU, what the table reports)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny limits ({SMOKE_LIMITS}): a pipeline check, not a measurement")
    return parser.parse_args(argv)




def row(name: str, record: dict) -> dict:
    fixed, timing = record["metrics"]["fixed"], record["timing"]
    exact = fixed.get("exact_match", fixed.get("exact"))          # SQuAD 1.1 / 2.0 spellings
    return {"model": name, "exact_match": round(float(exact), 2), "f1": round(float(fixed["f1"]), 2),
            "parameters": int(record["model"]["num_parameters"]), "train_seconds": timing.get("train_seconds"),
            "updates": timing.get("updates"), "eval_questions": fixed.get("total"),
            "questions_per_second": timing.get("eval_questions_per_second"),
            "cpu": (record.get("hardware", {}).get("cpu") or {}).get("model"),
            "threads": os.environ.get("OMP_NUM_THREADS")}


def minilm(args, recipe: dict, out: Path) -> dict | None:
    if args.minilm_run:
        return json.loads((Path(args.minilm_run) / "results.json").read_text(encoding="utf-8"))
    folder = minilm_model_dir()
    if folder is None:
        print(f"recurrent benchmark: no MiniLM row ({MINILM_INSTALL_HINT})", file=sys.stderr)
        return None
    flags = {**DEMO_FLAGS, **recipe, "model_path": str(folder), "output_dir": str(out / "minilm")}
    if args.smoke:
        flags.update(SMOKE_LIMITS)
    return _run(flags)


def table(rows: list[dict]) -> str:
    lines = ["| model | EM | F1 | parameters | training (s) | CPU questions/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['exact_match']:.2f} | {r['f1']:.2f} | {r['parameters'] / 1e6:.2f}M | "
                     f"{r['train_seconds'] or 0:.0f} | {r['questions_per_second'] or 0:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    squad = shared_squad_dir()
    if squad is None:
        print("recurrent benchmark: ../shared/data/squad (train-v2.0.first10, xquad.en) not found", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    out = Path(args.out)
    data = {"do_train": True, "do_eval": True, "train_file": str(squad / "train-v2.0.first10.json.gz"),
            "dev_file": str(squad / "xquad.en.json.gz"), "gpus": args.gpus, "cache_dir": str(out / "feature_cache")}
    started = time.perf_counter()
    rows = []
    for name, recipe in RECIPES.items():
        flags = {**COMMON, **recipe, **data, "model_name": name, "output_dir": str(out / name),
                 "word_vectors": args.word_vectors}
        if args.smoke:
            flags.update(SMOKE_LIMITS)
        rows.append(row(name, _run(flags)))
    record = minilm(args, data, out)
    if record is not None:
        rows.append(row("MiniLM-L6 (demo recipe)", record))
    results = {"smoke": bool(args.smoke), "recipes": {n: {**COMMON, **r} for n, r in RECIPES.items()},
               "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1)}
    (out / "recurrent_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nXQuAD-en{' -- SMOKE: not a measurement' if args.smoke else ''}\n{table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
