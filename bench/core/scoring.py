"""Scoring predictions against SQuAD gold answers: exact match (EM) and F1.

A drop-in for the official evaluation scripts of SQuAD 1.1 and 2.0, written
from their published semantics; which one applies is decided by the data
file's version::

    python -m bench.evaluate dev-v2.0.json predictions.json [--na-prob-file na_prob.json]
    squad-bench evaluate dev-v1.1.json predictions.json

Both versions compare *normalized* texts: lowercased, ASCII punctuation
removed, the words a/an/the removed, whitespace collapsed. EM is normalized
equality, F1 the harmonic mean of precision and recall of the bag of tokens;
each question takes its best score over the gold answers, and the totals are
percentages.

SQuAD 2.0 adds unanswerable questions: gold answers that normalize to nothing
are dropped and a question left with none is scored against ``[""]``; an empty
prediction then matches it (F1 = 1 exactly when both sides have no tokens).
With no-answer probabilities, a question whose probability exceeds
``na_prob_thresh`` counts as answered empty, and the ``best_*`` keys report the
scores at the best probability threshold. The probabilities must be finite numbers
and the threshold must not be NaN (a NaN would sort anywhere and silently change the
best_* scores); so every value of the result is finite and it is strict JSON.

Deviations, on purpose: a question without a prediction scores 0 in both
versions and counts in every total (the official 2.0 script would skip it or
crash), and is reported in one warning line rather than one line per id.
"""
from __future__ import annotations

import logging
import math
import os
import re
import string
from collections import Counter
from typing import Iterable

from bench.core.data import SquadDataset, SquadExample
from bench.core.errors import BenchError
from bench.core.io_utils import read_json_file

__all__ = ["PredictionFileError", "ScoringInputError", "normalize_answer", "exact_match", "token_f1",
           "scoring_golds", "raw_scores", "evaluate", "load_predictions", "load_na_probs"]

logger = logging.getLogger(__name__)

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_IDS_SHOWN = 5


class PredictionFileError(BenchError, ValueError):
    """A predictions or no-answer-probability file that cannot be used; the message names the file."""


class ScoringInputError(BenchError, ValueError):
    """No-answer probabilities or a threshold handed to ``evaluate`` that cannot be scored with."""


# -- per-answer scores -----------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
    text = text.lower().translate(_DROP_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction_tokens: list[str], gold_tokens: list[str], *, empty_matches_empty: bool) -> float:
    """F1 of two token bags. With ``empty_matches_empty`` (SQuAD 2.0), two empty bags score 1;
    without it (SQuAD 1.1) no overlap ever scores more than 0."""
    if empty_matches_empty and not (prediction_tokens and gold_tokens):
        return float(prediction_tokens == gold_tokens)
    overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def scoring_golds(example: SquadExample, version: str) -> list[str]:
    """The normalized gold texts a prediction is compared with, duplicates removed (they cannot
    change a maximum, and dev questions often repeat one answer three times)."""
    normalized = list(dict.fromkeys(normalize_answer(answer.text) for answer in example.answers))
    if version == "1.1":
        return normalized
    # v2.0: a gold that normalizes to nothing cannot be matched by tokens; an unanswerable
    # question (or one left with no gold) expects the empty answer
    return [text for text in normalized if text] or [""]


def _best_over_golds(prediction: str, normalized_golds: list[str], version: str) -> tuple[int, float]:
    """(EM, F1) of one prediction, each the maximum over the gold answers."""
    normalized = normalize_answer(prediction)
    if normalized and normalized in normalized_golds:
        return 1, 1.0                        # identical non-empty token lists: F1 is exactly 1
    tokens = normalized.split()
    best_f1 = max(token_f1(tokens, gold.split(), empty_matches_empty=version == "2.0")
                  for gold in normalized_golds)
    return int(normalized in normalized_golds), best_f1


# -- whole-dataset scores --------------------------------------------------------------------

def raw_scores(dataset: SquadDataset, predictions: dict[str, str]) -> tuple[dict, dict, list[str]]:
    """Per-question EM and F1 (0 or 1 / 0..1, in dataset order) and the ids without a prediction."""
    exact, f1, missing = {}, {}, []
    for example in dataset.examples:
        if example.qid not in predictions:
            missing.append(example.qid)
            exact[example.qid], f1[example.qid] = 0, 0.0
            continue
        golds = scoring_golds(example, dataset.version)
        exact[example.qid], f1[example.qid] = _best_over_golds(
            predictions[example.qid], golds, dataset.version)
    return exact, f1, missing


def evaluate(dataset: SquadDataset, predictions: dict[str, str], na_probs: dict | None = None,
             na_prob_thresh: float = 1.0) -> dict:
    """The official scripts' result dict for ``dataset.version``.

    1.1: ``{"exact_match", "f1"}``. 2.0: ``exact, f1, total``, then ``HasAns_*`` and
    ``NoAns_*`` for the subsets present, then ``best_exact, best_exact_thresh,
    best_f1, best_f1_thresh`` when ``na_probs`` is given (missing ids count as 0.0).
    Predictions for ids not in the dataset are ignored.

    Every value in ``na_probs`` must be a finite number: a NaN or an infinity is a
    ScoringInputError naming the first question ids (the best_* thresholds are na-prob
    values, so they stay finite and the result strict JSON). ``na_prob_thresh`` must not
    be NaN (ScoringInputError); an infinite one is allowed and exact: ``float("inf")``
    answers no question empty by threshold, so only the best_* keys use the probabilities
    (a run scores its raw null-score differences this way, ``bench.run.pipeline.score_outputs``:
    they are not probabilities, and only their order matters), and ``float("-inf")``
    answers every question that has a prediction empty. The command line
    (``bench.apps.evaluate``) accepts finite thresholds only.
    """
    if not dataset.examples:
        raise ValueError(f"{dataset.path}: no questions to score")
    if math.isnan(na_prob_thresh):
        raise ScoringInputError("na_prob_thresh is NaN: it should be a number (float('inf'): no question "
                                "is answered empty by threshold)")
    _check_prediction_types(predictions)
    exact, f1, missing = raw_scores(dataset, predictions)
    _warn_missing(missing, len(dataset.examples))
    if dataset.version == "1.1":
        if na_probs is not None:
            raise ValueError(f"{dataset.path}: no-answer probabilities apply to SQuAD 2.0 only, "
                             f"the data is SQuAD 1.1")
        return {"exact_match": _percent(exact.values()), "f1": _percent(f1.values())}
    return _evaluate_v2(dataset, predictions, exact, f1, na_probs, na_prob_thresh)


def _evaluate_v2(dataset: SquadDataset, predictions: dict[str, str], exact: dict, f1: dict,
                 na_probs: dict | None, na_prob_thresh: float) -> dict:
    problem = _non_finite_probs(na_probs or {})
    if problem:
        raise ScoringInputError(problem)
    has_answer = {example.qid: bool(example.answers) for example in dataset.examples}
    probs = {qid: float((na_probs or {}).get(qid, 0.0)) for qid in has_answer}
    # a question the model thinks is unanswerable (na-prob above the threshold) counts as
    # answered empty: right exactly when it has no answer
    answered_empty = {qid for qid in predictions if probs.get(qid, 0.0) > na_prob_thresh}
    exact_t = {qid: float(not has_answer[qid]) if qid in answered_empty else s for qid, s in exact.items()}
    f1_t = {qid: float(not has_answer[qid]) if qid in answered_empty else s for qid, s in f1.items()}
    result = _block(exact_t, f1_t, list(has_answer))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [qid for qid, answerable in has_answer.items() if answerable == wanted]
        if subset:
            result.update({f"{prefix}_{key}": value for key, value in _block(exact_t, f1_t, subset).items()})
    if na_probs is not None:
        for name, scores in (("exact", exact), ("f1", f1)):
            best, thresh = _best_threshold(scores, probs, has_answer, predictions)
            result[f"best_{name}"], result[f"best_{name}_thresh"] = best, thresh
    return result


def _block(exact: dict, f1: dict, qids: list[str]) -> dict:
    return {"exact": _percent(exact[qid] for qid in qids), "f1": _percent(f1[qid] for qid in qids),
            "total": len(qids)}


def _percent(scores: Iterable[float]) -> float:
    scores = list(scores)
    return 100.0 * sum(scores) / len(scores)


def _best_threshold(scores: dict, probs: dict, has_answer: dict,
                    predictions: dict[str, str]) -> tuple[float, float]:
    """Best score over no-answer thresholds, and the threshold that reaches it.

    Start from answering every question empty (all unanswerable ones right), then
    lower the bar question by question in ascending na-prob: an answerable question
    brings its raw score, an unanswerable one costs 1 if the model answered it.
    """
    running = best = sum(1 for answerable in has_answer.values() if not answerable)
    best_thresh = 0.0
    for qid in sorted(has_answer, key=probs.__getitem__):     # stable: ties keep dataset order
        if has_answer[qid]:
            running += scores[qid]
        elif predictions.get(qid):
            running -= 1
        if running > best:
            best, best_thresh = running, probs[qid]
    return 100.0 * best / len(has_answer), best_thresh


def _check_prediction_types(predictions: dict) -> None:
    for qid, text in predictions.items():
        if not isinstance(text, str):
            raise ValueError(f"prediction for question {qid!r} should be a string, got {type(text).__name__}")


def _first_ids(qids: list[str], show=str) -> str:
    """The first few ids, each as ``show`` writes it, and "..." when there are more."""
    return ", ".join(map(show, qids[:_IDS_SHOWN])) + (", ..." if len(qids) > _IDS_SHOWN else "")


def _warn_missing(missing: list[str], total: int) -> None:
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0 (%s)", len(missing), total,
                       _first_ids(missing))


def _non_finite_probs(na_probs: dict) -> str | None:
    """What is wrong with no-answer probabilities that are NaN or infinite (naming the first
    question ids), or None when every one is a finite number."""
    bad = [qid for qid, prob in na_probs.items() if not math.isfinite(prob)]
    if not bad:
        return None
    return (f"the no-answer probability is NaN or infinite for {len(bad)} of {len(na_probs)} questions "
            f"({_first_ids(bad, repr)}); every one should be a finite number")


# -- files -----------------------------------------------------------------------------------

def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """A predictions file: a JSON object mapping question id to answer text."""
    raw = read_json_file(path, PredictionFileError)
    if not isinstance(raw, dict):
        raise PredictionFileError(f"{path}: predictions should be a JSON object mapping question id "
                                  f"to answer text, got {type(raw).__name__}")
    for qid, text in raw.items():
        if not isinstance(text, str):
            raise PredictionFileError(f"{path}: prediction for question {qid!r} should be a string, "
                                      f"got {type(text).__name__}")
    return raw


def load_na_probs(path: str | os.PathLike) -> dict[str, float]:
    """A no-answer probability file: a JSON object mapping question id to a finite number
    (``NaN``, ``Infinity`` or a number too large for a float is an error naming the ids)."""
    raw = read_json_file(path, PredictionFileError)
    if not isinstance(raw, dict):
        raise PredictionFileError(f"{path}: no-answer probabilities should be a JSON object mapping "
                                  f"question id to a number, got {type(raw).__name__}")
    for qid, prob in raw.items():
        if isinstance(prob, bool) or not isinstance(prob, (int, float)):
            raise PredictionFileError(f"{path}: no-answer probability for question {qid!r} should be "
                                      f"a number, got {type(prob).__name__}")
    probs = {qid: _to_float(prob) for qid, prob in raw.items()}
    problem = _non_finite_probs(probs)
    if problem:
        raise PredictionFileError(f"{path}: {problem}")
    return probs


def _to_float(number: int | float) -> float:
    try:
        return float(number)
    except OverflowError:                 # an integer literal beyond the float range
        return math.copysign(math.inf, number)
