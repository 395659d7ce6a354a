"""Fetching the official SQuAD files into a data folder, verified against known sha256 sums.

    squad-bench prepare-data --version 2.0 --data_dir squad            # download
    squad-bench prepare-data --version 2.0 --data_dir squad --from DIR # copy (offline)

Each file is streamed into a temporary name inside the data folder while it is
hashed, and renamed to its final name only when the hash matches; a mismatch or
an interrupted transfer leaves nothing behind. A file already present with the
right hash is kept as is, one with a wrong hash is fetched again. ``--from``
also accepts ``<name>.gz``, which is decompressed and the *decompressed* bytes
are checked; a corrupt one (bad data, truncated, wrong checksum) is a PrepareError
naming it.

``find_squad_file`` is how the rest of the project locates the prepared files.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

from bench.core.data import normalize_version
from bench.core.io_utils import atomic_path, sha256_file
from bench.core.errors import BenchError, DataFileNotFound

__all__ = ["SQUAD_URL", "SQUAD_FILES", "SPLITS", "PrepareError", "squad_file_name", "prepare_squad",
           "find_squad_file"]

logger = logging.getLogger(__name__)

SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"

# sha256 of the official release files (as published on the SQuAD explorer)
SQUAD_FILES: dict[str, str] = {
    "train-v1.1.json": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    "train-v2.0.json": "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    "dev-v2.0.json": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
}

SPLITS = ("train", "dev")
DEFAULT_TIMEOUT = 30.0       # seconds without data before a download is given up
_CHUNK = 1 << 20


class PrepareError(BenchError, RuntimeError):
    """Data preparation failed; the message says what, where, and what to do about it."""


def squad_file_name(split: str, version: str) -> str:
    """``("dev", "2.0")`` -> ``"dev-v2.0.json"``."""
    if split not in SPLITS:
        raise ValueError(f"unknown SQuAD split {split!r} (expected one of {', '.join(SPLITS)})")
    return f"{split}-v{normalize_version(version)}.json"


def find_squad_file(data_dir: str | os.PathLike, split: str, version: str) -> Path:
    """``<data_dir>/{split}-v{V}.json`` (or ``.json.gz``); FileNotFoundError saying how to get it."""
    name = squad_file_name(split, version)
    data_dir = Path(data_dir)
    candidates = [data_dir / name, data_dir / f"{name}.gz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataFileNotFound(
        f"no SQuAD {normalize_version(version)} {split} file: looked for {candidates[0]} and "
        f"{candidates[1]}; run `squad-bench prepare-data --version {normalize_version(version)} "
        f"--data_dir {data_dir}` (add `--from DIR` to copy from a local folder when offline)")


def prepare_squad(version: str, data_dir: str | os.PathLike, from_dir: str | os.PathLike | None = None,
                  *, urlopen: Callable = urllib.request.urlopen,
                  timeout: float = DEFAULT_TIMEOUT) -> dict[str, Path]:
    """Make ``train-v{V}.json`` and ``dev-v{V}.json`` present and verified in ``data_dir``.

    Copies from ``from_dir`` when given, else downloads from ``SQUAD_URL`` with
    ``urlopen`` (replaceable, for tests). Returns ``{"train": path, "dev": path}``;
    raises PrepareError on the first failure.
    """
    version = normalize_version(version)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        name = squad_file_name(split, version)
        target = data_dir / name
        if not _needs_fetching(target, SQUAD_FILES[name]):
            paths[split] = target
            continue
        if from_dir is not None:
            _copy_verified(Path(from_dir), name, target)
        else:
            _download_verified(version, name, target, data_dir, urlopen, timeout)
        paths[split] = target
    return paths


def _needs_fetching(target: Path, expected_sha: str) -> bool:
    if not target.is_file():
        return True
    actual = sha256_file(target)
    if actual == expected_sha:
        logger.info("%s: already present with the expected sha256, skipped", target)
        return False
    logger.warning("%s: present but its sha256 is %s, not %s; fetching it again",
                   target, actual, expected_sha)
    return True


def _copy_verified(from_dir: Path, name: str, target: Path) -> None:
    plain, packed = from_dir / name, from_dir / f"{name}.gz"
    if plain.is_file():
        source, opener = plain, open
    elif packed.is_file():
        source, opener = packed, gzip.open
    else:
        raise PrepareError(f"--from {from_dir}: neither {plain} nor {packed} exists")
    logger.info("copying %s -> %s", source, target)
    try:
        with opener(source, "rb") as stream:
            _write_verified(stream, target, SQUAD_FILES[name], str(source))
    except (OSError, EOFError, zlib.error) as exc:    # unreadable file; truncated, corrupt or bad-CRC gzip
        raise PrepareError(f"could not read {source}: {exc}") from None


def _download_verified(version: str, name: str, target: Path, data_dir: Path,
                       urlopen: Callable, timeout: float) -> None:
    url = SQUAD_URL + name
    logger.info("downloading %s -> %s", url, target)
    try:
        with urlopen(url, timeout=timeout) as response:
            _write_verified(response, target, SQUAD_FILES[name], url)
    except (OSError, http.client.HTTPException) as exc:   # URLError, HTTPError and timeouts are OSErrors
        # a plain URLError says little beyond its reason; HTTPError's own text has the status code
        reason = exc.reason if type(exc) is urllib.error.URLError else exc
        urls = " and ".join(SQUAD_URL + squad_file_name(split, version) for split in SPLITS)
        raise PrepareError(
            f"could not download {url} ({reason}); SQuAD {version} needs {urls}: fetch them where "
            f"there is network access and run `squad-bench prepare-data --version {version} "
            f"--data_dir {data_dir} --from DIR`") from None


def _write_verified(stream: BinaryIO, target: Path, expected_sha: str, source: str) -> None:
    """Copy ``stream`` to ``target`` through a temporary file, keeping it only if the sha256 matches."""
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected_sha:
            # raising inside atomic_path removes the temporary file; target stays as it was
            raise PrepareError(f"{source}: sha256 is {digest.hexdigest()}, expected {expected_sha} for "
                               f"{target.name}; nothing was written")
    logger.info("%s: written, sha256 verified", target)
