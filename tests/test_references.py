"""The published numbers in reference_results/*.csv and their loader (bench.core.references).

Spot values are typed in from the GluonNLP README (whose tables read F1/EM) and
the cited papers, so a swapped column or a slipped digit fails here.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.core.models import MODELS
from bench.core.references import (COLUMNS, DEFAULT_REFERENCE_DIR, EXTRA_MODELS, METRIC_UNITS, OPTIONAL_COLUMNS,
                                   SCORE_METRICS, SOURCES, ReferenceError, find_reference, load_references,
                                   model_label, original_reference, select_references)

HEADER = ",".join(COLUMNS)
GOOD_ROW = "google_electra_base,2.0,f1,86.49,fp32,gluonnlp,tuned,,,false,https://example.org,a note"


@pytest.fixture(scope="module")
def references():
    return load_references()


def _value(references, model, version, metric, source, precision="fp32"):
    ref = find_reference(references, model, version, metric, source, precision)
    return None if ref is None else ref.value


def test_every_row_is_one_number_with_known_keys(references):
    assert len(references) > 100
    for ref in references:
        assert ref.model in MODELS or ref.model in EXTRA_MODELS
        assert ref.source in SOURCES and ref.metric in METRIC_UNITS and ref.unit == METRIC_UNITS[ref.metric]
        assert 0 < ref.value <= 100 if ref.metric in SCORE_METRICS else ref.value > 0
    for path in DEFAULT_REFERENCE_DIR.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as f:
            assert all("/" not in row["value"] for row in csv.DictReader(f)), path   # never "F1/EM"


def test_f1_is_never_below_em(references):
    """SQuAD F1 >= EM for any prediction set: a swapped F1/EM pair would break this."""
    pairs = {}
    for ref in select_references(references, include_superseded=False):
        pairs.setdefault((ref.model, ref.squad_version, ref.source, ref.precision, ref.teacher), {})[ref.metric] = (
            ref.value)
    both = [p for p in pairs.values() if "exact" in p and "f1" in p]
    assert len(both) > 50
    assert all(p["f1"] >= p["exact"] for p in both)


@pytest.mark.parametrize("model, version, precision, em, f1", [
    ("google_albert_base_v2", "1.1", "fp32", 83.57, 90.37),
    ("google_albert_xxlarge_v2", "2.0", "fp32", 87.29, 90.29),
    ("google_electra_base", "2.0", "fp32", 83.80, 86.49),
    ("google_uncased_mobilebert", "2.0", "fp32", 77.76, 80.33),
    ("fairseq_roberta_large", "1.1", "fp32", 88.88, 94.57),
    ("google_electra_small", "2.0", "amp", 71.38, 74.10),
    ("google_en_uncased_bert_wwm_large", "1.1", "amp", 87.68, 93.29),
    ("gluon_en_cased_bert_base_v1", "2.0", "amp", 75.22, 78.15),
])
def test_gluonnlp_tables(references, model, version, precision, em, f1):
    assert _value(references, model, version, "exact", "gluonnlp", precision) == em
    assert _value(references, model, version, "f1", "gluonnlp", precision) == f1


def test_gluonnlp_table_sizes_and_thresholds(references):
    gluon = select_references(references, source="gluonnlp")
    assert len([r for r in gluon if r.precision == "fp32"]) == 11 * 4
    assert len([r for r in gluon if r.precision == "amp"]) == 12 * 4
    assert {r.threshold for r in gluon if r.squad_version == "2.0"} == {"tuned"}   # best_exact / best_f1


def test_originals_report_only_what_they_report(references):
    assert _value(references, "google_albert_large_v2", "2.0", "f1", "google_albert") == 84.9
    assert _value(references, "google_uncased_mobilebert", "1.1", "exact", "google_mobilebert") == 82.9
    assert _value(references, "google_en_uncased_bert_large", "1.1", "f1", "google_bert") == 90.9
    assert select_references(references, source="google_bert", version="2.0") == []       # "- / -"
    assert [r.metric for r in select_references(references, source="google_electra")] == ["exact"] * 6


def test_electra_base_typo_is_kept_but_superseded(references):
    rows = select_references(references, model="google_electra_base", version="2.0", source="google_electra",
                             include_superseded=True)
    assert sorted((r.value, r.superseded) for r in rows) == [(80.5, False), (83.7, True)]
    wrong = next(r for r in rows if r.superseded)
    assert "80.5" in wrong.note and "typo" in wrong.note.lower()
    assert _value(references, "google_electra_base", "2.0", "exact", "google_electra") == 80.5
    assert original_reference(references, "google_electra_base", "2.0", "exact").value == 80.5


@pytest.mark.parametrize("model, version, source, em, f1", [
    ("google_electra_base", "1.1", "electra_paper", 84.5, 90.8),
    ("google_electra_base", "2.0", "electra_paper", 80.5, 83.3),
    ("google_electra_large", "1.1", "electra_paper", 89.7, 94.9),
    ("google_electra_large", "2.0", "electra_paper", 88.0, 90.6),
    ("google_en_uncased_bert_large", "2.0", "electra_paper", 79.0, 81.8),
    ("google_en_uncased_bert_base", "1.1", "hf_run_qa", 81.22, 88.52),
    ("distilbert_base_uncased", "1.1", "hf_distillation", 77.7, 85.8),
    ("distilbert_base_uncased_distilled_squad", "1.1", "hf_distillation", 79.1, 86.9),
    ("fairseq_roberta_base", "2.0", "deepset", 79.87, 82.91),
])
def test_other_published_results(references, model, version, source, em, f1):
    assert _value(references, model, version, "exact", source) == em
    assert _value(references, model, version, "f1", source) == f1


def test_seed_statistics_are_kept(references):
    em = find_reference(references, "nvidia_bert_large_uncased", "1.1", "exact", "nvidia_dle", "amp")
    f1 = find_reference(references, "nvidia_bert_large_uncased", "1.1", "f1", "nvidia_dle", "amp")
    assert (em.value, em.std, em.n, f1.value, f1.std, f1.n) == (83.96, 0.27, 10, 90.68, 0.16, 10)


def test_original_em_and_f1_come_from_one_source(references):
    assert original_reference(references, "google_electra_large", "1.1", "f1") is None   # EM-only source
    assert original_reference(references, "google_albert_base_v2", "2.0", "f1").source == "google_albert"
    assert original_reference(references, "distilbert_base_uncased", "1.1", "exact") is None


def test_model_labels():
    assert model_label("google_en_cased_bert_base") == "BERT base (cased)"
    assert model_label("google_en_uncased_bert_base") == "BERT base (uncased)"
    assert model_label("google_electra_small") == "ELECTRA small"
    assert model_label("gluon_en_cased_bert_base_v1").startswith("BERT base (cased")


# ----------------------------------------------------------------------------- validation

def _write(folder: Path, name: str, *rows: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join((HEADER,) + rows) + "\n", encoding="utf-8")
    return path


def test_a_good_file_loads(tmp_path):
    [ref] = load_references(_write(tmp_path, "a.csv", GOOD_ROW).parent)
    assert (ref.value, ref.threshold, ref.superseded, ref.std, ref.file, ref.line) == (
        86.49, "tuned", False, None, "a.csv", 2)


@pytest.mark.parametrize("row, message", [
    (GOOD_ROW.replace(",f1,", ",F1/EM,"), "bad.csv:3: metric 'F1/EM' is not one of"),
    (GOOD_ROW.replace(",86.49,", ",86.49/79.1,"), "bad.csv:3: value '86.49/79.1' is not a number"),
    (GOOD_ROW.replace(",86.49,", ",,"), "bad.csv:3: value is empty"),
    (GOOD_ROW.replace(",86.49,", ",864.9,"), "bad.csv:3: value 864.9 is above 100"),
    (GOOD_ROW.replace("google_electra_base", "google_electra_bse"), "bad.csv:3: model 'google_electra_bse'"),
    (GOOD_ROW.replace(",gluonnlp,", ",gluon,"), "bad.csv:3: source 'gluon'"),
    (GOOD_ROW.replace(",fp32,", ",fp16,"), "bad.csv:3: precision 'fp16'"),
    (GOOD_ROW.replace(",2.0,", ",2,"), "bad.csv:3: squad_version '2'"),
    (GOOD_ROW.replace(",false,", ",yes,"), "bad.csv:3: superseded 'yes'"),
    (GOOD_ROW.replace(",false,", ",true,").replace(",a note", ","), "bad.csv:3: note is empty"),
    (GOOD_ROW.replace(",,,false", ",,2.5,false"), "bad.csv:3: n '2.5' must be a positive integer"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    _write(tmp_path, "bad.csv", GOOD_ROW.replace(",f1,", ",exact,"), row)
    with pytest.raises(ReferenceError, match=message.replace("(", r"\(")):
        load_references(tmp_path)


def test_duplicates_are_found_across_files(tmp_path):
    _write(tmp_path, "a.csv", GOOD_ROW)
    _write(tmp_path, "b.csv", GOOD_ROW.replace("86.49", "86.5"))
    with pytest.raises(ReferenceError, match=r"b.csv:2: duplicate of a.csv:2"):
        load_references(tmp_path)


def test_a_superseded_copy_is_not_a_duplicate(tmp_path):
    _write(tmp_path, "a.csv", GOOD_ROW, GOOD_ROW.replace(",false,", ",true,").replace("86.49", "68.49"))
    refs = load_references(tmp_path)
    assert len(refs) == 2 and find_reference(refs, "google_electra_base", "2.0", "f1", "gluonnlp").value == 86.49


def test_missing_columns_and_empty_folders_fail(tmp_path):
    (tmp_path / "a.csv").write_text("model,squad_version,metric,value\n")
    with pytest.raises(ReferenceError, match=r"a.csv:1: missing column\(s\) precision"):
        load_references(tmp_path)
    with pytest.raises(ReferenceError, match="no reference CSV files"):
        load_references(tmp_path / "empty")


# ----------------------------------------------------------------------------- distillation, size and CPU speed
# Seed 004 (lewtun's DistilBERT task-specific distillation notebook): its table of SQuAD 1.1 dev EM / F1,
# row "HuggingFace" (the paper's numbers it reproduces) and row "Ours", and its CPU speed test (the first
# 1,000 validation questions through a QuestionAnsweringPipeline, one question per call).

BERT, DISTILBERT = "google_en_uncased_bert_base", "distilbert_base_uncased"


@pytest.mark.parametrize("source, model, teacher, em, f1", [
    ("distilbert_paper", BERT, "", 81.2, 88.5),
    ("distilbert_paper", DISTILBERT, "", 77.7, 85.8),
    ("distilbert_paper", DISTILBERT, BERT, 79.1, 86.9),
    ("lewtun_distillation", BERT, "", 80.1, 87.8),
    ("lewtun_distillation", DISTILBERT, "", 76.7, 85.2),
    ("lewtun_distillation", DISTILBERT, BERT, 78.4, 86.5),
])
def test_teacher_student_rows(references, source, model, teacher, em, f1):
    found = [find_reference(references, model, "1.1", m, source, teacher=teacher) for m in ("exact", "f1")]
    assert [r.value for r in found] == [em, f1]
    assert all(r.training == ("distilled" if teacher else "fine-tuned") and r.unit == "%" for r in found)
    assert all(r.teacher == teacher and r.file == "distillation.csv" for r in found)


def test_distillation_rows_cite_their_sources(references):
    paper = select_references(references, source="distilbert_paper")
    assert {r.citation for r in paper} == {"https://arxiv.org/abs/1910.01108"}
    notebook = select_references(references, source="lewtun_distillation")
    assert {r.citation for r in notebook} == {"https://huggingface.co/lewtun/bert-base-uncased-finetuned-squad-v1",
                                               "https://huggingface.co/lewtun/distilbert-base-uncased-distilled-squad-v1"}
    assert all(r.note for r in paper + notebook)
    # a distilled number never stands in for the plain model's
    assert find_reference(references, DISTILBERT, "1.1", "exact", "distilbert_paper").value == 77.7
    assert [r.value for r in select_references(references, source="distilbert_paper", distilled=True)] == [79.1, 86.9]


def test_cpu_speed_test_rows(references):
    """6 min 38 s (teacher) and 3 min 12 s (distilled student) for 1,000 questions: 2.07x."""
    def speed(model, teacher, metric):
        ref = find_reference(references, model, "1.1", metric, "lewtun_distillation", teacher=teacher, device="cpu")
        assert (ref.device, ref.eval_questions, ref.batch_size, ref.unit) == (
            "cpu", 1000, 1, METRIC_UNITS[metric])
        return ref.value
    teacher_s, student_s = speed(BERT, "", "eval_seconds"), speed(DISTILBERT, BERT, "eval_seconds")
    assert (teacher_s, student_s) == (6 * 60 + 38, 3 * 60 + 12)
    assert round(teacher_s / student_s, 2) == 2.07
    assert speed(BERT, "", "questions_per_second") == round(1000 / teacher_s, 3)
    assert speed(DISTILBERT, BERT, "questions_per_second") == round(1000 / student_s, 3)
    assert find_reference(references, BERT, "1.1", "eval_seconds", "lewtun_distillation", device="gpu") is None


FULL_HEADER = ",".join(COLUMNS + OPTIONAL_COLUMNS)
SPEED_ROW = ("distilbert_base_uncased,1.1,eval_seconds,192,fp32,lewtun_distillation,,,,false,https://example.org,"
             "a note,s,distilled,google_en_uncased_bert_base,cpu,1000,1")


def test_the_optional_columns_load(tmp_path):
    (tmp_path / "a.csv").write_text(f"{FULL_HEADER}\n{SPEED_ROW}\n", encoding="utf-8")
    [ref] = load_references(tmp_path)
    assert (ref.metric, ref.value, ref.unit, ref.training, ref.teacher, ref.device, ref.eval_questions,
            ref.batch_size, ref.distilled) == ("eval_seconds", 192.0, "s", "distilled", "google_en_uncased_bert_base",
                                               "cpu", 1000, 1, True)


@pytest.mark.parametrize("row, message", [
    (SPEED_ROW.replace(",s,", ",min,"), "a.csv:2: unit 'min' is not eval_seconds's unit 's'"),
    (SPEED_ROW.replace(",google_en_uncased_bert_base,", ",,"), "a.csv:2: teacher is empty"),
    (SPEED_ROW.replace(",distilled,", ",fine-tuned,"), "a.csv:2: teacher 'google_en_uncased_bert_base' given"),
    (SPEED_ROW.replace(",distilled,", ",pruned,"), "a.csv:2: training 'pruned' is not one of"),
    (SPEED_ROW.replace(",cpu,", ",,"), "a.csv:2: eval_seconds needs device and eval_questions"),
    (SPEED_ROW.replace(",1000,", ",,"), "a.csv:2: eval_seconds needs device and eval_questions"),
    (SPEED_ROW.replace(",cpu,", ",tpu,"), "a.csv:2: device 'tpu' is not one of"),
    (SPEED_ROW.replace(",192,", ",0,"), "a.csv:2: eval_seconds 0.0 must be > 0"),
    (SPEED_ROW.replace(",eval_seconds,", ",seconds,"), "a.csv:2: metric 'seconds' is not one of"),
    (SPEED_ROW.replace(",1000,1", ",1000,0.5"), "a.csv:2: batch_size '0.5' must be a positive integer"),
])
def test_bad_optional_columns_name_file_and_line(tmp_path, row, message):
    (tmp_path / "a.csv").write_text(f"{FULL_HEADER}\n{row}\n", encoding="utf-8")
    with pytest.raises(ReferenceError, match=message.replace("(", r"\(")):
        load_references(tmp_path)


def test_a_speed_above_100_is_not_a_percentage(tmp_path):
    (tmp_path / "a.csv").write_text(f"{FULL_HEADER}\n{SPEED_ROW.replace(',192,', ',398,')}\n", encoding="utf-8")
    assert load_references(tmp_path)[0].value == 398
