"""Token accuracy: start, end and joint accuracy of the top positions against the evaluation windows' labels,
recorded in best_results.json / results.json and usable to pick the best checkpoint (--select_best_by)."""
from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest

from bench.core.data import Answer, SquadExample
from bench.core.features import FeatureParams, build_features
from bench.core.heads import allocate_outputs
from bench.core.results import load_results, validate_results
from bench.run.pipeline import BestCheckpoint, selection_score, token_accuracy

CONTEXT = ("The quick brown fox jumps over the lazy dog near the river bank. " * 6
           + "Paris is the capital of France and its largest city. " + "Nothing else happens here at all. " * 6)


def _examples() -> list[SquadExample]:
    start = CONTEXT.index("Paris")
    return [
        # two gold answers (SQuAD 1.1 dev style): the label is the first one, "Paris"
        SquadExample("q1", "t", CONTEXT, "What is the capital of France?",
                     [Answer("Paris", start), Answer("France", CONTEXT.index("France"))]),
        SquadExample("q2", "t", CONTEXT, "What does the fox do?", [], is_impossible=True),
    ]


@pytest.fixture(scope="module")
def eval_features(bert_tokenizer):
    params = FeatureParams(max_seq_length=48, max_query_length=16, doc_stride=16)
    return build_features(_examples(), bert_tokenizer, params, is_training=False)


def test_evaluation_windows_are_labelled_like_training(eval_features, bert_tokenizer):
    features = eval_features
    params = features.params
    training = build_features(_examples(), bert_tokenizer, params, is_training=True)
    np.testing.assert_array_equal(features.start_positions, training.start_positions)
    np.testing.assert_array_equal(features.end_positions, training.end_positions)
    first = features.example_index == 0
    labelled = first & (features.start_positions > 0)
    assert labelled.any() and (first & (features.start_positions == 0)).any()   # windows without the answer: CLS
    for i in np.flatnonzero(labelled):   # the first gold answer's tokens
        ids = features.input_ids[features.window(i)][features.start_positions[i]:features.end_positions[i] + 1]
        assert bert_tokenizer.decode(ids) == "paris"
    impossible = features.example_index == 1
    assert (features.start_positions[impossible] == 0).all() and (features.end_positions[impossible] == 0).all()


def _logit_outputs(features, starts, ends) -> dict:
    outputs = allocate_outputs("basic", len(features), int(features.lengths.max()), 5, 5)
    rows = np.arange(len(features))
    outputs["start_logits"][:] = 0.0
    outputs["end_logits"][:] = 0.0
    outputs["start_logits"][rows, starts] = 5.0
    outputs["end_logits"][rows, ends] = 5.0
    return outputs


def test_token_accuracy_of_logits_and_topk_heads(eval_features):
    features = eval_features
    n = len(features)
    starts, ends = features.start_positions.astype(np.int64).copy(), features.end_positions.astype(np.int64).copy()
    starts[0] += 1                       # window 0: start wrong
    ends[1] += 1                         # window 1: end wrong
    starts[2] += 1
    ends[2] += 1                         # window 2: both wrong
    expected = {"start": (n - 2) / n, "end": (n - 2) / n, "joint": (n - 3) / n, "windows": n}
    assert token_accuracy("basic", features, _logit_outputs(features, starts, ends)) == pytest.approx(expected)
    assert token_accuracy("bilstm", features, _logit_outputs(features, starts, ends)) == pytest.approx(expected)

    topk = allocate_outputs("conditional", n, int(features.lengths.max()), 3, 2)
    topk["start_top_index"][:, 0] = starts
    topk["start_top_index"][:, 1] = features.start_positions    # only the top start counts
    topk["end_top_index"][:, 0, 0] = ends
    topk["end_top_index"][:, 0, 1] = features.end_positions     # only the top start's top end counts
    topk["end_top_index"][:, 1, 0] = features.end_positions
    assert token_accuracy("conditional", features, topk) == pytest.approx(expected)


def test_selection_by_joint_accuracy():
    low_em = {"fixed": {"exact_match": 10.0, "f1": 20.0}, "tuned": None,
              "token_accuracy": {"start": 0.9, "end": 0.9, "joint": 0.8, "windows": 10}}
    high_em = {"fixed": {"exact_match": 50.0, "f1": 60.0}, "tuned": None,
               "token_accuracy": {"start": 0.5, "end": 0.5, "joint": 0.4, "windows": 10}}
    assert selection_score(low_em, "1.1") == 15.0                     # the default is today's rule
    assert selection_score(low_em, "1.1", "joint_accuracy") == 0.8
    with pytest.raises(ValueError, match="select_best_by"):
        selection_score(low_em, "1.1", "loss")
    for by, winner in (("em_f1", "b"), ("joint_accuracy", "a")):
        best = BestCheckpoint(SimpleNamespace(version="1.1", select_best_by=by), output_dir=".", num_candidates=1)
        best.offer("a", low_em, None)
        best.offer("b", high_em, None)
        assert best.best["checkpoint"] == winner, by


def test_run_records_token_accuracy_and_selects_by_it(tiny_dirs, sample_files, tmp_path, caplog):
    from bench.apps.run import main as run_squad
    from tests.test_run_squad import base_args

    caplog.set_level(logging.INFO, logger="bench.run.pipeline")
    out = tmp_path / "run"
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["1.1"], out, version="1.1", num_train_steps=2,
                               save_interval=1, all_evaluate=True, head="basic", max_eval_samples=10,
                               select_best_by="joint_accuracy")) == 0
    record = load_results(out / "results.json")
    accuracy = record["metrics"]["token_accuracy"]
    assert set(accuracy) == {"start", "end", "joint", "windows"}
    assert accuracy["windows"] == record["data"]["num_eval_features"]
    assert 0.0 <= accuracy["joint"] <= min(accuracy["start"], accuracy["end"]) <= 1.0
    best = json.loads((out / "best_results.json").read_text())
    assert best["token_accuracy"] == accuracy
    # The log line of each checkpoint carries its token accuracy; the best is the highest joint (first on ties).
    lines = re.findall(r"eval (update_\d+): .*token accuracy start \S+ end \S+ joint (\S+) over (\d+) windows",
                       caplog.text)
    assert [name for name, _, _ in lines] == ["update_1", "update_2"]
    joints = [float(joint) for _, joint, _ in lines]
    assert record["metrics"]["best_checkpoint"] == lines[int(np.argmax(joints))][0]
    assert record["hyperparameters"]["select_best_by"] == "joint_accuracy"

    # The optional field is validated when present, and its absence is fine (older records).
    assert validate_results(record) == []
    del record["metrics"]["token_accuracy"]
    assert validate_results(record) == []
    record["metrics"]["token_accuracy"] = {"start": 1.5, "end": 0.5, "joint": True, "windows": -1}
    problems = validate_results(record)
    assert any("token_accuracy.start" in p for p in problems) and any("token_accuracy.joint" in p for p in problems)
    assert any("token_accuracy.windows" in p for p in problems) and not any(".end" in p for p in problems)
