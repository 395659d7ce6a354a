"""The comparison report (bench.apps.report) from the hand-written runs in tests/fixtures/runs/.

Fixtures (schema v2 unless noted): ELECTRA small on v2.0 with seeds 1-3; BERT base
(uncased) on v2.0 on torch and on mxnet; ALBERT base on v1.1 (a schema v1 record
whose dev_sha256 is the official plain dev-v1.1.json's); a tiny BERT loaded from
--model_path without --model_name, on the official dev-v1.1.json gzipped
("tiny_bert_folder": not a registry model); the registry's BERT base on XQuAD-en,
1,190 of SQuAD 1.1 dev's questions ("xquad_en": not the official dev set); a
truncated results.json ("broken") and one without metrics and timing ("partial"); and a
distillation trio on the official dev-v1.1.json, all on the CPU ("distillation": a BERT base
teacher, DistilBERT fine-tuned alone, and DistilBERT with a ``distillation`` block naming the
teacher's folder; 2.5 / 5.0 / 5.0 questions/s).
The golden numbers below were worked out by hand from those files:

ELECTRA small, fixed EM 70, 71, 73   -> median 71.00, mean 71.33, sample std 1.53
               fixed F1 73, 74.5, 75 -> median 74.50, mean 74.17, std 1.04
               tuned EM 71, 72, 72.5 -> median 72.00, mean 71.83, std 0.76
               tuned F1 74, 75, 76   -> median 75.00, mean 75.00, std 1.00
               vs GluonNLP fp32 (tuned) 71.36 / 73.96 -> +0.64 / +1.04
ALBERT base v1.1, 83 / 90 vs GluonNLP 83.57 / 90.37 -> -0.57 / -0.37
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.apps import report
from bench.core.references import load_references

REPO = Path(__file__).resolve().parent.parent
FIXTURE_RUNS = REPO / "tests" / "fixtures" / "runs"
COMMITTED_RUNS = REPO / "reports" / "runs"
OUTPUTS = ("README.md", "results.csv", *report.FIGURES)


def _generate(out: Path, *runs: Path) -> str:
    """The whole command: README.md, results.csv and the figures."""
    argv = ["--out", str(out)] + (["--runs", *map(str, runs)] if runs else [])
    assert report.main(argv) == 0
    return (out / "README.md").read_text(encoding="utf-8")


def _markdown(out: Path, *runs: Path) -> str:
    """README.md text only (same code path, without drawing the figures: they take seconds)."""
    found, skipped = report.collect_runs(runs)
    return report.build_report(found, skipped, load_references(), out)[0]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    _generate(out, FIXTURE_RUNS)
    return out


@pytest.fixture(scope="module")
def markdown(out_dir) -> str:
    return (out_dir / "README.md").read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def table_under(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after a heading, as dicts keyed by column title."""
    lines = markdown.splitlines()
    at = next(i for i in range(lines.index(heading), len(lines)) if lines[i].startswith("|"))
    header = _cells(lines[at])
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, _cells(line))))
    return rows


def row_of(rows: list[dict], model: str, run: str) -> dict:
    [row] = [r for r in rows if r["Model"] == model and r["Run (backend · head · dtype)"].startswith(run)]
    return row


def _text(cell: str) -> str:
    """A cell without its link targets: '[71.00](../x) · 71.33 ± 1.53' -> '71.00 · 71.33 ± 1.53'."""
    return re.sub(r"\[([^\]]*)\](\([^)]*\)|\[[^\]]*\])", r"\1", cell)


# ----------------------------------------------------------------------------- the main tables

def test_several_seeds_show_median_mean_std_and_n(markdown):
    row = row_of(table_under(markdown, "## SQuAD 2.0 (dev)"), "ELECTRA small", "torch")
    assert _text(row["Seeds"]) == "3: 1, 2, 3"
    assert _text(row["EM fixed"]) == "71.00 · 71.33 ± 1.53"
    assert _text(row["F1 fixed"]) == "74.50 · 74.17 ± 1.04"
    assert _text(row["EM tuned"]) == "72.00 · 71.83 ± 0.76"
    assert _text(row["F1 tuned"]) == "75.00 · 75.00 ± 1.00"
    assert (_text(row["GluonNLP EM"]), _text(row["GluonNLP F1"])) == ("71.36", "73.96")
    assert (_text(row["Original EM"]), row["Original F1"]) == ("70.1", "—")   # Google gives EM only
    assert (row["Δ EM"], row["Δ F1"]) == ("+0.64", "+1.04")


def test_fixed_and_tuned_thresholds_stay_apart(markdown):
    rows = table_under(markdown, "## SQuAD 2.0 (dev)")
    torch_row = row_of(rows, "BERT base (uncased)", "torch")
    assert [_text(torch_row[c]) for c in ("EM fixed", "F1 fixed", "EM tuned", "F1 tuned")] == [
        "73.00", "76.00", "73.50", "76.40"]
    assert (torch_row["Δ EM"], torch_row["Δ F1"]) == ("-0.02", "+0.11")   # tuned vs GluonNLP's tuned
    v11 = table_under(markdown, "## SQuAD 1.1 (dev)")
    assert not any("tuned" in column for column in v11[0])
    albert = row_of(v11, "ALBERT base", "torch")
    assert (_text(albert["EM"]), _text(albert["F1"]), albert["Δ EM"], albert["Δ F1"]) == (
        "83.00", "90.00", "-0.57", "-0.37")


def test_models_without_runs_say_not_run(markdown):
    rows = table_under(markdown, "## SQuAD 2.0 (dev)")
    electra_base = row_of(rows, "ELECTRA base", "not run")
    assert (_text(electra_base["GluonNLP EM"]), _text(electra_base["Original EM"])) == ("83.8", "80.5")
    assert electra_base["EM fixed"] == electra_base["Δ EM"] == "—"
    assert row_of(rows, "DistilBERT base (uncased)", "not run")
    assert row_of(table_under(markdown, "## SQuAD 1.1 (dev)"), "ELECTRA small", "not run")
    assert not [r for r in rows if r["Model"] == "ALBERT base" and r["Run (backend · head · dtype)"] != "not run"]


def test_numbers_link_to_run_folders_and_sources(out_dir, markdown):
    row = row_of(table_under(markdown, "## SQuAD 2.0 (dev)"), "ELECTRA small", "torch")
    seed_links = re.findall(r"\]\(([^)]+)\)", row["Seeds"])
    assert [(out_dir / link).resolve() for link in seed_links] == [
        (FIXTURE_RUNS / "electra_small_v2" / f"seed_{s}").resolve() for s in (1, 2, 3)]
    [median_link] = re.findall(r"\]\(([^)]+)\)", row["EM fixed"])
    assert (out_dir / median_link).resolve() == (FIXTURE_RUNS / "electra_small_v2").resolve()
    assert "[71.36][gluonnlp]" in row["GluonNLP EM"]
    assert "\n[gluonnlp]: https://github.com/dmlc/gluon-nlp/tree/master/scripts/question_answering" in markdown
    for link in re.findall(r"\]\((\.\.[^)]*)\)", markdown):
        assert (out_dir / link).exists(), link


def test_framework_parity_pairs_backends(markdown):
    [row] = table_under(markdown, "## Framework parity (torch vs mxnet)")
    assert (row["Model"], row["SQuAD"], row["Evaluation set"]) == ("BERT base (uncased)", "2.0",
                                                                   "dev-v2.0.json (official)")
    assert [_text(row[c]) for c in ("EM torch", "EM mxnet", "F1 torch", "F1 mxnet", "samples/s torch",
                                    "samples/s mxnet")] == ["73.00", "72.80", "76.00", "75.90", "120.50", "100.25"]


def test_broken_and_partial_runs_are_listed_and_skipped(markdown):
    section = markdown.split("## Skipped runs", 1)[1]
    broken = next(line for line in section.splitlines() if "broken/results.json" in line)
    partial = next(line for line in section.splitlines() if "partial/results.json" in line)
    assert "not valid JSON" in broken
    assert "missing field 'metrics'" in partial and "missing field 'timing'" in partial
    assert "Runs: 11 in 9 configurations; 2 skipped." in markdown


def test_superseded_reference_is_struck_through_not_compared(markdown):
    rows = table_under(markdown, "### SQuAD 2.0 (dev)")
    google = [r for r in rows if r["Model"] == "ELECTRA base" and r["Source"] == "Google ELECTRA"]
    assert sorted(_text(r["EM"]) for r in google) == ["80.5", "~~83.7~~"]


# ----------------------------------------------------------------------------- CSV, determinism, figures

def _csv(out_dir: Path) -> dict[tuple, str]:
    with open(out_dir / "results.csv", newline="", encoding="utf-8") as f:
        return {(r["section"], r["squad_version"], r["model"], r["variant"], r["eval_set"], r["quantity"],
                 r["statistic"]): r["value"] for r in csv.DictReader(f)}


def test_csv_holds_the_table_numbers(out_dir):
    table = _csv(out_dir)
    dev2, dev1 = "dev-v2.0.json (official)", "dev-v1.1.json (official)"
    electra = ("main", "2.0", "google_electra_small", "torch/conditional/float32", dev2)
    assert {stat: table[electra + ("exact_fixed", stat)] for stat in ("median", "mean", "std")} == {
        "median": "71.0", "mean": "71.3333", "std": "1.5275"}
    assert table[electra + ("f1_tuned", "std")] == "1.0"
    assert table[electra + ("f1_minus_gluonnlp", "difference")] == "1.04"
    assert table[("main", "1.1", "google_albert_base_v2", "torch/conditional/float32", dev1, "exact_minus_gluonnlp",
                  "difference")] == "-0.57"
    assert table[("parity", "2.0", "google_en_uncased_bert_base", "conditional/float32", dev2,
                  "train_samples_per_second_mxnet", "value")] == "100.25"
    assert table[("main", "2.0", "google_electra_base", "", dev2, "gluonnlp_fp32_exact", "value")] == "83.8"
    assert table[("other", "1.1", "google_en_uncased_bert_base", "torch/conditional/float32",
                  "xquad.en.json.gz (1,190 questions)", "exact_fixed", "value")] == "79.5"
    assert not [key for key in table if key[0] == "main" and key[2] == "/models/tiny-bert"]


TEXT_COLUMNS = {"Model", "Run (backend · head · dtype)", "Seeds", "SQuAD", "head · dtype", "Source", "Precision",
                "Threshold", "Note", "Evaluation set", "Not compared because", "Parameters", "Teacher", "Student",
                "Temperature, α"}


def test_every_number_in_the_tables_is_in_the_csv(out_dir, markdown):
    values = {round(abs(float(v)), 2) for v in _csv(out_dir).values()}
    headings = [line for line in markdown.splitlines() if line.startswith("## ") or line.startswith("### ")]
    checked = 0
    for heading in headings:
        if not any(l.startswith("|") for l in markdown.split(heading, 1)[1].split("\n#", 1)[0].splitlines()):
            continue
        for row in table_under(markdown, heading):
            for column, cell in row.items():
                if column not in TEXT_COLUMNS:
                    for number in re.findall(r"\d+\.\d+", _text(cell)):
                        assert round(float(number), 2) in values, (number, heading, row)
                        checked += 1
    assert checked > 250   # all tables were read, not just the first


def test_same_inputs_give_identical_files(out_dir, tmp_path):
    again = out_dir.parent / "again"
    _generate(again, FIXTURE_RUNS)
    for name in OUTPUTS:
        assert (again / name).read_bytes() == (out_dir / name).read_bytes(), name


def test_figures_are_valid_pngs(out_dir):
    for name in report.FIGURES:
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 300 and height > 200
        assert b"tEXt" not in data   # no software or date stamp


# ----------------------------------------------------------------------------- edge cases

def _copy_run(source: str, target: Path, **changes) -> Path:
    record = json.loads((FIXTURE_RUNS / source / "results.json").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = record
        for parent in parents:
            node = node[parent]
        node[key] = value
    target.mkdir(parents=True)
    (target / "results.json").write_text(json.dumps(record))
    return target


def test_a_rerun_of_a_seed_replaces_the_older_run(tmp_path):
    _copy_run("albert_base_v1", tmp_path / "runs" / "first")
    _copy_run("albert_base_v1", tmp_path / "runs" / "second", created="2025-02-01T00:00:00+00:00",
              metrics__fixed__f1=91.0)
    text = _markdown(tmp_path / "out", tmp_path / "runs")
    albert = row_of(table_under(text, "## SQuAD 1.1 (dev)"), "ALBERT base", "torch")
    assert (_text(albert["Seeds"]), _text(albert["F1"])) == ("1: 100", "91.00")
    [line] = [l for l in text.split("## Skipped runs")[1].splitlines() if "older run" in l]
    assert line.index("first/results.json") < line.index("second/results.json")


def test_subset_evaluations_are_not_compared(tmp_path):
    _copy_run("albert_base_v1", tmp_path / "runs" / "smoke", hyperparameters__max_eval_samples=200)
    text = _markdown(tmp_path / "out", tmp_path / "runs")
    assert "subset of dev (--max_eval_samples 200)" in text
    assert row_of(table_under(text, "## SQuAD 1.1 (dev)"), "ALBERT base", "not run")


# ----------------------------------------------------------------------------- what is compared with what

OTHER = "## Other models and evaluation sets"


def test_a_model_that_is_not_the_registry_checkpoint_is_never_compared(markdown):
    """The tiny BERT of --model_path (no --model_name) is not filed as ALBERT base (the flag's default)."""
    v11 = table_under(markdown, "## SQuAD 1.1 (dev)")
    [albert] = [r for r in v11 if r["Model"] == "ALBERT base"]
    assert (_text(albert["Seeds"]), albert["Δ EM"]) == ("1: 100", "-0.57")    # the v1 fixture alone
    assert "4.08" not in markdown.split(OTHER)[0]
    [tiny] = [r for r in table_under(markdown, OTHER) if "/models/tiny-bert" in r["Model"]]
    assert tiny["Model"] == "BERT, 4.4M parameters: /models/tiny-bert"
    assert (tiny["SQuAD"], tiny["Evaluation set"], _text(tiny["EM"])) == ("1.1", "dev-v1.1.json (official)", "4.08")
    assert tiny["Not compared because"] == "not a registry model (`model.registry_match` false)"


def test_a_run_on_another_evaluation_set_is_never_compared(markdown):
    """XQuAD-en (1,190 of SQuAD 1.1 dev's 10,570 questions) is not a "SQuAD 1.1 (dev)" score."""
    [bert] = [r for r in table_under(markdown, "## SQuAD 1.1 (dev)") if r["Model"] == "BERT base (uncased)"]
    assert _text(bert["EM"]) == "80.50" and "teacher_bert_base" in bert["Seeds"]   # the distillation teacher alone
    [xquad] = [r for r in table_under(markdown, OTHER) if r["Evaluation set"].startswith("xquad")]
    assert (xquad["Model"], xquad["SQuAD"], xquad["Evaluation set"]) == (
        "BERT base (uncased)", "1.1", "xquad.en.json.gz (1,190 questions)")
    assert (_text(xquad["EM"]), _text(xquad["F1"]), xquad["EM tuned"]) == ("79.50", "87.25", "—")
    assert xquad["Not compared because"] == "not the official dev-v1.1.json"
    assert "GluonNLP" not in table_under(markdown, OTHER)[0]


def _eval_set(name: str, n: int, sha: str = "ab" * 32, official_file=None, official=False) -> dict:
    return {"file": f"data/{name}", "name": name, "sha256": sha, "content_sha256": sha, "num_questions": n,
            "num_questions_in_file": n, "official_file": official_file, "is_official_dev": official}


def test_a_small_dev_file_gets_its_own_rows_labelled_with_the_set(tmp_path):
    runs = tmp_path / "runs"
    _copy_run("bert_base_torch", runs / "dev24", data__eval_set=_eval_set("dev24.json", 24))
    _copy_run("bert_base_torch", runs / "rebuilt", data__eval_set=_eval_set("dev-v2.0.rebuilt.json.gz", 11873,
                                                                             "cd" * 32))
    # the official dev-v1.1.json under a SQuAD 2.0 run is not that run's published set either
    _copy_run("bert_base_torch", runs / "v11", data__eval_set=_eval_set(
        "dev-v1.1.json", 10570, "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9", "dev-v1.1.json"))
    text = _markdown(tmp_path / "out", runs)
    assert row_of(table_under(text, "## SQuAD 2.0 (dev)"), "BERT base (uncased)", "not run")
    rows = {r["Evaluation set"]: r for r in table_under(text, OTHER)}
    assert set(rows) == {"dev24.json (24 questions)", "dev-v2.0.rebuilt.json.gz (11,873 questions)",
                         "dev-v1.1.json (10,570 questions)"}
    assert rows["dev24.json (24 questions)"]["Not compared because"] == "not the official dev-v2.0.json"
    assert rows["dev-v1.1.json (10,570 questions)"]["Not compared because"] == (
        "evaluated on dev-v1.1.json, not the official dev-v2.0.json")


def test_schema_v1_records_are_read_and_compared_only_when_they_prove_the_official_set(tmp_path):
    runs = tmp_path / "runs"
    _copy_run("albert_base_v1", runs / "official")                                   # compared
    # the original defect, as a v1 record: --model_path held a BERT, the name is the ignored default
    _copy_run("albert_base_v1", runs / "folder", seed=1, model__family="bert", model__source="/models/x",
              hyperparameters__model_path="/models/x")
    _copy_run("albert_base_v1", runs / "unknown", seed=2, data__dev_sha256="12" * 32)  # a set v1 cannot name
    text = _markdown(tmp_path / "out", runs)
    albert = row_of(table_under(text, "## SQuAD 1.1 (dev)"), "ALBERT base", "torch")
    assert (_text(albert["Seeds"]), albert["Δ EM"]) == ("1: 100", "-0.57")
    reasons = {r["Model"]: r["Not compared because"] for r in table_under(text, OTHER)}
    assert reasons == {
        "BERT, 11.7M parameters: /models/x": "not a registry model (`model.registry_match` false)",
        "ALBERT base": "evaluation set unknown (schema v1 record; its file is not the official dev-v1.1.json)"}


def test_only_results_json_is_read_never_logs_or_folder_names(tmp_path):
    folder = _copy_run("albert_base_v1", tmp_path / "runs" / "google_electra_large_f1_99.99")
    (folder / "finetune_squad1.1.log").write_text("{'exact_match': 99.99, 'f1': 99.99}\n")
    text = _markdown(tmp_path / "out", tmp_path / "runs")
    albert = row_of(table_under(text, "## SQuAD 1.1 (dev)"), "ALBERT base", "torch")
    assert (_text(albert["EM"]), _text(albert["F1"])) == ("83.00", "90.00")
    assert "99.99" not in _text(text.split("## Framework parity")[0])


def test_a_folder_of_broken_runs_still_gives_a_report(tmp_path, capsys):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "results.json").write_text("[1, 2")
    text = _generate(tmp_path / "out", tmp_path / "runs")
    assert "Runs: 0 in 0 configurations; 1 skipped." in text
    assert "No model has been run on both backends" in text
    assert report.main(["--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2


def test_committed_reports_are_what_report_generates_from_the_committed_runs():
    """reports/ is `squad-bench report --runs reports/runs`: the measured runs kept in the repository
    (docs/reports.md#the-committed-report), every published recipe nobody ran still "not run"."""
    runs, skipped = report.collect_runs([COMMITTED_RUNS])
    assert runs and not skipped
    markdown, table = report.build_report(runs, skipped, load_references(), REPO / "reports")
    stale = "is stale: run `squad-bench report --runs reports/runs` to regenerate it"
    assert (REPO / "reports" / "README.md").read_text(encoding="utf-8") == markdown, f"reports/README.md {stale}"
    assert (REPO / "reports" / "results.csv").read_text(encoding="utf-8") == table, f"reports/results.csv {stale}"
    assert all((REPO / "reports" / name).is_file() for name in report.FIGURES)


def test_the_report_modules_never_import_a_framework():
    code = ("import sys, bench.apps.report, bench.apps.launch, bench.core.presets, bench.core.references; "
            "sys.exit(bool({'torch', 'mxnet'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


# ----------------------------------------------------------------------------- size, CPU speed, distillation

DISTILLED = "## Teacher → student (distillation)"


def test_parameters_and_cpu_questions_per_second_are_beside_em_and_f1(markdown, out_dir):
    v11 = table_under(markdown, "## SQuAD 1.1 (dev)")
    [plain] = [r for r in v11 if r["Run (backend · head · dtype)"] == "torch · conditional · float32"
               and r["Model"] == "DistilBERT base (uncased)"]
    distilled = [r for r in v11 if "distilled from" in r["Run (backend · head · dtype)"]]
    assert (plain["Parameters"], _text(plain["CPU questions/s"]), _text(plain["EM"])) == ("66.4M", "5.00", "76.50")
    assert [(_text(r["EM"]), r["Parameters"], _text(r["CPU questions/s"])) for r in distilled] == [
        ("78.00", "66.4M", "5.00")]
    # runs on an accelerator (and records without the field) show no CPU speed, but their size
    electra = row_of(table_under(markdown, "## SQuAD 2.0 (dev)"), "ELECTRA small", "torch")
    assert electra["CPU questions/s"] == "—" and electra["Parameters"].endswith("M")
    assert _csv(out_dir)[("main", "1.1", "distilbert_base_uncased", "torch/conditional/float32",
                          "dev-v1.1.json (official)", "cpu_eval_questions_per_second", "value")] == "5.0"


def test_cpu_questions_per_second_only_for_runs_without_an_accelerator(tmp_path):
    _copy_run("distillation/distilbert", tmp_path / "runs" / "gpu", hardware__accelerator="NVIDIA A100",
              hardware__accelerator_count=1)
    row = row_of(table_under(_markdown(tmp_path / "out", tmp_path / "runs"), "## SQuAD 1.1 (dev)"),
                 "DistilBERT base (uncased)", "torch")
    assert (row["CPU questions/s"], row["Parameters"]) == ("—", "66.4M")


def test_teacher_student_table_of_runs(markdown):
    [row] = table_under(markdown, "### Our runs")
    assert (row["Teacher"], row["Student"]) == ("BERT base (uncased)",
                                                "DistilBERT base (uncased) · torch · conditional · float32")
    assert [_text(row[c]) for c in ("Teacher EM", "Teacher F1", "Teacher q/s", "Student EM", "Student F1",
                                    "Distilled EM", "Distilled F1", "Distilled q/s")] == [
        "80.50", "88.00", "2.50", "76.50", "85.00", "78.00", "86.25", "5.00"]
    assert (row["Speed-up"], row["Parameters"], row["Temperature, α"]) == ("2.00×", "108.9M → 66.4M", "T=2.0, α=0.5")


def test_teacher_student_table_of_published_numbers(markdown):
    rows = {r["Source"]: r for r in table_under(markdown, "### Published")}
    paper, notebook = rows["DistilBERT paper"], rows["lewtun DistilBERT distillation notebook"]
    assert [_text(paper[c]) for c in ("Teacher EM", "Teacher F1", "Student EM", "Student F1", "Distilled EM",
                                      "Distilled F1")] == ["81.2", "88.5", "77.7", "85.8", "79.1", "86.9"]
    assert "[distilbert_paper]" in paper["Distilled EM"]
    assert [_text(notebook[c]) for c in ("Teacher EM", "Teacher F1", "Teacher q/s", "Student EM", "Student F1",
                                         "Distilled EM", "Distilled F1", "Distilled q/s", "Speed-up")] == [
        "80.1", "87.8", "2.513", "76.7", "85.2", "78.4", "86.5", "5.208", "2.07×"]
    published = table_under(markdown, "### SQuAD 1.1 (dev)")
    [distilled] = [r for r in published if r["Model"] == "DistilBERT base (uncased), distilled from BERT base "
                   "(uncased)" and r["Source"] == "lewtun DistilBERT distillation notebook"]
    assert (_text(distilled["EM"]), _text(distilled["CPU questions/s"])) == ("78.4", "5.208")


def _references_without_distillation(folder: Path, *extra_rows: str) -> Path:
    folder.mkdir()
    for name in ("gluonnlp.csv", "originals.csv"):
        (folder / name).write_text((REPO / "reference_results" / name).read_text(encoding="utf-8"), encoding="utf-8")
    if extra_rows:
        from bench.core.references import COLUMNS, OPTIONAL_COLUMNS
        (folder / "extra.csv").write_text("\n".join((",".join(COLUMNS + OPTIONAL_COLUMNS),) + extra_rows) + "\n",
                                          encoding="utf-8")
    return folder


def test_a_teacher_named_by_one_of_its_checkpoints_is_found(tmp_path):
    """--teacher_path <run>/checkpoints/update_N (what benchmarks/distill.py passes) names the teacher's run."""
    runs = tmp_path / "runs" / "distillation"
    shutil.copytree(FIXTURE_RUNS / "distillation", runs)
    record_file = runs / "distilbert_distilled" / "results.json"
    record = json.loads(record_file.read_text(encoding="utf-8"))
    record["distillation"]["teacher"] = "runs/distillation/teacher_bert_base/checkpoints/update_5"
    record_file.write_text(json.dumps(record), encoding="utf-8")
    [row] = table_under(_markdown(tmp_path / "out", runs), "### Our runs")
    assert (row["Teacher"], _text(row["Teacher EM"]), row["Speed-up"]) == ("BERT base (uncased)", "80.50", "2.00×")


def test_the_teacher_student_table_appears_only_with_distillation(tmp_path):
    references = load_references(_references_without_distillation(tmp_path / "refs"))
    plain = report.collect_runs([FIXTURE_RUNS / "distillation" / "distilbert",
                                 FIXTURE_RUNS / "distillation" / "teacher_bert_base"])
    assert DISTILLED not in report.build_report(*plain, references, tmp_path)[0]
    with_student = report.collect_runs([FIXTURE_RUNS / "distillation"])
    text = report.build_report(*with_student, references, tmp_path)[0]
    assert DISTILLED in text and "### Our runs" in text and "### Published" not in text
    text = report.build_report([], [], load_references(), tmp_path)[0]          # the published rows alone
    assert DISTILLED in text and "### Published" in text and "### Our runs" not in text


def test_published_parameter_counts_render(tmp_path):
    cite = "https://example.org/paper"
    rows = [f"{model},1.1,{metric},{value},fp32,distilbert_paper,,,,false,{cite},n,{unit},{training},{teacher},,,"
            for model, metric, value, unit, training, teacher in (
                ("google_en_uncased_bert_base", "num_parameters", 110, "millions", "", ""),
                ("distilbert_base_uncased", "num_parameters", 66, "millions", "", ""),
                ("google_en_uncased_bert_base", "exact", 81.2, "%", "fine-tuned", ""),
                ("distilbert_base_uncased", "exact", 79.1, "%", "distilled", "google_en_uncased_bert_base"))]
    references = load_references(_references_without_distillation(tmp_path / "refs", *rows))
    text = report.build_report([], [], references, tmp_path)[0]
    [row] = table_under(text, "### Published")
    assert _text(row["Parameters"]) == "110M → 66M" and _text(row["Distilled EM"]) == "79.1"
    [bert] = [r for r in table_under(text, "### SQuAD 1.1 (dev)") if r["Source"] == "DistilBERT paper"
              and r["Model"] == "BERT base (uncased)"]
    assert (_text(bert["Parameters"]), _text(bert["EM"])) == ("110M", "81.2")


def test_a_bad_eval_questions_per_second_skips_the_run(tmp_path):
    _copy_run("distillation/distilbert", tmp_path / "runs" / "bad", timing__eval_questions_per_second="fast")
    text = _markdown(tmp_path / "out", tmp_path / "runs")
    assert "field 'timing.eval_questions_per_second' should be a number > 0 or null" in text
