"""Training losses of the torch backend, one function per entry of the loss registry
(``bench.core.losses``, where the formulas are): ``loss(log_probs (B, L) float32, targets (B,) int64,
**options) -> (B,)``, one keyword per flag the entry lists. Heads get the closure from
``position_loss(loss)``."""
from __future__ import annotations

import functools

import torch

from bench.core.losses import CANDIDATE_FLOOR, LossSetting, get_loss
from bench.run.registry import load_implementation

__all__ = ["cross_entropy", "focal", "label_smoothing", "position_loss"]

# (1 - p_gold) is clamped to this before the power: p_gold = 1 then gives a zero loss and gradient.
_TINY = 1e-30


def _gold(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return log_probs.gather(1, targets[:, None])[:, 0]


def cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(gold position) per window."""
    return -_gold(log_probs, targets)


def focal(log_probs: torch.Tensor, targets: torch.Tensor, *, focal_gamma: float) -> torch.Tensor:
    """-(1 - p_gold)^gamma log p_gold per window; 1 - p_gold = -expm1(log p_gold), clamped to 1e-30."""
    gold = _gold(log_probs, targets)
    return -(-torch.expm1(gold)).clamp_min(_TINY).pow(focal_gamma) * gold


def label_smoothing(log_probs: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) log p_gold - eps / (n - 1) * (sum of log p over the n candidates - log p_gold) per window.

    Candidates: positions whose log-probability is above CANDIDATE_FLOOR (masked ones are ~ -1e30).
    """
    eps = label_smoothing
    gold = _gold(log_probs, targets)
    candidate = log_probs > CANDIDATE_FLOOR
    total = torch.where(candidate, log_probs, torch.zeros_like(log_probs)).sum(1)
    others = (candidate.sum(1) - 1).clamp_min(1).to(log_probs.dtype)
    return -(1.0 - eps) * gold - eps * (total - gold) / others


def position_loss(loss: str | LossSetting):
    """The torch implementation of the registered loss ``loss`` (a name: its flags' defaults; or a
    LossSetting) as ``(log_probs, targets) -> (B,)``, with the loss's flag values bound."""
    setting = loss if isinstance(loss, LossSetting) else LossSetting(loss)
    function = load_implementation(get_loss(setting.name).implementation("torch"))
    return functools.partial(function, **setting.options) if setting.options else function
