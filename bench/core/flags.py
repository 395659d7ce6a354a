"""Every flag of the run script, in one table, and its validation.

The flag names and defaults are GluonNLP's ``scripts/question_answering/run_squad.py``
so its published commands run unchanged; the additions are marked ``gluon=False``.
``bench.run_squad`` (the CLI), ``bench.core.presets`` (the recipes), the generated
``commands/*.sh`` and the demo all read this table, so a flag exists in one place.
"""
from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass, fields
from typing import Any, Callable
from bench.core.errors import BenchError
from bench.core.models import get_model_spec

__all__ = ["Flag", "FLAGS", "FLAG_BY_NAME", "config_to_dict", "RunConfig", "ConfigError", "build_run_parser", "config_from_args",
           "config_from_dict", "parse_adam_betas", "COMM_BACKENDS"]

COMM_BACKENDS = ("device", "horovod", "torchrun", "dist", "dist_sync_device")


class ConfigError(BenchError, ValueError):
    """A flag value that cannot work; the message names the flag."""


@dataclass(frozen=True)
class Flag:
    name: str
    type: Callable | None
    default: Any
    help: str
    gluon: bool = True                  # present in GluonNLP's run_squad.py
    choices: tuple | None = None
    store_true: bool = False


def _f(name, type_, default, help_, **kw) -> Flag:
    return Flag(name, type_, default, help_, **kw)


FLAGS: tuple[Flag, ...] = (
    # what to run
    _f("model_name", str, "google_albert_base_v2", "registered model name (bench.core.models)"),
    _f("do_train", None, False, "fine-tune", store_true=True),
    _f("do_eval", None, False, "evaluate on the dev set", store_true=True),
    _f("data_dir", str, "squad", "folder with train-v{V}.json / dev-v{V}.json (see prepare-data)"),
    _f("version", str, "2.0", "SQuAD version", choices=("1.1", "2.0")),
    _f("output_dir", str, "squad_out", "where checkpoints, predictions and results.json go"),
    # communication
    _f("comm_backend", str, "device", "device: one process per --gpus entry; horovod: under horovodrun; "
       "torchrun (alias dist, dist_sync_device): under torchrun", choices=COMM_BACKENDS),
    _f("gpus", str, "0", "GPUs to use, e.g. 0 or 0,1,2,3; -1 = CPU (CPU is used anyway when no GPU exists)"),
    # training hyperparameters
    _f("seed", int, 100, "random seed"),
    _f("log_interval", int, 50, "log every N optimizer updates"),
    _f("eval_log_interval", int, 10, "log every N evaluation batches"),
    _f("save_interval", int, None, "save a checkpoint every N updates (default: every epoch)"),
    _f("max_saved_ckpt", int, 5, "keep at most this many checkpoints (newest)"),
    _f("epochs", float, 3.0, "number of epochs (ignored when --num_train_steps is set)"),
    _f("num_train_steps", int, None, "number of optimizer updates; overrides --epochs"),
    _f("batch_size", int, 8, "training windows per device per micro-batch"),
    _f("eval_batch_size", int, 16, "evaluation windows per device per batch"),
    _f("num_accumulated", int, 1, "micro-batches accumulated per optimizer update"),
    _f("max_grad_norm", float, 1.0, "clip the global gradient norm to this value"),
    _f("optimizer", str, "adamw", "optimizer", choices=("adamw",)),
    _f("adam_epsilon", float, 1e-6, "AdamW epsilon"),
    _f("adam_betas", str, "(0.9, 0.999)", "AdamW betas, e.g. '(0.9, 0.999)'"),
    _f("lr", float, 2e-5, "peak learning rate"),
    _f("warmup_ratio", float, 0.1, "fraction of updates spent in linear warm-up"),
    _f("warmup_steps", int, None, "warm-up updates; overrides --warmup_ratio"),
    _f("wd", float, 0.01, "weight decay (never applied to biases and LayerNorm weights)"),
    _f("layerwise_decay", float, -1.0, "layer-wise LR decay factor d in (0, 1]; <= 0 disables"),
    _f("untunable_depth", float, -1, "freeze the embeddings and this many lowest layers; < 0 disables"),
    _f("classifier_dropout", float, 0.1, "dropout in the QA head"),
    # data pre/post-processing
    _f("max_seq_length", int, 512, "tokens per window"),
    _f("doc_stride", int, 128, "window stride (see --stride_mode)"),
    _f("max_query_length", int, 64, "questions are truncated to this many tokens"),
    _f("pre_shuffle_seed", int, 100, "seed of the one-off shuffle of the training windows"),
    _f("round_to", int, None, "pad batch lengths up to a multiple of this"),
    _f("overwrite_cache", None, False, "rebuild cached features", store_true=True),
    # evaluation
    _f("start_top_n", int, 5, "conditional head: start candidates per window"),
    _f("end_top_n", int, 5, "conditional head: end candidates per start"),
    _f("n_best_size", int, 20, "n-best answers kept per question"),
    _f("max_answer_length", int, 30, "longest answer, in tokens"),
    _f("param_checkpoint", str, None, "fine-tuned checkpoint to evaluate (.safetensors)"),
    _f("backbone_path", str, None, "backbone weights to start from (.safetensors), overriding the pretrained ones"),
    _f("all_evaluate", None, False, "evaluate every kept checkpoint and pick the best", store_true=True),
    _f("dtype", str, "float32", "compute precision: float16 (AMP + loss scaling), bfloat16 (autocast), "
       "int8 (evaluation only, CPU dynamic quantization)", choices=("float32", "float16", "bfloat16", "int8")),
    # SQuAD Bench additions
    _f("backend", str, "torch", "framework backend", gluon=False, choices=("torch", "mxnet")),
    _f("model_path", str, None, "local Hugging Face model folder (config, weights, tokenizer)", gluon=False),
    _f("train_file", str, None, "training file (.json or .json.gz), overrides --data_dir", gluon=False),
    _f("dev_file", str, None, "dev file (.json or .json.gz), overrides --data_dir", gluon=False),
    _f("head", str, "conditional", "QA head", gluon=False, choices=("conditional", "basic")),
    _f("stride_mode", str, "step", "step: --doc_stride is the distance between window starts (BERT, GluonNLP); "
       "overlap: tokens shared by consecutive windows (Hugging Face)", gluon=False, choices=("step", "overlap")),
    _f("max_train_samples", int, None, "train on a reproducible random subset of questions", gluon=False),
    _f("max_eval_samples", int, None, "evaluate on a reproducible random subset of questions", gluon=False),
    _f("null_score_diff_threshold", float, 0.0, "v2: predict no answer when null score - best span score "
       "exceeds this", gluon=False),
    _f("resume", None, False, "continue from the newest checkpoint in --output_dir", gluon=False,
       store_true=True),
    _f("seeds", str, None, "comma-separated seeds: run once per seed into <output_dir>/seed_<s>", gluon=False),
    _f("cache_dir", str, None, "feature cache folder (default: <output_dir>/../.feature_cache)", gluon=False),
    _f("max_train_windows_per_epoch", int, None, "cap on training windows per epoch (debugging)", gluon=False),
    _f("length_grouping", None, False, "group training windows of similar length into batches "
       "(less padding; changes batch composition)", gluon=False, store_true=True),
    _f("compile", None, False, "compile the backbone with torch.compile (worth it on GPUs; slow to start)",
       gluon=False, store_true=True),
)

FLAG_BY_NAME = {flag.name: flag for flag in FLAGS}

RunConfig = dataclass(frozen=True)(type("RunConfig", (), {
    "__annotations__": {flag.name: Any for flag in FLAGS},
    **{flag.name: flag.default for flag in FLAGS},
    "__doc__": "Validated values of every run flag (see FLAGS for meanings and defaults).",
}))


def build_run_parser(prog: str = "python -m bench.run_squad") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Fine-tune and evaluate an extractive QA model on SQuAD "
        "(GluonNLP run_squad.py flags; additions: --backend, --model_path, --train_file, ...).")
    for flag in FLAGS:
        if flag.store_true:
            parser.add_argument(f"--{flag.name}", action="store_true", help=flag.help)
        else:
            parser.add_argument(f"--{flag.name}", type=flag.type, default=flag.default,
                                choices=flag.choices, help=f"{flag.help} (default: {flag.default})")
    return parser


def parse_adam_betas(text: str) -> tuple[float, float]:
    try:
        betas = ast.literal_eval(text) if isinstance(text, str) else tuple(text)
        betas = tuple(float(b) for b in betas)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"--adam_betas {text!r}: expected two numbers like '(0.9, 0.999)'") from None
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"--adam_betas {text!r}: expected two numbers in [0, 1)")
    return betas


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config) -> None:
    """Raise ConfigError naming the flag for values that cannot work."""
    _check(config.do_train or config.do_eval, "nothing to do: pass --do_train and/or --do_eval")
    for name in ("batch_size", "eval_batch_size", "num_accumulated", "max_seq_length", "max_query_length",
                 "doc_stride", "n_best_size", "max_answer_length", "start_top_n", "end_top_n",
                 "log_interval", "eval_log_interval", "max_saved_ckpt"):
        _check(getattr(config, name) > 0, f"--{name} must be positive, got {getattr(config, name)}")
    for name in ("save_interval", "num_train_steps", "round_to", "max_train_samples", "max_eval_samples",
                 "warmup_steps", "max_train_windows_per_epoch"):
        value = getattr(config, name)
        _check(value is None or value > 0, f"--{name} must be positive, got {value}")
    _check(config.epochs > 0 or config.num_train_steps, f"--epochs must be positive, got {config.epochs}")
    _check(0.0 <= config.warmup_ratio < 1.0, f"--warmup_ratio must be in [0, 1), got {config.warmup_ratio}")
    _check(config.lr > 0, f"--lr must be positive, got {config.lr}")
    _check(config.wd >= 0, f"--wd must be >= 0, got {config.wd}")
    _check(config.max_grad_norm >= 0, f"--max_grad_norm must be >= 0, got {config.max_grad_norm}")
    _check(config.layerwise_decay <= 1.0, f"--layerwise_decay must be <= 1, got {config.layerwise_decay}")
    _check(0.0 <= config.classifier_dropout < 1.0,
           f"--classifier_dropout must be in [0, 1), got {config.classifier_dropout}")
    _check(config.max_query_length < config.max_seq_length,
           f"--max_query_length ({config.max_query_length}) must be below --max_seq_length "
           f"({config.max_seq_length})")
    _check(not (config.dtype == "int8" and config.do_train),
           "--dtype int8 is for evaluation only (dynamic quantization); train in float32/bfloat16/float16")
    parse_adam_betas(config.adam_betas)
    if config.model_path is None:
        get_model_spec(config.model_name)       # unknown names fail here, with the closest matches
    if config.seeds is not None:
        parse_seeds(config.seeds)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers like 1,2,3") from None
    _check(len(seeds) > 0 and len(set(seeds)) == len(seeds), f"--seeds {text!r}: expected distinct integers")
    return seeds


def config_from_dict(values: dict) -> "RunConfig":
    """Build and validate a RunConfig from flag values; unknown keys are an error naming them."""
    unknown = sorted(set(values) - set(FLAG_BY_NAME))
    _check(not unknown, f"unknown flag(s): {', '.join('--' + k for k in unknown)}")
    config = RunConfig(**values)
    validate(config)
    return config


def config_from_args(argv: list[str] | None = None) -> "RunConfig":
    args = build_run_parser().parse_args(argv)
    return config_from_dict(vars(args))


def config_to_dict(config) -> dict:
    return {f.name: getattr(config, f.name) for f in fields(config)}
