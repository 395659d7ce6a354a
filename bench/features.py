"""Examples -> model inputs: windows over the context, labels, offsets, cache.

(Data model fixed here; building and caching are filled in by the features work.)

Storage is columnar and ragged: the tokens of every window are concatenated in
flat arrays, and ``row_starts[i]:row_starts[i+1]`` slices window ``i``. This
keeps 100k+ training windows compact (no padding stored) and makes the cache a
single ``.npz``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureParams:
    max_seq_length: int = 512
    max_query_length: int = 64
    doc_stride: int = 128
    stride_mode: str = "step"        # "step": distance between window starts (BERT/GluonNLP);
                                     # "overlap": tokens shared by consecutive windows (Hugging Face)
    input_style: str = "bert"        # "bert" or "roberta" (see bench.models.ModelSpec)


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

    def __len__(self) -> int:
        return len(self.example_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.row_starts).astype(np.int32)

    def window(self, i: int) -> slice:
        return slice(int(self.row_starts[i]), int(self.row_starts[i + 1]))
