"""Each window's best valid candidates: the only ones that can make an example's n-best list.

A candidate is valid iff start and end lie inside the window (``0 <= start <= end < window
length``), both are context tokens (``offsets != -1``), ``end - start + 1 <= max_answer_length``,
and the start token ``is_max_context`` in that window. Its score is start_logit + end_logit in
float32. ``window_best_spans`` keeps, per window, the valid candidates scoring at least the
window's ``n_best_size``-th best (and a few that tie with it up to the key's column bits); a
valid one scoring NaN or +inf raises ValueError.

How it is vectorized
--------------------
* Pairs: validity and scores of the (n, K, K') pairs come from broadcasting
  the grid's factors (``PairGrid``), with per-token facts looked up only for
  the picked tokens. Each score becomes a uint32 key that sorts like the
  float, with its low bits replaced by the pair's column; an invalid pair's
  key is its column alone, below every score's. The keys of a window are thus
  distinct, which matters: numpy 1.26's row sort runs about 4-5x slower on rows
  that are mostly one repeated value (as -inf for invalid pairs was). The
  2 * n_best_size best keys of each window (``row_top``: rows of 400 keys
  sorted in parts of 100 on numpy's SIMD short-row sort, or partitioned where
  numpy has no SIMD sort) give the ``n_best_size``-th best key; the candidates whose
  key, column bits dropped, reaches it go on: every one scoring at least the
  ``n_best_size``-th best score, and a few that tie with it up to those bits.
  Invalid pairs are zeroed by multiplying with the validity mask, far faster
  than ``np.copyto(..., where=)``. This runs on chunks of windows, so the
  temporaries stay in cache. Hand-built candidates take the same checks on
  their (n, C) arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from bench.core.postprocess.candidates import PairGrid, SpanCandidates
from bench.core.postprocess.row_top import top_block
from bench.core.postprocess.sort_keys import LOWEST_FINITE_KEY, POS_INF_KEY, ascending_key, column_bits

__all__ = ["Spans", "window_best_spans"]


# ------------------------------------------------------------------------------------------ validity
def _tokens_allowed(features, positions: np.ndarray, rows: slice, *, max_context: bool,
                    in_context: bool = False) -> np.ndarray:
    """For window-relative ``positions`` (shape (n, ...)) of the windows ``rows``: inside the window
    and a context token (and, with ``max_context``, in its max-context window). Only the given
    tokens are looked up; ``in_context`` says the positions >= 0 are known context tokens."""
    shape = (-1,) + (1,) * (positions.ndim - 1)
    if in_context:
        inside = positions >= 0
        if not max_context:
            return inside
    else:
        lengths = np.diff(features.row_starts)[rows].reshape(shape)
        inside = (positions >= 0) & (positions < lengths)
    first_token = features.row_starts[:-1][rows].reshape(shape)
    tokens = np.where(inside, first_token + positions, 0)       # any legal index; ``inside`` masks it
    allowed = inside
    if not in_context:
        # np.take on the flat (T * 2) offsets: much faster than fancy indexing the (T, 2) array.
        allowed &= np.take(features.offsets.reshape(-1), 2 * tokens) >= 0
    if max_context:
        allowed &= np.take(features.is_max_context, tokens)
    return allowed


def _valid_pairs_generic(features, start, end, rows: slice, max_answer_length: int) -> np.ndarray:
    """(n, C) bool: the hand-built candidates (start, end) of the windows ``rows`` obey every rule."""
    start, end = np.asarray(start).astype(np.int64), np.asarray(end).astype(np.int64)
    valid = (end - start).astype(np.uint64) < max_answer_length       # 0 <= end - start < max (negatives wrap)
    valid &= _tokens_allowed(features, start, rows, max_context=True)
    valid &= _tokens_allowed(features, end, rows, max_context=False)
    return valid


def _sentinel_grid(features, grid: PairGrid, max_answer_length: int) -> PairGrid:
    """The grid with starts and ends as small ints, and every start or end that breaks a per-token
    rule replaced by a sentinel that makes ``end - start`` negative for all its pairs: one unsigned
    comparison per pair then checks every rule (``_valid_pairs``)."""
    small = max(int(np.diff(features.row_starts).max(initial=0)), max_answer_length) < 16_000
    dtype, sentinel = (np.int16, 16_000) if small else (np.int32, 1 << 29)   # int16 halves the memory traffic
    rows = slice(None)
    start_ok = _tokens_allowed(features, grid.starts, rows, max_context=True, in_context=grid.in_context)
    end_ok = _tokens_allowed(features, grid.ends, rows, max_context=False, in_context=grid.in_context)
    return replace(grid, starts=np.where(start_ok, grid.starts, sentinel).astype(dtype),
                   ends=np.where(end_ok, grid.ends, -sentinel).astype(dtype),
                   start_logits=grid.start_logits + np.float32(0.0),     # -0.0 -> +0.0, so no score is -0.0
                   end_logits=grid.end_logits + np.float32(0.0))


def _valid_pairs(grid: PairGrid, max_answer_length: int) -> np.ndarray:
    """(n, K, K') bool: the pair obeys every validity rule; ``grid`` from ``_sentinel_grid``."""
    ends = grid.ends if grid.ends.ndim == 3 else grid.ends[:, None, :]     # 2-D: shared by every start
    span = ends - grid.starts[:, :, None]
    return span.view(np.uint16 if span.dtype == np.int16 else np.uint32) < max_answer_length


def _candidate_columns(candidates: SpanCandidates, flat: np.ndarray):
    """start, end (int), start_logit, end_logit (float32) of the candidates at flat (n * C) indices."""
    grid = candidates.grid
    if grid is None:
        start, end, start_logit, end_logit = (np.asarray(array).ravel()[flat] for array in (
            candidates.start, candidates.end, candidates.start_logit, candidates.end_logit))
    else:
        # flat = (window * K + a) * K' + b: flat indices into the raveled factors, no 2-D fancy indexing.
        k, k_end = grid.starts.shape[1], grid.ends.shape[-1]
        at_start = flat // k_end
        at_end = flat if grid.ends.ndim == 3 else (at_start // k) * k_end + (flat - at_start * k_end)
        start, start_logit = grid.starts.ravel()[at_start], grid.start_logits.ravel()[at_start]
        end, end_logit = grid.ends.ravel()[at_end], grid.end_logits.ravel()[at_end]
    return start, end, start_logit.astype(np.float32, copy=False), end_logit.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------ window winners
@dataclass
class Spans:
    """Valid spans, one entry per array element; all arrays (m,)."""
    example: np.ndarray
    window: np.ndarray
    start: np.ndarray
    end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    score: np.ndarray           # float32
    char_start: np.ndarray      # the span's text is context[char_start:char_end]
    char_end: np.ndarray

    def select(self, index: np.ndarray) -> Spans:
        return Spans(*(getattr(self, f.name)[index] for f in fields(self)))


def _might_be_nan(*logits: np.ndarray) -> bool:
    """Whether sums of these logits can be NaN: only if one is NaN or +inf (+inf + -inf)."""
    return not all(np.all(np.asarray(values) < np.inf) for values in logits)    # NaN fails the comparison


def _candidate_keys(features, candidates: SpanCandidates, checked: PairGrid | None, rows: slice,
                    max_answer_length: int, nan_possible: bool) -> np.ndarray:
    """(len(rows), C) uint32 sort keys of the candidates of the windows ``rows``: the score's
    ``ascending_key`` with its low ``column_bits(C)`` bits replaced by the column.

    The keys order a window's candidates by score up to those bits, and are distinct, because
    numpy 1.26's row sort is about 4-5x slower on rows that are mostly one repeated value. An invalid
    candidate's key is its column: below every score's key, even -inf's. ``checked``: the grid from
    ``_sentinel_grid``, or None for hand-built candidates. With ``nan_possible``, a valid candidate
    scoring NaN raises ValueError here (a valid +inf raises in ``_window_winners``).
    """
    if checked is not None:
        grid = checked.rows(rows)
        valid = _valid_pairs(grid, max_answer_length)
        end_logits = grid.end_logits if grid.end_logits.ndim == 3 else grid.end_logits[:, None, :]
        with np.errstate(over="ignore"):                              # +inf raises in _window_winners
            scores = grid.start_logits[:, :, None] + end_logits      # no -0.0: _sentinel_grid's logits have none
    else:
        valid = _valid_pairs_generic(features, candidates.start[rows], candidates.end[rows], rows,
                                     max_answer_length)
        scores = (np.asarray(candidates.start_logit[rows], np.float32)
                  + np.asarray(candidates.end_logit[rows], np.float32))
        scores += np.float32(0.0)                                    # -0.0 -> +0.0
    if nan_possible and not np.all((scores == scores) | ~valid):
        raise ValueError("candidate logits contain NaN or +inf")
    keys = ascending_key(scores, overwrite=True)
    keys &= np.uint32(~((1 << column_bits(keys[0].size)) - 1) & 0xFFFFFFFF)
    keys *= valid                               # much faster than np.copyto(..., where=~valid)
    keys |= np.arange(keys[0].size, dtype=np.uint32).reshape(keys.shape[1:])
    return keys.reshape(len(valid), -1)


def _window_winners(keys: np.ndarray, n_best_size: int) -> np.ndarray:
    """Flat indices into (n, C), window-major, then by column, of every valid candidate whose key
    (``_candidate_keys``) is at least its window's n_best_size-th best, with the column bits
    ignored: every candidate scoring at least the n_best_size-th best score, and a few that tie
    with it up to those bits. The rest could never make an example's n-best list."""
    n, c = keys.shape
    bits = column_bits(c)
    width = min(c, 2 * n_best_size)
    if c > n_best_size:
        block = top_block(keys, width, exact=(0, width - n_best_size))    # cheaper than a row sort
        top = block.max(axis=1)
        cut = block[:, width - n_best_size] >> np.uint32(bits)
        np.maximum(cut, LOWEST_FINITE_KEY >> bits, out=cut)    # -inf and invalid candidates never qualify
    else:
        top, block = keys.max(axis=1, initial=0), keys
        cut = np.full(n, LOWEST_FINITE_KEY >> bits, dtype=np.uint32)
    if n and int(top.max()) >> bits >= POS_INF_KEY >> bits:    # +inf, or a NaN above it
        raise ValueError("candidate logits contain NaN or +inf")
    threshold = (cut << np.uint32(bits))[:, None]
    if width < c and np.any(block[:, 0] >= threshold[:, 0]):  # more winners than the block holds
        return np.flatnonzero(keys >= threshold)
    columns = np.where(block >= threshold, block & np.uint32((1 << bits) - 1), np.uint32(c))
    columns.sort(axis=1)
    rows, at = np.nonzero(columns < c)
    return rows * c + columns[rows, at]


_PAIRS_PER_CHUNK = 1 << 17    # windows are scored this many pairs at a time, so the temporaries stay in cache


def window_best_spans(features, candidates: SpanCandidates, max_answer_length: int, n_best_size: int) -> Spans:
    """The valid candidates among the n_best_size best of their window (ties kept), window-major."""
    n, c = len(candidates), candidates.num_candidates
    checked = None if candidates.grid is None else _sentinel_grid(features, candidates.grid, max_answer_length)
    nan_possible = _might_be_nan(*((checked.start_logits, checked.end_logits) if checked is not None else
                                   (candidates.start_logit, candidates.end_logit)))
    step = max(1, _PAIRS_PER_CHUNK // max(c, 1))
    pieces = [_window_winners(_candidate_keys(features, candidates, checked, slice(lo, lo + step), max_answer_length,
                                              nan_possible), n_best_size) + lo * c for lo in range(0, n, step)]
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    start, end, start_logit, end_logit = _candidate_columns(candidates, flat)
    window = flat // max(c, 1)
    # Window-major, so these offset lookups walk the token arrays in order. np.take on the flat
    # (T * 2) offsets is much faster than fancy indexing the (T, 2) array.
    tokens, flat_offsets = features.row_starts[window], features.offsets.reshape(-1)
    return Spans(features.example_index[window].astype(np.int64), window, start, end, start_logit, end_logit,
                  score=start_logit + end_logit,         # the same float32 sums as the masked scores
                  char_start=np.take(flat_offsets, 2 * (tokens + start)),
                  char_end=np.take(flat_offsets, 2 * (tokens + end) + 1))
