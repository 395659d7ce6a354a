"""Checkpoint folders, framework-free: layout, atomic staging, listing, pruning.

``<output_dir>/checkpoints/update_<N>/`` holds::

    model.safetensors      the QA model's parameters, in the PyTorch backend's names
                           (the MXNet backend converts to and from them)
    <trainer state file>   optimizer, scheduler, loss scaler, RNG states: the backend's own
                           format, loadable without unpickling code (named in meta.json)
    meta.json              {update, epoch, update_in_epoch, train_seconds, skipped_updates, resumed_from,
                            trainer_state, backend, head, files: {name: sha256}, complete: true}

A folder is assembled under a temporary name (``.update_<N>.<random>``) and renamed into place,
so a crash mid-save never leaves a folder that ``--resume`` would trust; a staging folder left by
a killed run is removed at the next start (``clean_staging``). ``files`` records the sha256 of
every file at save time: ``verify_checkpoint`` checks them before a checkpoint is loaded
(``--resume``, evaluation), and ``newest_intact_checkpoint`` skips damaged ones. Checkpoints
saved before hashes were recorded still load, with a warning that they cannot be verified.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bench.core.errors import BenchError
from bench.core.io_utils import atomic_write_json, sha256_file

__all__ = ["TrainPosition", "staged_checkpoint", "list_checkpoints", "prune_checkpoints", "read_meta",
           "MODEL_FILE", "require_safetensors", "without_backbone_prefix", "DamagedCheckpoint",
           "verify_checkpoint", "newest_intact_checkpoint", "clean_staging", "read_checkpoint_file",
           "checkpoint_folders"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
_CKPT_PATTERN = re.compile(r"^update_(\d+)$")
_STAGING_PATTERN = re.compile(r"^\.update_\d+\.")


class DamagedCheckpoint(BenchError, ValueError):
    """A checkpoint file whose bytes are not the ones saved (or cannot be read); the message names it."""


@dataclass
class TrainPosition:
    update: int = 0            # optimizer updates done in total
    epoch: int = 0             # epoch in progress
    update_in_epoch: int = 0   # updates done inside that epoch
    # The run so far, carried across --resume so that results.json describes the whole run.
    train_seconds: float = 0.0          # training time of every segment up to this point
    skipped_updates: int = 0            # float16 overflow: steps skipped by the loss scaler
    resumed_from: list[int] = field(default_factory=list)   # the update of each resume


@contextlib.contextmanager
def staged_checkpoint(ckpt_root: Path, position: TrainPosition, *, trainer_state_file: str,
                      backend: str, head: str | None = None) -> Iterator[Path]:
    """Yield a staging folder to write ``MODEL_FILE`` and the trainer state into; on success,
    write meta.json (with each file's sha256) and rename the folder to ``update_<N>``
    (replacing an older one)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"update_{position.update}"
    staging = Path(tempfile.mkdtemp(prefix=f".update_{position.update}.", dir=ckpt_root))
    try:
        yield staging
        files = {path.name: _synced_sha256(path) for path in sorted(staging.iterdir()) if path.is_file()}
        atomic_write_json(staging / META_FILE, {**asdict(position), "trainer_state": trainer_state_file,
                                                "backend": backend, "head": head, "files": files,
                                                "complete": True})
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        _sync_folder(ckpt_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _synced_sha256(path: Path) -> str:
    """The file's sha256, after flushing its bytes to disk (the folder's rename must not outrun them)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return sha256_file(path)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_meta(ckpt: Path) -> dict | None:
    try:
        meta = json.loads((ckpt / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(ckpt: Path) -> bool:
    meta = read_meta(ckpt)
    return bool(meta and meta.get("complete")) and (ckpt / MODEL_FILE).is_file() \
        and (ckpt / str(meta.get("trainer_state", ""))).is_file()


def checkpoint_folders(ckpt_root: Path) -> list[Path]:
    """Every ``update_<N>`` folder, complete or not, oldest first (staging folders are not among them)."""
    if not ckpt_root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in ckpt_root.iterdir()
             if (match := _CKPT_PATTERN.match(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written (staging) folders are ignored."""
    return [path for path in checkpoint_folders(ckpt_root) if _is_complete(path)]


def clean_staging(ckpt_root: Path) -> list[Path]:
    """Remove the staging folders (``.update_<N>.*``) a killed run left in ``ckpt_root``; return them.
    Call it only while holding the output folder (no other run can be saving into it)."""
    if not ckpt_root.is_dir():
        return []
    removed = [path for path in ckpt_root.iterdir() if _STAGING_PATTERN.match(path.name) and path.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------------------- integrity
_warned_unverifiable: set[Path] = set()


def verify_checkpoint(ckpt: Path) -> bool:
    """Check every file of ``ckpt`` against the sha256 recorded when it was saved.

    True: verified. False: saved before hashes were recorded (warned once per folder; it still
    loads). Raises ``DamagedCheckpoint`` naming the file that is missing or whose bytes changed.
    """
    meta = read_meta(ckpt)
    if meta is None:
        raise DamagedCheckpoint(f"checkpoint {ckpt / META_FILE} is missing or unreadable: the checkpoint is damaged")
    recorded = meta.get("files")
    if not isinstance(recorded, dict) or not recorded:
        if ckpt not in _warned_unverifiable:
            _warned_unverifiable.add(ckpt)
            logger.warning("checkpoint %s was saved without file hashes (by an older version): it cannot be "
                           "verified, loading it as it is", ckpt)
        return False
    for name, expected in sorted(recorded.items()):
        path = ckpt / name
        if not path.is_file():
            raise DamagedCheckpoint(f"checkpoint file {path} is missing: the checkpoint is damaged")
        if sha256_file(path) != expected:
            raise DamagedCheckpoint(f"checkpoint file {path} is damaged: its sha256 differs from the one recorded "
                                    f"when it was saved")
    return True


def newest_intact_checkpoint(ckpt_root: Path, what: str = "--resume") -> Path | None:
    """The newest checkpoint that passes ``verify_checkpoint`` (None: there is none at all).

    Each damaged one passed over is warned about, naming the file; when every checkpoint is
    damaged, ``DamagedCheckpoint`` names each damaged file.
    """
    checkpoints = list_checkpoints(ckpt_root)
    _warn_about_unlisted(ckpt_root, checkpoints)
    damaged: list[str] = []
    for ckpt in reversed(checkpoints):
        try:
            verify_checkpoint(ckpt)
        except DamagedCheckpoint as exc:
            damaged.append(str(exc))
            logger.warning("%s: %s; trying the previous checkpoint", what, exc)
            continue
        return ckpt
    if damaged:
        raise DamagedCheckpoint(f"{what}: no intact checkpoint in {ckpt_root}: " + "; ".join(damaged))
    return None


def _warn_about_unlisted(ckpt_root: Path, listed: list[Path]) -> None:
    """``update_<N>`` folders that ``list_checkpoints`` skipped (meta.json or a file missing): say so."""
    for path in checkpoint_folders(ckpt_root):
        if path not in listed:
            logger.warning("ignoring %s: its meta.json or a file it names is missing or unreadable", path)


def read_checkpoint_file(path: Path, load: Callable[[str], object]) -> object:
    """``load(str(path))``, with any failure to parse the file reported as ``DamagedCheckpoint`` naming it
    (safetensors alone says "incomplete metadata" without a path)."""
    try:
        return load(str(path))
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 -- each format's parser raises its own exception types
        raise DamagedCheckpoint(f"{path} cannot be read ({type(exc).__name__}: {exc}): the file is damaged or "
                                f"not in the expected format") from None


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
