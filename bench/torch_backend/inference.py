"""Forward passes over evaluation windows -> numpy arrays the core post-processes.

Windows are run longest-first in batches of similar length (less padding), and
the outputs are scattered back to the features' order. The head decides the
output form: full start/end logits (``basic``) or top-k starts with their
conditioned ends and a null score (``conditional``).
"""
from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch

from bench.features import Features, batch_arrays

logger = logging.getLogger(__name__)

__all__ = ["predict_windows", "to_device", "MODEL_INPUTS"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "candidate_mask")
# Batch widths on the CPU, when --round_to is not given: oneDNN compiles a kernel per input shape
# (bf16 matmuls pay most), so fewer distinct widths (at most 384 / 16 = 24) save more than the
# padding costs: ~10% faster evaluation measured on 2 cores. Padding is masked: outputs are unchanged.
CPU_ROUND_TO = 16
# Large negative but finite in float16, for positions outside a window.
_PAD_LOGIT = -1e4


def to_device(arrays: dict, device: torch.device, names=MODEL_INPUTS) -> dict:
    non_blocking = device.type == "cuda"
    out = {}
    for name in names:
        tensor = torch.from_numpy(np.ascontiguousarray(arrays[name]))
        if non_blocking:
            tensor = tensor.pin_memory()
        out[name] = tensor.to(device, non_blocking=non_blocking)
    return out


def _batches_by_length(features: Features, indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = indices[np.argsort(-features.lengths[indices], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _allocate(head: str, n: int, width: int, start_top_n: int, end_top_n: int) -> dict[str, np.ndarray]:
    if head == "basic":
        return {"start_logits": np.full((n, width), _PAD_LOGIT, np.float32),
                "end_logits": np.full((n, width), _PAD_LOGIT, np.float32)}
    return {"start_top_index": np.zeros((n, start_top_n), np.int64),
            "start_top_logit": np.zeros((n, start_top_n), np.float32),
            "end_top_index": np.zeros((n, start_top_n, end_top_n), np.int64),
            "end_top_logit": np.zeros((n, start_top_n, end_top_n), np.float32),
            "null_score": np.zeros((n,), np.float32)}


@torch.inference_mode()
def predict_windows(model, features: Features, indices: np.ndarray, *, batch_size: int, pad_id: int,
                    device: torch.device, autocast: contextlib.AbstractContextManager | None = None,
                    round_to: int | None = None, start_top_n: int = 5, end_top_n: int = 5,
                    log_interval: int = 10, progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    model.eval()
    if round_to is None and device.type == "cpu":
        round_to = CPU_ROUND_TO
    width = int(features.lengths.max()) if len(features) else 1
    outputs = _allocate(model.head_type, len(indices), width, start_top_n, end_top_n)
    row_of = {int(feature): row for row, feature in enumerate(indices)}
    batches = _batches_by_length(features, np.asarray(indices), batch_size)
    started = time.perf_counter()
    # One autocast context for the whole loop: autocast caches its low-precision copy of each weight
    # until the context exits, so the weights are cast once per evaluation instead of once per batch.
    with (autocast or contextlib.nullcontext()):
        for step, batch_indices in enumerate(batches, 1):
            arrays = batch_arrays(features, batch_indices, pad_id=pad_id, round_to=round_to)
            result = model.predict(**to_device(arrays, device), start_top_n=start_top_n, end_top_n=end_top_n)
            rows = np.fromiter((row_of[int(i)] for i in batch_indices), np.int64, len(batch_indices))
            _store(outputs, result, rows)
            if progress is not None:
                progress.update(len(batch_indices))
            if step % log_interval == 0:
                rate = sum(len(b) for b in batches[:step]) / (time.perf_counter() - started)
                logger.debug("eval batch %d/%d (%.1f windows/s)", step, len(batches), rate)
    return outputs


def _store(outputs: dict, result: dict, rows: np.ndarray) -> None:
    for name, tensor in result.items():
        values = tensor.float().cpu().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()
        if name in ("start_logits", "end_logits"):
            # A batch rounded up (round_to) may be wider than the longest window: those columns are padding.
            width = min(values.shape[1], outputs[name].shape[1])
            outputs[name][rows, :width] = values[:, :width]
        else:
            outputs[name][rows] = values
