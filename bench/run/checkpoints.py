"""Checkpoint folders, framework-free: layout, atomic staging, listing, pruning.

``<output_dir>/checkpoints/update_<N>/`` holds::

    model.safetensors      the QA model's parameters, in the PyTorch backend's names
                           (the MXNet backend converts to and from them)
    <trainer state file>   optimizer, scheduler, loss scaler, RNG states: the backend's own
                           format, loadable without unpickling code (named in meta.json)
    meta.json              {update, epoch, update_in_epoch, trainer_state, backend, complete: true}

A folder is assembled under a temporary name and renamed into place, so a crash
mid-save never leaves a folder that ``--resume`` would trust.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from bench.core.io_utils import atomic_write_json

__all__ = ["TrainPosition", "staged_checkpoint", "list_checkpoints", "prune_checkpoints", "read_meta",
           "MODEL_FILE", "require_safetensors", "without_backbone_prefix"]

MODEL_FILE = "model.safetensors"
_CKPT_PATTERN = re.compile(r"^update_(\d+)$")


@dataclass
class TrainPosition:
    update: int = 0            # optimizer updates done in total
    epoch: int = 0             # epoch in progress
    update_in_epoch: int = 0   # updates done inside that epoch


@contextlib.contextmanager
def staged_checkpoint(ckpt_root: Path, position: TrainPosition, *, trainer_state_file: str,
                      backend: str) -> Iterator[Path]:
    """Yield a staging folder to write ``MODEL_FILE`` and the trainer state into; on success,
    write meta.json and rename the folder to ``update_<N>`` (replacing an older one)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"update_{position.update}"
    staging = Path(tempfile.mkdtemp(prefix=f".update_{position.update}.", dir=ckpt_root))
    try:
        yield staging
        atomic_write_json(staging / "meta.json", {**asdict(position), "trainer_state": trainer_state_file,
                                                  "backend": backend, "complete": True})
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_meta(ckpt: Path) -> dict | None:
    try:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(ckpt: Path) -> bool:
    meta = read_meta(ckpt)
    return bool(meta and meta.get("complete")) and (ckpt / MODEL_FILE).is_file() \
        and (ckpt / str(meta.get("trainer_state", ""))).is_file()


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written (staging) folders are ignored."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for path in ckpt_root.iterdir():
        match = _CKPT_PATTERN.match(path.name)
        if match and _is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(ckpt_root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints; return the deleted ones."""
    checkpoints = list_checkpoints(ckpt_root)
    doomed = checkpoints[:-keep] if keep > 0 else checkpoints
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def require_safetensors(path: str | Path, label: str, error_cls: type[Exception]) -> Path:
    """``path`` if it is an existing ``.safetensors`` file, else ``error_cls`` with a message starting
    with ``label``. Weights are read from safetensors only: unpickling a checkpoint can run code."""
    path = Path(path)
    if not path.is_file():
        raise error_cls(f"{label}: file not found")
    if path.suffix != ".safetensors":
        raise error_cls(f"{label}: expected a .safetensors file (pickled checkpoints are not loaded: they can "
                        f"run arbitrary code)")
    return path


def without_backbone_prefix(state: dict) -> dict:
    """A whole QA model's state (every key ``backbone.*``) as its backbone's; any other state unchanged."""
    if state and all(key.startswith("backbone.") for key in state):
        return {key[len("backbone."):]: value for key, value in state.items()}
    return state
