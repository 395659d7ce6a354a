"""The model-family table: every fact about an encoder family, in one place.

A *family* is what a checkpoint's ``config.json`` calls its ``model_type`` (``bert``,
``electra``, ...). Everything that differs between families reads this table:

* the input template (``input_style``) the family was pretrained with (``bert``: ``[CLS] q [SEP] c [SEP]`` with
  token types; ``roberta``: ``<s> q </s></s> c </s>``), read by the feature builder;
* the parameter-name rules that place a backbone parameter in a layer, read by layer-wise
  LR decay and ``--untunable_depth`` (``bench.run.training_rules``);
* the ``config.json`` key that counts independently parameterised layers (ALBERT: layer groups);
* whether transformers' model class supports scaled-dot-product attention;
* whether positions are numbered after the padding index (how long a window may be);
* which Linear layers are the feed-forward blocks' output projections (``ffn_output_pattern``),
  kept in float32 by ``--dtype int8``;
* which ``config.json`` keys hold the backbone's dropout rates (``dropout_keys``), set by ``--backbone_dropout``;
* the name reports print;
* for each backend, the module that builds the family's encoder there. A backend without an
  entry refuses the family with a message naming the backends that have one.

Adding a family is one ``register_family`` call (an entry here, or in a plugin) plus one module
per backend that should run it; see docs/architecture.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from bench.core.errors import BenchError
from bench.core.registry import Registry, backend_implementation

__all__ = ["ModelFamily", "FAMILIES", "REGISTRY", "UnknownFamilyError", "get_family", "register_family", "EMBEDDINGS_LAYER"]

# Layer index of the embedding parameters: below layer 0.
EMBEDDINGS_LAYER = -1

# The torch backend loads every Hugging Face family through transformers' AutoModel classes.
_HF_TORCH = "bench.backends.torch.hf_backbone"
_GLUON = "bench.backends.mxnet.encoders"


class UnknownFamilyError(BenchError, ValueError):
    """A model type no family entry describes (the message lists the known ones)."""


@dataclass(frozen=True)
class ModelFamily:
    """One encoder family: see the module docstring for what reads each field."""
    name: str                                  # config.json model_type
    display_name: str                          # "ELECTRA"
    input_style: str                           # "bert" or "roberta": the feature template (FeatureParams)
    embedding_prefixes: tuple[str, ...]        # backbone parameter names below layer 0
    layer_pattern: str                         # regex; group 1 is the layer index
    backends: Mapping[str, str] = field(default_factory=dict)   # backend -> module building the encoder
    num_layers_key: str = "num_hidden_layers"  # config.json key counting parameterised layers
    sdpa: bool = True                          # transformers' class supports SDPA attention
    # Positions are numbered from pad_token_id + 1 (RoBERTa's make_positions), so
    # max_position_embeddings - pad_token_id - 1 tokens fit a window (RoBERTa: 514 -> 512).
    positions_after_padding: bool = False
    # Why layer-wise rules (--layerwise_decay, --untunable_depth) do not apply, for a family without a
    # stack of layers (the recurrent baselines); "" for the layered families. With a reason, every
    # non-embedding parameter is "layer 0" of a one-layer model and the flags are refused naming it.
    no_layers: str = ""
    # Regex (re.search) over the backbone's module names (transformers' names) matching the Linear that reads
    # the feed-forward activation (BERT's ``encoder.layer.N.output.dense``). Its input has the activation's
    # outliers, which per-tensor int8 activations lose, so --dtype int8 keeps it float32 (docs/speed.md).
    ffn_output_pattern: str = r"(^|\.)layer\.\d+\.output\.dense$"
    # Trained from scratch on word input: no pretrained checkpoint; the run script builds the model
    # folder (vocabulary, tokenizer, initial embeddings) from the training data (bench.run.word_model).
    from_scratch: bool = False
    # config.json keys of the backbone's dropout rates (hidden states, attention probabilities), which
    # --backbone_dropout replaces; () where the family has none (the recurrent baselines: --rnn_dropout).
    dropout_keys: tuple[str, ...] = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    def __post_init__(self):
        object.__setattr__(self, "backends", dict(self.backends))

    def layer_index(self, backbone_param_name: str) -> int:
        """Layer of a backbone parameter (name relative to the backbone): EMBEDDINGS_LAYER or 0..L-1.

        A name no rule covers is an error, so a renamed module cannot silently escape
        layer-wise decay or freezing.
        """
        if backbone_param_name.startswith(self.embedding_prefixes):
            return EMBEDDINGS_LAYER
        if self.no_layers:
            return 0
        match = re.match(self.layer_pattern, backbone_param_name)
        if match is None:
            raise ValueError(f"{self.name} backbone parameter {backbone_param_name!r} matches no layer rule "
                             f"(embeddings: {', '.join(self.embedding_prefixes)}; layers: {self.layer_pattern})")
        return int(match.group(1))

    def num_layers(self, hf_config) -> int:
        """Independently parameterised encoder layers, from config.json (a mapping or a transformers config)."""
        if self.no_layers:
            return 1
        if isinstance(hf_config, Mapping):
            return int(hf_config[self.num_layers_key])
        return int(getattr(hf_config, self.num_layers_key))

    def refuse_layer_rules(self, layerwise_decay: float, untunable_depth: float) -> None:
        """A family without layers refuses --layerwise_decay and --untunable_depth, saying why."""
        from bench.core.flags import ConfigError

        for flag, on in (("layerwise_decay", 0.0 < layerwise_decay < 1.0), ("untunable_depth", untunable_depth >= 0)):
            if self.no_layers and on:
                raise ConfigError(f"--{flag} does not apply to {self.display_name} ({self.name}): {self.no_layers}")

    def dropout_overrides(self, backbone_dropout: float | None) -> dict[str, float]:
        """The config.json values --backbone_dropout replaces: {} without the flag; refused where the family
        has no such keys."""
        from bench.core.flags import ConfigError

        if backbone_dropout is None:
            return {}
        if not self.dropout_keys:
            raise ConfigError(f"--backbone_dropout does not apply to {self.display_name} ({self.name}): it has no "
                              f"pretrained backbone config; its dropout is --rnn_dropout")
        return {key: backbone_dropout for key in self.dropout_keys}

    def backend_module(self, backend: str) -> str:
        """The module that builds this family's encoder on ``backend``; a clear error if there is none."""
        return backend_implementation(self, backend, f"model type {self.name!r} ({self.display_name})",
                                      UnknownFamilyError)


REGISTRY: Registry[ModelFamily] = Registry("model type", UnknownFamilyError)
FAMILIES: Mapping[str, ModelFamily] = REGISTRY.entries
register_family, get_family = REGISTRY.register, REGISTRY.get


_LAYER = r"encoder\.layer\.(\d+)\."
for _family in (
    ModelFamily("bert", "BERT", "bert", ("embeddings.",), _LAYER, {"torch": _HF_TORCH, "mxnet": _GLUON}),
    ModelFamily("roberta", "RoBERTa", "roberta", ("embeddings.",), _LAYER, {"torch": _HF_TORCH, "mxnet": _GLUON},
                positions_after_padding=True),
    ModelFamily("electra", "ELECTRA", "bert", ("embeddings.", "embeddings_project."), _LAYER,
                {"torch": _HF_TORCH, "mxnet": _GLUON}),
    # ALBERT shares one layer group's weights across its depth: its "layers" are the groups.
    ModelFamily("albert", "ALBERT", "bert", ("embeddings.", "encoder.embedding_hidden_mapping_in."),
                r"encoder\.albert_layer_groups\.(\d+)\.", {"torch": _HF_TORCH, "mxnet": _GLUON},
                num_layers_key="num_hidden_groups", ffn_output_pattern=r"\.ffn_output$"),
    ModelFamily("distilbert", "DistilBERT", "bert", ("embeddings.",), r"transformer\.layer\.(\d+)\.",
                {"torch": _HF_TORCH, "mxnet": _GLUON}, num_layers_key="n_layers", ffn_output_pattern=r"\.ffn\.lin2$",
                dropout_keys=("dropout", "attention_dropout")),
    ModelFamily("mobilebert", "MobileBERT", "bert", ("embeddings.",), _LAYER,
                {"torch": _HF_TORCH, "mxnet": "bench.backends.mxnet.mobilebert"},
                ffn_output_pattern=r"(^|\.)layer\.\d+\.(ffn\.\d+\.)?output\.dense$"),
):
    register_family(_family)

# The recurrent baselines (docs/recurrent-baselines.md): word embeddings + BiLSTMs, trained from scratch.
_RECURRENT_TORCH = "bench.backends.torch.recurrent"
_NO_LAYERS = ("its encoder is a few recurrent blocks of different kinds, not a stack of like layers, so "
              "layer-wise decay and freezing the lowest layers have no meaning; freeze the word vectors with "
              "--word_vectors (frozen unless --train_word_vectors)")
for _family in (
    ModelFamily("lstm_baseline", "LSTM baseline", "bert", ("embeddings.",), r"(?!)", {"torch": _RECURRENT_TORCH},
                sdpa=False, no_layers=_NO_LAYERS, from_scratch=True, dropout_keys=()),
    ModelFamily("bidaf", "BiDAF", "bert", ("embeddings.",), r"(?!)", {"torch": _RECURRENT_TORCH},
                sdpa=False, no_layers=_NO_LAYERS, from_scratch=True, dropout_keys=()),
):
    register_family(_family)
