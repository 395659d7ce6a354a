"""The torch backend's QA model: a pretrained encoder with a registered QA head.

``build_qa_model`` asks the family table (``bench.core.families``) which module builds the
encoder (``load_backbone(source)``; every Hugging Face family: ``hf_backbone``) and the head
registry (``bench.core.heads``) which class is the head (``heads``), so adding a family or a
head touches neither this file nor any other. The model is kept in float32; the trainer adds
autocast. ``inference_model`` gives the copy to evaluate with (int8, CPU bfloat16).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from bench.backends.torch.cpu_training import (CPU_ATTENTION_REGISTERED, CPU_TRAINING_ATTENTION,
                                               attention_implementation, use_fast_dropout)
from bench.backends.torch.heads import masked_log_softmax
from bench.backends.torch.hf_backbone import load_backbone_weights, load_trained_qa_head
from bench.core.families import get_family
from bench.core.heads import get_head
from bench.run.model_source import ModelFolder, ModelSourceError, load_tokenizer, resolve_model_folder
from bench.run.registry import load_implementation

__all__ = ["ModelSourceError", "QAModel", "distillation_kl", "resolve_model_source", "load_tokenizer", "build_qa_model",
           "load_backbone", "quantize_dynamic_int8", "inference_model"]

# The backends share one resolver (bench.run.model_source); this is its name in this module's API.
resolve_model_source = resolve_model_folder


def load_backbone(source: ModelFolder, backbone_dropout: float | None = None) -> nn.Module:
    """The pretrained encoder of ``source``, built by its family's torch module; ``backbone_dropout``
    (--backbone_dropout) replaces its config.json's dropout rates."""
    family = get_family(source.family)
    load = load_implementation(family.backend_module("torch") + ":load_backbone")
    overrides = family.dropout_overrides(backbone_dropout)
    return load(source, config_overrides=overrides) if overrides else load(source)


def _accepts_token_types(backbone: nn.Module) -> bool:
    # DistilBERT has no token types; RoBERTa has a single one (type_vocab_size 1): pass them to neither.
    forward_params = inspect.signature(backbone.forward).parameters
    return "token_type_ids" in forward_params and getattr(backbone.config, "type_vocab_size", 0) > 1


# ---------------------------------------------------------------------------------------- model
class QAModel(nn.Module):
    """A pretrained encoder (``self.backbone``) with a span-extraction head (``self.head``).

    ``forward`` (training; what DDP/compile wrap) takes labels and returns the per-window
    loss; ``predict`` (evaluation, no grad) returns the head's inference scores.
    """

    def __init__(self, backbone: nn.Module, head: str = "conditional", dropout: float = 0.1, loss="ce"):
        super().__init__()
        config = backbone.config
        self.backbone = backbone
        self.family: str = config.model_type
        self.head_type: str = head
        self.head_spec = get_head(head)
        self.uses_token_types: bool = _accepts_token_types(backbone)
        use_fast_dropout(backbone)
        self.cpu_training_attention: bool = CPU_ATTENTION_REGISTERED
        self.head = load_implementation(self.head_spec.implementation("torch"))(config, dropout, loss)

    @property
    def num_layers(self) -> int:
        """Independently parameterised encoder layers (the family table says which config key counts them)."""
        return get_family(self.family).num_layers(self.backbone.config)

    def backbone_layer_index(self, param_name: str) -> int | None:
        """Layer of a parameter named as in ``self.named_parameters()``.

        EMBEDDINGS_LAYER (-1) for embeddings, 0..num_layers-1 for encoder layers, None
        outside the backbone (the head); a backbone name no rule covers raises ValueError.
        """
        if not param_name.startswith("backbone."):
            return None
        return get_family(self.family).layer_index(param_name[len("backbone."):])

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Last hidden states (B, L, H)."""
        kwargs = {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}
        if self.uses_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.long()
        attention = contextlib.nullcontext()
        if self._trains_on_cpu(input_ids):
            attention = attention_implementation(self.backbone.config, CPU_TRAINING_ATTENTION)
        with attention:
            return self.backbone(**kwargs).last_hidden_state

    def _trains_on_cpu(self, input_ids: torch.Tensor) -> bool:
        """Training on the CPU with SDPA attention: the case cpu_training_attention speeds up."""
        return (self.training and self.cpu_training_attention and input_ids.device.type == "cpu"
                and getattr(self.backbone.config, "_attn_implementation", None) == "sdpa")

    def forward(self, input_ids, attention_mask, token_type_ids=None, candidate_mask=None,
                start_positions=None, end_positions=None, is_impossible=None, teacher_start_logits=None,
                teacher_end_logits=None, distill_temperature: float = 2.0, distill_alpha: float = 0.5) -> dict:
        """Training: {"loss": (B,) float32 per-window loss}; the caller averages over the global batch.

        Windows marked ``is_impossible`` are labelled with CLS (index 0) for start and end.
        ``candidate_mask`` (True for CLS and context tokens) defaults to ``attention_mask``.
        With the teacher's logits (B, L) (--teacher_path, bench.run.distill; a head whose outputs are
        start/end logits): (1 - a) * loss + a * T^2 * (KL_start + KL_end) / 2 (``distillation_kl``).
        """
        if start_positions is None or end_positions is None:
            raise ValueError("QAModel.forward needs start_positions and end_positions; use predict() "
                             "for inference")
        if self.head_spec.needs_is_impossible and is_impossible is None:
            raise ValueError(f"the {self.head_type} head needs is_impossible labels")
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        mask = _candidates(candidate_mask, attention_mask)
        starts, ends = start_positions.long(), end_positions.long()
        if is_impossible is not None:
            impossible = is_impossible.bool()
            starts, ends = starts.masked_fill(impossible, 0), ends.masked_fill(impossible, 0)
        else:
            impossible = torch.zeros_like(starts, dtype=torch.bool)
        if teacher_start_logits is None:
            return {"loss": self.head.loss(hidden, mask, starts, ends, impossible, **self._lengths(attention_mask))}
        loss, scores = self.head.loss_and_scores(hidden, mask, starts, ends, impossible,
                                                 **self._lengths(attention_mask))
        kl = 0.5 * (distillation_kl(scores[..., 0], teacher_start_logits, mask, distill_temperature)
                    + distillation_kl(scores[..., 1], teacher_end_logits, mask, distill_temperature))
        return {"loss": (1.0 - distill_alpha) * loss + distill_alpha * distill_temperature ** 2 * kl}

    @torch.no_grad()
    def predict(self, input_ids, attention_mask, token_type_ids=None, candidate_mask=None, *,
                start_top_n: int = 5, end_top_n: int = 5) -> dict:
        """Inference scores (float32; indices int64): the arrays the head's registry entry names
        (bench.core.heads; the shapes are documented in bench.backends.torch.heads). Call
        ``model.eval()`` first (dropout)."""
        # float32 for the head: a backbone cast to bfloat16 (inference_model) returns bfloat16 states.
        hidden = self.encode(input_ids, attention_mask, token_type_ids).float()
        mask = _candidates(candidate_mask, attention_mask)
        return self.head.predict(hidden, mask, start_top_n, end_top_n, **self._lengths(attention_mask))

    def _lengths(self, attention_mask) -> dict:
        """``valid_length`` (B,) for a head whose registry entry asks for it (batches are right-padded);
        nothing for the others, whose ``loss``/``predict`` keep the five/four-argument signature."""
        return {"valid_length": attention_mask.long().sum(1)} if self.head_spec.needs_valid_length else {}


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per window (B,), over the candidate positions
    ``mask`` (B, L) only, in float32."""
    student_lp = masked_log_softmax(student.float() / temperature, mask)
    teacher_lp = masked_log_softmax(teacher.float() / temperature, mask)
    terms = teacher_lp.exp() * (teacher_lp - student_lp)
    return terms.masked_fill(~mask, 0.0).sum(-1)


def _candidates(candidate_mask, attention_mask) -> torch.Tensor:
    mask = candidate_mask if candidate_mask is not None else attention_mask
    return mask.bool()


def build_qa_model(source: ModelFolder, head: str = "conditional", dropout: float = 0.1,
                   backbone_path: str | Path | None = None, loss="ce",
                   backbone_dropout: float | None = None) -> QAModel:
    """Pretrained backbone of ``source`` (optionally overwritten by ``backbone_path``) + a fresh QA head,
    or, for a fine-tuned ``*ForQuestionAnswering`` folder and ``head="basic"``, its trained head
    (``hf_backbone.load_trained_qa_head``).

    ``loss``: a ``--loss`` name (its flags' defaults) or a ``bench.core.losses.LossSetting``
    (``loss_setting(config)``: the name with the run's flag values, e.g. ``--focal_gamma``).
    ``backbone_dropout``: --backbone_dropout (None: config.json's rates)."""
    backbone = load_backbone(source, backbone_dropout)
    if backbone_path:
        load_backbone_weights(backbone, Path(backbone_path))
    model = QAModel(backbone, head=head, dropout=dropout, loss=loss)
    load_trained_qa_head(model.head, head, source)
    return model


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
def quantize_dynamic_int8(model: QAModel, *, per_channel: bool = True, keep_ffn_output: bool = True) -> QAModel:
    """A CPU copy of ``model`` whose backbone Linear layers use dynamic int8 quantization (evaluation only):
    int8 weights with one scale per output channel, activations quantized per tensor at run time.

    Kept float32: the feed-forward output projections (the family's ``ffn_output_pattern``), whose
    input is the GELU output with its outliers (max |x| ~20-30 against a typical ~1), which one int8
    scale per tensor crushes; and the head (tiny; the conditional head slices its Dense weight, which a
    quantized Linear does not have). Measured on the float32 demo's MiniLM, XQuAD-en (1,190 questions,
    ``benchmarks/int8_layers.py``): every Linear int8, F1 -3.6 (per-tensor weight scales) and -2.6 (per
    channel); with the feed-forward outputs kept, -0.6 (per tensor) and -0.2 (per channel, this).
    ``per_channel=False`` / ``keep_ffn_output=False``: the other variants, for ``benchmarks/int8_layers.py``.
    """
    quantized = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated (moving to torchao) but it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        try:
            from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as exc:  # gone in some future torch: torchao's quantize_ replaces it
            raise RuntimeError("--dtype int8 needs torch.ao.quantization.quantize_dynamic, which this torch "
                               "lacks; evaluate in float32 or bfloat16") from exc
        ffn_output = re.compile(get_family(model.family).ffn_output_pattern if keep_ffn_output else r"(?!)")
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        layers = {name: qconfig for name, module in quantized.backbone.named_modules()
                  if isinstance(module, nn.Linear) and not ffn_output.search(name)}
        quantized.backbone = quantize_dynamic(quantized.backbone, layers, dtype=torch.qint8)
    return quantized
