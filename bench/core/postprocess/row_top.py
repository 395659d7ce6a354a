"""The ``k`` largest values of every row of a 2-D array, ascending: the row searches of
``context_topk`` and ``window_search`` need only these, never a whole sorted row.

Why in parts: numpy 1.26's row sort (x86-simd-sort on AVX-512 CPUs) sorts a row of up to 128
values inside vector registers, about 1.6 ns a value, but takes a slower path for longer rows
(6.4 ns a value at 256, 9 ns at 400; 12,232 rows, AMD EPYC with AVX-512). The ``k`` largest of a
row are the ``k`` largest of the ``k`` largest of its parts, so a longer row is cut into equal
parts of at most 128 values, each part sorted and cut to its ``k`` largest, and the survivors are
searched again: 2.4-4x faster than ``np.sort`` for rows of 200-400 values and ``k`` of 21-40.
Without SIMD sorting (numpy 1.26 on AVX2-only CPUs) the parts still mean fewer comparisons
(not measured there).

Values compare as ``np.sort`` orders them (NaN largest), and the result equals
``np.sort(values, axis=1)[:, -k:]`` exactly.
"""
from __future__ import annotations

import numpy as np

__all__ = ["top_sorted"]

_FAST_ROW = 128     # the longest row numpy sorts on its fast path


def top_sorted(values: np.ndarray, k: int) -> np.ndarray:
    """(n, k): the k largest values of each row of the (n, c) ``values``, ascending; 1 <= k <= c."""
    n, c = values.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}], got {k}")
    while c > _FAST_ROW and k <= _FAST_ROW // 2:        # a pass leaves at most c / 2 + 64 values
        parts = -(-c // _FAST_ROW)
        size = -(-c // parts)
        values = _padded(values, parts * size)
        keep = min(k, size)
        values = np.sort(values.reshape(n * parts, size), axis=1)[:, size - keep:].reshape(n, parts * keep)
        c = parts * keep
    return np.sort(values, axis=1)[:, c - k:]


def _padded(values: np.ndarray, width: int) -> np.ndarray:
    """``values`` widened to ``width`` columns with the dtype's lowest value: padding can be among
    a row's k largest only where real values equal it, so the values returned are the same."""
    n, c = values.shape
    if width == c:
        return values
    lowest = -np.inf if values.dtype.kind == "f" else np.iinfo(values.dtype).min
    padded = np.full((n, width), lowest, dtype=values.dtype)
    padded[:, :c] = values
    return padded
