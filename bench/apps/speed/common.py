"""What every part of ``squad-bench speed`` shares: the modes, the window settings, the targets, the error."""
from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[3]
FIGURES = ("inference", "training", "eval_full", "postprocess", "features", "frameworks", "memory")
MEASURED = FIGURES[:-1]          # memory is gathered from the others
SCHEMA = "squad-bench/speed/v1"

# What each mode measures. Quick: a tiny random BERT and small samples, to check the machinery.
MODES = {
    "quick": {"questions": 100, "repeats": 1, "train_batch": 8, "train_warmup": 1, "train_steps": 3, "eval_windows": 32,
              "eval_questions": 300, "postprocess_questions": 500, "feature_repeats": 1, "gemm_seconds": 0.5},
    "full": {"questions": 1000, "repeats": 2, "train_batch": 8, "train_warmup": 2, "train_steps": 12, "eval_windows": 256,
             "eval_questions": None, "postprocess_questions": None, "feature_repeats": 3, "gemm_seconds": 1.5},
}
GEMM_SIZE = 2048      # the CPU peak probe's square matmul (tasks_cpu)
# Run-script defaults the figures use (bench.core.flags): windows, answers, evaluation batch.
WINDOW = {"max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30,
          "n_best_size": 20, "eval_batch_size": 16}
TARGETS = {"inference_default": 3.0, "inference_int8": 2.0, "inference_same": 1.2, "f1_gap": 1.0, "train_dynamic": 1.5,
           "train_padded": 1.0, "feature_cache": 20.0, "mxnet_vs_torch": 0.8}
# Published anchors for the GPU figure (NVIDIA Deep Learning Examples, AMP).
GPU_ANCHORS = {"electra_base_a100_40gb_amp_seq_per_s": 317.0, "bert_large_a100_80gb_amp_seq_per_s": 110.5}


class SpeedError(BenchError, RuntimeError):
    """A benchmark stage that could not run; the message says which and why."""
