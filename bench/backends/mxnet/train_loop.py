"""The MXNet training loop: the torch backend's loop (``bench.backends.torch.train_loop``), stage for stage.

One explicit loop over optimizer updates. Each update accumulates ``num_accumulated``
micro-batches into the gradients (``grad_req='add'``); the loss of a micro-batch is the
sum of its per-window losses divided by the number of windows in the whole update, so
the gradient is the mean over the update whatever the split. Then: global-norm
clipping (torch's formula), the learning rate for this update (warm-up + linear decay
from ``bench.run.training_rules``), one TorchAdamW step, gradients zeroed. The epoch plans
(sharding, wrapping, length grouping) come from ``bench.run.pipeline``.

Randomness: dropout draws from MXNet's generator, which is reseeded from (--seed, update
number) before every update (MXNet 1.x cannot save its generator state), so an update
draws the same masks whether or not the run was interrupted and resumed before it.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.run.checkpoints import MODEL_FILE, TrainPosition, list_checkpoints, prune_checkpoints
from bench.core.features import Features, batch_arrays
from bench.backends.mxnet.checkpoint import (check_resumable, load_model_weights, numpy_rng_state,
                                            read_trainer_state, restore_numpy_rng, save_checkpoint)
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.heads import batch_to_nd, load_torch_state, torch_state_from_gluon
from bench.backends.mxnet.optim import (clip_coefficient, global_grad_norm, load_optimizer_state,
                                      optimizer_state, zero_grads)
from bench.run.helpers import TrainStats, log_update, should_save
from bench.run.pipeline import plan_epoch, updates_per_epoch
from bench.run.training_rules import linear_schedule

mx, _ = import_mxnet()

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "update_seed", "parameter_digest"]


def update_seed(seed: int, update: int) -> int:
    """MXNet's seed for the update numbered ``update`` (0-based) of a run with --seed ``seed``."""
    return int(np.random.SeedSequence([seed, update]).generate_state(1)[0] & 0x7FFFFFFF)


def parameter_digest(model) -> str:
    """sha256 over every parameter's float32 bytes, in torch-name order (the torch backend's digest)."""
    digest = hashlib.sha256()
    for name, value in sorted(torch_state_from_gluon(model).items()):
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


class Trainer:
    """Holds what the loop needs; ``train()`` is the loop.

    ``params`` maps structural names to the trainable Parameters, in the gluon.Trainer's order.
    ``amp`` is True under --dtype float16 (MXNet AMP, GPU only): losses are scaled, gradients
    unscaled before clipping, overflowed updates skipped by the trainer and counted.
    """

    def __init__(self, *, config, model, trainer, params: dict, features: Features, order: np.ndarray,
                 total_updates: int, warmup: int, pad_id: int, ctx, amp: bool, ckpt_root: Path,
                 log_path: Path | None):
        self.config, self.model, self.trainer, self.params = config, model, trainer, params
        self.features, self.order, self.total_updates, self.warmup = features, order, total_updates, warmup
        self.pad_id, self.ctx, self.amp = pad_id, ctx, amp
        self.ckpt_root, self.log_path = ckpt_root, log_path
        self.position = TrainPosition()
        self.stats = TrainStats()

    # -- stage: state (checkpoints, resume, the CPU estimate's undo) ----------------------------
    def capture_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars) of everything an update changes besides the weights."""
        arrays = optimizer_state(self.trainer, list(self.params))
        rng_arrays, rng_scalars = numpy_rng_state()
        arrays.update(rng_arrays)
        scalars = {"position": asdict(self.position), "numpy_rng": rng_scalars, "amp_scaler": self._scaler_state(),
                   "mxnet_rng": {"seed": int(self.config.seed), "reseeded_every_update": True}}
        return arrays, scalars

    def restore_state(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        load_optimizer_state(self.trainer, list(self.params), arrays)
        restore_numpy_rng(arrays, scalars["numpy_rng"])
        if self.amp and scalars.get("amp_scaler"):
            vars(self._scaler()).update(scalars["amp_scaler"])
        self.position = TrainPosition(**scalars["position"])

    # MXNet's AMP LossScaler keeps its state in three private fields and has no state_dict().
    _SCALER_FIELDS = ("_loss_scale", "_next_loss_scale", "_unskipped")

    def _scaler(self):
        return self.trainer._amp_loss_scaler  # pylint: disable=protected-access

    def _scaler_state(self) -> dict | None:
        return {name: getattr(self._scaler(), name) for name in self._SCALER_FIELDS} if self.amp else None

    def resume_from_latest(self) -> bool:
        checkpoints = list_checkpoints(self.ckpt_root)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.ckpt_root)
            return False
        ckpt = checkpoints[-1]
        state_file = check_resumable(ckpt)
        load_model_weights(self.model, ckpt / MODEL_FILE)
        self.restore_state(*read_trainer_state(ckpt / state_file))
        logger.info("resumed from %s (update %d, epoch %d)", ckpt, self.position.update, self.position.epoch)
        return True

    def time_one_update(self, micro_batches: list[np.ndarray]) -> float:
        """Seconds of one real update, then everything it changed put back (weights, optimizer, RNG)."""
        weights = torch_state_from_gluon(self.model)
        saved = self.capture_state()
        started = time.perf_counter()
        self.run_update(micro_batches)
        seconds = time.perf_counter() - started
        load_torch_state(self.model, weights)
        self.restore_state(*saved)
        self.stats = TrainStats()
        return seconds

    # -- stage: one update ---------------------------------------------------------------------
    def run_update(self, micro_batches: list[np.ndarray]) -> tuple[float, float]:
        """Forward/backward every micro-batch, then clip and step. Returns (mean loss, grad norm)."""
        mx.random.seed(update_seed(self.config.seed, self.position.update), ctx="all")
        windows_in_update = sum(len(mb) for mb in micro_batches)
        loss_sum = 0.0
        for indices in micro_batches:
            arrays = batch_arrays(self.features, indices, pad_id=self.pad_id, round_to=self.config.round_to)
            loss_sum += self._forward_backward(batch_to_nd(arrays, self.ctx), windows_in_update)
            self.stats.tokens += int(arrays["attention_mask"].sum())
        grad_norm = self.step()
        return loss_sum / windows_in_update, grad_norm

    def _forward_backward(self, nd: dict, windows_in_update: int) -> float:
        """Accumulate one micro-batch's gradients; return the sum of its per-window losses."""
        with mx.autograd.record(train_mode=True):      # dropout on
            per_window = self.model(nd["input_ids"], nd["token_types"], nd["valid_length"], nd["candidate_mask"],
                                    nd["start_positions"], nd["end_positions"], nd["is_impossible"])
            loss = per_window.sum() / windows_in_update
            if self.amp:
                loss = self._scaled(loss)
        loss.backward()
        return float(per_window.sum().asscalar())

    def _scaled(self, loss):
        """The loss times AMP's current loss scale (the trainer divides it out again)."""
        from mxnet.contrib import amp

        with amp.scale_loss(loss, self.trainer) as scaled:
            return scaled

    def step(self) -> float:
        params = list(self.params.values())
        if self.amp:
            from mxnet.contrib import amp
            amp.unscale(self.trainer)           # clip the true gradients, not the scaled ones
        grad_norm = global_grad_norm(params)
        coefficient = clip_coefficient(grad_norm, self.config.max_grad_norm)
        factor = linear_schedule(self.position.update, self.total_updates, self.warmup)
        self.trainer.set_learning_rate(self.config.lr * factor)
        # The Trainer multiplies gradients by 1 / batch_size inside the AdamW kernel: passing
        # 1 / coefficient clips without rewriting the gradients. Parameters without a fresh
        # gradient are left alone, as torch skips grads that are None.
        self.trainer.update(1.0 / coefficient, ignore_stale_grad=True)
        if self.amp and self._scaler()._next_loss_scale < self._scaler()._loss_scale:  # pylint: disable=protected-access
            self.stats.skipped_updates += 1     # inf/nan gradients: the scaler halved its scale, the update was skipped
        zero_grads(params)
        return grad_norm

    def current_lr(self) -> float:
        """The peak-multiplier (head) LR of the next update, as the torch backend logs get_last_lr()[0]."""
        return self.config.lr * linear_schedule(self.position.update, self.total_updates, self.warmup)

    # -- stage: logging and saving ------------------------------------------------------------
    def log(self, loss: float, grad_norm: float, started: float) -> None:
        log_update(self.stats, self.position, loss=loss, lr=self.current_lr(), grad_norm=grad_norm,
                   elapsed=time.perf_counter() - started, log_path=self.log_path)

    def save(self) -> None:
        path = save_checkpoint(self.ckpt_root, self.model, *self.capture_state(), self.position)
        pruned = prune_checkpoints(self.ckpt_root, self.config.max_saved_ckpt)
        logger.info("saved %s%s", path, f" (pruned {len(pruned)})" if pruned else "")

    # -- the loop ------------------------------------------------------------------------------
    def train(self, progress_factory=None, stop_after: int | None = None) -> TrainStats:
        """Run updates until ``total_updates``; ``stop_after`` interrupts early (tests of --resume)."""
        cfg = self.config
        per_epoch = updates_per_epoch(len(self.order), 1, cfg.batch_size, cfg.num_accumulated,
                                      cfg.max_train_windows_per_epoch)
        progress = progress_factory(self.total_updates, self.position.update) if progress_factory else None
        started = time.perf_counter()
        while self.position.update < self.total_updates:
            plan = plan_epoch(self.features, self.order, epoch=self.position.epoch, rank=0, world_size=1,
                              seed=cfg.seed, batch_size=cfg.batch_size, num_accumulated=cfg.num_accumulated,
                              length_grouping=cfg.length_grouping, max_windows=cfg.max_train_windows_per_epoch)
            for micro_batches in plan.updates[self.position.update_in_epoch:]:
                loss, grad_norm = self.run_update(micro_batches)
                self._count_update(micro_batches, loss)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.3f}", lr=f"{self.current_lr():.2e}")
                if self.position.update % cfg.log_interval == 0:
                    self.log(loss, grad_norm, started)
                finished = self.position.update >= self.total_updates
                end_of_epoch = self.position.update_in_epoch >= per_epoch
                if end_of_epoch:
                    self.position.epoch += 1
                    self.position.update_in_epoch = 0
                if should_save(self.position.update, cfg.save_interval, end_of_epoch, finished):
                    self.save()
                if finished or end_of_epoch or self._interrupted(stop_after):
                    break
            if self._interrupted(stop_after):
                break
        self.stats.seconds = time.perf_counter() - started
        if progress is not None:
            progress.close()
        return self.stats

    def _count_update(self, micro_batches: list[np.ndarray], loss: float) -> None:
        self.position.update += 1
        self.position.update_in_epoch += 1
        self.stats.updates += 1
        self.stats.windows += sum(len(mb) for mb in micro_batches)
        self.stats.last_loss = loss

    def _interrupted(self, stop_after: int | None) -> bool:
        return stop_after is not None and self.stats.updates >= stop_after
