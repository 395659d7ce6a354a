"""``postprocess``: the candidates and null scores of every window -> each question's answer.

``postprocess`` ranks the candidates of all windows of a question together:

* A candidate is valid iff start and end lie inside the window
  (``0 <= start <= end < window length``), both are context tokens
  (``offsets != -1``), ``end - start + 1 <= max_answer_length``, and the
  start token ``is_max_context`` in that window (so a span is scored by the
  window that sees the most context around it). Duplicate candidates are
  not merged.
* score = start_logit + end_logit, added in float32 like the model's own
  arithmetic (and like ``utils_qa``, which adds numpy float32 scalars).
  A candidate scoring -inf is dropped; a valid one scoring NaN or +inf
  raises ValueError.
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

The result is a ``QAPredictions`` (``bench.core.postprocess.predictions``).

Null scores must be finite (ValueError).

How it is vectorized
--------------------
* Each window's best valid candidates come from ``window_search``, and one
  sort ranks them with the null entries (``ranking``).
* The softmax of each example's entries takes its first entry as the maximum
  (entries are best first) and ``np.add.reduceat`` for the sums.
* No Python object is made per n-best entry unless asked for (``nbest[qid]``,
  ``to_dict``, the JSON writer). Per question, only the prediction text and
  the ``predictions``/``na_prob`` dict entries are.
"""
from __future__ import annotations

from operator import attrgetter

import numpy as np

from bench.core.postprocess.candidates import SpanCandidates
from bench.core.postprocess.predictions import NBest, QAPredictions
from bench.core.postprocess.ranking import Entries, rank_entries
from bench.core.postprocess.window_search import window_best_spans

__all__ = ["NO_SPAN_NA_PROB", "postprocess"]

NO_SPAN_NA_PROB = 1e6   # na_prob of an example without any valid span: "surely no answer", JSON-safe


def _example_null_scores(features, null_scores: np.ndarray, n_examples: int) -> np.ndarray:
    """(n_examples,) float64: lowest null score over each example's windows (+inf without windows)."""
    best = np.full(n_examples, np.inf)
    np.minimum.at(best, features.example_index, null_scores)
    return best


# ------------------------------------------------------------------------------------------ assembly
def _group_softmax(score: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Softmax of ``score`` within each run [bounds[i], bounds[i+1]). Runs are sorted best first, so
    a run's first score is its maximum."""
    sizes = np.diff(bounds)
    filled = sizes > 0
    firsts, sizes = bounds[:-1][filled], sizes[filled]
    if not len(firsts):
        return np.zeros(0)
    exps = np.exp(score - np.repeat(score[firsts], sizes))
    return exps / np.repeat(np.add.reduceat(exps, firsts), sizes)


def _best_spans(entries: Entries) -> tuple[np.ndarray, np.ndarray]:
    """Per example: whether it has a span entry, and the index of its best one (its first span
    entry: the first entry, or the second when the null entry ranks first; 0 without a span)."""
    first, sizes = entries.example_starts[:-1], np.diff(entries.example_starts)
    first_is_null = np.zeros(len(first), dtype=bool)
    first_is_null[sizes > 0] = entries.is_null[first[sizes > 0]]
    best = first + first_is_null
    has_span = best < first + sizes
    return has_span, np.where(has_span, best, 0)


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], or zeros when there are no values at all (then nothing reads them)."""
    return values[index] if len(values) else np.zeros(len(index), dtype=values.dtype)


def _nbest(dataset, entries: Entries) -> NBest:
    return NBest(qids=list(map(attrgetter("qid"), dataset.examples)),
                 contexts=list(map(attrgetter("context"), dataset.examples)),
                 example_starts=entries.example_starts, window=entries.window, start_token=entries.start,
                 end_token=entries.end, char_start=entries.char_start, char_end=entries.char_end,
                 start_logit=entries.start_logit, end_logit=entries.end_logit,
                 probability=_group_softmax(entries.score, entries.example_starts), is_null=entries.is_null)


def _best_texts(nbest: NBest, best: np.ndarray, answered: np.ndarray) -> list[str]:
    """Each question's best span text where ``answered``, else "" (the empty slice [0:0])."""
    char_start = np.where(answered, _at(nbest.char_start, best), 0).tolist()
    char_end = np.where(answered, _at(nbest.char_end, best), 0).tolist()
    return [context[a:b] for context, a, b in zip(nbest.contexts, char_start, char_end)]


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
    """Rank the candidates of every question's windows; see the module docstring for the rules.

    Returns predictions and na_prob as dicts and the n-best lists as an ``NBest`` (columns).
    """
    if version_2_with_negative is None:
        version_2_with_negative = dataset.version == "2.0"
    _check_inputs(dataset, features, candidates, null_scores, n_best_size, max_answer_length,
                  version_2_with_negative)
    n_examples = len(dataset.examples)
    example_null = None
    if null_scores is not None:
        example_null = _example_null_scores(features, np.asarray(null_scores, dtype=np.float64), n_examples)

    spans = window_best_spans(features, candidates, max_answer_length, n_best_size)
    entries = rank_entries(spans, example_null if version_2_with_negative else None, n_best_size, n_examples)
    nbest = _nbest(dataset, entries)
    has_span, best = _best_spans(entries)
    na = None
    if example_null is not None:
        na = np.where(has_span & np.isfinite(example_null), example_null - _at(entries.score, best),
                      NO_SPAN_NA_PROB)
    answered = has_span & (na <= null_score_diff_threshold) if version_2_with_negative else has_span
    return QAPredictions(predictions=dict(zip(nbest.qids, _best_texts(nbest, best, answered))), nbest=nbest,
                         na_prob=dict(zip(nbest.qids, na.tolist())) if na is not None else {})
