"""Small I/O helpers shared by every module: atomic writes and content hashes.

Every JSON, checkpoint and cache file the project writes goes through
``atomic_write_*``: the data lands in a temporary file in the same folder and
is renamed over the target only once complete, so an interrupted run never
leaves a truncated file that a later run could mistake for a good one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "sha256_file", "read_json_file"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, *, indent: int | None = 2,
                      sort_keys: bool = False) -> None:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept readable) atomically."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=sort_keys)
    atomic_write_text(target, text + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_file(path: str | os.PathLike, error_cls: Callable[[str], Exception] = ValueError) -> Any:
    """Load a JSON file (plain or ``.gz``); raise ``error_cls`` naming the file on failure, a
    corrupt gzip body (zlib.error), truncation (EOFError) and a bad checksum included."""
    import gzip
    import zlib

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error_cls(f"{path}: file not found") from None
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise error_cls(f"{path}: not a readable gzip file ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise error_cls(f"{path}: not valid JSON ({exc})") from None
