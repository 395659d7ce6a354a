"""What post-processing returns, ``QAPredictions``, and how it is written to disk.

The result, ``QAPredictions``, holds ``predictions`` (qid -> text) and
``na_prob`` (qid -> float) as dicts, and ``nbest`` as an ``NBest``: flat
numpy columns for all n-best entries of all questions (window, start/end
token, character span, start/end logit, probability, null flag; example
``i``'s entries are rows ``example_starts[i]:example_starts[i+1]``). It is
a read-only ``Mapping`` qid -> list of {text, probability, start_logit,
end_logit, offsets} dicts: ``nbest[qid]`` builds one question's dicts on
demand (texts cut from the context then) and ``nbest.to_dict()`` all of
them, equal to what a dict-building implementation returns.

``write_predictions`` writes ``predictions.json`` (qid -> text),
``nbest_predictions.json`` (qid -> list of {text, probability,
start_logit, end_logit, offsets}) and ``na_prob.json`` (qid -> float; only
when there are na_probs), each atomically, as UTF-8 JSON with indent 2.
The n-best file is streamed from the columns, chunk by chunk, and is byte
for byte what ``json.dumps(nbest.to_dict(), indent=2, ensure_ascii=False)``
gives.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np

from bench.core.io_utils import atomic_path, atomic_write_json

__all__ = ["NBest", "QAPredictions", "write_predictions"]

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
