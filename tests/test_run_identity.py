"""What a run's results.json says it ran, and on what: the model actually loaded and the evaluation set.

Through the real run CLI (``bench.apps.run.main``) on tiny random models, evaluation only (CPU,
offline), then through the report (``bench.apps.report``), which must compare a run with the
published numbers only when the model, the SQuAD version and the evaluation set are the published
ones.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from bench.apps import report
from bench.apps.run import main as run_squad
from bench.core import squad_files
from bench.core.io_utils import sha256_file
from bench.core.results import load_results
from tests.squad_samples import write_sample
from tests.test_report import row_of, table_under
from tests.test_run_squad import base_args

OTHER = "## Other models and evaluation sets"


def _evaluate(model_dir: Path, dev: Path, out: Path, **flags) -> dict:
    """An evaluation-only run through the CLI; its validated results.json."""
    argv = [a for a in base_args(model_dir, dev, out, **flags) if a != "--do_train"]
    assert run_squad(argv) == 0
    return load_results(out / "results.json")


def _report(*runs: Path) -> str:
    found, skipped = report.collect_runs(runs)
    assert not skipped, skipped
    return report.build_report(found, skipped, [], runs[0].parent / "report")[0]


def _other_rows(markdown: str) -> list[dict]:
    return table_under(markdown, OTHER)


# ----------------------------------------------------------------------------- defect 1: the model

@pytest.mark.parametrize("model_name,expected", [
    (None, None),                                                    # the flag's default (an ALBERT) is ignored
    ("google_electra_small", None),                                  # a registry name of another family
    ("google_en_uncased_bert_base", "google_en_uncased_bert_base"),  # the user names the folder's checkpoint
])
def test_model_path_records_the_model_actually_loaded(model_name, expected, tiny_dirs, sample_files, tmp_path):
    folder = tiny_dirs["bert"]
    record = _evaluate(folder, sample_files["2.0"], tmp_path / "run", model_name=model_name)
    model = record["model"]
    assert model["source"] == str(folder) and model["family"] == "bert" and model["num_parameters"] > 0
    assert model["name"] == expected
    assert model["registry_match"] is (expected is not None)
    markdown = _report(tmp_path / "run")
    for version in ("2.0", "1.1"):   # never filed under a registry row it is not
        main_rows = table_under(markdown, f"## SQuAD {version} (dev)")
        assert all(r["Run (backend · head · dtype)"] == "not run" for r in main_rows), version
    [row] = _other_rows(markdown)
    if expected is None:
        assert row["Model"].startswith("BERT, ") and str(folder) in row["Model"]
        assert "not a registry model" in row["Not compared because"]
    else:
        assert row["Model"] == "BERT base (uncased)"


# ----------------------------------------------------------------------------- defect 2: the evaluation set

def test_a_small_dev_file_is_recorded_and_reported_apart_from_published_numbers(tiny_dirs, squad_dir, tmp_path):
    dev = write_sample(squad_dir, tmp_path / "dev24.json", num_questions=24, version="2.0")
    record = _evaluate(tiny_dirs["bert"], dev, tmp_path / "run")
    assert record["schema"] == "squad-bench/results/v2"
    assert record["data"]["eval_set"] == {
        "file": str(dev), "name": "dev24.json", "sha256": sha256_file(dev), "content_sha256": sha256_file(dev),
        "num_questions": 24, "num_questions_in_file": 24, "official_file": None, "is_official_dev": False}
    markdown = _report(tmp_path / "run")
    assert row_of(table_under(markdown, "## SQuAD 2.0 (dev)"), "BERT base (uncased)", "not run")
    [row] = _other_rows(markdown)
    assert (row["Model"], row["SQuAD"], row["Evaluation set"]) == ("BERT base (uncased)", "2.0",
                                                                   "dev24.json (24 questions)")
    assert "not the official dev-v2.0.json" in row["Not compared because"]
    assert "GluonNLP" not in markdown.split(OTHER)[1].split("\n## ")[0]


def test_the_official_dev_file_plain_or_gzipped_is_compared(tiny_dirs, squad_dir, tmp_path, monkeypatch):
    """The official file is recognised by the sha256 of its JSON bytes, so its .gz copy counts too.
    (The real dev-v2.0.json is not in this checkout: a sample stands in for it under its sha256.)"""
    (tmp_path / "data").mkdir()
    plain = write_sample(squad_dir, tmp_path / "data" / "dev-v2.0.json", num_questions=24, version="2.0")
    monkeypatch.setitem(squad_files.SQUAD_FILES, "dev-v2.0.json", sha256_file(plain))
    packed = tmp_path / "data" / "packed.json.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    runs = tmp_path / "runs"
    for name, dev in (("plain", plain), ("gz", packed)):
        eval_set = _evaluate(tiny_dirs["bert"], dev, runs / name, seed=1 if name == "plain" else 2)["data"]["eval_set"]
        assert eval_set["sha256"] == sha256_file(dev) and eval_set["content_sha256"] == sha256_file(plain)
        assert (eval_set["official_file"], eval_set["is_official_dev"]) == ("dev-v2.0.json", True)
    subset = _evaluate(tiny_dirs["bert"], plain, tmp_path / "subset", max_eval_samples=10)["data"]["eval_set"]
    assert (subset["num_questions"], subset["num_questions_in_file"], subset["is_official_dev"]) == (10, 24, False)
    markdown = _report(runs)
    row = row_of(table_under(markdown, "## SQuAD 2.0 (dev)"), "BERT base (uncased)", "torch")
    assert row["Seeds"].startswith("2: ")
    assert "None." in markdown.split(OTHER)[1].split("\n## ")[0]


def test_the_shared_rebuilt_dev_files_are_not_the_official_ones(squad_dir):
    from bench.run.record import content_sha256

    official = set(squad_files.SQUAD_FILES.values())
    for name in ("dev-v1.1.rebuilt.json.gz", "dev-v2.0.rebuilt.json.gz", "xquad.en.json.gz"):
        assert content_sha256(squad_dir / name) not in official, name
