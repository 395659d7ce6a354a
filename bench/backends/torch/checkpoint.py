"""PyTorch checkpoints: safetensors weights + a weights-only training state (layout: ``bench.run.checkpoints``).

``trainer_state.pt`` holds the optimizer, scheduler, loss scaler and RNG states and
the position — tensors and plain Python values only, loaded with ``weights_only=True``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.run.checkpoints import MODEL_FILE, TrainPosition, read_checkpoint_file, staged_checkpoint

__all__ = ["save_checkpoint", "load_model_weights", "load_trainer_state", "capture_rng_state",
           "restore_rng_state", "TRAINER_STATE_FILE"]

TRAINER_STATE_FILE = "trainer_state.pt"


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


def save_checkpoint(ckpt_root: Path, model, optimizer, scheduler, scaler, position: TrainPosition, *,
                    head: str | None = None) -> Path:
    """Write ``ckpt_root/update_<N>`` atomically (files hashed in meta.json) and return its path."""
    with staged_checkpoint(ckpt_root, position, trainer_state_file=TRAINER_STATE_FILE, backend="torch",
                           head=head) as staging:
        save_file(_state_dict_for_saving(model), str(staging / MODEL_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": capture_rng_state(), "position": asdict(position)}, staging / TRAINER_STATE_FILE)
    return ckpt_root / f"update_{position.update}"


def load_model_weights(model: torch.nn.Module, weights_file: Path, label: str | None = None) -> None:
    """Load a safetensors file into ``model``; every key must match. A missing, pickled or mismatched
    file is a ModelSourceError (one line) starting with ``label`` (default: the file's path)."""
    from bench.run.checkpoints import require_safetensors
    from bench.run.model_source import ModelSourceError

    label = label or str(weights_file)
    state = read_checkpoint_file(require_safetensors(weights_file, label, ModelSourceError), load_file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelSourceError(f"{label}: does not match the model "
                               f"(missing {len(missing)} keys, e.g. {missing[:3]}; "
                               f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}). "
                               "Was it saved from another --model_name or --head?")


def load_trainer_state(ckpt: Path) -> dict:
    # weights_only=True: never unpickle arbitrary objects from a file on disk.
    return read_checkpoint_file(ckpt / TRAINER_STATE_FILE,
                                lambda path: torch.load(path, map_location="cpu", weights_only=True))
