"""The torch backend's CPU training kernel (``bench/backends/torch/cpu_kernels.cc``) against the eager
formula it replaces: softmax(scores + mask) and dropout, forward and backward, float32 and bfloat16, the
dropout's rate, scaling and seeding, the attention function that uses it, and the fallback."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from bench.backends.torch import cpu_kernels, cpu_training  # noqa: E402
from tests.test_native_build import assert_kernels_fall_back  # noqa: E402

B, H, L = 2, 3, 20
LENGTHS = (20, 7)


@pytest.fixture(scope="module")
def kernels():
    built = cpu_kernels.training_kernels()
    assert built is not None, "the torch CPU kernel did not build (g++ is needed)"
    return built


def _inputs(seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.randn(B, H, L, L, generator=generator) * 3).to(dtype)
    grad = torch.randn(B, H, L, L, generator=generator).to(dtype)
    padded = torch.arange(L)[None, :] >= torch.tensor(LENGTHS)[:, None]
    mask = torch.zeros(B, 1, 1, L).masked_fill(padded[:, None, None, :], torch.finfo(torch.float32).min)
    return scores, grad, mask


def _with_gradient(function, scores, grad):
    x = scores.clone().requires_grad_(True)
    out = function(x)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("mask_shape", ["none", "keys", "full"])
def test_without_dropout_it_equals_the_eager_softmax(kernels, mask_shape):
    scores, grad, mask = _inputs()
    if mask_shape == "none":
        mask = None
    elif mask_shape == "full":             # (B, 1, L, L), as transformers' eager mask builds it
        mask = mask.expand(B, 1, L, L).contiguous()
    ours = _with_gradient(lambda x: cpu_kernels.softmax_dropout(kernels, x, mask, 0.0), scores, grad)
    eager = _with_gradient(lambda x: (x if mask is None else x + mask).softmax(-1), scores, grad)
    torch.testing.assert_close(ours[0], eager[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(ours[1], eager[1], atol=2e-6, rtol=0)
    if mask is not None:
        assert (ours[0][1, :, :, LENGTHS[1]:] == 0).all()           # padded keys get exactly 0


def test_bfloat16_is_computed_in_float32_and_rounded(kernels):
    scores, grad, mask = _inputs(dtype=torch.bfloat16)
    ours = _with_gradient(lambda x: cpu_kernels.softmax_dropout(kernels, x, mask, 0.0), scores, grad)
    reference = _with_gradient(lambda x: (x.float() + mask).softmax(-1), scores.float(), grad.float())
    assert ours[0].dtype == ours[1].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0].float(), reference[0], atol=4e-3, rtol=8e-3)
    torch.testing.assert_close(ours[1].float(), reference[1], atol=1e-2, rtol=2e-2)


def test_dropout_keeps_1_minus_p_scaled_and_its_gradient_is_the_masked_softmax_gradient(kernels):
    p = 0.25
    scores, grad, mask = _inputs(1)
    dropped, grad_in = _with_gradient(lambda x: cpu_kernels.softmax_dropout(kernels, x, mask, p), scores, grad)
    softmax = (scores + mask).softmax(-1)
    valid, kept = softmax > 0, dropped > 0
    assert abs(1 - kept[valid].float().mean().item() - p) < 0.03      # 3,240 valid weights
    torch.testing.assert_close(dropped[kept], softmax[kept] / (1 - p), atol=0, rtol=2e-6)
    masked_grad = grad * kept / (1 - p)
    expected = softmax * (masked_grad - (masked_grad * softmax).sum(-1, keepdim=True))
    torch.testing.assert_close(grad_in, expected, atol=2e-6, rtol=0)


def test_masks_repeat_with_torch_seed_on_any_thread_count(kernels):
    scores, _, mask = _inputs()
    threads = torch.get_num_threads()

    def masks(seed: int, count: int):
        torch.manual_seed(seed)
        torch.set_num_threads(count)
        return cpu_kernels.softmax_dropout(kernels, scores, mask, 0.5) > 0

    try:
        assert torch.equal(masks(3, 1), masks(3, 2))
        assert not torch.equal(masks(3, 2), masks(4, 2))
    finally:
        torch.set_num_threads(threads)


def test_the_training_attention_gives_the_same_with_and_without_the_kernel(kernels, monkeypatch):
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(B, H, L, 8, generator=generator) for _ in range(3))
    _, _, mask = _inputs()

    def attend():
        inputs = [t.clone().requires_grad_(True) for t in (query, key, value)]
        out, _ = cpu_training.cpu_training_attention(None, *inputs, mask, dropout=0.0)
        out.sum().backward()
        return out.detach(), [t.grad for t in inputs]

    ours = attend()
    monkeypatch.setattr(cpu_training, "training_kernels", lambda: None)
    eager = attend()
    torch.testing.assert_close(ours[0], eager[0], atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(ours[1], eager[1]):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_what_the_kernel_takes(kernels):
    scores, _, mask = _inputs()
    assert kernels.supports(scores, mask) and kernels.supports(scores.bfloat16(), None)
    assert not kernels.supports(scores.half(), mask)                       # float16: the eager formula
    assert not kernels.supports(scores, mask.bool())                       # boolean masks: the eager formula
    assert not kernels.supports(scores[0], None)                           # not (B, H, Lq, Lk)


def test_unbuildable_or_off_falls_back_with_a_reason(monkeypatch, tmp_path, caplog):
    assert_kernels_fall_back(cpu_kernels.training_kernels, monkeypatch, tmp_path, caplog)
    assert cpu_kernels.kernels_version(None) == "off"
