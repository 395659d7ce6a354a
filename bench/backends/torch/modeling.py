"""Pretrained backbones + extractive QA heads for the torch backend.

Loading
    ``resolve_model_source`` turns ``--model_name`` / ``--model_path`` into a
    ``ModelSource``: a local Hugging Face folder, or the registry's hub id. The hub
    is used from the local cache when the model is there (no network touched);
    otherwise it is probed once, without retries, so a machine without network
    fails at once with a message naming the hub id and ``--model_path`` instead of
    retrying for half a minute per file.

Heads (``QAModel``), both restricted to the candidate positions (CLS and context
tokens; everything else gets ``MASKED_LOGIT``), with scores computed in float32
so masking is safe under autocast:

``basic``
    Dropout → Linear(H, 2): independent start/end logits. Loss per window =
    (CE(start) + CE(end)) / 2 with CLS (index 0) as the label of windows without
    an answer.
``conditional`` (default; GluonNLP ``ModelForQAConditionalV1``, ALBERT/XLNet style)
    log p(start) from Dense(1); log p(end | start) from Dense(H, tanh) → LayerNorm →
    Dense(1) over concat[h_t; h_start] (the true start in training, each of the top
    ``start_top_n`` starts at inference); p(answerable) from Dense(H, tanh) →
    Dropout → Dense(2) over concat[Σ_t p(start=t)·h_t; h_CLS] (class 0 =
    answerable, class 1 = unanswerable, i.e. the class index is ``is_impossible``).
    Loss per window = −½(log p_start + log p_end|start) − ½ log p(is_impossible).

    Inference scores are log-probabilities chosen so that for a span (s, e)
    ``start_top_logit + end_top_logit = log p(s) + log p(e|s) + log p(answerable)
    = log P(answer is span (s, e))`` and ``null_score = log P(no answer)``. The core
    then predicts "" iff ``null_score − best span score > --null_score_diff_threshold``:
    a comparison of two log-probabilities, so the threshold 0 means "the more
    probable of the two".

CPU training speed (``FastDropout``, ``cpu_training_attention``): on the CPU, torch's
``bernoulli_`` draws one random number per element serially, and SDPA falls back to its
unfused math path (with extra masked-softmax passes) whenever attention dropout is on, so
dropout and attention took about a third of a training step on 2 cores. While a CPU model
trains, every dropout draws its keep mask from 15-bit integers (four per ``random_`` int64
draw of torch's default generator, so checkpoints restore it) and attention runs Hugging
Face's eager formula (additive float mask, softmax, dropout, weighted sum). Same
computation, same dropout probability (to 2^-16); only which random numbers are drawn
differs. Evaluation and GPUs keep SDPA and ``torch.nn.functional.dropout``.

The model is kept in float32; the trainer adds autocast. Weights are read only
from safetensors (or, for hub checkpoints without them, by transformers'
``torch.load(weights_only=True)``); remote code is never run.
"""
from __future__ import annotations

import contextlib

import copy
import inspect
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.run.checkpoints import require_safetensors, without_backbone_prefix
from bench.core.models import FAMILIES
from bench.run.model_source import ModelFolder, ModelSourceError, load_tokenizer, resolve_model_folder
from bench.run.training_rules import layer_index_from_name

__all__ = ["ModelSourceError", "QAModel", "BasicHead", "ConditionalHead", "HEADS",
           "MASKED_LOGIT", "resolve_model_source", "load_tokenizer", "build_qa_model",
           "load_backbone", "load_backbone_weights", "masked_log_softmax",
           "quantize_dynamic_int8", "inference_model", "SDPA_FAMILIES", "FastDropout", "fast_dropout",
           "cpu_training_attention", "CPU_TRAINING_ATTENTION"]

logger = logging.getLogger(__name__)

HEADS = ("conditional", "basic")
# Score of a position that may not be an answer boundary: far below any real log-probability, yet
# finite in float32 so that sums of two masked scores stay finite (no inf - inf = nan downstream).
MASKED_LOGIT = -1e30
# backbone_layer_index() of the embedding parameters (below layer 0).
# Families whose transformers 5.x model classes declare scaled-dot-product attention support.
SDPA_FAMILIES = ("bert", "albert", "electra", "mobilebert", "roberta", "distilbert")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_TRUE_VALUES = {"1", "on", "yes", "true"}
_HUB_PROBE_TIMEOUT_S = 10.0


# The backends share one resolver (bench.run.model_source); this is its name in this module's API.
resolve_model_source = resolve_model_folder


# ---------------------------------------------------------------------------------------- backbone
def load_backbone(source: ModelFolder) -> nn.Module:
    """The pretrained encoder, float32, without pooler, with SDPA attention where supported."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(source.folder, trust_remote_code=False, local_files_only=True)
    if config.model_type not in FAMILIES:
        raise ModelSourceError(f"{source.folder}: model type {config.model_type!r} is not supported; "
                               f"supported families: {', '.join(FAMILIES)}")
    model_class = MODEL_MAPPING[type(config)]
    kwargs = {"config": config, "dtype": torch.float32, "local_files_only": True,
              "attn_implementation": "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False  # an unused pooler would break DDP (parameters without grads)
    if (source.folder / "model.safetensors").is_file():
        kwargs["use_safetensors"] = True
    with _quiet_transformers():
        model, info = model_class.from_pretrained(source.folder, output_loading_info=True, **kwargs)
    # Unexpected keys are the dropped pooler and pretraining heads; missing ones would be a real problem.
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        logger.warning("%s: %d backbone weights are not in the checkpoint and were initialised randomly "
                       "(e.g. %s)", source.source, len(missing), ", ".join(missing[:3]))
    return model


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bars (we report what matters ourselves)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Overwrite the backbone's weights with a .safetensors file, requiring exactly matching keys and shapes.

    Keys are the backbone's own (``embeddings.word_embeddings.weight``); a file saved from a
    whole ``QAModel`` (keys ``backbone.*``) is accepted too.
    """
    from safetensors.torch import load_file

    path = require_safetensors(path, f"--backbone_path {path}", ModelSourceError)
    state = without_backbone_prefix(load_file(str(path)))
    _check_backbone_state(backbone.state_dict(), state, path)
    backbone.load_state_dict(state, strict=True)


def _check_backbone_state(expected: dict, state: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        raise ModelSourceError(f"--backbone_path {path} does not match the backbone: {'; '.join(problems)}")


def _accepts_token_types(backbone: nn.Module) -> bool:
    # DistilBERT has no token types; RoBERTa has a single one (type_vocab_size 1): pass them to neither.
    forward_params = inspect.signature(backbone.forward).parameters
    return "token_type_ids" in forward_params and getattr(backbone.config, "type_vocab_size", 0) > 1


# ---------------------------------------------------------------------------------------- CPU training speed
# Name under which cpu_training_attention is registered with transformers' attention interfaces.
CPU_TRAINING_ATTENTION = "bench_cpu_training"
_KEEP_BITS = 15


def _keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A dropout multiplier: 1/(1-p) where kept, 0 where dropped, P(drop) = round(p * 2^15) / 2^15.

    Why int64 draws: one ``random_`` call yields 64 random bits (uniform over [0, 2^63)) from the
    default generator, and random numbers were the largest single cost of a CPU training step;
    masking each 16-bit quarter to 15 bits gives four uniform 15-bit integers per draw, so
    P(drop) is within 2^-16 of p (0.1 -> 0.100006).
    """
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()
    quarters = words.view(torch.int16)[:count].view(shape)
    quarters.bitwise_and_((1 << _KEEP_BITS) - 1)
    keep = quarters >= round(p * (1 << _KEEP_BITS))
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with a cheaper keep mask on the CPU (see _keep_scale)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)     # GPUs have fused dropout kernels
    return x * _keep_scale(x.shape, p, x.dtype, x.device)


class FastDropout(nn.Dropout):
    """nn.Dropout whose CPU training path is fast_dropout (a drop-in: same ``p``, no state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def _use_fast_dropout(module: nn.Module) -> None:
    """Replace every plain nn.Dropout inside ``module`` by a FastDropout of the same p."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))


def cpu_training_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs):
    """Hugging Face's eager attention (additive mask, softmax, dropout, weighted sum) with fast_dropout.

    Why not SDPA here: with dropout on, the CPU has no fused SDPA kernel; its math fallback
    draws the dropout mask with bernoulli_ and adds masked-softmax passes. The scale goes on the
    query (L x D values) rather than on the scores (L x L). Returns (B, L, heads, D), None.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = fast_dropout(scores.softmax(-1), dropout, dropout > 0.0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register_cpu_training_attention() -> bool:
    """Register cpu_training_attention (eager-style float masks) with transformers; False if unsupported."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:
        return False
    AttentionInterface.register(CPU_TRAINING_ATTENTION, cpu_training_attention)
    AttentionMaskInterface.register(CPU_TRAINING_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return True


_CPU_ATTENTION_REGISTERED = _register_cpu_training_attention()


@contextlib.contextmanager
def _attention_implementation(config, name: str):
    """Switch the backbone's attention implementation for one forward pass (backward needs no switch)."""
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


# ---------------------------------------------------------------------------------------- heads
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


def _init_linear(layer: nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)


class BasicHead(nn.Module):
    """Independent start and end scores (BERT's SQuAD head)."""

    def __init__(self, hidden_size: int, dropout: float, init_std: float):
        super().__init__()
        self.dropout = FastDropout(dropout)
        self.span_scores = nn.Linear(hidden_size, 2)
        _init_linear(self.span_scores, init_std)

    def log_probs(self, hidden: torch.Tensor, candidate_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.span_scores(self.dropout(hidden)).float()
        return (masked_log_softmax(scores[..., 0], candidate_mask),
                masked_log_softmax(scores[..., 1], candidate_mask))

    def loss(self, hidden, candidate_mask, starts, ends, is_impossible) -> torch.Tensor:
        start_lp, end_lp = self.log_probs(hidden, candidate_mask)
        picked_start = start_lp.gather(1, starts[:, None])[:, 0]
        picked_end = end_lp.gather(1, ends[:, None])[:, 0]
        return -0.5 * (picked_start + picked_end)

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int) -> dict:
        # Raw scores (not log-softmax) as BERT's postprocessing expects: null = start[0] + end[0].
        scores = self.span_scores(self.dropout(hidden)).float().masked_fill(~candidate_mask[..., None],
                                                                              MASKED_LOGIT)
        return {"start_logits": scores[..., 0], "end_logits": scores[..., 1]}


class ConditionalHead(nn.Module):
    """Start, end-given-start and answerability (GluonNLP ModelForQAConditionalV1)."""

    def __init__(self, hidden_size: int, dropout: float, init_std: float, layer_norm_eps: float):
        super().__init__()
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


# ---------------------------------------------------------------------------------------- model
class QAModel(nn.Module):
    """A pretrained encoder (``self.backbone``) with a span-extraction head (``self.head``).

    ``forward`` (training; what DDP/compile wrap) takes labels and returns the per-window
    loss; ``predict`` (evaluation, no grad) returns the head's inference scores.
    """

    def __init__(self, backbone: nn.Module, head: str = "conditional", dropout: float = 0.1):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown --head {head!r}; choose one of {', '.join(HEADS)}")
        config = backbone.config
        self.backbone = backbone
        self.family: str = config.model_type
        self.head_type: str = head
        self.uses_token_types: bool = _accepts_token_types(backbone)
        _use_fast_dropout(backbone)
        self.cpu_training_attention: bool = _CPU_ATTENTION_REGISTERED
        init_std = getattr(config, "initializer_range", 0.02)
        if head == "basic":
            self.head = BasicHead(config.hidden_size, dropout, init_std)
        else:
            self.head = ConditionalHead(config.hidden_size, dropout, init_std,
                                        getattr(config, "layer_norm_eps", 1e-12))

    @property
    def num_layers(self) -> int:
        """Independently parameterised encoder layers (ALBERT: layer groups, since its layers share weights)."""
        config = self.backbone.config
        return config.num_hidden_groups if self.family == "albert" else config.num_hidden_layers

    def backbone_layer_index(self, param_name: str) -> int | None:
        """Layer of a parameter named as in ``self.named_parameters()``.

        EMBEDDINGS_LAYER (-1) for embeddings, 0..num_layers-1 for encoder layers, None
        outside the backbone (the head); a backbone name no rule covers raises ValueError.
        """
        if not param_name.startswith("backbone."):
            return None
        return layer_index_from_name(self.family, param_name[len("backbone."):])

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Last hidden states (B, L, H)."""
        kwargs = {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}
        if self.uses_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.long()
        attention = contextlib.nullcontext()
        if self._trains_on_cpu(input_ids):
            attention = _attention_implementation(self.backbone.config, CPU_TRAINING_ATTENTION)
        with attention:
            return self.backbone(**kwargs).last_hidden_state

    def _trains_on_cpu(self, input_ids: torch.Tensor) -> bool:
        """Training on the CPU with SDPA attention: the case cpu_training_attention speeds up."""
        return (self.training and self.cpu_training_attention and input_ids.device.type == "cpu"
                and self.backbone.config._attn_implementation == "sdpa")

    def forward(self, input_ids, attention_mask, token_type_ids=None, candidate_mask=None,
                start_positions=None, end_positions=None, is_impossible=None) -> dict:
        """Training: {"loss": (B,) float32 per-window loss}; the caller averages over the global batch.

        Windows marked ``is_impossible`` are labelled with CLS (index 0) for start and end.
        ``candidate_mask`` (True for CLS and context tokens) defaults to ``attention_mask``.
        """
        if start_positions is None or end_positions is None:
            raise ValueError("QAModel.forward needs start_positions and end_positions; use predict() "
                             "for inference")
        if self.head_type == "conditional" and is_impossible is None:
            raise ValueError("the conditional head needs is_impossible labels")
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        mask = _candidates(candidate_mask, attention_mask)
        starts, ends = start_positions.long(), end_positions.long()
        if is_impossible is not None:
            impossible = is_impossible.bool()
            starts, ends = starts.masked_fill(impossible, 0), ends.masked_fill(impossible, 0)
        else:
            impossible = torch.zeros_like(starts, dtype=torch.bool)
        return {"loss": self.head.loss(hidden, mask, starts, ends, impossible)}

    @torch.no_grad()
    def predict(self, input_ids, attention_mask, token_type_ids=None, candidate_mask=None, *,
                start_top_n: int = 5, end_top_n: int = 5) -> dict:
        """Inference scores (float32; indices int64). Call ``model.eval()`` first (dropout).

        basic:       {"start_logits" (B, L), "end_logits" (B, L)}; non-candidates = MASKED_LOGIT
        conditional: {"start_top_index" (B, K), "start_top_logit" (B, K) = log p(start),
                      "end_top_index" (B, K, K'), "end_top_logit" (B, K, K') = log p(end|start) + log p(answerable),
                      "null_score" (B,) = log p(unanswerable)}, K = start_top_n, K' = end_top_n; rows with
                      fewer candidates than K are padded with (index 0, MASKED_LOGIT).
        """
        # float32 for the head: a backbone cast to bfloat16 (inference_model) returns bfloat16 states.
        hidden = self.encode(input_ids, attention_mask, token_type_ids).float()
        mask = _candidates(candidate_mask, attention_mask)
        return self.head.predict(hidden, mask, start_top_n, end_top_n)


def _candidates(candidate_mask, attention_mask) -> torch.Tensor:
    mask = candidate_mask if candidate_mask is not None else attention_mask
    return mask.bool()


def build_qa_model(source: ModelFolder, head: str = "conditional", dropout: float = 0.1,
                   backbone_path: str | Path | None = None) -> QAModel:
    """Pretrained backbone of ``source`` (optionally overwritten by ``backbone_path``) + a fresh QA head."""
    backbone = load_backbone(source)
    if backbone_path:
        load_backbone_weights(backbone, Path(backbone_path))
    return QAModel(backbone, head=head, dropout=dropout)


# ---------------------------------------------------------------------------------------- inference
def inference_model(model: QAModel, dtype: str) -> tuple[QAModel, str]:
    """The model to evaluate with ``--dtype``, and the autocast dtype to run it under.

    int8: a dynamically quantized CPU copy, no autocast. bfloat16 on the CPU: a copy whose
    backbone weights *are* bfloat16, no autocast; autocast would re-cast every activation between
    its float32 and bfloat16 op lists (LayerNorm, GELU, residual adds), which cost 12-20 % of the
    evaluation time here. The head stays float32 (predict() casts the hidden states up). Elsewhere
    (float32; float16 and bfloat16 on a GPU): ``model`` itself under autocast.
    """
    if dtype == "int8":
        return quantize_dynamic_int8(model), "float32"
    if dtype == "bfloat16" and next(model.parameters()).device.type == "cpu":
        low = copy.deepcopy(model).eval()
        low.backbone.to(torch.bfloat16)
        return low, "float32"
    return model, dtype


# ---------------------------------------------------------------------------------------- int8
def quantize_dynamic_int8(model: QAModel) -> QAModel:
    """A CPU copy of ``model`` whose backbone Linear layers use dynamic int8 quantization (evaluation only).

    The head stays float32: it is tiny, and the conditional head slices its Dense
    weight (a quantized Linear has no plain weight tensor).
    """
    quantized = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated (moving to torchao) but it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:  # gone in some future torch: torchao's quantize_ replaces it
            raise RuntimeError("--dtype int8 needs torch.ao.quantization.quantize_dynamic, which this torch "
                               "lacks; evaluate in float32 or bfloat16") from exc
        quantized.backbone = quantize_dynamic(quantized.backbone, {nn.Linear}, dtype=torch.qint8)
    return quantized
