"""``squad-bench evaluate`` / ``python -m bench.evaluate``: score a predictions file.

The scoring itself is ``bench.core.scoring``; this module reads the files and prints.
Anything wrong with the files or flags (a corrupt .gz, a NaN or infinite no-answer
probability, a non-finite --na-prob-thresh) is one line naming the file or flag, exit
status 2. What it prints and writes is strict JSON (no NaN or Infinity).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys

from bench.core.data import load_squad
from bench.core.errors import BenchError
from bench.core.io_utils import atomic_write_json
from bench.core.scoring import evaluate, load_na_probs, load_predictions

# -- command line ----------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m bench.evaluate",
        description="Score SQuAD predictions (EM / F1), like the official evaluate-v1.1.py and "
                    "evaluate-v2.0.py; the data file's version picks the rules.")
    parser.add_argument("data_file", help="SQuAD data file (.json or .json.gz)")
    parser.add_argument("pred_file", help="predictions: JSON object question id -> answer text")
    parser.add_argument("--na-prob-file", "-n", help="SQuAD 2.0: JSON object question id -> "
                                                     "probability of no answer; adds the best_* keys")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help="SQuAD 2.0: answer empty when the no-answer probability is above this "
                             "finite number (default: 1.0)")
    parser.add_argument("--out-file", "-o", help="also write the result dict to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if not math.isfinite(args.na_prob_thresh):
            raise ValueError(f"--na-prob-thresh should be a finite number, got {args.na_prob_thresh}")
        dataset = load_squad(args.data_file)
        if args.na_prob_file and dataset.version == "1.1":
            raise ValueError(f"{args.data_file}: --na-prob-file applies to SQuAD 2.0 only, "
                             f"the data is SQuAD 1.1")
        predictions = load_predictions(args.pred_file)
        na_probs = load_na_probs(args.na_prob_file) if args.na_prob_file else None
        result = evaluate(dataset, predictions, na_probs, args.na_prob_thresh)
        # like the official scripts: one line for 1.1, indented for 2.0. Strict JSON: a NaN or an
        # infinity raises here, before anything is printed or written (the file holds the same values)
        printed = json.dumps(result, indent=2 if dataset.version == "2.0" else None, allow_nan=False)
        if args.out_file:
            atomic_write_json(args.out_file, result)
    except (BenchError, ValueError, OSError) as exc:   # SquadFormatError, PredictionFileError: ValueErrors too
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(printed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
