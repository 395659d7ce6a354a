"""``batch_arrays``: model inputs for a batch of windows, padded to the batch's longest window."""
from __future__ import annotations

import numpy as np

from bench.core.features.columns import Features
from bench.core.features.ragged import as_indices, positions_in_runs, ragged_gather, starts_of

__all__ = ["batch_arrays"]


def batch_arrays(features: Features, indices, pad_id: int, round_to: int | None = None) -> dict[str, np.ndarray]:
    """A dynamically padded batch of the windows at ``indices``.

    Width L = the longest window in the batch, rounded up to a multiple of ``round_to`` (None or
    1: no rounding) but never past ``params.max_seq_length``, which no window exceeds, so rounding
    cannot ask the model for positions it does not have. ``candidate_mask`` is True on cls and
    the context tokens: the only positions an answer may start or end at.
    """
    indices = as_indices(indices, len(features))
    lengths = features.lengths[indices].astype(np.int64)
    width = int(lengths.max()) if len(indices) else 0
    if round_to and round_to > 1:
        width = max(min(-(-width // round_to) * round_to, features.params.max_seq_length), width)
    rows = np.repeat(np.arange(len(indices)), lengths)
    cols = positions_in_runs(lengths)
    source = ragged_gather(features.row_starts[:-1][indices], lengths, starts_of(lengths))

    def padded(values, fill, dtype):
        out = np.full((len(indices), width), fill, dtype=dtype)
        out[rows, cols] = values
        return out

    context_start = features.context_start[indices].astype(np.int64)[rows]
    in_context = (cols >= context_start) & (cols < lengths[rows] - 1)
    return {
        "input_ids": padded(features.input_ids[source], pad_id, np.int64),
        "token_type_ids": padded(features.token_type_ids[source], 0, np.int64),
        "attention_mask": padded(1, 0, np.int64),
        "candidate_mask": padded(in_context | (cols == features.cls_index), False, bool),
        "start_positions": features.start_positions[indices].astype(np.int64),
        "end_positions": features.end_positions[indices].astype(np.int64),
        "is_impossible": features.is_impossible[indices].astype(bool),
        "feature_index": indices.astype(np.int64),
    }
