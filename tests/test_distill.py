"""Task-specific distillation (``--teacher_path``, bench.run.distill) and ``squad-bench make-student``.

The teacher is a tiny random ``BertForQuestionAnswering`` saved by transformers itself (as
tests/test_hf_qa_checkpoints.py does), the student a tiny random BERT with the same WordPiece
tokenizer; every run goes through the real CLI.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.apps.cli import main as squad_bench  # noqa: E402
from bench.apps.run import main as run_squad  # noqa: E402
from bench.core.flags import ConfigError, RunConfig, validate  # noqa: E402
from bench.core.results import load_results, validate_results  # noqa: E402
from tests.test_run_squad import base_args  # noqa: E402
from tests.tiny_models import WORDPIECE_FILES, save_tiny_qa_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save_teacher(out: Path, seed: int = 5, layers: int = 2) -> Path:
    """A tiny random BertForQuestionAnswering saved by transformers, with the WordPiece tokenizer."""
    return save_tiny_qa_folder("bert", out, seed=seed, num_hidden_layers=layers)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return _save_teacher(tmp_path_factory.mktemp("teacher"))


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def _distill_args(student: Path, data: Path, out: Path, teacher: Path, **flags) -> list[str]:
    return base_args(student, data, out, head="basic", num_train_steps=2, max_eval_samples=8,
                     max_train_samples=12, teacher_path=str(teacher), **flags)


# ----------------------------------------------------------------------------------- the loss
def _np_log_softmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = np.where(mask, x, -1e30)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def test_the_loss_of_one_batch_equals_the_formula_by_hand(tiny_model):
    from bench.backends.torch.modeling import build_qa_model
    from bench.run.model_source import resolve_model_folder

    model = build_qa_model(resolve_model_folder("google_en_uncased_bert_base", str(tiny_model("bert", dropout=0.0))),
                           head="basic", dropout=0.0).train()
    rng = np.random.default_rng(0)
    batch, width = 3, 10
    input_ids = torch.from_numpy(rng.integers(1000, 2000, (batch, width)))
    attention = torch.ones(batch, width, dtype=torch.long)
    mask = np.zeros((batch, width), bool)
    mask[:, 0] = True
    mask[:, 4:9] = True
    starts, ends = torch.tensor([5, 0, 6]), torch.tensor([7, 0, 8])
    teacher_start = rng.normal(size=(batch, width)).astype(np.float32) * 3
    teacher_end = rng.normal(size=(batch, width)).astype(np.float32) * 3
    T, a = 2.5, 0.3
    loss = model(input_ids, attention, candidate_mask=torch.from_numpy(mask), start_positions=starts,
                 end_positions=ends, teacher_start_logits=torch.from_numpy(teacher_start),
                 teacher_end_logits=torch.from_numpy(teacher_end), distill_temperature=T, distill_alpha=a)["loss"]
    with torch.no_grad():
        scores = model.head.scores(model.encode(input_ids, attention)).numpy()

    expected = np.zeros(batch)
    for k, (gold, teacher) in enumerate(((starts.numpy(), teacher_start), (ends.numpy(), teacher_end))):
        student = scores[..., k].astype(np.float64)
        ce = -_np_log_softmax(student, mask)[np.arange(batch), gold]
        p_teacher = np.exp(_np_log_softmax(teacher.astype(np.float64) / T, mask))
        log_ratio = _np_log_softmax(teacher.astype(np.float64) / T, mask) - _np_log_softmax(student / T, mask)
        kl = np.where(mask, p_teacher * np.where(mask, log_ratio, 0.0), 0.0).sum(-1)
        expected += 0.5 * ((1 - a) * ce + a * T * T * kl)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # alpha 0 is the plain loss
    plain = model(input_ids, attention, candidate_mask=torch.from_numpy(mask), start_positions=starts,
                  end_positions=ends)["loss"]
    zero = model(input_ids, attention, candidate_mask=torch.from_numpy(mask), start_positions=starts,
                 end_positions=ends, teacher_start_logits=torch.from_numpy(teacher_start),
                 teacher_end_logits=torch.from_numpy(teacher_end), distill_temperature=T, distill_alpha=0.0)["loss"]
    np.testing.assert_allclose(zero.detach().numpy(), plain.detach().numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------------- through the CLI
def test_a_distilled_run_records_the_teacher_and_caches_its_logits(tiny_dirs, sample_files, teacher_dir, tmp_path,
                                                                    monkeypatch, caplog):
    from bench.backends.torch.session import TorchSession
    from bench.run.distill import teacher_sha256, resolve_teacher

    calls = []
    original = TorchSession.predict

    def counting_predict(self, config, loaded, features, checkpoint):
        calls.append(config.model_path)
        return original(self, config, loaded, features, checkpoint)

    monkeypatch.setattr(TorchSession, "predict", counting_predict)
    caplog.set_level(logging.INFO, logger="bench")
    out = tmp_path / "first"
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], out, teacher_dir,
                                   distill_temperature=3.0, distill_alpha=0.25)) == 0
    record = load_results(out / "results.json")
    assert validate_results(record) == []
    args = RunConfig(teacher_path=str(teacher_dir))
    assert record["distillation"] == {"teacher": str(teacher_dir),
                                      "teacher_sha256": teacher_sha256(resolve_teacher(args)),
                                      "temperature": 3.0, "alpha": 0.25}
    assert calls.count(str(teacher_dir)) == 1               # the teacher ran once, over the training windows
    run_log = (out / "run.log").read_text()
    assert "loss per window = (1 - a) * L_student + a * T^2" in run_log and "T = 3, a = 0.25" in run_log
    caches = sorted((tmp_path / "cache").glob("teacher-logits-*.npz"))
    assert len(caches) == 1
    with np.load(caches[0], allow_pickle=False) as stored:
        assert stored["start_logits"].dtype == np.float32 and stored["start_logits"].ndim == 2

    # a second run on the same windows reads the cache: the teacher is not run again
    calls.clear()
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "second", teacher_dir)) == 0
    assert calls.count(str(teacher_dir)) == 0
    assert "loaded the teacher's logits" in (tmp_path / "second" / "run.log").read_text()

    # a damaged cache is rebuilt, with a warning
    caches[0].write_bytes(b"not an npz file")
    caplog.clear()
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "third", teacher_dir)) == 0
    assert calls.count(str(teacher_dir)) == 1
    assert "is damaged" in caplog.text
    with np.load(caches[0], allow_pickle=False) as stored:
        assert stored["end_logits"].shape[0] > 0


def test_a_run_without_teacher_has_no_distillation_block(tiny_dirs, sample_files, tmp_path):
    out = tmp_path / "plain"
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], out, head="basic", num_train_steps=1,
                               max_eval_samples=4, max_train_samples=6)) == 0
    assert "distillation" not in load_results(out / "results.json")


def test_our_checkpoint_is_a_teacher_with_its_model_folder(tiny_dirs, sample_files, tmp_path, capsys):
    first = tmp_path / "teacher_run"
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], first, head="basic", num_train_steps=2,
                               max_eval_samples=4, max_train_samples=6, save_interval=2)) == 0
    checkpoint = sorted((first / "checkpoints").glob("update_*"))[-1]
    capsys.readouterr()
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "x", checkpoint)) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert str(checkpoint) in line and "--teacher_model_path" in line
    out = tmp_path / "student"
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], out, checkpoint,
                                   teacher_model_path=str(tiny_dirs["bert"]))) == 0
    assert load_results(out / "results.json")["distillation"]["teacher"] == str(checkpoint)


# ----------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("flag, value, message", [
    ("distill_alpha", 1.5, "--distill_alpha must be in [0, 1], got 1.5"),
    ("distill_alpha", -0.1, "--distill_alpha must be in [0, 1], got -0.1"),
    ("distill_temperature", 0.0, "--distill_temperature must be > 0, got 0.0"),
    ("distill_temperature", -1.0, "--distill_temperature must be > 0, got -1.0"),
])
def test_bad_distillation_values_fail_in_one_line(flag, value, message):
    with pytest.raises(ConfigError, match=None) as info:
        validate(RunConfig(do_train=True, head="basic", teacher_path="t", **{flag: value}))
    assert str(info.value) == message


def test_a_teacher_needs_training():
    with pytest.raises(ConfigError, match="--teacher_path needs --do_train"):
        validate(RunConfig(do_eval=True, head="basic", teacher_path="t"))
    with pytest.raises(ConfigError, match="--teacher_model_path needs --teacher_path"):
        validate(RunConfig(do_train=True, head="basic", teacher_model_path="m"))


@pytest.mark.parametrize("backend", ["torch", "mxnet"])
def test_the_conditional_head_refuses_a_teacher(backend, tiny_dirs, sample_files, teacher_dir, tmp_path, capsys):
    args = _distill_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "x", teacher_dir, backend=backend)
    assert run_squad(args + ["--head", "conditional"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "--head conditional" in line and "--teacher_path" in line
    assert not (tmp_path / "x" / "train_log.jsonl").exists()


def _bad_teacher_line(tiny_dirs, sample_files, teacher: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], out, teacher)) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert not (out / "train_log.jsonl").exists()            # stopped before training
    return line


def test_a_teacher_that_is_not_a_qa_model_is_refused(tiny_dirs, sample_files, tmp_path, capsys):
    line = _bad_teacher_line(tiny_dirs, sample_files, tiny_dirs["bert"], tmp_path / "x", capsys)
    assert str(tiny_dirs["bert"]) in line and "not a question-answering model" in line


def test_a_teacher_without_weights_is_refused(tiny_dirs, sample_files, teacher_dir, tmp_path, capsys):
    teacher = tmp_path / "no_weights"
    shutil.copytree(teacher_dir, teacher)
    (teacher / "model.safetensors").unlink()
    line = _bad_teacher_line(tiny_dirs, sample_files, teacher, tmp_path / "x", capsys)
    assert str(teacher) in line and "no safetensors weights" in line


def test_a_teacher_that_tokenizes_differently_is_refused(tiny_dirs, sample_files, teacher_dir, roberta_tokenizer_dir,
                                                          tmp_path, capsys):
    teacher = tmp_path / "other_vocab"
    shutil.copytree(teacher_dir, teacher)
    for name in WORDPIECE_FILES:
        (teacher / name).unlink(missing_ok=True)
    for path in Path(roberta_tokenizer_dir).iterdir():
        shutil.copyfile(path, teacher / path.name)
    line = _bad_teacher_line(tiny_dirs, sample_files, teacher, tmp_path / "x", capsys)
    assert str(teacher) in line and str(tiny_dirs["bert"]) in line and "tokenize differently" in line


# ----------------------------------------------------------------------------------- make-student
@pytest.fixture(scope="module")
def four_layer_teacher(tmp_path_factory) -> Path:
    return _save_teacher(tmp_path_factory.mktemp("teacher4"), seed=7, layers=4)


def test_make_student_keeps_the_chosen_layers_renumbered(four_layer_teacher, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "student"
    assert squad_bench(["make-student", "--from", str(four_layer_teacher), "--layers", "0,3", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and "architectures" not in config
    teacher = load_file(str(four_layer_teacher / "model.safetensors"))
    student = load_file(str(out / "model.safetensors"))
    assert not any(name.startswith("qa_outputs") for name in student)
    np.testing.assert_array_equal(student["embeddings.word_embeddings.weight"],
                                  teacher["bert.embeddings.word_embeddings.weight"])
    for new, old in enumerate((0, 3)):
        for name, value in teacher.items():
            prefix = f"bert.encoder.layer.{old}."
            if name.startswith(prefix):
                renamed = f"encoder.layer.{new}." + name[len(prefix):]
                assert student[renamed].shape == value.shape
                np.testing.assert_array_equal(student[renamed], value)
    assert not any(name.startswith(("encoder.layer.2.", "encoder.layer.3.")) for name in student)
    for name in WORDPIECE_FILES:
        assert (out / name).read_bytes() == (four_layer_teacher / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]        # no staging folder left


@pytest.mark.parametrize("layers, message", [("0,4", "layer 4 is out of range"), ("1,1", "layer 1 is given twice"),
                                             ("a", "expected comma-separated")])
def test_make_student_bad_layers_fail_in_one_line(four_layer_teacher, tmp_path, capsys, layers, message):
    out = tmp_path / "student"
    assert squad_bench(["make-student", "--from", str(four_layer_teacher), "--layers", layers, "--out", str(out)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert message in line and not out.exists()


def test_make_student_refuses_a_missing_folder_and_an_existing_out(four_layer_teacher, tmp_path, capsys):
    assert squad_bench(["make-student", "--from", str(tmp_path / "nope"), "--layers", "0", "--out",
                        str(tmp_path / "s")]) == 2
    assert "not a folder" in _errors(capsys.readouterr().err)[0]
    (tmp_path / "exists").mkdir()
    assert squad_bench(["make-student", "--from", str(four_layer_teacher), "--layers", "0", "--out",
                        str(tmp_path / "exists")]) == 2
    assert "already exists" in _errors(capsys.readouterr().err)[0]


def test_a_student_loads_and_distils_through_the_cli(four_layer_teacher, sample_files, tmp_path):
    student = tmp_path / "student"
    assert squad_bench(["make-student", "--from", str(four_layer_teacher), "--layers", "1,3", "--out",
                        str(student)]) == 0
    out = tmp_path / "run"
    assert run_squad(_distill_args(student, sample_files["2.0"], out, four_layer_teacher)) == 0
    record = load_results(out / "results.json")
    assert record["model"]["family"] == "bert" and record["distillation"]["alpha"] == 0.5


def test_the_results_schema_checks_the_distillation_block(tiny_dirs, sample_files, teacher_dir, tmp_path):
    out = tmp_path / "run"
    assert run_squad(_distill_args(tiny_dirs["bert"], sample_files["2.0"], out, teacher_dir)) == 0
    record = load_results(out / "results.json")
    assert validate_results(record) == []
    bad = {**record, "distillation": {**record["distillation"], "alpha": 2, "temperature": 0, "teacher_sha256": None}}
    assert sorted(validate_results(bad)) == ["field 'distillation.alpha' should be a number in [0, 1]",
                                             "field 'distillation.teacher_sha256' should be a string",
                                             "field 'distillation.temperature' should be a number > 0"]
    assert validate_results({**record, "distillation": []}) == ["field 'distillation' should be an object"]
