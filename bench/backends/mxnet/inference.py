"""Forward passes over evaluation windows with a GluonQAModel -> the numpy arrays the core post-processes.

The same contract as ``bench.backends.torch.inference.predict_windows``: windows run
longest first in batches of similar length, results come back in the order of
``indices``, in the head's output format (``bench.core.heads``). Dropout is off: nothing here
runs under ``autograd.record``.

On the CPU the model's cached graphs are built by MXNet's oneDNN subgraph backend for the
duration (``fused_for_inference``): fully connected layers fused with their activation and the
residual add. Measured on MiniLM, 256 windows of 384 tokens, batch 16, 2 threads (AMD EPYC):
20.1 -> 22.7 windows/s, logits equal to 1.4e-5. The fused operators are for inference only, so
the plain graphs come back afterwards, for training.
"""
from __future__ import annotations

import contextlib

import numpy as np

from bench.core.features import Features
from bench.backends.mxnet.heads import batch_to_nd
from bench.run.helpers import EvalBatching, predict_in_batches

__all__ = ["predict_windows", "fused_for_inference"]

CPU_INFERENCE_BACKEND = "MKLDNN"     # MXNet 1.9's name for its oneDNN subgraph backend


def predict_windows(model, features: Features, indices: np.ndarray, batching: EvalBatching, *, ctx,
                    progress=None) -> dict[str, np.ndarray]:
    """Predict the windows ``indices`` (positions in ``features``); rows follow ``indices``' order."""
    def predict_batch(arrays: dict) -> dict:
        return model.predict(batch_to_nd(arrays, ctx), start_top_n=batching.start_top_n,
                             end_top_n=batching.end_top_n)

    with fused_for_inference(model, ctx):
        return predict_in_batches(features, indices, predict_batch, batching, progress=progress)


@contextlib.contextmanager
def fused_for_inference(model, ctx):
    """On the CPU: ``model``'s encoder (its ``backbone``, nearly all the work) hybridized with the
    oneDNN subgraph backend inside, and as before on the way out: plainly hybridized, or imperative
    (re-hybridizing drops the cached graphs, which are rebuilt on next use). A HybridBlock passes
    ``backend`` to no child, so it is set on the encoder itself."""
    if ctx.device_type != "cpu":
        yield
        return
    was_hybridized = model.backbone._active     # gluon keeps no public flag for it
    model.backbone.hybridize(backend=CPU_INFERENCE_BACKEND)
    try:
        yield
    finally:
        model.backbone.hybridize(active=was_hybridized)
