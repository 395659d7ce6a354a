"""MobileBERT in Gluon, block for block Hugging Face's ``MobileBertModel`` (GluonNLP 0.10 has none).

Child blocks carry HF's module names (``encoder.layer.3.bottleneck.attention.dense``), so
the Gluon structural parameter names *are* the HF names and conversion is the identity.

Supported: ``use_bottleneck=True`` with ``normalization_type="no_norm"`` (NoNorm:
x * weight + bias), with or without ``trigram_input``, and either
``key_query_shared_bottleneck`` (released) or ``use_bottleneck_attention``;
``convert.encoder_config_from_hf`` refuses the other combinations. Dropout sits
exactly where HF's does for ``use_bottleneck=True``: attention probabilities, the
embeddings, and the output bottleneck.

Inputs must be right-padded: attention excludes keys past each window's valid length.
"""
from __future__ import annotations

import math

from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.encoders import EncoderConfig, key_padding_mask

mx, _ = import_mxnet()
from mxnet.gluon import HybridBlock, nn  # noqa: E402
from gluonnlp.model.block import GELU  # noqa: E402

__all__ = ["MobileBertEncoder", "NoNorm"]


def _activation(name: str) -> HybridBlock:
    """A Gluon activation block from an ``encoders.ACTIVATIONS`` value."""
    if name == "gelu":
        return GELU()
    if name == "approx_gelu":
        return GELU(approximate=True)
    return nn.Activation(name)


def _dense(units: int, in_units: int) -> nn.Dense:
    return nn.Dense(units, flatten=False, in_units=in_units)


class NoNorm(HybridBlock):
    """MobileBERT's element-wise affine map in place of LayerNorm: x * weight + bias."""

    def __init__(self, size: int, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(size,), init="ones")
            self.bias = self.params.get("bias", shape=(size,), init="zeros")

    def hybrid_forward(self, F, x, weight, bias):  # pylint: disable=arguments-differ
        return F.broadcast_add(F.broadcast_mul(x, weight), bias)


class DenseNorm(HybridBlock):
    """Dense then NoNorm, optionally with dropout and a residual in between (HF's dense + LayerNorm pairs)."""

    def __init__(self, units: int, in_units: int, dropout: float = 0.0, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.dense = _dense(units, in_units)
            self.LayerNorm = NoNorm(units)  # pylint: disable=invalid-name  (HF's name)
            self.dropout = nn.Dropout(dropout) if dropout else None

    def hybrid_forward(self, F, x, residual=None):  # pylint: disable=arguments-differ
        out = self.dense(x)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.LayerNorm(out if residual is None else out + residual)


class MobileEmbeddings(HybridBlock):
    """word (embedding_size) -> trigram concat -> Dense to hidden; + position + token type; NoNorm; dropout."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._trigram = config.trigram_input
        hidden, size = config.hidden_size, config.embedding_size
        with self.name_scope():
            self.word_embeddings = nn.Embedding(config.vocab_size, size)
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
            in_units = 3 * size if self._trigram else size
            self.embedding_transformation = (_dense(hidden, in_units) if self._trigram or size != hidden else None)
            self.LayerNorm = NoNorm(hidden)  # pylint: disable=invalid-name
            self.dropout = nn.Dropout(config.hidden_dropout)

    def hybrid_forward(self, F, input_ids, token_types):  # pylint: disable=arguments-differ
        words = self.word_embeddings(input_ids)
        if self._trigram:
            # [next token's embedding, this token's, previous token's], zeros beyond the ends (HF's order).
            zeros = F.zeros_like(F.slice_axis(words, axis=1, begin=0, end=1))
            following = F.concat(F.slice_axis(words, axis=1, begin=1, end=None), zeros, dim=1)
            preceding = F.concat(zeros, F.slice_axis(words, axis=1, begin=0, end=-1), dim=1)
            words = F.concat(following, words, preceding, dim=2)
        if self.embedding_transformation is not None:
            words = self.embedding_transformation(words)
        positions = F.contrib.arange_like(input_ids, axis=1)
        embedded = F.broadcast_add(words, F.expand_dims(self.position_embeddings(positions), axis=0))
        embedded = embedded + self.token_type_embeddings(token_types)
        return self.dropout(self.LayerNorm(embedded))


class SelfAttention(HybridBlock):
    """Multi-head attention with separate query/key/value inputs (MobileBERT feeds them different tensors)."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._heads = config.num_heads
        self._scale = 1.0 / math.sqrt(config.true_hidden_size // config.num_heads)
        value_in = config.true_hidden_size if config.use_bottleneck_attention else config.hidden_size
        with self.name_scope():
            self.query = _dense(config.true_hidden_size, config.true_hidden_size)
            self.key = _dense(config.true_hidden_size, config.true_hidden_size)
            self.value = _dense(config.true_hidden_size, value_in)
            self.dropout = nn.Dropout(config.attention_dropout)

    def _split_heads(self, F, x):
        """(B, L, A) -> (B * heads, L, A / heads)."""
        x = F.transpose(F.reshape(x, shape=(0, 0, self._heads, -1)), axes=(0, 2, 1, 3))
        return F.reshape(x, shape=(-1, 0, 0), reverse=True)

    def hybrid_forward(self, F, query, key, value, valid_length):  # pylint: disable=arguments-differ
        q, k, v = (self._split_heads(F, block(x)) for block, x in
                   ((self.query, query), (self.key, key), (self.value, value)))
        scores = F.batch_dot(q, k, transpose_b=True) * self._scale                  # (B*h, L, L)
        key_mask = key_padding_mask(F, valid_length, F.contrib.arange_like(query, axis=1), self._heads)
        probs = self.dropout(F.softmax(scores + key_mask, axis=-1))
        context = F.reshape(F.batch_dot(probs, v), shape=(-4, -1, self._heads, 0, 0))  # (B, h, L, d)
        return F.reshape(F.transpose(context, axes=(0, 2, 1, 3)), shape=(0, 0, -1))


class Attention(HybridBlock):
    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.self = SelfAttention(config)   # HF's module name  pylint: disable=attribute-defined-outside-init
            self.output = DenseNorm(config.true_hidden_size, config.true_hidden_size)

    def hybrid_forward(self, F, query, key, value, layer_input, valid_length):  # pylint: disable=arguments-differ
        return self.output(self.self(query, key, value, valid_length), layer_input)


class Intermediate(HybridBlock):
    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.dense = _dense(config.intermediate_size, config.true_hidden_size)
            self.activation = _activation(config.activation)

    def hybrid_forward(self, F, x):  # pylint: disable=arguments-differ
        return self.activation(self.dense(x))


class FFNLayer(HybridBlock):
    """One of the extra feed-forward networks: NoNorm(Dense(act(Dense(x))) + x)."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.intermediate = Intermediate(config)
            self.output = DenseNorm(config.true_hidden_size, config.intermediate_size)

    def hybrid_forward(self, F, x):  # pylint: disable=arguments-differ
        return self.output(self.intermediate(x), x)


class Output(HybridBlock):
    """Dense -> NoNorm(+ attention output) -> bottleneck Dense to hidden -> dropout -> NoNorm(+ layer input)."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.dense = _dense(config.true_hidden_size, config.intermediate_size)
            self.LayerNorm = NoNorm(config.true_hidden_size)  # pylint: disable=invalid-name
            self.bottleneck = DenseNorm(config.hidden_size, config.true_hidden_size, dropout=config.hidden_dropout)

    def hybrid_forward(self, F, intermediate, attention_output, layer_input):  # pylint: disable=arguments-differ
        return self.bottleneck(self.LayerNorm(self.dense(intermediate) + attention_output), layer_input)


class Bottleneck(HybridBlock):
    """The layer's narrow input and, with a shared key/query bottleneck, the attention's query/key input."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        # convert refuses the third HF setting (neither switch): HF's own model cannot run it, its
        # query/key layers would receive the full hidden size.
        self._shared = not config.use_bottleneck_attention
        with self.name_scope():
            self.input = DenseNorm(config.intra_bottleneck_size, config.hidden_size)
            self.attention = DenseNorm(config.intra_bottleneck_size, config.hidden_size) if self._shared else None

    def hybrid_forward(self, F, hidden):  # pylint: disable=arguments-differ
        """-> (query, key, value, layer_input)."""
        narrow = self.input(hidden)
        if not self._shared:                      # use_bottleneck_attention: everything goes narrow
            return narrow, narrow, narrow, narrow
        shared = self.attention(hidden)           # key_query_shared_bottleneck: value sees the full width
        return shared, shared, hidden, narrow


class Layer(HybridBlock):
    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.bottleneck = Bottleneck(config)
            self.attention = Attention(config)
            self.ffn = nn.HybridSequential()
            for _ in range(config.num_feedforward_networks - 1):
                self.ffn.add(FFNLayer(config))
            self.intermediate = Intermediate(config)
            self.output = Output(config)

    def hybrid_forward(self, F, hidden, valid_length):  # pylint: disable=arguments-differ
        query, key, value, layer_input = self.bottleneck(hidden)
        attention_output = self.attention(query, key, value, layer_input, valid_length)
        for ffn in self.ffn:
            attention_output = ffn(attention_output)
        return self.output(self.intermediate(attention_output), attention_output, hidden)


class Layers(HybridBlock):
    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.layer = nn.HybridSequential()
            for _ in range(config.num_layers):
                self.layer.add(Layer(config))

    def hybrid_forward(self, F, hidden, valid_length):  # pylint: disable=arguments-differ
        for layer in self.layer:
            hidden = layer(hidden, valid_length)
        return hidden


class MobileBertEncoder(HybridBlock):
    """``(input_ids, token_types, valid_length) -> last hidden states``, as ``encoders.GluonEncoder``."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.config = config
        with self.name_scope():
            self.embeddings = MobileEmbeddings(config)
            self.encoder = Layers(config)

    def hybrid_forward(self, F, input_ids, token_types, valid_length):  # pylint: disable=arguments-differ
        return self.encoder(self.embeddings(input_ids, token_types), valid_length)

    def finish_initialization(self, ctx) -> None:
        """Nothing is deferred here (every layer has explicit input sizes); kept for GluonEncoder's interface."""
        del ctx
