"""Forward passes over evaluation windows -> numpy arrays the core post-processes.

Windows are run longest-first in batches of similar length (less padding), and
the outputs are scattered back to the features' order, in the form the head's
registry entry names (``bench.core.heads``).
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from bench.core.features import Features
from bench.run.helpers import EvalBatching, predict_in_batches


__all__ = ["predict_windows", "to_device", "default_round_to", "MODEL_INPUTS", "CPU_ROUND_TO"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "candidate_mask")
# Batch widths on the CPU, when --round_to is not given: oneDNN compiles a kernel per input shape
# (bf16 matmuls pay most), so fewer distinct widths (at most 384 / 16 = 24) save more than the
# padding costs: ~10% faster evaluation measured on 2 cores. Padding is masked: outputs are unchanged.
# Training uses it too: with every width from 1 to 192, a MiniLM training process grew from 2.5 to
# 4.3 GB resident in 250 updates (a kernel and buffers per shape); rounded to 16 it stayed at 2.2 GB.
CPU_ROUND_TO = 16


def default_round_to(round_to: int | None, device: torch.device) -> int | None:
    """--round_to as given, else CPU_ROUND_TO on the CPU (GPUs pay nothing per shape without compile)."""
    return CPU_ROUND_TO if round_to is None and device.type == "cpu" else round_to


def to_device(arrays: dict, device: torch.device, names=MODEL_INPUTS) -> dict:
    non_blocking = device.type == "cuda"
    out = {}
    for name in names:
        tensor = torch.from_numpy(np.ascontiguousarray(arrays[name]))
        if non_blocking:
            tensor = tensor.pin_memory()
        out[name] = tensor.to(device, non_blocking=non_blocking)
    return out


@torch.inference_mode()
def predict_windows(model, features: Features, indices: np.ndarray, batching: EvalBatching, *,
                    device: torch.device, autocast: contextlib.AbstractContextManager | None = None,
                    progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    model.eval()
    batching = dataclasses.replace(batching, round_to=default_round_to(batching.round_to, device))

    def predict_batch(arrays: dict) -> dict:
        result = model.predict(**to_device(arrays, device), start_top_n=batching.start_top_n,
                               end_top_n=batching.end_top_n)
        return {name: (t.float() if t.is_floating_point() else t).cpu().numpy() for name, t in result.items()}

    # One autocast context for the whole loop: autocast caches its low-precision copy of each weight
    # until the context exits, so the weights are cast once per evaluation instead of once per batch.
    with (autocast or contextlib.nullcontext()):
        return predict_in_batches(features, indices, predict_batch, batching, progress=progress)
