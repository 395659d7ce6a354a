"""Forward passes over evaluation windows with a GluonQAModel -> the numpy arrays the core post-processes.

The same contract as ``bench.torch_backend.inference.predict_windows``: windows run
longest first in batches of similar length, results come back in the order of
``indices``, in the head's output format (``start_logits``/``end_logits`` or the
conditional head's top-k arrays and ``null_score``). Dropout is off: nothing here
runs under ``autograd.record``.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from bench.features import Features, batch_arrays
from bench.mxnet_backend.heads import batch_to_nd
from bench.run_helpers import allocate_outputs, batches_by_length, store_rows

logger = logging.getLogger(__name__)

__all__ = ["predict_windows"]


def predict_windows(model, features: Features, indices: np.ndarray, *, batch_size: int, pad_id: int, ctx,
                    round_to: int | None = None, start_top_n: int = 5, end_top_n: int = 5,
                    log_interval: int = 10, progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    indices = np.asarray(indices)
    width = int(features.lengths.max()) if len(features) else 1
    outputs = allocate_outputs(model.head_type, len(indices), width, start_top_n, end_top_n)
    row_of = {int(feature): row for row, feature in enumerate(indices)}
    batches = batches_by_length(features, indices, batch_size)
    started = time.perf_counter()
    for step, batch_indices in enumerate(batches, 1):
        arrays = batch_arrays(features, batch_indices, pad_id=pad_id, round_to=round_to)
        result = model.predict(batch_to_nd(arrays, ctx), start_top_n=start_top_n, end_top_n=end_top_n)
        rows = np.fromiter((row_of[int(i)] for i in batch_indices), np.int64, len(batch_indices))
        store_rows(outputs, result, rows)
        if progress is not None:
            progress.update(len(batch_indices))
        if step % log_interval == 0:
            rate = sum(len(b) for b in batches[:step]) / (time.perf_counter() - started)
            logger.debug("eval batch %d/%d (%.1f windows/s)", step, len(batches), rate)
    return outputs
