"""Encoders of every Hugging Face family for the torch backend, through transformers' classes.

The family table (``bench.core.families``) names this module as the torch builder of each
Hugging Face family: ``load_backbone(source)`` returns the pretrained encoder, float32, without
pooler, with scaled-dot-product attention where the family and its class support it. Weights
are read only from safetensors (or, for hub checkpoints without them, by transformers'
``torch.load(weights_only=True)``); remote code is never run.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path

import torch
from torch import nn

from bench.core.families import get_family
from bench.run.checkpoints import require_safetensors, without_backbone_prefix
from bench.run.model_source import ModelFolder, ModelSourceError

__all__ = ["load_backbone", "load_backbone_weights"]

logger = logging.getLogger(__name__)


def load_backbone(source: ModelFolder) -> nn.Module:
    """The pretrained encoder, float32, without pooler, with SDPA attention where supported."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(source.folder, trust_remote_code=False, local_files_only=True)
    family = get_family(config.model_type)
    model_class = MODEL_MAPPING[type(config)]
    sdpa = family.sdpa and getattr(model_class, "_supports_sdpa", False)
    kwargs = {"config": config, "dtype": torch.float32, "local_files_only": True,
              "attn_implementation": "sdpa" if sdpa else "eager"}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False  # an unused pooler would break DDP (parameters without grads)
    if (source.folder / "model.safetensors").is_file():
        kwargs["use_safetensors"] = True
    with _quiet_transformers():
        model, info = model_class.from_pretrained(source.folder, output_loading_info=True, **kwargs)
    # Unexpected keys are the dropped pooler and pretraining heads; missing ones would be a real problem.
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        logger.warning("%s: %d backbone weights are not in the checkpoint and were initialised randomly "
                       "(e.g. %s)", source.source, len(missing), ", ".join(missing[:3]))
    return model


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bars (we report what matters ourselves)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Overwrite the backbone's weights with a .safetensors file, requiring exactly matching keys and shapes.

    Keys are the backbone's own (``embeddings.word_embeddings.weight``); a file saved from a
    whole ``QAModel`` (keys ``backbone.*``) is accepted too.
    """
    from safetensors.torch import load_file

    path = require_safetensors(path, f"--backbone_path {path}", ModelSourceError)
    state = without_backbone_prefix(load_file(str(path)))
    _check_backbone_state(backbone.state_dict(), state, path)
    backbone.load_state_dict(state, strict=True)


def _check_backbone_state(expected: dict, state: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        raise ModelSourceError(f"--backbone_path {path} does not match the backbone: {'; '.join(problems)}")
