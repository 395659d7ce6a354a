"""Task-specific distillation (``--teacher_path``) on the MXNet backend, against the torch backend.

* the distilled per-window loss of one real batch, torch vs MXNet, same weights and teacher logits (dropout
  off), for the basic and bilstm heads; and against the formula by hand through ``distillation_kl``;
* the teacher's logits computed by the MXNet session equal the torch session's;
* a distilled run through the real CLI: the first loss and the parameters after each of 3 updates equal
  the torch backend's from the same start and the same teacher; the second run reads the cached logits.

Needs the MXNet extra; skipped without it unless SQUAD_BENCH_REQUIRE_MXNET=1
(``tests.conftest.import_mxnet_or_skip``).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import import_mxnet_or_skip

mx, _ = import_mxnet_or_skip()
torch = pytest.importorskip("torch")

from safetensors.numpy import load_file  # noqa: E402

from bench.apps.run import main as run_squad  # noqa: E402
from bench.backends.mxnet.convert import encoder_config_from_hf, read_hf_config  # noqa: E402
from bench.backends.mxnet.heads import batch_to_nd, build_qa_model, distillation_kl, load_torch_state  # noqa: E402
from bench.core import heads as head_registry  # noqa: E402
from bench.core.heads import PAD_LOGIT  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from tests.test_distill import _np_log_softmax  # noqa: E402
from tests.test_heads_losses_mxnet import _torch_model  # noqa: E402
from tests.test_mxnet_backend import (LABELS, TORCH_INPUTS, _first_batch, _torch_tensors,  # noqa: E402,F401
                                      train_examples)      # train_examples: a fixture of the parity tests
from tests.test_mxnet_run import PARITY_FLAGS, _initial_weights, train_log, weights  # noqa: E402
from tests.test_run_squad import base_args  # noqa: E402
from tests.tiny_models import save_tiny_qa_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, ALPHA = 2.5, 0.3


@pytest.fixture(scope="module")
def student(tiny_model):
    return tiny_model("bert", dropout=0.0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny_qa_folder("bert", tmp_path_factory.mktemp("teacher"), seed=5, num_hidden_layers=2)


@pytest.fixture
def no_lstm_dropout(monkeypatch):
    monkeypatch.setattr(head_registry, "BILSTM_LAYER_DROPOUT", 0.0)


def _teacher_logits(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple((rng.normal(size=shape) * 3).astype(np.float32) for _ in range(2))


def test_kl_equals_the_formula_by_hand():
    rng = np.random.default_rng(1)
    student, teacher = (rng.normal(size=(3, 9)).astype(np.float32) * 2 for _ in range(2))
    mask = np.zeros((3, 9), bool)
    mask[:, 0], mask[:, 3:8] = True, True
    got = distillation_kl(mx.nd, mx.nd.array(student), mx.nd.array(teacher), mx.nd.array(mask), T).asnumpy()
    teacher_lp = _np_log_softmax(teacher.astype(np.float64) / T, mask)
    student_lp = _np_log_softmax(student.astype(np.float64) / T, mask)
    expected = np.where(mask, np.exp(teacher_lp) * (teacher_lp - student_lp), 0.0).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["basic", "bilstm"])
def test_distilled_loss_of_one_batch_matches_torch(head, student, train_examples, no_lstm_dropout):
    """Same weights, the first real training batch, the same teacher logits: per-window loss and gradients flow."""
    torch_model, tokenizer, source = _torch_model(student, head, "ce")
    arrays = _first_batch(train_examples, tokenizer, source.input_style)
    teacher_start, teacher_end = _teacher_logits(arrays["input_ids"].shape)
    with torch.no_grad():
        expected = torch_model(**_torch_tensors(arrays, TORCH_INPUTS + LABELS),
                               teacher_start_logits=torch.from_numpy(teacher_start),
                               teacher_end_logits=torch.from_numpy(teacher_end),
                               distill_temperature=T, distill_alpha=ALPHA)["loss"].numpy()
    model = build_qa_model(encoder_config_from_hf(read_hf_config(student)), head=head, dropout=0.0)
    load_torch_state(model, {name: value.numpy() for name, value in torch_model.state_dict().items()})
    model.hybridize()
    nd = batch_to_nd(arrays)
    with mx.autograd.record(train_mode=False):
        loss = model.distillation_loss(nd, mx.nd.array(teacher_start), mx.nd.array(teacher_end), T, ALPHA)
    loss.backward()
    print(f"\n{head}: distilled per-window loss max |torch - mxnet| = {np.abs(loss.asnumpy() - expected).max():.2e}")
    # float32 noise of two graphs, scaled by T^2 = 6.25 in the KL term: compared relatively (values ~4.5)
    np.testing.assert_allclose(loss.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(model.head.span_scores.weight.grad().asnumpy()).sum() > 0
    with mx.autograd.record(train_mode=False):       # alpha 0 is the plain loss
        zero = model.distillation_loss(nd, mx.nd.array(teacher_start), mx.nd.array(teacher_end), T, 0.0)
        plain = model(nd["input_ids"], nd["token_types"], nd["valid_length"], nd["candidate_mask"],
                      nd["start_positions"], nd["end_positions"], nd["is_impossible"])
    np.testing.assert_allclose(zero.asnumpy(), plain.asnumpy(), rtol=1e-6)


def _distill_flags(teacher, **flags) -> dict:
    return {**PARITY_FLAGS, "head": "basic", "max_train_samples": 12, "max_eval_samples": 8,
            "teacher_path": str(teacher), "distill_temperature": T, "distill_alpha": ALPHA, **flags}


def _cached_logits(cache_dir) -> dict[str, np.ndarray]:
    (path,) = sorted(cache_dir.glob("teacher-logits-*.npz"))
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in ("start_logits", "end_logits")}


def test_first_distilled_updates_match_the_torch_backend(student, teacher_dir, sample_files, tmp_path, caplog):
    """test_mxnet_run's parity run with a teacher: each backend computes the teacher's logits in its own
    cache, and they agree; then the first loss and the parameters after each of 3 updates agree."""
    init = _initial_weights(student, "basic", tmp_path / "init.safetensors")
    runs = {}
    for backend in ("torch", "mxnet"):
        runs[backend] = tmp_path / backend / "run"
        assert run_squad(base_args(student, sample_files["2.0"], runs[backend], param_checkpoint=init,
                                   backend=backend, **_distill_flags(teacher_dir))) == 0
        record = load_results(runs[backend] / "results.json")
        assert record["backend"] == backend and record["distillation"]["alpha"] == ALPHA
    logits = {backend: _cached_logits(tmp_path / backend / "cache") for backend in runs}
    for name in ("start_logits", "end_logits"):
        # candidate positions; the rest hold the masking or the padding value (PAD_LOGIT)
        finite = logits["torch"][name] > PAD_LOGIT / 2
        assert np.array_equal(finite, logits["mxnet"][name] > PAD_LOGIT / 2) and finite.any()
        np.testing.assert_allclose(logits["mxnet"][name][finite], logits["torch"][name][finite], atol=1e-5)
    logs = {backend: train_log(path) for backend, path in runs.items()}
    loss_diff = abs(logs["torch"][0]["loss"] - logs["mxnet"][0]["loss"])
    start = load_file(str(init))
    param_diffs = [max(float(np.abs(weights(runs["torch"], u)[k] - weights(runs["mxnet"], u)[k]).max()) for k in start)
                   for u in (1, 2, 3)]
    moved = max(float(np.abs(weights(runs["mxnet"], 3)[k] - start[k]).max()) for k in start)
    print(f"\ndistilled: first loss |torch - mxnet| = {loss_diff:.2e}; parameters after updates 1-3: "
          f"{', '.join(f'{d:.2e}' for d in param_diffs)} (largest move {moved:.2e})")
    assert loss_diff <= 1e-5 and max(param_diffs) <= 1e-6
    assert moved > 1e-3, "nothing moved: proves nothing"

    # the second MXNet run on the same windows reads the cache
    caplog.set_level(logging.INFO, logger="bench")
    again = tmp_path / "mxnet" / "again"
    assert run_squad(base_args(student, sample_files["2.0"], again, param_checkpoint=init, backend="mxnet",
                               **_distill_flags(teacher_dir))) == 0
    assert "loaded the teacher's logits" in (again / "run.log").read_text()
    assert train_log(again)[0]["loss"] == pytest.approx(logs["mxnet"][0]["loss"], abs=1e-6)


def test_a_distilled_run_differs_from_a_plain_one(student, teacher_dir, sample_files, tmp_path):
    """The teacher term reaches the MXNet loss: alpha 0.9 moves the first logged loss away from alpha 0."""
    first = {}
    for alpha in (0.0, 0.9):
        out = tmp_path / f"alpha{alpha}" / "run"
        assert run_squad(base_args(student, sample_files["2.0"], out, backend="mxnet",
                                   **_distill_flags(teacher_dir, distill_alpha=alpha, num_train_steps=1))) == 0
        first[alpha] = train_log(out)[0]["loss"]
    assert abs(first[0.9] - first[0.0]) > 1e-3, first
