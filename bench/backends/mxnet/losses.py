"""Training losses of the MXNet backend, one function per entry of the loss registry
(``bench.core.losses``, where the formulas are): ``loss(F, log_probs (B, L), targets (B,), **options)
-> (B,)``, hybridizable, one keyword per flag the entry lists; the same arithmetic as
``bench.backends.torch.losses``. Heads get the closure from ``position_loss(loss)``."""
from __future__ import annotations

import functools

from bench.core.losses import CANDIDATE_FLOOR, LossSetting, get_loss
from bench.run.registry import load_implementation

__all__ = ["cross_entropy", "focal", "label_smoothing", "position_loss"]

_TINY = 1e-30       # (1 - p_gold) is clipped to this before the power, as in the torch backend


def cross_entropy(F, log_probs, targets):
    """-log p(gold position) per window."""
    return -F.pick(log_probs, targets, axis=-1)


def focal(F, log_probs, targets, *, focal_gamma: float):
    """-(1 - p_gold)^gamma log p_gold per window; 1 - p_gold = -expm1(log p_gold), clipped to 1e-30."""
    gold = F.pick(log_probs, targets, axis=-1)
    return -(F.clip(-F.expm1(gold), _TINY, 1.0) ** focal_gamma) * gold


def label_smoothing(F, log_probs, targets, *, label_smoothing: float):
    """-(1 - eps) log p_gold - eps / (n - 1) * (sum of log p over the n candidates - log p_gold) per window.

    Candidates: positions whose log-probability is above CANDIDATE_FLOOR (masked ones are ~ -1e30).
    """
    eps = label_smoothing
    gold = F.pick(log_probs, targets, axis=-1)
    candidate = log_probs > CANDIDATE_FLOOR
    total = F.sum(F.where(candidate, log_probs, F.zeros_like(log_probs)), axis=-1)
    others = F.maximum(F.sum(candidate, axis=-1) - 1, 1)
    return -(1.0 - eps) * gold - eps * (total - gold) / others


def position_loss(loss: str | LossSetting):
    """The MXNet implementation of the registered loss ``loss`` (a name: its flags' defaults; or a
    LossSetting) as ``(F, log_probs, targets) -> (B,)``, with the loss's flag values bound."""
    setting = loss if isinstance(loss, LossSetting) else LossSetting(loss)
    function = load_implementation(get_loss(setting.name).implementation("mxnet"))
    return functools.partial(function, **setting.options) if setting.options else function
