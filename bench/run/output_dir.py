"""The output folder of a run: claimed before anything is written, released when the run ends.

``claim_output_dir(config)`` (the stage driver calls it on the main process, before the run log
opens) checks, in this order, and raises ``OutputDirError`` with one line naming the folder:

1. ``--resume`` and ``--overwrite_output_dir`` together (they contradict each other);
2. that --output_dir (or, when it does not exist yet, the folder it would be created in), its
   ``checkpoints/`` and the feature cache folder (--cache_dir) can be written, by creating and
   removing a file in each, so that a read-only folder fails now rather than at the first save;
3. the lock: ``<output_dir>/.squad-bench.lock`` is created with O_CREAT|O_EXCL and holds the pid
   and host of the run. Another run's lock refuses this run, naming its pid; a lock whose pid is
   dead on this host (a killed run) is taken over with a warning;
4. reuse: a fresh training run (--do_train without --resume) refuses a folder that holds another
   run's checkpoints or results, unless --overwrite_output_dir, which removes those first
   (``PREVIOUS_OUTPUTS``).

Then, holding the lock, it removes what a killed run left behind: checkpoint staging folders
(``bench.run.checkpoints.clean_staging``) and feature-cache temporary files older than
``STALE_TMP_SECONDS`` (the cache folder may be shared with runs beside this one: a younger
temporary file may be theirs, being written).

The returned ``OutputDirClaim`` is a context manager: leaving it releases the lock (exceptions
included), and when the run failed and the folder was created by this run and holds nothing but
its log, removes the folder again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from bench.core.errors import BenchError
from bench.run.checkpoints import checkpoint_folders, clean_staging
from bench.run.helpers import feature_cache_dir

__all__ = ["LOCK_FILE", "PREVIOUS_OUTPUTS", "STALE_TMP_SECONDS", "OutputDirError", "OutputDirClaim",
           "claim_output_dir"]

logger = logging.getLogger("bench.run")

LOCK_FILE = ".squad-bench.lock"
RUN_LOG = "run.log"
# What a run writes into its folder; --overwrite_output_dir removes these before starting.
PREVIOUS_OUTPUTS = ("checkpoints", "eval", "results.json", "train_results.json", "best_results.json",
                    "predictions.json", "nbest_predictions.json", "na_prob.json", "train_log.jsonl", RUN_LOG)
# Which of them mean "another run lives here" (a fresh training run would mix with it).
_RUN_MARKERS = ("results.json", "train_results.json")
STALE_TMP_SECONDS = 15 * 60


class OutputDirError(BenchError, OSError):
    """--output_dir (or --cache_dir) cannot be used by this run; the message names the folder and why."""


# ---------------------------------------------------------------------------------------- the claim
class OutputDirClaim:
    """The main process's hold on --output_dir for the run's lifetime (see the module docstring)."""

    def __init__(self, output_dir: Path, *, created: Path | None, lock: Path | None):
        self.output_dir, self.created, self.lock = output_dir, created, lock
        self.notes: list[tuple[int, str]] = []     # (level, message): logged once the run log is open

    def log_notes(self) -> None:
        for level, message in self.notes:
            logger.log(level, message)
        self.notes.clear()

    def __enter__(self) -> "OutputDirClaim":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(failed=exc_type is not None)

    def release(self, *, failed: bool = False) -> None:
        if self.lock is not None:
            _release_lock(self.lock)
            self.lock = None
        if failed and self.created is not None and _holds_only_a_log(self.created):
            shutil.rmtree(self.created, ignore_errors=True)


def claim_output_dir(config, *, is_main: bool = True) -> OutputDirClaim:
    """Check, create and lock --output_dir (main process only; elsewhere a claim that holds nothing)."""
    output_dir = Path(config.output_dir)
    if not is_main:
        return OutputDirClaim(output_dir, created=None, lock=None)
    if config.resume and config.overwrite_output_dir:
        raise OutputDirError(f"--resume continues the run in {output_dir}, --overwrite_output_dir replaces it: "
                             f"pass one of them")
    check_writable(config)
    created = _topmost_missing(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    claim = OutputDirClaim(output_dir, created=created, lock=None)
    try:
        claim.lock = _take_lock(output_dir / LOCK_FILE, claim.notes)
        if config.do_train and not config.resume:
            _refuse_or_clear_previous_run(output_dir, overwrite=config.overwrite_output_dir, notes=claim.notes)
        _clean_leftovers(config, output_dir, claim.notes)
    except BaseException:
        claim.release(failed=True)
        raise
    return claim


# ---------------------------------------------------------------------------------------- writability
def check_writable(config) -> None:
    """OutputDirError naming the first folder of the run that cannot be written."""
    output_dir = Path(config.output_dir)
    _require_writable(output_dir, f"--output_dir {output_dir}")
    checkpoints = output_dir / "checkpoints"
    if checkpoints.exists():
        _require_writable(checkpoints, f"--output_dir {output_dir}: its checkpoints folder {checkpoints}")
    cache = feature_cache_dir(config)
    label = f"--cache_dir {cache}" if config.cache_dir else f"the feature cache folder {cache} (see --cache_dir)"
    _require_writable(cache, label)


def _require_writable(folder: Path, label: str) -> None:
    """Create and remove a file in ``folder``, or, when it does not exist yet, in the folder it would be
    created in (access() is not enough: it ignores read-only mounts and always says yes to root)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"{label}: {existing} is not a folder")
    where = "" if existing == folder else f" (it would be created in {existing})"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as exc:
        raise OutputDirError(f"{label}: cannot write in {existing}{where}: {exc.strerror or exc}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _topmost_missing(folder: Path) -> Path | None:
    """The outermost folder that ``folder.mkdir(parents=True)`` will create (None: it exists)."""
    missing = None
    while not folder.exists() and folder != folder.parent:
        missing, folder = folder, folder.parent
    return missing


def _holds_only_a_log(folder: Path) -> bool:
    """Nothing but folders, the run log and the lock below ``folder``: a run that wrote nothing."""
    for _, _, files in os.walk(folder):
        if any(name not in (RUN_LOG, LOCK_FILE) for name in files):
            return False
    return True


# ---------------------------------------------------------------------------------------- the lock
def _take_lock(lock: Path, notes: list) -> Path:
    """Create ``lock`` exclusively with this process's pid and host; take over a stale one."""
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is None:
                continue                                # released meanwhile: try again
            if not _is_stale(holder):
                raise OutputDirError(
                    f"--output_dir {lock.parent} is in use by another run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, lock file {lock}): wait for it to end, or use another --output_dir"
                    + ("" if holder.get("host") == socket.gethostname() else
                       "; if no run on that host uses the folder, delete the lock file")) from None
            if _remove_if_unchanged(lock, holder):
                notes.append((logging.WARNING, f"took over the stale lock {lock} of pid {holder.get('pid')} on "
                                               f"{holder.get('host')}: that process no longer runs"))
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        return lock
    raise OutputDirError(f"--output_dir {lock.parent}: could not take the lock file {lock} (another run keeps "
                         f"taking it)")


def _read_lock(lock: Path) -> dict | None:
    """The lock's content; None when it is gone. A lock being written (empty or partial) reads as
    held by an unknown process until it is a minute old, then as stale."""
    try:
        text = lock.read_text(encoding="utf-8")
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            return holder
    except ValueError:
        pass
    return {"pid": "unknown", "host": "unknown", "unreadable": True, "age": age, "text": text}


def _is_stale(holder: dict) -> bool:
    if holder.get("unreadable"):
        return holder["age"] > 60
    if holder.get("host") != socket.gethostname():
        return False                    # another machine's process: nothing here can tell
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:             # alive, another user's
        return False
    return False


def _remove_if_unchanged(lock: Path, holder: dict) -> bool:
    """Remove the stale ``lock`` unless another run replaced it meanwhile: it is first renamed aside (one
    taker wins), then compared; a fresh lock renamed by mistake is linked back (never over another)."""
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    try:
        now = _read_lock(aside)
        same = now is not None and {k: now.get(k) for k in ("pid", "host", "text")} == \
            {k: holder.get(k) for k in ("pid", "host", "text")}
        if not same:
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
        return same
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)


def _release_lock(lock: Path) -> None:
    """Remove ``lock`` if it is still this process's."""
    holder = _read_lock(lock)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


# ---------------------------------------------------------------------------------------- reuse
def _refuse_or_clear_previous_run(output_dir: Path, *, overwrite: bool, notes: list) -> None:
    found = _previous_run_outputs(output_dir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise OutputDirError(f"--output_dir {output_dir} holds another run's outputs ({shown}): pass --resume to "
                             f"continue that run, or --overwrite_output_dir to replace it")
    removed = []
    for name in PREVIOUS_OUTPUTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    notes.append((logging.WARNING, f"--overwrite_output_dir: removed the previous run's {', '.join(removed)} "
                                   f"from {output_dir}"))


def _previous_run_outputs(output_dir: Path) -> list[str]:
    """Another run's checkpoints (``checkpoints/update_<N>``) and result files in ``output_dir``."""
    found = [f"checkpoints/{path.name}" for path in checkpoint_folders(output_dir / "checkpoints")]
    return found + [name for name in _RUN_MARKERS if (output_dir / name).exists()]


# ---------------------------------------------------------------------------------------- leftovers
def _clean_leftovers(config, output_dir: Path, notes: list) -> None:
    """Staging folders of an interrupted checkpoint save; stale feature-cache temporary files."""
    for path in clean_staging(output_dir / "checkpoints"):
        notes.append((logging.WARNING, f"removed {path}: a checkpoint save that an interrupted run left unfinished"))
    cache = feature_cache_dir(config)
    if not cache.is_dir():
        return
    cutoff = time.time() - STALE_TMP_SECONDS
    for path in cache.glob(".features-*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                notes.append((logging.WARNING, f"removed {path}: a feature-cache file an interrupted run left "
                                               f"half-written"))
