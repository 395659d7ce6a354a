"""``Features``: all windows of a dataset as columns.

Storage is columnar and ragged: the tokens of every window are concatenated in
flat arrays, and ``row_starts[i]:row_starts[i+1]`` slices window ``i``. This
keeps 100k+ training windows compact (no padding stored) and makes the cache a
single ``.npz``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bench.core.features.layout import FeatureParams
from bench.core.features.ragged import as_indices, ragged_gather

__all__ = ["Features", "TOKEN_COLUMNS", "WINDOW_COLUMNS"]


@dataclass
class Features:
    """All windows of a dataset. ``n`` = number of windows, ``T`` = total tokens.

    Per window (shape ``(n,)``):
        example_index   int32  index into ``SquadDataset.examples``
        row_starts      int64  shape ``(n+1,)``; window i is flat[row_starts[i]:row_starts[i+1]]
        context_start   int32  position of the first context token inside the window
        start_positions int32  label: answer's first token (window-relative), cls_index if none
        end_positions   int32  label: answer's last token (window-relative), cls_index if none
        is_impossible   bool   label: True when the window does not contain the whole answer
                               or the question is unanswerable
    cls_index is always 0 (the first token of every window).

    Per token (shape ``(T,)`` / ``(T, 2)``):
        input_ids       int32
        token_type_ids  int8   0 for question side, 1 for context side (all 0 for "roberta" style)
        offsets         int32 (T, 2)  character span [start, end) in the example's context for
                               context tokens, (-1, -1) for question and special tokens
        is_max_context  bool   token_is_max_context: the window in which this context token
                               has the most surrounding context (False for non-context tokens)

    Added by the builder (optional, so code that assembles Features by hand need not supply it):
        context_token_start  int32 (n,) or None  index, in the tokenization of the whole context,
                               of the window's first context token (the window's place in the context)
    """
    example_index: np.ndarray
    row_starts: np.ndarray
    context_start: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    is_impossible: np.ndarray
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray
    is_max_context: np.ndarray
    params: FeatureParams

    cls_index: int = 0
    context_token_start: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.example_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.row_starts).astype(np.int32)

    @property
    def context_lengths(self) -> np.ndarray:
        """Context tokens per window (everything between ``context_start`` and the final separator)."""
        return (self.lengths - self.context_start - 1).astype(np.int32)

    def window(self, i: int) -> slice:
        return slice(int(self.row_starts[i]), int(self.row_starts[i + 1]))

    def select(self, indices: Sequence[int] | np.ndarray) -> Features:
        """The windows at ``indices`` (any order, repeats allowed, or a boolean mask), as new Features."""
        indices = as_indices(indices, len(self))
        lengths = self.lengths[indices].astype(np.int64)
        row_starts = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_starts[1:])
        tokens = ragged_gather(self.row_starts[:-1][indices], lengths, row_starts)
        return replace(
            self,
            example_index=self.example_index[indices], row_starts=row_starts,
            context_start=self.context_start[indices], start_positions=self.start_positions[indices],
            end_positions=self.end_positions[indices], is_impossible=self.is_impossible[indices],
            input_ids=self.input_ids[tokens], token_type_ids=self.token_type_ids[tokens],
            offsets=self.offsets[tokens], is_max_context=self.is_max_context[tokens],
            context_token_start=(None if self.context_token_start is None
                                 else self.context_token_start[indices]))


# Per-window and per-token columns, as stored in the cache (params and cls_index travel separately).
WINDOW_COLUMNS = ("example_index", "context_start", "start_positions", "end_positions", "is_impossible",
                  "context_token_start")
TOKEN_COLUMNS = ("input_ids", "token_type_ids", "offsets", "is_max_context")
