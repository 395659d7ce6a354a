"""Post-processing for extractive question answering: model outputs -> answer texts.

The model scores every token of every window as a possible answer start and
end. This package turns those scores into, per question, the predicted answer
text, an n-best list and a no-answer score, in the formats the official SQuAD
evaluation reads. It is the numpy counterpart of Hugging Face's
``utils_qa.postprocess_qa_predictions`` (basic heads) and
``postprocess_qa_predictions_with_beam_search`` (conditional heads), with the
same ideas but without a Python loop over windows, span pairs or n-best entries.

Pipeline
--------
1. Candidates, ``SpanCandidates``: ``C`` candidate (start, end) pairs per window
   (``candidates``; the per-window top-k over context tokens is ``context_topk``).
2. Null scores, ``(n,)``: the score of the null answer (the CLS token) per window
   (``candidates.null_scores_from_logits``, or the head's own).
3. ``postprocess`` ranks the candidates of all windows of a question together
   (``answers``: the rules; ``window_search``: each window's best valid pairs;
   ``ranking``: one sort of every question's spans and null entry; ``sort_keys``:
   the uint32 keys both sort on; ``row_top``: the k best values of every row, which
   the two per-window searches need instead of whole sorted rows). The result is a
   ``QAPredictions`` whose n-best lists are an ``NBest`` of flat columns (``predictions``).
4. ``write_predictions`` writes predictions.json, nbest_predictions.json and
   na_prob.json (``predictions``).

Each module's docstring holds its rules and how it is vectorized.
"""
from __future__ import annotations

from bench.core.postprocess.answers import NO_SPAN_NA_PROB, postprocess
from bench.core.postprocess.candidates import (PairGrid, SpanCandidates, candidates_from_logits, candidates_from_topk,
                                               null_scores_from_logits)
from bench.core.postprocess.predictions import NBest, QAPredictions, write_predictions

__all__ = ["SpanCandidates", "PairGrid", "NBest", "QAPredictions", "NO_SPAN_NA_PROB", "candidates_from_logits",
           "candidates_from_topk", "null_scores_from_logits", "postprocess", "write_predictions"]
