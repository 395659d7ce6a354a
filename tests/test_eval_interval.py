"""--eval_interval: evaluations during training, recorded in results.json metrics.evaluations,
without changing the training itself (the model goes back to training mode)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.apps import report
from bench.apps.run import main as run_squad
from bench.core.results import load_results, validate_results
from tests.test_run_squad import base_args, read_weights


@pytest.fixture(scope="module")
def two_runs(tiny_model, sample_files, tmp_path_factory):
    """The same run without and with --eval_interval 2 (5 updates)."""
    model = tiny_model("bert")          # dropout 0.1: an evaluation left in eval mode would change the losses
    root = tmp_path_factory.mktemp("eval_interval")
    plain, evaluated = root / "plain", root / "evaluated"
    assert run_squad(base_args(model, sample_files["2.0"], plain, num_train_steps=5)) == 0
    assert run_squad(base_args(model, sample_files["2.0"], evaluated, num_train_steps=5,
                               eval_interval=2)) == 0
    return plain, evaluated


def test_eval_interval_records_every_evaluation_and_leaves_training_unchanged(two_runs):
    plain, evaluated = two_runs
    record = load_results(evaluated / "results.json")
    assert validate_results(record) == []
    evaluations = record["metrics"]["evaluations"]
    assert [e["update"] for e in evaluations] == [2, 4, 5]
    for entry in evaluations:
        assert 0 <= entry["exact"] <= 100 and 0 <= entry["f1"] <= 100
        assert {"HasAns_exact", "NoAns_exact"} <= set(entry) or "total" in entry
    # The last one is the evaluation stage's; the best is chosen as without --eval_interval.
    assert evaluations[-1]["exact"] == record["metrics"]["fixed"]["exact"]
    assert evaluations[-1]["checkpoint"] == record["metrics"]["best_checkpoint"]
    # Training is the same update for update: losses and final weights.
    losses = [[json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
              for out in (plain, evaluated)]
    assert losses[0] == losses[1]
    assert "evaluations" not in load_results(plain / "results.json")["metrics"]
    ckpt = sorted((plain / "checkpoints").iterdir())[-1].name
    a = read_weights(next((plain / "checkpoints" / ckpt).glob("*.safetensors")))
    b = read_weights(next((evaluated / "checkpoints" / ckpt).glob("*.safetensors")))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_eval_interval_must_be_positive(tiny_model, sample_files, tmp_path, capsys):
    assert run_squad(base_args(tiny_model("bert"), sample_files["2.0"], tmp_path / "r", eval_interval=0)) == 2
    assert "--eval_interval must be positive" in capsys.readouterr().err


def test_report_draws_loss_and_eval_curves_per_configuration(two_runs, tmp_path):
    from bench.apps.report.curves import evaluations, train_losses
    from bench.apps.report.runs import collect_runs, group_runs

    plain, evaluated = two_runs
    fixture = Path(__file__).resolve().parent / "fixtures" / "runs" / "bert_base_torch"    # no logs at all
    out = tmp_path / "report"
    assert report.main(["--out", str(out), "--runs", str(evaluated), str(fixture)]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "## Training curves" in text
    links = re.findall(r"\]\((curves/[^)]+\.png)\)", text)
    assert len(links) == 1                  # the fixture run has neither log: not drawn, no error
    assert (out / links[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (run,) = [r for r in collect_runs([evaluated])[0]]
    assert [u for u, _ in train_losses(run)] == [1, 2, 3, 4, 5]
    assert [u for u, _, _ in evaluations(run)] == [2, 4, 5]
    # A run with a training log but no evaluations, and a torn log line, are drawn all the same.
    (plain / "train_log.jsonl").write_text((plain / "train_log.jsonl").read_text() + '{"update": 6, "lo')
    runs, _ = collect_runs([plain])
    assert [u for u, _ in train_losses(runs[0])] == [1, 2, 3, 4, 5] and evaluations(runs[0]) == []
    assert report.main(["--out", str(tmp_path / "report2"), "--runs", str(plain)]) == 0
    assert re.findall(r"\]\((curves/[^)]+\.png)\)", (tmp_path / "report2" / "README.md").read_text())
    assert [g for g in group_runs(runs)]


@pytest.mark.slow
def test_eval_interval_and_trackers_under_torchrun(tiny_model, sample_files, tmp_path):
    """2 processes: every rank takes part in each evaluation, only rank 0 records and reports."""
    from tests.test_distributed_run import digests, launch

    out = tmp_path / "two"
    proc = launch("torchrun", 2, base_args(tiny_model("bert"), sample_files["2.0"], out, batch_size=2,
                                           num_train_steps=4, max_eval_samples=10, eval_interval=2,
                                           report_to="tensorboard"))
    ranks = digests(proc)
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1], ranks
    record = load_results(out / "results.json")
    assert [e["update"] for e in record["metrics"]["evaluations"]] == [2, 4]
    assert len(list((out / "tensorboard").iterdir())) == 1          # one event file: rank 0's
