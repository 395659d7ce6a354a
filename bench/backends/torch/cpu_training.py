"""CPU training speed (``FastDropout``, ``cpu_training_attention``): on the CPU, torch's
``bernoulli_`` draws one random number per element serially, and SDPA falls back to its
unfused math path (with extra masked-softmax passes) whenever attention dropout is on, so
dropout and attention took about a third of a training step on 2 cores. While a CPU model
trains, every dropout draws its keep mask from 15-bit integers (four per ``random_`` int64
draw of torch's default generator, so checkpoints restore it) and attention runs Hugging
Face's eager formula (additive float mask, softmax, dropout, weighted sum). Same
computation, same dropout probability (to 2^-16); only which random numbers are drawn
differs. Evaluation and GPUs keep SDPA and ``torch.nn.functional.dropout``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from bench.backends.torch.cpu_kernels import softmax_dropout, training_kernels

__all__ = ["FastDropout", "fast_dropout", "use_fast_dropout", "cpu_training_attention", "CPU_TRAINING_ATTENTION",
           "CPU_ATTENTION_REGISTERED", "attention_implementation"]

# Name under which cpu_training_attention is registered with transformers' attention interfaces.
CPU_TRAINING_ATTENTION = "bench_cpu_training"
_KEEP_BITS = 15


def _keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A dropout multiplier: 1/(1-p) where kept, 0 where dropped, P(drop) = round(p * 2^15) / 2^15.

    Why int64 draws: one ``random_`` call yields 64 random bits (uniform over [0, 2^63)) from the
    default generator, and random numbers were the largest single cost of a CPU training step;
    masking each 16-bit quarter to 15 bits gives four uniform 15-bit integers per draw, so
    P(drop) is within 2^-16 of p (0.1 -> 0.100006).
    """
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()
    quarters = words.view(torch.int16)[:count].view(shape)
    quarters.bitwise_and_((1 << _KEEP_BITS) - 1)
    keep = quarters >= round(p * (1 << _KEEP_BITS))
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with a cheaper keep mask on the CPU (see _keep_scale)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)     # GPUs have fused dropout kernels
    return x * _keep_scale(x.shape, p, x.dtype, x.device)


class FastDropout(nn.Dropout):
    """nn.Dropout whose CPU training path is fast_dropout (a drop-in: same ``p``, no state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> None:
    """Replace every plain nn.Dropout inside ``module`` by a FastDropout of the same p."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))


def cpu_training_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs):
    """Hugging Face's eager attention (additive mask, softmax, dropout, weighted sum) with fast_dropout, or
    with mask, softmax and dropout in our kernel (``cpu_kernels``) where it is built.

    Why not SDPA here: with dropout on, the CPU has no fused SDPA kernel; its math fallback
    draws the dropout mask with bernoulli_ and adds masked-softmax passes. The scale goes on the
    query (L x D values) rather than on the scores (L x L). Returns (B, L, heads, D), None.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    kernels = training_kernels()
    if kernels is not None and kernels.supports(scores, attention_mask):
        probs = softmax_dropout(kernels, scores, attention_mask, dropout)     # the same, in one pass each way
    else:
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = fast_dropout(scores.softmax(-1), dropout, dropout > 0.0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register_cpu_training_attention() -> bool:
    """Register cpu_training_attention (eager-style float masks) with transformers; False if unsupported."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:
        return False
    AttentionInterface.register(CPU_TRAINING_ATTENTION, cpu_training_attention)
    AttentionMaskInterface.register(CPU_TRAINING_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return True


CPU_ATTENTION_REGISTERED = _register_cpu_training_attention()


@contextlib.contextmanager
def attention_implementation(config, name: str):
    """Switch the backbone's attention implementation for one forward pass (backward needs no switch)."""
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous
