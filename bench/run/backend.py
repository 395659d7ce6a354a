"""The backend contract: what a framework supplies so that the shared stage driver
(``bench.run.driver``) and training loop (``bench.run.loop``) can run it.

A backend supplies four things, and nothing else of a run:

* the model (``Session.load_model`` -> ``LoadedModel``),
* the optimizer step (``Session.training_steps`` -> ``TrainingSteps.run_update``),
* the predict function (``Session.predict``: head outputs of every window, gathered on the
  main process), and
* the checkpoint state (``TrainingSteps.save`` / ``resume``).

Everything else (data, features and their cache, epoch plans, the loop's bookkeeping,
logging, saving rules, evaluation and scoring, the results record) is written once, in
the run layer and the core. Backends register by name in ``bench.run.registry``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.run.checkpoints import TrainPosition
from bench.run.record import RunFacts

__all__ = ["Backend", "Session", "TrainingSteps", "LoadedModel", "UpdateResult", "TrainingSetup", "RunFacts"]


@dataclass
class LoadedModel:
    """A model ready to train or evaluate, with what the run needs to know about it."""
    source: Any                 # bench.run.model_source.ModelFolder
    tokenizer: Any
    model: Any                  # the backend's model object
    family: str                 # config.json model_type (bench.core.families)
    num_parameters: int

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


@dataclass(frozen=True)
class UpdateResult:
    """One optimizer update: mean per-window loss on this process, gradient norm, real tokens seen,
    and whether the step was skipped (float16 overflow)."""
    loss: float
    grad_norm: float
    tokens: int
    skipped: bool = False


@dataclass(frozen=True)
class TrainingSetup:
    """What a backend needs to build its optimizer step for one run."""
    features: Any               # bench.core.features.Features
    total_updates: int
    warmup_updates: int
    output_dir: Path


class TrainingSteps(Protocol):
    """The optimizer side of training; the loop (bench.run.loop) drives it."""

    def begin(self) -> None:
        """After any resume, before the first update: sync replicas, switch to training mode."""

    def run_update(self, micro_batches: list[np.ndarray], update_index: int) -> UpdateResult:
        """Forward/backward every micro-batch of update number ``update_index`` (0-based), clip, step."""

    def trial_update(self, micro_batches: list[np.ndarray]) -> float:
        """Seconds of one real update, after which everything it changed is put back."""

    def current_lr(self, next_update: int) -> float:
        """The learning rate (head multiplier) of the update numbered ``next_update``."""

    def mean_over_processes(self, value: float) -> float: ...

    def save(self, ckpt_root: Path, position: TrainPosition) -> Path:
        """Write a checkpoint (main process only) and return its folder."""

    def resume(self, checkpoint: Path) -> TrainPosition:
        """Load weights and trainer state of ``checkpoint``; return where training stood."""


class Session(Protocol):
    """One process of one run on a backend."""
    rank: int
    world_size: int
    is_main: bool
    on_cpu: bool                # no accelerator: the driver warns about long runs
    launcher: str
    device_label: str

    def barrier(self) -> None: ...

    def close(self) -> None: ...

    def load_model(self, config) -> LoadedModel: ...

    def training_steps(self, config, loaded: LoadedModel, setup: TrainingSetup) -> TrainingSteps: ...

    def predict(self, config, loaded: LoadedModel, features, checkpoint: Path | None) -> dict | None:
        """Head outputs (bench.core.heads) of every window, in feature order, on the main process
        (None elsewhere); ``checkpoint`` None = the model as it is."""

    def parameter_digest(self, loaded: LoadedModel) -> str: ...

    def facts(self) -> RunFacts: ...


class Backend(Protocol):
    """A registered backend (bench.run.registry): starts sessions, launches jobs."""
    name: str

    def open_session(self, config) -> Session: ...

    def main(self, config) -> int:
        """Run one validated config to completion (spawning device workers if the flags ask)."""

    def has_accelerator(self) -> bool:
        """Whether this framework sees a GPU here."""

    def default_dtype(self) -> str:
        """The fastest sound --dtype on this machine (the demo's choice)."""
