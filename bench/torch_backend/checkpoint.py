"""Checkpoints: safetensors weights + a weights-only training state, written atomically.

Layout of ``<output_dir>/checkpoints/update_<N>/``::

    model.safetensors      the QA model's parameters (backbone + head)
    trainer_state.pt       optimizer, scheduler, loss scaler, RNG states, position
                           (tensors and plain Python values only: loaded with weights_only=True)
    meta.json              {update, epoch, update_in_epoch, complete: true}

A checkpoint folder is assembled under a temporary name and renamed into place,
so a crash mid-save never leaves a folder that ``--resume`` would trust.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.io_utils import atomic_write_json

__all__ = ["TrainPosition", "save_checkpoint", "list_checkpoints", "load_model_weights",
           "load_trainer_state", "prune_checkpoints", "capture_rng_state", "restore_rng_state"]

_CKPT_PATTERN = re.compile(r"^update_(\d+)$")


@dataclass
class TrainPosition:
    update: int = 0            # optimizer updates done in total
    epoch: int = 0             # epoch in progress
    update_in_epoch: int = 0   # updates done inside that epoch


def capture_rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Contiguous CPU copies; tensors that share storage (tied weights) are cloned apart.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}


def save_checkpoint(ckpt_root: Path, model, optimizer, scheduler, scaler, position: TrainPosition) -> Path:
    """Write ``ckpt_root/update_<N>`` atomically and return its path."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"update_{position.update}"
    staging = Path(tempfile.mkdtemp(prefix=f".update_{position.update}.", dir=ckpt_root))
    try:
        save_file(_state_dict_for_saving(model), str(staging / "model.safetensors"))
        trainer_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": capture_rng_state(),
            "position": asdict(position),
        }
        torch.save(trainer_state, staging / "trainer_state.pt")
        atomic_write_json(staging / "meta.json", {**asdict(position), "complete": True})
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


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


def _is_complete(path: Path) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("complete")) and (path / "model.safetensors").is_file() \
        and (path / "trainer_state.pt").is_file()


def load_model_weights(model: torch.nn.Module, weights_file: Path) -> None:
    """Load a safetensors file into ``model``; every key must match (clear error naming the file)."""
    state = load_file(str(weights_file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights_file}: does not match the model "
                         f"(missing {len(missing)} keys, e.g. {missing[:3]}; "
                         f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}). "
                         "Was it saved from another --model_name or --head?")


def load_trainer_state(ckpt: Path) -> dict:
    # weights_only=True: never unpickle arbitrary objects from a file on disk.
    return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)


def prune_checkpoints(ckpt_root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints; return the deleted ones."""
    checkpoints = list_checkpoints(ckpt_root)
    doomed = checkpoints[:-keep] if keep > 0 else checkpoints
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
