"""bench.core.postprocess: the vectorized path against the plain loop on the full dev-v2.0 set, plus hand-made cases.

The vectorized path returns its n-best lists as an ``NBest`` (columns); every comparison with the
reference loop materialises them (``to_dict``) and compares the plain dicts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from bench.core.postprocess import context_topk, ranking, row_top, sort_keys, window_search
from bench.core.data import Answer, SquadDataset, SquadExample
from bench.core.features import FeatureParams, Features, build_features
from bench.core.postprocess import (NO_SPAN_NA_PROB, NBest, PairGrid, SpanCandidates, candidates_from_logits,
                               candidates_from_topk, null_scores_from_logits, postprocess, write_predictions)
from bench.core.postprocess_reference import reference_postprocess, reference_postprocess_candidates

MAX_SEQ_LENGTH = 384


# ------------------------------------------------------------------------------------------ helpers
def vectorized(dataset, features, start_logits, end_logits, *, with_null_scores=True, **options):
    candidates = candidates_from_logits(start_logits, end_logits, features, options.get("n_best_size", 20))
    null_scores = null_scores_from_logits(start_logits, end_logits) if with_null_scores else None
    return postprocess(dataset, features, candidates, null_scores, **options)


def materialised(nbest) -> dict:
    """The n-best lists as plain dicts: an NBest materialised, a dict (the reference's) as it is."""
    return nbest.to_dict() if isinstance(nbest, NBest) else nbest


def nbest_rows(preds):
    """(qid, rank, text, start_logit, end_logit, offsets) per n-best entry, and the probabilities."""
    nbest = materialised(preds.nbest)
    rows = [(qid, rank, e["text"], e["start_logit"], e["end_logit"], e["offsets"])
            for qid, entries in nbest.items() for rank, e in enumerate(entries)]
    return rows, np.array([e["probability"] for entries in nbest.values() for e in entries])


def assert_same(got, want):
    """Identical predictions, na_probs and n-best lists (probabilities to 1e-6)."""
    assert got.predictions == want.predictions
    assert got.na_prob == want.na_prob
    got_rows, got_probability = nbest_rows(got)
    want_rows, want_probability = nbest_rows(want)
    if got_rows != want_rows:
        at = next((i for i, (a, b) in enumerate(zip(got_rows, want_rows)) if a != b),
                  min(len(got_rows), len(want_rows)))
        raise AssertionError(f"n-best entry {at} differs: {got_rows[at:at + 1]} != {want_rows[at:at + 1]}")
    np.testing.assert_allclose(got_probability, want_probability, rtol=0, atol=1e-6)


def sub_dataset(dataset, features, n_examples):
    """The first ``n_examples`` questions and their windows (example indices stay valid)."""
    return (dataclasses.replace(dataset, examples=dataset.examples[:n_examples]),
            features.select(features.example_index < n_examples))


CONTEXT = "alpha beta gamma delta epsilon zeta eta theta"
WORD_SPANS = [(m.start(), m.end()) for m in re.finditer(r"\S+", CONTEXT)]      # 8 context tokens, one per word


def make_features(windows) -> Features:
    """Features by hand. Each window: {"example": i, "tokens": [char span or None], "max_context": [bool]}.
    None marks a non-context token (CLS, question, SEP)."""
    offsets, max_context, row_starts, context_start = [], [], [0], []
    for window in windows:
        tokens = window["tokens"]
        flags = window.get("max_context", [True] * len(tokens))
        offsets += [span if span is not None else (-1, -1) for span in tokens]
        max_context += [span is not None and flag for span, flag in zip(tokens, flags)]
        row_starts.append(row_starts[-1] + len(tokens))
        context_start.append(next(i for i, span in enumerate(tokens) if span is not None))
    n, total = len(windows), row_starts[-1]
    return Features(example_index=np.array([w["example"] for w in windows], np.int32),
                    row_starts=np.array(row_starts, np.int64), context_start=np.array(context_start, np.int32),
                    start_positions=np.zeros(n, np.int32), end_positions=np.zeros(n, np.int32),
                    is_impossible=np.zeros(n, bool), input_ids=np.zeros(total, np.int32),
                    token_type_ids=np.zeros(total, np.int8), offsets=np.array(offsets, np.int32).reshape(total, 2),
                    is_max_context=np.array(max_context, bool), params=FeatureParams(max_seq_length=16))


def make_dataset(n_examples=1, version="2.0", context=CONTEXT) -> SquadDataset:
    examples = [SquadExample(qid=f"q{i}", title="t", context=context, question="which?",
                             answers=[Answer("beta", 6)]) for i in range(n_examples)]
    return SquadDataset(path="hand-made", version=version, examples=examples, sha256="")


def one_window(example=0, words=range(8), max_context=None):
    """[CLS] q q [SEP] <words> [SEP]: context token p sits at window position p + 4."""
    tokens = [None, None, None, None] + [WORD_SPANS[i] for i in words] + [None]
    window = {"example": example, "tokens": tokens}
    if max_context is not None:
        window["max_context"] = [False] * 4 + list(max_context) + [False]
    return window


def logits_for(features, width=16, start=None, end=None, cls=(0.0, 0.0)):
    """Logits of -5 with CLS scores ``cls`` and {position: value} overrides per window."""
    s = np.full((len(features), width), -5.0, np.float32)
    e = np.full((len(features), width), -5.0, np.float32)
    s[:, 0], e[:, 0] = cls
    for w, values in (start or {}).items():
        for p, v in values.items():
            s[w, p] = v
    for w, values in (end or {}).items():
        for p, v in values.items():
            e[w, p] = v
    return s, e


# ------------------------------------------------------------------------------------------ full dev set
@pytest.fixture(scope="module")
def dev(dev_v2, bert_tokenizer):
    params = FeatureParams(max_seq_length=MAX_SEQ_LENGTH, doc_stride=128)
    features = build_features(dev_v2.examples, bert_tokenizer, params, is_training=False)
    rng = np.random.default_rng(20240611)
    shape = (len(features), MAX_SEQ_LENGTH)
    return dev_v2, features, rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


@pytest.mark.slow
def test_full_dev_v2_matches_reference_loop(dev):
    dataset, features, s, e = dev
    assert len(dataset.examples) == 11873 and len(features) > 12000
    got = vectorized(dataset, features, s, e)
    assert_same(got, reference_postprocess(dataset, features, s, e))
    assert len(got.predictions) == 11873
    answered = sum(text != "" for text in got.predictions.values())
    assert 0 < answered < 11873                    # both outcomes occur with random logits
    assert isinstance(got.nbest, NBest) and len(got.nbest) == 11873
    assert np.diff(got.nbest.example_starts).max() <= 21


def test_candidates_without_grid_or_in_any_order_give_the_same_result(dev):
    """The (n, C) path and the grid path agree; candidate order within a window does not matter."""
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 3000)
    s, e = s[:len(features)], e[:len(features)]
    with_grid = candidates_from_logits(s, e, features, 20)
    null = null_scores_from_logits(s, e)
    want = postprocess(dataset, features, with_grid, null)
    shuffle = np.random.default_rng(5).permuted(np.tile(np.arange(400), (len(features), 1)), axis=1)
    plain = SpanCandidates(*(np.take_along_axis(a, shuffle, axis=1) for a in
                             (with_grid.start, with_grid.end, with_grid.start_logit, with_grid.end_logit)))
    assert plain.grid is None
    assert_same(postprocess(dataset, features, plain, null), want)


def test_heavy_ties_match_reference_v2_and_v1(dev):
    """Logits on a 0.5 grid tie everywhere: the documented tie-breaking must match the loop's."""
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 1500)
    s, e = np.round(s[:len(features)] * 2) / 2, np.round(e[:len(features)] * 2) / 2
    assert_same(vectorized(dataset, features, s, e), reference_postprocess(dataset, features, s, e))
    v1 = dict(version_2_with_negative=False, n_best_size=7, max_answer_length=12)
    assert_same(vectorized(dataset, features, s, e, **v1), reference_postprocess(dataset, features, s, e, **v1))
    assert_same(vectorized(dataset, features, s, e, with_null_scores=False, **v1),
                reference_postprocess(dataset, features, s, e, with_null_scores=False, **v1))


def test_topk_head_with_shared_ends_equals_basic_head(dev):
    """candidates_from_topk fed every start with the same top ends is the basic head again."""
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 1000)
    s, e = s[:len(features)], e[:len(features)]
    basic = candidates_from_logits(s, e, features, 20)
    g = basic.grid
    ends = np.broadcast_to(g.ends[:, None, :], (len(features), 20, 20))
    end_logits = np.broadcast_to(g.end_logits[:, None, :], ends.shape)
    topk = candidates_from_topk(g.starts[:, ::-1], g.start_logits[:, ::-1], ends[:, ::-1, ::-1],
                                end_logits[:, ::-1, ::-1])
    null = null_scores_from_logits(s, e)
    assert_same(postprocess(dataset, features, topk, null), postprocess(dataset, features, basic, null))


@pytest.mark.parametrize("pairs_per_chunk", [1, 7 * 400])
def test_pairs_scored_in_small_chunks_give_the_same_result(dev, monkeypatch, pairs_per_chunk):
    """Chunk boundaries (one window per chunk, or 7) must not change anything."""
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 400)
    s, e = s[:len(features)], e[:len(features)]
    monkeypatch.setattr(window_search, "_PAIRS_PER_CHUNK", pairs_per_chunk)
    assert_same(vectorized(dataset, features, s, e), reference_postprocess(dataset, features, s, e))


def test_nbest_columns_agree_with_the_dicts_and_the_features(dev):
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 1500)
    s, e = s[:len(features)], e[:len(features)]
    nbest = vectorized(dataset, features, s, e).nbest
    qids = [example.qid for example in dataset.examples]
    assert list(nbest) == qids and len(nbest) == 1500 and qids[7] in nbest and "no such qid" not in nbest
    assert repr(nbest) == f"NBest(1500 questions, {nbest.num_entries} entries)"
    with pytest.raises(KeyError):
        nbest["no such qid"]
    dicts = nbest.to_dict()
    assert all(nbest[qid] == dicts[qid] for qid in qids[:50]) and nbest == dicts and dicts == nbest

    spans = ~nbest.is_null
    tokens = features.row_starts[nbest.window[spans]]
    assert np.array_equal(nbest.char_start[spans], features.offsets[tokens + nbest.start_token[spans], 0])
    assert np.array_equal(nbest.char_end[spans], features.offsets[tokens + nbest.end_token[spans], 1])
    assert np.all(features.example_index[nbest.window[spans]] ==
                  np.repeat(np.arange(1500), np.diff(nbest.example_starts))[spans])
    nulls = nbest.is_null
    assert np.all(nbest.window[nulls] == -1) and np.all(nbest.start_token[nulls] == -1)
    assert np.all(nbest.char_start[nulls] == 0) and np.all(nbest.char_end[nulls] == 0)
    assert np.all(nbest.end_logit[nulls] == 0.0) and nulls.sum() == 1500       # one null entry per question
    sums = np.add.reduceat(nbest.probability, nbest.example_starts[:-1])
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-9)


def test_nbest_file_is_json_dumps_of_the_materialised_dicts(dev, tmp_path):
    dataset, features, s, e = dev
    dataset, features = sub_dataset(dataset, features, 1500)
    s, e = s[:len(features)], e[:len(features)]
    preds = vectorized(dataset, features, s, e)
    files = write_predictions(tmp_path, preds)
    expected = json.dumps(preds.nbest.to_dict(), indent=2, ensure_ascii=False) + "\n"
    assert files["nbest"].read_bytes() == expected.encode("utf-8")
    assert files["predictions"].read_bytes() == (json.dumps(preds.predictions, indent=2, ensure_ascii=False)
                                                 + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ hand-made cases
def random_features(rng) -> tuple[Features, int]:
    """1-3 examples with 0-2 windows each (at least one window), random words and max-context flags."""
    n_examples = int(rng.integers(1, 4))
    windows = []
    for example in range(n_examples):
        for _ in range(int(rng.integers(0, 3))):              # an example may have no window at all
            words = np.sort(rng.choice(8, size=int(rng.integers(1, 9)), replace=False))
            question = [None] * int(rng.integers(1, 4))
            windows.append({"example": example, "tokens": question + [WORD_SPANS[i] for i in words] + [None],
                            "max_context": rng.random(len(question) + len(words) + 1) < 0.7})
    return make_features(windows or [one_window()]), n_examples


def random_options(rng) -> dict:
    return dict(n_best_size=int(rng.integers(1, 7)), max_answer_length=int(rng.integers(1, 6)),
                null_score_diff_threshold=float(rng.integers(-2, 3)))


@pytest.mark.parametrize("seed", range(40))
def test_small_random_cases_match_reference(seed):
    """Random windows and tie-heavy integer logits (some -inf), both versions."""
    rng = np.random.default_rng(seed)
    features, n_examples = random_features(rng)
    n, width = len(features), int(np.diff(features.row_starts).max()) + int(rng.integers(0, 4))
    s, e = (rng.integers(-3, 4, (n, width)).astype(np.float32) for _ in range(2))
    s[:, 1:][rng.random((n, width - 1)) < 0.1] = -np.inf       # never at CLS: null scores stay finite
    options = random_options(rng)
    for version in ("2.0", "1.1"):
        dataset = make_dataset(n_examples, version=version)
        assert_same(vectorized(dataset, features, s, e, **options),
                    reference_postprocess(dataset, features, s, e, **options))


@pytest.mark.parametrize("seed", range(20))
def test_random_topk_and_hand_built_candidates_match_reference(seed):
    """Conditional-head candidates anywhere in [-1, width + 2), duplicates and all, with and without grid."""
    rng = np.random.default_rng(1000 + seed)
    features, n_examples = random_features(rng)
    n, width = len(features), int(np.diff(features.row_starts).max())
    k_start, k_end = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    topk = candidates_from_topk(rng.integers(-1, width + 2, (n, k_start)),
                                rng.integers(-3, 4, (n, k_start)).astype(np.float32),
                                rng.integers(-1, width + 2, (n, k_start, k_end)),
                                rng.integers(-3, 4, (n, k_start, k_end)).astype(np.float32))
    hand_built = SpanCandidates(topk.start, topk.end, topk.start_logit, topk.end_logit)
    null = rng.integers(-3, 4, n).astype(np.float32)
    options = random_options(rng)
    for version in ("2.0", "1.1"):
        dataset = make_dataset(n_examples, version=version)
        want = reference_postprocess_candidates(dataset, features, topk.start, topk.end, topk.start_logit,
                                                topk.end_logit, null, **options)
        assert_same(postprocess(dataset, features, topk, null, **options), want)
        assert_same(postprocess(dataset, features, hand_built, null, **options), want)


def test_max_answer_length():
    features, dataset = make_features([one_window()]), make_dataset()
    # Best pair: "alpha" (position 4) .. "zeta" (position 9), 6 tokens; next: "alpha" .. "beta".
    s, e = logits_for(features, start={0: {4: 9.0}}, end={0: {9: 9.0, 5: 1.0}}, cls=(-9, -9))
    long = vectorized(dataset, features, s, e, max_answer_length=6)
    assert long.predictions["q0"] == "alpha beta gamma delta epsilon zeta"
    short = vectorized(dataset, features, s, e, max_answer_length=5)
    assert short.predictions["q0"] == "alpha beta"
    assert max(len(x["text"].split()) for x in short.nbest["q0"]) == 5


def test_start_outside_its_max_context_window_is_rejected():
    # Two windows share "delta" (word 3); only window 1 is its max-context window.
    w0 = one_window(words=range(0, 5), max_context=[True, True, True, False, False])
    w1 = one_window(words=range(3, 8), max_context=[True, True, True, True, True])
    features, dataset = make_features([w0, w1]), make_dataset()
    s, e = logits_for(features, start={0: {7: 8.0}, 1: {4: 3.0}}, end={0: {7: 8.0}, 1: {4: 3.0}}, cls=(-9, -9))
    got = vectorized(dataset, features, s, e)
    assert got.predictions["q0"] == "delta"
    assert got.nbest["q0"][0]["start_logit"] == 3.0          # scored by window 1, not window 0's 8.0
    assert_same(got, reference_postprocess(dataset, features, s, e))


def test_question_and_special_tokens_never_chosen_nor_crowd_out_context():
    features, dataset = make_features([one_window()]), make_dataset()
    # Huge logits on CLS, question and SEP; with n_best_size=1 the single pick must still be context.
    s, e = logits_for(features, start={0: {1: 50.0, 2: 50.0, 3: 50.0, 12: 50.0, 6: 1.0}},
                      end={0: {1: 50.0, 2: 50.0, 3: 50.0, 12: 50.0, 6: 1.0}}, cls=(-9, -9))
    got = vectorized(dataset, features, s, e, n_best_size=1)
    assert got.predictions["q0"] == "gamma"
    assert [x["text"] for x in got.nbest["q0"]] == ["gamma", ""]


def test_logits_past_the_window_are_ignored():
    features, dataset = make_features([one_window(words=range(3))]), make_dataset()    # 8 tokens
    s, e = logits_for(features, width=16, start={0: {5: 1.0, 10: 99.0}}, end={0: {5: 1.0, 10: 99.0}})
    assert vectorized(dataset, features, s, e, version_2_with_negative=False).predictions["q0"] == "beta"


@pytest.mark.parametrize("threshold, expected", [(1.0, ""), (2.0, "beta")])
def test_null_threshold_both_ways(threshold, expected):
    features, dataset = make_features([one_window()]), make_dataset()
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 0.5}}, cls=(2.0, 1.0))   # null 3.0, span 1.5
    got = vectorized(dataset, features, s, e, null_score_diff_threshold=threshold)
    assert got.predictions["q0"] == expected
    assert got.na_prob["q0"] == 1.5
    nbest = got.nbest["q0"]
    assert nbest[0] == {"text": "", "probability": nbest[0]["probability"], "start_logit": 3.0, "end_logit": 0.0,
                        "offsets": [0, 0]}
    assert nbest[1]["text"] == "beta" and sum(x["probability"] for x in nbest) == pytest.approx(1.0)


def test_lowest_null_window_wins_and_null_entry_ranks_by_score():
    features = make_features([one_window(words=range(0, 5)), one_window(words=range(3, 8))])
    dataset = make_dataset()
    s, e = logits_for(features, start={0: {4: 2.0}, 1: {7: 1.0}}, end={0: {4: 2.0}, 1: {7: 1.0}})
    s[:, 0], e[:, 0] = [3.0, 1.0], [0.0, 0.5]                 # window nulls 3.0 and 1.5 -> example null 1.5
    got = vectorized(dataset, features, s, e)
    assert got.na_prob["q0"] == pytest.approx(1.5 - 4.0)
    assert got.predictions["q0"] == "alpha"
    texts = [x["text"] for x in got.nbest["q0"]]
    assert texts[:3] == ["alpha", "eta", ""]                  # spans 4.0 and 2.0, then the null 1.5
    assert_same(got, reference_postprocess(dataset, features, s, e))


def test_v1_never_predicts_empty():
    features, dataset = make_features([one_window()]), make_dataset(version="1.1")
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 0.5}}, cls=(50.0, 50.0))
    without_null = vectorized(dataset, features, s, e, with_null_scores=False)
    assert without_null.predictions["q0"] == "beta" and without_null.na_prob == {}
    assert "" not in [x["text"] for x in without_null.nbest["q0"]]
    with_null = vectorized(dataset, features, s, e, null_score_diff_threshold=-100.0)
    assert with_null.predictions["q0"] == "beta" and with_null.na_prob["q0"] == pytest.approx(98.5)


def test_no_valid_span():
    # Every context token lies outside its max-context window: nothing can be answered.
    features = make_features([one_window(max_context=[False] * 8)])
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 1.0}}, cls=(2.0, 2.0))
    v2 = vectorized(make_dataset(), features, s, e)
    assert v2.predictions == {"q0": ""} and v2.na_prob == {"q0": NO_SPAN_NA_PROB}
    assert v2.nbest["q0"] == [{"text": "", "probability": 1.0, "start_logit": 4.0, "end_logit": 0.0,
                               "offsets": [0, 0]}]
    v1 = vectorized(make_dataset(version="1.1"), features, s, e, with_null_scores=False)
    assert v1.predictions == {"q0": ""} and v1.nbest == {"q0": []} and v1.na_prob == {}


def test_example_without_windows_and_minus_inf_logits():
    """An example with no window is unanswered; a -inf logit marks a position never to pick."""
    features, dataset = make_features([one_window()]), make_dataset(n_examples=2)
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 1.0}}, cls=(-9, -9))
    s[0, 4:12] = -np.inf
    s[0, 6] = 0.0                                              # the only start left: "gamma"
    got = vectorized(dataset, features, s, e, n_best_size=3)
    assert got.predictions == {"q0": "gamma", "q1": ""}
    assert all(x["text"].startswith("gamma") or x["text"] == "" for x in got.nbest["q0"])
    assert got.nbest["q1"] == [] and got.na_prob["q1"] == NO_SPAN_NA_PROB
    assert_same(got, reference_postprocess(dataset, features, s, e, n_best_size=3))


def test_ties_break_by_window_then_start_then_end():
    features = make_features([one_window(words=range(0, 5)), one_window(words=range(3, 8))])
    dataset = make_dataset()
    flat = {p: 1.0 for p in range(4, 9)}                      # every context logit equal in both windows
    s, e = logits_for(features, start={0: flat, 1: flat}, end={0: flat, 1: flat}, cls=(-9, -9))
    got = vectorized(dataset, features, s, e, n_best_size=4, max_answer_length=2)
    want = ["alpha", "alpha beta", "beta", "beta gamma"]      # window 0 first, then by start, then end
    assert [x["text"] for x in got.nbest["q0"]][:4] == want
    assert_same(got, reference_postprocess(dataset, features, s, e, n_best_size=4, max_answer_length=2))


def test_candidates_from_topk_uses_conditional_ends():
    features, dataset = make_features([one_window()]), make_dataset(version="1.1")
    starts = np.array([[5, 7]])                                # "beta", "delta"
    start_logits = np.array([[2.0, 1.0]], np.float32)
    ends = np.array([[[4, 6], [9, 7]]])                        # after "beta": alpha (invalid), gamma
    end_logits = np.array([[[9.0, 1.0], [0.5, 0.25]]], np.float32)
    candidates = candidates_from_topk(starts, start_logits, ends, end_logits)
    assert candidates.start.tolist() == [[5, 5, 7, 7]] and candidates.end.tolist() == [[4, 6, 9, 7]]
    got = postprocess(dataset, features, candidates, None)
    assert [(x["text"], x["start_logit"], x["end_logit"]) for x in got.nbest["q0"]] == [
        ("beta gamma", 2.0, 1.0), ("delta epsilon zeta", 1.0, 0.5), ("delta", 1.0, 0.25)]
    assert got.predictions["q0"] == "beta gamma"


def test_hand_built_candidates_are_checked():
    features, dataset = make_features([one_window()]), make_dataset(version="1.1")
    # Out of window, question token, reversed, too long, padding: all invalid; (5, 6) is the only good one.
    start = np.array([[40, 2, 6, 4, -1, 5]])
    end = np.array([[41, 5, 5, 11, -1, 6]])
    logits = np.ones_like(start, dtype=np.float32)
    got = postprocess(dataset, features, SpanCandidates(start, end, logits, logits), None, max_answer_length=4)
    assert [x["text"] for x in got.nbest["q0"]] == ["beta gamma"]


def test_bad_inputs_raise():
    features, dataset = make_features([one_window()]), make_dataset()
    s, e = logits_for(features)
    s[0, 6] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        candidates_from_logits(s, e, features, 3)
    with pytest.raises(ValueError, match="null_scores"):
        postprocess(dataset, features, candidates_from_logits(e, e, features, 3), None)
    with pytest.raises(ValueError, match="positions"):
        candidates_from_logits(e[:, :8], e[:, :8], features, 3)
    with pytest.raises(ValueError, match="finite"):
        postprocess(dataset, features, candidates_from_logits(e, e, features, 3), np.array([np.inf]))


def test_write_predictions_atomic_utf8_json(tmp_path, monkeypatch):
    context = "Zürich's café — 東京 “quoted”"
    spans = [(0, 8), (9, 13), (16, 18)]                      # "Zürich's", "café", "東京"
    features = make_features([{"example": 0, "tokens": [None, None] + spans + [None]}])
    dataset = make_dataset(context=context)
    s, e = logits_for(features, width=6, start={0: {3: 2.0}}, end={0: {4: 2.0}}, cls=(-1.0, -1.0))
    preds = vectorized(dataset, features, s, e)
    assert preds.predictions["q0"] == "café — 東京"
    files = write_predictions(tmp_path / "out", preds)
    assert set(files) == {"predictions", "nbest", "na_prob"}
    for path in files.values():
        raw = path.read_bytes()
        assert json.loads(raw.decode("utf-8")) is not None
    assert "東京".encode("utf-8") in files["predictions"].read_bytes()          # stored readable, not \u-escaped
    assert json.loads(files["nbest"].read_text("utf-8")) == preds.nbest
    # Streamed from the columns, byte for byte what json.dumps makes of the materialised dicts.
    assert files["nbest"].read_bytes() == (json.dumps(preds.nbest.to_dict(), indent=2, ensure_ascii=False)
                                           + "\n").encode("utf-8")
    assert json.loads(files["na_prob"].read_text("utf-8")) == preds.na_prob
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "na_prob.json", "nbest_predictions.json", "predictions.json"]

    # A write that fails midway leaves the previous files whole and no temporary files behind.
    before = {name: path.read_bytes() for name, path in files.items()}
    def failing_replace(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_predictions(tmp_path / "out", dataclasses.replace(preds, predictions={"q0": "other"}))
    assert {name: path.read_bytes() for name, path in files.items()} == before
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_v1_without_null_scores_writes_no_na_prob(tmp_path):
    features, dataset = make_features([one_window()]), make_dataset(version="1.1")
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 1.0}})
    files = write_predictions(tmp_path, vectorized(dataset, features, s, e, with_null_scores=False))
    assert set(files) == {"predictions", "nbest"} and not (tmp_path / "na_prob.json").exists()


# ------------------------------------------------------------------------------------------ NBest, JSON, internals
def hand_nbest(qids, contexts, entries_per_question, rows):
    """An NBest from per-entry rows (char_start, char_end, start_logit, end_logit, probability, is_null)."""
    columns = np.array(rows, dtype=np.float64).reshape(-1, 6)
    starts = np.zeros(len(qids) + 1, dtype=np.int64)
    np.cumsum(entries_per_question, out=starts[1:])
    minus_one = np.full(len(columns), -1, dtype=np.int32)
    return NBest(qids=qids, contexts=contexts, example_starts=starts, window=minus_one, start_token=minus_one,
                 end_token=minus_one, char_start=columns[:, 0].astype(np.int64),
                 char_end=columns[:, 1].astype(np.int64), start_logit=columns[:, 2], end_logit=columns[:, 3],
                 probability=columns[:, 4], is_null=columns[:, 5].astype(bool))


def json_text(nbest: NBest, questions_per_chunk: int) -> str:
    return "".join(nbest.json_chunks(questions_per_chunk))


def test_nbest_json_matches_json_dumps_on_awkward_content():
    context = 'He said "x\\y"\n\tand\x01 then 東京 \U0001F600 done'
    qids = ["q0", "q\"1\u00e9", "q2", "q0"]                  # the repeated qid keeps its first place, last list
    rows = [(0, 7, 1.5, -2.25, 0.5, 0), (8, 16, np.inf, 0.1, 0.25, 0), (0, 0, 3.0, 0.0, 0.25, 1),
            (17, 27, -np.inf, np.nan, 1.0, 0),
            (28, 30, 1e-7, 123456789.0, 1.0, 0)]
    nbest = hand_nbest(qids, [context] * 4, [3, 1, 0, 1], rows)
    plain = nbest.to_dict()
    assert list(plain) == ["q0", "q\"1\u00e9", "q2"] and [x["text"] for x in plain["q0"]] == [context[28:30]]
    assert plain["q2"] == [] and len(nbest) == 3
    expected = json.dumps(plain, indent=2, ensure_ascii=False) + "\n"
    assert "Infinity" in expected and "NaN" in expected
    for chunk in (1, 2, 1000):
        assert json_text(nbest, chunk) == expected
    empty = hand_nbest([], [], [], [])
    assert json_text(empty, 10) == json.dumps({}, indent=2) + "\n" and empty.to_dict() == {} and empty == {}


def test_span_candidates_arrays_are_built_from_the_grid_on_demand():
    rng = np.random.default_rng(3)
    starts, ends = rng.integers(0, 9, (4, 3)), rng.integers(0, 9, (4, 3, 2))
    start_logits, end_logits = rng.random((4, 3), dtype=np.float32), rng.random((4, 3, 2), dtype=np.float32)
    topk = candidates_from_topk(starts, start_logits, ends, end_logits)
    assert len(topk) == 4 and topk.num_candidates == 6 and topk.grid is not None
    assert np.array_equal(topk.start, np.repeat(starts, 2, axis=1)) and np.array_equal(topk.end, ends.reshape(4, 6))
    assert np.array_equal(topk.end_logit, end_logits.reshape(4, 6))
    shared = SpanCandidates.from_grid(PairGrid(starts, start_logits, ends[:, 0, :], end_logits[:, 0, :]))
    assert np.array_equal(shared.end, np.tile(ends[:, 0, :], (1, 3)))
    assert np.array_equal(shared.start_logit, np.repeat(start_logits, 2, axis=1))
    with pytest.raises(ValueError, match="one \\(n, C\\) shape"):
        SpanCandidates(starts, starts[:, :2], start_logits, start_logits)


@pytest.mark.parametrize("null", [1.0, np.nextafter(1.0, 2.0), np.nextafter(1.0, 0.0), 1.0 + 1e-12, 1.0 - 1e-12])
def test_null_score_placed_exactly_against_float32_span_scores(null):
    """Span scores are float32, null scores may be any float64: the null goes after every span
    scoring >= it, decided exactly."""
    features, dataset = make_features([one_window()]), make_dataset()
    start, end = np.array([[4, 5, 6]]), np.array([[4, 5, 6]])
    start_logit = np.array([[0.5, 0.25, 0.75]], np.float32)
    end_logit = np.array([[0.5, 0.75, 0.25]], np.float32)              # every span scores exactly 1.0
    nulls = np.array([null])
    got = postprocess(dataset, features, SpanCandidates(start, end, start_logit, end_logit), nulls)
    want = reference_postprocess_candidates(dataset, features, start, end, start_logit, end_logit, nulls)
    assert_same(got, want)
    null_rank = [x["text"] for x in got.nbest["q0"]].index("")
    assert null_rank == (0 if null > 1.0 else 3)


def test_context_not_in_one_run_takes_the_general_path():
    """A window whose context has a gap (a None token inside) or extra trailing tokens."""
    gap = {"example": 0, "tokens": [None, None] + WORD_SPANS[:3] + [None] + WORD_SPANS[3:6] + [None, None]}
    features = make_features([gap, one_window(example=1)])
    assert not context_topk._context_is_one_run(features)
    assert context_topk._context_is_one_run(make_features([one_window(), one_window(example=1)]))
    rng = np.random.default_rng(11)
    for _ in range(5):
        s, e = (rng.integers(-3, 4, (2, 14)).astype(np.float32) for _ in range(2))
        for version in ("2.0", "1.1"):
            dataset = make_dataset(2, version=version)
            options = dict(n_best_size=3, max_answer_length=4)
            assert_same(vectorized(dataset, features, s, e, **options),
                        reference_postprocess(dataset, features, s, e, **options))


def test_nan_logits_outside_the_context_are_never_read():
    features, dataset = make_features([one_window()]), make_dataset()
    s, e = logits_for(features, start={0: {5: 1.0}}, end={0: {5: 1.0}})
    want = vectorized(dataset, features, s, e)
    s[0, 1:4], e[0, 13:] = np.nan, np.inf                      # question tokens; past the window
    assert_same(vectorized(dataset, features, s, e), want)


def test_ranking_sort_fallback_for_wide_keys_agrees():
    """Beyond 64 bits of (example, key, index) the ranking falls back to np.lexsort: same order."""
    rng = np.random.default_rng(2)
    example = rng.integers(0, 50, 3000)
    key = rng.integers(0, 40, 3000).astype(np.uint32)             # many equal keys: the index decides
    want = np.lexsort((np.arange(3000), key, example))
    assert np.array_equal(ranking._sorted_items(example, key, 50), want)
    assert np.array_equal(ranking._sorted_items(example, key, 1 << 40), want)


# ------------------------------------------------------------------------------------------ sort keys
@pytest.mark.parametrize("simd_sort", [True, False])
@pytest.mark.parametrize("width", [1, 20, 128, 129, 200, 257, 400, 1000])
def test_top_block_holds_the_k_largest_and_the_asked_ranks_exactly(width, simd_sort):
    """Both ways (parts sorted; np.partition): the same multiset as the tail of a row sort, and the
    exact columns equal to it; ties, NaN, -inf and padding."""
    rng = np.random.default_rng(width)
    floats = rng.standard_normal((40, width)).astype(np.float32)
    floats[1, ::3], floats[2], floats[3, ::5] = np.nan, -np.inf, np.float32(1.5)
    for values in (floats, rng.integers(0, 4, (40, width)).astype(np.uint32),
                   rng.integers(0, 2**32, (40, width), dtype=np.uint32)):
        for k in sorted({1, min(21, width), min(40, width), min(65, width), width}):
            want = np.sort(values, axis=1)[:, width - k:]
            exact = tuple(sorted({0, k // 2, k - 1}))
            got = row_top.top_block(values, k, exact, simd_sort=simd_sort)
            assert np.array_equal(np.sort(got, axis=1), want, equal_nan=True), (values.dtype, k)
            assert np.array_equal(got[:, list(exact)], want[:, list(exact)], equal_nan=True), (values.dtype, k)
            assert not simd_sort or np.array_equal(got, want, equal_nan=True)
    assert row_top.top_block(np.zeros((0, width), np.float32), 1, (0,), simd_sort=simd_sort).shape == (0, 1)
    with pytest.raises(ValueError, match="k must be"):
        row_top.top_block(floats, width + 1)
    with pytest.raises(ValueError, match="exact columns"):
        row_top.top_block(floats, 1, (1,))


@pytest.mark.slow
def test_full_dev_v2_matches_reference_loop_with_the_other_row_search(dev, monkeypatch):
    """The whole pipeline with the row search numpy's dispatch did not pick on this CPU, too
    (np.partition on CPUs with a SIMD sort, parts sorted on the others)."""
    monkeypatch.setattr(row_top, "ROW_SORT_IS_SIMD", not row_top.ROW_SORT_IS_SIMD)
    test_full_dev_v2_matches_reference_loop(dev)


def window_winners_by_definition(keys: np.ndarray, n_best_size: int) -> np.ndarray:
    """Flat indices, row-major, of the keys whose level (key without its column bits) is at least
    the row's n_best_size-th best key's level, and at least the lowest finite score's level."""
    bits = sort_keys.column_bits(keys.shape[1])
    floor = sort_keys.LOWEST_FINITE_KEY >> bits
    winners = []
    for row, row_keys in enumerate(keys.astype(np.int64)):
        levels = row_keys >> bits
        cut = np.sort(row_keys)[::-1][min(n_best_size, len(row_keys)) - 1] >> bits
        winners += (row * keys.shape[1] + np.flatnonzero(levels >= max(cut, floor))).tolist()
    return np.array(winners, dtype=np.int64)


@pytest.mark.parametrize("seed", range(16))
def test_window_winners_match_their_definition(seed):
    """Random scores with many invalid candidates, and integer scores whose ties overflow the
    2 * n_best_size block (the np.flatnonzero fallback). Seeds 12-15 use grids of 12-20 x 12-20
    candidates: rows wider than row_top's 128, searched in parts."""
    rng = np.random.default_rng(500 + seed)
    k_low, k_high = (1, 9) if seed < 12 else (12, 21)
    n, k_start, k_end, n_best_size = int(rng.integers(1, 30)), int(rng.integers(k_low, k_high)), \
        int(rng.integers(k_low, k_high)), int(rng.integers(1, 8 if seed < 12 else 21))
    if seed % 2:
        start_logits, end_logits = (rng.integers(-2, 2, (n, k)).astype(np.float32) for k in (k_start, k_end))
    else:
        start_logits, end_logits = (rng.standard_normal((n, k)).astype(np.float32) for k in (k_start, k_end))
    start_logits[rng.random(start_logits.shape) < 0.1] = -np.inf
    grid = PairGrid(np.zeros((n, k_start), np.int32), start_logits, np.zeros((n, k_end), np.int32), end_logits)
    checked = dataclasses.replace(grid, starts=np.zeros((n, k_start), np.int16),
                                  ends=np.where(rng.random((n, k_end)) < 0.3, -16_000, 0).astype(np.int16))
    keys = window_search._candidate_keys(None, SpanCandidates.from_grid(grid), checked, slice(None), 30, False)
    got = window_search._window_winners(keys, n_best_size)
    assert np.array_equal(got, window_winners_by_definition(keys, n_best_size))
    assert all(len(set(row.tolist())) == len(row) for row in keys)          # distinct within a row


def test_candidate_keys_order_scores_and_put_invalid_candidates_lowest():
    scores = np.array([[-np.inf, -3.5, -0.0, 0.0, 1e-30, 2.0, np.finfo(np.float32).max]], np.float32)
    grid = PairGrid(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.float32), np.zeros((1, 7), np.int32), scores)
    valid = dataclasses.replace(grid, starts=np.zeros((1, 1), np.int16), ends=np.zeros((1, 7), np.int16),
                                end_logits=scores + np.float32(0.0))
    keys = window_search._candidate_keys(None, None, valid, slice(None), 30, False)[0].astype(np.int64)
    bits = sort_keys.column_bits(7)
    assert np.all(np.diff(keys[1:] >> bits) >= 0) and keys[3] >> bits == keys[2] >> bits      # -0.0 ties 0.0
    assert keys[0] < sort_keys.LOWEST_FINITE_KEY            # -inf never qualifies
    invalid = dataclasses.replace(valid, ends=np.full((1, 7), -16_000, np.int16))
    assert window_search._candidate_keys(None, None, invalid, slice(None), 30, False)[0].tolist() == list(range(7))


@pytest.mark.parametrize("n_best_size", [1, 2, 4])
def test_signed_zero_scores_tie_as_in_the_reference(n_best_size):
    """-0.0 and +0.0 scores are equal, so the tie-break (window, start, end) decides: the first
    pair, (5, 7), scores -0.0 + -0.0 = -0.0 and must not lose to the +0.0 pairs after it."""
    features, dataset = make_features([one_window(), one_window()]), make_dataset()
    s, e = logits_for(features, start={0: {5: -0.0, 6: 0.0}, 1: {5: 0.0, 6: -0.0}},
                      end={0: {7: -0.0, 8: 0.0}, 1: {7: -0.0, 8: 0.0}}, cls=(-9, -9))
    options = dict(n_best_size=n_best_size, max_answer_length=4)
    got = vectorized(dataset, features, s, e, **options)
    assert_same(got, reference_postprocess(dataset, features, s, e, **options))
    assert got.nbest.window[0] == 0 and got.nbest.start_token[0] == 5 and got.nbest.end_token[0] == 7


def test_nan_or_overflowing_valid_candidate_raises_and_an_invalid_one_does_not():
    features, dataset = make_features([one_window()]), make_dataset(version="1.1")
    start, end = np.array([[5, 9]]), np.array([[6, 5]])                 # (9, 5) is reversed: invalid
    logits = np.array([[1.0, np.nan]], np.float32)
    got = postprocess(dataset, features, SpanCandidates(start, end, logits, np.ones_like(logits)), None)
    assert got.predictions["q0"] == "beta gamma"
    with pytest.raises(ValueError, match="NaN"):
        postprocess(dataset, features, SpanCandidates(start[:, ::-1], end, logits, np.ones_like(logits)), None)
    huge = np.full((1, 1), np.finfo(np.float32).max, np.float32)       # max + max overflows to +inf
    overflow = candidates_from_topk(np.array([[5]]), huge, np.array([[[6]]]), huge[:, :, None])
    with pytest.raises(ValueError, match=r"\+inf"):
        postprocess(dataset, features, overflow, None)


@pytest.mark.parametrize("seed", range(30))
def test_context_is_one_run_agrees_with_its_definition(seed):
    """Random layouts: context first (position 0), gaps, trailing tokens, empty runs."""
    rng = np.random.default_rng(900 + seed)
    windows = []
    for example in range(int(rng.integers(1, 5))):
        lead, size, trail = int(rng.integers(0, 3)), int(rng.integers(0, 4)), int(rng.integers(0, 3))
        tokens = [None] * lead + [WORD_SPANS[i] for i in range(size)] + [None] * trail
        if rng.random() < 0.2 and len(tokens) > 2:
            tokens[int(rng.integers(0, len(tokens)))] = None if rng.random() < 0.5 else WORD_SPANS[0]
        if not any(tokens):
            tokens.insert(lead, WORD_SPANS[0])
        windows.append({"example": example, "tokens": tokens})
    features = make_features(windows)
    assert context_topk._context_is_one_run(features) == all(map(context_is_one_run, windows))


def context_is_one_run(window) -> bool:
    """The definition: the context tokens are exactly positions [first context token, length - 1)."""
    is_context = [span is not None for span in window["tokens"]]
    first = is_context.index(True)
    return first < len(is_context) - 1 and is_context == [first <= p < len(is_context) - 1
                                                         for p in range(len(is_context))]
