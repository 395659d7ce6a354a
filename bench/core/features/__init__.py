"""Examples -> model inputs: windows over the context, labels, offsets, cache.

* ``columns``: ``Features``, the windows of a dataset as flat, ragged numpy columns.
* ``layout``: ``FeatureParams``, the input templates and the window arithmetic.
* ``tokenization``: what is read from the (Hugging Face fast) tokenizer.
* ``build``: ``build_features``, examples -> windows with labels and offsets.
* ``cache``: ``load_or_build_features`` and its atomic ``.npz`` cache files.
* ``batches``: ``batch_arrays``, dynamically padded model inputs.

The core never imports torch, mxnet or transformers.
"""
from __future__ import annotations

from bench.core.features.batches import batch_arrays
from bench.core.features.build import build_features
from bench.core.features.cache import (FEATURES_FORMAT_VERSION, examples_fingerprint, features_cache_key,
                                       features_cache_path, load_or_build_features)
from bench.core.features.columns import Features
from bench.core.features.layout import (INPUT_STYLES, STRIDE_MODES, FeatureParams, context_room, validate_params,
                                        window_spans)
from bench.core.features.tokenization import tokenizer_fingerprint

__all__ = [
    "FEATURES_FORMAT_VERSION",
    "INPUT_STYLES",
    "STRIDE_MODES",
    "FeatureParams",
    "Features",
    "batch_arrays",
    "build_features",
    "context_room",
    "examples_fingerprint",
    "features_cache_key",
    "features_cache_path",
    "load_or_build_features",
    "tokenizer_fingerprint",
    "validate_params",
    "window_spans",
]
