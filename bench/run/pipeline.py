"""Framework-free pieces of a run that every backend shares.

What to train on and in which order (``load_datasets``, ``plan_epoch``,
``total_updates``), how features are parameterised for a tokenizer, and how the
best checkpoint is chosen. Backends (``bench.backends.torch``, ``bench.backends.mxnet``)
supply only the model, the forward/backward step and the communication.

An *update* is ``num_accumulated`` micro-batches of ``batch_size`` windows on
each of ``world_size`` processes: the global batch is
``batch_size * num_accumulated * world_size``. Every epoch each process takes
its shard of the pre-shuffled windows (``bench.run.distributed.epoch_shard``: the
same permutation on all ranks, interleaved shards padded to equal size) and
wraps it to a whole number of updates, so every update has exactly
``num_accumulated`` micro-batches (Horovod counts backward passes; a short
update would desynchronise it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.run.checkpoints import list_checkpoints
from bench.core.families import get_family
from bench.core.heads import get_head
from bench.core.data import EmptyDataError, SquadDataset, load_squad
from bench.run.distributed import epoch_shard
from bench.core.scoring import evaluate
from bench.core.features import FeatureParams, Features
from bench.core.postprocess import (candidates_from_logits, candidates_from_topk, null_scores_from_logits,
                               postprocess, write_predictions)
from bench.core.squad_files import find_squad_file
from bench.run.record import split_metrics

logger = logging.getLogger(__name__)

__all__ = ["EpochPlan", "plan_epoch", "updates_per_epoch", "total_updates", "load_datasets", "subset", "answer_windows",
           "feature_params", "dataset_cache_key", "selection_score", "token_accuracy",
           "score_outputs", "checkpoints_to_evaluate", "checkpoint_label", "BestCheckpoint", "evaluate_checkpoints"]


@dataclass
class EpochPlan:
    """The micro-batches (arrays of window indices) of one epoch on one process, grouped by update."""
    updates: list[list[np.ndarray]]


def plan_epoch(features: Features, order: np.ndarray, *, epoch: int, rank: int, world_size: int, seed: int,
               batch_size: int, num_accumulated: int, length_grouping: bool = False,
               max_windows: int | None = None) -> EpochPlan:
    """Shard, optionally group by length, wrap to whole updates, and cut into micro-batches.

    Every epoch of at least one window has at least one update; no windows is an EmptyDataError
    (an epoch of no updates would make the training loop plan epochs forever)."""
    _require_windows(len(order))
    shard = order[epoch_shard(len(order), rank, world_size, epoch, seed)]
    if max_windows:
        shard = shard[:max(1, max_windows // world_size)]
    per_update = batch_size * num_accumulated
    num_updates = math.ceil(len(shard) / per_update)
    wrapped = np.resize(shard, num_updates * per_update)   # repeats the start of the shard
    if length_grouping:
        wrapped = _group_by_length(features.lengths, wrapped, batch_size,
                                   np.random.default_rng((seed, epoch, rank)))
    micro = wrapped.reshape(num_updates * num_accumulated, batch_size)
    return EpochPlan([list(micro[u * num_accumulated:(u + 1) * num_accumulated]) for u in range(num_updates)])


def _group_by_length(lengths: np.ndarray, indices: np.ndarray, batch_size: int, rng) -> np.ndarray:
    # Sort inside chunks of 50 batches, then shuffle the batches: similar lengths share a batch
    # (little padding) while the epoch order stays random.
    chunk = batch_size * 50
    pieces = [idx[np.argsort(lengths[idx], kind="stable")]
              for idx in np.split(indices, range(chunk, len(indices), chunk))]
    batches = np.concatenate(pieces).reshape(-1, batch_size)
    return batches[rng.permutation(len(batches))].reshape(-1)


def updates_per_epoch(num_windows: int, world_size: int, batch_size: int, num_accumulated: int,
                      max_windows: int | None = None) -> int:
    """Updates in one epoch of each process: at least 1; no windows is an EmptyDataError."""
    _require_windows(num_windows)
    shard = math.ceil(num_windows / world_size)
    if max_windows:
        shard = min(shard, max(1, max_windows // world_size))
    return math.ceil(shard / (batch_size * num_accumulated))


def total_updates(config, num_windows: int, world_size: int) -> int:
    """--num_train_steps, else epochs (fractional allowed, as in GluonNLP) x updates per epoch.

    No windows is an EmptyDataError naming the training file, even with --num_train_steps."""
    _require_windows(num_windows, config.train_file or f"the training file in --data_dir {config.data_dir}")
    if config.num_train_steps:
        return int(config.num_train_steps)
    per_epoch = updates_per_epoch(num_windows, world_size, config.batch_size, config.num_accumulated,
                                  config.max_train_windows_per_epoch)
    return max(1, math.ceil(config.epochs * per_epoch))


def _require_windows(num_windows: int, source: str = "the training set") -> None:
    if num_windows < 1:
        raise EmptyDataError(f"{source}: nothing to train on: 0 training windows")


def answer_windows(features: Features, dataset: SquadDataset) -> Features:
    """--answer_windows_only: the training windows that hold their answer, plus every window of an unanswerable
    (v2.0) question. A window that misses its answerable question's answer only teaches "not here"; in
    post-processing it competes with the windows that have the answer, so skipping it trades a little
    accuracy for arithmetic (docs/run-script.md#training-windows)."""
    answerable = np.array([not example.is_impossible for example in dataset.examples], dtype=bool)
    keep = ~(features.is_impossible & answerable[features.example_index])
    logger.info("--answer_windows_only: training on %d of %d windows (%d miss their answer)",
                int(keep.sum()), len(features), int((~keep).sum()))
    _require_windows(int(keep.sum()), "the training windows that hold their answer")
    return features.select(np.flatnonzero(keep))


def subset(dataset: SquadDataset, limit: int | None, seed: int) -> SquadDataset:
    """A reproducible random subset of ``limit`` questions, in file order."""
    if not limit or limit >= len(dataset.examples):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset.examples), size=limit, replace=False))
    return dataclasses.replace(dataset, examples=[dataset.examples[i] for i in keep])


def load_datasets(config) -> tuple[SquadDataset | None, SquadDataset | None]:
    """The training set (--do_train) and dev set (--do_eval), subset as the flags ask.

    Both are loaded before any model or training: a set left without questions (an empty file, a
    training file whose every answer the loader could not locate, --version 1.1 on a training file
    with no answerable question) is an EmptyDataError naming the file and why."""
    train = dev = None
    if config.do_train:
        path = config.train_file or find_squad_file(config.data_dir, "train", config.version)
        train = load_squad(path, for_training=True)
        why_empty = None
        if config.version == "1.1" and train.version == "2.0":
            # A v1.1 model never predicts "no answer": train on the answerable questions only.
            kept = [ex for ex in train.examples if not ex.is_impossible]
            logger.info("--version 1.1 on a 2.0 training file: keeping %d answerable of %d questions",
                        len(kept), len(train.examples))
            if train.examples:
                why_empty = (f"--version 1.1 trains on answerable questions only, and none of its "
                             f"{len(train.examples)} usable questions is answerable")
            train = dataclasses.replace(train, examples=kept)
        train = _require_questions(subset(train, config.max_train_samples, config.seed), "train on", why_empty)
    if config.do_eval:
        path = config.dev_file or find_squad_file(config.data_dir, "dev", config.version)
        dev = _require_questions(subset(load_squad(path, version=config.version), config.max_eval_samples,
                                        config.seed), "evaluate")
    return train, dev


def _require_questions(dataset: SquadDataset, purpose: str, why: str | None = None) -> SquadDataset:
    """``dataset`` as it is, or an EmptyDataError naming its file when it has no question left."""
    if dataset.examples:
        return dataset
    dropped = dataset.stats.get("questions_dropped", 0)
    if why is None:
        why = (f"all {dropped} answerable questions were dropped, because none of their answer texts "
               f"could be located in the context" if dropped else "the file has no questions")
    raise EmptyDataError(f"{dataset.path}: nothing to {purpose}: {why}")


def feature_params(config, model_type: str) -> FeatureParams:
    """Window parameters from the flags; the input template from the model's family."""
    style = get_family(model_type).input_style
    return FeatureParams(max_seq_length=config.max_seq_length, max_query_length=config.max_query_length,
                         doc_stride=config.doc_stride, stride_mode=config.stride_mode, input_style=style)


def dataset_cache_key(dataset: SquadDataset) -> str:
    """File hash + the question ids kept, so another --max_*_samples subset gets its own cache."""
    ids = "\n".join(ex.qid for ex in dataset.examples).encode("utf-8")
    return hashlib.sha256(dataset.sha256.encode("ascii") + ids).hexdigest()


def selection_score(metrics: dict, version: str, by: str = "em_f1") -> float:
    """The score ``--select_best_by`` chooses among checkpoints with (higher is better).

    ``em_f1``: (EM + F1) / 2, for v2.0 on the threshold-tuned scores. ``joint_accuracy``: the share of
    windows whose argmax start and end both equal the labels (``metrics["token_accuracy"]["joint"]``).
    """
    if by == "joint_accuracy":
        return float(metrics["token_accuracy"]["joint"])
    if by != "em_f1":
        raise ValueError(f"--select_best_by {by!r}: expected em_f1 or joint_accuracy")
    if version == "2.0" and metrics.get("tuned"):
        return (metrics["tuned"]["exact"] + metrics["tuned"]["f1"]) / 2
    fixed = metrics["fixed"]
    return (fixed.get("exact_match", fixed.get("exact", 0.0)) + fixed["f1"]) / 2


# ------------------------------------------------------------------------------- evaluation stages
def _logit_candidates(outputs: dict, features: Features, config):
    """Per-position start/end scores: the best spans are searched for (BERT's post-processing)."""
    start, end = outputs["start_logits"], outputs["end_logits"]
    return candidates_from_logits(start, end, features, config.n_best_size), null_scores_from_logits(start, end)


def _topk_candidates(outputs: dict, features: Features, config):
    """The head's own start/end candidates and null score, scored as they are."""
    candidates = candidates_from_topk(outputs["start_top_index"], outputs["start_top_logit"],
                                      outputs["end_top_index"], outputs["end_top_logit"])
    return candidates, outputs["null_score"]


# A head's registry entry (bench.core.heads) names which of these reads its outputs.
_CANDIDATES = {"logits": _logit_candidates, "topk": _topk_candidates}


def _top_positions(outputs: dict, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Each window's predicted (start, end) token positions: the argmax of the start and end logits
    (``logits`` heads), or the top start and its top end (``topk`` heads)."""
    if get_head(head).postprocess_input == "logits":
        return (np.argmax(outputs["start_logits"], axis=1), np.argmax(outputs["end_logits"], axis=1))
    return outputs["start_top_index"][:, 0], outputs["end_top_index"][:, 0, 0]


def token_accuracy(head: str, features: Features, outputs: dict[str, np.ndarray]) -> dict:
    """Start, end and joint (both right) accuracy of the top positions against the window labels.

    Labels are the features' ``start_positions``/``end_positions``: the first gold answer's tokens
    when the window holds the whole answer, else CLS (0), as in training. Fractions in [0, 1] over
    all ``windows`` evaluated (0.0 for none)."""
    start, end = _top_positions(outputs, head)
    start_ok = np.asarray(start, np.int64) == features.start_positions
    end_ok = np.asarray(end, np.int64) == features.end_positions
    n = len(features)

    def share(hits: np.ndarray) -> float:
        return float(np.count_nonzero(hits)) / n if n else 0.0

    return {"start": share(start_ok), "end": share(end_ok), "joint": share(start_ok & end_ok), "windows": int(n)}


def score_outputs(config, dataset: SquadDataset, features: Features, outputs: dict[str, np.ndarray]):
    """Head outputs of every window (gathered, in feature order) -> answers -> scores.

    ``outputs`` holds ``start_logits``/``end_logits`` (basic head) or ``start_top_*``/``end_top_*``
    and ``null_score`` (conditional head). Returns ``(metrics, predictions)`` where metrics is
    ``{"fixed": scores at --null_score_diff_threshold, "tuned": v2.0 dev-tuned scores or None,
    "token_accuracy": token_accuracy(...)}``.
    """
    candidates, null_scores = _CANDIDATES[get_head(config.head).postprocess_input](outputs, features, config)
    predictions = postprocess(dataset, features, candidates, null_scores, n_best_size=config.n_best_size,
                              max_answer_length=config.max_answer_length,
                              null_score_diff_threshold=config.null_score_diff_threshold,
                              version_2_with_negative=config.version == "2.0")
    fixed = evaluate(dataset, predictions.predictions)
    # The raw null-minus-span differences are not probabilities: no --na-prob-thresh cut here.
    tuned_source = (evaluate(dataset, predictions.predictions, na_probs=predictions.na_prob,
                             na_prob_thresh=float("inf")) if config.version == "2.0" else None)
    fixed, tuned = split_metrics(fixed, tuned_source)
    accuracy = token_accuracy(config.head, features, outputs)
    return {"fixed": fixed, "tuned": tuned, "token_accuracy": accuracy}, predictions


def checkpoints_to_evaluate(config, output_dir: Path) -> list[Path | None]:
    """The last checkpoint, or every kept one with --all_evaluate; [None] = the model as loaded
    (--param_checkpoint, or the pretrained backbone with a fresh head)."""
    checkpoints = list_checkpoints(Path(output_dir) / "checkpoints") if config.do_train else []
    if checkpoints and not config.all_evaluate:
        checkpoints = checkpoints[-1:]
    return checkpoints or [None]


def checkpoint_label(config, checkpoint: Path | None) -> str:
    if checkpoint is not None:
        return checkpoint.name
    return Path(config.param_checkpoint).name if config.param_checkpoint else "pretrained"


class BestCheckpoint:
    """Keeps the best evaluated checkpoint by ``selection_score`` (``--select_best_by``; the first of
    equal scores); writes per-checkpoint predictions under ``<output_dir>/eval/<name>/`` when more
    than one is evaluated."""

    def __init__(self, config, output_dir: Path, num_candidates: int):
        self.config, self.output_dir, self.num_candidates = config, Path(output_dir), num_candidates
        self.select_best_by = getattr(config, "select_best_by", "em_f1")
        self.best: dict | None = None

    def offer(self, name: str, metrics: dict, predictions) -> None:
        accuracy = metrics.get("token_accuracy")
        tokens = ("" if not accuracy else
                  "; token accuracy start %.4f end %.4f joint %.4f over %d windows"
                  % (accuracy["start"], accuracy["end"], accuracy["joint"], accuracy["windows"]))
        logger.info("eval %s: %s%s", name, json.dumps(metrics["fixed"]), tokens)
        if self.num_candidates > 1:
            write_predictions(self.output_dir / "eval" / name, predictions)
        score = selection_score(metrics, self.config.version, self.select_best_by)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "checkpoint": name, "metrics": metrics, "predictions": predictions}


def evaluate_checkpoints(config, output_dir: Path, dev: SquadDataset, features: Features, predict_checkpoint,
                         *, is_main: bool = True) -> dict:
    """The evaluation stage of every backend: each of ``checkpoints_to_evaluate`` in turn.

    ``predict_checkpoint(checkpoint)`` loads it (None: the model as it is) and returns the outputs
    ``score_outputs`` reads, on the main process (elsewhere: anything). The main process scores them
    and returns the best one's record with the mean evaluation time; other processes return {}.
    """
    candidates = checkpoints_to_evaluate(config, output_dir)
    best = BestCheckpoint(config, output_dir, len(candidates))
    started = time.perf_counter()
    for checkpoint in candidates:
        outputs = predict_checkpoint(checkpoint)
        if is_main:
            best.offer(checkpoint_label(config, checkpoint), *score_outputs(config, dev, features, outputs))
    seconds = time.perf_counter() - started
    if not is_main:
        return {}
    return {**best.best, "eval_seconds": round(seconds / len(candidates), 3),
            "eval_samples_per_second": round(len(features) * len(candidates) / max(seconds, 1e-9), 3)}
