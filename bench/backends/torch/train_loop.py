"""The PyTorch training loop: one explicit loop over optimizer updates, in small named stages.

The loss of every micro-batch is the sum of its per-window losses divided by the
number of windows in the whole update on this process; DDP / Horovod then
average across processes, so the gradient is the mean over the global batch
(``batch_size * num_accumulated * world_size``) whatever the split. The epoch
plans (sharding, wrapping, length grouping) come from ``bench.run.pipeline``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from bench.run.checkpoints import MODEL_FILE, TrainPosition, list_checkpoints, prune_checkpoints
from bench.core.features import Features, batch_arrays
from bench.run.pipeline import plan_epoch, updates_per_epoch
from bench.run.helpers import TrainStats, log_update, should_save
from bench.backends.torch.checkpoint import (load_model_weights, load_trainer_state, restore_rng_state,
                                            save_checkpoint)
from bench.backends.torch.inference import default_round_to, to_device

logger = logging.getLogger(__name__)

LABELS = ("start_positions", "end_positions", "is_impossible")
TRAIN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "candidate_mask") + LABELS

__all__ = ["Trainer", "TrainStats", "load_for_eval"]


class Trainer:
    """Holds what the loop needs; ``train()`` is the loop."""

    def __init__(self, *, config, model, train_model, optimizer, scheduler, scaler, comm, features: Features,
                 order: np.ndarray, total_updates: int, pad_id: int, device: torch.device, autocast_factory,
                 ckpt_root: Path, log_path: Path | None):
        self.config, self.model, self.train_model = config, model, train_model
        self.optimizer, self.scheduler, self.scaler, self.comm = optimizer, scheduler, scaler, comm
        self.features, self.order, self.total_updates = features, order, total_updates
        self.pad_id, self.device, self.autocast_factory = pad_id, device, autocast_factory
        self.ckpt_root, self.log_path = ckpt_root, log_path
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.round_to = default_round_to(config.round_to, device)
        self.position = TrainPosition()
        self.stats = TrainStats()

    # -- stage: resume -------------------------------------------------------------------------
    def resume_from_latest(self) -> bool:
        checkpoints = list_checkpoints(self.ckpt_root)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.ckpt_root)
            return False
        ckpt = checkpoints[-1]
        load_model_weights(self.model, ckpt / MODEL_FILE)
        state = load_trainer_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.position = TrainPosition(**state["position"])
        logger.info("resumed from %s (update %d, epoch %d)", ckpt, self.position.update, self.position.epoch)
        return True

    # -- stage: one update ---------------------------------------------------------------------
    def run_update(self, micro_batches: list[np.ndarray]) -> tuple[float, float]:
        """Forward/backward every micro-batch, then clip and step. Returns (mean loss, grad norm)."""
        windows_in_update = sum(len(mb) for mb in micro_batches)
        loss_sum = 0.0
        for j, indices in enumerate(micro_batches):
            arrays = batch_arrays(self.features, indices, pad_id=self.pad_id, round_to=self.round_to)
            inputs = to_device(arrays, self.device, names=TRAIN_INPUTS)
            is_last = j == len(micro_batches) - 1
            with self.comm.no_sync(self.train_model, is_last), self.autocast_factory():
                per_window = self.train_model(**inputs)["loss"]
                loss = per_window.float().sum() / windows_in_update
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += float(per_window.detach().float().sum())
            self.stats.tokens += int(arrays["attention_mask"].sum())
        grad_norm = self.step()
        return loss_sum / windows_in_update, grad_norm

    def step(self) -> float:
        self.comm.synchronize(self.optimizer)          # Horovod: finish the all-reduce before clipping
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        with self.comm.skip_synchronize(self.optimizer):
            if self.scaler is not None:
                scale_before = self.scaler.get_scale()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.scaler.get_scale() < scale_before:    # inf/nan gradients: step was skipped
                    self.stats.skipped_updates += 1
            else:
                self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()          # set_to_none is the default (Horovod's wrapper takes no argument)
        return grad_norm

    # -- stage: logging and saving ------------------------------------------------------------
    def log(self, loss: float, grad_norm: float, started: float) -> None:
        loss = float(self.comm.all_reduce_mean(torch.tensor([loss], dtype=torch.float64)).item())
        log_update(self.stats, self.position, loss=loss, lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                   elapsed=time.perf_counter() - started, world_size=self.comm.world_size,
                   log_path=self.log_path, emit=self.comm.is_main)

    def save(self) -> None:
        if self.comm.is_main:
            path = save_checkpoint(self.ckpt_root, self.model, self.optimizer, self.scheduler, self.scaler,
                                   self.position)
            pruned = prune_checkpoints(self.ckpt_root, self.config.max_saved_ckpt)
            logger.info("saved %s%s", path, f" (pruned {len(pruned)})" if pruned else "")
        self.comm.barrier()

    # -- the loop ------------------------------------------------------------------------------
    def train(self, progress_factory=None, stop_after: int | None = None) -> TrainStats:
        """Run updates until ``total_updates``; ``stop_after`` interrupts early (tests of --resume)."""
        cfg = self.config
        per_epoch = updates_per_epoch(len(self.order), self.comm.world_size, cfg.batch_size, cfg.num_accumulated,
                                      cfg.max_train_windows_per_epoch)
        progress = progress_factory(self.total_updates, self.position.update) if progress_factory else None
        started = time.perf_counter()
        self.train_model.train()
        while self.position.update < self.total_updates:
            plan = plan_epoch(self.features, self.order, epoch=self.position.epoch, rank=self.comm.rank,
                              world_size=self.comm.world_size, seed=cfg.seed, batch_size=cfg.batch_size,
                              num_accumulated=cfg.num_accumulated, length_grouping=cfg.length_grouping,
                              max_windows=cfg.max_train_windows_per_epoch)
            for micro_batches in plan.updates[self.position.update_in_epoch:]:
                loss, grad_norm = self.run_update(micro_batches)
                self.position.update += 1
                self.position.update_in_epoch += 1
                self.stats.updates += 1
                self.stats.windows += sum(len(mb) for mb in micro_batches)
                self.stats.last_loss = loss
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                         sps=f"{self.stats.windows * self.comm.world_size / (time.perf_counter() - started):.1f}")
                if self.position.update % cfg.log_interval == 0:
                    self.log(loss, grad_norm, started)
                finished = self.position.update >= self.total_updates
                end_of_epoch = self.position.update_in_epoch >= per_epoch
                if end_of_epoch:
                    self.position.epoch += 1
                    self.position.update_in_epoch = 0
                if should_save(self.position.update, cfg.save_interval, end_of_epoch, finished):
                    self.save()
                if finished or (stop_after is not None and self.stats.updates >= stop_after):
                    break
                if end_of_epoch:
                    break
            if stop_after is not None and self.stats.updates >= stop_after:
                break
        self.stats.seconds = time.perf_counter() - started
        if progress is not None:
            progress.close()
        return self.stats


def load_for_eval(model, checkpoint: Path) -> None:
    load_model_weights(model, checkpoint / MODEL_FILE if checkpoint.is_dir() else checkpoint)


