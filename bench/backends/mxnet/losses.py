"""Training losses of the MXNet backend, one function per entry of the loss registry
(``bench.core.losses``): ``loss(F, log_probs (B, L), targets (B,)) -> (B,)``, hybridizable."""
from __future__ import annotations

from bench.core.losses import get_loss
from bench.run.registry import load_implementation

__all__ = ["cross_entropy", "position_loss"]


def cross_entropy(F, log_probs, targets):
    """-log p(gold position) per window."""
    return -F.pick(log_probs, targets, axis=-1)


def position_loss(name: str):
    """The MXNet implementation of the registered loss ``name``."""
    return load_implementation(get_loss(name).implementation("mxnet"))
