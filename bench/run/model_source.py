"""Where a run's model and tokenizer come from, for every backend (framework-free).

``resolve_model_folder`` turns ``--model_path`` / ``--model_name`` into a local
Hugging Face folder: ``--model_path`` as given, or the registry's hub id read from
(or, when the hub is reachable, fetched into) the Hugging Face cache. Offline and
not cached, it fails at once naming the hub id and ``--model_path``. Backends load
weights from that folder (safetensors; never remote code), and the tokenizer comes
from it through transformers' ``AutoTokenizer`` (which imports without torch).

Usage::

    folder = resolve_model_folder("google_electra_small", None)     # hub id through the HF cache
    folder = resolve_model_folder("ignored", "/models/electra")      # a local folder
    tokenizer = load_tokenizer(folder)
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.families import get_family
from bench.core.models import ModelSpec, get_model_spec

__all__ = ["ModelFolder", "ModelSourceError", "resolve_model_folder", "load_tokenizer", "HUB_PATTERNS"]

logger = logging.getLogger(__name__)

# The files a hub snapshot needs: config, safetensors weights (single or sharded), tokenizer.
HUB_PATTERNS = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                "merges.txt", "spiece.model"]
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_TRUE_VALUES = {"1", "on", "yes", "true"}
_HUB_PROBE_TIMEOUT_S = 10.0


class ModelSourceError(BenchError, RuntimeError):
    """A model or tokenizer that cannot be located or loaded; the message says what to pass instead."""


@dataclass(frozen=True)
class ModelFolder:
    """A local Hugging Face model folder and what the registry says about it.

    spec:   the registry entry (None when ``--model_path`` holds a model the registry does not name)
    folder: the local folder (``--model_path``, or the hub snapshot in the HF cache)
    source: what results.json records: the ``--model_path`` folder or the hub id
    family: config.json's ``model_type``
    """
    spec: ModelSpec | None
    folder: Path
    source: str
    family: str

    @property
    def input_style(self) -> str:
        """Input template the checkpoint was pretrained with: "bert" or "roberta" (the family table's)."""
        return get_family(self.family).input_style


def resolve_model_folder(model_name: str, model_path: str | None) -> ModelFolder:
    """``--model_path`` (a local HF folder) wins; otherwise the registry's hub id for ``--model_name``."""
    if model_path:
        return _local_folder(model_name, Path(model_path))
    spec = get_model_spec(model_name)
    folder = _hub_folder(spec)
    return ModelFolder(spec=spec, folder=folder, source=spec.hub_id, family=_read_model_type(folder))


def _local_folder(model_name: str, folder: Path) -> ModelFolder:
    expected = "expected a Hugging Face model folder with config.json, model.safetensors and tokenizer files"
    if not folder.is_dir():
        raise ModelSourceError(f"--model_path {folder}: not a folder ({expected})")
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"--model_path {folder}: config.json is missing ({expected})")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise ModelSourceError(f"--model_path {folder}: no model.safetensors (--backend mxnet reads safetensors "
                               f"only; re-save a pytorch_model.bin folder with transformers' save_pretrained)")
    family = _read_model_type(folder)
    spec = _registry_spec_or_none(model_name)
    if spec is not None and spec.family != family:
        # --model_name keeps its default (an ALBERT) when only --model_path is given: ignore it then.
        logger.info("--model_path %s holds a %r model; ignoring --model_name %s (%s)", folder, family,
                    model_name, spec.family)
        spec = None
    return ModelFolder(spec=spec, folder=folder, source=str(folder), family=family)


def _registry_spec_or_none(model_name: str) -> ModelSpec | None:
    try:
        return get_model_spec(model_name)
    except KeyError:
        return None


def _read_model_type(folder: Path) -> str:
    with open(folder / "config.json", encoding="utf-8") as f:
        return json.load(f).get("model_type", "")


# ---------------------------------------------------------------------------------------- the hub
def _hub_folder(spec: ModelSpec) -> Path:
    """The cached snapshot of ``spec.hub_id``, downloaded first when it is missing and the hub answers."""
    cached = _cached_snapshot(spec.hub_id)
    if cached is not None:
        return cached
    if _hub_offline():
        raise ModelSourceError(_not_available_message(spec, "the hub is disabled (HF_HUB_OFFLINE is set)"))
    _probe_hub(spec)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.hub_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # transport or permission errors mid-download: same advice as the probe
        raise ModelSourceError(_not_available_message(spec, f"downloading it failed ({exc})")) from exc


def _cached_snapshot(hub_id: str) -> Path | None:
    """The cache's snapshot folder of ``hub_id`` when it holds the config and the weights, else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    complete = (folder / "config.json").is_file() and any((folder / name).is_file() for name in _WEIGHT_FILES)
    return folder if complete else None


def _hub_offline() -> bool:
    # Read the environment now: huggingface_hub reads it once at import, which may be too early.
    return any(os.environ.get(name, "").strip().lower() in _TRUE_VALUES
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe_hub(spec: ModelSpec) -> None:
    """One HEAD request for config.json, no retries: fail now rather than after minutes of backoff."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    kwargs = {"timeout": _HUB_PROBE_TIMEOUT_S}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    try:
        get_hf_file_metadata(hf_hub_url(spec.hub_id, "config.json"), **kwargs)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelSourceError(_not_available_message(spec, f"the hub refused it ({type(exc).__name__})")) from exc
    except Exception as exc:  # any transport error (DNS, refused, timeout, proxy) means "unreachable"
        raise ModelSourceError(_not_available_message(spec, f"the hub is unreachable ({exc})")) from exc


def _not_available_message(spec: ModelSpec, reason: str) -> str:
    return (f"cannot load --model_name {spec.name}: its Hugging Face hub id {spec.hub_id!r} is not in the "
            f"local cache and {reason}. Either download it where the hub is reachable "
            f"(`hf download {spec.hub_id} --local-dir DIR`) and pass --model_path DIR, or pass "
            f"--model_path pointing to a local folder with config.json, model.safetensors and tokenizer files.")


# ---------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(model: ModelFolder):
    """The folder's fast (Rust) tokenizer; the feature code needs its offset mappings."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model.folder), use_fast=True, trust_remote_code=False,
                                                  local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load the tokenizer of {model.source}: {exc} "
                               f"(pass --model_path to a folder with tokenizer.json)") from exc
    if not tokenizer.is_fast:
        raise ModelSourceError(f"{model.source}: only a slow tokenizer is available ({type(tokenizer).__name__}); "
                               f"a fast tokenizer (tokenizer.json) is required for character offsets")
    return tokenizer
