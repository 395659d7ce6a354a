"""``load_or_build_features``: features cached in one ``.npz`` file per exact set of inputs.

The file name holds a hash of everything the features depend on (data, question ids, tokenizer,
parameters, train/eval), the file holds that key too, and it is written atomically. A file that
cannot be read, is inconsistent, or holds another key is reported and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.features.build import build_features
from bench.core.features.columns import TOKEN_COLUMNS, WINDOW_COLUMNS, Features
from bench.core.features.layout import FeatureParams, validate_params
from bench.core.features.tokenization import tokenizer_fingerprint
from bench.core.io_utils import atomic_path

__all__ = ["FEATURES_FORMAT_VERSION", "examples_fingerprint", "features_cache_key", "features_cache_path",
           "load_or_build_features"]

# The package's one logger name (as before the split into modules), so log lines read the same.
logger = logging.getLogger("bench.core.features")

# Bump whenever building or the file layout changes, so old cache files are rebuilt, not reused.
FEATURES_FORMAT_VERSION = 1


def examples_fingerprint(examples) -> str:
    """Hash of the question ids in order: tells a subset or reordering of the same file apart.

    (The file's content is covered by its sha256; hashing every text here would cost as much
    as a quarter of the cache load.)
    """
    joined = "\n".join(ex.qid for ex in examples)
    return hashlib.sha256(f"{len(examples)}\n{joined}".encode()).hexdigest()


def features_cache_key(examples, tokenizer, params: FeatureParams, *, is_training: bool,
                       data_sha256: str) -> dict:
    """Everything the built features depend on, as a JSON-able dict."""
    return {"format_version": FEATURES_FORMAT_VERSION, "data_sha256": data_sha256,
            "examples": examples_fingerprint(examples),
            "tokenizer": tokenizer_fingerprint(tokenizer, params.input_style),
            "params": asdict(params), "is_training": bool(is_training)}


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def features_cache_path(cache_dir, key: dict, params: FeatureParams, *, is_training: bool) -> Path:
    digest = hashlib.sha256(_key_text(key).encode("utf-8")).hexdigest()[:16]
    kind = "train" if is_training else "eval"
    return Path(cache_dir) / f"features-{kind}-{params.input_style}-{params.max_seq_length}-{digest}.npz"


def load_or_build_features(examples: list, tokenizer, params: FeatureParams, *, is_training: bool,
                           data_sha256: str, cache_dir, overwrite_cache: bool = False,
                           progress: bool = False) -> Features:
    """Features from the cache file for exactly these inputs, or built and cached.

    A file that cannot be read, is inconsistent, or was written for another key is reported
    with a warning and rebuilt. ``cache_dir=None`` builds without caching.
    """
    if cache_dir is None:
        return build_features(examples, tokenizer, params, is_training=is_training, progress=progress)
    validate_params(params)
    key = features_cache_key(examples, tokenizer, params, is_training=is_training, data_sha256=data_sha256)
    path = features_cache_path(cache_dir, key, params, is_training=is_training)
    if path.exists() and not overwrite_cache:
        features = _read_cache(path, key)
        if features is not None:
            (logger.info if progress else logger.debug)("loaded %d cached windows from %s", len(features), path)
            return features
    features = build_features(examples, tokenizer, params, is_training=is_training, progress=progress)
    _write_cache(path, key, features)
    return features


def _text_array(text: str) -> np.ndarray:
    """UTF-8 bytes as a uint8 array, so JSON fits in an npz read with allow_pickle=False."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write_cache(path: Path, key: dict, features: Features) -> None:
    arrays: dict[str, Any] = {name: getattr(features, name) for name in WINDOW_COLUMNS + TOKEN_COLUMNS}
    arrays["row_starts"] = features.row_starts
    arrays["cls_index"] = np.array(features.cls_index, dtype=np.int64)
    arrays["key_json"] = _text_array(_key_text(key))
    arrays["params_json"] = _text_array(json.dumps(asdict(features.params), sort_keys=True))
    # Why a file object: np.savez appends ".npz" to a path that lacks it, which would miss the rename.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_cache(path: Path, key: dict) -> Features | None:
    """The cached Features, or None (with a warning) if the file is damaged or holds another key."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            stored_key = bytes(stored["key_json"]).decode("utf-8")
            if stored_key != _key_text(key):
                logger.warning("features cache %s was built for other inputs (%s differ); rebuilding",
                               path, _key_differences(stored_key, key))
                return None
            columns = {name: stored[name] for name in WINDOW_COLUMNS + TOKEN_COLUMNS + ("row_starts",)}
            params = FeatureParams(**json.loads(bytes(stored["params_json"]).decode("utf-8")))
            features = Features(params=params, cls_index=int(stored["cls_index"]), **columns)
        _check_consistent(features)
        return features
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        logger.warning("features cache %s is unreadable or damaged (%s: %s); rebuilding",
                       path, type(exc).__name__, exc)
        return None


def _key_differences(stored_key: str, key: dict) -> str:
    """Names of the key fields that differ, for the warning (the whole key is too long to read)."""
    try:
        stored = json.loads(stored_key)
    except ValueError:
        return "all fields"
    if not isinstance(stored, dict):
        return "all fields"
    return ", ".join(sorted(name for name in set(stored) | set(key) if stored.get(name) != key.get(name)))


def _check_consistent(features: Features) -> None:
    """Raise ValueError unless the columns agree with one another (catches damage the zip CRC cannot)."""
    n, rows = len(features), features.row_starts
    total = len(features.input_ids)
    problems = []
    if rows.shape != (n + 1,) or rows[0] != 0 or rows[-1] != total or np.any(np.diff(rows) < 0):
        raise ValueError("inconsistent columns: row_starts")
    for name in WINDOW_COLUMNS:
        if getattr(features, name) is not None and getattr(features, name).shape != (n,):
            problems.append(name)
    for name in TOKEN_COLUMNS:
        if len(getattr(features, name)) != total:
            problems.append(name)
    if features.offsets.shape != (total, 2):
        problems.append("offsets")
    if not problems and np.any(features.context_start >= features.lengths):
        problems.append("context_start")
    if not problems and np.any(np.maximum(features.start_positions, features.end_positions) >= features.lengths):
        problems.append("start_positions/end_positions")
    if problems:
        raise ValueError(f"inconsistent columns: {', '.join(problems)}")
