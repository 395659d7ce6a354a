"""AdamW with layer-wise LR decay, frozen lower layers and a linear warm-up/decay schedule.

Layer-wise decay (ELECTRA / GluonNLP exponents), factor ``d`` and L encoder layers:

    embeddings            lr × d^(L+2)
    encoder layer i       lr × d^(L+1-i)     (i = 0 is the lowest layer)
    head (non-backbone)   lr × 1

ALBERT shares one layer group's weights across its whole depth, so the decay can
only separate the embeddings, the shared encoder and the head: L is then the
number of layer groups (1 for released ALBERTs): d^3, d^2, 1.

Weight decay is never applied to biases nor to the weights of normalisation layers
(found by module type: LayerNorm, MobileBERT's NoNorm, ...). Frozen parameters
(``--untunable_depth``) are left out of the optimizer entirely.

Build the optimizer from the bare ``QAModel`` (not a DDP / torch.compile wrapper):
the layer rules read parameter names relative to it.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from bench.config import parse_adam_betas
from bench.torch_backend.modeling import EMBEDDINGS_LAYER

__all__ = ["decay_enabled", "lr_multipliers", "frozen_parameter_names", "no_decay_parameter_names",
           "build_param_groups", "build_optimizer", "build_scheduler", "warmup_updates", "linear_schedule"]

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
# Norm layers of transformers models that are not torch.nn subclasses (MobileBERT's element-wise NoNorm).
_NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm", "NoNorm")


def decay_enabled(layerwise_decay: float) -> bool:
    """Decay is on for 0 < d < 1; d <= 0 (the flag's "off") and d == 1 (no effect) leave every LR alone."""
    return 0.0 < layerwise_decay < 1.0


def _layer_indices(model) -> dict[str, int | None]:
    """Layer of every parameter (None for the head); raises on backbone names no rule covers."""
    return {name: model.backbone_layer_index(name) for name, _ in model.named_parameters()}


def _multiplier(layer: int | None, num_layers: int, d: float) -> float:
    if layer is None:
        return 1.0
    if layer == EMBEDDINGS_LAYER:
        return d ** (num_layers + 2)
    return d ** (num_layers + 1 - layer)


def lr_multipliers(model, layerwise_decay: float) -> dict[str, float]:
    """LR multiplier of every parameter of ``model`` (a QAModel), by name."""
    layers = _layer_indices(model)  # validated even when decay is off: an unmapped name is a bug
    if not decay_enabled(layerwise_decay):
        return {name: 1.0 for name in layers}
    if model.family == "albert":
        logger.warning("ALBERT shares its layer weights across depth: layer-wise decay %.3g only separates "
                       "embeddings (x d^%d), the shared encoder (x d^%d) and the head (x 1)", layerwise_decay,
                       model.num_layers + 2, model.num_layers + 1)
    return {name: _multiplier(layer, model.num_layers, layerwise_decay) for name, layer in layers.items()}


def frozen_parameter_names(model, untunable_depth: float) -> set[str]:
    """Embeddings and the ``k`` lowest layers for k = untunable_depth >= 0; nothing for k < 0."""
    if untunable_depth < 0:
        return set()
    if untunable_depth != int(untunable_depth):
        raise ValueError(f"--untunable_depth must be a whole number of layers, got {untunable_depth}")
    depth = int(untunable_depth)
    if depth > model.num_layers:
        logger.warning("--untunable_depth %d exceeds the %d layers: the whole backbone is frozen", depth,
                       model.num_layers)
    return {name for name, layer in _layer_indices(model).items()
            if layer is not None and layer < depth}


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Biases and every parameter of a normalisation module (detected by module type)."""
    names = {name for name, _ in model.named_parameters() if name.endswith("bias")}
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(_NORM_CLASS_SUFFIXES):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def build_param_groups(model, *, lr: float, wd: float, layerwise_decay: float,
                       untunable_depth: float) -> list[dict]:
    """AdamW parameter groups by (LR multiplier, decay or not); freezes the untunable parameters.

    Side effect: frozen parameters get ``requires_grad = False``. Each group carries
    ``lr`` (= lr × lr_scale), ``lr_scale``, ``weight_decay`` and ``param_names``.
    """
    multipliers = lr_multipliers(model, layerwise_decay)
    frozen = frozen_parameter_names(model, untunable_depth)
    no_decay = no_decay_parameter_names(model)
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        decays = name not in no_decay
        key = (multipliers[name], decays)
        group = groups.setdefault(key, {"params": [], "param_names": [], "lr": lr * key[0], "lr_scale": key[0],
                                        "weight_decay": wd if decays else 0.0})
        group["params"].append(param)
        group["param_names"].append(name)
    if frozen:
        logger.info("froze %d parameter tensors (embeddings + %d lowest layers)", len(frozen), int(untunable_depth))
    # Sorted so that every rank (and every resume) builds the groups in the same order.
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1]))]


def build_optimizer(model, config) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped as build_param_groups, from the run flags."""
    groups = build_param_groups(model, lr=config.lr, wd=config.wd, layerwise_decay=config.layerwise_decay,
                                untunable_depth=config.untunable_depth)
    return torch.optim.AdamW(groups, lr=config.lr, betas=parse_adam_betas(config.adam_betas),
                             eps=config.adam_epsilon, foreach=True)


def linear_schedule(update: int, num_updates: int, warmup: int) -> float:
    """LR factor after ``update`` optimizer updates: 0 → 1 over ``warmup``, then 1 → 0 at ``num_updates``."""
    if update < warmup:
        return update / warmup
    if num_updates <= warmup:
        return 1.0 if update < num_updates else 0.0
    return max(0.0, (num_updates - update) / (num_updates - warmup))


def build_scheduler(optimizer: torch.optim.Optimizer, num_updates: int, warmup_updates: int) -> LambdaLR:
    """Linear warm-up from 0 then linear decay to 0, stepped once per optimizer update.

    LambdaLR scales each group's initial LR (lr × lr_scale), so layer-wise decay is kept.
    """
    if num_updates <= 0:
        raise ValueError(f"num_updates must be positive, got {num_updates}")
    warmup = max(0, min(int(warmup_updates), num_updates))
    return LambdaLR(optimizer, lambda update: linear_schedule(update, num_updates, warmup))


def warmup_updates(config, num_updates: int) -> int:
    """--warmup_steps if given (capped at num_updates), else int(--warmup_ratio × num_updates) (GluonNLP)."""
    if config.warmup_steps is not None:
        return min(int(config.warmup_steps), num_updates)
    return int(math.floor(config.warmup_ratio * num_updates))
