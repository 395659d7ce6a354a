"""The QA heads in Gluon (one class per head registry entry, ``bench.core.heads``), parameter for
parameter those of ``bench.backends.torch.heads``.

Child blocks carry the torch modules' names (``start_scores``, ``end_hidden``, ``lstm``, ...), so a
Gluon structural parameter name equals the torch ``state_dict`` key except for LayerNorm's
``gamma``/``beta`` (torch: ``weight``/``bias``) and the LSTM's tensors (torch
``weight_ih_l{k}[_reverse]``, ``weight_hh_...``, ``bias_ih_...``, ``bias_hh_...`` = Gluon
``l{k}_i2h_weight`` / ``r{k}_i2h_weight``, ``.._h2h_weight``, ``.._i2h_bias``, ``.._h2h_bias``: the
names and layouts of ``gluon.rnn.LSTM``; both stack the gates as (i, f, g, o)).
``torch_to_gluon_name`` / ``gluon_to_torch_name`` convert, and ``load_torch_state`` fills a whole
``GluonQAModel`` from a torch ``QAModel`` state (numpy arrays). The maths, including the masking
constant, the float32 log-softmaxes and the inference scores, follow the torch docstrings:

``basic``        Dropout -> Dense(2); loss = (loss(start) + loss(end)) / 2 with ``--loss`` (ce, focal or
                 label_smoothing: ``bench.core.losses``), CLS (0) labels no answer.
``bilstm``       ``BiLSTM`` (2 layers, H per direction, dropout 0.2 between them) -> Dropout -> Dense(2);
                 loss and scores as ``basic``. Each window's valid tokens only: see ``BiLSTM``.
``conditional``  log p(start) = Dense(1); log p(end | start) = Dense(1)(LayerNorm(tanh(Dense(H) over
                 [h_t; h_start]))); log p(answerable) from Dense(2)(Dropout(tanh(Dense(H) over
                 [sum_t p(start=t) h_t; h_CLS]))); loss = -(log p_start + log p_end|start) / 2
                 - log p(is_impossible) / 2.

Training code calls the model (``GluonQAModel.hybrid_forward``: per-window loss, hybridizable);
evaluation calls ``predict`` (imperative, top-k).
"""
from __future__ import annotations

import math
import re

import numpy as np

from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.convert import (ConversionError, assign_params, base_model_state, convert_state,
                                         hf_name_map, make_encoder, structural_params)
from bench.backends.mxnet.encoders import EncoderConfig, ModeTracedGraphs
from bench.backends.mxnet.losses import position_loss
from bench.core import heads as head_registry
from bench.core.heads import get_head
from bench.run.registry import load_implementation

mx, _ = import_mxnet()
from mxnet.gluon import HybridBlock, nn  # noqa: E402

__all__ = ["MASKED_LOGIT", "BasicHead", "BiLSTM", "BiLSTMHead", "ConditionalHead", "GluonQAModel", "masked_log_softmax",
           "build_qa_model", "batch_to_nd", "distillation_kl", "torch_to_gluon_name", "gluon_to_torch_name",
           "load_torch_state", "torch_names", "torch_state_from_gluon"]

MASKED_LOGIT = -1e30            # bench.backends.torch.modeling.MASKED_LOGIT: finite, far below any log-prob


def masked_log_softmax(F, scores, mask):
    """log-softmax over the last axis where ``mask`` (same shape, 1/0) is 1; elsewhere MASKED_LOGIT - lse."""
    return F.log_softmax(F.where(mask, scores, F.ones_like(scores) * MASKED_LOGIT), axis=-1)


def _normal(std: float):
    return mx.init.Normal(std)


def _dense(units: int, in_units: int, std: float) -> nn.Dense:
    # torch's _init_linear: weights ~ N(0, std), zero bias.
    return nn.Dense(units, flatten=False, in_units=in_units, weight_initializer=_normal(std))


def _gather_positions(F, values, positions):
    """values (B, L, H) at positions (B, K) -> (B, K, H)."""
    batch = F.broadcast_like(F.expand_dims(F.contrib.arange_like(positions, axis=0), axis=1), positions)
    return F.gather_nd(values, F.stack(batch, positions, axis=0))


class BasicHead(HybridBlock):
    """Independent start and end scores (BERT's SQuAD head)."""

    def __init__(self, config: EncoderConfig, dropout: float, init_std: float, loss="ce", prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        self._position_loss = position_loss(loss)
        with self.name_scope():
            self.dropout = nn.Dropout(dropout)
            self.span_scores = _dense(2, self._build_features(config), init_std)

    def _build_features(self, config: EncoderConfig) -> int:
        """Create the blocks between the encoder and the scorer; return the scorer's input size."""
        return config.hidden_size

    def features(self, F, hidden, valid_length=None):
        """What the span scorer reads: the encoder's states."""
        return hidden

    def scores(self, F, hidden, valid_length=None):
        """(B, L, 2) raw start/end scores."""
        return self.span_scores(self.dropout(self.features(F, hidden, valid_length)))

    def hybrid_forward(self, F, hidden, candidate_mask, starts, ends, is_impossible,  # pylint: disable=arguments-differ
                       valid_length=None):
        """Per-window loss (B,)."""
        return self.loss_and_scores(F, hidden, candidate_mask, starts, ends, valid_length)[0]

    def loss_and_scores(self, F, hidden, candidate_mask, starts, ends, valid_length=None):
        """(per-window loss (B,), raw start/end scores (B, L, 2)) from one pass, so one dropout mask:
        distillation (``GluonQAModel.distillation_loss``) reads both, as torch's ``loss_and_scores``."""
        scores = self.scores(F, hidden, valid_length)
        start_lp = masked_log_softmax(F, F.slice_axis(scores, axis=-1, begin=0, end=1).squeeze(axis=-1),
                                      candidate_mask)
        end_lp = masked_log_softmax(F, F.slice_axis(scores, axis=-1, begin=1, end=2).squeeze(axis=-1),
                                    candidate_mask)
        return 0.5 * (self._position_loss(F, start_lp, starts) + self._position_loss(F, end_lp, ends)), scores

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int, valid_length=None) -> dict:
        # Raw scores (not log-softmax), as BERT's post-processing expects: null = start[0] + end[0].
        F = mx.nd
        scores = self.scores(F, hidden, valid_length)
        mask = F.broadcast_like(F.expand_dims(candidate_mask, axis=-1), scores)
        scores = F.where(mask, scores, F.ones_like(scores) * MASKED_LOGIT)
        return {"start_logits": scores[:, :, 0], "end_logits": scores[:, :, 1]}


class BiLSTM(HybridBlock):
    """A stacked bidirectional LSTM over the first ``valid_length`` steps of each (B, T, C) sequence: torch's
    ``nn.LSTM(bidirectional=True, batch_first=True)`` over a packed sequence, in Gluon.

    Parameters as ``gluon.rnn.LSTM(bidirectional=True)`` registers them (``l{k}_i2h_weight`` (4H, C_k),
    ``l{k}_h2h_weight`` (4H, H), ``l{k}_i2h_bias``, ``l{k}_h2h_bias``; ``r{k}_*`` for the backward
    direction; gates stacked (i, f, g, o), torch's order), initialised as torch does: U(-1/sqrt(H), 1/sqrt(H)).

    Why not ``gluon.rnn.LSTM(use_sequence_length=True)``: MXNet 1.9.1's RNN operator ignores
    ``sequence_length`` on the CPU (measured: the same outputs as without it; it is a cuDNN feature), so
    the backward direction would start in the padding and carry it into every real position. Here each direction of each layer is one
    fused single-layer ``F.RNN`` call; the backward one runs over the input reversed *within* each
    sequence's valid length (``F.SequenceReverse``), so it starts at the last real token, and its
    output is reversed back. Padded steps only come after the real ones in either direction, so they
    never reach a real position; they are set to zero at the end, as ``pad_packed_sequence`` leaves
    them. Dropout ``dropout`` between layers (not after the last), as torch's.
    """

    def __init__(self, hidden_size: int, input_size: int, num_layers: int, dropout: float, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        self._hidden_size, self._num_layers, self._dropout = hidden_size, num_layers, dropout
        init = mx.init.Uniform(1.0 / math.sqrt(hidden_size))
        columns = input_size
        for layer in range(num_layers):
            for direction in "lr":
                for gate, width in (("i2h", columns), ("h2h", hidden_size)):
                    name = f"{direction}{layer}_{gate}"
                    setattr(self, f"{name}_weight",
                            self.params.get(f"{name}_weight", shape=(4 * hidden_size, width), init=init))
                    setattr(self, f"{name}_bias", self.params.get(f"{name}_bias", shape=(4 * hidden_size,), init=init))
            columns = 2 * hidden_size

    def _direction(self, F, steps, params: dict, name: str):
        """One single-layer LSTM direction over ``steps`` (T, B, C) from zero states -> (T, B, H)."""
        flat = F._internal._rnn_param_concat(  # pylint: disable=protected-access
            *(params[f"{name}_{gate}_{kind}"].reshape(-1) for kind in ("weight", "bias") for gate in ("i2h", "h2h")),
            dim=0)
        first = F.slice_axis(F.slice_axis(steps, axis=0, begin=0, end=1), axis=2, begin=0, end=1)   # (1, B, 1)
        zeros = F.repeat(F.zeros_like(first), repeats=self._hidden_size, axis=2)                      # (1, B, H)
        return F.RNN(steps, flat, zeros, zeros, state_size=self._hidden_size, num_layers=1, mode="lstm",
                     bidirectional=False, p=0.0, state_outputs=False)

    def hybrid_forward(self, F, inputs, valid_length, **params):  # pylint: disable=arguments-differ
        """inputs (B, T, C), valid_length (B,) -> (B, T, 2H): [forward; backward] states, zeros after each length."""
        steps = F.swapaxes(inputs, 0, 1)                                  # (T, B, C): the RNN op's layout
        for layer in range(self._num_layers):
            forward = self._direction(F, steps, params, f"l{layer}")
            reversed_steps = F.SequenceReverse(steps, valid_length, use_sequence_length=True)
            backward = F.SequenceReverse(self._direction(F, reversed_steps, params, f"r{layer}"), valid_length,
                                         use_sequence_length=True)
            steps = F.concat(forward, backward, dim=2)
            if self._dropout > 0 and layer < self._num_layers - 1:
                steps = F.Dropout(steps, p=self._dropout)
        steps = F.SequenceMask(steps, valid_length, use_sequence_length=True, value=0.0)
        return F.swapaxes(steps, 0, 1)


class BiLSTMHead(BasicHead):
    """``BiLSTM`` over the encoder's states (2 layers, H per direction), then the basic head's scorer on 2H."""

    def _build_features(self, config: EncoderConfig) -> int:
        size = config.hidden_size
        self.lstm = BiLSTM(size, size, head_registry.BILSTM_LAYERS, head_registry.BILSTM_LAYER_DROPOUT)
        return 2 * size

    def features(self, F, hidden, valid_length=None):
        if valid_length is None:
            raise ValueError("the bilstm head needs each window's valid_length")
        return self.lstm(hidden, valid_length)


class SplitDense(HybridBlock):
    """Dense(H) over concat[h_t; h_s], computed as W_t h_t + b and W_s h_s apart (same parameters as
    torch's ``end_hidden`` Linear(2H, H)): the (B, K, L, 2H) concatenation is never built."""

    def __init__(self, hidden_size: int, init_std: float, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._size = hidden_size
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(hidden_size, 2 * hidden_size), init=_normal(init_std))
            self.bias = self.params.get("bias", shape=(hidden_size,), init="zeros")

    def hybrid_forward(self, F, tokens, starts, weight, bias):  # pylint: disable=arguments-differ
        """tokens (B, L, H), starts (B, K, H) -> token part (B, L, H), start part (B, K, H)."""
        token_part = F.FullyConnected(tokens, F.slice_axis(weight, axis=1, begin=0, end=self._size), bias,
                                      num_hidden=self._size, flatten=False)
        start_part = F.FullyConnected(starts, F.slice_axis(weight, axis=1, begin=self._size, end=None),
                                      num_hidden=self._size, no_bias=True, flatten=False)
        return token_part, start_part


class ConditionalHead(HybridBlock):
    """Start, end-given-start and answerability (GluonNLP ModelForQAConditionalV1)."""

    def __init__(self, config: EncoderConfig, dropout: float, init_std: float, loss="ce", prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        hidden_size, layer_norm_eps = config.hidden_size, config.layer_norm_eps
        with self.name_scope():
            self.start_scores = _dense(1, hidden_size, init_std)
            self.end_hidden = SplitDense(hidden_size, init_std)
            self.end_layer_norm = nn.LayerNorm(epsilon=layer_norm_eps, in_channels=hidden_size)
            self.end_scores = _dense(1, hidden_size, init_std)
            self.answerable_hidden = _dense(hidden_size, 2 * hidden_size, init_std)
            self.answerable_dropout = nn.Dropout(dropout)
            self.answerable_scores = _dense(2, hidden_size, init_std)   # class 0: answerable, 1: not

    def start_log_probs(self, F, hidden, candidate_mask):
        """(B, L) log p(start)."""
        return masked_log_softmax(F, self.start_scores(hidden).squeeze(axis=-1), candidate_mask)

    def end_log_probs(self, F, hidden, starts, candidate_mask):
        """(B, K, L) log p(end | start) for each of the K ``starts`` (B, K)."""
        token_part, start_part = self.end_hidden(hidden, _gather_positions(F, hidden, starts))
        features = F.tanh(F.broadcast_add(F.expand_dims(token_part, axis=1), F.expand_dims(start_part, axis=2)))
        scores = self.end_scores(self.end_layer_norm(features)).squeeze(axis=-1)
        mask = F.broadcast_like(F.expand_dims(candidate_mask, axis=1), scores)
        return masked_log_softmax(F, scores, mask)

    def answerable_log_probs(self, F, hidden, start_lp):
        """(B, 2) log p(answerable), log p(unanswerable)."""
        expected_start = F.batch_dot(F.expand_dims(F.exp(start_lp), axis=1), hidden).squeeze(axis=1)
        cls = F.slice_axis(hidden, axis=1, begin=0, end=1).squeeze(axis=1)
        features = F.tanh(self.answerable_hidden(F.concat(expected_start, cls, dim=-1)))
        return F.log_softmax(self.answerable_scores(self.answerable_dropout(features)), axis=-1)

    def hybrid_forward(self, F, hidden, candidate_mask, starts, ends, is_impossible):  # pylint: disable=arguments-differ
        """Per-window loss (B,), teacher-forcing the true start."""
        start_lp = self.start_log_probs(F, hidden, candidate_mask)
        end_lp = self.end_log_probs(F, hidden, F.expand_dims(starts, axis=1), candidate_mask).squeeze(axis=1)
        answerable_lp = self.answerable_log_probs(F, hidden, start_lp)
        picked = F.pick(start_lp, starts, axis=-1) + F.pick(end_lp, ends, axis=-1)
        return -0.5 * picked - 0.5 * F.pick(answerable_lp, is_impossible, axis=-1)

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int) -> dict:
        F = mx.nd
        start_lp = self.start_log_probs(F, hidden, candidate_mask)
        start_top_logit, start_top_index = _topk_padded(start_lp, start_top_n)
        end_lp = self.end_log_probs(F, hidden, start_top_index, candidate_mask)
        end_top_lp, end_top_index = _topk_padded(end_lp, end_top_n)
        answerable_lp = self.answerable_log_probs(F, hidden, start_lp)
        return {"start_top_index": start_top_index, "start_top_logit": start_top_logit,
                "end_top_index": end_top_index,
                # + log p(answerable): start + end logit = log P(answer is this span).
                "end_top_logit": F.broadcast_add(end_top_lp, answerable_lp[:, 0].reshape((-1, 1, 1))),
                "null_score": answerable_lp[:, 1]}


def _topk_padded(values, k: int):
    """Top-k along the last axis, always k columns: short rows are padded with (MASKED_LOGIT, index 0)."""
    available = min(k, values.shape[-1])
    top_values, top_index = mx.nd.topk(values, axis=-1, k=available, ret_typ="both", is_ascend=False)
    if available < k:
        pad_shape = values.shape[:-1] + (k - available,)
        top_values = mx.nd.concat(top_values, mx.nd.full(pad_shape, MASKED_LOGIT, ctx=values.context), dim=-1)
        top_index = mx.nd.concat(top_index, mx.nd.zeros(pad_shape, ctx=values.context), dim=-1)
    return top_values, top_index


class GluonQAModel(ModeTracedGraphs, HybridBlock):
    """A Gluon encoder (``backbone``) with a span-extraction head (``head``); mirrors torch's QAModel.

    Calling it (training) returns the per-window loss (B,); ``predict`` returns the head's
    inference scores as numpy arrays, in the torch backend's format.
    """

    def __init__(self, config: EncoderConfig, head: str = "conditional", dropout: float = 0.1,
                 init_std: float = 0.02, loss="ce", prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        spec = get_head(head)
        head_class = load_implementation(spec.implementation("mxnet"))
        self.config = config
        self.head_type = head
        self._needs_valid_length = spec.needs_valid_length
        with self.name_scope():
            self.backbone = make_encoder(config)
            self.head = head_class(config, dropout, init_std, loss)

    @property
    def family(self) -> str:
        return self.config.family

    def hybrid_forward(self, F, input_ids, token_types, valid_length, candidate_mask, starts, ends,  # pylint: disable=arguments-differ
                       is_impossible):
        """Per-window loss (B,). Windows marked ``is_impossible`` are labelled with CLS (0)."""
        hidden = self.backbone(input_ids, token_types, valid_length)
        starts, ends = _null_labels(F, starts, ends, is_impossible)
        lengths = (valid_length,) if self._needs_valid_length else ()     # bench.core.heads: needs_valid_length
        return self.head(hidden, candidate_mask, starts, ends, is_impossible, *lengths)

    def distillation_loss(self, inputs: dict, teacher_start, teacher_end, temperature: float, alpha: float):
        """Per-window (1 - a) * loss + a * T^2 * (KL_start + KL_end) / 2 (B,) from ``batch_to_nd`` inputs and the
        teacher's (B, L) logits (--teacher_path, bench.run.distill): torch's ``QAModel.forward`` with a teacher.

        Imperative (the hybridized blocks inside run their graphs); call it under ``autograd.record``. Heads
        whose outputs are start/end logits only (``loss_and_scores``: basic, bilstm)."""
        F = mx.nd
        hidden = self.backbone(inputs["input_ids"], inputs["token_types"], inputs["valid_length"])
        starts, ends = _null_labels(F, inputs["start_positions"], inputs["end_positions"], inputs["is_impossible"])
        mask = inputs["candidate_mask"]
        loss, scores = self.head.loss_and_scores(F, hidden, mask, starts, ends,
                                                 inputs["valid_length"] if self._needs_valid_length else None)
        kl = 0.5 * (distillation_kl(F, scores[:, :, 0], teacher_start, mask, temperature)
                    + distillation_kl(F, scores[:, :, 1], teacher_end, mask, temperature))
        return (1.0 - alpha) * loss + alpha * temperature ** 2 * kl

    def predict(self, inputs: dict, start_top_n: int = 5, end_top_n: int = 5) -> dict[str, np.ndarray]:
        """Inference scores from ``batch_to_nd`` inputs, as numpy (float32; indices int64)."""
        hidden = self.backbone(inputs["input_ids"], inputs["token_types"], inputs["valid_length"])
        lengths = (inputs["valid_length"],) if self._needs_valid_length else ()
        result = self.head.predict(hidden, inputs["candidate_mask"], start_top_n, end_top_n, *lengths)
        return {name: (value.asnumpy().astype(np.int64) if name.endswith("_index") else value.asnumpy())
                for name, value in result.items()}


def _null_labels(F, starts, ends, is_impossible):
    """Start/end labels with the impossible windows' pointed at CLS (0)."""
    return F.where(is_impossible, F.zeros_like(starts), starts), F.where(is_impossible, F.zeros_like(ends), ends)


def distillation_kl(F, student, teacher, mask, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) per window (B,), over the candidate positions ``mask``
    (B, L) only (torch's ``bench.backends.torch.modeling.distillation_kl``)."""
    student_lp = masked_log_softmax(F, student / temperature, mask)
    teacher_lp = masked_log_softmax(F, teacher / temperature, mask)
    terms = F.exp(teacher_lp) * (teacher_lp - student_lp)
    return F.sum(F.where(mask, terms, F.zeros_like(terms)), axis=-1)


# ---------------------------------------------------------------------------------------- inputs
def batch_to_nd(arrays: dict, ctx=None) -> dict:
    """``bench.core.features.batch_arrays`` output -> the model's float32 NDArray inputs (and labels, if present).

    Attention needs only each window's valid length: batches are right-padded.
    """
    ctx = ctx or mx.cpu()
    out = {"input_ids": arrays["input_ids"], "token_types": arrays["token_type_ids"],
           "valid_length": arrays["attention_mask"].sum(axis=1), "candidate_mask": arrays["candidate_mask"]}
    for name in ("start_positions", "end_positions", "is_impossible"):
        if name in arrays:
            out[name] = arrays[name]
    return {name: mx.nd.array(np.asarray(value, dtype=np.float32), ctx=ctx) for name, value in out.items()}


def build_qa_model(config: EncoderConfig, head: str = "conditional", dropout: float = 0.1, init_std: float = 0.02,
                   ctx=None, loss="ce") -> GluonQAModel:
    """A GluonQAModel with initialised (random) parameters; load weights with load_torch_state or
    ``convert.assign_params``. ``loss``: a ``--loss`` name or a ``bench.core.losses.LossSetting``."""
    ctx = ctx or mx.cpu()
    model = GluonQAModel(config, head=head, dropout=dropout, init_std=init_std, loss=loss)
    model.initialize(mx.init.Normal(init_std), ctx=ctx)
    model.backbone.finish_initialization(ctx)     # the head's layers all have explicit input sizes
    return model


# ---------------------------------------------------------------------------------------- names
def _swap_layer_norm_suffix(name: str, table: dict) -> str:
    stem, _, leaf = name.rpartition(".")
    return f"{stem}.{table[leaf]}" if leaf in table else name


_TORCH_LSTM = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
_GLUON_LSTM = re.compile(r"([lr])(\d+)_(i2h|h2h)_(weight|bias)")
_TORCH_TO_GLUON_GATE = {"ih": "i2h", "hh": "h2h"}
_GLUON_TO_TORCH_GATE = {"i2h": "ih", "h2h": "hh"}


def _lstm_to_gluon(name: str) -> str | None:
    """torch ``....weight_ih_l0_reverse`` -> Gluon ``....r0_i2h_weight`` (None: not an LSTM tensor)."""
    stem, dot, leaf = name.rpartition(".")
    if match := _TORCH_LSTM.fullmatch(leaf):
        kind, gate, layer, reverse = match.groups()
        return f"{stem}{dot}{'r' if reverse else 'l'}{layer}_{_TORCH_TO_GLUON_GATE[gate]}_{kind}"
    return None


def _lstm_to_torch(name: str) -> str | None:
    """Gluon ``....r0_i2h_weight`` -> torch ``....weight_ih_l0_reverse`` (None: not an LSTM tensor)."""
    stem, dot, leaf = name.rpartition(".")
    if match := _GLUON_LSTM.fullmatch(leaf):
        direction, layer, gate, kind = match.groups()
        return f"{stem}{dot}{kind}_{_GLUON_TO_TORCH_GATE[gate]}_l{layer}{'_reverse' if direction == 'r' else ''}"
    return None


def torch_to_gluon_name(name: str, layer_norm_names: set[str]) -> str:
    """Head parameter name, torch -> Gluon: LayerNorm weight/bias -> gamma/beta for ``layer_norm_names``;
    LSTM ``weight_ih_l{k}[_reverse]``-style names -> ``l{k}_i2h_weight`` / ``r{k}_i2h_weight``-style."""
    stem = name.rpartition(".")[0]
    if stem in layer_norm_names:
        return _swap_layer_norm_suffix(name, {"weight": "gamma", "bias": "beta"})
    return _lstm_to_gluon(name) or name


def gluon_to_torch_name(name: str) -> str:
    """Head parameter name, Gluon -> torch (the inverse of ``torch_to_gluon_name``)."""
    return _lstm_to_torch(name) or _swap_layer_norm_suffix(name, {"gamma": "weight", "beta": "bias"})


def _head_layer_norms(model: GluonQAModel) -> set[str]:
    return {f"head.{name}" for name, child in model.head._children.items()  # pylint: disable=protected-access
            if isinstance(child, nn.LayerNorm)}


def load_torch_state(model: GluonQAModel, state: dict[str, np.ndarray], where: str = "torch state") -> None:
    """Fill ``model`` from a torch ``QAModel.state_dict()`` given as numpy arrays (``backbone.*`` in HF
    names + ``head.*``). Every parameter must be covered; the torch names must all be used."""
    backbone = {name: value for name, value in state.items() if name.startswith("backbone.")}
    head = {name: value for name, value in state.items() if name.startswith("head.")}
    others = sorted(set(state) - set(backbone) - set(head))
    if others:
        raise ConversionError(f"{where}: unexpected tensors outside backbone.* and head.*: {others[:4]}")
    hf_state = base_model_state(backbone, model.family)
    unused = sorted(set(hf_state) - set(hf_name_map(model.config).values()))
    if unused:
        raise ConversionError(f"{where}: backbone tensors this {model.family} encoder has no place for: "
                              f"{unused[:4]}")
    values = {f"backbone.{name}": value for name, value in convert_state(model.config, hf_state, where).items()}
    layer_norms = _head_layer_norms(model)
    values.update({torch_to_gluon_name(name, layer_norms): np.asarray(value, np.float32)
                   for name, value in head.items()})
    assign_params(model, values, where=where)


def torch_names(model: GluonQAModel) -> dict[str, str]:
    """Gluon structural parameter name -> torch ``QAModel`` name (``backbone.`` + HF name, or ``head.*``)."""
    to_hf = hf_name_map(model.config)
    names = {}
    for name in structural_params(model):
        if name.startswith("backbone."):
            names[name] = f"backbone.{to_hf[name[len('backbone.'):]]}"
        else:
            names[name] = gluon_to_torch_name(name)
    return names


def torch_state_from_gluon(model: GluonQAModel) -> dict[str, np.ndarray]:
    """The model's parameters under torch ``QAModel`` names (the inverse of ``load_torch_state``), so a
    Gluon checkpoint can be evaluated by the torch backend and vice versa."""
    names = torch_names(model)
    return {names[name]: param.data().asnumpy() for name, param in structural_params(model).items()}
