"""``build_features``: SQuAD examples -> windows with labels, offsets and max-context flags.

Each distinct context is tokenized once, without special tokens (a
paragraph is shared by about five questions), questions and contexts go
through the Rust batch encoder, and the windows are then assembled with numpy
index arithmetic instead of per-window Python code.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from bench.core.features.columns import Features
from bench.core.features.layout import INPUT_STYLES, FeatureParams, Template, validate_params, window_spans
from bench.core.features.ragged import positions_in_runs, ragged_gather, starts_of
from bench.core.features.tokenization import encode, plain_backend, special_token_ids

__all__ = ["build_features"]

# The package's one logger name (as before the split into modules), so log lines read the same.
logger = logging.getLogger("bench.core.features")


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
    backend = plain_backend(tokenizer)
    special_ids = special_token_ids(tokenizer, params.input_style)
    log = logger.info if progress else logger.debug
    clock = time.perf_counter()

    context_ids, context_of_example = _distinct_contexts(examples)
    ctx_tokens, ctx_counts, ctx_offsets = encode(backend, context_ids, with_offsets=True)
    # Why strip: leading/trailing blanks in some SQuAD questions become real tokens in byte-level BPE.
    q_tokens, q_counts, _ = encode(backend, [ex.question.strip() for ex in examples], with_offsets=False)
    log("tokenized %d questions and %d distinct contexts in %.2fs",
        len(examples), len(context_ids), time.perf_counter() - clock)

    tokens = _Tokens(ctx_tokens, starts_of(ctx_counts), ctx_offsets, q_tokens, starts_of(q_counts),
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
              special_ids, template: Template, params: FeatureParams) -> Features:
    """Lay out every window's tokens in flat arrays and label it.

    Why runs instead of per-token masks: each window is four copies (special tokens, question,
    context, special token), so two gathers of whole runs fill 2M+ tokens without temporaries of that size.
    """
    first_id, between_id, last_id = special_ids
    q_len = q_lengths[owner]
    context_start = 1 + q_len + template.separators_between
    lengths = context_start + window_length + 1
    row_starts = starts_of(lengths)
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
    packed = starts_of(lengths)
    dst = ragged_gather(dst_starts, lengths, packed)
    return dst, dst - np.repeat(np.asarray(dst_starts, np.int64) - src_starts, lengths)


def _max_context(owner, window_length, ctx_index, example_context_lengths) -> np.ndarray:
    """For every context token in every window: is this the window where it has the most context?

    BERT's score is min(tokens to the left, tokens to the right) + 0.01 * window length, with the
    earliest window winning ties. Scaled by 100 it is an exact integer, and a final term that
    favours earlier windows makes the best score unique per context token.
    """
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)        # window number within its example
    tie_break = int(rank.max()) + 1 if len(rank) else 1
    within = positions_in_runs(window_length)                           # tokens to the left
    right = np.repeat(window_length - 1, window_length) - within
    per_window = window_length * tie_break + (tie_break - 1 - rank)
    score = 100 * tie_break * np.minimum(within, right) + np.repeat(per_window, window_length)
    # One dense id per (example, context token), to collect each token's best score.
    example_base = starts_of(example_context_lengths)
    token_id = np.repeat(example_base[owner], window_length) + ctx_index
    best = np.full(int(example_base[-1]), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(best, token_id, score)
    return score == best[token_id]


def _window_labels(owner, window_start, window_length, context_start, answer_first, answer_last):
    """Window-relative answer positions; cls (0) and is_impossible where the whole answer is not inside."""
    first, last = answer_first[owner], answer_last[owner]
    inside = (first >= 0) & (first >= window_start) & (last < window_start + window_length)
    start_positions = np.where(inside, context_start + first - window_start, 0).astype(np.int32)
    end_positions = np.where(inside, context_start + last - window_start, 0).astype(np.int32)
    return start_positions, end_positions, ~inside
