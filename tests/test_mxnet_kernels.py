"""The MXNet backend's CPU training kernels (``bench/backends/mxnet/cpu_kernels.cc``) against MXNet's own
operators: masked softmax + dropout, LayerNorm with accumulated gradients, a whole training graph, the
graphs' switch between training and evaluation, and the fallback when the kernels cannot be built.

Needs the MXNet extra and g++ (``bash scripts/install_mxnet.sh``); skipped without MXNet unless
SQUAD_BENCH_REQUIRE_MXNET=1 (``tests.conftest.import_mxnet_or_skip``).
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import import_mxnet_or_skip

mx, _ = import_mxnet_or_skip()

from bench.backends.mxnet import cpu_kernels  # noqa: E402
from tests.test_native_build import assert_kernels_fall_back  # noqa: E402
from bench.backends.mxnet.convert import encoder_config_from_hf, read_hf_config  # noqa: E402
from bench.backends.mxnet.encoders import use_training_kernels  # noqa: E402
from bench.backends.mxnet.heads import build_qa_model  # noqa: E402

HEADS, LENGTH = 3, 24
VALID_LENGTHS = (24, 7)


@pytest.fixture(scope="module")
def kernels():
    built = cpu_kernels.training_kernels()
    assert built is not None, "the MXNet CPU kernels did not build (g++ and the mxnet headers are needed)"
    return built


def _scores(seed: int = 0):
    rng = np.random.default_rng(seed)
    batch = len(VALID_LENGTHS)
    scores = mx.nd.array(rng.normal(0, 3, (batch * HEADS, LENGTH, LENGTH)).astype(np.float32))
    grad = mx.nd.array(rng.normal(0, 1, scores.shape).astype(np.float32))
    return scores, mx.nd.array(np.array(VALID_LENGTHS, dtype=np.float32)), grad


def _with_gradient(op, scores, grad):
    x = scores.copy()
    x.attach_grad()
    with mx.autograd.record():
        out = op(x)
    out.backward(grad)
    return out.asnumpy(), x.grad.asnumpy()


def _mxnet_softmax(scores, valid_length):
    """MXNet's own: a key-padding mask added to the scores, then softmax (what evaluation graphs run)."""
    padded = np.arange(LENGTH)[None, :] >= valid_length.asnumpy()[:, None]
    mask = mx.nd.array(np.repeat(padded * -1e9, HEADS, axis=0)[:, None, :].astype(np.float32))
    return lambda x: mx.nd.softmax(mx.nd.broadcast_add(x, mask), axis=-1)


def test_masked_softmax_without_dropout_equals_mxnet_softmax(kernels):
    scores, lengths, grad = _scores()
    ours = _with_gradient(lambda x: kernels.masked_softmax_dropout(mx.nd, x, lengths, heads=HEADS, p=0.0), scores, grad)
    theirs = _with_gradient(_mxnet_softmax(scores, lengths), scores, grad)
    np.testing.assert_allclose(ours[0], theirs[0], atol=2e-6)
    np.testing.assert_allclose(ours[1], theirs[1], atol=2e-6)
    assert (ours[0][HEADS:, :, VALID_LENGTHS[1]:] == 0).all()      # padded keys get exactly 0


def test_dropout_keeps_1_minus_p_scaled_and_its_gradient_is_the_masked_softmax_gradient(kernels):
    p = 0.25
    scores, lengths, grad = _scores(1)
    dropped, grad_in = _with_gradient(lambda x: kernels.masked_softmax_dropout(mx.nd, x, lengths, heads=HEADS, p=p),
                                      scores, grad)
    softmax = _mxnet_softmax(scores, lengths)(scores).asnumpy()
    valid = softmax > 0
    kept = dropped > 0
    assert abs(1 - kept[valid].mean() - p) < 0.02                    # 6,240 valid weights
    np.testing.assert_allclose(dropped[kept], softmax[kept] / (1 - p), rtol=2e-6)
    masked_grad = grad.asnumpy() * kept / (1 - p)
    expected = softmax * (masked_grad - (masked_grad * softmax).sum(-1, keepdims=True))
    np.testing.assert_allclose(grad_in, expected, atol=2e-6)


def test_dropout_masks_repeat_with_mxnet_seed_on_any_thread_count(kernels):
    scores, lengths, _ = _scores()

    def masks(seed: int, threads: int):
        mx.random.seed(seed)
        op = replace(kernels, threads=threads)
        return op.masked_softmax_dropout(mx.nd, scores, lengths, heads=HEADS, p=0.5).asnumpy() > 0

    assert (masks(3, 1) == masks(3, 2)).all()
    assert (masks(3, 2) != masks(4, 2)).any()


def test_layer_norm_equals_mxnet_with_accumulated_gamma_and_beta_gradients(kernels):
    rng = np.random.default_rng(2)
    data = mx.nd.array(rng.normal(0.5, 2, (4, 5, 32)).astype(np.float32))
    grad = mx.nd.array(rng.normal(0, 1, data.shape).astype(np.float32))
    gamma0, beta0 = rng.uniform(0.5, 1.5, 32).astype(np.float32), rng.normal(0, 1, 32).astype(np.float32)

    def run(norm):
        x, gamma, beta = data.copy(), mx.nd.array(gamma0), mx.nd.array(beta0)
        for value in (x, gamma, beta):
            value.attach_grad(grad_req="add")           # as under --num_accumulated: two backward passes add up
        for _ in range(2):
            with mx.autograd.record():
                out = norm(x * 1.0, gamma, beta)       # the kernel's input is an intermediate value in a model
            out.backward(grad)
        return [value.asnumpy() for value in (out, x.grad, gamma.grad, beta.grad)]

    ours = run(lambda x, g, b: kernels.layer_norm(mx.nd, x, g, b, eps=1e-12))
    theirs = run(lambda x, g, b: mx.nd.LayerNorm(x, g, b, eps=1e-12))
    for name, a, b in zip(("output", "data gradient", "gamma gradient", "beta gradient"), ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def _twin_models(folder, attention_dropout: float, kernels):
    config = encoder_config_from_hf(read_hf_config(folder))
    config = config.replace_dropout(hidden=0.0, attention=attention_dropout)
    models = [build_qa_model(config, head="conditional", dropout=0.0) for _ in range(2)]
    for name, param in models[1].collect_params().items():
        param.set_data(models[0].collect_params()[name.replace(models[1].prefix, models[0].prefix, 1)].data())
    use_training_kernels(models[0], kernels)
    for model in models:
        model.hybridize()
    return models


def _batch(batch: int = 2, length: int = 20):
    rng = np.random.default_rng(5)
    arrays = {"input_ids": rng.integers(5, 90, (batch, length)), "token_types": np.zeros((batch, length)),
              "valid_length": np.array([length, 11]), "candidate_mask": np.ones((batch, length)),
              "start_positions": np.array([3, 4]), "end_positions": np.array([6, 9]),
              "is_impossible": np.array([0, 1])}
    return {name: mx.nd.array(value.astype(np.float32)) for name, value in arrays.items()}


def _graph_operators(model) -> set[str]:
    return {node["op"] for node in json.loads(model._cached_graph[1].tojson())["nodes"]}


def test_training_graph_with_kernels_equals_mxnet_operators(kernels, tiny_dirs):
    batch = _batch()
    models = _twin_models(tiny_dirs["bert"], attention_dropout=0.0, kernels=kernels)
    results = []
    for model in models:
        with mx.autograd.record(train_mode=True):
            loss = model(*batch.values()).sum()
        loss.backward()
        grads = {name[len(model.prefix):]: p.grad().asnumpy() for name, p in model.collect_params().items()
                 if p.grad_req != "null"}
        results.append((loss.asscalar(), grads))
    ours, theirs = map(_graph_operators, models)
    kernel_ops = {cpu_kernels.OP_NAME, cpu_kernels.LAYER_NORM_OP}
    assert kernel_ops <= ours and "softmax" not in ours          # (the conditional head keeps its own LayerNorm)
    assert "softmax" in theirs and not theirs & kernel_ops
    (loss_ours, grads_ours), (loss_theirs, grads_theirs) = results
    assert loss_ours == pytest.approx(loss_theirs, rel=1e-5)
    assert grads_ours.keys() == grads_theirs.keys()
    for name in grads_ours:
        np.testing.assert_allclose(grads_ours[name], grads_theirs[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_evaluation_after_training_drops_the_training_graph(kernels, tiny_dirs):
    """With attention dropout 0.5, a training call traces the kernel (dropout on) into the backbone's graph;
    the next call outside training must trace again, not replay it (ModeTracedGraphs)."""
    ours, theirs = _twin_models(tiny_dirs["bert"], attention_dropout=0.5, kernels=kernels)
    batch = _batch()
    inputs = (batch["input_ids"], batch["token_types"], batch["valid_length"])
    with mx.autograd.record(train_mode=True):
        trained = ours.backbone(*inputs).asnumpy()
    evaluated = ours.backbone(*inputs).asnumpy()
    np.testing.assert_allclose(evaluated, theirs.backbone(*inputs).asnumpy(), atol=1e-5)
    assert np.abs(trained - evaluated).max() > 1e-2                  # the training call did drop


def test_kernels_off_or_unbuildable_fall_back_with_a_reason(monkeypatch, tmp_path, caplog):
    assert_kernels_fall_back(cpu_kernels.training_kernels, monkeypatch, tmp_path, caplog)
    assert cpu_kernels.describe_kernels(None) == "MXNet's operators only"
    assert cpu_kernels.kernels_version(None) == "off"
