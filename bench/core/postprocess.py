"""Post-processing for extractive question answering: model outputs -> answer texts.

The model scores every token of every window as a possible answer start and
end. This module turns those scores into, per question, the predicted answer
text, an n-best list and a no-answer score, in the formats the official SQuAD
evaluation reads. It is the numpy counterpart of Hugging Face's
``utils_qa.postprocess_qa_predictions`` (basic heads) and
``postprocess_qa_predictions_with_beam_search`` (conditional heads), with the
same ideas but without a Python loop over windows, span pairs or n-best entries.

Pipeline
--------
1. Candidates, ``SpanCandidates``: ``C`` candidate (start, end) pairs per window,
   window-relative token indices with their start and end logits.

   * ``candidates_from_logits`` (basic heads: one start and one end logit per
     token): the ``n_best_size`` best starts and the ``n_best_size`` best ends
     among the window's *context* tokens, all pairs, so ``C = n_best_size**2``.
     Unlike ``utils_qa`` the top-k is taken over context tokens only, so a
     question token with a high logit never crowds out a context token.
     Ties go to the lower position. Missing picks (a window with fewer than
     ``n_best_size`` context tokens) are padded with start = end = -1 and
     logit -inf; a logit of -inf is never picked. A NaN or +inf logit at a
     context token raises ValueError; logits at other positions (question,
     special tokens, padding past the window) are never read.
   * ``candidates_from_topk`` (conditional heads, GluonNLP/XLNet style): the
     model's own ``K`` starts and, per start, ``K'`` ends; ``C = K * K'``.

   Both keep only the small factors (``PairGrid``); the (n, C) arrays of a
   ``SpanCandidates`` are built on first access, which ``postprocess`` never
   needs. Hand-built candidates pass the (n, C) arrays themselves.

2. Null scores, ``(n,)``: the score of the null answer (the CLS token) per
   window. ``null_scores_from_logits`` gives ``s[:, 0] + e[:, 0]``; a
   conditional head supplies its own (e.g. its answer-class logit).

3. ``postprocess`` ranks the candidates of all windows of a question together:

   * A candidate is valid iff start and end lie inside the window
     (``0 <= start <= end < window length``), both are context tokens
     (``offsets != -1``), ``end - start + 1 <= max_answer_length``, and the
     start token ``is_max_context`` in that window (so a span is scored by the
     window that sees the most context around it). Duplicate candidates are
     not merged.
   * score = start_logit + end_logit, added in float32 like the model's own
     arithmetic (and like ``utils_qa``, which adds numpy float32 scalars).
     A candidate scoring -inf is dropped; a valid one scoring NaN or +inf
     raises ValueError.
   * The valid candidates of all windows of an example are ranked by score,
     best first; ties are broken by window index, then start, then end
     (all ascending). The first ``n_best_size`` are kept.
   * The text of a span is ``context[offsets[start][0]:offsets[end][1]]``.
   * The example's null score is the lowest null score of its windows.
   * SQuAD 2.0 (``version_2_with_negative``, by default
     ``dataset.version == "2.0"``): the null answer ``""`` joins the n-best
     list with the null score, placed after every span whose score is >= it
     (so it may be an (n_best_size+1)-th entry). Since null scores arrive as
     one number per window, the null entry carries all of it in
     ``start_logit`` and 0.0 in ``end_logit``; its offsets are ``[0, 0]``.
     The prediction is ``""`` iff ``null_score - best_span_score >
     null_score_diff_threshold``.
   * ``na_prob[qid] = null_score - best_span_score`` (the official script's
     "no-answer probability": only its order matters, so a score difference
     serves). An example with no valid span at all (or no window) gets
     ``NO_SPAN_NA_PROB = 1e6``: large but finite, so the JSON stays standard
     and the evaluator's threshold search still ranks it as surely
     unanswerable. For SQuAD 1.1 ``na_prob`` is filled only when null scores
     are given.
   * SQuAD 1.1 never predicts ``""`` by choice: the best valid span is the
     answer. Only an example with no valid span (e.g. every top start lies
     outside its max-context window) is answered ``""``, because there is
     nothing else to say; its n-best list is then empty.
   * ``probability``: softmax of the scores of the n-best entries (null entry
     included for 2.0).

   The result, ``QAPredictions``, holds ``predictions`` (qid -> text) and
   ``na_prob`` (qid -> float) as dicts, and ``nbest`` as an ``NBest``: flat
   numpy columns for all n-best entries of all questions (window, start/end
   token, character span, start/end logit, probability, null flag; example
   ``i``'s entries are rows ``example_starts[i]:example_starts[i+1]``). It is
   a read-only ``Mapping`` qid -> list of {text, probability, start_logit,
   end_logit, offsets} dicts: ``nbest[qid]`` builds one question's dicts on
   demand (texts cut from the context then) and ``nbest.to_dict()`` all of
   them, equal to what a dict-building implementation returns.

4. ``write_predictions`` writes ``predictions.json`` (qid -> text),
   ``nbest_predictions.json`` (qid -> list of {text, probability,
   start_logit, end_logit, offsets}) and ``na_prob.json`` (qid -> float; only
   when there are na_probs), each atomically, as UTF-8 JSON with indent 2.
   The n-best file is streamed from the columns, chunk by chunk, and is byte
   for byte what ``json.dumps(nbest.to_dict(), indent=2, ensure_ascii=False)``
   gives.

Null scores must be finite (ValueError).

How it is vectorized
--------------------
* Context: windows built by ``bench.core.features`` hold their context tokens in
  one run, ``[context_start, length - 1)``. After checking that (one pass over
  the flat offsets), windows are grouped by where their context ends, and
  each group's logits are read only up to there (SQuAD windows are often much
  shorter than the model's length); ``np.fmin`` with a +inf/-inf cap masks
  the non-context positions. Other layouts scatter the flat context flags
  into one (n, L) cap.
* Top-k per window: one row-wise ``np.sort`` gives every window's k-th best
  value; in a window whose k-th and (k+1)-th best differ, the values >= it
  are exactly the picks, already in position order. Only windows with a tie
  at the cut or fewer than k context tokens are redone with a stable sort,
  which keeps the lower positions.
* Pairs: validity and scores of the (n, K, K') pairs come from broadcasting
  the grid's factors (``PairGrid``), with per-token facts looked up only for
  the picked tokens. Each score becomes a uint32 key that sorts like the
  float, with its low bits replaced by the pair's column; an invalid pair's
  key is its column alone, below every score's. The keys of a window are thus
  distinct, which matters: numpy 1.26's row sort runs about 4-5x slower on rows
  that are mostly one repeated value (as -inf for invalid pairs was). One row
  sort per window gives the ``n_best_size``-th best key; the candidates whose
  key, column bits dropped, reaches it go on: every one scoring at least the
  ``n_best_size``-th best score, and a few that tie with it up to those bits.
  Invalid pairs are zeroed by multiplying with the validity mask, far faster
  than ``np.copyto(..., where=)``. This runs on chunks of windows, so the
  temporaries stay in cache. Hand-built candidates take the same checks on
  their (n, C) arrays.
* Ranking: every span gets a uint32 key that sorts float32 scores best
  first; each example's null entry gets the key of the smallest float32 >=
  its null score, which places it after exactly the spans scoring >= it. One
  ``np.sort`` of unique uint64 values (example, key, index in (window,
  start, end) order) ranks spans and null entries together, and the index
  comes back in the low bits: no stable argsort, no separate merge (with
  more than 64 bits needed, ``np.lexsort`` does the same).
* The softmax of each example's entries takes its first entry as the maximum
  (entries are best first) and ``np.add.reduceat`` for the sums.
* No Python object is made per n-best entry unless asked for (``nbest[qid]``,
  ``to_dict``, the JSON writer). Per question, only the prediction text and
  the ``predictions``/``na_prob`` dict entries are.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from functools import cached_property
from json.encoder import encode_basestring
from operator import attrgetter
from pathlib import Path

import numpy as np

from bench.core.io_utils import atomic_path, atomic_write_json

__all__ = ["SpanCandidates", "PairGrid", "NBest", "QAPredictions", "NO_SPAN_NA_PROB", "candidates_from_logits",
           "candidates_from_topk", "null_scores_from_logits", "postprocess", "write_predictions"]

NO_SPAN_NA_PROB = 1e6   # na_prob of an example without any valid span: "surely no answer", JSON-safe

_NEG_INF = np.float32(-np.inf)
_FLOAT32_MAX = np.finfo(np.float32).max


# ------------------------------------------------------------------------------------------ candidates types
@dataclass(frozen=True)
class PairGrid:
    """The layout ``candidates_from_*`` produce: C = K * K', column ``a * K' + b`` pairs start
    ``starts[:, a]`` with end ``ends[:, b]`` (ends (n, K')) or ``ends[:, a, b]`` (ends (n, K, K')).

    ``postprocess`` checks and scores the candidates by broadcasting these small factors instead
    of reading (n, C) arrays.
    """
    starts: np.ndarray          # (n, K) int
    start_logits: np.ndarray    # (n, K) float32
    ends: np.ndarray            # (n, K') or (n, K, K') int
    end_logits: np.ndarray      # same shape as ends, float32
    in_context: bool = False    # every position >= 0 is known to be a context token of its window

    def rows(self, rows: slice) -> PairGrid:
        """The grid of the windows in ``rows``."""
        return replace(self, starts=self.starts[rows], start_logits=self.start_logits[rows], ends=self.ends[rows],
                       end_logits=self.end_logits[rows])

    def per_start(self, values: np.ndarray) -> np.ndarray:
        """(n, K) values of the starts as (n, C) columns."""
        return np.repeat(values, self.ends.shape[-1], axis=1)

    def per_end(self, values: np.ndarray) -> np.ndarray:
        """Values shaped like ``ends`` as (n, C) columns."""
        n, k = self.starts.shape
        return np.tile(values, (1, k)) if values.ndim == 2 else values.reshape(n, -1)


class SpanCandidates:
    """``C`` candidate spans per window; token indices are window-relative, -1 marks padding.

    start, end: (n, C) int; start_logit, end_logit: (n, C) float32. score = start_logit + end_logit.
    Build by hand with ``SpanCandidates(start, end, start_logit, end_logit)`` (``grid`` stays None).
    ``candidates_from_logits``/``candidates_from_topk`` use ``from_grid``: only the small factors
    are stored, and the four (n, C) arrays are made from them on first access.
    """

    def __init__(self, start, end, start_logit, end_logit, grid: PairGrid | None = None):
        shapes = {np.shape(a) for a in (start, end, start_logit, end_logit)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"SpanCandidates arrays must share one (n, C) shape, got {sorted(shapes)}")
        # Instance attributes take precedence over the cached properties below.
        self.start, self.end, self.start_logit, self.end_logit = start, end, start_logit, end_logit
        self.grid = grid

    @classmethod
    def from_grid(cls, grid: PairGrid) -> SpanCandidates:
        candidates = cls.__new__(cls)
        candidates.grid = grid
        return candidates

    @cached_property
    def start(self) -> np.ndarray:
        return self.grid.per_start(self.grid.starts)

    @cached_property
    def end(self) -> np.ndarray:
        return self.grid.per_end(self.grid.ends)

    @cached_property
    def start_logit(self) -> np.ndarray:
        return self.grid.per_start(self.grid.start_logits)

    @cached_property
    def end_logit(self) -> np.ndarray:
        return self.grid.per_end(self.grid.end_logits)

    def __len__(self) -> int:
        return self.grid.starts.shape[0] if self.grid is not None else self.start.shape[0]

    @property
    def num_candidates(self) -> int:
        if self.grid is not None:
            return self.grid.starts.shape[1] * self.grid.ends.shape[-1]
        return self.start.shape[1]

    def __repr__(self) -> str:
        kind = "grid" if self.grid is not None else "hand-built"
        return f"SpanCandidates({len(self)} windows x {self.num_candidates} candidates, {kind})"


# ------------------------------------------------------------------------------------------ n-best columns
_ENTRY_JSON = ('    {\n      "text": %s,\n      "probability": %s,\n      "start_logit": %s,\n'
               '      "end_logit": %s,\n      "offsets": [\n        %d,\n        %d\n      ]\n    }')


@dataclass(eq=False, repr=False)
class NBest(Mapping):
    """The n-best lists of all questions as flat columns; a read-only Mapping qid -> list of dicts.

    Rows ``example_starts[i]:example_starts[i+1]`` of every column are question ``qids[i]``'s
    entries, best first. ``nbest[qid]`` and ``to_dict()`` make the {text, probability,
    start_logit, end_logit, offsets} dicts on demand, the texts cut from ``contexts`` then.
    Equality compares those materialised dicts, with another NBest or any Mapping. Like a dict
    built from ``zip(qids, lists)``, a repeated qid keeps its first place and its last list.
    """
    qids: list[str]                 # one per question, in dataset order
    contexts: list[str]             # the question's context, where the answer texts are cut from
    example_starts: np.ndarray      # (n_questions + 1,) int64 row offsets
    window: np.ndarray              # (t,) int32 window of the span; -1 for a null entry
    start_token: np.ndarray         # (t,) int32 window-relative first token; -1 for a null entry
    end_token: np.ndarray           # (t,) int32 window-relative last token; -1 for a null entry
    char_start: np.ndarray          # (t,) int64 text = context[char_start:char_end]; 0 for a null entry
    char_end: np.ndarray            # (t,) int64
    start_logit: np.ndarray         # (t,) float64; the null score for a null entry
    end_logit: np.ndarray           # (t,) float64; 0.0 for a null entry
    probability: np.ndarray         # (t,) float64 softmax over the question's entries
    is_null: np.ndarray             # (t,) bool: the "" (no answer) entry of SQuAD 2.0

    @cached_property
    def _row(self) -> dict[str, int]:
        """qid -> question index; built on first use, not by postprocess."""
        return dict(zip(self.qids, range(len(self.qids))))

    @property
    def num_entries(self) -> int:
        return len(self.probability)

    def __len__(self) -> int:
        return len(self._row)

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __contains__(self, qid) -> bool:
        return qid in self._row

    def __getitem__(self, qid: str) -> list[dict]:
        row = self._row[qid]
        rows = slice(int(self.example_starts[row]), int(self.example_starts[row + 1]))
        return _entry_dicts(self.contexts[row], *(column[rows].tolist() for column in self._dict_columns()))

    def to_dict(self) -> dict[str, list[dict]]:
        """All n-best lists as plain dicts and lists (what the JSON file holds)."""
        columns = [column.tolist() for column in self._dict_columns()]
        bounds = self.example_starts.tolist()
        return {qid: _entry_dicts(self.contexts[row], *(c[bounds[row]:bounds[row + 1]] for c in columns))
                for qid, row in self._row.items()}

    def json_chunks(self, questions_per_chunk: int = 1000) -> Iterator[str]:
        """``json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\\n"`` in pieces, made from the
        columns without building the dicts."""
        items = list(self._row.items())
        if not items:
            yield "{}\n"
            return
        yield "{\n"
        for begin in range(0, len(items), questions_per_chunk):
            separator = ",\n" if begin else ""
            yield separator + ",\n".join(self._json_blocks(items[begin:begin + questions_per_chunk]))
        yield "\n}\n"

    def _dict_columns(self) -> tuple[np.ndarray, ...]:
        return self.char_start, self.char_end, self.probability, self.start_logit, self.end_logit

    def _json_blocks(self, items: list[tuple[str, int]]) -> list[str]:
        """The ``  "qid": [...]`` text of each (qid, question index) in ``items``."""
        rows = np.array([row for _, row in items], dtype=np.int64)
        first, sizes = self.example_starts[rows], np.diff(self.example_starts)[rows]
        entries = _ragged_ranges(first, sizes)
        char_start, char_end = self.char_start[entries].tolist(), self.char_end[entries].tolist()
        probability, start_logit, end_logit = (_json_floats(column[entries]) for column in
                                               (self.probability, self.start_logit, self.end_logit))
        blocks, at = [], 0
        for (qid, row), size in zip(items, sizes.tolist()):
            context, key = self.contexts[row], encode_basestring(qid)
            texts = [_ENTRY_JSON % (encode_basestring(context[a:b]), p, s, e, a, b) for a, b, p, s, e in
                     zip(char_start[at:at + size], char_end[at:at + size], probability[at:at + size],
                         start_logit[at:at + size], end_logit[at:at + size])]
            blocks.append(f"  {key}: [\n" + ",\n".join(texts) + "\n  ]" if texts else f"  {key}: []")
            at += size
        return blocks

    def __eq__(self, other) -> bool:
        if isinstance(other, NBest):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"NBest({len(self)} questions, {self.num_entries} entries)"


def _entry_dicts(context: str, char_start, char_end, probability, start_logit, end_logit) -> list[dict]:
    """One question's n-best dicts from plain lists (the null entry's [0, 0] cuts out "")."""
    return [{"text": context[a:b], "probability": p, "start_logit": s, "end_logit": e, "offsets": [a, b]}
            for a, b, p, s, e in zip(char_start, char_end, probability, start_logit, end_logit)]


def _json_floats(values: np.ndarray) -> list[str]:
    """Each float as ``json.dumps`` writes it: repr, or NaN/Infinity/-Infinity."""
    texts = list(map(float.__repr__, values.tolist()))
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        texts[i] = json.dumps(float(values[i]))
    return texts


def _ragged_ranges(first: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(first[i], first[i] + sizes[i]) over i."""
    ends = np.cumsum(sizes)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(first - (ends - sizes), sizes)


@dataclass
class QAPredictions:
    predictions: dict[str, str]         # qid -> answer text ("" = no answer)
    nbest: Mapping[str, list[dict]]     # qid -> [{text, probability, start_logit, end_logit, offsets}], best
                                        # first; an NBest from postprocess (columns, dicts on demand)
    na_prob: dict[str, float]           # qid -> null score - best span score (empty for 1.1 without null scores)


# ------------------------------------------------------------------------------------------ sort keys
def _ascending_key(scores: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """uint32 that sorts float32 ``scores`` from worst to best; -0.0 ties with +0.0, as floats do.
    Keys of NaNs lie outside [key(-inf), key(+inf)]. With ``overwrite`` the keys are made in
    ``scores``'s own buffer, which must then hold no -0.0."""
    bits = scores.view(np.uint32) if overwrite else (scores + np.float32(0.0)).view(np.uint32)
    sign_fill = (bits.view(np.int32) >> 31).view(np.uint32)
    sign_fill |= np.uint32(0x80000000)
    bits ^= sign_fill
    return bits


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """uint32 that sorts float32 ``scores`` from best to worst."""
    return ~_ascending_key(scores)


_LOWEST_FINITE_KEY = int(_ascending_key(np.array([-_FLOAT32_MAX], dtype=np.float32))[0])
_POS_INF_KEY = int(_ascending_key(np.array([np.inf], dtype=np.float32))[0])
_MAX_COLUMN_BITS = 23    # up to here the -inf, lowest finite and +inf keys stay apart once truncated


def _column_bits(num_candidates: int) -> int:
    bits = max(num_candidates - 1, 1).bit_length()
    if bits > _MAX_COLUMN_BITS:
        raise ValueError(f"at most 2**{_MAX_COLUMN_BITS} candidates per window, got {num_candidates}")
    return bits


# ------------------------------------------------------------------------------------------ candidates
def _as_logits(array, name: str, n_windows: int) -> np.ndarray:
    logits = np.asarray(array, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != n_windows:
        raise ValueError(f"{name} must be ({n_windows} windows, positions), got shape {logits.shape}")
    return logits


_BLOCK_WIDTH_STEP = 32     # windows are grouped by context end rounded up to this many positions
_BLOCK_VALUES = 1 << 17    # at most this many logits per block: small temporaries, reused, stay in cache


def _context_blocks(features, width: int):
    """Yield (rows, cap): windows and their (len(rows), w) float32 context cap, +inf at context
    tokens and -inf elsewhere.

    Windows with the one-run layout are grouped by where their context ends, so each group is
    searched over its first ``w`` <= ``width`` positions only: SQuAD windows are often much shorter
    than the model's length (on dev-v2.0 at 384 tokens, half as long on average), and the top-k
    work shrinks with them. Groups are cut into blocks of at most ``_BLOCK_VALUES`` logits.
    Other layouts come as one block of all windows.
    """
    lengths = np.diff(features.row_starts)
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"logits have {width} positions but a window has {lengths.max()} tokens")
    if not _context_is_one_run(features):
        yield slice(None), _cap(_scattered_mask(features, lengths, width))
        return
    context_end = lengths - 1
    group = -(-context_end // _BLOCK_WIDTH_STEP)               # ceil
    by_group = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[by_group])) + 1
    for same_end in np.split(by_group, bounds):
        w = min(int(group[same_end[0]]) * _BLOCK_WIDTH_STEP, width)
        step = max(1, _BLOCK_VALUES // w)
        for rows in (same_end[lo:lo + step] for lo in range(0, len(same_end), step)):
            first = features.context_start[rows]
            yield rows, _cap(_run_mask(first, context_end[rows] - first, w))


def _context_is_one_run(features) -> bool:
    """True when every window's context tokens are exactly positions [context_start, length - 1),
    the layout ``build_features`` makes (checked here, not assumed)."""
    first = features.context_start.astype(np.int64)
    size = np.diff(features.row_starts) - 1 - first
    if not len(first) or np.any(first < 0) or np.any(size <= 0):
        return False
    # The flat context flags then switch exactly at each window's context start (on) and end (off);
    # every window ends with a non-context token, so those positions increase and fix every flag.
    flags = features.offsets[:, 0] >= 0
    run_start = features.row_starts[:-1] + first
    expected_switches = np.column_stack([run_start, run_start + size]).ravel()
    if flags[0]:                                # the first window's context starts at its first token
        expected_switches = expected_switches[1:] if expected_switches[0] == 0 else None
    switches = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    return expected_switches is not None and np.array_equal(switches, expected_switches)


def _run_mask(first: np.ndarray, size: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bool, True at positions [first, first + size) of each row."""
    # int16 when possible: the one comparison then runs on 2-byte lanes.
    signed, unsigned = (np.int16, np.uint16) if width < 1 << 15 else (np.int64, np.uint64)
    positions = np.arange(width, dtype=signed)
    offset = (positions - first.astype(signed)[:, None]).view(unsigned)    # negative wraps to large
    return offset < size.astype(unsigned)[:, None]


def _cap(mask: np.ndarray) -> np.ndarray:
    """+inf where ``mask``, else -inf: (1 - 0.5) * inf and (0 - 0.5) * inf, ~6x faster than np.where."""
    cap = mask.astype(np.float32)
    cap -= np.float32(0.5)
    cap *= np.float32(np.inf)
    return cap


def _scattered_mask(features, lengths: np.ndarray, width: int) -> np.ndarray:
    n = len(lengths)
    # Flat position in the (n, width) grid of every token: its window's row offset plus its position.
    shift = np.repeat(np.arange(n, dtype=np.int64) * width - features.row_starts[:-1], lengths)
    grid = np.arange(len(features.offsets), dtype=np.int64) + shift
    mask = np.zeros(n * width, dtype=bool)
    mask[grid[features.offsets[:, 0] >= 0]] = True
    return mask.reshape(n, width)


def _top_positions(masked: np.ndarray, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, k) int32 of the k best values per row, ascending, -1-padded at the end,
    and their values (-inf for padding). Ties go to the lower position; -inf is never picked."""
    n, width = masked.shape
    ordered = np.sort(masked, axis=1)          # a SIMD row sort: cheaper than argpartition here
    if n and not np.all(ordered[:, -1] < np.inf):     # NaN sorts last and fails the comparison
        raise ValueError(f"{name} contains NaN or +inf")
    k_found = min(k, width)
    kth_best = ordered[:, width - k_found]
    # A regular row has exactly k_found values >= its k-th best: a real pick, and no tie at the cut.
    regular = kth_best > _NEG_INF
    if k_found < width:
        regular &= ordered[:, width - k_found - 1] < kth_best
    threshold = np.where(regular, kth_best, np.float32(np.inf))          # no value passes +inf
    flat = np.flatnonzero(masked >= threshold[:, None])                  # row-major: positions ascending
    if k_found == k and np.all(regular):                                 # the common case: k picks per row
        positions = flat.reshape(n, k) - (np.arange(n) * width)[:, None]
        return positions.astype(np.int32), masked.ravel()[flat].reshape(n, k)
    rows = np.flatnonzero(regular)
    positions = np.full((n, k), -1, dtype=np.int32)
    values = np.full((n, k), _NEG_INF, dtype=np.float32)
    positions[rows, :k_found] = flat.reshape(len(rows), k_found) - rows[:, None] * width
    values[rows, :k_found] = masked.ravel()[flat].reshape(len(rows), k_found)
    if len(rows) < n:
        others = np.flatnonzero(~regular)
        positions[others, :k_found], values[others, :k_found] = _stable_picks(masked[others], k_found)
    return positions, values


def _stable_picks(masked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact picks for rows with a tie at the cut or fewer than k real values: a stable sort by
    descending value keeps the lower positions. Returns positions (-1 padded) and values."""
    best = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(masked, best, axis=1) > _NEG_INF
    never = np.iinfo(np.int32).max                  # sorts padding after the real picks
    best = np.sort(np.where(found, best, never), axis=1)
    picked = np.take_along_axis(masked, np.where(best == never, 0, best), axis=1)
    return np.where(best == never, -1, best), np.where(best == never, _NEG_INF, picked)


def _context_top_k(logits: np.ndarray, blocks, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``_top_positions`` over each window's context tokens, block by block (``_context_blocks``)."""
    n = logits.shape[0]
    positions, values = np.full((n, k), -1, dtype=np.int32), np.full((n, k), _NEG_INF, dtype=np.float32)
    for rows, cap in blocks:
        masked = logits[rows, :cap.shape[1]]
        if not isinstance(rows, np.ndarray):
            masked = masked.copy()          # a slice is a view: keep the caller's logits intact
        # fmin with the cap keeps a context logit, NaN turned +inf so it still raises below, and
        # makes every other position -inf; a SIMD op, much faster than np.where.
        np.fmin(masked, cap, out=masked)
        positions[rows], values[rows] = _top_positions(masked, k, name)
    return positions, values


def candidates_from_logits(start_logits, end_logits, features, n_best_size: int = 20) -> SpanCandidates:
    """All pairs of the ``n_best_size`` best start and end context tokens of each window.

    ``start_logits``/``end_logits``: (n, L) with L >= every window's length; only the logits of
    context tokens are read. Each window's picks are in ascending position order.
    """
    if n_best_size < 1:
        raise ValueError("n_best_size must be >= 1")
    start_logits = _as_logits(start_logits, "start_logits", len(features))
    end_logits = _as_logits(end_logits, "end_logits", len(features))
    if start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits {start_logits.shape} and end_logits {end_logits.shape} differ")
    blocks = list(_context_blocks(features, start_logits.shape[1]))
    starts, start_values = _context_top_k(start_logits, blocks, n_best_size, "start_logits")
    ends, end_values = _context_top_k(end_logits, blocks, n_best_size, "end_logits")
    return SpanCandidates.from_grid(PairGrid(starts, start_values, ends, end_values, in_context=True))


def candidates_from_topk(start_top_index, start_top_logit, end_top_index, end_top_logit) -> SpanCandidates:
    """Conditional head: start_top_* (n, K); end_top_*[i, a, b] = b-th best end given start a: (n, K, K')."""
    starts = np.asarray(start_top_index).astype(np.int32)
    ends = np.asarray(end_top_index).astype(np.int32)
    start_values = np.asarray(start_top_logit, dtype=np.float32)
    end_values = np.asarray(end_top_logit, dtype=np.float32)
    n, k = starts.shape
    if ends.ndim != 3 or ends.shape[:2] != (n, k) or start_values.shape != starts.shape \
            or end_values.shape != ends.shape:
        raise ValueError(f"expected start_top_* (n, K) and end_top_* (n, K, K'), got {starts.shape}, "
                         f"{start_values.shape}, {ends.shape}, {end_values.shape}")
    return SpanCandidates.from_grid(PairGrid(starts, start_values, ends, end_values))


def null_scores_from_logits(start_logits, end_logits) -> np.ndarray:
    """(n,) float32 null (CLS) score per window: start_logits[:, 0] + end_logits[:, 0]."""
    return np.asarray(start_logits, dtype=np.float32)[:, 0] + np.asarray(end_logits, dtype=np.float32)[:, 0]


# ------------------------------------------------------------------------------------------ validity
def _tokens_allowed(features, positions: np.ndarray, rows: slice, *, max_context: bool,
                    in_context: bool = False) -> np.ndarray:
    """For window-relative ``positions`` (shape (n, ...)) of the windows ``rows``: inside the window
    and a context token (and, with ``max_context``, in its max-context window). Only the given
    tokens are looked up; ``in_context`` says the positions >= 0 are known context tokens."""
    shape = (-1,) + (1,) * (positions.ndim - 1)
    if in_context:
        inside = positions >= 0
        if not max_context:
            return inside
    else:
        lengths = np.diff(features.row_starts)[rows].reshape(shape)
        inside = (positions >= 0) & (positions < lengths)
    first_token = features.row_starts[:-1][rows].reshape(shape)
    tokens = np.where(inside, first_token + positions, 0)       # any legal index; ``inside`` masks it
    allowed = inside
    if not in_context:
        # np.take on the flat (T * 2) offsets: much faster than fancy indexing the (T, 2) array.
        allowed &= np.take(features.offsets.reshape(-1), 2 * tokens) >= 0
    if max_context:
        allowed &= np.take(features.is_max_context, tokens)
    return allowed


def _valid_pairs_generic(features, start, end, rows: slice, max_answer_length: int) -> np.ndarray:
    """(n, C) bool: the hand-built candidates (start, end) of the windows ``rows`` obey every rule."""
    start, end = np.asarray(start).astype(np.int64), np.asarray(end).astype(np.int64)
    valid = (end - start).astype(np.uint64) < max_answer_length       # 0 <= end - start < max (negatives wrap)
    valid &= _tokens_allowed(features, start, rows, max_context=True)
    valid &= _tokens_allowed(features, end, rows, max_context=False)
    return valid


def _sentinel_grid(features, grid: PairGrid, max_answer_length: int) -> PairGrid:
    """The grid with starts and ends as small ints, and every start or end that breaks a per-token
    rule replaced by a sentinel that makes ``end - start`` negative for all its pairs: one unsigned
    comparison per pair then checks every rule (``_valid_pairs``)."""
    small = max(int(np.diff(features.row_starts).max(initial=0)), max_answer_length) < 16_000
    dtype, sentinel = (np.int16, 16_000) if small else (np.int32, 1 << 29)   # int16 halves the memory traffic
    rows = slice(None)
    start_ok = _tokens_allowed(features, grid.starts, rows, max_context=True, in_context=grid.in_context)
    end_ok = _tokens_allowed(features, grid.ends, rows, max_context=False, in_context=grid.in_context)
    return replace(grid, starts=np.where(start_ok, grid.starts, sentinel).astype(dtype),
                   ends=np.where(end_ok, grid.ends, -sentinel).astype(dtype),
                   start_logits=grid.start_logits + np.float32(0.0),     # -0.0 -> +0.0, so no score is -0.0
                   end_logits=grid.end_logits + np.float32(0.0))


def _valid_pairs(grid: PairGrid, max_answer_length: int) -> np.ndarray:
    """(n, K, K') bool: the pair obeys every validity rule; ``grid`` from ``_sentinel_grid``."""
    ends = grid.ends if grid.ends.ndim == 3 else grid.ends[:, None, :]     # 2-D: shared by every start
    span = ends - grid.starts[:, :, None]
    return span.view(np.uint16 if span.dtype == np.int16 else np.uint32) < max_answer_length


def _candidate_columns(candidates: SpanCandidates, flat: np.ndarray):
    """start, end (int), start_logit, end_logit (float32) of the candidates at flat (n * C) indices."""
    grid = candidates.grid
    if grid is None:
        start, end, start_logit, end_logit = (np.asarray(array).ravel()[flat] for array in (
            candidates.start, candidates.end, candidates.start_logit, candidates.end_logit))
    else:
        # flat = (window * K + a) * K' + b: flat indices into the raveled factors, no 2-D fancy indexing.
        k, k_end = grid.starts.shape[1], grid.ends.shape[-1]
        at_start = flat // k_end
        at_end = flat if grid.ends.ndim == 3 else (at_start // k) * k_end + (flat - at_start * k_end)
        start, start_logit = grid.starts.ravel()[at_start], grid.start_logits.ravel()[at_start]
        end, end_logit = grid.ends.ravel()[at_end], grid.end_logits.ravel()[at_end]
    return start, end, start_logit.astype(np.float32, copy=False), end_logit.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------ ranking
@dataclass
class _Spans:
    """Valid spans, one entry per array element; all arrays (m,)."""
    example: np.ndarray
    window: np.ndarray
    start: np.ndarray
    end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    score: np.ndarray           # float32
    char_start: np.ndarray      # the span's text is context[char_start:char_end]
    char_end: np.ndarray

    def select(self, index: np.ndarray) -> _Spans:
        return _Spans(*(getattr(self, f.name)[index] for f in fields(self)))


def _might_be_nan(*logits: np.ndarray) -> bool:
    """Whether sums of these logits can be NaN: only if one is NaN or +inf (+inf + -inf)."""
    return not all(np.all(np.asarray(values) < np.inf) for values in logits)    # NaN fails the comparison


def _candidate_keys(features, candidates: SpanCandidates, checked: PairGrid | None, rows: slice,
                    max_answer_length: int, nan_possible: bool) -> np.ndarray:
    """(len(rows), C) uint32 sort keys of the candidates of the windows ``rows``: the score's
    ``_ascending_key`` with its low ``_column_bits(C)`` bits replaced by the column.

    The keys order a window's candidates by score up to those bits, and are distinct, because
    numpy 1.26's row sort is about 4-5x slower on rows that are mostly one repeated value. An invalid
    candidate's key is its column: below every score's key, even -inf's. ``checked``: the grid from
    ``_sentinel_grid``, or None for hand-built candidates. With ``nan_possible``, a valid candidate
    scoring NaN raises ValueError here (a valid +inf raises in ``_window_winners``).
    """
    if checked is not None:
        grid = checked.rows(rows)
        valid = _valid_pairs(grid, max_answer_length)
        end_logits = grid.end_logits if grid.end_logits.ndim == 3 else grid.end_logits[:, None, :]
        with np.errstate(over="ignore"):                              # +inf raises in _window_winners
            scores = grid.start_logits[:, :, None] + end_logits      # no -0.0: _sentinel_grid's logits have none
    else:
        valid = _valid_pairs_generic(features, candidates.start[rows], candidates.end[rows], rows,
                                     max_answer_length)
        scores = (np.asarray(candidates.start_logit[rows], np.float32)
                  + np.asarray(candidates.end_logit[rows], np.float32))
        scores += np.float32(0.0)                                    # -0.0 -> +0.0
    if nan_possible and not np.all((scores == scores) | ~valid):
        raise ValueError("candidate logits contain NaN or +inf")
    keys = _ascending_key(scores, overwrite=True)
    keys &= np.uint32(~((1 << _column_bits(keys[0].size)) - 1) & 0xFFFFFFFF)
    keys *= valid                               # much faster than np.copyto(..., where=~valid)
    keys |= np.arange(keys[0].size, dtype=np.uint32).reshape(keys.shape[1:])
    return keys.reshape(len(valid), -1)


def _window_winners(keys: np.ndarray, n_best_size: int) -> np.ndarray:
    """Flat indices into (n, C), window-major, then by column, of every valid candidate whose key
    (``_candidate_keys``) is at least its window's n_best_size-th best, with the column bits
    ignored: every candidate scoring at least the n_best_size-th best score, and a few that tie
    with it up to those bits. The rest could never make an example's n-best list."""
    n, c = keys.shape
    bits = _column_bits(c)
    width = min(c, 2 * n_best_size)
    if c > n_best_size:
        ordered = np.sort(keys, axis=1)         # SIMD row sort; cheaper than np.partition here
        top, block = ordered[:, -1], ordered[:, c - width:]
        cut = ordered[:, c - n_best_size] >> np.uint32(bits)
        np.maximum(cut, _LOWEST_FINITE_KEY >> bits, out=cut)    # -inf and invalid candidates never qualify
    else:
        top, block = keys.max(axis=1, initial=0), keys
        cut = np.full(n, _LOWEST_FINITE_KEY >> bits, dtype=np.uint32)
    if n and int(top.max()) >> bits >= _POS_INF_KEY >> bits:    # +inf, or a NaN above it
        raise ValueError("candidate logits contain NaN or +inf")
    threshold = (cut << np.uint32(bits))[:, None]
    if width < c and np.any(block[:, 0] >= threshold[:, 0]):  # more winners than the block holds
        return np.flatnonzero(keys >= threshold)
    columns = np.where(block >= threshold, block & np.uint32((1 << bits) - 1), np.uint32(c))
    columns.sort(axis=1)
    rows, at = np.nonzero(columns < c)
    return rows * c + columns[rows, at]


_PAIRS_PER_CHUNK = 1 << 17    # windows are scored this many pairs at a time, so the temporaries stay in cache


def _window_best_spans(features, candidates: SpanCandidates, max_answer_length: int, n_best_size: int) -> _Spans:
    """The valid candidates among the n_best_size best of their window (ties kept), window-major."""
    n, c = len(candidates), candidates.num_candidates
    checked = None if candidates.grid is None else _sentinel_grid(features, candidates.grid, max_answer_length)
    nan_possible = _might_be_nan(*((checked.start_logits, checked.end_logits) if checked is not None else
                                   (candidates.start_logit, candidates.end_logit)))
    step = max(1, _PAIRS_PER_CHUNK // max(c, 1))
    pieces = [_window_winners(_candidate_keys(features, candidates, checked, slice(lo, lo + step), max_answer_length,
                                              nan_possible), n_best_size) + lo * c for lo in range(0, n, step)]
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    start, end, start_logit, end_logit = _candidate_columns(candidates, flat)
    window = flat // max(c, 1)
    # Window-major, so these offset lookups walk the token arrays in order. np.take on the flat
    # (T * 2) offsets is much faster than fancy indexing the (T, 2) array.
    tokens, flat_offsets = features.row_starts[window], features.offsets.reshape(-1)
    return _Spans(features.example_index[window].astype(np.int64), window, start, end, start_logit, end_logit,
                  score=start_logit + end_logit,         # the same float32 sums as the masked scores
                  char_start=np.take(flat_offsets, 2 * (tokens + start)),
                  char_end=np.take(flat_offsets, 2 * (tokens + end) + 1))


def _in_tie_order(spans: _Spans) -> _Spans:
    """The spans in (window, start, end) order, the tie-break for equal scores. Spans from the
    ``candidates_from_*`` grids already come in this order."""
    width = int(max(spans.start.max(initial=0), spans.end.max(initial=0))) + 1
    tie = (spans.window * width + spans.start) * width + spans.end
    if np.all(tie[1:] > tie[:-1]):
        return spans
    return spans.select(np.argsort(tie, kind="stable"))


def _float32_at_least(values: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 value: a float32 score s is >= v iff s >= this.
    (Beyond the float32 range that is +inf, or -FLOAT32_MAX, which keeps the same property.)"""
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    return np.where(rounded < values, np.nextafter(rounded, np.float32(np.inf)), rounded)


def _sorted_items(example: np.ndarray, key: np.ndarray, n_examples: int) -> np.ndarray:
    """Item indices sorted by (example, key, index)."""
    index_bits = max(len(key) - 1, 1).bit_length()
    if max(n_examples - 1, 1).bit_length() + 32 + index_bits > 64:
        return np.lexsort((np.arange(len(key)), key, example))
    # Packed with the index, every key is unique: a plain (SIMD) value sort orders them, much faster
    # than a stable argsort, and the item index comes back in the low bits.
    packed = (example.astype(np.uint64) << np.uint64(32 + index_bits)) \
        | (key.astype(np.uint64) << np.uint64(index_bits)) | np.arange(len(key), dtype=np.uint64)
    return (np.sort(packed) & np.uint64((1 << index_bits) - 1)).astype(np.int64)


def _n_best_cut(example: np.ndarray, is_null: np.ndarray, n_best_size: int, n_examples: int) -> np.ndarray | None:
    """For entries sorted by example then rank: keep every null entry and each example's first
    n_best_size spans. None when nothing is cut."""
    spans_so_far = np.cumsum(~is_null)                  # spans up to and including each entry
    counts = np.bincount(example, minlength=n_examples)
    spans_before_example = np.concatenate([[0], spans_so_far])[np.cumsum(counts) - counts]
    span_rank = spans_so_far - 1 - spans_before_example[example]
    if span_rank.max(initial=-1) < n_best_size:
        return None
    return is_null | (span_rank < n_best_size)


@dataclass
class _Entries:
    """Every example's n-best entries (spans and null entries) in output order; arrays (t,)."""
    example_starts: np.ndarray      # (n_examples + 1,): example x's entries are [example_starts[x], ...[x+1])
    window: np.ndarray              # int32, -1 for a null entry
    start: np.ndarray               # int32, -1 for a null entry
    end: np.ndarray                 # int32, -1 for a null entry
    char_start: np.ndarray          # int64, 0 for a null entry
    char_end: np.ndarray            # int64, 0 for a null entry
    start_logit: np.ndarray         # float64; the null score for a null entry
    end_logit: np.ndarray           # float64; 0.0 for a null entry
    score: np.ndarray               # float64
    is_null: np.ndarray             # bool


def _rank_entries(spans: _Spans, example_null: np.ndarray | None, n_best_size: int, n_examples: int) -> _Entries:
    """Rank each example's spans and null entry (if ``example_null``) in one sort; keep n_best_size spans.

    A null entry sorts right after every span scoring >= it: its key is that of the smallest
    float32 >= the null score, and it comes after the spans, so it loses ties.
    """
    spans = _in_tie_order(spans)
    m = len(spans.score)
    if example_null is None:
        null_examples, null_score = np.zeros(0, dtype=np.int64), np.zeros(0)
    else:
        null_examples = np.flatnonzero(np.isfinite(example_null))
        null_score = example_null[null_examples]
    example = np.concatenate([spans.example, null_examples])
    key = np.concatenate([_descending_key(spans.score), _descending_key(_float32_at_least(null_score))])
    items = _sorted_items(example, key, n_examples)
    kept = _n_best_cut(example[items], items >= m, n_best_size, n_examples)
    if kept is not None:
        items = items[kept]
    example_starts = np.zeros(n_examples + 1, dtype=np.int64)
    np.cumsum(np.bincount(example[items], minlength=n_examples), out=example_starts[1:])

    def column(span_values, null_values, dtype):
        """Span values then null values (an array or one value), picked in entry order."""
        null_values = np.broadcast_to(np.asarray(null_values, dtype=dtype), (len(null_examples),))
        return np.concatenate([np.asarray(span_values, dtype=dtype), null_values])[items]

    return _Entries(example_starts, window=column(spans.window, -1, np.int32),
                    start=column(spans.start, -1, np.int32), end=column(spans.end, -1, np.int32),
                    char_start=column(spans.char_start, 0, np.int64), char_end=column(spans.char_end, 0, np.int64),
                    start_logit=column(spans.start_logit, null_score, np.float64),
                    end_logit=column(spans.end_logit, 0.0, np.float64),
                    score=column(spans.score, null_score, np.float64), is_null=items >= m)


def _example_null_scores(features, null_scores: np.ndarray, n_examples: int) -> np.ndarray:
    """(n_examples,) float64: lowest null score over each example's windows (+inf without windows)."""
    best = np.full(n_examples, np.inf)
    np.minimum.at(best, features.example_index, null_scores)
    return best


# ------------------------------------------------------------------------------------------ assembly
def _group_softmax(score: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Softmax of ``score`` within each run [bounds[i], bounds[i+1]). Runs are sorted best first, so
    a run's first score is its maximum."""
    sizes = np.diff(bounds)
    filled = sizes > 0
    firsts, sizes = bounds[:-1][filled], sizes[filled]
    if not len(firsts):
        return np.zeros(0)
    exps = np.exp(score - np.repeat(score[firsts], sizes))
    return exps / np.repeat(np.add.reduceat(exps, firsts), sizes)


def _best_spans(entries: _Entries) -> tuple[np.ndarray, np.ndarray]:
    """Per example: whether it has a span entry, and the index of its best one (its first span
    entry: the first entry, or the second when the null entry ranks first; 0 without a span)."""
    first, sizes = entries.example_starts[:-1], np.diff(entries.example_starts)
    first_is_null = np.zeros(len(first), dtype=bool)
    first_is_null[sizes > 0] = entries.is_null[first[sizes > 0]]
    best = first + first_is_null
    has_span = best < first + sizes
    return has_span, np.where(has_span, best, 0)


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], or zeros when there are no values at all (then nothing reads them)."""
    return values[index] if len(values) else np.zeros(len(index), dtype=values.dtype)


def _nbest(dataset, entries: _Entries) -> NBest:
    return NBest(qids=list(map(attrgetter("qid"), dataset.examples)),
                 contexts=list(map(attrgetter("context"), dataset.examples)),
                 example_starts=entries.example_starts, window=entries.window, start_token=entries.start,
                 end_token=entries.end, char_start=entries.char_start, char_end=entries.char_end,
                 start_logit=entries.start_logit, end_logit=entries.end_logit,
                 probability=_group_softmax(entries.score, entries.example_starts), is_null=entries.is_null)


def _best_texts(nbest: NBest, best: np.ndarray, answered: np.ndarray) -> list[str]:
    """Each question's best span text where ``answered``, else "" (the empty slice [0:0])."""
    char_start = np.where(answered, _at(nbest.char_start, best), 0).tolist()
    char_end = np.where(answered, _at(nbest.char_end, best), 0).tolist()
    return [context[a:b] for context, a, b in zip(nbest.contexts, char_start, char_end)]


def _check_inputs(dataset, features, candidates: SpanCandidates, null_scores, n_best_size: int,
                  max_answer_length: int, version_2_with_negative: bool) -> None:
    n = len(features)
    if len(candidates) != n:
        raise ValueError(f"{len(candidates)} windows of candidates for {n} windows of features")
    if n and int(features.example_index.max()) >= len(dataset.examples):
        raise ValueError("features.example_index points past the dataset's examples")
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError("n_best_size and max_answer_length must be >= 1")
    if null_scores is None and version_2_with_negative:
        raise ValueError("SQuAD 2.0 post-processing needs null_scores")
    if null_scores is not None and (np.shape(null_scores) != (n,) or not np.all(np.isfinite(null_scores))):
        raise ValueError(f"null_scores must be ({n},) finite numbers, got shape {np.shape(null_scores)}")


def postprocess(dataset, features, candidates: SpanCandidates, null_scores: np.ndarray | None, *,
                n_best_size: int = 20, max_answer_length: int = 30, null_score_diff_threshold: float = 0.0,
                version_2_with_negative: bool | None = None) -> QAPredictions:
    """Rank the candidates of every question's windows; see the module docstring for the rules.

    Returns predictions and na_prob as dicts and the n-best lists as an ``NBest`` (columns).
    """
    if version_2_with_negative is None:
        version_2_with_negative = dataset.version == "2.0"
    _check_inputs(dataset, features, candidates, null_scores, n_best_size, max_answer_length,
                  version_2_with_negative)
    n_examples = len(dataset.examples)
    example_null = None
    if null_scores is not None:
        example_null = _example_null_scores(features, np.asarray(null_scores, dtype=np.float64), n_examples)

    spans = _window_best_spans(features, candidates, max_answer_length, n_best_size)
    entries = _rank_entries(spans, example_null if version_2_with_negative else None, n_best_size, n_examples)
    nbest = _nbest(dataset, entries)
    has_span, best = _best_spans(entries)
    na = None
    if example_null is not None:
        na = np.where(has_span & np.isfinite(example_null), example_null - _at(entries.score, best),
                      NO_SPAN_NA_PROB)
    answered = has_span & (na <= null_score_diff_threshold) if version_2_with_negative else has_span
    return QAPredictions(predictions=dict(zip(nbest.qids, _best_texts(nbest, best, answered))), nbest=nbest,
                         na_prob=dict(zip(nbest.qids, na.tolist())) if na is not None else {})


def _atomic_write_chunks(target: Path, chunks) -> None:
    """Write text ``chunks`` as UTF-8 to ``target`` atomically (as ``bench.core.io_utils.atomic_write_text``)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.writelines(chunk.encode("utf-8") for chunk in chunks)
        f.flush()
        os.fsync(f.fileno())


def write_predictions(out_dir, preds: QAPredictions) -> dict[str, Path]:
    """Write predictions.json, nbest_predictions.json and (when filled) na_prob.json atomically.

    An ``NBest`` is streamed from its columns; the file equals ``json.dumps`` of its dicts.
    Returns the paths written, keyed "predictions", "nbest" and "na_prob".
    """
    out_dir = Path(out_dir)
    files = {"predictions": out_dir / "predictions.json", "nbest": out_dir / "nbest_predictions.json"}
    if preds.na_prob:
        files["na_prob"] = out_dir / "na_prob.json"
    atomic_write_json(files["predictions"], preds.predictions)
    if isinstance(preds.nbest, NBest):
        _atomic_write_chunks(files["nbest"], preds.nbest.json_chunks())
    else:
        atomic_write_json(files["nbest"], dict(preds.nbest))
    if preds.na_prob:
        atomic_write_json(files["na_prob"], preds.na_prob)
    return files
