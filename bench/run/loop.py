"""The training loop every backend runs: one explicit loop over optimizer updates.

The backend supplies the step (``TrainingSteps.run_update``: forward/backward of each
micro-batch, clipping, the optimizer step); this loop owns the rest, in small named
stages: the epoch plans (sharding, wrapping, length grouping: ``bench.run.pipeline``),
counting, progress, the ``--log_interval`` records, saving and pruning checkpoints, and
stopping at ``total_updates`` (or at ``stop_after``, which tests of ``--resume`` use).
Each ``--log_interval`` record also goes to the ``--report_to`` trackers (``LoopContext.tracker``,
``bench.run.trackers``), and every ``--eval_interval`` updates the driver's evaluation hook
(``LoopContext.evaluate``) scores the model as it is before training resumes (``steps.begin()``).

``--resume`` continues from the newest checkpoint whose files match the sha256 recorded when
it was saved (a damaged one is passed over with a warning naming the file), refuses a
checkpoint trained with another ``--head``, and rewinds ``train_log.jsonl`` to the
checkpoint's update. The position carries the run so far across resumes (training seconds of
every segment, skipped updates, the resume points), so the results record describes the
whole run.

An update is ``num_accumulated`` micro-batches of ``batch_size`` windows on each process;
its loss is the mean over the update's windows, so the gradient is the mean over the
global batch ``batch_size * num_accumulated * world_size`` whatever the split.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.core.io_utils import atomic_write_text
from bench.run.backend import TrainingSteps, UpdateResult
from bench.run.checkpoints import TrainPosition, newest_intact_checkpoint, prune_checkpoints, read_meta
from bench.run.helpers import TrainStats, log_update, should_save
from bench.run.pipeline import plan_epoch, updates_per_epoch

logger = logging.getLogger(__name__)

__all__ = ["LoopContext", "TrainingLoop", "ResumeError", "rewind_train_log"]


class ResumeError(BenchError, ValueError):
    """--resume cannot continue from the checkpoint it found; the message names it and says why."""


@dataclass(frozen=True)
class LoopContext:
    """Where the loop runs: this process's place in the job and where it writes."""
    rank: int
    world_size: int
    is_main: bool
    ckpt_root: Path
    log_path: Path | None       # train_log.jsonl (main process only)
    barrier: object             # zero-argument callable
    tracker: object = None      # bench.run.trackers sink (--report_to; a NullSink off the main process)
    evaluate: object = None     # --eval_interval: callable(update) evaluating the model as it is (every process)


class TrainingLoop:
    """Holds the loop's state (position in the run, statistics); ``train()`` is the loop."""

    def __init__(self, config, steps: TrainingSteps, features, order: np.ndarray, total_updates: int,
                 context: LoopContext):
        self.config, self.steps, self.features, self.order = config, steps, features, order
        self.total_updates, self.context = total_updates, context
        self.position = TrainPosition()
        self.stats = TrainStats()
        self._segment_started = 0.0     # perf_counter() when this segment's training began
        self._seconds_before = 0.0      # training seconds of the segments before it (from the checkpoint)

    # -- stage: resume -------------------------------------------------------------------------
    def resume_from_latest(self) -> bool:
        checkpoint = newest_intact_checkpoint(self.context.ckpt_root)
        if checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.context.ckpt_root)
            return False
        self._check_head(checkpoint)
        self.position = self.steps.resume(checkpoint)
        self.position.resumed_from = [*self.position.resumed_from, self.position.update]
        logger.info("resumed from %s (update %d, epoch %d)", checkpoint, self.position.update,
                    self.position.epoch)
        if self.context.log_path is not None:
            rewind_train_log(self.context.log_path, self.position.update)
        return True

    def _check_head(self, checkpoint: Path) -> None:
        saved = (read_meta(checkpoint) or {}).get("head")
        if saved is not None and saved != self.config.head:
            raise ResumeError(f"--resume: checkpoint {checkpoint} was trained with --head {saved}, but this run "
                              f"has --head {self.config.head}: resume with --head {saved}, or start a new run "
                              f"in another --output_dir")

    # -- stage: one update's bookkeeping ---------------------------------------------------------
    def _count(self, micro_batches: list[np.ndarray], result: UpdateResult) -> None:
        self.position.update += 1
        self.position.update_in_epoch += 1
        self.stats.updates += 1
        self.stats.windows += sum(len(mb) for mb in micro_batches)
        self.stats.tokens += result.tokens
        self.stats.skipped_updates += int(result.skipped)
        self.stats.last_loss = result.loss
        self.position.skipped_updates += int(result.skipped)

    def _log(self, result: UpdateResult, started: float) -> None:
        loss = self.steps.mean_over_processes(result.loss)
        record = log_update(self.stats, self.position, loss=loss, lr=self.steps.current_lr(self.position.update),
                            grad_norm=result.grad_norm, elapsed=time.perf_counter() - started,
                            world_size=self.context.world_size, log_path=self.context.log_path,
                            emit=self.context.is_main)
        if self.context.is_main and self.context.tracker is not None:
            self.context.tracker.log_train(record)

    def _evaluate(self) -> None:
        """--eval_interval: score the model as it is on dev, then put it back in training mode."""
        self.context.evaluate(self.position.update)
        self.steps.begin()

    def _save(self) -> None:
        self._record_seconds()
        if self.context.is_main:
            path = self.steps.save(self.context.ckpt_root, self.position)
            pruned = prune_checkpoints(self.context.ckpt_root, self.config.max_saved_ckpt)
            logger.info("saved %s%s", path, f" (pruned {len(pruned)})" if pruned else "")
        self.context.barrier()

    def _show(self, progress, loss: float, started: float) -> None:
        if progress is None:
            return
        progress.update(1)
        rate = self.stats.windows * self.context.world_size / (time.perf_counter() - started)
        progress.set_postfix(loss=f"{loss:.3f}", lr=f"{self.steps.current_lr(self.position.update):.2e}",
                             sps=f"{rate:.1f}")

    # -- the loop ------------------------------------------------------------------------------
    def _epoch_plan(self):
        cfg = self.config
        return plan_epoch(self.features, self.order, epoch=self.position.epoch, rank=self.context.rank,
                          world_size=self.context.world_size, seed=cfg.seed, batch_size=cfg.batch_size,
                          num_accumulated=cfg.num_accumulated, length_grouping=cfg.length_grouping,
                          max_windows=cfg.max_train_windows_per_epoch)

    def _record_seconds(self) -> None:
        """The position's training time: the segments before this one (from the checkpoint) + this one's."""
        self.stats.seconds = time.perf_counter() - self._segment_started
        self.position.train_seconds = self._seconds_before + self.stats.seconds

    def _interrupted(self, stop_after: int | None) -> bool:
        return stop_after is not None and self.stats.updates >= stop_after

    def train(self, progress_factory=None, stop_after: int | None = None) -> TrainStats:
        """Run updates until ``total_updates``; ``stop_after`` interrupts early (tests of --resume)."""
        cfg = self.config
        per_epoch = updates_per_epoch(len(self.order), self.context.world_size, cfg.batch_size,
                                      cfg.num_accumulated, cfg.max_train_windows_per_epoch)
        progress = progress_factory(self.total_updates, self.position.update) if progress_factory else None
        started = self._segment_started = time.perf_counter()
        self._seconds_before = self.position.train_seconds
        while self.position.update < self.total_updates and not self._interrupted(stop_after):
            for micro_batches in self._epoch_plan().updates[self.position.update_in_epoch:]:
                result = self.steps.run_update(micro_batches, self.position.update)
                self._count(micro_batches, result)
                self._show(progress, result.loss, started)
                if self.position.update % cfg.log_interval == 0:
                    self._log(result, started)
                finished = self.position.update >= self.total_updates
                end_of_epoch = self.position.update_in_epoch >= per_epoch
                if end_of_epoch:
                    self.position.epoch += 1
                    self.position.update_in_epoch = 0
                if should_save(self.position.update, cfg.save_interval, end_of_epoch, finished):
                    self._save()
                if (self.context.evaluate is not None and cfg.eval_interval and not finished
                        and self.position.update % cfg.eval_interval == 0):
                    self._evaluate()        # the final update is evaluated by the evaluation stage
                if finished or end_of_epoch or self._interrupted(stop_after):
                    break
        self._record_seconds()
        if progress is not None:
            progress.close()
        return self.stats


def rewind_train_log(log_path: Path, update: int) -> None:
    """Keep the lines of ``train_log.jsonl`` up to ``update`` (the checkpoint resumed from), so that the
    resumed run appends each later update once; a line torn by a kill is dropped too. Atomic."""
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("update"), int) and record["update"] <= update:
            kept.append(line + "\n")
    atomic_write_text(log_path, "".join(kept))
