"""The ``k`` largest values of every row of a 2-D array: the row searches of ``context_topk`` and
``window_search`` need only these (and a few exact ranks among them), never a whole sorted row.

Two ways, chosen by what numpy's own dispatch can do on this CPU (``ROW_SORT_IS_SIMD``):

* SIMD row sort (numpy >= 2 on AVX2, numpy 1.26 only with AVX-512): a row of up to 128 values
  sorts inside vector registers, about 1.6 ns a value, but longer rows take a slower path (6.4 ns
  a value at 256, 9 ns at 400; numpy 1.26, 12,232 rows, AMD EPYC with AVX-512). The ``k`` largest
  of a row are the ``k`` largest of the ``k`` largest of its parts, so a longer row is cut into
  equal parts of at most 128 values, each part sorted and cut to its ``k`` largest, and the
  survivors are searched again: 2.4-4x faster than ``np.sort`` for rows of 200-400 values and
  ``k`` of 21-40. Every column of the result is exact (ascending).
* No SIMD sort (numpy 1.26 on an AVX2-only CPU: sorting is scalar there): ``np.partition``
  (introselect) is 3-4x faster than sorting, in parts or not (measured with numpy's AVX-512
  dispatch switched off, ``NPY_DISABLE_CPU_FEATURES``). Only the asked-for ranks are exact.

Values compare as ``np.sort`` orders them (NaN largest).
"""
from __future__ import annotations

import numpy as np

__all__ = ["top_block", "ROW_SORT_IS_SIMD"]

_FAST_ROW = 128     # the longest row numpy's SIMD sort keeps in registers


def _row_sort_is_simd() -> bool:
    """Whether numpy dispatches its 32-bit sorts to x86-simd-sort on this CPU."""
    try:
        from numpy.core._multiarray_umath import __cpu_features__ as features   # numpy 1.x
    except ImportError:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # numpy 2.x
    numpy_2 = int(np.__version__.split(".")[0]) >= 2
    return bool(features.get("AVX512_SKX")) or (numpy_2 and bool(features.get("AVX2")))


ROW_SORT_IS_SIMD = _row_sort_is_simd()


def top_block(values: np.ndarray, k: int, exact: tuple[int, ...] = (), *,
              simd_sort: bool | None = None) -> np.ndarray:
    """(n, k): the k largest values of each row of the (n, c) ``values``; 1 <= k <= c.

    Column ``j`` for ``j`` in ``exact`` holds exactly the row's ``(k - j)``-th largest value, as
    ``np.sort(values, axis=1)[:, c - k + j]`` would; the other columns hold the rest of the k
    largest in no promised order (ascending when the SIMD sort path is taken). ``simd_sort``
    overrides the choice (tests).
    """
    n, c = values.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}], got {k}")
    if not all(0 <= j < k for j in exact):
        raise ValueError(f"exact columns must be in [0, {k}), got {exact}")
    if ROW_SORT_IS_SIMD if simd_sort is None else simd_sort:
        return _top_by_sorting_parts(values, k)
    if k == c:
        return np.sort(values, axis=1) if exact else values.copy()
    return np.partition(values, [c - k + j for j in sorted(set(exact))] or [c - k], axis=1)[:, c - k:]


def _top_by_sorting_parts(values: np.ndarray, k: int) -> np.ndarray:
    n, c = values.shape
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
