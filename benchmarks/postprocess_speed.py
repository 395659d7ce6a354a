"""Speed of SQuAD post-processing: the plain reference loop vs the vectorized numpy path.

Builds the features of the full dev-v2.0 set (BERT WordPiece tokenizer of the offline
all-MiniLM-L6-v2 package, 384 tokens, stride 128), draws seeded random start/end logits,
then times, in the same process and interleaved:

    reference   tests/reference_postprocess.reference_postprocess(...)  (per window, per pair loop)
    vectorized  candidates_from_logits + null_scores_from_logits + postprocess

Both produce the full QAPredictions (texts, n-best dicts, na_probs); the outputs are
checked to be identical before any number is printed. Each path runs ``--repeats`` times;
the best (minimum) time is reported, as wall-clock and as process CPU seconds (the CPU
figure is steadier on a shared machine). Usage:

    python benchmarks/postprocess_speed.py [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir  # noqa: E402
from bench.data import load_squad  # noqa: E402
from bench.features import FeatureParams, build_features  # noqa: E402
from bench.io_utils import atomic_write_json  # noqa: E402
from bench.postprocess import candidates_from_logits, null_scores_from_logits, postprocess  # noqa: E402
from tests.reference_postprocess import reference_postprocess  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="SQuAD file (default: dev-v2.0.rebuilt.json.gz in the shared data folder)")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--n-best-size", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def load_inputs(args):
    data = args.data
    if data is None:
        squad_dir = shared_squad_dir()
        if squad_dir is None:
            sys.exit("shared SQuAD folder not found; set SQUAD_BENCH_DATA or pass --data")
        data = squad_dir / "dev-v2.0.rebuilt.json.gz"
    model_dir = minilm_model_dir()
    if model_dir is None:
        sys.exit(f"all-MiniLM-L6-v2 not installed: {MINILM_INSTALL_HINT}")
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dataset = load_squad(data)
    params = FeatureParams(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    features = build_features(dataset.examples, tokenizer, params, is_training=False)
    rng = np.random.default_rng(args.seed)
    shape = (len(features), args.max_seq_length)
    return dataset, features, rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def same_outputs(a, b) -> bool:
    """Same predictions, na_probs and n-best entries (probabilities to 1e-6)."""
    def entries(preds):
        return [(qid, e["text"], e["start_logit"], e["end_logit"], e["offsets"])
                for qid, items in preds.nbest.items() for e in items]

    def probabilities(preds):
        return np.array([e["probability"] for items in preds.nbest.values() for e in items])

    return (a.predictions == b.predictions and a.na_prob == b.na_prob and entries(a) == entries(b)
            and np.allclose(probabilities(a), probabilities(b), rtol=0, atol=1e-6))


def main(argv=None) -> dict:
    args = parse_args(argv)
    dataset, features, start_logits, end_logits = load_inputs(args)
    options = dict(n_best_size=args.n_best_size, max_answer_length=args.max_answer_length)

    parts = []          # (candidates CPU s, postprocess CPU s) of each vectorized run

    def vectorized():
        cpu = time.process_time()
        candidates = candidates_from_logits(start_logits, end_logits, features, args.n_best_size)
        null_scores = null_scores_from_logits(start_logits, end_logits)
        middle = time.process_time()
        preds = postprocess(dataset, features, candidates, null_scores, **options)
        parts.append((middle - cpu, time.process_time() - middle))
        return preds

    def reference():
        return reference_postprocess(dataset, features, start_logits, end_logits, **options)

    times = {"reference": [], "vectorized": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in (("reference", reference), ("vectorized", vectorized)):
            outputs[name], wall, cpu = timed(fn)
            times[name].append((wall, cpu))
    if not same_outputs(outputs["reference"], outputs["vectorized"]):
        sys.exit("reference and vectorized outputs differ")

    best = {name: (min(w for w, _ in runs), min(c for _, c in runs)) for name, runs in times.items()}
    report = {
        "data": str(args.data or "dev-v2.0.rebuilt.json.gz"), "questions": len(dataset.examples),
        "windows": len(features), "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
        "n_best_size": args.n_best_size, "repeats": args.repeats, "seed": args.seed,
        "reference_wall_s": round(best["reference"][0], 4), "vectorized_wall_s": round(best["vectorized"][0], 4),
        "reference_cpu_s": round(best["reference"][1], 4), "vectorized_cpu_s": round(best["vectorized"][1], 4),
        "speedup_wall": round(best["reference"][0] / best["vectorized"][0], 2),
        "speedup_cpu": round(best["reference"][1] / best["vectorized"][1], 2),
        "vectorized_candidates_cpu_s": round(min(c for c, _ in parts), 4),
        "vectorized_postprocess_cpu_s": round(min(p for _, p in parts), 4),
        "nbest_entries": sum(len(entries) for entries in outputs["vectorized"].nbest.values()),
        "all_runs": {name: [[round(w, 4), round(c, 4)] for w, c in runs] for name, runs in times.items()},
    }
    print(f"{report['questions']} questions, {report['windows']} windows, n_best_size {args.n_best_size}, "
          f"best of {args.repeats}")
    print(f"reference loop : {report['reference_wall_s']:8.3f} s wall  {report['reference_cpu_s']:8.3f} s CPU")
    print(f"vectorized     : {report['vectorized_wall_s']:8.3f} s wall  {report['vectorized_cpu_s']:8.3f} s CPU")
    print(f"  of which candidates_from_logits {report['vectorized_candidates_cpu_s']:.3f} s CPU, postprocess "
          f"{report['vectorized_postprocess_cpu_s']:.3f} s CPU ({report['nbest_entries']} n-best dicts built)")
    print(f"speed-up       : {report['speedup_wall']:8.1f} x wall  {report['speedup_cpu']:8.1f} x CPU")
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
