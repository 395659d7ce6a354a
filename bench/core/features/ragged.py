"""Index arithmetic on ragged rows: rows of varying length stored back to back in flat arrays."""
from __future__ import annotations

import numpy as np

__all__ = ["as_indices", "positions_in_runs", "ragged_gather", "starts_of"]


def as_indices(indices, n: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (n,):
            raise IndexError(f"boolean mask of shape {indices.shape} for {n} windows")
        return np.flatnonzero(indices)
    indices = indices.astype(np.int64, copy=False).reshape(-1)
    if len(indices) and (indices.min() < -n or indices.max() >= n):
        raise IndexError(f"window index out of range for {n} windows")
    return np.where(indices < 0, indices + n, indices)


def ragged_gather(source_starts: np.ndarray, lengths: np.ndarray, row_starts: np.ndarray) -> np.ndarray:
    """Flat source index of every token when rows of ``lengths`` tokens are copied from ``source_starts``."""
    total = int(row_starts[-1])
    shift = np.repeat(np.asarray(source_starts, np.int64) - row_starts[:-1], lengths)
    return np.arange(total, dtype=np.int64) + shift


def starts_of(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts


def positions_in_runs(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., lengths[0]-1, 0, 1, ..., lengths[1]-1, ... as one int64 array."""
    packed = starts_of(lengths)
    return np.arange(int(packed[-1]), dtype=np.int64) - np.repeat(packed[:-1], lengths)
