"""What feature building reads from the tokenizer, and the fingerprint that identifies it for the cache.

Building works with any Hugging Face *fast* tokenizer through its character
offsets. The core never imports torch, mxnet or transformers: the tokenizer object is
passed in and only its ``backend_tokenizer`` and special token ids are used.
"""
from __future__ import annotations

import hashlib
import json
from itertools import chain

import numpy as np

__all__ = ["encode", "plain_backend", "special_token_ids", "tokenizer_fingerprint"]


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"feature building needs a Hugging Face *fast* tokenizer (character offsets); "
                        f"got {type(tokenizer).__name__}")
    return backend


def plain_backend(tokenizer):
    """The tokenizer's Rust backend without truncation or padding.

    Why a copy when either is set: they come from tokenizer.json or a previous call with
    ``truncation=True`` and would silently cut contexts; the caller's tokenizer is left as it is.
    """
    backend = _backend(tokenizer)
    if backend.truncation is None and backend.padding is None:
        return backend
    plain = type(backend).from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def special_token_ids(tokenizer, input_style: str) -> tuple[int, int, int]:
    """(first, between, last) token ids of the template, read from the tokenizer."""
    def pick(*names):
        for name in names:
            value = getattr(tokenizer, name, None)
            if value is not None:
                return int(value)
        raise ValueError(f"{type(tokenizer).__name__} has none of {', '.join(names)}, needed for the "
                         f"{input_style!r} input template")
    if input_style == "roberta":
        first, sep = pick("bos_token_id", "cls_token_id"), pick("eos_token_id", "sep_token_id")
    else:
        first, sep = pick("cls_token_id", "bos_token_id"), pick("sep_token_id", "eos_token_id")
    return first, sep, sep


def tokenizer_fingerprint(tokenizer, input_style: str = "bert") -> dict:
    """What identifies a tokenizer for the cache: class, template special ids, hash of its backend JSON."""
    backend_json = _backend_json_without_limits(tokenizer)
    return {"class": type(tokenizer).__name__,
            "special_ids": list(special_token_ids(tokenizer, input_style)),
            "pad_token_id": getattr(tokenizer, "pad_token_id", None),
            "backend_sha256": hashlib.sha256(backend_json.encode("utf-8")).hexdigest()}


def _backend_json_without_limits(tokenizer) -> str:
    """The backend's JSON minus its truncation and padding settings, which building ignores.

    Why not copy and reserialize: that costs ~0.1 s, too much for a cache hit. The Rust
    serializer writes ``version``, ``truncation`` and ``padding`` first, so everything from
    ``"added_tokens"`` on is the part that decides the tokens; parse only if that layout changes.
    """
    text = _backend(tokenizer).to_str()
    marker = text.find('"added_tokens":')
    if marker >= 0:
        return text[marker:]
    settings = json.loads(text)
    settings.pop("truncation", None)
    settings.pop("padding", None)
    return json.dumps(settings, sort_keys=True)


def encode(backend, texts: list[str], with_offsets: bool):
    """Token ids (flat int32), per-text token counts and, optionally, flat (n, 2) char offsets."""
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    total = int(counts.sum())
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    if not with_offsets:
        return ids, counts, None
    pairs = chain.from_iterable(e.offsets for e in encodings)
    offsets = np.fromiter(chain.from_iterable(pairs), dtype=np.int32, count=2 * total).reshape(total, 2)
    return ids, counts, offsets
