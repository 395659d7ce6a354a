"""uint32 keys that sort float32 scores: a plain (SIMD) value sort then ranks them.

``ascending_key`` orders scores worst to best and ``descending_key`` best to worst; -0.0 ties
with +0.0. Truncated to their high bits, the keys leave room for a candidate's column
(``column_bits``), which the window search packs into them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ascending_key", "descending_key", "column_bits", "LOWEST_FINITE_KEY", "POS_INF_KEY", "MAX_COLUMN_BITS"]

_FLOAT32_MAX = np.finfo(np.float32).max


def ascending_key(scores: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """uint32 that sorts float32 ``scores`` from worst to best; -0.0 ties with +0.0, as floats do.
    Keys of NaNs lie outside [key(-inf), key(+inf)]. With ``overwrite`` the keys are made in
    ``scores``'s own buffer, which must then hold no -0.0."""
    bits = scores.view(np.uint32) if overwrite else (scores + np.float32(0.0)).view(np.uint32)
    sign_fill = (bits.view(np.int32) >> 31).view(np.uint32)
    sign_fill |= np.uint32(0x80000000)
    bits ^= sign_fill
    return bits


def descending_key(scores: np.ndarray) -> np.ndarray:
    """uint32 that sorts float32 ``scores`` from best to worst."""
    return ~ascending_key(scores)


LOWEST_FINITE_KEY = int(ascending_key(np.array([-_FLOAT32_MAX], dtype=np.float32))[0])
POS_INF_KEY = int(ascending_key(np.array([np.inf], dtype=np.float32))[0])
MAX_COLUMN_BITS = 23    # up to here the -inf, lowest finite and +inf keys stay apart once truncated


def column_bits(num_candidates: int) -> int:
    bits = max(num_candidates - 1, 1).bit_length()
    if bits > MAX_COLUMN_BITS:
        raise ValueError(f"at most 2**{MAX_COLUMN_BITS} candidates per window, got {num_candidates}")
    return bits
