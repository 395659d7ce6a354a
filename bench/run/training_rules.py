"""Framework-free rules of fine-tuning, shared by every backend.

The layer-wise LR multiplier of a parameter (its layer comes from the family table,
``bench.core.families``: ``get_family(name).layer_index(param_name)``), which parameters ``--untunable_depth``
freezes, and the warm-up/linear-decay learning-rate schedule.

Layer-wise decay (ELECTRA / GluonNLP exponents), factor ``d`` and L encoder layers:

    embeddings            lr × d^(L+2)
    encoder layer i       lr × d^(L+1-i)     (i = 0 is the lowest layer)
    head (non-backbone)   lr × 1

ALBERT shares one layer group's weights across its whole depth, so the decay can
only separate the embeddings, the shared encoder and the head: L is then the
number of layer groups (1 for released ALBERTs): d^3, d^2, 1.
"""
from __future__ import annotations

import logging
import math

from bench.core.families import EMBEDDINGS_LAYER, get_family

__all__ = ["EMBEDDINGS_LAYER", "decay_enabled", "layer_multiplier", "check_layer_rules", "schedule_factor",
           "frozen_depth", "is_frozen", "linear_schedule", "warmup_updates", "warn_albert_decay"]

logger = logging.getLogger(__name__)


def decay_enabled(layerwise_decay: float) -> bool:
    """Decay is on for 0 < d < 1; d <= 0 (the flag's "off") and d == 1 (no effect) leave every LR alone."""
    return 0.0 < layerwise_decay < 1.0


def layer_multiplier(layer: int | None, num_layers: int, layerwise_decay: float) -> float:
    """LR multiplier of a parameter in ``layer`` (None = the head, outside the backbone)."""
    if layer is None or not decay_enabled(layerwise_decay):
        return 1.0
    if layer == EMBEDDINGS_LAYER:
        return layerwise_decay ** (num_layers + 2)
    return layerwise_decay ** (num_layers + 1 - layer)


def warn_albert_decay(family: str, num_layers: int, layerwise_decay: float) -> None:
    if family == "albert" and decay_enabled(layerwise_decay):
        logger.warning("ALBERT shares its layer weights across depth: layer-wise decay %.3g only separates "
                       "embeddings (x d^%d), the shared encoder (x d^%d) and the head (x 1)", layerwise_decay,
                       num_layers + 2, num_layers + 1)


def check_layer_rules(family: str, layerwise_decay: float, untunable_depth: float) -> None:
    """Refuse --layerwise_decay / --untunable_depth for a family without layers (the family table says why)."""
    get_family(family).refuse_layer_rules(layerwise_decay, untunable_depth)


def frozen_depth(untunable_depth: float, num_layers: int) -> int | None:
    """``--untunable_depth`` as a layer count (None: nothing frozen); fractional values are an error."""
    if untunable_depth < 0:
        return None
    if untunable_depth != int(untunable_depth):
        raise ValueError(f"--untunable_depth must be a whole number of layers, got {untunable_depth}")
    depth = int(untunable_depth)
    if depth > num_layers:
        logger.warning("--untunable_depth %d exceeds the %d layers: the whole backbone is frozen", depth,
                       num_layers)
    return depth


def is_frozen(layer: int | None, depth: int | None) -> bool:
    """Embeddings and layers below ``depth`` are frozen; the head never is."""
    return depth is not None and layer is not None and layer < depth


def linear_schedule(update: int, num_updates: int, warmup: int) -> float:
    """LR factor after ``update`` optimizer updates: 0 → 1 over ``warmup``, then 1 → 0 at ``num_updates``."""
    if update < warmup:
        return update / warmup
    if num_updates <= warmup:
        return 1.0 if update < num_updates else 0.0
    return max(0.0, (num_updates - update) / (num_updates - warmup))


def schedule_factor(schedule: str, update: int, num_updates: int, warmup: int) -> float:
    """LR factor of ``--lr_schedule``: linear (``linear_schedule``) or constant (1 after the linear warm-up)."""
    if schedule == "constant":
        return update / warmup if update < warmup else 1.0
    if schedule != "linear":
        raise ValueError(f"--lr_schedule {schedule!r}: expected linear or constant")
    return linear_schedule(update, num_updates, warmup)


def warmup_updates(config, num_updates: int) -> int:
    """--warmup_steps if given (capped at num_updates), else int(--warmup_ratio × num_updates) (GluonNLP)."""
    if config.warmup_steps is not None:
        return min(int(config.warmup_steps), num_updates)
    return int(math.floor(config.warmup_ratio * num_updates))
