"""Candidates: ``C`` candidate (start, end) pairs per window, and the windows' null scores.

1. Candidates, ``SpanCandidates``: ``C`` candidate (start, end) pairs per window,
   window-relative token indices with their start and end logits.

   * ``candidates_from_logits`` (basic heads: one start and one end logit per
     token): the ``n_best_size`` best starts and the ``n_best_size`` best ends
     among the window's *context* tokens, all pairs, so ``C = n_best_size**2``.
     Unlike ``utils_qa`` the top-k is taken over context tokens only, so a
     question token with a high logit never crowds out a context token.
     Ties go to the lower position. Missing picks (a window with fewer than
     ``n_best_size`` context tokens) are padded with start = end = -1 and
     logit -inf; a logit of -inf is never picked. A NaN or +inf logit at a
     context token raises ValueError; logits at other positions (question,
     special tokens, padding past the window) are never read. The search
     itself is ``bench.core.postprocess.context_topk``.
   * ``candidates_from_topk`` (conditional heads, GluonNLP/XLNet style): the
     model's own ``K`` starts and, per start, ``K'`` ends; ``C = K * K'``.

   Both keep only the small factors (``PairGrid``); the (n, C) arrays of a
   ``SpanCandidates`` are built on first access, which ``postprocess`` never
   needs. Hand-built candidates pass the (n, C) arrays themselves.

2. Null scores, ``(n,)``: the score of the null answer (the CLS token) per
   window. ``null_scores_from_logits`` gives ``s[:, 0] + e[:, 0]``; a
   conditional head supplies its own (e.g. its answer-class logit).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from bench.core.postprocess.context_topk import context_blocks, context_top_k

__all__ = ["PairGrid", "SpanCandidates", "candidates_from_logits", "candidates_from_topk", "null_scores_from_logits"]


@dataclass(frozen=True)
class PairGrid:
    """The layout ``candidates_from_*`` produce: C = K * K', column ``a * K' + b`` pairs start
    ``starts[:, a]`` with end ``ends[:, b]`` (ends (n, K')) or ``ends[:, a, b]`` (ends (n, K, K')).

    ``postprocess`` checks and scores the candidates by broadcasting these small factors instead
    of reading (n, C) arrays.
    """
    starts: np.ndarray          # (n, K) int
    start_logits: np.ndarray    # (n, K) float32
    ends: np.ndarray            # (n, K') or (n, K, K') int
    end_logits: np.ndarray      # same shape as ends, float32
    in_context: bool = False    # every position >= 0 is known to be a context token of its window

    def rows(self, rows: slice) -> PairGrid:
        """The grid of the windows in ``rows``."""
        return replace(self, starts=self.starts[rows], start_logits=self.start_logits[rows], ends=self.ends[rows],
                       end_logits=self.end_logits[rows])

    def per_start(self, values: np.ndarray) -> np.ndarray:
        """(n, K) values of the starts as (n, C) columns."""
        return np.repeat(values, self.ends.shape[-1], axis=1)

    def per_end(self, values: np.ndarray) -> np.ndarray:
        """Values shaped like ``ends`` as (n, C) columns."""
        n, k = self.starts.shape
        return np.tile(values, (1, k)) if values.ndim == 2 else values.reshape(n, -1)


class SpanCandidates:
    """``C`` candidate spans per window; token indices are window-relative, -1 marks padding.

    start, end: (n, C) int; start_logit, end_logit: (n, C) float32. score = start_logit + end_logit.
    Build by hand with ``SpanCandidates(start, end, start_logit, end_logit)`` (``grid`` stays None).
    ``candidates_from_logits``/``candidates_from_topk`` use ``from_grid``: only the small factors
    are stored, and the four (n, C) arrays are made from them on first access.
    """

    def __init__(self, start, end, start_logit, end_logit, grid: PairGrid | None = None):
        shapes = {np.shape(a) for a in (start, end, start_logit, end_logit)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"SpanCandidates arrays must share one (n, C) shape, got {sorted(shapes)}")
        # Instance attributes take precedence over the cached properties below.
        self.start, self.end, self.start_logit, self.end_logit = start, end, start_logit, end_logit
        self.grid = grid

    @classmethod
    def from_grid(cls, grid: PairGrid) -> SpanCandidates:
        candidates = cls.__new__(cls)
        candidates.grid = grid
        return candidates

    @cached_property
    def start(self) -> np.ndarray:
        return self.grid.per_start(self.grid.starts)

    @cached_property
    def end(self) -> np.ndarray:
        return self.grid.per_end(self.grid.ends)

    @cached_property
    def start_logit(self) -> np.ndarray:
        return self.grid.per_start(self.grid.start_logits)

    @cached_property
    def end_logit(self) -> np.ndarray:
        return self.grid.per_end(self.grid.end_logits)

    def __len__(self) -> int:
        return self.grid.starts.shape[0] if self.grid is not None else self.start.shape[0]

    @property
    def num_candidates(self) -> int:
        if self.grid is not None:
            return self.grid.starts.shape[1] * self.grid.ends.shape[-1]
        return self.start.shape[1]

    def __repr__(self) -> str:
        kind = "grid" if self.grid is not None else "hand-built"
        return f"SpanCandidates({len(self)} windows x {self.num_candidates} candidates, {kind})"


def _as_logits(array, name: str, n_windows: int) -> np.ndarray:
    logits = np.asarray(array, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != n_windows:
        raise ValueError(f"{name} must be ({n_windows} windows, positions), got shape {logits.shape}")
    return logits


def candidates_from_logits(start_logits, end_logits, features, n_best_size: int = 20) -> SpanCandidates:
    """All pairs of the ``n_best_size`` best start and end context tokens of each window.

    ``start_logits``/``end_logits``: (n, L) with L >= every window's length; only the logits of
    context tokens are read. Each window's picks are in ascending position order.
    """
    if n_best_size < 1:
        raise ValueError("n_best_size must be >= 1")
    start_logits = _as_logits(start_logits, "start_logits", len(features))
    end_logits = _as_logits(end_logits, "end_logits", len(features))
    if start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits {start_logits.shape} and end_logits {end_logits.shape} differ")
    blocks = list(context_blocks(features, start_logits.shape[1]))
    starts, start_values = context_top_k(start_logits, blocks, n_best_size, "start_logits")
    ends, end_values = context_top_k(end_logits, blocks, n_best_size, "end_logits")
    return SpanCandidates.from_grid(PairGrid(starts, start_values, ends, end_values, in_context=True))


def candidates_from_topk(start_top_index, start_top_logit, end_top_index, end_top_logit) -> SpanCandidates:
    """Conditional head: start_top_* (n, K); end_top_*[i, a, b] = b-th best end given start a: (n, K, K')."""
    starts = np.asarray(start_top_index).astype(np.int32)
    ends = np.asarray(end_top_index).astype(np.int32)
    start_values = np.asarray(start_top_logit, dtype=np.float32)
    end_values = np.asarray(end_top_logit, dtype=np.float32)
    n, k = starts.shape
    if ends.ndim != 3 or ends.shape[:2] != (n, k) or start_values.shape != starts.shape \
            or end_values.shape != ends.shape:
        raise ValueError(f"expected start_top_* (n, K) and end_top_* (n, K, K'), got {starts.shape}, "
                         f"{start_values.shape}, {ends.shape}, {end_values.shape}")
    return SpanCandidates.from_grid(PairGrid(starts, start_values, ends, end_values))


def null_scores_from_logits(start_logits, end_logits) -> np.ndarray:
    """(n,) float32 null (CLS) score per window: start_logits[:, 0] + end_logits[:, 0]."""
    return np.asarray(start_logits, dtype=np.float32)[:, 0] + np.asarray(end_logits, dtype=np.float32)[:, 0]
