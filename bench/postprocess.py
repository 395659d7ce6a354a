"""Post-processing for extractive question answering: model outputs -> answer texts.

The model scores every token of every window as a possible answer start and
end. This module turns those scores into, per question, the predicted answer
text, an n-best list and a no-answer score, in the formats the official SQuAD
evaluation reads. It is the numpy counterpart of Hugging Face's
``utils_qa.postprocess_qa_predictions`` (basic heads) and
``postprocess_qa_predictions_with_beam_search`` (conditional heads), with the
same ideas but without a Python loop over windows and span pairs.

Pipeline
--------
1. Candidates, ``SpanCandidates``: ``C`` candidate (start, end) pairs per window,
   window-relative token indices with their start and end logits.

   * ``candidates_from_logits`` (basic heads: one start and one end logit per
     token): the ``n_best_size`` best starts and the ``n_best_size`` best ends
     among the window's *context* tokens, all pairs, so ``C = n_best_size**2``.
     Unlike ``utils_qa`` the top-k is taken over context tokens only, so a
     question token with a high logit never crowds out a context token.
     Ties go to the lower position. Missing picks (a window with fewer than
     ``n_best_size`` context tokens) are padded with start = end = -1 and
     logit -inf; a logit of -inf is never picked.
   * ``candidates_from_topk`` (conditional heads, GluonNLP/XLNet style): the
     model's own ``K`` starts and, per start, ``K'`` ends; ``C = K * K'``.

2. Null scores, ``(n,)``: the score of the null answer (the CLS token) per
   window. ``null_scores_from_logits`` gives ``s[:, 0] + e[:, 0]``; a
   conditional head supplies its own (e.g. its answer-class logit).

3. ``postprocess`` ranks the candidates of all windows of a question together:

   * A candidate is valid iff start and end lie inside the window
     (``0 <= start <= end < window length``), both are context tokens
     (``offsets != -1``), ``end - start + 1 <= max_answer_length``, and the
     start token ``is_max_context`` in that window (so a span is scored by the
     window that sees the most context around it). Duplicate candidates are
     not merged.
   * score = start_logit + end_logit, added in float32 like the model's own
     arithmetic (and like ``utils_qa``, which adds numpy float32 scalars).
     A candidate scoring -inf is dropped.
   * The valid candidates of all windows of an example are ranked by score,
     best first; ties are broken by window index, then start, then end
     (all ascending). The first ``n_best_size`` are kept.
   * The text of a span is ``context[offsets[start][0]:offsets[end][1]]``.
   * The example's null score is the lowest null score of its windows.
   * SQuAD 2.0 (``version_2_with_negative``, by default
     ``dataset.version == "2.0"``): the null answer ``""`` joins the n-best
     list with the null score, placed after every span whose score is >= it
     (so it may be an (n_best_size+1)-th entry). Since null scores arrive as
     one number per window, the null entry carries all of it in
     ``start_logit`` and 0.0 in ``end_logit``; its offsets are ``[0, 0]``.
     The prediction is ``""`` iff ``null_score - best_span_score >
     null_score_diff_threshold``.
   * ``na_prob[qid] = null_score - best_span_score`` (the official script's
     "no-answer probability": only its order matters, so a score difference
     serves). An example with no valid span at all (or no window) gets
     ``NO_SPAN_NA_PROB = 1e6``: large but finite, so the JSON stays standard
     and the evaluator's threshold search still ranks it as surely
     unanswerable. For SQuAD 1.1 ``na_prob`` is filled only when null scores
     are given.
   * SQuAD 1.1 never predicts ``""`` by choice: the best valid span is the
     answer. Only an example with no valid span (e.g. every top start lies
     outside its max-context window) is answered ``""``, because there is
     nothing else to say; its n-best list is then empty.
   * ``probability``: softmax of the scores of the n-best entries (null entry
     included for 2.0).

4. ``write_predictions`` writes ``predictions.json`` (qid -> text),
   ``nbest_predictions.json`` (qid -> list of {text, probability,
   start_logit, end_logit, offsets}) and ``na_prob.json`` (qid -> float; only
   when there are na_probs), each atomically, as UTF-8 JSON.

Logits must not be NaN or +inf (ValueError); null scores must be finite.

How it is vectorized
--------------------
* Top-k per window: one row-wise ``np.sort`` of the context-masked logits
  gives every window's k-th best value; every context value >= it is a pick.
  Only windows whose k-th and (k+1)-th best values tie are redone with a
  stable sort, which keeps the lower positions.
* Validity and scores of all pairs come from broadcasting the (n, K) starts
  against the (n, K') ends (``PairGrid``, recorded by the two constructors);
  per-token facts are looked up in the ragged token columns through flat
  token indices ``row_starts[w] + position``, so no window's offsets are
  copied. Hand-built candidates without a grid take the same checks on the
  (n, C) arrays.
* Per window, one more row sort finds the ``n_best_size``-th best valid
  score; the ~n_best_size survivors per window are ranked per example by one
  stable argsort of an integer key (example, descending score) over an order
  already sorted by (window, start, end), which is exactly the tie rule.
* The null entries are slotted in and the softmax computed with
  ``np.bincount``/``np.maximum.at`` per example.
* The only per-entry Python work is the final loop that cuts the answer
  texts out of the contexts and builds the output dicts.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.io_utils import atomic_write_json

__all__ = ["SpanCandidates", "PairGrid", "QAPredictions", "NO_SPAN_NA_PROB", "candidates_from_logits",
           "candidates_from_topk", "null_scores_from_logits", "postprocess", "write_predictions"]

NO_SPAN_NA_PROB = 1e6   # na_prob of an example without any valid span: "surely no answer", JSON-safe

_NEG_INF = np.float32(-np.inf)
_FLOAT32_MAX = np.finfo(np.float32).max


# ------------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class PairGrid:
    """The layout ``candidates_from_*`` produce: C = K * K', column ``a * K' + b`` pairs start
    ``starts[:, a]`` with end ``ends[:, b]`` (ends (n, K')) or ``ends[:, a, b]`` (ends (n, K, K')).

    ``postprocess`` reads the candidates from the grid when there is one, and checks and scores
    them by broadcasting these small factors instead of reading the (n, C) arrays.
    """
    starts: np.ndarray          # (n, K) int
    start_logits: np.ndarray    # (n, K) float32
    ends: np.ndarray            # (n, K') or (n, K, K') int
    end_logits: np.ndarray      # same shape as ends, float32


@dataclass
class SpanCandidates:
    """``C`` candidate spans per window; token indices are window-relative, -1 marks padding.

    start, end: (n, C) int; start_logit, end_logit: (n, C) float32. score = start_logit + end_logit.
    ``grid`` is set by ``candidates_from_logits``/``candidates_from_topk``; leave it None when
    building candidates by hand.
    """
    start: np.ndarray
    end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    grid: PairGrid | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        shapes = {a.shape for a in (self.start, self.end, self.start_logit, self.end_logit)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"SpanCandidates arrays must share one (n, C) shape, got {sorted(shapes)}")

    def __len__(self) -> int:
        return self.start.shape[0]

    @property
    def num_candidates(self) -> int:
        return self.start.shape[1]


@dataclass
class QAPredictions:
    predictions: dict[str, str]        # qid -> answer text ("" = no answer)
    nbest: dict[str, list[dict]]       # qid -> [{text, probability, start_logit, end_logit, offsets}], best first
    na_prob: dict[str, float]          # qid -> null score - best span score (empty for 1.1 without null scores)


# ------------------------------------------------------------------------------------------ candidates
def _as_logits(array, name: str, n_windows: int) -> np.ndarray:
    logits = np.asarray(array, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != n_windows:
        raise ValueError(f"{name} must be ({n_windows} windows, positions), got shape {logits.shape}")
    return logits


def _context_penalty(features, width: int) -> np.ndarray:
    """(n, width) float32: 0 at the window's context tokens, -inf elsewhere (question, specials, padding)."""
    lengths = np.diff(features.row_starts)
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"logits have {width} positions but a window has {lengths.max()} tokens")
    n = len(lengths)
    # Flat position in the (n, width) grid of every token: its window's row offset plus its position.
    shift = np.repeat(np.arange(n, dtype=np.int64) * width - features.row_starts[:-1], lengths)
    grid = np.arange(len(features.offsets), dtype=np.int64) + shift
    penalty = np.full(n * width, _NEG_INF, dtype=np.float32)
    penalty[grid[features.offsets[:, 0] >= 0]] = 0.0
    return penalty.reshape(n, width)


def _top_positions(logits: np.ndarray, penalty: np.ndarray, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, k) int32 of the k best context logits per row, ascending, -1-padded at the end,
    and their logits (-inf for padding). Ties go to the lower position; -inf is never picked."""
    n, width = logits.shape
    masked = logits + penalty
    ordered = np.sort(masked, axis=1)          # a SIMD row sort: cheaper than argpartition here
    if n and not np.all(ordered[:, -1] < np.inf):     # NaN sorts last and fails the comparison
        raise ValueError(f"{name} contains NaN or +inf")
    k_found = min(k, width)
    kth_best = ordered[:, width - k_found]
    flat = np.flatnonzero(masked >= np.maximum(kth_best, -_FLOAT32_MAX)[:, None])    # -inf never qualifies
    rows = flat // width
    # A row whose k-th and (k+1)-th best tie has more qualifiers than places: redo it exactly.
    tied = np.zeros(n, dtype=bool)
    if k_found < width:
        tied = (ordered[:, width - k_found - 1] == kth_best) & (kth_best > _NEG_INF)
    keep = ~tied[rows]
    positions = np.full((n, k), -1, dtype=np.int32)
    positions[rows[keep], _rank_in_group(rows)[keep]] = flat[keep] - rows[keep] * width
    if tied.any():
        _redo_tied_rows(positions, masked, np.flatnonzero(tied), k_found)
    picked = np.take_along_axis(logits, np.maximum(positions, 0), axis=1)
    return positions, np.where(positions >= 0, picked, _NEG_INF)


def _redo_tied_rows(positions: np.ndarray, masked: np.ndarray, rows: np.ndarray, k: int) -> None:
    """Exact picks for rows with ties at the cut: a stable sort by descending value keeps lower positions."""
    best = np.argsort(-masked[rows], axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(masked[rows], best, axis=1) > _NEG_INF
    never = np.iinfo(np.int32).max                  # sorts padding after the real picks
    best = np.sort(np.where(found, best, never), axis=1)
    positions[rows, :k] = np.where(best == never, -1, best)


def candidates_from_logits(start_logits, end_logits, features, n_best_size: int = 20) -> SpanCandidates:
    """All pairs of the ``n_best_size`` best start and end context tokens of each window.

    ``start_logits``/``end_logits``: (n, L) with L >= every window's length; positions past a
    window's length are ignored. Each window's picks are in ascending position order.
    """
    if n_best_size < 1:
        raise ValueError("n_best_size must be >= 1")
    start_logits = _as_logits(start_logits, "start_logits", len(features))
    end_logits = _as_logits(end_logits, "end_logits", len(features))
    if start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits {start_logits.shape} and end_logits {end_logits.shape} differ")
    penalty = _context_penalty(features, start_logits.shape[1])
    starts, start_values = _top_positions(start_logits, penalty, n_best_size, "start_logits")
    ends, end_values = _top_positions(end_logits, penalty, n_best_size, "end_logits")
    k = n_best_size
    return SpanCandidates(start=np.repeat(starts, k, axis=1), end=np.tile(ends, (1, k)),
                          start_logit=np.repeat(start_values, k, axis=1), end_logit=np.tile(end_values, (1, k)),
                          grid=PairGrid(starts, start_values, ends, end_values))


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
    k_end = ends.shape[2]
    return SpanCandidates(start=np.repeat(starts, k_end, axis=1), end=ends.reshape(n, k * k_end),
                          start_logit=np.repeat(start_values, k_end, axis=1),
                          end_logit=end_values.reshape(n, k * k_end),
                          grid=PairGrid(starts, start_values, ends, end_values))


def null_scores_from_logits(start_logits, end_logits) -> np.ndarray:
    """(n,) float32 null (CLS) score per window: start_logits[:, 0] + end_logits[:, 0]."""
    return np.asarray(start_logits, dtype=np.float32)[:, 0] + np.asarray(end_logits, dtype=np.float32)[:, 0]


# ------------------------------------------------------------------------------------------ validity
def _token_tables(features) -> tuple[np.ndarray, np.ndarray]:
    """Flat per-token flags: may start a span (context and max context), may end one (context)."""
    context = features.offsets[:, 0] >= 0
    return context & features.is_max_context, context


def _tokens_allowed(features, positions: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[token] for window-relative ``positions`` of shape (n, ...); False outside the window."""
    lengths = np.diff(features.row_starts).reshape((-1,) + (1,) * (positions.ndim - 1))
    first_token = features.row_starts[:-1].reshape(lengths.shape)
    inside = (positions >= 0) & (positions < lengths)
    # mode="clip" keeps out-of-window indices legal; ``inside`` masks them anyway.
    return inside & np.take(table, first_token + positions, mode="clip")


def _masked_scores_generic(features, candidates: SpanCandidates, max_answer_length: int) -> np.ndarray:
    """(n, C) float32 scores, -inf where the candidate breaks a validity rule."""
    start, end = candidates.start.astype(np.int64), candidates.end.astype(np.int64)
    start_table, end_table = _token_tables(features)
    valid = (end - start).astype(np.uint64) < max_answer_length       # 0 <= end - start < max (negatives wrap)
    valid &= _tokens_allowed(features, start, start_table)
    valid &= _tokens_allowed(features, end, end_table)
    scores = candidates.start_logit.astype(np.float32) + candidates.end_logit.astype(np.float32)
    return np.where(valid, scores, _NEG_INF)


def _masked_scores_grid(features, grid: PairGrid, max_answer_length: int) -> np.ndarray:
    """Same as ``_masked_scores_generic``, by broadcasting the grid's factors.

    A start or end that breaks a per-token rule is replaced by a sentinel that makes
    ``end - start`` negative, so one unsigned comparison checks everything pairwise.
    """
    start_table, end_table = _token_tables(features)
    small = max(int(np.diff(features.row_starts).max(initial=0)), max_answer_length) < 16_000
    dtype, sentinel = (np.int16, 16_000) if small else (np.int32, 1 << 29)   # int16 halves the memory traffic
    starts = np.where(_tokens_allowed(features, grid.starts, start_table), grid.starts, sentinel).astype(dtype)
    ends = np.where(_tokens_allowed(features, grid.ends, end_table), grid.ends, -sentinel).astype(dtype)
    end_logits = grid.end_logits
    if ends.ndim == 2:                          # ends shared by every start of the window
        ends, end_logits = ends[:, None, :], end_logits[:, None, :]
    span = ends - starts[:, :, None]
    valid = span.view(np.uint16 if small else np.uint32) < max_answer_length
    scores = grid.start_logits[:, :, None] + end_logits
    return np.where(valid, scores, _NEG_INF).reshape(len(starts), -1)


def _candidate_columns(candidates: SpanCandidates, flat: np.ndarray):
    """start, end, start_logit, end_logit of the candidates at flat (n * C) indices."""
    grid = candidates.grid
    if grid is None:
        return tuple(array.ravel()[flat] for array in
                     (candidates.start, candidates.end, candidates.start_logit, candidates.end_logit))
    window, column = np.divmod(flat, candidates.num_candidates)
    a, b = np.divmod(column, grid.ends.shape[-1])
    end_at = (window, b) if grid.ends.ndim == 2 else (window, a, b)
    return grid.starts[window, a], grid.ends[end_at], grid.start_logits[window, a], grid.end_logits[end_at]


# ------------------------------------------------------------------------------------------ ranking
def _rank_in_group(sorted_groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    m = len(sorted_groups)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    return np.arange(m) - np.repeat(first, np.diff(np.r_[first, m]))


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """uint32 that sorts float32 ``scores`` from best to worst (-0.0 ties with +0.0, as floats do)."""
    bits = (scores + np.float32(0.0)).view(np.uint32)
    sign_fill = (bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000)
    return ~(bits ^ sign_fill)


def _window_winners(masked: np.ndarray, n_best_size: int) -> np.ndarray:
    """Flat indices into (n, C), window-major, of every valid candidate scoring at least its window's
    n_best_size-th best. Ties at the cut are all kept, so the exact ranking sees every contender."""
    n, c = masked.shape
    if c > n_best_size:
        ordered = np.sort(masked, axis=1)
        top = ordered[:, -1]
        cut = np.maximum(ordered[:, c - n_best_size], -_FLOAT32_MAX)
    else:
        top = masked.max(axis=1, initial=_NEG_INF)
        cut = np.full(n, -_FLOAT32_MAX, dtype=np.float32)
    if n and not np.all(top < np.inf):
        raise ValueError("candidate logits contain NaN or +inf")
    return np.flatnonzero(masked >= cut[:, None])


@dataclass
class _Ranked:
    """The kept spans, ordered by example then rank; all arrays (m,)."""
    example: np.ndarray
    window: np.ndarray
    start: np.ndarray
    end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    score: np.ndarray


def _rank_spans(features, candidates: SpanCandidates, max_answer_length: int, n_best_size: int) -> _Ranked:
    if candidates.grid is not None:
        masked = _masked_scores_grid(features, candidates.grid, max_answer_length)
    else:
        masked = _masked_scores_generic(features, candidates, max_answer_length)
    flat = _window_winners(masked, n_best_size)
    window = flat // candidates.num_candidates
    start, end, start_logit, end_logit = _candidate_columns(candidates, flat)
    start, end = start.astype(np.int64), end.astype(np.int64)
    score = masked.ravel()[flat]
    example = features.example_index[window].astype(np.int64)

    # The final sort is stable on (example, descending score), so equal keys must already stand in
    # (window, start, end) order. flat is window-major; inside a window, sort unless already so.
    width = int(max(start.max(initial=0), end.max(initial=0))) + 1
    tie = (window * width + start) * width + end
    order = np.arange(len(flat)) if np.all(tie[1:] > tie[:-1]) else np.argsort(tie, kind="stable")
    key = (example[order] << 32) | _descending_key(score[order]).astype(np.int64)
    order = order[np.argsort(key, kind="stable")]
    order = order[_rank_in_group(example[order]) < n_best_size]
    return _Ranked(example=example[order], window=window[order], start=start[order], end=end[order],
                   start_logit=start_logit[order], end_logit=end_logit[order], score=score[order])


def _example_null_scores(features, null_scores: np.ndarray, n_examples: int) -> np.ndarray:
    """(n_examples,) float64: lowest null score over each example's windows (+inf without windows)."""
    best = np.full(n_examples, np.inf)
    np.minimum.at(best, features.example_index, null_scores)
    return best


# ------------------------------------------------------------------------------------------ assembly
@dataclass
class _Entries:
    """n-best entries of every example in output order (spans and null entries); all arrays (t,)."""
    char_start: np.ndarray
    char_end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    probability: np.ndarray
    group_starts: np.ndarray        # (n_examples + 1,): example x's entries are [group_starts[x], group_starts[x+1])


def _assemble_entries(features, ranked: _Ranked, example_null: np.ndarray | None, n_examples: int) -> _Entries:
    """Slot the null entries (if any) in among the ranked spans and compute the probabilities."""
    span_score = ranked.score.astype(np.float64)
    if example_null is None:
        has_null = np.zeros(n_examples, dtype=bool)
        before_null = np.ones(len(span_score), dtype=bool)
    else:
        has_null = np.isfinite(example_null)
        before_null = span_score >= example_null[ranked.example]
    group_starts = np.zeros(n_examples + 1, dtype=np.int64)
    np.cumsum(np.bincount(ranked.example, minlength=n_examples) + has_null, out=group_starts[1:])
    total = int(group_starts[-1])

    # A span moves one slot down when the null entry ranks before it.
    span_at = group_starts[ranked.example] + _rank_in_group(ranked.example) + ~before_null
    tokens = features.row_starts[ranked.window]
    char_start, char_end = np.zeros(total, dtype=np.int64), np.zeros(total, dtype=np.int64)
    start_logit, end_logit, score = np.zeros(total), np.zeros(total), np.zeros(total)
    char_start[span_at] = features.offsets[tokens + ranked.start, 0]
    char_end[span_at] = features.offsets[tokens + ranked.end, 1]
    start_logit[span_at], end_logit[span_at], score[span_at] = ranked.start_logit, ranked.end_logit, span_score
    if example_null is not None:
        null_examples = np.flatnonzero(has_null)
        spans_before = np.bincount(ranked.example, weights=before_null, minlength=n_examples).astype(np.int64)
        null_at = group_starts[null_examples] + spans_before[null_examples]
        start_logit[null_at] = score[null_at] = example_null[null_examples]

    example = np.repeat(np.arange(n_examples), np.diff(group_starts))
    return _Entries(char_start=char_start, char_end=char_end, start_logit=start_logit, end_logit=end_logit,
                    probability=_group_softmax(score, example, n_examples), group_starts=group_starts)


def _group_softmax(score: np.ndarray, example: np.ndarray, n_examples: int) -> np.ndarray:
    top = np.full(n_examples, -np.inf)
    np.maximum.at(top, example, score)
    exps = np.exp(score - top[example])
    return exps / np.bincount(example, weights=exps, minlength=n_examples)[example]


@contextmanager
def _gc_paused():
    """Building ~250k small dicts and lists would trigger the cyclic GC hundreds of times for nothing
    (they form no cycles); one collection afterwards does the same work."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _nbest_lists(dataset, entries: _Entries) -> list[list[dict]]:
    """The output dicts, one list per example: the only per-entry Python work of the module."""
    char_start, char_end = entries.char_start.tolist(), entries.char_end.tolist()
    probability = entries.probability.tolist()
    start_logit, end_logit = entries.start_logit.tolist(), entries.end_logit.tolist()
    bounds = entries.group_starts.tolist()
    lists = []
    with _gc_paused():
        for x, example in enumerate(dataset.examples):
            lo, hi, context = bounds[x], bounds[x + 1], example.context
            lists.append([{"text": context[a:b], "probability": p, "start_logit": s, "end_logit": e,
                           "offsets": [a, b]}
                          for a, b, p, s, e in zip(char_start[lo:hi], char_end[lo:hi], probability[lo:hi],
                                                   start_logit[lo:hi], end_logit[lo:hi])])
    return lists


def _best_texts(dataset, features, ranked: _Ranked, answered: np.ndarray) -> list[str]:
    """Each example's best span text where ``answered``, else ""."""
    first = np.flatnonzero(_rank_in_group(ranked.example) == 0)
    tokens = features.row_starts[ranked.window[first]]
    n_examples = len(dataset.examples)
    char_start, char_end = np.zeros(n_examples, dtype=np.int64), np.zeros(n_examples, dtype=np.int64)
    char_start[ranked.example[first]] = features.offsets[tokens + ranked.start[first], 0]
    char_end[ranked.example[first]] = features.offsets[tokens + ranked.end[first], 1]
    return [example.context[a:b] if ok else "" for example, a, b, ok in
            zip(dataset.examples, char_start.tolist(), char_end.tolist(), answered.tolist())]


# ------------------------------------------------------------------------------------------ public
def _check_inputs(dataset, features, candidates: SpanCandidates, null_scores, n_best_size: int,
                  max_answer_length: int, version_2_with_negative: bool) -> None:
    n = len(features)
    if len(candidates) != n:
        raise ValueError(f"{len(candidates)} windows of candidates for {n} windows of features")
    if n and int(features.example_index.max()) >= len(dataset.examples):
        raise ValueError("features.example_index points past the dataset's examples")
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError("n_best_size and max_answer_length must be >= 1")
    if null_scores is None and version_2_with_negative:
        raise ValueError("SQuAD 2.0 post-processing needs null_scores")
    if null_scores is not None and (np.shape(null_scores) != (n,) or not np.all(np.isfinite(null_scores))):
        raise ValueError(f"null_scores must be ({n},) finite numbers, got shape {np.shape(null_scores)}")


def postprocess(dataset, features, candidates: SpanCandidates, null_scores: np.ndarray | None, *,
                n_best_size: int = 20, max_answer_length: int = 30, null_score_diff_threshold: float = 0.0,
                version_2_with_negative: bool | None = None) -> QAPredictions:
    """Rank the candidates of every question's windows; see the module docstring for the rules."""
    if version_2_with_negative is None:
        version_2_with_negative = dataset.version == "2.0"
    _check_inputs(dataset, features, candidates, null_scores, n_best_size, max_answer_length,
                  version_2_with_negative)
    n_examples = len(dataset.examples)
    example_null = None
    if null_scores is not None:
        example_null = _example_null_scores(features, np.asarray(null_scores, dtype=np.float64), n_examples)

    ranked = _rank_spans(features, candidates, max_answer_length, n_best_size)
    entries = _assemble_entries(features, ranked, example_null if version_2_with_negative else None, n_examples)

    has_span = np.bincount(ranked.example, minlength=n_examples) > 0
    na = None
    if example_null is not None:
        best_score = np.zeros(n_examples)
        first = np.flatnonzero(_rank_in_group(ranked.example) == 0)
        best_score[ranked.example[first]] = ranked.score[first]
        na = np.where(has_span & np.isfinite(example_null), example_null - best_score, NO_SPAN_NA_PROB)
    answered = has_span & (na <= null_score_diff_threshold) if version_2_with_negative else has_span

    qids = [example.qid for example in dataset.examples]
    return QAPredictions(predictions=dict(zip(qids, _best_texts(dataset, features, ranked, answered))),
                         nbest=dict(zip(qids, _nbest_lists(dataset, entries))),
                         na_prob=dict(zip(qids, na.tolist())) if na is not None else {})


def write_predictions(out_dir, preds: QAPredictions) -> dict[str, Path]:
    """Write predictions.json, nbest_predictions.json and (when filled) na_prob.json atomically.

    Returns the paths written, keyed "predictions", "nbest" and "na_prob".
    """
    out_dir = Path(out_dir)
    files = {"predictions": out_dir / "predictions.json", "nbest": out_dir / "nbest_predictions.json"}
    if preds.na_prob:
        files["na_prob"] = out_dir / "na_prob.json"
    atomic_write_json(files["predictions"], preds.predictions)
    atomic_write_json(files["nbest"], preds.nbest)
    if preds.na_prob:
        atomic_write_json(files["na_prob"], preds.na_prob)
    return files
