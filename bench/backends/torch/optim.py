"""AdamW (or Adadelta) with layer-wise LR decay, frozen lower layers and a warm-up + linear/constant schedule.

The rules themselves (layer of a parameter, multipliers, freezing, schedule) are
framework-free and live in ``bench.run.training_rules``; this module applies them to
a torch ``QAModel``. Weight decay is never applied to biases nor to the weights of
normalisation layers (found by module type: LayerNorm, MobileBERT's NoNorm, ...).
Frozen parameters (``--untunable_depth``) are left out of the optimizer entirely.

Build the optimizer from the bare ``QAModel`` (not a DDP / torch.compile wrapper):
the layer rules read parameter names relative to it.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from bench.core.flags import parse_adam_betas
from bench.run.training_rules import (check_layer_rules, frozen_depth, is_frozen, layer_multiplier, schedule_factor,
                                      warn_albert_decay)

__all__ = ["lr_multipliers", "frozen_parameter_names", "no_decay_parameter_names", "build_param_groups",
           "build_optimizer", "build_scheduler"]

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
# Norm layers of transformers models that are not torch.nn subclasses (MobileBERT's element-wise NoNorm).
_NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm", "NoNorm")


def _layer_indices(model) -> dict[str, int | None]:
    """Layer of every parameter (None for the head); raises on backbone names no rule covers."""
    return {name: model.backbone_layer_index(name) for name, _ in model.named_parameters()}


def lr_multipliers(model, layerwise_decay: float) -> dict[str, float]:
    """LR multiplier of every parameter of ``model`` (a QAModel), by name."""
    layers = _layer_indices(model)  # validated even when decay is off: an unmapped name is a bug
    warn_albert_decay(model.family, model.num_layers, layerwise_decay)
    return {name: layer_multiplier(layer, model.num_layers, layerwise_decay) for name, layer in layers.items()}


def frozen_parameter_names(model, untunable_depth: float) -> set[str]:
    """Embeddings and the ``k`` lowest layers for k = untunable_depth >= 0; nothing for k < 0."""
    depth = frozen_depth(untunable_depth, model.num_layers)
    return {name for name, layer in _layer_indices(model).items() if is_frozen(layer, depth)}


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Biases and every parameter of a normalisation module (detected by module type)."""
    # "bias", and torch LSTM's "bias_ih_l0", "bias_hh_l0_reverse", ...: biases never decay.
    names = {name for name, _ in model.named_parameters() if name.rpartition(".")[2].startswith("bias")}
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
    check_layer_rules(model.family, layerwise_decay, untunable_depth)
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


def build_optimizer(model, config) -> torch.optim.Optimizer:
    """--optimizer over the trainable parameters, grouped as build_param_groups, from the run flags."""
    groups = build_param_groups(model, lr=config.lr, wd=config.wd, layerwise_decay=config.layerwise_decay,
                                untunable_depth=config.untunable_depth)
    if getattr(config, "optimizer", "adamw") == "adadelta":
        # BiDAF's optimiser (Seo et al. 2017: lr 0.5); rho 0.95 and eps 1e-6 are Zeiler's (2012).
        return torch.optim.Adadelta(groups, lr=config.lr, rho=0.95, eps=1e-6, foreach=True)
    # The fused kernel (one pass per tensor, CPU and CUDA) made a MiniLM CPU training step ~10%
    # faster than foreach, whose sqrt/addcdiv/lerp passes each re-read every tensor.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, betas=parse_adam_betas(config.adam_betas),
                             eps=config.adam_epsilon, fused=fused, foreach=None if fused else True)


def build_scheduler(optimizer: torch.optim.Optimizer, num_updates: int, warmup: int,
                    schedule: str = "linear") -> LambdaLR:
    """Linear warm-up from 0, then linear decay to 0 (or constant: --lr_schedule), stepped once per update.

    LambdaLR scales each group's initial LR (lr × lr_scale), so layer-wise decay is kept.
    """
    if num_updates <= 0:
        raise ValueError(f"num_updates must be positive, got {num_updates}")
    warmup = max(0, min(int(warmup), num_updates))
    return LambdaLR(optimizer, lambda update: schedule_factor(schedule, update, num_updates, warmup))


