"""The recurrent baselines on the torch backend: an LSTM baseline and BiDAF (Seo et al. 2017).

Both read the feature builder's BERT-template windows, ``[CLS] question [SEP] context [SEP]``, and
split them with the token types (0: CLS, question, first SEP; 1: context, last SEP). They return
``last_hidden_state`` (B, L, H) like any encoder, filled at the context positions, with a pooled
summary at CLS (the null answer of SQuAD 2.0) and zeros at the question positions (never
candidates), so any registered head (``--head basic``: a Linear(H, 2)) scores spans on them.

* ``LSTMBaseline``: embeddings -> one BiLSTM shared by question and context -> question summary
  q (attention-pooled question states) -> H = [c_i ; c_i * q] per context token, so the basic
  head's start/end scores are w.c_i + v.(c_i * q): a bilinear pointer with a diagonal matrix.
* ``BiDAF``: embeddings -> 2-layer highway -> contextual BiLSTM (shared) -> attention flow
  (similarity w.[h; u; h*u], context-to-query and query-to-context attention, G = [h; u~; h*u~;
  h*h~]) -> 2-layer modelling BiLSTM M -> one more BiLSTM M2 for the end; H = [G; M; M2] (12 d),
  from which the head's start scorer reads the paper's [G; M] and its end scorer [G; M2] (each
  may also use the other block: docs/recurrent-baselines.md says why that is the seam's fit).

The folder (``bench.run.word_model``) holds config.json and the initial embedding matrix
(model.safetensors, ``embeddings.word_embeddings.weight``); everything else starts from torch's
default initialisation under the run's seed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from bench.backends.torch.rnn import lstm_within_lengths
from bench.core.word_vocab import EMBEDDING_KEY
from bench.run.model_source import ModelFolder, ModelSourceError

__all__ = ["LSTMBaseline", "BiDAF", "load_backbone"]

NEG = -1e4          # masked attention logit (finite: float16-safe, and a row of them still softmaxes)


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor


# ------------------------------------------------------------------------------------- window split
@dataclass
class Split:
    """Question and context of each window, gathered to the left and padded: (B, Lq) / (B, Lc)."""
    question_index: torch.Tensor
    question_mask: torch.Tensor
    context_index: torch.Tensor
    context_mask: torch.Tensor


def split_window(attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> Split:
    """Positions of the question (between CLS and the first SEP) and of the context (type 1 but the last SEP)."""
    valid = attention_mask.bool()
    segment_a = (valid & (token_type_ids == 0)).sum(1)          # CLS + question + SEP
    question_len = (segment_a - 2).clamp(min=1)
    context_len = (valid.sum(1) - segment_a - 1).clamp(min=1)
    question_index, question_mask = _span(torch.ones_like(segment_a), question_len)
    context_index, context_mask = _span(segment_a, context_len)
    return Split(question_index, question_mask, context_index, context_mask)


def _span(start: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    steps = torch.arange(int(length.max()), device=start.device)
    mask = steps[None, :] < length[:, None]
    index = (start[:, None] + steps[None, :]) * mask          # padding rows point at position 0
    return index, mask


def gather(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return states.gather(1, index[..., None].expand(-1, -1, states.size(-1)))


def scatter_back(length: int, split: Split, context: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(B, L, H): ``context`` states at their window positions, ``cls`` at 0, zeros elsewhere."""
    out = context.new_zeros(context.size(0), length, context.size(-1))
    kept = context * split.context_mask[..., None]
    out.scatter_add_(1, split.context_index[..., None].expand_as(kept), kept)
    out[:, 0] = cls
    return out


def masked_max(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return states.masked_fill(~mask[..., None], NEG).max(1).values


# ------------------------------------------------------------------------------------- blocks
class BiLSTM(nn.Module):
    """A bidirectional LSTM over left-aligned padded sequences, each read up to its length
    (``lstm_within_lengths``), so padding never enters the states."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return lstm_within_lengths(self.lstm, x, mask.sum(1).clamp(min=1))


class Highway(nn.Module):
    """Srivastava et al. (2015): y = g * relu(W x) + (1 - g) * x, g = sigmoid(W_g x), per layer."""

    def __init__(self, size: int, num_layers: int = 2):
        super().__init__()
        self.transforms = nn.ModuleList(nn.Linear(size, size) for _ in range(num_layers))
        self.gates = nn.ModuleList(nn.Linear(size, size) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform, gate in zip(self.transforms, self.gates):
            g = torch.sigmoid(gate(x))
            x = g * torch.relu(transform(x)) + (1 - g) * x
        return x


class WordEncoder(nn.Module):
    """Shared parts: config, the word embeddings (frozen when config says so) and the window split."""

    def __init__(self, config: SimpleNamespace, hidden_size: int):
        super().__init__()
        self.config = config
        config.hidden_size = hidden_size            # what the head reads (bench.backends.torch.heads)
        config.type_vocab_size = 2                  # QAModel passes token types (they split the window)
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(config.vocab_size, config.word_dim,
                                                       padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.rnn_dropout)

    def embed(self, input_ids: torch.Tensor, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.embeddings.word_embeddings(input_ids)
        return gather(words, split.question_index), gather(words, split.context_index)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> EncoderOutput:
        if token_type_ids is None:
            raise ValueError(f"{self.config.model_type} needs token_type_ids to tell question from context")
        split = split_window(attention_mask, token_type_ids)
        context, cls = self.encode(input_ids, split)
        return EncoderOutput(scatter_back(input_ids.size(1), split, context, cls))


class LSTMBaseline(WordEncoder):
    """Embeddings -> shared BiLSTM -> question summary -> [c_i ; c_i * q] (4 d) for the pointer head."""

    def __init__(self, config: SimpleNamespace):
        d = config.rnn_hidden_size
        super().__init__(config, 4 * d)
        self.encoder = BiLSTM(config.word_dim, d)
        self.question_attention = nn.Linear(2 * d, 1)

    def encode(self, input_ids, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        question, context = (self.dropout(x) for x in self.embed(input_ids, split))
        u = self.encoder(question, split.question_mask)                       # (B, Lq, 2d)
        c = self.encoder(context, split.context_mask)                         # (B, Lc, 2d)
        weights = self.question_attention(u).squeeze(-1).masked_fill(~split.question_mask, NEG).softmax(-1)
        q = torch.einsum("bj,bjh->bh", weights, u)                            # the question summary
        states = self.dropout(torch.cat([c, c * q[:, None]], -1))
        return states, masked_max(states, split.context_mask)


class BiDAF(WordEncoder):
    """Seo et al. (2017) without the character CNN: see the module docstring."""

    def __init__(self, config: SimpleNamespace):
        d = config.rnn_hidden_size
        super().__init__(config, 12 * d)
        self.highway = Highway(config.word_dim)
        self.contextual = BiLSTM(config.word_dim, d)
        self.similarity = nn.Linear(6 * d, 1)
        self.modelling = BiLSTM(8 * d, d, num_layers=2, dropout=config.rnn_dropout)
        self.end_lstm = BiLSTM(2 * d, d)

    def attention_flow(self, h: torch.Tensor, u: torch.Tensor, split: Split) -> torch.Tensor:
        """G = [h; u~; h * u~; h * h~] (B, Lc, 8d) from context states h and question states u."""
        w_h, w_u, w_hu = self.similarity.weight.view(3, -1)
        # w.[h; u; h*u] for every (t, j) without the (B, Lc, Lq, 6d) tensor.
        s = ((h @ w_h)[..., None] + (u @ w_u)[:, None, :] + torch.einsum("bth,bjh->btj", h * w_hu, u)
             + self.similarity.bias)
        s = s.masked_fill(~split.question_mask[:, None, :], NEG)
        u_tilde = s.softmax(-1) @ u                                            # context-to-query
        b = s.max(-1).values.masked_fill(~split.context_mask, NEG).softmax(-1)
        h_tilde = torch.einsum("bt,bth->bh", b, h)[:, None].expand_as(h)      # query-to-context
        return torch.cat([h, u_tilde, h * u_tilde, h * h_tilde], -1)

    def encode(self, input_ids, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        question, context = (self.dropout(self.highway(x)) for x in self.embed(input_ids, split))
        u = self.contextual(question, split.question_mask)
        h = self.contextual(context, split.context_mask)
        g = self.attention_flow(self.dropout(h), self.dropout(u), split)
        m = self.modelling(g, split.context_mask)
        m2 = self.end_lstm(self.dropout(m), split.context_mask)
        states = self.dropout(torch.cat([g, m, m2], -1))
        return states, masked_max(states, split.context_mask)


_CLASSES = {"lstm_baseline": LSTMBaseline, "bidaf": BiDAF}


def load_backbone(source: ModelFolder) -> nn.Module:
    """The family's module from config.json, its embeddings from model.safetensors (frozen if config says)."""
    from safetensors.torch import load_file

    config = SimpleNamespace(**json.loads((source.folder / "config.json").read_text(encoding="utf-8")))
    model = _CLASSES[config.model_type](config)
    weights = load_file(str(source.folder / "model.safetensors"))
    embedding = model.embeddings.word_embeddings
    if EMBEDDING_KEY not in weights or tuple(weights[EMBEDDING_KEY].shape) != tuple(embedding.weight.shape):
        raise ModelSourceError(f"{source.folder / 'model.safetensors'}: expected {EMBEDDING_KEY} of shape "
                               f"{tuple(embedding.weight.shape)} (config.json vocab_size x word_dim)")
    with torch.no_grad():
        embedding.weight.copy_(weights[EMBEDDING_KEY])
    embedding.weight.requires_grad_(not config.freeze_embeddings)
    return model
