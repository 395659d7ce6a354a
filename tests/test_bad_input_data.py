"""Input data a run cannot use fails at once, in one line naming the file: empty training and dev
sets, a training set the loader empties, corrupt gzip files. Nothing here may hang or print a
traceback; the run script is driven through its real CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.apps.run import main as run_squad
from bench.core.errors import BenchError
from bench.core.flags import config_from_dict
from bench.run.pipeline import plan_epoch, total_updates, updates_per_epoch
from tests.test_data import GZIP_CORRUPTIONS, corrupt_gzip
from tests.test_run_squad import base_args

REPO_ROOT = Path(__file__).resolve().parent.parent

EMPTY_V2 = {"version": "v2.0", "data": []}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def unlocatable_answers() -> dict:
    """A v2.0 file of answerable questions whose answer texts are not in their contexts."""
    qas = [{"id": f"q{i}", "question": "Where?", "is_impossible": False,
            "answers": [{"text": f"Atlantis {i}", "answer_start": 3}]} for i in range(4)]
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Paris is in France. Rome is in Italy.", "qas": qas}]}]}


def unanswerable_only() -> dict:
    qas = [{"id": f"u{i}", "question": "Who?", "is_impossible": True, "answers": []} for i in range(3)]
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Cats purr.", "qas": qas}]}]}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("run_squad: error:")]


# -- 1. an empty training set ------------------------------------------------------------------

def run_script(argv: list[str]) -> str:
    """``python -m bench.run_squad`` in a subprocess with a time limit, so a run that would spin
    forever fails the test instead of hanging it; its exit status must be 2. Returns stderr."""
    done = subprocess.run([sys.executable, "-m", "bench.run_squad", *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "training 0 windows" not in done.stderr
    return done.stderr


@pytest.mark.parametrize("content, reason", [
    (EMPTY_V2, "the file has no questions"),
    (unlocatable_answers(), "all 4 answerable questions were dropped"),
])
def test_empty_training_set_stops_at_once_naming_the_file(content, reason, tiny_model, tmp_path):
    train_file = write_json(tmp_path / "train.json", content)
    [line] = error_lines(run_script(base_args(tiny_model("bert"), train_file, tmp_path / "run")))
    assert str(train_file) in line and "nothing to train on" in line and reason in line
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_version_1_1_on_an_unanswerable_only_training_file_stops_at_once(tiny_model, tmp_path):
    train_file = write_json(tmp_path / "train.json", unanswerable_only())
    argv = base_args(tiny_model("bert"), train_file, tmp_path / "run", version="1.1")
    argv.remove("--do_eval")
    [line] = error_lines(run_script(argv))
    assert str(train_file) in line and "nothing to train on" in line and "--version 1.1" in line


def test_zero_windows_raise_instead_of_looping(tmp_path):
    config = config_from_dict({"model_name": "google_en_uncased_bert_base", "do_train": True,
                               "train_file": str(tmp_path / "t.json"), "output_dir": str(tmp_path)})
    with pytest.raises(BenchError, match=r"t\.json.*0 training windows"):
        total_updates(config, 0, world_size=1)
    with pytest.raises(BenchError, match="0 training windows"):
        updates_per_epoch(0, world_size=1, batch_size=4, num_accumulated=1)
    with pytest.raises(BenchError, match="0 training windows"):
        plan_epoch(None, np.arange(0), epoch=0, rank=0, world_size=1, seed=0, batch_size=4, num_accumulated=1)
    # a single window still makes one whole update per epoch (default --epochs 3)
    assert (config.epochs, total_updates(config, 1, world_size=1)) == (3, 3)
    assert len(plan_epoch(None, np.arange(1), epoch=0, rank=0, world_size=1, seed=0, batch_size=4,
                          num_accumulated=1).updates) == 1


# -- 2. an empty dev set -----------------------------------------------------------------------

@pytest.mark.parametrize("content, extra", [
    (EMPTY_V2, {}),
    ({"version": "v2.0", "data": [{"title": "T", "paragraphs": []}]}, {"max_eval_samples": 5}),
])
def test_empty_dev_set_fails_before_training(content, extra, tiny_model, sample_files, tmp_path, capsys):
    dev_file = write_json(tmp_path / "dev.json", content)
    argv = base_args(tiny_model("bert"), sample_files["2.0"], tmp_path / "run", dev_file=dev_file, **extra)
    assert run_squad(argv) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(dev_file) in line and "nothing to evaluate" in line
    assert not (tmp_path / "run" / "train_log.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- 4. corrupt gzip files ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", GZIP_CORRUPTIONS)
@pytest.mark.parametrize("role", ["train_file", "dev_file"])
def test_corrupt_gzip_data_files_exit_2_with_one_line(role, kind, tiny_model, sample_files, tmp_path, capsys):
    bad = corrupt_gzip(tmp_path / f"{role}.json.gz", Path(sample_files["2.0"]).read_bytes(), kind)
    argv = base_args(tiny_model("bert"), sample_files["2.0"], tmp_path / "run", **{role: bad})
    assert run_squad(argv) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert str(bad) in line and "Traceback" not in err
