"""Plain-loop reference for ``bench.core.postprocess`` (the tests, and the reference side of the speed
benchmark's post-processing figure, ``bench.apps.speed.postprocess_compare``). numpy only.

Written to be obviously correct rather than fast: per example, per window, the
top ``n_best_size`` start and end positions among the window's context tokens
(ties: lower position first), every (start, end) pair checked one by one, then
one sort. It follows the rules documented in ``bench.core.postprocess`` exactly,
including the tie-breaking order, so the two must agree entry for entry:

* score = start_logit + end_logit, added in float32;
* spans scoring -inf dropped, the rest ranked by (-score, window index, start, end);
* the example's null score is the lowest window null score;
* the v2 null entry "" sits after every span whose score is >= the null score.

``reference_postprocess`` takes raw start/end logits (basic heads);
``reference_postprocess_candidates`` takes arbitrary (n, C) candidate arrays.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from bench.core.postprocess import NO_SPAN_NA_PROB, QAPredictions


def _f32_sum(a: float, b: float) -> float:
    """a + b rounded to float32, as the model's float32 arithmetic does (exact for float32 inputs)."""
    return float(np.float32(a + b))


def _top_positions(logits: np.ndarray, context: np.ndarray, n_best_size: int) -> list[int]:
    """The n_best_size best context positions; a stable sort puts the lower position first on ties.
    A logit of -inf marks a position never to pick."""
    context = context[logits[context] > -np.inf]
    order = np.argsort(-logits[context], kind="stable")
    return context[order[:n_best_size]].tolist()


def _window_columns(features, w):
    window = features.window(w)
    return features.offsets[window].tolist(), features.is_max_context[window].tolist()


def _grid_spans(features, w, starts, ends, s_logits, e_logits, max_answer_length):
    """Valid spans among all (start, end) pairs of window ``w``, as
    (score, w, start, end, start_logit, end_logit, char_start, char_end). Starts and ends are context tokens."""
    offsets, is_max_context = _window_columns(features, w)
    spans = []
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length or not is_max_context[s]:
                continue
            score = _f32_sum(s_logits[s], e_logits[e])
            if score == -math.inf:          # e.g. two logits of -3e38: the module drops such spans
                continue
            spans.append((score, w, s, e, s_logits[s], e_logits[e], offsets[s][0], offsets[e][1]))
    return spans


def _listed_spans(features, w, candidates, max_answer_length):
    """Valid spans among arbitrary (start, end, start_logit, end_logit) candidates of window ``w``."""
    offsets, is_max_context = _window_columns(features, w)
    spans = []
    for s, e, start_logit, end_logit in candidates:
        if not 0 <= s <= e < len(offsets) or e - s + 1 > max_answer_length:
            continue
        if offsets[s][0] == -1 or offsets[e][0] == -1 or not is_max_context[s]:
            continue
        score = _f32_sum(start_logit, end_logit)
        if score == -math.inf:
            continue
        spans.append((score, w, s, e, start_logit, end_logit, offsets[s][0], offsets[e][1]))
    return spans


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(x - top) for x in scores]
    total = sum(exps)
    return [x / total for x in exps]


def _example_output(example, spans, null_score, n_best_size, version_2_with_negative):
    """(prediction text, n-best list, null score - best span score) of one example."""
    spans = sorted(spans, key=lambda c: (-c[0], c[1], c[2], c[3]))[:n_best_size]
    entries = [(c[0], example.context[c[6]:c[7]], c[4], c[5], [c[6], c[7]]) for c in spans]
    if version_2_with_negative and null_score is not None:
        where = sum(1 for c in spans if c[0] >= null_score)
        entries.insert(where, (null_score, "", null_score, 0.0, [0, 0]))
    nbest = []
    if entries:
        for (_, text, start_logit, end_logit, offsets), p in zip(entries, _softmax([e[0] for e in entries])):
            nbest.append({"text": text, "probability": p, "start_logit": start_logit, "end_logit": end_logit,
                          "offsets": offsets})
    diff = null_score - spans[0][0] if spans and null_score is not None else NO_SPAN_NA_PROB
    text = example.context[spans[0][6]:spans[0][7]] if spans else ""
    return text, nbest, diff


def _run(dataset, features, window_spans, window_nulls, n_best_size, null_score_diff_threshold,
         version_2_with_negative):
    """The per-example loop shared by both entry points; ``window_spans(w)`` lists a window's valid spans."""
    if version_2_with_negative is None:
        version_2_with_negative = dataset.version == "2.0"
    windows_of_example = defaultdict(list)
    for w, ex in enumerate(features.example_index.tolist()):
        windows_of_example[ex].append(w)
    predictions, nbest, na_prob = {}, {}, {}
    for ex, example in enumerate(dataset.examples):
        spans, null_score = [], None
        for w in windows_of_example[ex]:
            spans += window_spans(w)
            if window_nulls is not None and (null_score is None or window_nulls[w] < null_score):
                null_score = window_nulls[w]
        text, nbest[example.qid], diff = _example_output(example, spans, null_score, n_best_size,
                                                          version_2_with_negative)
        if window_nulls is not None:
            na_prob[example.qid] = diff
        predictions[example.qid] = "" if version_2_with_negative and diff > null_score_diff_threshold else text
    return QAPredictions(predictions, nbest, na_prob)


def reference_postprocess(dataset, features, start_logits, end_logits, *, n_best_size=20,
                          max_answer_length=30, null_score_diff_threshold=0.0,
                          version_2_with_negative=None, with_null_scores=True) -> QAPredictions:
    """Same output as ``postprocess(dataset, features, candidates_from_logits(...), null_scores_from_logits(...))``
    (or ``null_scores=None`` when ``with_null_scores`` is False)."""
    start_logits = np.asarray(start_logits, dtype=np.float32)
    end_logits = np.asarray(end_logits, dtype=np.float32)

    def window_spans(w):
        context = np.flatnonzero(features.offsets[features.window(w), 0] != -1)
        starts = _top_positions(start_logits[w], context, n_best_size)
        ends = _top_positions(end_logits[w], context, n_best_size)
        return _grid_spans(features, w, starts, ends, start_logits[w].tolist(), end_logits[w].tolist(),
                           max_answer_length)

    nulls = None
    if with_null_scores:
        nulls = [_f32_sum(s, e) for s, e in zip(start_logits[:, 0].tolist(), end_logits[:, 0].tolist())]
    return _run(dataset, features, window_spans, nulls, n_best_size, null_score_diff_threshold,
                version_2_with_negative)


def reference_postprocess_candidates(dataset, features, start, end, start_logit, end_logit, null_scores, *,
                                     n_best_size=20, max_answer_length=30, null_score_diff_threshold=0.0,
                                     version_2_with_negative=None) -> QAPredictions:
    """Same output as ``postprocess`` on ``SpanCandidates(start, end, start_logit, end_logit)``."""
    columns = [np.asarray(a).tolist() for a in (start, end)]
    logits = [np.asarray(a, dtype=np.float32).tolist() for a in (start_logit, end_logit)]

    def window_spans(w):
        listed = zip(columns[0][w], columns[1][w], logits[0][w], logits[1][w])
        return _listed_spans(features, w, listed, max_answer_length)

    nulls = None if null_scores is None else np.asarray(null_scores, dtype=np.float64).tolist()
    return _run(dataset, features, window_spans, nulls, n_best_size, null_score_diff_threshold,
                version_2_with_negative)
