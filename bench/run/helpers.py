"""Framework-free helpers of a run that every backend uses.

The evaluation loop (batching windows by length, filling the head's output arrays that
``bench.run.pipeline.score_outputs`` reads), training statistics and the save
rule, the feature-cache folder, progress bars, the run's log file and its summary.
Nothing here imports a framework.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bench.core.features import Features, batch_arrays
from bench.core.heads import allocate_outputs

__all__ = ["CPU_WARNING_WINDOWS", "EvalBatching", "predict_in_batches", "batches_by_length", "store_rows", "TrainStats", "log_update",
           "should_save", "feature_cache_dir", "progress_factory", "print_summary", "run_log"]

logger = logging.getLogger("bench.run")

# Above this much training work (windows x epochs) a CPU-only run gets a duration estimate first.
CPU_WARNING_WINDOWS = 20_000


# ---------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalBatching:
    """How evaluation windows are batched and what the head is asked for (from the run flags)."""
    head: str
    batch_size: int
    pad_id: int
    round_to: int | None = None
    start_top_n: int = 5
    end_top_n: int = 5
    log_interval: int = 10

    @classmethod
    def from_config(cls, config, pad_id: int) -> "EvalBatching":
        return cls(head=config.head, batch_size=config.eval_batch_size, pad_id=pad_id, round_to=config.round_to,
                   start_top_n=config.start_top_n, end_top_n=config.end_top_n, log_interval=config.eval_log_interval)


def predict_in_batches(features: Features, indices: np.ndarray, predict_batch: Callable[[dict], dict],
                       batching: EvalBatching, progress=None) -> dict[str, np.ndarray]:
    """The evaluation loop of every backend: windows ``indices`` longest first, in batches.

    ``predict_batch(arrays)`` runs the model on one batch (``batch_arrays``' numpy inputs) and
    returns numpy outputs in the head's format (``bench.core.heads``); the rows of the result
    follow ``indices``' order.
    """
    indices = np.asarray(indices)
    width = int(features.lengths.max()) if len(features) else 1
    outputs = allocate_outputs(batching.head, len(indices), width, batching.start_top_n, batching.end_top_n)
    row_of = {int(feature): row for row, feature in enumerate(indices)}
    batches = batches_by_length(features, indices, batching.batch_size)
    started = time.perf_counter()
    for step, batch_indices in enumerate(batches, 1):
        arrays = batch_arrays(features, batch_indices, pad_id=batching.pad_id, round_to=batching.round_to)
        rows = np.fromiter((row_of[int(i)] for i in batch_indices), np.int64, len(batch_indices))
        store_rows(outputs, predict_batch(arrays), rows)
        if progress is not None:
            progress.update(len(batch_indices))
        if step % batching.log_interval == 0:
            rate = sum(len(b) for b in batches[:step]) / (time.perf_counter() - started)
            logger.debug("eval batch %d/%d (%.1f windows/s)", step, len(batches), rate)
    return outputs


def batches_by_length(features: Features, indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Windows longest first, cut into batches: similar lengths share a batch (little padding)."""
    order = indices[np.argsort(-features.lengths[indices], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def store_rows(outputs: dict[str, np.ndarray], result: dict[str, np.ndarray], rows: np.ndarray) -> None:
    """Copy one batch's numpy results into ``rows`` of ``outputs`` (logits padded to the widest window)."""
    for name, values in result.items():
        if name in ("start_logits", "end_logits"):
            # A batch rounded up (--round_to) may be wider than the widest window: those columns are padding.
            width = min(values.shape[1], outputs[name].shape[1])
            outputs[name][rows, :width] = values[:, :width]
        else:
            outputs[name][rows] = values


# ---------------------------------------------------------------------------------------- training
@dataclass
class TrainStats:
    updates: int = 0
    windows: int = 0
    tokens: int = 0
    skipped_updates: int = 0      # float16 overflow: step skipped by the loss scaler
    seconds: float = 0.0
    last_loss: float = float("nan")
    history: list = field(default_factory=list)


def log_update(stats: TrainStats, position, *, loss: float, lr: float, grad_norm: float, elapsed: float,
               world_size: int = 1, log_path: Path | None = None, emit: bool = True) -> dict:
    """One --log_interval record of every backend's loop: kept in ``stats.history`` on every process;
    logged and appended to ``log_path`` (train_log.jsonl) when ``emit`` (the main process)."""
    record = {"update": position.update, "epoch": position.epoch, "loss": round(loss, 6), "lr": lr,
              "grad_norm": round(grad_norm, 4),
              "samples_per_second": round(stats.windows * world_size / max(elapsed, 1e-9), 2),
              "skipped_updates": stats.skipped_updates, "elapsed_seconds": round(elapsed, 2)}
    stats.history.append(record)
    if not emit:
        return record
    logger.info("update %(update)d epoch %(epoch)d loss %(loss).4f lr %(lr).3g grad_norm %(grad_norm).3f "
                "%(samples_per_second).1f samples/s skipped %(skipped_updates)d", record)
    if log_path is not None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return record


def should_save(update: int, save_interval: int | None, end_of_epoch: bool, finished: bool) -> bool:
    """Save at the end, every --save_interval updates, or (no interval) at every epoch's end."""
    if finished:
        return True
    if save_interval:
        return update % save_interval == 0
    return end_of_epoch


# ---------------------------------------------------------------------------------------- run
def feature_cache_dir(config) -> Path:
    """--cache_dir, else ``<output_dir>/../.feature_cache`` (shared by the runs beside it)."""
    if config.cache_dir:
        return Path(config.cache_dir)
    return Path(config.output_dir).resolve().parent / ".feature_cache"


def progress_factory(desc: str, unit: str):
    from tqdm.auto import tqdm

    return lambda total, initial=0: tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                                         file=sys.stderr, mininterval=2.0)


def print_summary(record: dict, output_dir: Path) -> None:
    fixed = record["metrics"].get("fixed") or {}
    em = fixed.get("exact_match", fixed.get("exact"))
    if em is not None:
        tuned = record["metrics"].get("tuned")
        extra = f" (dev-tuned threshold: EM {tuned['exact']:.2f} / F1 {tuned['f1']:.2f})" if tuned else ""
        logger.info("SQuAD %s: EM %.2f / F1 %.2f%s", record["squad_version"], em, fixed["f1"], extra)
    logger.info("outputs in %s", output_dir)


@contextlib.contextmanager
def run_log(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Copy every log record to ``<output_dir>/run.log`` while the run lasts.

    The handler is removed afterwards, so the next run in the same process (``--seeds``,
    tests, notebooks) does not write into this run's log.
    """
    if not enabled:
        yield
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(output_dir) / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
