"""One sort ranks every example's spans and null entry together; each keeps its n_best_size best spans.

The valid spans of all windows of an example are ranked by score, best first; ties are broken by
window index, then start, then end (all ascending). For SQuAD 2.0 the example's null entry
(its lowest window null score) is placed after every span whose score is >= it.

How it is vectorized
--------------------
* Ranking: every span gets a uint32 key that sorts float32 scores best
  first; each example's null entry gets the key of the smallest float32 >=
  its null score, which places it after exactly the spans scoring >= it. One
  ``np.sort`` of unique uint64 values (example, key, index in (window,
  start, end) order) ranks spans and null entries together, and the index
  comes back in the low bits: no stable argsort, no separate merge (with
  more than 64 bits needed, ``np.lexsort`` does the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.postprocess.sort_keys import descending_key
from bench.core.postprocess.window_search import Spans

__all__ = ["Entries", "rank_entries"]


def _in_tie_order(spans: Spans) -> Spans:
    """The spans in (window, start, end) order, the tie-break for equal scores. Spans from the
    ``candidates_from_*`` grids already come in this order."""
    width = int(max(spans.start.max(initial=0), spans.end.max(initial=0))) + 1
    tie = (spans.window * width + spans.start) * width + spans.end
    if np.all(tie[1:] > tie[:-1]):
        return spans
    return spans.select(np.argsort(tie, kind="stable"))


def _float32_at_least(values: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 value: a float32 score s is >= v iff s >= this.
    (Beyond the float32 range that is +inf, or -FLOAT32_MAX, which keeps the same property.)"""
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    return np.where(rounded < values, np.nextafter(rounded, np.float32(np.inf)), rounded)


def _sorted_items(example: np.ndarray, key: np.ndarray, n_examples: int) -> np.ndarray:
    """Item indices sorted by (example, key, index)."""
    index_bits = max(len(key) - 1, 1).bit_length()
    if max(n_examples - 1, 1).bit_length() + 32 + index_bits > 64:
        return np.lexsort((np.arange(len(key)), key, example))
    # Packed with the index, every key is unique: a plain (SIMD) value sort orders them, much faster
    # than a stable argsort, and the item index comes back in the low bits.
    packed = (example.astype(np.uint64) << np.uint64(32 + index_bits)) \
        | (key.astype(np.uint64) << np.uint64(index_bits)) | np.arange(len(key), dtype=np.uint64)
    return (np.sort(packed) & np.uint64((1 << index_bits) - 1)).astype(np.int64)


def _n_best_cut(example: np.ndarray, is_null: np.ndarray, n_best_size: int, n_examples: int) -> np.ndarray | None:
    """For entries sorted by example then rank: keep every null entry and each example's first
    n_best_size spans. None when nothing is cut."""
    spans_so_far = np.cumsum(~is_null)                  # spans up to and including each entry
    counts = np.bincount(example, minlength=n_examples)
    spans_before_example = np.concatenate([[0], spans_so_far])[np.cumsum(counts) - counts]
    span_rank = spans_so_far - 1 - spans_before_example[example]
    if span_rank.max(initial=-1) < n_best_size:
        return None
    return is_null | (span_rank < n_best_size)


@dataclass
class Entries:
    """Every example's n-best entries (spans and null entries) in output order; arrays (t,)."""
    example_starts: np.ndarray      # (n_examples + 1,): example x's entries are [example_starts[x], ...[x+1])
    window: np.ndarray              # int32, -1 for a null entry
    start: np.ndarray               # int32, -1 for a null entry
    end: np.ndarray                 # int32, -1 for a null entry
    char_start: np.ndarray          # int64, 0 for a null entry
    char_end: np.ndarray            # int64, 0 for a null entry
    start_logit: np.ndarray         # float64; the null score for a null entry
    end_logit: np.ndarray           # float64; 0.0 for a null entry
    score: np.ndarray               # float64
    is_null: np.ndarray             # bool


def rank_entries(spans: Spans, example_null: np.ndarray | None, n_best_size: int, n_examples: int) -> Entries:
    """Rank each example's spans and null entry (if ``example_null``) in one sort; keep n_best_size spans.

    A null entry sorts right after every span scoring >= it: its key is that of the smallest
    float32 >= the null score, and it comes after the spans, so it loses ties.
    """
    spans = _in_tie_order(spans)
    m = len(spans.score)
    if example_null is None:
        null_examples, null_score = np.zeros(0, dtype=np.int64), np.zeros(0)
    else:
        null_examples = np.flatnonzero(np.isfinite(example_null))
        null_score = example_null[null_examples]
    example = np.concatenate([spans.example, null_examples])
    key = np.concatenate([descending_key(spans.score), descending_key(_float32_at_least(null_score))])
    items = _sorted_items(example, key, n_examples)
    kept = _n_best_cut(example[items], items >= m, n_best_size, n_examples)
    if kept is not None:
        items = items[kept]
    example_starts = np.zeros(n_examples + 1, dtype=np.int64)
    np.cumsum(np.bincount(example[items], minlength=n_examples), out=example_starts[1:])

    def column(span_values, null_values, dtype):
        """Span values then null values (an array or one value), picked in entry order."""
        null_values = np.broadcast_to(np.asarray(null_values, dtype=dtype), (len(null_examples),))
        return np.concatenate([np.asarray(span_values, dtype=dtype), null_values])[items]

    return Entries(example_starts, window=column(spans.window, -1, np.int32),
                    start=column(spans.start, -1, np.int32), end=column(spans.end, -1, np.int32),
                    char_start=column(spans.char_start, 0, np.int64), char_end=column(spans.char_end, 0, np.int64),
                    start_logit=column(spans.start_logit, null_score, np.float64),
                    end_logit=column(spans.end_logit, 0.0, np.float64),
                    score=column(spans.score, null_score, np.float64), is_null=items >= m)
