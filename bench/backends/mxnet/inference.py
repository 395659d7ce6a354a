"""Forward passes over evaluation windows with a GluonQAModel -> the numpy arrays the core post-processes.

The same contract as ``bench.backends.torch.inference.predict_windows``: windows run
longest first in batches of similar length, results come back in the order of
``indices``, in the head's output format (``bench.core.heads``). Dropout is off: nothing here
runs under ``autograd.record``.
"""
from __future__ import annotations

import numpy as np

from bench.core.features import Features
from bench.backends.mxnet.heads import batch_to_nd
from bench.run.helpers import EvalBatching, predict_in_batches

__all__ = ["predict_windows"]


def predict_windows(model, features: Features, indices: np.ndarray, batching: EvalBatching, *, ctx,
                    progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    def predict_batch(arrays: dict) -> dict:
        return model.predict(batch_to_nd(arrays, ctx), start_top_n=batching.start_top_n,
                             end_top_n=batching.end_top_n)

    return predict_in_batches(features, indices, predict_batch, batching, progress=progress)
