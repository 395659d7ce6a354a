"""Training losses of the torch backend, one function per entry of the loss registry
(``bench.core.losses``): ``loss(log_probs (B, L) float32, targets (B,) int64) -> (B,)``."""
from __future__ import annotations

import torch

from bench.core.losses import get_loss
from bench.run.registry import load_implementation

__all__ = ["cross_entropy", "position_loss"]


def cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(gold position) per window."""
    return -log_probs.gather(1, targets[:, None])[:, 0]


def position_loss(name: str):
    """The torch implementation of the registered loss ``name``."""
    return load_implementation(get_loss(name).implementation("torch"))
