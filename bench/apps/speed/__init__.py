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
   ``baseline_env.ensure_hf_env``). Two comparisons: each side as it runs by default (the pipeline:
   float32, batch 1; ours: bfloat16 autocast where the CPU has native bf16, ``--eval_batch_size``
   16), and the same dtype and batch (float32, batch 16). Both are scored against the gold answers;
   answer agreement is the share of questions where the two answer strings are equal. Plus dynamic int8.
2. ``training``: samples/s and real (non-pad) tokens/s of our training step
   (``TorchSteps.run_update``: dynamic padding + length grouping, and with every batch padded to
   max_seq_length) against ``transformers.Trainer`` with ``AutoModelForQuestionAnswering`` on the
   same windows padded to max_seq_length as ``run_qa.py`` does, float32 and bfloat16 (bfloat16 rows
   skipped, and labelled so, on a CPU without native bf16: emulated, it trains 24x slower).
3. ``eval_full``: the dev-v2.0 set (11,873 questions; a subset with ``--quick``): features,
   forward passes, post-processing and scoring timed apart.
4. ``postprocess``: vectorized post-processing against the reference loop (``postprocess_compare``,
   also run by ``benchmarks/postprocess_speed.py``) and against the pipeline's own post-processing
   on the same logits (inside the 4.57.6 environment).
5. ``features``: feature building on dev-v2.0, cold and from the cache.
6. Peak memory of every measured process (resident set; ``torch.cuda.max_memory_allocated`` on GPUs).
On a CPU, ``cpu_peak``: the CPU's own limit, a 2048x2048 matmul's best FLOP/s (float32; bfloat16 too
where native), with training (6 x non-embedding parameters x real tokens/s) and inference (2 x) as a
share of it. speed.json's ``machine.cpu`` records the CPU's abilities (``bench.run.cpu``).
GPU only: ``gpu``: ELECTRA-base training sequences/s at 384 in bfloat16 and float16 with MFU,
and the dev-v2.0 evaluation time.

Every measured stage runs in its own process (``python -m bench.apps.speed --_task NAME ...``), so
its peak resident memory is its own; our side and the baseline (``hf_worker.py``, run by path with
the python of the 4.57.6 environment) alternate over the repeats, and the best (fastest) repeat is
reported, with process CPU seconds next to wall seconds: on a shared machine wall time also counts
the time other processes hold the cores.

Modules: ``orchestrate`` (the parent: settings, figures in turn, the report), ``processes`` (one
process per measured stage, ``--resume``), ``baseline_env`` (the 4.57.6 environment), ``figures``
(ratios, scores, agreement, memory, MFU, shares of the CPU peak), ``render`` (speed.md), ``child``
and ``tasks_*`` (the measured processes; ``tasks_cpu``: the GEMM probe), ``train_step`` (our
training step, timed), ``qa_model`` (the shared model folder), ``measure`` (clocks and peak
memory), ``postprocess_compare`` (figure 4's reference loop comparison), ``hf_worker`` (the
baseline side; imports nothing from bench).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.apps.speed.baseline_env import DEFAULT_HF_ENV, HF_ENV_PACKAGES, ensure_hf_env
from bench.apps.speed.common import FIGURES, MEASURED, SCHEMA, WINDOW, SpeedError
from bench.apps.speed.figures import answer_agreement, mfu, peak_flops
from bench.apps.speed.render import render_markdown
from bench.core.io_utils import atomic_write_json, atomic_write_text

__all__ = ["main", "build_parser", "answer_agreement", "ensure_hf_env", "mfu", "peak_flops", "render_markdown",
           "HF_ENV_PACKAGES", "DEFAULT_HF_ENV", "FIGURES", "SCHEMA", "WINDOW", "SpeedError"]


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
        from bench.apps.speed.child import child_main
        return child_main(args._task, Path(args._request), Path(args._result))
    from bench.apps.speed.orchestrate import run_benchmark
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
