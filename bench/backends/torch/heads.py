"""The QA heads of the torch backend, one class per entry of the head registry (``bench.core.heads``).

Both restrict scores to the candidate positions (CLS and context tokens; everything else gets
``MASKED_LOGIT``) and compute them in float32, so masking is safe under autocast. A head class
takes ``(backbone_config, dropout, loss)`` and has ``loss(hidden, candidate_mask, starts, ends,
is_impossible) -> (B,)`` for training and ``predict(hidden, candidate_mask, start_top_n, end_top_n)
-> dict`` for evaluation, returning the arrays its registry entry names.

``basic``
    Dropout -> Linear(H, 2): independent start/end logits. Loss per window =
    (loss(start) + loss(end)) / 2 with ``--loss`` (``bench.core.losses``: ce, focal or
    label_smoothing; cross-entropy by default), CLS (index 0) being the label of windows without an
    answer.
``bilstm``
    A 2-layer bidirectional LSTM (hidden size H per direction, dropout 0.2 between the layers:
    ``bench.core.heads.BILSTM_LAYERS``/``BILSTM_LAYER_DROPOUT``) over the encoder's last hidden
    states -> Dropout -> Linear(2H, 2): start/end logits, loss and post-processing as ``basic``.
    The LSTM runs over each window's valid tokens only (``bench.backends.torch.rnn``: the backward
    direction starts at the last real token), so padding never reaches a real position; padded
    positions output zeros. The LSTM keeps torch's initialisation (uniform +-1/sqrt(H)).
``conditional`` (default; GluonNLP ``ModelForQAConditionalV1``, ALBERT/XLNet style)
    log p(start) from Dense(1); log p(end | start) from Dense(H, tanh) -> LayerNorm ->
    Dense(1) over concat[h_t; h_start] (the true start in training, each of the top
    ``start_top_n`` starts at inference); p(answerable) from Dense(H, tanh) ->
    Dropout -> Dense(2) over concat[sum_t p(start=t) h_t; h_CLS] (class 0 =
    answerable, class 1 = unanswerable, i.e. the class index is ``is_impossible``).
    Loss per window = -1/2 (log p_start + log p_end|start) - 1/2 log p(is_impossible).

    Inference scores are log-probabilities chosen so that for a span (s, e)
    ``start_top_logit + end_top_logit = log p(s) + log p(e|s) + log p(answerable)
    = log P(answer is span (s, e))`` and ``null_score = log P(no answer)``. The core
    then predicts "" iff ``null_score - best span score > --null_score_diff_threshold``:
    a comparison of two log-probabilities, so the threshold 0 means "the more
    probable of the two".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.backends.torch.cpu_training import FastDropout
from bench.backends.torch.losses import position_loss
from bench.backends.torch.rnn import lstm_within_lengths
from bench.core import heads as head_registry

__all__ = ["MASKED_LOGIT", "BasicHead", "BiLSTMHead", "ConditionalHead", "masked_log_softmax"]

# Score of a position that may not be an answer boundary: far below any real log-probability, yet
# finite in float32 so that sums of two masked scores stay finite (no inf - inf = nan downstream).
MASKED_LOGIT = -1e30


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log-softmax over the positions where ``mask`` is True, in float32; others get MASKED_LOGIT."""
    return scores.float().masked_fill(~mask, MASKED_LOGIT).log_softmax(dim)


def _gather_positions(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """values (B, L, ...) at positions (B, K) -> (B, K, ...)."""
    index = positions.view(*positions.shape, *([1] * (values.dim() - 2)))
    return values.gather(1, index.expand(*positions.shape, *values.shape[2:]))


def _topk_padded(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along the last axis, always k columns: short rows are padded with (MASKED_LOGIT, index 0)."""
    available = min(k, values.size(-1))
    top_values, top_index = values.topk(available, dim=-1)
    if available < k:
        pad_shape = (*values.shape[:-1], k - available)
        top_values = torch.cat([top_values, top_values.new_full(pad_shape, MASKED_LOGIT)], -1)
        top_index = torch.cat([top_index, top_index.new_zeros(pad_shape)], -1)
    return top_values, top_index


def _init_std(backbone_config) -> float:
    return getattr(backbone_config, "initializer_range", 0.02)


def _init_linear(layer: nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)


class BasicHead(nn.Module):
    """Independent start and end scores (BERT's SQuAD head)."""

    def __init__(self, backbone_config, dropout: float, loss="ce"):
        super().__init__()
        self.dropout = FastDropout(dropout)
        self.span_scores = nn.Linear(self._build_features(backbone_config), 2)
        _init_linear(self.span_scores, _init_std(backbone_config))
        self.position_loss = position_loss(loss)

    def _build_features(self, backbone_config) -> int:
        """Create the layers between the encoder and the scorer; return the scorer's input size."""
        return backbone_config.hidden_size

    def features(self, hidden: torch.Tensor, valid_length: torch.Tensor | None = None) -> torch.Tensor:
        """What the span scorer reads: the encoder's states."""
        return hidden

    def scores(self, hidden: torch.Tensor, valid_length: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, 2) float32 raw start/end scores."""
        return self.span_scores(self.dropout(self.features(hidden, valid_length))).float()

    def loss(self, hidden, candidate_mask, starts, ends, is_impossible, valid_length=None) -> torch.Tensor:
        return self.loss_and_scores(hidden, candidate_mask, starts, ends, is_impossible, valid_length)[0]

    def loss_and_scores(self, hidden, candidate_mask, starts, ends, is_impossible,
                        valid_length=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-window loss (B,) and the raw (B, L, 2) start/end scores it was computed from (one
        dropout draw for both: distillation, bench.backends.torch.modeling, reads the scores)."""
        scores = self.scores(hidden, valid_length)
        start_lp = masked_log_softmax(scores[..., 0], candidate_mask)
        end_lp = masked_log_softmax(scores[..., 1], candidate_mask)
        return 0.5 * (self.position_loss(start_lp, starts) + self.position_loss(end_lp, ends)), scores

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int, valid_length=None) -> dict:
        # Raw scores (not log-softmax) as BERT's postprocessing expects: null = start[0] + end[0].
        scores = self.scores(hidden, valid_length).masked_fill(~candidate_mask[..., None], MASKED_LOGIT)
        return {"start_logits": scores[..., 0], "end_logits": scores[..., 1]}


class BiLSTMHead(BasicHead):
    """A 2-layer bidirectional LSTM over the encoder's states, then the basic head's scorer on 2H features."""

    def _build_features(self, backbone_config) -> int:
        size = backbone_config.hidden_size
        self.lstm = nn.LSTM(size, size, num_layers=head_registry.BILSTM_LAYERS, batch_first=True,
                            bidirectional=True, dropout=head_registry.BILSTM_LAYER_DROPOUT)
        return 2 * size

    def features(self, hidden: torch.Tensor, valid_length: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, 2H): [forward; backward] LSTM states over each window's first ``valid_length`` tokens
        (all of them when None); zeros at padded positions."""
        if valid_length is None:
            return self.lstm(hidden)[0]
        return lstm_within_lengths(self.lstm, hidden, valid_length)


class ConditionalHead(nn.Module):
    """Start, end-given-start and answerability (GluonNLP ModelForQAConditionalV1)."""

    def __init__(self, backbone_config, dropout: float, loss: str = "ce"):
        super().__init__()
        hidden_size, init_std = backbone_config.hidden_size, _init_std(backbone_config)
        layer_norm_eps = getattr(backbone_config, "layer_norm_eps", 1e-12)
        self.start_scores = nn.Linear(hidden_size, 1)
        self.end_hidden = nn.Linear(2 * hidden_size, hidden_size)   # over concat[h_t; h_start]
        self.end_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.end_scores = nn.Linear(hidden_size, 1)
        self.answerable_hidden = nn.Linear(2 * hidden_size, hidden_size)  # over concat[E_p(start)[h]; h_CLS]
        self.answerable_dropout = FastDropout(dropout)
        self.answerable_scores = nn.Linear(hidden_size, 2)  # class 0: answerable, 1: unanswerable
        for layer in (self.start_scores, self.end_hidden, self.end_scores, self.answerable_hidden,
                      self.answerable_scores):
            _init_linear(layer, init_std)

    def start_log_probs(self, hidden: torch.Tensor, candidate_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) float32 log p(start)."""
        return masked_log_softmax(self.start_scores(hidden)[..., 0], candidate_mask)

    def end_log_probs(self, hidden: torch.Tensor, starts: torch.Tensor, candidate_mask: torch.Tensor) -> torch.Tensor:
        """(B, K, L) float32 log p(end | start) for each of the K ``starts`` (B, K)."""
        size = hidden.size(-1)
        # Dense over concat[h_t; h_s] = W_t h_t + W_s h_s + b: computing the two halves apart avoids
        # materialising the (B, K, L, 2H) concatenation (same parameters, same result).
        token_part = F.linear(hidden, self.end_hidden.weight[:, :size], self.end_hidden.bias)      # (B, L, H)
        start_part = F.linear(_gather_positions(hidden, starts), self.end_hidden.weight[:, size:])  # (B, K, H)
        features = torch.tanh(token_part[:, None, :, :] + start_part[:, :, None, :])               # (B, K, L, H)
        scores = self.end_scores(self.end_layer_norm(features))[..., 0]
        return masked_log_softmax(scores, candidate_mask[:, None, :])

    def answerable_log_probs(self, hidden: torch.Tensor, start_lp: torch.Tensor) -> torch.Tensor:
        """(B, 2) float32 log p(answerable), log p(unanswerable)."""
        expected_start = torch.einsum("bl,blh->bh", start_lp.exp().to(hidden.dtype), hidden)
        features = torch.cat([expected_start, hidden[:, 0]], dim=-1)
        scores = self.answerable_scores(self.answerable_dropout(torch.tanh(self.answerable_hidden(features))))
        return scores.float().log_softmax(-1)

    def loss(self, hidden, candidate_mask, starts, ends, is_impossible) -> torch.Tensor:
        start_lp = self.start_log_probs(hidden, candidate_mask)
        end_lp = self.end_log_probs(hidden, starts[:, None], candidate_mask)[:, 0]   # teacher forcing
        answerable_lp = self.answerable_log_probs(hidden, start_lp)
        picked_start = start_lp.gather(1, starts[:, None])[:, 0]
        picked_end = end_lp.gather(1, ends[:, None])[:, 0]
        picked_answerable = answerable_lp.gather(1, is_impossible.long()[:, None])[:, 0]
        return -0.5 * (picked_start + picked_end) - 0.5 * picked_answerable

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int) -> dict:
        start_lp = self.start_log_probs(hidden, candidate_mask)
        start_top_logit, start_top_index = _topk_padded(start_lp, start_top_n)
        end_lp = self.end_log_probs(hidden, start_top_index, candidate_mask)
        end_top_lp, end_top_index = _topk_padded(end_lp, end_top_n)
        answerable_lp = self.answerable_log_probs(hidden, start_lp)
        return {"start_top_index": start_top_index, "start_top_logit": start_top_logit,
                "end_top_index": end_top_index,
                # + log p(answerable): start + end logit = log P(answer is this span).
                "end_top_logit": end_top_lp + answerable_lp[:, 0, None, None],
                "null_score": answerable_lp[:, 1]}
