"""The training-loss registry (``--loss``): a loss turns log-probabilities over positions into a
per-window loss.

Each entry names the loss, says what it computes, lists its own flags (``LossSpec.flags``: run flags
by field name, e.g. ``focal_gamma``), and, per backend, the ``module:function`` implementing it there
with the signature::

    torch:  loss(log_probs, targets, **options) -> (B,)
    mxnet:  loss(F, log_probs, targets, **options) -> (B,)          (hybridizable)

``log_probs`` (B, L) float32 masked log-softmax scores, ``targets`` (B,) gold positions,
``options`` one keyword per flag the entry lists (none for ``ce``). A position the head masked out
(not CLS, not a context token) has a log-probability of about -1e30 (the heads' ``MASKED_LOGIT``):
a loss that reads more than the gold position counts a position as a *candidate* iff its
log-probability is above ``CANDIDATE_FLOOR`` (-1e29).

Heads do not call these functions directly: ``bench.backends.<backend>.losses.position_loss(loss)``
returns the closure ``(log_probs, targets) -> (B,)`` with the options bound, where ``loss`` is a
name (the flags' defaults) or a ``LossSetting`` (a name and its flag values: ``loss_setting(config)``
reads them from a RunConfig). Heads apply it to their start and end distributions (see
``bench.core.heads``: a head lists the losses it accepts). Adding a loss is one ``register_loss``
call plus one function per backend.

The built-in losses, with p = exp(log_probs), g the gold position and C the candidate positions:

``ce``               -log p_g
``focal``            -(1 - p_g)^gamma log p_g, gamma = ``--focal_gamma`` (0: ce). The factor
                     (1 - p_g)^gamma is differentiated too (Lin et al.'s focal loss), and computed as
                     max(-expm1(log p_g), 1e-30)^gamma so that p_g = 1 gives a zero loss and gradient
                     rather than 0^(gamma - 1) = inf.
``label_smoothing``  -(1 - eps) log p_g - eps / (|C| - 1) * sum_{j in C, j != g} log p_j,
                     eps = ``--label_smoothing`` (0: ce): the cross-entropy against a target that
                     keeps 1 - eps on the gold position and spreads eps evenly over the *other
                     candidates* only; masked positions get no share and do not enter the sum. A
                     window with a single candidate (|C| = 1) keeps only the first term.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from bench.core.errors import BenchError
from bench.core.registry import Registry, backend_implementation

__all__ = ["LossSpec", "LossSetting", "LOSSES", "REGISTRY", "UnknownLossError", "get_loss", "register_loss",
           "loss_options", "loss_setting", "CANDIDATE_FLOOR"]

# A log-probability at or below this marks a masked position (the heads' MASKED_LOGIT is -1e30; a real
# log-probability of float32 logits is far above it).
CANDIDATE_FLOOR = -1e29


class UnknownLossError(BenchError, ValueError):
    """A --loss no entry describes (the message lists the known losses)."""


@dataclass(frozen=True)
class LossSpec:
    name: str
    description: str
    backends: Mapping[str, str] = field(default_factory=dict)   # backend -> "module:function"
    flags: tuple[str, ...] = ()          # run flags this loss reads (RunConfig field names), passed as keywords

    def __post_init__(self):
        object.__setattr__(self, "backends", dict(self.backends))

    def implementation(self, backend: str) -> str:
        """``module:function`` of this loss on ``backend``; a clear error when it has none there."""
        return backend_implementation(self, backend, f"--loss {self.name}", UnknownLossError)


@dataclass(frozen=True)
class LossSetting:
    """A ``--loss`` with the values of the flags it reads: what a head is built with."""
    name: str
    options: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "options", loss_options(self.name, self.options))


def loss_options(name: str, values: Any = None) -> dict[str, float]:
    """The keyword arguments of loss ``name``: each flag its entry lists, from ``values`` (a mapping or an
    object with attributes such as a RunConfig; other keys are ignored), the flag's default when absent."""
    from bench.core.flags import FLAG_BY_NAME   # flags imports this module

    options = {}
    for flag in get_loss(name).flags:
        if isinstance(values, Mapping):
            value = values.get(flag, FLAG_BY_NAME[flag].default)
        else:
            value = getattr(values, flag, FLAG_BY_NAME[flag].default)
        options[flag] = float(value)
    return options


def loss_setting(config) -> LossSetting:
    """``config.loss`` (a RunConfig) with the values of its flags: pass it as the head's ``loss``."""
    return LossSetting(config.loss, loss_options(config.loss, config))


REGISTRY: Registry[LossSpec] = Registry("--loss", UnknownLossError)
LOSSES: Mapping[str, LossSpec] = REGISTRY.entries
register_loss, get_loss = REGISTRY.register, REGISTRY.get


register_loss(LossSpec("ce", "cross-entropy of the gold position: -log p(gold)",
                       {"torch": "bench.backends.torch.losses:cross_entropy",
                        "mxnet": "bench.backends.mxnet.losses:cross_entropy"}))
register_loss(LossSpec("focal", "focal loss: -(1 - p(gold))^gamma log p(gold), gamma = --focal_gamma",
                       {"torch": "bench.backends.torch.losses:focal",
                        "mxnet": "bench.backends.mxnet.losses:focal"},
                       flags=("focal_gamma",)))
register_loss(LossSpec("label_smoothing",
                       "cross-entropy against 1 - eps on the gold position and eps spread evenly over the other "
                       "candidate positions, eps = --label_smoothing",
                       {"torch": "bench.backends.torch.losses:label_smoothing",
                        "mxnet": "bench.backends.mxnet.losses:label_smoothing"},
                       flags=("label_smoothing",)))
