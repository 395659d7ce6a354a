"""Examples -> model inputs: windows over the context, labels, offsets, cache.

Storage is columnar and ragged: the tokens of every window are concatenated in
flat arrays, and ``row_starts[i]:row_starts[i+1]`` slices window ``i``. This
keeps 100k+ training windows compact (no padding stored) and makes the cache a
single ``.npz``.

Building works with any Hugging Face *fast* tokenizer through its character
offsets. Each distinct context is tokenized once, without special tokens (a
paragraph is shared by about five questions), questions and contexts go
through the Rust batch encoder, and the windows are then assembled with numpy
index arithmetic instead of per-window Python code.

Window layout (``params.input_style``)::

    bert:     [CLS] question [SEP] context [SEP]       token types 0 ... 0 1 ... 1
    roberta:  <s> question </s></s> context </s>        token types all 0

The core never imports torch, mxnet or transformers: the tokenizer object is
passed in and only its ``backend_tokenizer`` and special token ids are used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.io_utils import atomic_path
from bench.core.errors import FeatureParamsError

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

logger = logging.getLogger(__name__)

# Bump whenever building or the file layout changes, so old cache files are rebuilt, not reused.
FEATURES_FORMAT_VERSION = 1

STRIDE_MODES = ("step", "overlap")


@dataclass(frozen=True)
class FeatureParams:
    max_seq_length: int = 512
    max_query_length: int = 64
    doc_stride: int = 128
    stride_mode: str = "step"        # "step": distance between window starts (BERT/GluonNLP);
                                     # "overlap": tokens shared by consecutive windows (Hugging Face)
    input_style: str = "bert"        # "bert" or "roberta" (see bench.core.models.ModelSpec)


@dataclass(frozen=True)
class _Template:
    """Where the special tokens go for one input style."""
    separators_between: int          # special tokens between question and context
    context_token_type: int          # token type of the context and the final separator

    @property
    def num_special(self) -> int:
        return 1 + self.separators_between + 1


INPUT_STYLES = {
    "bert": _Template(separators_between=1, context_token_type=1),      # [CLS] q [SEP] c [SEP]
    "roberta": _Template(separators_between=2, context_token_type=0),   # <s> q </s></s> c </s>
}


@dataclass
class Features:
    """All windows of a dataset. ``n`` = number of windows, ``T`` = total tokens.

    Per window (shape ``(n,)``):
        example_index   int32  index into ``SquadDataset.examples``
        row_starts      int64  shape ``(n+1,)``; window i is flat[row_starts[i]:row_starts[i+1]]
        context_start   int32  position of the first context token inside the window
        start_positions int32  label: answer's first token (window-relative), cls_index if none
        end_positions   int32  label: answer's last token (window-relative), cls_index if none
        is_impossible   bool   label: True when the window does not contain the whole answer
                               or the question is unanswerable
    cls_index is always 0 (the first token of every window).

    Per token (shape ``(T,)`` / ``(T, 2)``):
        input_ids       int32
        token_type_ids  int8   0 for question side, 1 for context side (all 0 for "roberta" style)
        offsets         int32 (T, 2)  character span [start, end) in the example's context for
                               context tokens, (-1, -1) for question and special tokens
        is_max_context  bool   token_is_max_context: the window in which this context token
                               has the most surrounding context (False for non-context tokens)

    Added by the builder (optional, so code that assembles Features by hand need not supply it):
        context_token_start  int32 (n,) or None  index, in the tokenization of the whole context,
                               of the window's first context token (the window's place in the context)
    """
    example_index: np.ndarray
    row_starts: np.ndarray
    context_start: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    is_impossible: np.ndarray
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray
    is_max_context: np.ndarray
    params: FeatureParams

    cls_index: int = 0
    context_token_start: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.example_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.row_starts).astype(np.int32)

    @property
    def context_lengths(self) -> np.ndarray:
        """Context tokens per window (everything between ``context_start`` and the final separator)."""
        return (self.lengths - self.context_start - 1).astype(np.int32)

    def window(self, i: int) -> slice:
        return slice(int(self.row_starts[i]), int(self.row_starts[i + 1]))

    def select(self, indices: Sequence[int] | np.ndarray) -> Features:
        """The windows at ``indices`` (any order, repeats allowed, or a boolean mask), as new Features."""
        indices = _as_indices(indices, len(self))
        lengths = self.lengths[indices].astype(np.int64)
        row_starts = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_starts[1:])
        tokens = _ragged_gather(self.row_starts[:-1][indices], lengths, row_starts)
        return replace(
            self,
            example_index=self.example_index[indices], row_starts=row_starts,
            context_start=self.context_start[indices], start_positions=self.start_positions[indices],
            end_positions=self.end_positions[indices], is_impossible=self.is_impossible[indices],
            input_ids=self.input_ids[tokens], token_type_ids=self.token_type_ids[tokens],
            offsets=self.offsets[tokens], is_max_context=self.is_max_context[tokens],
            context_token_start=(None if self.context_token_start is None
                                 else self.context_token_start[indices]))


# Per-window and per-token columns, as stored in the cache (params and cls_index travel separately).
_WINDOW_COLUMNS = ("example_index", "context_start", "start_positions", "end_positions", "is_impossible",
                   "context_token_start")
_TOKEN_COLUMNS = ("input_ids", "token_type_ids", "offsets", "is_max_context")


def _as_indices(indices, n: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (n,):
            raise IndexError(f"boolean mask of shape {indices.shape} for {n} windows")
        return np.flatnonzero(indices)
    indices = indices.astype(np.int64, copy=False).reshape(-1)
    if len(indices) and (indices.min() < -n or indices.max() >= n):
        raise IndexError(f"window index out of range for {n} windows")
    return np.where(indices < 0, indices + n, indices)


def _ragged_gather(source_starts: np.ndarray, lengths: np.ndarray, row_starts: np.ndarray) -> np.ndarray:
    """Flat source index of every token when rows of ``lengths`` tokens are copied from ``source_starts``."""
    total = int(row_starts[-1])
    shift = np.repeat(np.asarray(source_starts, np.int64) - row_starts[:-1], lengths)
    return np.arange(total, dtype=np.int64) + shift


# --------------------------------------------------------------------------- window arithmetic

def _flag_values(params: FeatureParams) -> str:
    return (f"--max_seq_length {params.max_seq_length}, --max_query_length {params.max_query_length}, "
            f"--doc_stride {params.doc_stride}, --stride_mode {params.stride_mode}")


def context_room(params: FeatureParams, question_length: int | None = None) -> int:
    """Context tokens one window can hold next to a question of ``question_length`` tokens
    (default: the longest question allowed, ``max_query_length``)."""
    if question_length is None:
        question_length = params.max_query_length
    return params.max_seq_length - question_length - INPUT_STYLES[params.input_style].num_special


def validate_params(params: FeatureParams) -> None:
    """Raise ValueError, naming the flags and their values, for settings no window layout can satisfy.

    Checked against the longest question allowed (``max_query_length``), so whether a run works
    never depends on which questions happen to be in the data.
    """
    if params.input_style not in INPUT_STYLES:
        raise FeatureParamsError(f"unknown input_style {params.input_style!r}; expected one of {sorted(INPUT_STYLES)}")
    if params.stride_mode not in STRIDE_MODES:
        raise FeatureParamsError(f"--stride_mode must be one of {', '.join(STRIDE_MODES)}, got "
                         f"{params.stride_mode!r} ({_flag_values(params)})")
    if params.max_query_length < 1:
        raise FeatureParamsError(f"--max_query_length must be at least 1 ({_flag_values(params)})")
    special = INPUT_STYLES[params.input_style].num_special
    room = context_room(params)
    if room <= 0:
        raise FeatureParamsError(
            f"no room for context: --max_seq_length {params.max_seq_length} - --max_query_length "
            f"{params.max_query_length} - {special} special tokens = {room}; raise --max_seq_length or "
            f"lower --max_query_length ({_flag_values(params)})")
    if params.stride_mode == "step" and not 0 < params.doc_stride <= room:
        raise FeatureParamsError(
            f"--doc_stride {params.doc_stride} with --stride_mode step is the distance between window starts "
            f"and must be in 1..{room} (the context tokens a window holds: --max_seq_length "
            f"{params.max_seq_length} - --max_query_length {params.max_query_length} - {special}); a larger "
            f"step would skip context tokens. For the Hugging Face meaning (tokens shared by consecutive "
            f"windows) use --stride_mode overlap ({_flag_values(params)})")
    if params.stride_mode == "overlap" and not 0 <= params.doc_stride < room:
        raise FeatureParamsError(
            f"--doc_stride {params.doc_stride} with --stride_mode overlap is the number of tokens shared by "
            f"consecutive windows and must be in 0..{room - 1} (a window holds {room} context tokens: "
            f"--max_seq_length {params.max_seq_length} - --max_query_length {params.max_query_length} - "
            f"{special}) ({_flag_values(params)})")


def window_spans(context_lengths: np.ndarray, rooms: np.ndarray, params: FeatureParams):
    """Windows over contexts of ``context_lengths`` tokens, each window holding ``rooms`` tokens.

    Returns ``(owner, start, length)``: for every window, the index of its context in
    ``context_lengths``, its first context token and its number of context tokens. Windows advance
    by the step until one reaches the end of the context; that last one is cut at the context end.
    """
    context_lengths = np.asarray(context_lengths, np.int64)
    rooms = np.asarray(rooms, np.int64)
    steps = rooms - params.doc_stride if params.stride_mode == "overlap" else np.full_like(rooms, params.doc_stride)
    overflow = np.maximum(context_lengths - rooms, 0)
    counts = 1 + -(-overflow // steps)                       # ceil division; 1 window when it all fits
    owner = np.repeat(np.arange(len(counts)), counts)
    start = _positions_in_runs(counts) * steps[owner]
    length = np.minimum(rooms[owner], context_lengths[owner] - start)
    return owner, start, length


# --------------------------------------------------------------------------- tokenizer access

def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"feature building needs a Hugging Face *fast* tokenizer (character offsets); "
                        f"got {type(tokenizer).__name__}")
    return backend


def _plain_backend(tokenizer):
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


def _special_ids(tokenizer, input_style: str) -> tuple[int, int, int]:
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
            "special_ids": list(_special_ids(tokenizer, input_style)),
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


def _encode(backend, texts: list[str], with_offsets: bool):
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


def _starts_of(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts


# --------------------------------------------------------------------------- building

def build_features(examples: list, tokenizer, params: FeatureParams, *, is_training: bool,
                   progress: bool = False) -> Features:
    """Tokenize ``examples`` (SquadExample) into overlapping windows with labels and offsets.

    Labels are computed the same way for training and evaluation (the first gold answer; windows
    without the whole answer, unanswerable questions and questions without answers point at
    cls_index 0 with ``is_impossible=True``); ``is_training`` is recorded only to tell the two
    kinds of cache files apart.
    """
    del is_training  # same labels either way; see docstring
    validate_params(params)
    template = INPUT_STYLES[params.input_style]
    backend = _plain_backend(tokenizer)
    special_ids = _special_ids(tokenizer, params.input_style)
    log = logger.info if progress else logger.debug
    clock = time.perf_counter()

    context_ids, context_of_example = _distinct_contexts(examples)
    ctx_tokens, ctx_counts, ctx_offsets = _encode(backend, context_ids, with_offsets=True)
    # Why strip: leading/trailing blanks in some SQuAD questions become real tokens in byte-level BPE.
    q_tokens, q_counts, _ = _encode(backend, [ex.question.strip() for ex in examples], with_offsets=False)
    log("tokenized %d questions and %d distinct contexts in %.2fs",
        len(examples), len(context_ids), time.perf_counter() - clock)

    tokens = _Tokens(ctx_tokens, _starts_of(ctx_counts), ctx_offsets, q_tokens, _starts_of(q_counts),
                     context_of_example)
    q_lengths = np.minimum(q_counts, params.max_query_length)
    rooms = params.max_seq_length - q_lengths - template.num_special
    owner, window_start, window_length = window_spans(ctx_counts[context_of_example], rooms, params)
    answer_first, answer_last = _answer_token_spans(examples, tokens)
    features = _assemble(tokens, q_lengths, owner, window_start, window_length, answer_first, answer_last,
                         special_ids, template, params)
    log("built %d windows (%d tokens) for %d questions in %.2fs",
        len(features), len(features.input_ids), len(examples), time.perf_counter() - clock)
    return features


@dataclass
class _Tokens:
    """Tokenized data: distinct contexts and questions, flat, with ``*_starts`` slicing each text."""
    ctx_ids: np.ndarray
    ctx_starts: np.ndarray
    ctx_offsets: np.ndarray
    q_ids: np.ndarray
    q_starts: np.ndarray
    context_of_example: np.ndarray

    def context_lengths_per_example(self) -> np.ndarray:
        return np.diff(self.ctx_starts)[self.context_of_example]


def _distinct_contexts(examples) -> tuple[list[str], np.ndarray]:
    """The distinct contexts in first-seen order and, per example, the index of its context."""
    index_of: dict[str, int] = {}
    context_of_example = np.fromiter((index_of.setdefault(ex.context, len(index_of)) for ex in examples),
                                     dtype=np.int64, count=len(examples))
    return list(index_of), context_of_example


def _answer_token_spans(examples, tokens: _Tokens) -> tuple[np.ndarray, np.ndarray]:
    """Context-token span (first, last) of each example's first answer; (-1, -1) when there is none.

    First token = the first whose end > answer start; last = the last whose start < answer end,
    so an answer edge falling on whitespace snaps inward. One vectorized search over all contexts:
    each context's offsets are shifted by ``context index * stride`` to keep them in one sorted array.
    """
    n = len(examples)
    first, last = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    answered = np.fromiter((bool(ex.answers) and not ex.is_impossible for ex in examples), bool, count=n)
    rows = np.flatnonzero(answered)
    if len(rows) == 0 or len(tokens.ctx_ids) == 0:
        return first, last
    char_start = np.array([examples[i].answers[0].start for i in rows], dtype=np.int64)
    char_end = char_start + np.array([len(examples[i].answers[0].text) for i in rows], dtype=np.int64)
    ctx = tokens.context_of_example[rows]
    owner = np.repeat(np.arange(len(tokens.ctx_starts) - 1), np.diff(tokens.ctx_starts))
    stride = int(max(tokens.ctx_offsets.max(), char_end.max())) + 2
    # Why the running maximum: offsets should already ascend; this keeps the search valid if a
    # tokenizer ever emits a token whose span starts before its predecessor's. Keys of a context
    # all exceed those of the contexts before it, so one global running maximum is per-context.
    ends = np.maximum.accumulate(owner * stride + tokens.ctx_offsets[:, 1])
    starts = np.maximum.accumulate(owner * stride + tokens.ctx_offsets[:, 0])
    lo, hi = tokens.ctx_starts[ctx], tokens.ctx_starts[ctx + 1]
    tok_first = np.searchsorted(ends, ctx * stride + np.maximum(char_start, 0), side="right")
    tok_last = np.searchsorted(starts, ctx * stride + char_end, side="left") - 1
    ok = (char_end > char_start) & (tok_first < hi) & (tok_last >= lo) & (tok_first <= tok_last)
    first[rows[ok]] = tok_first[ok] - lo[ok]
    last[rows[ok]] = tok_last[ok] - lo[ok]
    return first, last


def _assemble(tokens: _Tokens, q_lengths, owner, window_start, window_length, answer_first, answer_last,
              special_ids, template: _Template, params: FeatureParams) -> Features:
    """Lay out every window's tokens in flat arrays and label it.

    Why runs instead of per-token masks: each window is four copies (special tokens, question,
    context, special token), so two gathers of whole runs fill 2M+ tokens without temporaries of that size.
    """
    first_id, between_id, last_id = special_ids
    q_len = q_lengths[owner]
    context_start = 1 + q_len + template.separators_between
    lengths = context_start + window_length + 1
    row_starts = _starts_of(lengths)
    total = int(row_starts[-1])

    input_ids = np.full(total, between_id, dtype=np.int32)
    input_ids[row_starts[:-1]] = first_id
    input_ids[row_starts[1:] - 1] = last_id
    q_dst, q_src = _runs(row_starts[:-1] + 1, tokens.q_starts[owner], q_len)
    input_ids[q_dst] = tokens.q_ids[q_src]
    ctx_base = tokens.ctx_starts[tokens.context_of_example[owner]]
    ctx_dst, ctx_src = _runs(row_starts[:-1] + context_start, ctx_base + window_start, window_length)
    input_ids[ctx_dst] = tokens.ctx_ids[ctx_src]
    offsets = np.full((total, 2), -1, dtype=np.int32)
    # Why the int64 views: moving each (start, end) pair as one 8-byte item halves the indexing work.
    offsets.view(np.int64)[ctx_dst, 0] = tokens.ctx_offsets.view(np.int64)[ctx_src, 0]

    token_type_ids = np.zeros(total, dtype=np.int8)
    if template.context_token_type:
        token_type_ids[ctx_dst] = template.context_token_type
        token_type_ids[row_starts[1:] - 1] = template.context_token_type
    ctx_index = ctx_src - np.repeat(ctx_base, window_length)            # index in the whole context
    is_max_context = np.zeros(total, dtype=bool)
    is_max_context[ctx_dst] = _max_context(owner, window_length, ctx_index, tokens.context_lengths_per_example())

    start_positions, end_positions, is_impossible = _window_labels(
        owner, window_start, window_length, context_start, answer_first, answer_last)
    return Features(
        example_index=owner.astype(np.int32), row_starts=row_starts, context_start=context_start.astype(np.int32),
        start_positions=start_positions, end_positions=end_positions, is_impossible=is_impossible,
        input_ids=input_ids, token_type_ids=token_type_ids, offsets=offsets, is_max_context=is_max_context,
        params=params, context_token_start=window_start.astype(np.int32))


def _runs(dst_starts, src_starts, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Flat (destination, source) indices that copy run i of ``lengths[i]`` items from src to dst."""
    packed = _starts_of(lengths)
    dst = _ragged_gather(dst_starts, lengths, packed)
    return dst, dst - np.repeat(np.asarray(dst_starts, np.int64) - src_starts, lengths)


def _max_context(owner, window_length, ctx_index, example_context_lengths) -> np.ndarray:
    """For every context token in every window: is this the window where it has the most context?

    BERT's score is min(tokens to the left, tokens to the right) + 0.01 * window length, with the
    earliest window winning ties. Scaled by 100 it is an exact integer, and a final term that
    favours earlier windows makes the best score unique per context token.
    """
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)        # window number within its example
    tie_break = int(rank.max()) + 1 if len(rank) else 1
    within = _positions_in_runs(window_length)                           # tokens to the left
    right = np.repeat(window_length - 1, window_length) - within
    per_window = window_length * tie_break + (tie_break - 1 - rank)
    score = 100 * tie_break * np.minimum(within, right) + np.repeat(per_window, window_length)
    # One dense id per (example, context token), to collect each token's best score.
    example_base = _starts_of(example_context_lengths)
    token_id = np.repeat(example_base[owner], window_length) + ctx_index
    best = np.full(int(example_base[-1]), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(best, token_id, score)
    return score == best[token_id]


def _positions_in_runs(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., lengths[0]-1, 0, 1, ..., lengths[1]-1, ... as one int64 array."""
    packed = _starts_of(lengths)
    return np.arange(int(packed[-1]), dtype=np.int64) - np.repeat(packed[:-1], lengths)


def _window_labels(owner, window_start, window_length, context_start, answer_first, answer_last):
    """Window-relative answer positions; cls (0) and is_impossible where the whole answer is not inside."""
    first, last = answer_first[owner], answer_last[owner]
    inside = (first >= 0) & (first >= window_start) & (last < window_start + window_length)
    start_positions = np.where(inside, context_start + first - window_start, 0).astype(np.int32)
    end_positions = np.where(inside, context_start + last - window_start, 0).astype(np.int32)
    return start_positions, end_positions, ~inside


# --------------------------------------------------------------------------- cache

def examples_fingerprint(examples) -> str:
    """Hash of the question ids in order: tells a subset or reordering of the same file apart.

    (The file's content is covered by its sha256; hashing every text here would cost as much
    as a quarter of the cache load.)
    """
    joined = "\n".join(ex.qid for ex in examples)
    return hashlib.sha256(f"{len(examples)}\n{joined}".encode()).hexdigest()


def features_cache_key(examples, tokenizer, params: FeatureParams, *, is_training: bool,
                       data_sha256: str) -> dict:
    """Everything the built features depend on, as a JSON-able dict."""
    return {"format_version": FEATURES_FORMAT_VERSION, "data_sha256": data_sha256,
            "examples": examples_fingerprint(examples),
            "tokenizer": tokenizer_fingerprint(tokenizer, params.input_style),
            "params": asdict(params), "is_training": bool(is_training)}


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def features_cache_path(cache_dir, key: dict, params: FeatureParams, *, is_training: bool) -> Path:
    digest = hashlib.sha256(_key_text(key).encode("utf-8")).hexdigest()[:16]
    kind = "train" if is_training else "eval"
    return Path(cache_dir) / f"features-{kind}-{params.input_style}-{params.max_seq_length}-{digest}.npz"


def load_or_build_features(examples: list, tokenizer, params: FeatureParams, *, is_training: bool,
                           data_sha256: str, cache_dir, overwrite_cache: bool = False,
                           progress: bool = False) -> Features:
    """Features from the cache file for exactly these inputs, or built and cached.

    A file that cannot be read, is inconsistent, or was written for another key is reported
    with a warning and rebuilt. ``cache_dir=None`` builds without caching.
    """
    if cache_dir is None:
        return build_features(examples, tokenizer, params, is_training=is_training, progress=progress)
    validate_params(params)
    key = features_cache_key(examples, tokenizer, params, is_training=is_training, data_sha256=data_sha256)
    path = features_cache_path(cache_dir, key, params, is_training=is_training)
    if path.exists() and not overwrite_cache:
        features = _read_cache(path, key)
        if features is not None:
            (logger.info if progress else logger.debug)("loaded %d cached windows from %s", len(features), path)
            return features
    features = build_features(examples, tokenizer, params, is_training=is_training, progress=progress)
    _write_cache(path, key, features)
    return features


def _text_array(text: str) -> np.ndarray:
    """UTF-8 bytes as a uint8 array, so JSON fits in an npz read with allow_pickle=False."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write_cache(path: Path, key: dict, features: Features) -> None:
    arrays: dict[str, Any] = {name: getattr(features, name) for name in _WINDOW_COLUMNS + _TOKEN_COLUMNS}
    arrays["row_starts"] = features.row_starts
    arrays["cls_index"] = np.array(features.cls_index, dtype=np.int64)
    arrays["key_json"] = _text_array(_key_text(key))
    arrays["params_json"] = _text_array(json.dumps(asdict(features.params), sort_keys=True))
    # Why a file object: np.savez appends ".npz" to a path that lacks it, which would miss the rename.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_cache(path: Path, key: dict) -> Features | None:
    """The cached Features, or None (with a warning) if the file is damaged or holds another key."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            stored_key = bytes(stored["key_json"]).decode("utf-8")
            if stored_key != _key_text(key):
                logger.warning("features cache %s was built for other inputs (%s differ); rebuilding",
                               path, _key_differences(stored_key, key))
                return None
            columns = {name: stored[name] for name in _WINDOW_COLUMNS + _TOKEN_COLUMNS + ("row_starts",)}
            params = FeatureParams(**json.loads(bytes(stored["params_json"]).decode("utf-8")))
            features = Features(params=params, cls_index=int(stored["cls_index"]), **columns)
        _check_consistent(features)
        return features
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        logger.warning("features cache %s is unreadable or damaged (%s: %s); rebuilding",
                       path, type(exc).__name__, exc)
        return None


def _key_differences(stored_key: str, key: dict) -> str:
    """Names of the key fields that differ, for the warning (the whole key is too long to read)."""
    try:
        stored = json.loads(stored_key)
    except ValueError:
        return "all fields"
    if not isinstance(stored, dict):
        return "all fields"
    return ", ".join(sorted(name for name in set(stored) | set(key) if stored.get(name) != key.get(name)))


def _check_consistent(features: Features) -> None:
    """Raise ValueError unless the columns agree with one another (catches damage the zip CRC cannot)."""
    n, rows = len(features), features.row_starts
    total = len(features.input_ids)
    problems = []
    if rows.shape != (n + 1,) or rows[0] != 0 or rows[-1] != total or np.any(np.diff(rows) < 0):
        raise ValueError("inconsistent columns: row_starts")
    for name in _WINDOW_COLUMNS:
        if getattr(features, name) is not None and getattr(features, name).shape != (n,):
            problems.append(name)
    for name in _TOKEN_COLUMNS:
        if len(getattr(features, name)) != total:
            problems.append(name)
    if features.offsets.shape != (total, 2):
        problems.append("offsets")
    if not problems and np.any(features.context_start >= features.lengths):
        problems.append("context_start")
    if not problems and np.any(np.maximum(features.start_positions, features.end_positions) >= features.lengths):
        problems.append("start_positions/end_positions")
    if problems:
        raise ValueError(f"inconsistent columns: {', '.join(problems)}")


# --------------------------------------------------------------------------- batches

def batch_arrays(features: Features, indices, pad_id: int, round_to: int | None = None) -> dict[str, np.ndarray]:
    """A dynamically padded batch of the windows at ``indices``.

    Width L = the longest window in the batch, rounded up to a multiple of ``round_to`` (None or
    1: no rounding) but never past ``params.max_seq_length``, which no window exceeds, so rounding
    cannot ask the model for positions it does not have. ``candidate_mask`` is True on cls and
    the context tokens: the only positions an answer may start or end at.
    """
    indices = _as_indices(indices, len(features))
    lengths = features.lengths[indices].astype(np.int64)
    width = int(lengths.max()) if len(indices) else 0
    if round_to and round_to > 1:
        width = max(min(-(-width // round_to) * round_to, features.params.max_seq_length), width)
    rows = np.repeat(np.arange(len(indices)), lengths)
    cols = _positions_in_runs(lengths)
    source = _ragged_gather(features.row_starts[:-1][indices], lengths, _starts_of(lengths))

    def padded(values, fill, dtype):
        out = np.full((len(indices), width), fill, dtype=dtype)
        out[rows, cols] = values
        return out

    context_start = features.context_start[indices].astype(np.int64)[rows]
    in_context = (cols >= context_start) & (cols < lengths[rows] - 1)
    return {
        "input_ids": padded(features.input_ids[source], pad_id, np.int64),
        "token_type_ids": padded(features.token_type_ids[source], 0, np.int64),
        "attention_mask": padded(1, 0, np.int64),
        "candidate_mask": padded(in_context | (cols == features.cls_index), False, bool),
        "start_positions": features.start_positions[indices].astype(np.int64),
        "end_positions": features.end_positions[indices].astype(np.int64),
        "is_impossible": features.is_impossible[indices].astype(bool),
        "feature_index": indices.astype(np.int64),
    }
