"""The MXNet backend's optimizer step: what the shared training loop (``bench.run.loop``) drives.

Each update accumulates ``num_accumulated`` micro-batches into the gradients
(``grad_req='add'``); the loss of a micro-batch is the sum of its per-window losses divided
by the number of windows in the whole update, so the gradient is the mean over the update
whatever the split. Then: global-norm clipping (torch's formula), the learning rate for this
update (warm-up + linear decay from ``bench.run.training_rules``), one TorchAdamW step,
gradients zeroed. With a teacher (--teacher_path, ``use_teacher``) a micro-batch's per-window loss is
``GluonQAModel.distillation_loss`` over the teacher's cached logits of its windows.

Under horovodrun (``comm``, ``bench.backends.mxnet.dist``) rank 0's parameters are broadcast
before the first update, and each rank's accumulated gradient (the mean over its own windows of
the update; every rank has as many) is averaged over the ranks once per update, before the
clipping: the clipping and the step see the gradient of the global batch.

Randomness: dropout draws from MXNet's generator, which is reseeded from (--seed, update
number, and the rank when it is not 0) before every update (MXNet 1.x cannot save its
generator state), so an update draws the same masks whether or not the run was interrupted
and resumed before it.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.run.distill import require_distillable_head
from bench.run.backend import TrainingSetup, UpdateResult
from bench.run.checkpoints import MODEL_FILE, TrainPosition
from bench.core.features import batch_arrays
from bench.backends.mxnet.checkpoint import (check_resumable, load_model_weights, numpy_rng_state,
                                            read_trainer_state, restore_numpy_rng, save_checkpoint)
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.convert import structural_params
from bench.backends.mxnet.dist import MxComm
from bench.backends.mxnet.heads import batch_to_nd, load_torch_state, torch_state_from_gluon
from bench.backends.mxnet.optim import (clip_coefficient, global_grad_norm, load_optimizer_state,
                                      optimizer_state, zero_grads)
from bench.run.training_rules import schedule_factor

mx, _ = import_mxnet()

logger = logging.getLogger(__name__)

__all__ = ["MxSteps", "update_seed", "parameter_digest"]


def update_seed(seed: int, update: int, rank: int = 0) -> int:
    """MXNet's seed for the update numbered ``update`` (0-based) of a run with --seed ``seed`` on ``rank``
    (other ranks draw other dropout masks; rank 0 draws what a single process draws)."""
    entropy = [seed, update] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


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
    ``comm`` (``bench.backends.mxnet.dist``) broadcasts and averages across ranks; one process by default.
    """

    def __init__(self, *, config, model, trainer, params: dict, setup: TrainingSetup, pad_id: int, ctx, amp: bool,
                 comm: MxComm | None = None):
        self.config, self.model, self.trainer, self.params = config, model, trainer, params
        self.features, self.total_updates, self.warmup = setup.features, setup.total_updates, setup.warmup_updates
        self.pad_id, self.ctx, self.amp = pad_id, ctx, amp
        self.comm = comm or MxComm()
        self._synced = False
        self.teacher = None

    def use_teacher(self, teacher) -> None:
        """Distil from ``teacher`` (bench.run.distill.TeacherLogits): its logits join every batch as data."""
        require_distillable_head(self.model.head, self.config.head, "Gluon")
        self.teacher = teacher

    def begin(self) -> None:
        """Before the first update (after any resume): rank 0's parameters on every rank (every rank
        resumed the same optimizer state from the same files). autograd.record switches dropout on per update."""
        if not self._synced:
            self.comm.broadcast_parameters(structural_params(self.model))
            self._synced = True

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
        mx.random.seed(update_seed(self.config.seed, update_index, self.comm.rank), ctx="all")
        windows_in_update = sum(len(mb) for mb in micro_batches)
        loss_sum, tokens = 0.0, 0
        for indices in micro_batches:
            arrays = batch_arrays(self.features, indices, pad_id=self.pad_id, round_to=self.config.round_to)
            teacher = self.teacher.batch(indices, arrays["input_ids"].shape[1]) if self.teacher is not None else None
            loss_sum += self._forward_backward(batch_to_nd(arrays, self.ctx), windows_in_update, teacher)
            tokens += int(arrays["attention_mask"].sum())
        self.comm.average_gradients(list(self.params.values()))     # before clipping: the global batch's gradient
        grad_norm, skipped = self._step(update_index)
        return UpdateResult(loss_sum / windows_in_update, grad_norm, tokens, skipped)

    def _forward_backward(self, nd: dict, windows_in_update: int, teacher: dict | None = None) -> float:
        """Accumulate one micro-batch's gradients; return the sum of its per-window losses."""
        with mx.autograd.record(train_mode=True):      # dropout on
            per_window = self._per_window_loss(nd, teacher)
            loss = per_window.sum() / windows_in_update
            if self.amp:
                loss = self._scaled(loss)
        loss.backward()
        return float(per_window.sum().asscalar())

    def _per_window_loss(self, nd: dict, teacher: dict | None):
        if teacher is None:
            return self.model(nd["input_ids"], nd["token_types"], nd["valid_length"], nd["candidate_mask"],
                              nd["start_positions"], nd["end_positions"], nd["is_impossible"])
        logits = {name: mx.nd.array(value, ctx=self.ctx, dtype="float32") for name, value in teacher.items()}
        return self.model.distillation_loss(nd, logits["teacher_start_logits"], logits["teacher_end_logits"],
                                            self.teacher.temperature, self.teacher.alpha)

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
        return self.config.lr * schedule_factor(self.config.lr_schedule, next_update, self.total_updates, self.warmup)

    def mean_over_processes(self, value: float) -> float:
        return self.comm.mean(value)
