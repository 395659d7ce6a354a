"""Which int8 recipe keeps F1? ``--dtype int8`` variants against float32 on a trained checkpoint.

    python benchmarks/int8_layers.py --checkpoint runs/demo_fp32/run/checkpoints/update_295 [--questions 1190]

Evaluates a checkpoint of the demo (all-MiniLM-L6-v2, basic head; the float32 demo writes ``update_589``
since 2026-12-07, ``update_295`` before) on XQuAD-en (1,190 SQuAD 1.1 dev
questions; the first ``--questions``) with 384-token windows, in float32 and in four dynamic-int8
variants of ``bench.backends.torch.modeling.quantize_dynamic_int8``: weight scales per tensor or per
output channel, every backbone Linear quantized or the feed-forward output projections kept float32
(the family's ``ffn_output_pattern``). Prints EM/F1, their change from float32 and questions/s (the
whole answering path, after a warm-up; ``--threads``, one by default). Speeds are only comparable
within one invocation on a quiet machine; EM/F1 do not depend on the load.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from bench.apps.speed.common import WINDOW  # noqa: E402  (the speed figures' windows and answer settings)
from bench.apps.speed.qa_model import feature_params, load_tokenizer  # noqa: E402
from bench.apps.speed.tasks_inference import answer_questions, subset  # noqa: E402
from bench.backends.torch.checkpoint import load_model_weights  # noqa: E402
from bench.backends.torch.modeling import build_qa_model, quantize_dynamic_int8  # noqa: E402
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir  # noqa: E402
from bench.core.data import load_squad  # noqa: E402
from bench.core.errors import BenchError  # noqa: E402
from bench.core.scoring import evaluate  # noqa: E402
from bench.run.checkpoints import MODEL_FILE  # noqa: E402
from bench.run.model_source import resolve_model_folder  # noqa: E402

VARIANTS = {"int8, every Linear, per-tensor weights": {"per_channel": False, "keep_ffn_output": False},
            "int8, every Linear, per-channel weights": {"per_channel": True, "keep_ffn_output": False},
            "int8, feed-forward outputs float32, per-tensor weights": {"per_channel": False, "keep_ffn_output": True},
            "int8, feed-forward outputs float32, per-channel weights (--dtype int8)": {}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoints/update_N folder (basic head, MiniLM)")
    parser.add_argument("--questions", type=int, default=1190, help="first questions of XQuAD-en")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    minilm, squad = minilm_model_dir(), shared_squad_dir()
    if minilm is None or squad is None:
        raise SystemExit(f"int8 benchmark: needs all-MiniLM-L6-v2 ({MINILM_INSTALL_HINT}) and ../shared/data/squad")
    torch.set_num_threads(args.threads)
    model = build_qa_model(resolve_model_folder("all_minilm_l6_v2", str(minilm)), head="basic", dropout=0.1)
    load_model_weights(model, Path(args.checkpoint) / MODEL_FILE, label=f"--checkpoint {args.checkpoint}")
    model.eval()
    tokenizer = load_tokenizer(str(minilm))
    dataset = subset(load_squad(str(squad / "xquad.en.json.gz")), args.questions)
    params = feature_params(model.family, "overlap", WINDOW)
    baseline = None
    print(f"{'run':72} {'EM':>6} {'F1':>6} {'ΔEM':>6} {'ΔF1':>6} {'q/s':>6}")
    for name, options in {"float32": None, **VARIANTS}.items():
        run_model = model if options is None else quantize_dynamic_int8(model, **options)
        answer_questions(run_model, tokenizer, subset(dataset, 8), params, WINDOW, autocast_dtype="float32",
                         batch_size=16)                                                     # warm-up
        started = time.perf_counter()
        answers, _, _ = answer_questions(run_model, tokenizer, dataset, params, WINDOW, autocast_dtype="float32",
                                         batch_size=16)
        speed = len(dataset.examples) / (time.perf_counter() - started)
        scores = evaluate(dataset, answers)
        baseline = baseline or scores
        print(f"{name:72} {scores['exact_match']:6.2f} {scores['f1']:6.2f} "
              f"{scores['exact_match'] - baseline['exact_match']:+6.2f} {scores['f1'] - baseline['f1']:+6.2f} {speed:6.1f}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:                # a bad --checkpoint: one line, no traceback
        raise SystemExit(str(exc)) from None
