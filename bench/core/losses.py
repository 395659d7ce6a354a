"""The training-loss registry (``--loss``): a loss turns log-probabilities over positions into a
per-window loss.

Each entry names the loss, says what it computes, lists its own flags, and, per backend, the
``module:function`` implementing it there with the signature ``loss(log_probs, targets) ->
per-window loss``: ``log_probs`` (B, L) float32 log-softmax scores, ``targets`` (B,) positions.
Heads apply the loss to their start and end distributions (see ``bench.core.heads``: a head lists
the losses it accepts). Adding a loss is one ``register_loss`` call plus one function per backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from bench.core.errors import BenchError
from bench.core.registry import Registry, backend_implementation

__all__ = ["LossSpec", "LOSSES", "REGISTRY", "UnknownLossError", "get_loss", "register_loss"]


class UnknownLossError(BenchError, ValueError):
    """A --loss no entry describes (the message lists the known losses)."""


@dataclass(frozen=True)
class LossSpec:
    name: str
    description: str
    backends: Mapping[str, str] = field(default_factory=dict)   # backend -> "module:function"
    flags: tuple[str, ...] = ()                                  # run flags this loss reads

    def __post_init__(self):
        object.__setattr__(self, "backends", dict(self.backends))

    def implementation(self, backend: str) -> str:
        """``module:function`` of this loss on ``backend``; a clear error when it has none there."""
        return backend_implementation(self, backend, f"--loss {self.name}", UnknownLossError)


REGISTRY: Registry[LossSpec] = Registry("--loss", UnknownLossError)
LOSSES: Mapping[str, LossSpec] = REGISTRY.entries
register_loss, get_loss = REGISTRY.register, REGISTRY.get


register_loss(LossSpec("ce", "cross-entropy of the gold position: -log p(gold)",
                       {"torch": "bench.backends.torch.losses:cross_entropy",
                        "mxnet": "bench.backends.mxnet.losses:cross_entropy"}))
