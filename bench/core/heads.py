"""The QA-head registry: what each head outputs and how its outputs become answers.

A head turns the encoder's last hidden states into span scores. Each entry says, framework-free:

* ``outputs``: the arrays its evaluation forward pass returns per window, with their shapes
  (in symbols: ``n`` windows, ``width`` positions, ``start_top_n``/``end_top_n`` candidates), dtypes
  and the fill value of a row or column no window reaches;
* ``postprocess_input``: which form of post-processing reads them (``logits``: per-position start
  and end scores, searched for the best spans; ``topk``: the head's own start/end candidates and
  a null score, scored as they are);
* ``losses``: the ``--loss`` values it can train with (see ``bench.core.losses``);
* ``needs_is_impossible``: whether training needs the answerability labels;
* ``needs_valid_length``: whether the head reads each window's valid (unpadded) length, passed as
  the keyword ``valid_length`` (torch: (B,) int64) or a last positional input (MXNet: (B,) float32);
* ``backends``: per backend, the ``module:Class`` that implements it there.

The evaluation loop allocates outputs from ``outputs``, the scorer picks its candidate
extraction from ``postprocess_input``: nothing else branches on a head's name. Adding a head is
one ``register_head`` call plus one class per backend (docs/architecture.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from bench.core.errors import BenchError
from bench.core.registry import Registry, backend_implementation

__all__ = ["OutputSpec", "HeadSpec", "HEADS", "REGISTRY", "UnknownHeadError", "get_head", "register_head", "allocate_outputs",
           "PAD_LOGIT", "POSTPROCESS_INPUTS", "POSITION_LOSSES", "BILSTM_LAYERS", "BILSTM_LAYER_DROPOUT"]

# Large negative but finite in float16: the score of a position outside a window.
PAD_LOGIT = -1e4
POSTPROCESS_INPUTS = ("logits", "topk")
# The losses of a head that scores start and end positions independently (bench.core.losses).
POSITION_LOSSES = ("ce", "focal", "label_smoothing")
# The bilstm head's recurrent layers and the dropout between them (read when a head is built, so a test
# can switch it off by setting this attribute; --classifier_dropout is the head's other dropout).
BILSTM_LAYERS = 2
BILSTM_LAYER_DROPOUT = 0.2


class UnknownHeadError(BenchError, ValueError):
    """A --head no entry describes (the message lists the known heads)."""


@dataclass(frozen=True)
class OutputSpec:
    shape: tuple[str, ...]      # symbols: n, width, start_top_n, end_top_n
    dtype: str                  # numpy dtype name
    fill: float = 0.0           # value where no window wrote (padding columns, unused rows)


@dataclass(frozen=True)
class HeadSpec:
    name: str
    description: str
    outputs: Mapping[str, OutputSpec]
    postprocess_input: str                          # one of POSTPROCESS_INPUTS
    backends: Mapping[str, str] = field(default_factory=dict)   # backend -> "module:Class"
    losses: tuple[str, ...] = ("ce",)
    needs_is_impossible: bool = False
    needs_valid_length: bool = False

    def __post_init__(self):
        if self.postprocess_input not in POSTPROCESS_INPUTS:
            raise ValueError(f"head {self.name}: postprocess_input must be one of {POSTPROCESS_INPUTS}")
        object.__setattr__(self, "outputs", dict(self.outputs))
        object.__setattr__(self, "backends", dict(self.backends))

    def implementation(self, backend: str) -> str:
        """``module:Class`` of this head on ``backend``; a clear error when it has none there."""
        return backend_implementation(self, backend, f"--head {self.name}", UnknownHeadError)


REGISTRY: Registry[HeadSpec] = Registry("--head", UnknownHeadError)
HEADS: Mapping[str, HeadSpec] = REGISTRY.entries
register_head, get_head = REGISTRY.register, REGISTRY.get


def allocate_outputs(head: str, n: int, width: int, start_top_n: int, end_top_n: int) -> dict[str, np.ndarray]:
    """Empty output arrays for ``n`` windows in the head's format (what the scorer reads)."""
    sizes = {"n": n, "width": width, "start_top_n": start_top_n, "end_top_n": end_top_n}
    return {name: np.full(tuple(sizes[s] for s in out.shape), out.fill, out.dtype)
            for name, out in get_head(head).outputs.items()}


_LOGITS = {"start_logits": OutputSpec(("n", "width"), "float32", PAD_LOGIT),
           "end_logits": OutputSpec(("n", "width"), "float32", PAD_LOGIT)}
_TOPK = {"start_top_index": OutputSpec(("n", "start_top_n"), "int64"),
         "start_top_logit": OutputSpec(("n", "start_top_n"), "float32"),
         "end_top_index": OutputSpec(("n", "start_top_n", "end_top_n"), "int64"),
         "end_top_logit": OutputSpec(("n", "start_top_n", "end_top_n"), "float32"),
         "null_score": OutputSpec(("n",), "float32")}

register_head(HeadSpec(
    "conditional", "GluonNLP's ModelForQAConditionalV1: start, end given start, answerability",
    _TOPK, "topk", {"torch": "bench.backends.torch.heads:ConditionalHead",
                    "mxnet": "bench.backends.mxnet.heads:ConditionalHead"},
    needs_is_impossible=True))
register_head(HeadSpec(
    "basic", "BERT's SQuAD head: independent start and end scores, CLS as the null answer",
    _LOGITS, "logits", {"torch": "bench.backends.torch.heads:BasicHead",
                        "mxnet": "bench.backends.mxnet.heads:BasicHead"},
    losses=POSITION_LOSSES))
register_head(HeadSpec(
    "bilstm", "a 2-layer bidirectional LSTM over the encoder's states, then independent start and end scores "
    "(Linear(2H, 2)), CLS as the null answer",
    _LOGITS, "logits", {"torch": "bench.backends.torch.heads:BiLSTMHead",
                        "mxnet": "bench.backends.mxnet.heads:BiLSTMHead"},
    losses=POSITION_LOSSES, needs_valid_length=True))
