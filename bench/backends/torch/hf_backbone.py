"""Encoders of every Hugging Face family for the torch backend, through transformers' classes.

The family table (``bench.core.families``) names this module as the torch builder of each
Hugging Face family: ``load_backbone(source)`` returns the pretrained encoder, float32, without
pooler, with scaled-dot-product attention where the family and its class support it. Weights
are read from safetensors only (``model.safetensors`` or the shards of its index, which
``bench.run.model_source`` checked): ``use_safetensors=True`` keeps transformers from falling
back to a pickled ``pytorch_model.bin``, local folder or hub snapshot alike. Remote code is
never run (``trust_remote_code=False``).

A folder saved from a fine-tuned ``*ForQuestionAnswering`` model (config.json ``architectures``)
holds its backbone under the base-model prefix (``bert.``), which transformers' base class strips,
and its trained span scorer as ``qa_outputs.weight/bias``: ``load_trained_qa_head`` puts that into
a ``basic`` head's ``span_scores`` (the same Linear(H, 2), row 0 start, row 1 end).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
from pathlib import Path

import torch
from torch import nn

from bench.core.families import get_family
from bench.run.checkpoints import require_safetensors, without_backbone_prefix
from bench.run.model_source import ModelFolder, ModelSourceError

__all__ = ["load_backbone", "load_backbone_weights", "qa_architecture", "load_trained_qa_head"]

# The trained span scorer of every Hugging Face *ForQuestionAnswering model: Linear(H, 2), start then end.
QA_OUTPUTS = ("qa_outputs.weight", "qa_outputs.bias")

logger = logging.getLogger(__name__)


def load_backbone(source: ModelFolder, config_overrides: dict | None = None) -> nn.Module:
    """The pretrained encoder, float32, without pooler, with SDPA attention where supported;
    ``config_overrides`` replace config.json values (--backbone_dropout's rates)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(source.folder, trust_remote_code=False, local_files_only=True)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    family = get_family(config.model_type)
    model_class = MODEL_MAPPING[type(config)]
    sdpa = family.sdpa and getattr(model_class, "_supports_sdpa", False)
    kwargs = {"config": config, "dtype": torch.float32, "local_files_only": True, "use_safetensors": True,
              "trust_remote_code": False, "attn_implementation": "sdpa" if sdpa else "eager"}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False  # an unused pooler would break DDP (parameters without grads)
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


# ------------------------------------------------------------------------- fine-tuned QA checkpoints
def qa_architecture(folder: Path) -> str | None:
    """The config.json ``architectures`` entry of a ``*ForQuestionAnswering`` model, else None."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    names = config.get("architectures") if isinstance(config, dict) else None
    return next((name for name in names or () if isinstance(name, str) and name.endswith("ForQuestionAnswering")),
                None)


def load_trained_qa_head(head_module: nn.Module, head: str, source: ModelFolder) -> bool:
    """A ``*ForQuestionAnswering`` folder's trained ``qa_outputs`` into a ``basic`` head's ``span_scores``.

    Returns whether it loaded. Any other folder: nothing. Any other ``--head``: a warning that the
    folder's trained head (a basic head) is not used and this head starts untrained.
    """
    architecture = qa_architecture(source.folder)
    if architecture is None:
        return False
    if head != "basic":
        logger.warning("%s is a fine-tuned %s: its trained head is a basic head (qa_outputs), so --head %s "
                       "starts untrained; pass --head basic to use the trained one", source.source, architecture,
                       head)
        return False
    state = _read_tensors(source.folder, QA_OUTPUTS, f"{source.source} ({architecture})")
    scorer = head_module.span_scores
    for name, param in (("qa_outputs.weight", scorer.weight), ("qa_outputs.bias", scorer.bias)):
        if tuple(state[name].shape) != tuple(param.shape):
            raise ModelSourceError(f"{source.source}: {name} has shape {tuple(state[name].shape)}, but the basic "
                                   f"head's span scorer has {tuple(param.shape)}")
    with torch.no_grad():
        scorer.weight.copy_(state["qa_outputs.weight"].float())
        scorer.bias.copy_(state["qa_outputs.bias"].float())
    logger.info("%s: loaded the trained basic head of the %s (qa_outputs)", source.source, architecture)
    return True


def _read_tensors(folder: Path, names: tuple[str, ...], where: str) -> dict[str, torch.Tensor]:
    """``names`` from ``model.safetensors`` or the shards its index names; one line naming what is missing."""
    from safetensors import safe_open

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = {name: single for name in names}
    else:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = {name: folder / weight_map[name] for name in names if name in weight_map}
    tensors = {}
    for name, path in files.items():
        with safe_open(str(path), framework="pt") as f:
            if name in f.keys():
                tensors[name] = f.get_tensor(name)
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ModelSourceError(f"{where}: the weights lack the trained QA head's {', '.join(missing)}")
    return tensors
