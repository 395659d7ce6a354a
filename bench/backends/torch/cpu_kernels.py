"""The torch backend's CPU training kernel: attention softmax + dropout in one pass each way.

``cpu_kernels.cc`` beside this file (a C ABI over ``bench/run/native/softmax_dropout.h``, the row
arithmetic the MXNet backend's kernels share) is compiled once per machine by ``bench.run.native_build``
(g++, ``-march=native``, cached) and called through ctypes on the tensors' memory, so it needs no torch
headers.

Why: while a CPU model trains, Hugging Face's eager attention formula (``cpu_training.cpu_training_attention``)
makes about eight passes over each (batch, heads, L, L) tensor for the mask add, softmax, dropout
(``fast_dropout``: draws, masking, comparison, conversion, scaling, multiply) and their backwards;
measured 108 + 84 ms forward + backward for a (8, 12, 384, 384) batch. The kernel reads the scores once
and writes the probabilities once, and its backward needs only the output and the recomputed softmax.
Dropout draws 16 bits per element from a counter-based generator seeded by one draw of torch's default
generator per call, so ``torch.manual_seed`` and a checkpoint's restored RNG state repeat the masks.

Float32 and bfloat16 (autocast) tensors on the CPU; anything else (GPUs, float16, boolean masks) keeps
the eager formula. ``SQUAD_BENCH_CPU_KERNELS=0`` turns it off; without a compiler the log says so once
and training keeps the eager formula, which computes the same function.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.run.native_build import KERNELS_ENV, build_failure, build_library, kernels_enabled, library_version

__all__ = ["TorchKernels", "training_kernels", "softmax_dropout", "kernels_version"]

logger = logging.getLogger("bench.run")

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_I64, _F32, _PTR = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


@dataclass(frozen=True)
class TorchKernels:
    library: Path
    forward: object          # the C functions (ctypes)
    backward: object

    def supports(self, scores: torch.Tensor, mask: torch.Tensor | None) -> bool:
        """Whether this call can run here: CPU float32/bfloat16 (B, H, Lq, Lk) scores, an additive float mask."""
        if scores.device.type != "cpu" or scores.dtype not in _DTYPES or scores.dim() != 4:
            return False
        return mask is None or (mask.dim() == 4 and mask.is_floating_point() and mask.size(-1) == scores.size(-1))


@functools.lru_cache(maxsize=None)
def training_kernels() -> TorchKernels | None:
    """The kernel, built and loaded on first use; None (said once in the log) where it is off or cannot be built."""
    if not kernels_enabled():
        logger.info("%s=0: torch trains with the eager attention formula", KERNELS_ENV)
        return None
    try:
        library = build_library("torch-kernels", (SOURCE,), flags=("-pthread", "-fopenmp-simd"))
    except (OSError, subprocess.CalledProcessError) as error:
        logger.warning("the torch backend's CPU training kernel could not be built (%s): CPU training keeps the "
                       "eager attention formula (docs/speed.md, \"What makes our side fast on a CPU\")",
                       build_failure(error))
        return None
    lib = ctypes.CDLL(str(library))
    lib.bench_softmax_dropout_forward.argtypes = [_PTR, _PTR, ctypes.c_int, _I64, _I64, _I64, _I64,
                                                  _PTR, _I64, _I64, _I64, _F32, ctypes.c_uint64, ctypes.c_int]
    lib.bench_softmax_dropout_backward.argtypes = [_PTR, _PTR, _PTR, _PTR, ctypes.c_int, _I64, _I64, _I64, _I64,
                                                   _PTR, _I64, _I64, _I64, ctypes.c_int]
    for function in (lib.bench_softmax_dropout_forward, lib.bench_softmax_dropout_backward):
        function.restype = ctypes.c_int
    logger.info("torch CPU training uses our attention kernel (%s)", library)
    return TorchKernels(library=library, forward=lib.bench_softmax_dropout_forward,
                        backward=lib.bench_softmax_dropout_backward)


def kernels_version(kernels: TorchKernels | None) -> str:
    """For results.json's ``versions.cpu_kernels``."""
    return library_version(kernels.library if kernels else None)


def softmax_dropout(kernels: TorchKernels, scores: torch.Tensor, mask: torch.Tensor | None, p: float) -> torch.Tensor:
    """``fast_dropout(softmax(scores + mask), p)`` (with autograd) in the kernel; see ``TorchKernels.supports``."""
    return _SoftmaxDropout.apply(scores.contiguous(), _float_mask(mask), float(p), kernels)


def _float_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask.float()
    return mask if mask.stride(-1) == 1 else mask.contiguous()


def _mask_args(mask: torch.Tensor | None) -> tuple:
    """(pointer, batch, head, query strides in elements; 0 where the mask broadcasts)."""
    if mask is None:
        return None, 0, 0, 0
    strides = [0 if size == 1 else stride for size, stride in zip(mask.shape[:3], mask.stride()[:3])]
    return (mask.data_ptr(), *strides)


class _SoftmaxDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, mask, p, kernels):  # pylint: disable=arguments-differ
        # One draw of torch's default generator per call seeds the call's masks.
        seed = int(torch.empty((), dtype=torch.int64).random_().item()) if p > 0.0 else 0
        out = torch.empty_like(scores)
        status = kernels.forward(scores.data_ptr(), out.data_ptr(), _DTYPES[scores.dtype], *scores.shape,
                                 *_mask_args(mask), p, seed, torch.get_num_threads())
        if status:
            raise RuntimeError(f"bench_softmax_dropout_forward refused {tuple(scores.shape)} {scores.dtype}, p={p}")
        ctx.save_for_backward(scores, mask, out)
        ctx.kernels = kernels
        return out

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        scores, mask, out = ctx.saved_tensors
        grad = grad.contiguous().to(scores.dtype)
        grad_scores = torch.empty_like(scores)
        status = ctx.kernels.backward(grad.data_ptr(), out.data_ptr(), scores.data_ptr(), grad_scores.data_ptr(),
                                      _DTYPES[scores.dtype], *scores.shape, *_mask_args(mask), torch.get_num_threads())
        if status:
            raise RuntimeError(f"bench_softmax_dropout_backward refused {tuple(scores.shape)} {scores.dtype}")
        return grad_scores, None, None, None
