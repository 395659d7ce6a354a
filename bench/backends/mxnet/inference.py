"""Forward passes over evaluation windows with a GluonQAModel -> the numpy arrays the core post-processes.

The same contract as ``bench.backends.torch.inference.predict_windows``: windows run
longest first in batches of similar length, results come back in the order of
``indices``, in the head's output format (``start_logits``/``end_logits`` or the
conditional head's top-k arrays and ``null_score``). Dropout is off: nothing here
runs under ``autograd.record``.
"""
from __future__ import annotations

import numpy as np

from bench.core.features import Features
from bench.backends.mxnet.heads import batch_to_nd
from bench.run.helpers import predict_in_batches

__all__ = ["predict_windows"]


def predict_windows(model, features: Features, indices: np.ndarray, *, batch_size: int, pad_id: int, ctx,
                    round_to: int | None = None, start_top_n: int = 5, end_top_n: int = 5,
                    log_interval: int = 10, progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    def predict_batch(arrays: dict) -> dict:
        return model.predict(batch_to_nd(arrays, ctx), start_top_n=start_top_n, end_top_n=end_top_n)

    return predict_in_batches(features, indices, predict_batch, head=model.head_type, batch_size=batch_size,
                              pad_id=pad_id, round_to=round_to, start_top_n=start_top_n, end_top_n=end_top_n,
                              log_interval=log_interval, progress=progress)
