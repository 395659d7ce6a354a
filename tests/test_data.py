"""bench.core.data: loading SQuAD files, version detection, format errors, answer offset checks."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from pathlib import Path

import pytest

from bench.core.data import SquadFormatError, gold_answers, load_squad, normalize_version

CONTEXT = "Paris is in France. Paris is big."


def base_file() -> dict:
    """A small valid v2.0 file: two articles, one unanswerable question."""
    return {"version": "v2.0", "data": [
        {"title": "Alpha", "paragraphs": [{"context": CONTEXT, "qas": [
            {"id": "q1", "question": "Where is Paris?", "is_impossible": False,
             "answers": [{"text": "France", "answer_start": 12}, {"text": "in France", "answer_start": 9}]},
            {"id": "q2", "question": "Where is Rome?", "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": "France", "answer_start": 12}]},
        ]}]},
        {"title": "Beta", "paragraphs": [{"context": "Cats purr.", "qas": [
            {"id": "q3", "question": "What do cats do?", "is_impossible": False,
             "answers": [{"text": "purr", "answer_start": 5}]},
        ]}]},
    ]}


def write(path: Path, data) -> Path:
    text = data if isinstance(data, str) else json.dumps(data)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def first_qa(data: dict) -> dict:
    return data["data"][0]["paragraphs"][0]["qas"][0]


# -- the real files --------------------------------------------------------------------------

REAL_FILES = [
    # file, for_training, version, articles, paragraphs, questions, unanswerable, answers kept
    ("train-v2.0.first10.json.gz", True, "2.0", 10, 694, 4719, 348, 4371),
    ("xquad.en.json.gz", False, "1.1", 48, 240, 1190, 0, 1190),
    ("dev-v1.1.rebuilt.json.gz", False, "1.1", 48, 2067, 10570, 0, 34726),
    ("dev-v2.0.rebuilt.json.gz", False, "2.0", 35, 1204, 11873, 5945, 20302),
]


@pytest.mark.parametrize(
    "name, for_training, version, articles, paragraphs, questions, unanswerable, answers", REAL_FILES)
def test_real_files_load_with_expected_counts(squad_dir, name, for_training, version, articles, paragraphs,
                                              questions, unanswerable, answers):
    dataset = load_squad(squad_dir / name, for_training=for_training)
    assert dataset.version == version
    assert len(dataset.examples) == questions
    assert sum(example.is_impossible for example in dataset.examples) == unanswerable
    assert sum(len(example.answers) for example in dataset.examples) == answers
    stats = dataset.stats
    assert (stats["articles"], stats["paragraphs"], stats["questions"]) == (articles, paragraphs, questions)
    assert stats["unanswerable"] == unanswerable and stats["bad_offsets"] == 0
    assert stats["version_source"].startswith("file")
    sums = dict(reversed(line.split()) for line in (squad_dir / "SHA256SUMS").read_text().splitlines())
    assert dataset.sha256 == sums[name]


def test_official_training_offsets_all_point_at_their_text(squad_dir):
    dataset = load_squad(squad_dir / "train-v2.0.first10.json.gz", for_training=True)
    for example in dataset.examples:
        assert example.is_impossible == (not example.answers)
        for answer in example.answers:
            assert example.context[answer.start:answer.start + len(answer.text)] == answer.text


def test_full_dev_set_loads_fast(squad_dir):
    # CPU time, not wall time: the test machine's cores are shared with other jobs
    started = time.process_time()
    load_squad(squad_dir / "dev-v2.0.rebuilt.json.gz")
    assert time.process_time() - started < 1.0


def test_gold_answers_keep_every_text_and_none_for_unanswerable(squad_dir):
    golds = gold_answers(load_squad(squad_dir / "dev-v2.0.rebuilt.json.gz"))
    assert len(golds) == 11873
    assert sum(1 for texts in golds.values() if not texts) == 5945
    assert golds["56ddde6b9a695914005b9628"] == ["France"] * 4


# -- versions --------------------------------------------------------------------------------

@pytest.mark.parametrize("field, expected",
                         [("v2.0", "2.0"), ("2.0", "2.0"), ("1.1", "1.1"), ("v1.1", "1.1")])
def test_version_from_the_file_field(tmp_path, field, expected):
    data = base_file()
    data["version"] = field
    if expected == "1.1":
        data["data"][0]["paragraphs"][0]["qas"].pop(1)     # no unanswerable questions in 1.1
        for qa in (first_qa(data), data["data"][1]["paragraphs"][0]["qas"][0]):
            del qa["is_impossible"]
    dataset = load_squad(write(tmp_path / "f.json", data))
    assert dataset.version == expected
    assert dataset.stats["version_source"] == f"file ({field!r})"


def test_version_argument_overrides_the_file(tmp_path):
    data = base_file()
    data["version"] = "1.1"                              # wrong: the file has an unanswerable question
    dataset = load_squad(write(tmp_path / "f.json", data), version="v2.0")
    assert dataset.version == "2.0" and dataset.stats["version_source"] == "argument"


def test_version_inferred_when_absent(tmp_path):
    data = base_file()
    del data["version"]
    dataset = load_squad(write(tmp_path / "v2.json", data))
    assert dataset.version == "2.0" and "inferred" in dataset.stats["version_source"]
    for article in data["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa.pop("is_impossible")
    data["data"][0]["paragraphs"][0]["qas"].pop(1)
    dataset = load_squad(write(tmp_path / "v1.json", data))
    assert dataset.version == "1.1" and "inferred" in dataset.stats["version_source"]


def test_unknown_versions_are_errors(tmp_path):
    data = base_file()
    data["version"] = "3.0"
    path = write(tmp_path / "odd.json", data)
    with pytest.raises(SquadFormatError, match=r"odd\.json.*'3\.0'"):
        load_squad(path)
    assert load_squad(path, version="2.0").version == "2.0"
    with pytest.raises(ValueError, match="unknown SQuAD version '1.0'"):
        load_squad(path, version="1.0")
    assert normalize_version("v1.1") == "1.1"


def test_reading_a_v2_file_as_v1_names_the_unanswerable_question(tmp_path):
    path = write(tmp_path / "two.json", base_file())
    with pytest.raises(SquadFormatError, match=r"two\.json: question 'q2'.*is_impossible"):
        load_squad(path, version="1.1")


# -- format errors ---------------------------------------------------------------------------

def _drop(key: str, where):
    def mutate(data):
        del where(data)[key]
    return mutate


def _set(key: str, value, where):
    def mutate(data):
        where(data)[key] = value
    return mutate


def _article(data):
    return data["data"][0]


def _paragraph(data):
    return data["data"][0]["paragraphs"][0]


def _answer(data):
    return first_qa(data)["answers"][0]


def _duplicate_id(data):
    data["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"


FORMAT_ERRORS = [
    # mutation, expected message parts (besides the file name)
    (lambda data: data.pop("data"), ["missing top-level field 'data'"]),
    (_set("data", {"a": 1}, lambda data: data), ["'data' should be a list, got dict"]),
    (lambda data: data["data"].__setitem__(0, "text"), ["article 0", "should be an object, got str"]),
    (_drop("paragraphs", _article), ["article 0 ('Alpha')", "missing field 'paragraphs'"]),
    (_set("paragraphs", "p", _article), ["article 0 ('Alpha')", "'paragraphs' should be a list, got str"]),
    (_set("title", 7, _article), ["article 0", "'title' should be a string, got int"]),
    (_drop("context", _paragraph), ["article 0 ('Alpha'), paragraph 0", "missing field 'context'"]),
    (_set("context", 5, _paragraph), ["paragraph 0", "'context' should be a string, got int"]),
    (_drop("qas", _paragraph), ["article 0 ('Alpha'), paragraph 0", "missing field 'qas'"]),
    (_drop("question", first_qa), ["question 'q1'", "missing field 'question'"]),
    (_drop("id", first_qa), ["article 0 ('Alpha'), paragraph 0, question 0", "missing field 'id'"]),
    (_set("id", 17, first_qa), ["question 0", "'id' should be a string, got int"]),
    (_set("answers", "France", first_qa), ["question 'q1'", "'answers' should be a list, got str"]),
    (_drop("answers", first_qa), ["question 'q1'", "missing field 'answers'"]),
    (_set("is_impossible", "no", first_qa), ["question 'q1'", "'is_impossible' should be true/false"]),
    (_set("answer_start", "12", _answer), ["question 'q1'", "answer 0", "'answer_start' should be an int"]),
    (_set("answer_start", True, _answer), ["question 'q1'", "answer 0", "'answer_start' should be an int"]),
    (_drop("text", _answer), ["question 'q1'", "answer 0", "missing field 'text'"]),
    (_duplicate_id, ["question 'q1'", "article 1 ('Beta')", "duplicate question id",
                     "first seen in question 'q1' (article 0 ('Alpha')"]),
]


@pytest.mark.parametrize("mutate, parts", FORMAT_ERRORS)
def test_format_errors_name_the_file_and_the_place(tmp_path, mutate, parts):
    data = base_file()
    mutate(data)
    path = write(tmp_path / "broken-file.json", data)
    with pytest.raises(SquadFormatError) as excinfo:
        load_squad(path)
    message = str(excinfo.value)
    assert message.startswith(str(path) + ": ")
    for part in parts:
        assert part in message
    assert "\n" not in message
    # one clear error, not a chain of tracebacks
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


@pytest.mark.parametrize("content, part",
                         [("{not json", "not valid JSON"), ("[1, 2]", "top level should be an object")])
def test_unreadable_files(tmp_path, content, part):
    for path in (write(tmp_path / "bad.json", content), write(tmp_path / "bad.json.gz", content)):
        with pytest.raises(SquadFormatError, match=part) as excinfo:
            load_squad(path)
        assert str(path) in str(excinfo.value)
        assert excinfo.value.__cause__ is None
        assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


GZIP_CORRUPTIONS = ["body", "truncated", "crc"]


def corrupt_gzip(path: Path, data: bytes, kind: str) -> Path:
    """``data`` gzipped and broken so that reading it fails with zlib.error ("body": a bad deflate
    block), EOFError ("truncated") or gzip.BadGzipFile ("crc": a checksum mismatch)."""
    packed = gzip.compress(data)
    path.write_bytes({"body": packed[:10] + b"\xff" * 20 + packed[30:],
                      "truncated": packed[:len(packed) // 2],
                      "crc": packed[:-8] + b"\0" * 8}[kind])
    return path


@pytest.mark.parametrize("for_training", [False, True])
@pytest.mark.parametrize("kind", GZIP_CORRUPTIONS)
def test_corrupt_gzip_is_one_error_naming_the_file(tmp_path, kind, for_training):
    path = corrupt_gzip(tmp_path / "bad.json.gz", json.dumps(base_file()).encode("utf-8"), kind)
    with pytest.raises(SquadFormatError) as excinfo:
        load_squad(path, for_training=for_training)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


def test_missing_file(tmp_path):
    with pytest.raises(SquadFormatError, match=r"nowhere\.json: file not found"):
        load_squad(tmp_path / "nowhere.json")


def test_answerable_training_question_without_answers_is_an_error(tmp_path):
    data = base_file()
    first_qa(data)["answers"] = []
    path = write(tmp_path / "train.json", data)
    with pytest.raises(SquadFormatError, match=r"train\.json: question 'q1'.*is answerable .* no answers"):
        load_squad(path, for_training=True)
    # evaluation scores it as unanswerable, like the official v2.0 script, and counts it
    dataset = load_squad(path)
    assert dataset.examples[0].is_impossible and dataset.stats["answerable_without_answers"] == 1


def test_v1_question_without_answers_is_an_error(tmp_path):
    data = base_file()
    data["version"] = "1.1"
    data["data"] = data["data"][1:]
    first_qa(data).pop("is_impossible")
    first_qa(data)["answers"] = []
    with pytest.raises(SquadFormatError, match=r"v1\.json: question 'q3'.*has no answers"):
        load_squad(write(tmp_path / "v1.json", data))


# -- answers and offsets ---------------------------------------------------------------------

def offsets_file() -> dict:
    def qa(qid, *answers):
        return {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": s} for t, s in answers]}
    return {"version": "1.1", "data": [{"title": "Offsets", "paragraphs": [{"context": CONTEXT, "qas": [
        qa("repairable", ("France", 0)),                  # wrong start, text occurs once -> moved to 12
        qa("second-ok", ("Paris", 5), ("big", 29)),       # first ambiguous -> skipped, second kept
        qa("ambiguous", ("Paris", 5)),                    # occurs twice -> skipped, question dropped
        qa("absent", ("London", 3)),                      # not in the context -> skipped, dropped
        qa("fine", ("Paris", 20), ("is big", 26)),        # correct (second occurrence), two answers
    ]}]}]}


def test_training_repairs_unique_offsets_and_drops_unlocatable_questions(tmp_path, caplog):
    path = write(tmp_path / "offsets.json", offsets_file())
    with caplog.at_level(logging.WARNING, logger="bench.core.data"):
        dataset = load_squad(path, for_training=True)
    answers = {example.qid: [(a.text, a.start) for a in example.answers] for example in dataset.examples}
    assert answers == {"repairable": [("France", 12)], "second-ok": [("big", 29)], "fine": [("Paris", 20)]}
    stats = dataset.stats
    assert (stats["bad_offsets"], stats["offsets_repaired"], stats["answers_skipped"]) == (4, 1, 3)
    assert (stats["questions_dropped"], stats["questions"], stats["answers_in_file"]) == (2, 3, 7)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "offsets.json: 4 of 7 answers" in warnings[0] and "1 repaired" in warnings[0]
    assert "3 skipped" in warnings[0] and "2 answerable questions" in warnings[0]


def test_evaluation_keeps_every_answer_as_written(tmp_path, caplog):
    path = write(tmp_path / "offsets.json", offsets_file())
    with caplog.at_level(logging.WARNING, logger="bench.core.data"):
        dataset = load_squad(path)
    assert gold_answers(dataset) == {"repairable": ["France"], "second-ok": ["Paris", "big"],
                                     "ambiguous": ["Paris"], "absent": ["London"],
                                     "fine": ["Paris", "is big"]}
    assert dataset.examples[0].answers[0].start == 0
    assert dataset.stats["bad_offsets"] == 4 and dataset.stats["questions_dropped"] == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "4 of 7 answers" in warnings[0] and "all kept" in warnings[0]


def test_unanswerable_questions_ignore_plausible_answers(tmp_path):
    path = write(tmp_path / "f.json", base_file())
    for for_training in (False, True):
        by_id = {example.qid: example for example in load_squad(path, for_training=for_training).examples}
        assert by_id["q2"].is_impossible and by_id["q2"].answers == []
        assert not by_id["q1"].is_impossible
    assert len(by_id["q1"].answers) == 1                    # training keeps the first answer
    assert len(load_squad(path).examples[0].answers) == 2   # evaluation keeps them all


def test_example_fields_and_gzip_sha(tmp_path):
    path = write(tmp_path / "f.json.gz", base_file())
    dataset = load_squad(path)
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset.path == str(path)
    example = dataset.examples[2]
    assert (example.qid, example.title, example.context, example.question) == ("q3", "Beta", "Cats purr.",
                                                                              "What do cats do?")
    assert dataset.stats["answerable"] == 2 and dataset.stats["unanswerable"] == 1

