"""Where a run's model and tokenizer come from, for every backend (framework-free).

``resolve_model_folder`` turns ``--model_path`` / ``--model_name`` into a local
Hugging Face folder: ``--model_path`` as given, or the registry's hub id read from
(or, when the hub is reachable, fetched into) the Hugging Face cache. Offline and
not cached, it fails at once naming the hub id and ``--model_path``. Backends load
weights from that folder, and the tokenizer comes from it through transformers'
``AutoTokenizer`` (which imports without torch).

Weights are read from safetensors only, on every backend and for local folders and hub
snapshots alike (``HUB_PATTERNS`` fetch nothing else): pickled checkpoints
(``pytorch_model.bin``) are never loaded, and custom model code (``auto_map``) is never run.
Before any backend builds a model, the folder is checked so that a bad one fails in one line
naming it: config.json readable with a ``model_type`` the family table knows, and either
``model.safetensors`` or a ``model.safetensors.index.json`` whose shards are all there.
``check_window_fits`` refuses a ``--max_seq_length`` longer than the model's position
embeddings, and ``param_checkpoint_file`` checks ``--param_checkpoint``; both sessions call
them from ``load_model``, before features are built.

Usage::

    folder = resolve_model_folder("google_electra_small", None)     # hub id through the HF cache
    folder = resolve_model_folder("ignored", "/models/electra")      # a local folder
    tokenizer = load_tokenizer(folder)
    check_window_fits(folder, 384)                                   # --max_seq_length
    weights = param_checkpoint_file("runs/x/checkpoints/update_100")  # -> .../model.safetensors
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.families import FAMILIES, UnknownFamilyError, get_family
from bench.core.models import ModelSpec, get_model_spec
from bench.run.checkpoints import MODEL_FILE, require_safetensors

__all__ = ["ModelFolder", "ModelSourceError", "resolve_model_folder", "load_tokenizer", "check_window_fits",
           "param_checkpoint_file", "HUB_PATTERNS"]

logger = logging.getLogger(__name__)

# The files a hub snapshot needs: config, safetensors weights (single or sharded), tokenizer.
HUB_PATTERNS = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                "merges.txt", "spiece.model"]
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_SAFETENSORS_ONLY = ("weights are read from safetensors only (pickled checkpoints such as pytorch_model.bin are "
                     "never loaded: unpickling can run code); re-save the model with transformers' "
                     "save_pretrained, which writes model.safetensors")
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
    if spec.from_scratch:
        raise ModelSourceError(f"--model_name {model_name} is trained from scratch and has no checkpoint: the run "
                               f"script builds its folder (<output_dir>/model, bench.run.word_model); elsewhere pass "
                               f"--model_path to such a folder")
    folder = _hub_folder(spec)
    _check_weight_files(folder, f"{spec.hub_id} ({folder})")
    return ModelFolder(spec=spec, folder=folder, source=spec.hub_id, family=_read_model_type(folder))


def _local_folder(model_name: str, folder: Path) -> ModelFolder:
    expected = "expected a Hugging Face model folder with config.json, model.safetensors and tokenizer files"
    if not folder.is_dir():
        raise ModelSourceError(f"--model_path {folder}: not a folder ({expected})")
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"--model_path {folder}: config.json is missing ({expected})")
    _check_weight_files(folder, f"--model_path {folder}")
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


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelSourceError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelSourceError(f"{path}: expected a JSON object (a Hugging Face model config)")
    return config


def _read_model_type(folder: Path) -> str:
    """config.json's ``model_type``, which must be a family the table knows (custom code is never run)."""
    config = _read_config(folder)
    model_type = config.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise ModelSourceError(f"{folder}: config.json has no model_type, so the model family is unknown "
                               f"(known model types: {', '.join(FAMILIES)})")
    try:
        get_family(model_type)
    except UnknownFamilyError:
        custom = ""
        if config.get("auto_map"):
            custom = (" Its auto_map names custom code, which is never run (trust_remote_code stays off): "
                      "only the families of the table load.")
        raise ModelSourceError(f"{folder}: config.json model_type {model_type!r} is not a model family this "
                               f"benchmark knows (known: {', '.join(FAMILIES)}).{custom} Register the family "
                               f"(docs/adding-a-model-family.md) or pass another --model_path") from None
    return model_type


def _check_weight_files(folder: Path, where: str) -> None:
    """``model.safetensors``, or ``model.safetensors.index.json`` naming shards that are all in ``folder``."""
    if (folder / "model.safetensors").is_file():
        return
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise ModelSourceError(f"{where}: no model.safetensors or model.safetensors.index.json; {_SAFETENSORS_ONLY}")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ModelSourceError(f"{index}: cannot be read as a safetensors index ({exc})") from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelSourceError(f"{index}: the weight_map has no entries, so no weights would be loaded "
                               f"(expected tensor name -> shard file entries)")
    shards = sorted({str(shard) for shard in weight_map.values()})
    missing = [shard for shard in shards if not (folder / shard).is_file()]
    if missing:
        raise ModelSourceError(f"{index}: {len(missing)} of its {len(shards)} shard files are missing from "
                               f"{folder}: {', '.join(missing[:5])}")


# ---------------------------------------------------------------------------------------- checks
def check_window_fits(model: ModelFolder, max_seq_length: int) -> None:
    """Refuse a ``--max_seq_length`` longer than ``model``'s position embeddings (config.json).

    Most families embed positions 0..max_position_embeddings-1; RoBERTa-style ones number them from
    pad_token_id + 1 (the family table's ``positions_after_padding``), so RoBERTa's 514 embeddings fit 512.
    A config without ``max_position_embeddings`` (a family with other position encodings) is not checked.
    """
    config = _read_config(model.folder)
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return
    reserved, why = 0, ""
    if get_family(config["model_type"]).positions_after_padding:
        pad = config.get("pad_token_id")
        reserved = (pad if isinstance(pad, int) else 1) + 1
        why = f", less pad_token_id + 1 = {reserved} positions that {config['model_type']} models reserve"
    limit = positions - reserved
    if max_seq_length > limit:
        raise ModelSourceError(f"--max_seq_length {max_seq_length} is longer than {model.source} can take: at "
                               f"most {limit} tokens (config.json max_position_embeddings {positions}{why}). "
                               f"Pass --max_seq_length {limit} or less")


def param_checkpoint_file(path: str | Path) -> Path:
    """The weights file of ``--param_checkpoint``: the file itself, or a checkpoint folder's model.safetensors.

    It must exist and be safetensors (pickled checkpoints are never loaded); otherwise one line naming
    the flag and the file.
    """
    path = Path(path)
    weights = path / MODEL_FILE if path.is_dir() else path
    return require_safetensors(weights, f"--param_checkpoint {weights}", ModelSourceError)


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
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # A word model's folder (bench.run.word_model) is a plain tokenizer.json: AutoTokenizer would first try
    # the model_type as a transformers config and warn that it knows no such model.
    loader = PreTrainedTokenizerFast if get_family(model.family).from_scratch else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(str(model.folder), use_fast=True, trust_remote_code=False,
                                           local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load the tokenizer of {model.source}: {exc} "
                               f"(pass --model_path to a folder with tokenizer.json)") from exc
    if not tokenizer.is_fast:
        raise ModelSourceError(f"{model.source}: only a slow tokenizer is available ({type(tokenizer).__name__}); "
                               f"a fast tokenizer (tokenizer.json) is required for character offsets")
    return tokenizer
