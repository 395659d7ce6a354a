"""Every flag of the run script, in one table, and its validation.

The flag names and defaults are GluonNLP's ``scripts/question_answering/run_squad.py``
so its published commands run unchanged; the additions are marked ``gluon=False``.
The table is the ``RunConfig`` dataclass: one field per flag, so type checkers see every
flag. The run script's parser, the presets, ``squad-bench launch``, the demo and the
generated flag reference (docs/flags.md) all read it, so a flag exists in one place.
Which heads and losses exist is the registries' (``bench.core.heads``, ``bench.core.losses``).
"""
from __future__ import annotations

import argparse
import ast
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable
from bench.core.errors import BenchError
from bench.core.families import get_family
from bench.core.heads import get_head
from bench.core.losses import get_loss
from bench.core.models import get_model_spec

__all__ = ["Flag", "FLAGS", "FLAG_BY_NAME", "config_to_dict", "RunConfig", "ConfigError", "build_run_parser",
           "config_from_args",
           "config_from_dict", "flags_to_argv", "parse_adam_betas", "COMM_BACKENDS"]

COMM_BACKENDS = ("device", "horovod", "torchrun", "dist", "dist_sync_device")
OPTIMIZERS = ("adamw", "adadelta")
LR_SCHEDULES = ("linear", "constant")


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


_ARG_TYPES = {"str": str, "int": int, "float": float}


def _flag(default, help_: str, *, gluon: bool = True, choices: tuple | None = None):
    """A RunConfig field: ``--<field name>`` with this default and help (gluon: GluonNLP has it)."""
    return field(default=default, metadata={"help": help_, "gluon": gluon, "choices": choices})


@dataclass(frozen=True)
class RunConfig:
    """Validated values of every run flag: the flag table itself (one field = one ``--flag``).

    Each field's ``_flag`` metadata holds its help, whether GluonNLP's run_squad.py has it, and
    its choices; ``FLAGS`` (below) is the same table as ``Flag`` rows for the parser and the docs.
    """
    # what to run
    model_name: str = _flag('google_albert_base_v2', 'registered model name (bench.core.models)')
    do_train: bool = _flag(False, 'fine-tune')
    do_eval: bool = _flag(False, 'evaluate on the dev set')
    data_dir: str = _flag('squad', 'folder with train-v{V}.json / dev-v{V}.json (see prepare-data)')
    version: str = _flag('2.0', 'SQuAD version', choices=('1.1', '2.0'))
    output_dir: str = _flag('squad_out', 'where checkpoints, predictions and results.json go')
    # communication
    comm_backend: str = _flag('device',
        'device: one process per --gpus entry; horovod: under horovodrun; torchrun (alias dist, '
        'dist_sync_device): under torchrun', choices=COMM_BACKENDS)
    gpus: str = _flag('0', 'GPUs to use, e.g. 0 or 0,1,2,3; -1 = CPU (CPU is used anyway when no GPU exists)')
    # training hyperparameters
    seed: int = _flag(100, 'random seed')
    log_interval: int = _flag(50, 'log every N optimizer updates')
    eval_log_interval: int = _flag(10, 'log every N evaluation batches')
    save_interval: int | None = _flag(None, 'save a checkpoint every N updates (default: every epoch)')
    max_saved_ckpt: int = _flag(5, 'keep at most this many checkpoints (newest)')
    epochs: float = _flag(3.0, 'number of epochs (ignored when --num_train_steps is set)')
    num_train_steps: int | None = _flag(None, 'number of optimizer updates; overrides --epochs')
    batch_size: int = _flag(8, 'training windows per device per micro-batch')
    eval_batch_size: int = _flag(16, 'evaluation windows per device per batch')
    num_accumulated: int = _flag(1, 'micro-batches accumulated per optimizer update')
    max_grad_norm: float = _flag(1.0, 'clip the global gradient norm to this value')
    optimizer: str = _flag('adamw',
        'optimizer: adamw, or adadelta (BiDAF\'s, with --lr 0.5; rho 0.95, eps 1e-6; torch backend)',
        choices=OPTIMIZERS)
    adam_epsilon: float = _flag(1e-06, 'AdamW epsilon')
    adam_betas: str = _flag('(0.9, 0.999)', "AdamW betas, e.g. '(0.9, 0.999)'")
    lr: float = _flag(2e-05, 'peak learning rate')
    warmup_ratio: float = _flag(0.1, 'fraction of updates spent in linear warm-up')
    warmup_steps: int | None = _flag(None, 'warm-up updates; overrides --warmup_ratio')
    wd: float = _flag(0.01, 'weight decay (never applied to biases and LayerNorm weights)')
    layerwise_decay: float = _flag(-1.0, 'layer-wise LR decay factor d in (0, 1]; <= 0 disables')
    untunable_depth: float = _flag(-1, 'freeze the embeddings and this many lowest layers; < 0 disables')
    classifier_dropout: float = _flag(0.1, 'dropout in the QA head')
    backbone_dropout: float | None = _flag(None,
        "dropout inside the pretrained backbone (hidden states and attention probabilities), replacing its "
        "config.json's rates (BERT: hidden_dropout_prob, attention_probs_dropout_prob); default: config.json's",
        gluon=False)
    # data pre/post-processing
    max_seq_length: int = _flag(512, 'tokens per window')
    doc_stride: int = _flag(128, 'window stride (see --stride_mode)')
    max_query_length: int = _flag(64, 'questions are truncated to this many tokens')
    pre_shuffle_seed: int = _flag(100, 'seed of the one-off shuffle of the training windows')
    round_to: int | None = _flag(None, 'pad batch lengths up to a multiple of this')
    overwrite_cache: bool = _flag(False, 'rebuild cached features')
    # evaluation
    start_top_n: int = _flag(5, 'conditional head: start candidates per window')
    end_top_n: int = _flag(5, 'conditional head: end candidates per start')
    n_best_size: int = _flag(20, 'n-best answers kept per question')
    max_answer_length: int = _flag(30, 'longest answer, in tokens')
    param_checkpoint: str | None = _flag(None, 'fine-tuned checkpoint to evaluate (.safetensors)')
    backbone_path: str | None = _flag(None,
        'backbone weights to start from (.safetensors), overriding the pretrained ones')
    all_evaluate: bool = _flag(False, 'evaluate every kept checkpoint and pick the best')
    dtype: str = _flag('float32',
        'compute precision: float16 (AMP + loss scaling), bfloat16 (autocast), int8 (evaluation only, CPU '
        'dynamic quantization)', choices=('float32', 'float16', 'bfloat16', 'int8'))
    # SQuAD Bench additions
    backend: str = _flag('torch', 'framework backend (a name in bench.run.registry: torch, mxnet)', gluon=False)
    model_path: str | None = _flag(None, 'local Hugging Face model folder (config, weights, tokenizer)', gluon=False)
    train_file: str | None = _flag(None, 'training file (.json or .json.gz), overrides --data_dir', gluon=False)
    dev_file: str | None = _flag(None, 'dev file (.json or .json.gz), overrides --data_dir', gluon=False)
    head: str = _flag('conditional', 'QA head (a name in bench.core.heads: conditional, basic, ...)', gluon=False)
    loss: str = _flag('ce', 'training loss of the head (a name in bench.core.losses)', gluon=False)
    focal_gamma: float = _flag(1.0, '--loss focal: gamma in -(1 - p_gold)^gamma log p_gold (0 = ce)', gluon=False)
    label_smoothing: float = _flag(0.2,
        '--loss label_smoothing: share eps of the target spread over the other candidate positions (0 = ce)',
        gluon=False)
    stride_mode: str = _flag('step',
        'step: --doc_stride is the distance between window starts (BERT, GluonNLP); overlap: tokens shared by'
        ' consecutive windows (Hugging Face)', gluon=False, choices=('step', 'overlap'))
    max_train_samples: int | None = _flag(None, 'train on a reproducible random subset of questions', gluon=False)
    max_eval_samples: int | None = _flag(None, 'evaluate on a reproducible random subset of questions', gluon=False)
    null_score_diff_threshold: float = _flag(0.0,
        'v2: predict no answer when null score - best span score exceeds this', gluon=False)
    select_best_by: str = _flag('em_f1',
        'how --all_evaluate picks the best checkpoint: em_f1 ((EM + F1) / 2; v2.0: threshold-tuned), '
        'joint_accuracy (windows whose argmax start and end both equal the labels)', gluon=False,
        choices=('em_f1', 'joint_accuracy'))
    resume: bool = _flag(False, 'continue from the newest checkpoint in --output_dir', gluon=False)
    overwrite_output_dir: bool = _flag(False,
        'replace the previous run in --output_dir: remove its checkpoints and outputs first', gluon=False)
    seeds: str | None = _flag(None,
        'comma-separated seeds: run once per seed into <output_dir>/seed_<s>', gluon=False)
    cache_dir: str | None = _flag(None, 'feature cache folder (default: <output_dir>/../.feature_cache)', gluon=False)
    max_train_windows_per_epoch: int | None = _flag(None,
        'cap on training windows per epoch (debugging)', gluon=False)
    length_grouping: bool = _flag(False,
        'group training windows of similar length into batches (less padding; changes batch composition)',
        gluon=False)
    answer_windows_only: bool = _flag(False,
        'train only on the windows that hold their answer (an unanswerable v2.0 question keeps every window): '
        'less arithmetic per epoch; the float32 demo recipe uses it', gluon=False)
    compile: bool = _flag(False,
        'compile the backbone with torch.compile (worth it on GPUs; slow to start)', gluon=False)
    report_to: str = _flag('none',
        'experiment trackers, comma-separated: none, tensorboard, wandb, mlflow, all (every installed one);'
        ' see docs/tracking.md', gluon=False)
    eval_interval: int | None = _flag(None,
        'also evaluate on dev every N updates during training (recorded in results.json metrics.evaluations)',
        gluon=False)
    teacher_path: str | None = _flag(None,
        'distil from this teacher: a fine-tuned Hugging Face *ForQuestionAnswering folder, or one of our checkpoints '
        '(with --teacher_model_path); see docs/run-script.md#distillation', gluon=False)
    teacher_model_path: str | None = _flag(None,
        '--teacher_path is our checkpoint: the model folder it was fine-tuned from', gluon=False)
    distill_temperature: float = _flag(2.0, '--teacher_path: softmax temperature T (> 0)', gluon=False)
    distill_alpha: float = _flag(0.5,
        '--teacher_path: weight a of the distillation term, (1 - a) L_student + a T^2 KL (in [0, 1])', gluon=False)
    lr_schedule: str = _flag('linear',
        'learning-rate schedule after the warm-up: linear (decay to 0 at the last update) or constant',
        gluon=False, choices=LR_SCHEDULES)
    # recurrent baselines (--model_name lstm_baseline / bidaf; docs/recurrent-baselines.md)
    word_vectors: str | None = _flag(None,
        'recurrent baselines: word vectors to start from, GloVe/word2vec/fastText text format (.txt, .vec, '
        'optionally .gz); words it lacks get its mean vector', gluon=False)
    train_word_vectors: bool = _flag(False, 'recurrent baselines: tune the --word_vectors (frozen by default)',
                                     gluon=False)
    word_dim: int = _flag(100,
        'recurrent baselines: word embedding size when trained from scratch (--word_vectors sets its own)',
        gluon=False)
    rnn_hidden_size: int = _flag(100, 'recurrent baselines: hidden size of each LSTM direction', gluon=False)
    rnn_dropout: float = _flag(0.2, 'recurrent baselines: dropout between the recurrent blocks', gluon=False)
    vocab_min_count: int = _flag(1,
        'recurrent baselines: keep training-file words seen at least this often (others become [UNK])',
        gluon=False)
    vocab_max_size: int = _flag(100000, 'recurrent baselines: at most this many vocabulary entries', gluon=False)


def _flag_row(f) -> Flag:
    meta = f.metadata
    annotation = str(f.type)
    store_true = annotation == "bool"
    kind = None if store_true else _ARG_TYPES[annotation.split(" | ")[0]]
    return Flag(f.name, kind, f.default, meta["help"], gluon=meta["gluon"], choices=meta["choices"],
                store_true=store_true)


FLAGS: tuple[Flag, ...] = tuple(_flag_row(f) for f in fields(RunConfig))
FLAG_BY_NAME = {flag.name: flag for flag in FLAGS}


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
                 "warmup_steps", "max_train_windows_per_epoch", "eval_interval"):
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
    _check(config.backbone_dropout is None or 0.0 <= config.backbone_dropout < 1.0,
           f"--backbone_dropout must be in [0, 1), got {config.backbone_dropout}")
    _check(config.max_query_length < config.max_seq_length,
           f"--max_query_length ({config.max_query_length}) must be below --max_seq_length "
           f"({config.max_seq_length})")
    _check(not (config.dtype == "int8" and config.do_train),
           "--dtype int8 is for evaluation only (dynamic quantization); train in float32/bfloat16/float16")
    parse_adam_betas(config.adam_betas)
    _validate_head_and_loss(config)
    _validate_recurrent(config)
    if config.model_path is None:
        get_model_spec(config.model_name)       # unknown names fail here, with the closest matches
    if config.seeds is not None:
        parse_seeds(config.seeds)


def _validate_head_and_loss(config) -> None:
    head = get_head(config.head)            # unknown names fail here, listing the registered ones
    get_loss(config.loss)
    _check(config.loss in head.losses, f"--loss {config.loss} does not apply to --head {config.head}, which "
           f"trains with: {', '.join(head.losses)}")
    _check(config.focal_gamma >= 0, f"--focal_gamma must be >= 0, got {config.focal_gamma}")
    _check(0.0 <= config.label_smoothing < 1.0, f"--label_smoothing must be in [0, 1), got {config.label_smoothing}")
    _validate_distillation(config)


def _validate_distillation(config) -> None:
    _check(config.distill_temperature > 0,
           f"--distill_temperature must be > 0, got {config.distill_temperature}")
    _check(0.0 <= config.distill_alpha <= 1.0, f"--distill_alpha must be in [0, 1], got {config.distill_alpha}")
    if config.teacher_path is None:
        _check(config.teacher_model_path is None, "--teacher_model_path needs --teacher_path")
        return
    _check(config.do_train, "--teacher_path needs --do_train: the teacher's logits are training targets")
    head = get_head(config.head)
    _check(head.postprocess_input == "logits",
           f"--head {config.head} cannot be distilled with --teacher_path (its outputs are not start/end logits); "
           "use --head basic or bilstm")


def _validate_recurrent(config) -> None:
    for name in ("word_dim", "rnn_hidden_size", "vocab_min_count", "vocab_max_size"):
        _check(getattr(config, name) > 0, f"--{name} must be positive, got {getattr(config, name)}")
    _check(0.0 <= config.rnn_dropout < 1.0, f"--rnn_dropout must be in [0, 1), got {config.rnn_dropout}")
    _check(config.vocab_max_size > 4, f"--vocab_max_size must leave room past the 4 special tokens, got "
           f"{config.vocab_max_size}")
    _check(config.backend == "torch" or config.optimizer == "adamw",
           f"--optimizer {config.optimizer} runs on --backend torch only (--backend {config.backend}: adamw)")
    _validate_word_model(config)


def _validate_word_model(config) -> None:
    """A from-scratch family (--model_name lstm_baseline / bidaf): its backend, layer rules and vectors."""
    spec = get_model_spec(config.model_name) if config.model_path is None else None
    if spec is not None and spec.from_scratch:
        family = get_family(spec.family)
        family.backend_module(config.backend)       # e.g. --backend mxnet: one line naming --backend torch
        family.refuse_layer_rules(config.layerwise_decay, config.untunable_depth)
        family.dropout_overrides(config.backbone_dropout)
        _check(config.word_vectors is None or os.path.isfile(config.word_vectors),
               f"--word_vectors {config.word_vectors}: no such file")
    elif config.word_vectors or config.train_word_vectors:
        # A folder built by an earlier run (--model_path) already holds its embeddings.
        _check(False, "--word_vectors / --train_word_vectors apply when --model_name lstm_baseline or bidaf "
               "builds a new model (without --model_path)")


def flags_to_argv(flags: dict) -> list[str]:
    """Flag values -> command-line words: ``{"lr": 1e-3, "do_train": True, "x": None}`` -> ``["--lr", "0.001",
    "--do_train"]`` (a True switch is its name; None and False are left out)."""
    argv = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None and value is not False:
            argv += [f"--{key}", str(value)]
    return argv


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
