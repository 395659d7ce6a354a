"""The MXNet backend's optimizer step: what the shared training loop (``bench.run.loop``) drives.

Each update accumulates ``num_accumulated`` micro-batches into the gradients
(``grad_req='add'``); the loss of a micro-batch is the sum of its per-window losses divided
by the number of windows in the whole update, so the gradient is the mean over the update
whatever the split. Then: global-norm clipping (torch's formula), the learning rate for this
update (warm-up + linear decay from ``bench.run.training_rules``), one TorchAdamW step,
gradients zeroed.

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

from bench.run.backend import TrainingSetup, UpdateResult
from bench.run.checkpoints import MODEL_FILE, TrainPosition
from bench.core.features import batch_arrays
from bench.backends.mxnet.checkpoint import (check_resumable, load_model_weights, numpy_rng_state,
                                            read_trainer_state, restore_numpy_rng, save_checkpoint)
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.heads import batch_to_nd, load_torch_state, torch_state_from_gluon
from bench.backends.mxnet.optim import (clip_coefficient, global_grad_norm, load_optimizer_state,
                                      optimizer_state, zero_grads)
from bench.run.training_rules import linear_schedule

mx, _ = import_mxnet()

logger = logging.getLogger(__name__)

__all__ = ["MxSteps", "update_seed", "parameter_digest"]


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


class MxSteps:
    """The gluon.Trainer and model of one training run.

    ``params`` maps structural names to the trainable Parameters, in the gluon.Trainer's order.
    ``amp`` is True under --dtype float16 (MXNet AMP, GPU only): losses are scaled, gradients
    unscaled before clipping, overflowed updates skipped by the trainer and counted.
    """

    def __init__(self, *, config, model, trainer, params: dict, setup: TrainingSetup, pad_id: int, ctx, amp: bool):
        self.config, self.model, self.trainer, self.params = config, model, trainer, params
        self.features, self.total_updates, self.warmup = setup.features, setup.total_updates, setup.warmup_updates
        self.pad_id, self.ctx, self.amp = pad_id, ctx, amp

    def begin(self) -> None:
        """Nothing to synchronise (one process); autograd.record switches dropout on per update."""

    # -- state (checkpoints, resume, the CPU estimate's undo) -----------------------------------
    def capture_state(self, position: TrainPosition) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars) of everything an update changes besides the weights."""
        arrays = optimizer_state(self.trainer, list(self.params))
        rng_arrays, rng_scalars = numpy_rng_state()
        arrays.update(rng_arrays)
        scalars = {"position": asdict(position), "numpy_rng": rng_scalars, "amp_scaler": self._scaler_state(),
                   "mxnet_rng": {"seed": int(self.config.seed), "reseeded_every_update": True}}
        return arrays, scalars

    def restore_state(self, arrays: dict[str, np.ndarray], scalars: dict) -> TrainPosition:
        load_optimizer_state(self.trainer, list(self.params), arrays)
        restore_numpy_rng(arrays, scalars["numpy_rng"])
        if self.amp and scalars.get("amp_scaler"):
            vars(self._scaler()).update(scalars["amp_scaler"])
        return TrainPosition(**scalars["position"])

    # MXNet's AMP LossScaler keeps its state in three private fields and has no state_dict().
    _SCALER_FIELDS = ("_loss_scale", "_next_loss_scale", "_unskipped")

    def _scaler(self):
        return self.trainer._amp_loss_scaler  # pylint: disable=protected-access

    def _scaler_state(self) -> dict | None:
        return {name: getattr(self._scaler(), name) for name in self._SCALER_FIELDS} if self.amp else None

    def save(self, ckpt_root: Path, position: TrainPosition) -> Path:
        return save_checkpoint(ckpt_root, self.model, *self.capture_state(position), position,
                               head=self.config.head)

    def resume(self, checkpoint: Path) -> TrainPosition:
        state_file = check_resumable(checkpoint)
        load_model_weights(self.model, checkpoint / MODEL_FILE)
        return self.restore_state(*read_trainer_state(checkpoint / state_file))

    def trial_update(self, micro_batches: list[np.ndarray]) -> float:
        """Seconds of one real update, then everything it changed put back (weights, optimizer, RNG)."""
        weights = torch_state_from_gluon(self.model)
        saved = self.capture_state(TrainPosition())
        started = time.perf_counter()
        self.run_update(micro_batches, 0)
        seconds = time.perf_counter() - started
        load_torch_state(self.model, weights)
        self.restore_state(*saved)
        return seconds

    # -- one update ----------------------------------------------------------------------------
    def run_update(self, micro_batches: list[np.ndarray], update_index: int) -> UpdateResult:
        """Forward/backward every micro-batch, then clip and step."""
        mx.random.seed(update_seed(self.config.seed, update_index), ctx="all")
        windows_in_update = sum(len(mb) for mb in micro_batches)
        loss_sum, tokens = 0.0, 0
        for indices in micro_batches:
            arrays = batch_arrays(self.features, indices, pad_id=self.pad_id, round_to=self.config.round_to)
            loss_sum += self._forward_backward(batch_to_nd(arrays, self.ctx), windows_in_update)
            tokens += int(arrays["attention_mask"].sum())
        grad_norm, skipped = self._step(update_index)
        return UpdateResult(loss_sum / windows_in_update, grad_norm, tokens, skipped)

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

    def _step(self, update_index: int) -> tuple[float, bool]:
        params = list(self.params.values())
        if self.amp:
            from mxnet.contrib import amp
            amp.unscale(self.trainer)           # clip the true gradients, not the scaled ones
        grad_norm = global_grad_norm(params)
        coefficient = clip_coefficient(grad_norm, self.config.max_grad_norm)
        self.trainer.set_learning_rate(self.current_lr(update_index))
        # The Trainer multiplies gradients by 1 / batch_size inside the AdamW kernel: passing
        # 1 / coefficient clips without rewriting the gradients. Parameters without a fresh
        # gradient are left alone, as torch skips grads that are None.
        self.trainer.update(1.0 / coefficient, ignore_stale_grad=True)
        # inf/nan gradients: the scaler halved its scale, the update was skipped
        skipped = self.amp and self._scaler()._next_loss_scale < self._scaler()._loss_scale  # pylint: disable=protected-access
        zero_grads(params)
        return grad_norm, bool(skipped)

    def current_lr(self, next_update: int) -> float:
        """The peak-multiplier (head) LR of update ``next_update``, as the torch backend logs get_last_lr()[0]."""
        return self.config.lr * linear_schedule(next_update, self.total_updates, self.warmup)

    def mean_over_processes(self, value: float) -> float:
        return value            # one process
