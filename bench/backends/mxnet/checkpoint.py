"""MXNet checkpoints: the shared layout (``bench.run.checkpoints``) with a torch-free, pickle-free trainer state.

``update_<N>/`` holds:

    model.safetensors    the QA model in the PyTorch backend's parameter names
                         (``heads.torch_state_from_gluon``): either backend evaluates it
    trainer_state.npz    AdamW moments and step counts (``exp_avg/<name>``, ``exp_avg_sq/<name>``,
                         ``step/<name>``, Gluon structural names), the numpy global RNG's key array,
                         and ``state_json``: the position, the rest of the RNG state and the AMP
                         loss scale, as UTF-8 JSON bytes. Read with ``allow_pickle=False``.
    meta.json            written by ``staged_checkpoint`` (backend "mxnet", head, each file's sha256)

The MXNet RNG needs no saving: MXNet 1.x cannot read its generator state back, so the
training loop reseeds it from (--seed, update number) before every update, and the
update number is in the position.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from bench.run.checkpoints import (MODEL_FILE, TrainPosition, read_checkpoint_file, read_meta, require_safetensors,
                                  staged_checkpoint)
from bench.core.errors import BenchError
from bench.backends.mxnet.heads import load_torch_state, torch_state_from_gluon

__all__ = ["TRAINER_STATE_FILE", "CheckpointError", "save_checkpoint", "write_trainer_state", "read_trainer_state",
           "load_model_weights", "check_resumable", "numpy_rng_state", "restore_numpy_rng"]

TRAINER_STATE_FILE = "trainer_state.npz"
_JSON_KEY = "state_json"
_NUMPY_RNG_KEYS = "numpy_rng_keys"


class CheckpointError(BenchError, ValueError):
    """A checkpoint this backend cannot load; the message says what to do instead."""


def save_checkpoint(ckpt_root: Path, model, arrays: dict[str, np.ndarray], scalars: dict,
                    position: TrainPosition, *, head: str | None = None) -> Path:
    """Write ``ckpt_root/update_<N>`` atomically (files hashed in meta.json) and return its path."""
    with staged_checkpoint(ckpt_root, position, trainer_state_file=TRAINER_STATE_FILE,
                           backend="mxnet", head=head) as staging:
        save_file(torch_state_from_gluon(model), str(staging / MODEL_FILE))
        write_trainer_state(staging / TRAINER_STATE_FILE, arrays, scalars)
    return ckpt_root / f"update_{position.update}"


def write_trainer_state(path: Path, arrays: dict[str, np.ndarray], scalars: dict) -> None:
    text = np.frombuffer(json.dumps(scalars, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    # A file object: np.savez would append ".npz" to a path without it.
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{_JSON_KEY: text})


def read_trainer_state(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, scalars) of ``write_trainer_state``; nothing is unpickled. A damaged file: DamagedCheckpoint."""
    return read_checkpoint_file(path, _read_trainer_state)


def _read_trainer_state(path: str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files if name != _JSON_KEY}
        scalars = json.loads(bytes(stored[_JSON_KEY]).decode("utf-8"))
    return arrays, scalars


def load_model_weights(model, weights_file: Path) -> None:
    """Load a safetensors file in torch QAModel names (either backend's checkpoint) into ``model``."""
    weights_file = require_safetensors(weights_file, str(weights_file), CheckpointError)
    load_torch_state(model, read_checkpoint_file(weights_file, load_file), where=str(weights_file))


def check_resumable(ckpt: Path) -> str:
    """The trainer-state file name of an MXNet checkpoint; a torch one is refused with what to do."""
    meta = read_meta(ckpt) or {}
    if meta.get("backend") != "mxnet":
        raise CheckpointError(
            f"--resume: the newest checkpoint {ckpt} was written by --backend {meta.get('backend')}; its "
            f"optimizer state ({meta.get('trainer_state')}) is that framework's own. Resume it with "
            f"--backend {meta.get('backend')}, or start a new MXNet run from its weights with "
            f"--param_checkpoint {ckpt / MODEL_FILE} in another --output_dir")
    return str(meta["trainer_state"])


# ---------------------------------------------------------------------------------------- numpy RNG
def numpy_rng_state() -> tuple[dict[str, np.ndarray], dict]:
    """numpy's legacy global RNG state, split into its key array and JSON-able scalars."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return ({_NUMPY_RNG_KEYS: np.asarray(keys)},
            {"name": name, "pos": int(position), "has_gauss": int(has_gauss),
             "cached_gaussian": float(cached_gaussian)})


def restore_numpy_rng(arrays: dict[str, np.ndarray], scalars: dict) -> None:
    np.random.set_state((scalars["name"], arrays[_NUMPY_RNG_KEYS], scalars["pos"], scalars["has_gauss"],
                         scalars["cached_gaussian"]))
