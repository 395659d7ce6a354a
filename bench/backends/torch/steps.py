"""The torch backend's optimizer step: what the shared training loop (``bench.run.loop``) drives.

The loss of every micro-batch is the sum of its per-window losses divided by the number of
windows in the whole update on this process; DDP / Horovod then average across processes,
so the gradient is the mean over the global batch whatever the split.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench.backends.torch.checkpoint import (load_model_weights, load_trainer_state, restore_rng_state,
                                             save_checkpoint)
from bench.backends.torch.inference import default_round_to, to_device
from bench.backends.torch.optim import build_optimizer, build_scheduler
from bench.core.features import batch_arrays
from bench.run.distill import require_distillable_head
from bench.run.backend import TrainingSetup, UpdateResult
from bench.run.checkpoints import MODEL_FILE, TrainPosition

__all__ = ["TorchSteps", "TRAIN_INPUTS", "load_for_eval"]

LABELS = ("start_positions", "end_positions", "is_impossible")
TRAIN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "candidate_mask") + LABELS
TEACHER_INPUTS = ("teacher_start_logits", "teacher_end_logits")      # --teacher_path (bench.run.distill)


class TorchSteps:
    """Optimizer, schedule, loss scaler and the (wrapped) model of one training run."""

    def __init__(self, config, model, comm, setup: TrainingSetup, autocast_factory, pad_id: int):
        self.config, self.model, self.comm = config, model, comm
        self.features, self.pad_id, self.autocast_factory = setup.features, pad_id, autocast_factory
        self.device = comm.device
        # Optimizer groups are built on the plain model (names drive layer-wise decay), then wrapped;
        # the schedule is attached to the wrapped optimizer, the one that steps.
        self.optimizer = comm.wrap_optimizer(build_optimizer(model, config), model,
                                             backward_passes_per_step=config.num_accumulated)
        self.scheduler = build_scheduler(self.optimizer, setup.total_updates, setup.warmup_updates,
                                         getattr(config, "lr_schedule", "linear"))
        self.scaler = torch.amp.GradScaler(self.device.type) if config.dtype == "float16" else None
        self.train_model = comm.wrap_model(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.round_to = default_round_to(config.round_to, self.device)
        self.teacher = None

    def use_teacher(self, teacher) -> None:
        """Distil from ``teacher`` (bench.run.distill.TeacherLogits): its logits join every batch as data."""
        require_distillable_head(self.model.head, self.config.head, "torch")
        self.teacher = teacher

    def begin(self) -> None:
        self.comm.broadcast_initial_state(self.model, self.optimizer)
        self.train_model.train()

    # -- one update ----------------------------------------------------------------------------
    def run_update(self, micro_batches: list[np.ndarray], update_index: int = 0) -> UpdateResult:
        """Forward/backward every micro-batch, then clip and step."""
        windows_in_update = sum(len(mb) for mb in micro_batches)
        loss_sum, tokens = 0.0, 0
        for j, indices in enumerate(micro_batches):
            arrays = batch_arrays(self.features, indices, pad_id=self.pad_id, round_to=self.round_to)
            inputs = to_device(arrays, self.device, names=TRAIN_INPUTS)
            if self.teacher is not None:
                teacher = self.teacher.batch(indices, arrays["input_ids"].shape[1])
                inputs.update(to_device(teacher, self.device, names=TEACHER_INPUTS),
                              distill_temperature=self.teacher.temperature, distill_alpha=self.teacher.alpha)
            is_last = j == len(micro_batches) - 1
            with self.comm.no_sync(self.train_model, is_last), self.autocast_factory():
                per_window = self.train_model(**inputs)["loss"]
                loss = per_window.float().sum() / windows_in_update
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += float(per_window.detach().float().sum())
            tokens += int(arrays["attention_mask"].sum())
        grad_norm, skipped = self._step()
        return UpdateResult(loss_sum / windows_in_update, grad_norm, tokens, skipped)

    def _step(self) -> tuple[float, bool]:
        self.comm.synchronize(self.optimizer)          # Horovod: finish the all-reduce before clipping
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        skipped = False
        with self.comm.skip_synchronize(self.optimizer):
            if self.scaler is not None:
                scale_before = self.scaler.get_scale()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                skipped = self.scaler.get_scale() < scale_before    # inf/nan gradients: step was skipped
            else:
                self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()          # set_to_none is the default (Horovod's wrapper takes no argument)
        return grad_norm, skipped

    def trial_update(self, micro_batches: list[np.ndarray]) -> float:
        saved = ({k: v.clone() for k, v in self.model.state_dict().items()}, self.optimizer.state_dict(),
                 self.scheduler.state_dict(), torch.get_rng_state())
        started = time.perf_counter()
        self.run_update(micro_batches)
        seconds = time.perf_counter() - started
        self.model.load_state_dict(saved[0])
        self.optimizer.load_state_dict(saved[1])
        self.scheduler.load_state_dict(saved[2])
        torch.set_rng_state(saved[3])
        return seconds

    # -- what the loop reads and writes --------------------------------------------------------
    def current_lr(self, next_update: int = 0) -> float:
        return self.scheduler.get_last_lr()[0]

    def mean_over_processes(self, value: float) -> float:
        return float(self.comm.all_reduce_mean(torch.tensor([value], dtype=torch.float64)).item())

    def save(self, ckpt_root: Path, position: TrainPosition) -> Path:
        return save_checkpoint(ckpt_root, self.model, self.optimizer, self.scheduler, self.scaler, position,
                               head=self.config.head)

    def resume(self, checkpoint: Path) -> TrainPosition:
        load_model_weights(self.model, checkpoint / MODEL_FILE)
        state = load_trainer_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        return TrainPosition(**state["position"])


def load_for_eval(model, checkpoint: Path) -> None:
    load_model_weights(model, checkpoint / MODEL_FILE if checkpoint.is_dir() else checkpoint)
