"""bench.evaluate: EM / F1 scoring with the official SQuAD 1.1 and 2.0 semantics, and its command line.

Hand-computed cases cover each rule; on the full dev sets the module is checked
against gold predictions and against a second, deliberately different
implementation written below from the same rules.
"""
from __future__ import annotations

import functools
import gzip
import json
import logging
import random
import re
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core.data import Answer, SquadDataset, SquadExample
from bench.apps.evaluate import main
from bench.core.scoring import evaluate, exact_match, normalize_answer, token_f1
from tests.test_data import GZIP_CORRUPTIONS, corrupt_gzip

REPO_ROOT = Path(__file__).resolve().parent.parent
V2_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
           "NoAns_exact", "NoAns_f1", "NoAns_total"]
BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def dataset(version: str, questions: list[tuple[str, list[str]]]) -> SquadDataset:
    """An in-memory dataset: (id, gold texts) per question; no golds = unanswerable."""
    examples = [SquadExample(qid, "t", "context", "question?", [Answer(text, 0) for text in golds],
                             is_impossible=not golds) for qid, golds in questions]
    return SquadDataset(path="memory.json", version=version, examples=examples, sha256="")


# -- normalization and per-answer scores -----------------------------------------------------

@pytest.mark.parametrize("text, normalized", [
    ("The Cat", "cat"),                                  # lowercase, article dropped
    ("  An apple,  a day!\n", "apple day"),              # punctuation, articles, whitespace
    ("theater anthem another", "theater anthem another"),  # articles only as whole words
    ("The the THE", ""),
    ("A.B.C.", "abc"),                                   # punctuation goes first, so no article is left
    ("a-the", "athe"),
    ("(a) an", ""),
    ("Don't stop", "dont stop"),
    ("tabs\tand\nnewlines  here", "tabs and newlines here"),
    ("café – naïve «x»", "café – naïve «x»"),            # only ASCII punctuation is removed
    ("$1,000.50", "100050"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_and_token_f1_by_hand():
    assert exact_match("The Denver Broncos!", "denver broncos") == 1
    assert exact_match("Denver", "Denver Broncos") == 0
    def f1(prediction, gold, v2=False):
        return token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split(),
                        empty_matches_empty=v2)

    assert f1("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)   # p 2/3, r 1
    assert f1("red", "big red dog") == pytest.approx(0.5)                          # p 1, r 1/3
    assert f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)                # bags, not sets
    assert f1("London", "Paris") == 0.0                                            # no overlap
    assert f1("", "the") == 0.0 and f1("", "the", v2=True) == 1.0                 # both empty
    assert f1("", "Paris", v2=True) == 0.0 and f1("Paris", "an", v2=True) == 0.0  # one empty


# -- SQuAD 1.1 -------------------------------------------------------------------------------

def test_v1_scores_missing_and_extra_predictions():
    data = dataset("1.1", [("a", ["Denver Broncos", "the Broncos"]), ("b", ["big red dog"]),
                           ("c", ["Paris"]), ("d", ["Rome"])])
    predictions = {"a": "Broncos", "b": "red", "c": "London", "extra": "ignored"}
    result = evaluate(data, predictions)
    # a: EM 1 via the second gold, F1 1; b: EM 0, F1 0.5; c: 0, 0; d: missing -> 0 but counted
    assert list(result) == ["exact_match", "f1"]
    assert result["exact_match"] == pytest.approx(25.0)
    assert result["f1"] == pytest.approx(37.5)


def test_v1_missing_predictions_are_reported_in_one_line(caplog):
    data = dataset("1.1", [(f"q{i}", ["x"]) for i in range(8)])
    with caplog.at_level(logging.WARNING, logger="bench.core.scoring"):
        result = evaluate(data, {"q0": "x"})
    assert result == {"exact_match": 12.5, "f1": 12.5}
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("7 of 8 questions have no prediction")
    assert "(q1, q2, q3, q4, q5, ...)" in warnings[0]


def test_v1_gold_that_normalizes_to_nothing():
    # SQuAD 1.1 keeps such a gold: EM compares "" == "", F1 has no overlapping token
    result = evaluate(dataset("1.1", [("a", ["The"])]), {"a": "an"})
    assert result == {"exact_match": 100.0, "f1": 0.0}


def test_v1_rejects_no_answer_probabilities_and_bad_prediction_types():
    data = dataset("1.1", [("a", ["x"])])
    with pytest.raises(ValueError, match="SQuAD 2.0 only"):
        evaluate(data, {"a": "x"}, na_probs={"a": 0.5})
    with pytest.raises(ValueError, match="prediction for question 'a' should be a string, got list"):
        evaluate(data, {"a": ["x"]})


# -- SQuAD 2.0 -------------------------------------------------------------------------------

V2_QUESTIONS = [("q1", ["Denver Broncos"]), ("q2", []), ("q3", ["big red dog"]), ("q4", []),
                ("q5", ["Denver Broncos"])]
V2_PREDICTIONS = {"q1": "Denver Broncos", "q2": "foo", "q3": "red", "q4": "", "q5": "Denver Broncos team",
                  "not-in-data": "ignored"}
V2_NA_PROBS = {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 0.4, "q5": 0.5}
# per question (EM, F1): q1 (1, 1), q2 (0, 0), q3 (0, 0.5), q4 (1, 1), q5 (0, 0.8)


def test_v2_hand_computed_scores_and_key_order():
    result = evaluate(dataset("2.0", V2_QUESTIONS), V2_PREDICTIONS)
    assert list(result) == V2_KEYS
    assert result == pytest.approx({
        "exact": 40.0, "f1": 66.0, "total": 5,
        "HasAns_exact": 100 / 3, "HasAns_f1": 230 / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})


def test_v2_best_threshold_walk_by_hand():
    result = evaluate(dataset("2.0", V2_QUESTIONS), V2_PREDICTIONS, na_probs=V2_NA_PROBS)
    assert list(result) == V2_KEYS + BEST_KEYS
    # start at 2 (both unanswerable right when everything is answered empty), ascending na-prob:
    # EM: q1 +1 -> 3 (best, at 0.1), q2 -1 -> 2, q3 +0, q4 +0, q5 +0    -> 3/5, thresh 0.1
    # F1: q1 +1 -> 3 (0.1), q2 -1 -> 2, q3 +0.5, q4 +0, q5 +0.8 -> 3.3 -> 3.3/5, thresh 0.5
    assert result["best_exact"] == pytest.approx(60.0) and result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(66.0) and result["best_f1_thresh"] == 0.5
    assert result["exact"] == pytest.approx(40.0)       # the default threshold 1.0 changes nothing


def test_v2_na_prob_threshold_answers_empty_above_it():
    result = evaluate(dataset("2.0", V2_QUESTIONS), V2_PREDICTIONS, na_probs=V2_NA_PROBS, na_prob_thresh=0.25)
    # q3, q4, q5 count as answered empty: q3 0, q4 1, q5 0; q1 and q2 unchanged
    assert result["exact"] == pytest.approx(40.0) and result["f1"] == pytest.approx(40.0)
    assert result["HasAns_f1"] == pytest.approx(100 / 3) and result["NoAns_exact"] == pytest.approx(50.0)
    # the best_* walk uses the raw scores, before thresholding
    assert (result["best_f1"], result["best_f1_thresh"]) == (pytest.approx(66.0), 0.5)


def test_v2_missing_na_probs_default_to_zero():
    result = evaluate(dataset("2.0", V2_QUESTIONS), V2_PREDICTIONS, na_probs={})
    # all at 0.0: walked in dataset order, the same totals as above, reached at threshold 0.0
    assert (result["best_exact"], result["best_exact_thresh"]) == (pytest.approx(60.0), 0.0)
    assert (result["best_f1"], result["best_f1_thresh"]) == (pytest.approx(66.0), 0.0)


def test_v2_ties_in_na_prob_keep_dataset_order():
    probs = {"a": 0.5, "b": 0.5}
    predictions = {"a": "wrong", "b": "Paris"}
    # unanswerable first: -1 then +1, never above the start (1 of 2)
    first = evaluate(dataset("2.0", [("a", []), ("b", ["Paris"])]), predictions, na_probs=probs)
    assert (first["best_exact"], first["best_exact_thresh"]) == (50.0, 0.0)
    # answerable first: +1 reaches 2 of 2 at 0.5
    second = evaluate(dataset("2.0", [("b", ["Paris"]), ("a", [])]), predictions, na_probs=probs)
    assert (second["best_exact"], second["best_exact_thresh"]) == (100.0, 0.5)


def test_v2_golds_that_normalize_to_nothing_become_the_empty_answer():
    data = dataset("2.0", [("a", ["The", "a"]), ("b", ["the", "Paris"])])
    # a: no gold left -> [""]: an empty or article-only prediction matches (both empty: F1 1)
    # b: "the" dropped, "Paris" kept: an empty prediction scores 0
    result = evaluate(data, {"a": "an", "b": ""})
    assert (result["exact"], result["f1"]) == (50.0, 50.0)
    assert result["HasAns_total"] == 2 and "NoAns_total" not in result   # has answers, though empty ones
    assert evaluate(data, {"a": "cat", "b": "the Paris"})["f1"] == 50.0


def test_v2_subsets_appear_only_when_present():
    answerable = evaluate(dataset("2.0", [("a", ["x"])]), {"a": "x"})
    assert list(answerable) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total"]
    unanswerable = evaluate(dataset("2.0", [("a", [])]), {"a": ""})
    assert list(unanswerable) == ["exact", "f1", "total", "NoAns_exact", "NoAns_f1", "NoAns_total"]
    assert unanswerable["exact"] == 100.0


def test_v2_missing_predictions_score_zero(caplog):
    with caplog.at_level(logging.WARNING, logger="bench.core.scoring"):
        result = evaluate(dataset("2.0", [("a", []), ("b", ["x"])]), {"b": "x"})
    assert (result["exact"], result["total"], result["NoAns_exact"]) == (50.0, 2, 0.0)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["1 of 2 questions have no prediction and score 0 (a)"]


# -- the full dev sets (dev_v1, dev_v2: tests/conftest.py) ----------------------------------

def test_gold_predictions_score_100_on_dev_v1(dev_v1):
    predictions = {example.qid: example.answers[0].text for example in dev_v1.examples}
    assert evaluate(dev_v1, predictions) == {"exact_match": 100.0, "f1": 100.0}


def test_v1_punctuation_only_gold_on_real_data(dev_v1):
    # a real dev question whose last gold answer is ".": predicting it is an exact match, yet under
    # the 1.1 rules no token overlaps, so F1 is 0 (SQuAD 2.0 would give 1: both sides empty)
    example = next(ex for ex in dev_v1.examples if ex.answers[-1].text == ".")
    single = SquadDataset("memory.json", "1.1", [example], "")
    assert evaluate(single, {example.qid: "."}) == {"exact_match": 100.0, "f1": 0.0}


def test_gold_predictions_score_100_on_dev_v2(dev_v2):
    predictions = {ex.qid: ex.answers[0].text if ex.answers else "" for ex in dev_v2.examples}
    result = evaluate(dev_v2, predictions)
    assert result == {"exact": 100.0, "f1": 100.0, "total": 11873, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                      "HasAns_total": 5928, "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 5945}


def test_empty_predictions_score_the_no_answer_share_on_dev_v2(dev_v2):
    result = evaluate(dev_v2, {example.qid: "" for example in dev_v2.examples})
    share = 5945 / 11873 * 100
    assert result["exact"] == pytest.approx(share) and result["f1"] == pytest.approx(share)
    assert (result["HasAns_exact"], result["HasAns_f1"], result["NoAns_exact"]) == (0.0, 0.0, 100.0)


def test_full_dev_v2_scores_fast(dev_v2):
    predictions = {ex.qid: ex.answers[0].text if ex.answers else "" for ex in dev_v2.examples}
    started = time.process_time()          # CPU time: the cores are shared with other jobs
    evaluate(dev_v2, predictions, na_probs={qid: 0.5 for qid in predictions})
    assert time.process_time() - started < 1.0


# An independent implementation of the same rules, to check the module against on real data. It reads
# the raw JSON itself and shares no code with bench: characters are filtered one by one, articles
# removed as whole runs of word characters (what the regex word boundary delimits), bags intersected
# by removing matched tokens from a list.

_PUNCTUATION = set(string.punctuation)


@functools.lru_cache(maxsize=None)      # gold texts repeat; keeps the simple code affordable
def ref_normalize(text: str) -> str:
    kept = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    runs = re.split(r"(\w+)", kept)      # odd positions: runs of word characters, as \b delimits them
    return " ".join("".join(" " if run in ("a", "an", "the") else run for run in runs).split())


def ref_f1(prediction: str, gold: str, v2: bool) -> float:
    predicted, expected = ref_normalize(prediction).split(), ref_normalize(gold).split()
    if v2 and (not predicted or not expected):
        return float(predicted == expected)
    unmatched, common = list(expected), 0
    for token in predicted:
        if token in unmatched:
            unmatched.remove(token)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def raw_questions(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [dict(qa, context=paragraph["context"])
            for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def mixed_predictions(questions: list[dict], seed: int) -> dict[str, str]:
    """Right, partly right, wrong, empty and missing answers, with articles and punctuation."""
    rnd = random.Random(seed)
    predictions = {"not-a-question": "ignored"}
    for qa in questions:
        golds = [answer["text"] for answer in qa["answers"]] or ["nothing"]
        gold, words = rnd.choice(golds), rnd.choice(golds).split()
        start = rnd.randrange(max(1, len(qa["context"]) - 40))
        options = [gold, f"The {gold}!", " ".join(words[:1]), " ".join(words[1:] + ["extra", "words"]),
                   qa["context"][start:start + 40], "", gold.upper(), None]
        choice = rnd.choice(options)
        if choice is not None:
            predictions[qa["id"]] = choice
    return predictions


def ref_scores(questions: list[dict], predictions: dict, v2: bool) -> tuple[list[int], list[float]]:
    exact, f1 = [], []
    for qa in questions:
        golds = [answer["text"] for answer in qa["answers"]]
        if v2:
            golds = [gold for gold in golds if ref_normalize(gold)] or [""]
        if qa["id"] not in predictions:
            exact.append(0)
            f1.append(0.0)
            continue
        prediction = predictions[qa["id"]]
        exact.append(max(int(ref_normalize(prediction) == ref_normalize(gold)) for gold in golds))
        f1.append(max(ref_f1(prediction, gold, v2) for gold in golds))
    return exact, f1


def ref_best(questions, predictions, probs, scores) -> tuple[float, float]:
    order = sorted(range(len(questions)), key=lambda i: probs.get(questions[i]["id"], 0.0))
    running = best = sum(1 for qa in questions if not qa["answers"])
    best_thresh = 0.0
    for i in order:
        qa = questions[i]
        if qa["answers"]:
            running += scores[i]
        elif predictions.get(qa["id"], ""):
            running -= 1
        if running > best:
            best, best_thresh = running, probs.get(qa["id"], 0.0)
    return 100 * best / len(questions), best_thresh


def test_mixed_predictions_on_dev_v1_match_an_independent_computation(squad_dir, dev_v1):
    questions = raw_questions(squad_dir / "dev-v1.1.rebuilt.json.gz")
    predictions = mixed_predictions(questions, seed=11)
    exact, f1 = ref_scores(questions, predictions, v2=False)
    result = evaluate(dev_v1, predictions)
    assert result["exact_match"] == pytest.approx(100 * sum(exact) / len(questions), abs=1e-9)
    assert result["f1"] == pytest.approx(100 * sum(f1) / len(questions), abs=1e-9)
    assert 20 < result["f1"] < 80                      # a mix, not a degenerate case


def test_mixed_predictions_on_dev_v2_match_an_independent_computation(squad_dir, dev_v2):
    questions = raw_questions(squad_dir / "dev-v2.0.rebuilt.json.gz")
    predictions = mixed_predictions(questions, seed=22)
    rnd = random.Random(3)
    probs = {qa["id"]: round(rnd.random(), 2) for qa in questions[:-100]}   # ties; 100 left at 0.0
    thresh = 0.7
    raw_exact, raw_f1 = ref_scores(questions, predictions, v2=True)
    exact, f1 = list(raw_exact), list(raw_f1)
    for i, qa in enumerate(questions):
        if qa["id"] in predictions and probs.get(qa["id"], 0.0) > thresh:
            exact[i] = f1[i] = float(not qa["answers"])
    result = evaluate(dev_v2, predictions, na_probs=probs, na_prob_thresh=thresh)
    has_answer = [i for i, qa in enumerate(questions) if qa["answers"]]
    no_answer = [i for i, qa in enumerate(questions) if not qa["answers"]]
    expected = {"exact": 100 * sum(exact) / len(questions), "f1": 100 * sum(f1) / len(questions),
                "total": len(questions),
                "HasAns_exact": 100 * sum(exact[i] for i in has_answer) / len(has_answer),
                "HasAns_f1": 100 * sum(f1[i] for i in has_answer) / len(has_answer), "HasAns_total": 5928,
                "NoAns_exact": 100 * sum(exact[i] for i in no_answer) / len(no_answer),
                "NoAns_f1": 100 * sum(f1[i] for i in no_answer) / len(no_answer), "NoAns_total": 5945}
    expected["best_exact"], expected["best_exact_thresh"] = ref_best(questions, predictions, probs, raw_exact)
    expected["best_f1"], expected["best_f1_thresh"] = ref_best(questions, predictions, probs, raw_f1)
    assert list(result) == V2_KEYS + BEST_KEYS
    assert result == pytest.approx(expected, abs=1e-9)


# -- command line ----------------------------------------------------------------------------

def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def v2_files(tmp_path):
    context = "Denver Broncos big red dog"
    qas = [{"id": qid, "question": "?", "is_impossible": not golds,
            "answers": [{"text": gold, "answer_start": context.index(gold)} for gold in golds]}
           for qid, golds in V2_QUESTIONS]
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    return (write_json(tmp_path / "dev.json", data), write_json(tmp_path / "pred.json", V2_PREDICTIONS),
            write_json(tmp_path / "na.json", V2_NA_PROBS))


def test_cli_v2_prints_and_writes_the_result(v2_files, tmp_path, capsys):
    data_file, pred_file, na_file = v2_files
    out_file = tmp_path / "out" / "scores.json"
    argv = [str(data_file), str(pred_file), "--na-prob-file", str(na_file), "--out-file", str(out_file)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed)
    assert list(result) == V2_KEYS + BEST_KEYS and printed.startswith("{\n  \"exact\": 40.0")
    assert json.loads(out_file.read_text()) == result
    assert result["best_f1_thresh"] == 0.5


def test_cli_na_prob_thresh(v2_files, capsys):
    data_file, pred_file, na_file = v2_files
    assert main([str(data_file), str(pred_file), "-n", str(na_file), "-t", "0.25"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(40.0)


@pytest.mark.parametrize("content, part", [
    ("{oops", "not valid JSON"),
    ("[\"a\"]", "should be a JSON object mapping question id to answer text, got list"),
    ("{\"q1\": 3}", "prediction for question 'q1' should be a string, got int"),
])
def test_cli_bad_prediction_files_exit_2_with_one_line(v2_files, tmp_path, capsys, content, part):
    data_file = v2_files[0]
    bad = tmp_path / "bad-pred.json"
    bad.write_text(content, encoding="utf-8")
    assert main([str(data_file), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and str(bad) in captured.err and part in captured.err


@pytest.mark.parametrize("na_content, part", [
    ("{\"q1\": \"high\"}", "no-answer probability for question 'q1' should be a number, got str"),
    ("[0.5]", "no-answer probabilities should be a JSON object"),
])
def test_cli_bad_na_prob_files_exit_2(v2_files, tmp_path, capsys, na_content, part):
    data_file, pred_file, _ = v2_files
    bad = tmp_path / "bad-na.json"
    bad.write_text(na_content, encoding="utf-8")
    assert main([str(data_file), str(pred_file), "--na-prob-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and part in err


def test_cli_data_file_problems_exit_2(v2_files, tmp_path, capsys, squad_dir):
    _, pred_file, na_file = v2_files
    assert main([str(tmp_path / "missing.json"), str(pred_file)]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    assert main([str(squad_dir / "xquad.en.json.gz"), str(pred_file), "--na-prob-file", str(na_file)]) == 2
    assert "SQuAD 2.0 only" in capsys.readouterr().err


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("na_probs, ids", [
    ({qid: float("nan") for qid, _ in V2_QUESTIONS}, "'q1', 'q2', 'q3'"),       # all NaN
    ({**V2_NA_PROBS, "q2": float("nan"), "q4": float("nan")}, "'q2', 'q4'"),  # some NaN
    ({**V2_NA_PROBS, "q5": float("inf")}, "'q5'"),
    ({**V2_NA_PROBS, "q3": float("-inf")}, "'q3'"),
])
def test_cli_non_finite_na_probs_exit_2_naming_ids_and_file(v2_files, tmp_path, capsys, na_probs, ids):
    data_file, pred_file, _ = v2_files
    bad = write_json(tmp_path / "na-nan.json", na_probs)       # Python writes NaN / Infinity
    out_file = tmp_path / "scores.json"
    assert main([str(data_file), str(pred_file), "-n", str(bad), "-o", str(out_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert str(bad) in captured.err and "NaN or infinite" in captured.err and ids in captured.err
    assert not out_file.exists()


def test_non_finite_na_probs_in_memory_are_refused():
    data = dataset("2.0", V2_QUESTIONS)
    nan = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite for 6 of 6 questions \('q1', 'q2', 'q3', 'q4', 'q5', \.\.\.\)"):
        evaluate(data, V2_PREDICTIONS, na_probs={qid: nan for qid, _ in V2_QUESTIONS} | {"q6": nan})
    with pytest.raises(ValueError, match="na_prob_thresh is NaN"):
        evaluate(data, V2_PREDICTIONS, na_probs=V2_NA_PROBS, na_prob_thresh=nan)


def test_infinite_threshold_never_answers_empty_by_threshold():
    # what a run does with its raw null-score differences: only the best_* keys use them
    data = dataset("2.0", V2_QUESTIONS)
    result = evaluate(data, V2_PREDICTIONS, na_probs=V2_NA_PROBS, na_prob_thresh=float("inf"))
    assert result == evaluate(data, V2_PREDICTIONS, na_probs=V2_NA_PROBS, na_prob_thresh=1.0)
    assert strict_json(json.dumps(result)) == result
    everything_empty = evaluate(data, V2_PREDICTIONS, na_probs=V2_NA_PROBS, na_prob_thresh=float("-inf"))
    assert everything_empty["exact"] == everything_empty["NoAns_total"] * 100 / 5


@pytest.mark.parametrize("thresh", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_cli_non_finite_na_prob_thresh_exit_2_naming_the_flag(v2_files, capsys, thresh):
    data_file, pred_file, na_file = v2_files
    assert main([str(data_file), str(pred_file), "-n", str(na_file), f"--na-prob-thresh={thresh}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "--na-prob-thresh" in captured.err and "finite" in captured.err


def test_cli_output_is_strict_json(v2_files, tmp_path, capsys):
    data_file, pred_file, na_file = v2_files
    out_file = tmp_path / "scores.json"
    assert main([str(data_file), str(pred_file), "-n", str(na_file), "-o", str(out_file)]) == 0
    assert strict_json(capsys.readouterr().out) == strict_json(out_file.read_text())


@pytest.mark.parametrize("kind", GZIP_CORRUPTIONS)
@pytest.mark.parametrize("which", ["data", "predictions"])
def test_cli_corrupt_gzip_exit_2_with_one_line(v2_files, tmp_path, capsys, kind, which):
    data_file, pred_file, _ = v2_files
    source = data_file if which == "data" else pred_file
    bad = corrupt_gzip(tmp_path / f"{which}.json.gz", source.read_bytes(), kind)
    argv = [str(bad), str(pred_file)] if which == "data" else [str(data_file), str(bad)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"evaluate: error: {bad}: ")


def test_python_dash_m_on_real_v1_data(squad_dir, tmp_path):
    data_file = squad_dir / "xquad.en.json.gz"
    predictions = {qa["id"]: qa["answers"][0]["text"] for qa in raw_questions(data_file)}
    pred_file = write_json(tmp_path / "pred.json", predictions)
    done = subprocess.run([sys.executable, "-m", "bench.evaluate", str(data_file), str(pred_file)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"exact_match": 100.0, "f1": 100.0}\n'
