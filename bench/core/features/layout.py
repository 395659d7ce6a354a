"""Window parameters, the input templates and the window arithmetic over a context.

Window layout (``params.input_style``)::

    bert:     [CLS] question [SEP] context [SEP]       token types 0 ... 0 1 ... 1
    roberta:  <s> question </s></s> context </s>        token types all 0
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.errors import FeatureParamsError
from bench.core.features.ragged import positions_in_runs

__all__ = ["FeatureParams", "INPUT_STYLES", "STRIDE_MODES", "Template", "context_room", "validate_params",
           "window_spans"]

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
class Template:
    """Where the special tokens go for one input style."""
    separators_between: int          # special tokens between question and context
    context_token_type: int          # token type of the context and the final separator

    @property
    def num_special(self) -> int:
        return 1 + self.separators_between + 1


INPUT_STYLES = {
    "bert": Template(separators_between=1, context_token_type=1),      # [CLS] q [SEP] c [SEP]
    "roberta": Template(separators_between=2, context_token_type=0),   # <s> q </s></s> c </s>
}


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
    start = positions_in_runs(counts) * steps[owner]
    length = np.minimum(rooms[owner], context_lengths[owner] - start)
    return owner, start, length
