"""Gluon encoders equal, operation for operation, to the Hugging Face BERT-family encoders.

What is reused from GluonNLP 0.10 and what is not:

* The transformer layer is GluonNLP's ``BERTEncoderCell``: fused-QKV self-attention
  (scores scaled by 1/sqrt(head size); padded keys excluded by ``MaskedSelfAttentionCell``,
  see there) -> output Dense -> dropout -> residual -> LayerNorm -> position-wise FFN
  (Dense -> activation -> Dense -> dropout -> residual -> LayerNorm). That is
  HF's ``BertLayer`` exactly, given the right activation: GluonNLP's ``'gelu'`` is
  MXNet's ``LeakyReLU(act_type='gelu')``, measured equal to the erf GELU (HF
  ``"gelu"``) to 7e-7; ``'approx_gelu'`` is the tanh form (HF ``"gelu_new"``, used by
  ALBERT). The LayerNorm epsilon is passed through from the HF config (1e-12 for
  BERT/ELECTRA/ALBERT, 1e-5 for RoBERTa).
* The embeddings are written here (``Embeddings``), because GluonNLP's
  ``BERTEncoder`` differs from HF in three ways: it applies dropout *before* the
  embedding LayerNorm (HF: after), it always numbers positions from 0 (RoBERTa
  numbers them from ``padding_idx + 1``), and it has no factorised embedding
  (ELECTRA-small and ALBERT embed in a smaller size, LayerNorm there, then project up).
* ``TransformerStack`` runs the cells in HF's (batch, length, units) layout and, for
  ALBERT, reuses each layer group's single cell across the depth, as HF shares weights.

On the CPU, training graphs run two operators of ours (``cpu_kernels``, ``use_training_kernels``): the
attention's masked softmax + dropout, and LayerNorm; evaluation graphs keep MXNet's.

Attention uses only a valid length per window, so inputs must be right-padded (as
``bench.core.features.batch_arrays`` pads them); outputs at padded positions are finite
but meaningless, as in HF.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from bench.backends.mxnet.compat import import_mxnet

mx, nlp = import_mxnet()
from mxnet.gluon import HybridBlock, nn  # noqa: E402  (mxnet must be imported through compat first)
from gluonnlp.model.bert import BERTEncoderCell, DotProductSelfAttentionCell  # noqa: E402

__all__ = ["EncoderConfig", "Embeddings", "TransformerStack", "GluonEncoder", "MaskedSelfAttentionCell",
           "key_padding_mask", "ACTIVATIONS", "ModeTracedGraphs", "KernelLayerNorm", "kernel_layer_norm",
           "use_training_kernels"]

# Added to the attention score of a padded key: its softmax weight is exactly 0 in float32
# (and -inf, still 0, where float16 holds it), as with the softmax ``length`` argument.
PADDED_KEY_SCORE = -1e9

# Gluon activation names for HF's ``hidden_act``. HF "gelu" is the exact (erf) GELU; "gelu_new",
# "gelu_pytorch_tanh" and "gelu_fast" are all the tanh approximation, GluonNLP's 'approx_gelu'.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "approx_gelu", "gelu_pytorch_tanh": "approx_gelu",
               "gelu_fast": "approx_gelu", "relu": "relu"}


@dataclass(frozen=True)
class EncoderConfig:
    """The architecture of one BERT-family encoder, in framework-neutral terms (see ``convert``)."""
    family: str                   # bench.core.models family: bert, roberta, electra, albert, distilbert
    vocab_size: int
    hidden_size: int
    embedding_size: int           # == hidden_size unless embeddings are factorised (ELECTRA-small, ALBERT)
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int          # 0: no token-type embedding (DistilBERT); 1: a single type (RoBERTa)
    layer_norm_eps: float
    activation: str               # a Gluon name, a value of ACTIVATIONS
    hidden_dropout: float
    attention_dropout: float
    position_offset: int = 0      # first position id: RoBERTa's padding_idx + 1, else 0
    num_layer_groups: int = 0     # ALBERT: layers share the weights of this many groups; 0: no sharing
    # MobileBERT only (bench.backends.mxnet.mobilebert); HF config names.
    true_hidden_size: int = 0
    intra_bottleneck_size: int = 0
    num_feedforward_networks: int = 1
    trigram_input: bool = False
    key_query_shared_bottleneck: bool = False
    use_bottleneck_attention: bool = False

    @property
    def num_cells(self) -> int:
        """Independently parameterised layers (ALBERT: its layer groups)."""
        return self.num_layer_groups or self.num_layers

    def cell_of_layer(self, layer: int) -> int:
        """Cell that computes ``layer``: HF ALBERT's group index int(layer / (layers / groups))."""
        if not self.num_layer_groups:
            return layer
        return int(layer / (self.num_layers / self.num_layer_groups))

    def replace_dropout(self, hidden: float, attention: float) -> "EncoderConfig":
        return replace(self, hidden_dropout=hidden, attention_dropout=attention)


class Embeddings(HybridBlock):
    """word + position (+ token type) -> LayerNorm -> dropout (-> Dense projection to the hidden size).

    HF's order (LayerNorm, then dropout) and position numbering (``position_offset``);
    the projection exists when ``embedding_size != hidden_size`` (ELECTRA's
    ``embeddings_project``, ALBERT's ``embedding_hidden_mapping_in``).
    """

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._offset = config.position_offset
        # RoBERTa's single token type is added to every token, as HF does with its all-zero buffer.
        self._type_mode = ("none" if config.type_vocab_size == 0 else
                           "zeros" if config.type_vocab_size == 1 else "given")
        size = config.embedding_size
        with self.name_scope():
            self.word_embeddings = nn.Embedding(config.vocab_size, size)
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, size)
            if self._type_mode != "none":
                self.token_type_embeddings = nn.Embedding(config.type_vocab_size, size)
            self.layer_norm = kernel_layer_norm(nn.LayerNorm(epsilon=config.layer_norm_eps, in_channels=size))
            self.dropout = nn.Dropout(config.hidden_dropout)
            self.projection = (nn.Dense(config.hidden_size, flatten=False, in_units=size)
                               if size != config.hidden_size else None)

    def hybrid_forward(self, F, input_ids, token_types):  # pylint: disable=arguments-differ
        """input_ids, token_types: (B, L) float32 -> (B, L, hidden_size)."""
        positions = F.contrib.arange_like(input_ids, axis=1) + self._offset
        embedded = F.broadcast_add(self.word_embeddings(input_ids),
                                   F.expand_dims(self.position_embeddings(positions), axis=0))
        if self._type_mode == "given":
            embedded = embedded + self.token_type_embeddings(token_types)
        elif self._type_mode == "zeros":
            embedded = embedded + self.token_type_embeddings(F.zeros_like(token_types))
        else:
            # No token types (DistilBERT): a zero term keeps token_types an input of the hybridized
            # graph, so every family has one call signature and MXNet does not warn about an unused input.
            embedded = F.broadcast_add(embedded, F.expand_dims(F.zeros_like(token_types), axis=-1))
        embedded = self.dropout(self.layer_norm(embedded))
        return self.projection(embedded) if self.projection is not None else embedded


class TransformerStack(HybridBlock):
    """``num_layers`` GluonNLP BERTEncoderCells over (B, L, H) inputs; ALBERT reuses its group cells."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._cell_of_layer = [config.cell_of_layer(i) for i in range(config.num_layers)]
        self._heads = config.num_heads
        self._training_kernels = None          # use_training_kernels
        with self.name_scope():
            self.cells = nn.HybridSequential()
            for _ in range(config.num_cells):
                self.cells.add(_make_cell(config))

    def hybrid_forward(self, F, hidden, valid_length):  # pylint: disable=arguments-differ
        """hidden (B, L, H), valid_length (B,) float32 -> (B, L, H)."""
        hidden = F.transpose(hidden, axes=(1, 0, 2))            # the cells work on (L, B, H)
        # The training kernel takes the lengths themselves; MXNet's softmax the mask at the scores' shape.
        keys = valid_length if _training_kernel(self) else key_padding_mask(
            F, valid_length, F.contrib.arange_like(hidden, axis=0), self._heads)
        for cell_index in self._cell_of_layer:
            hidden, _ = self.cells[cell_index](hidden, keys)
        return F.transpose(hidden, axes=(1, 0, 2))


def key_padding_mask(F, valid_length, key_positions, heads: int):
    """(B * heads, L, L) float32, batch-major like the attention scores: 0 for a window's keys below its
    valid length, ``PADDED_KEY_SCORE`` for its padding; ``key_positions`` is any (L,) array.

    Built once per forward and shared by every layer, at the scores' full shape: the layers add it
    elementwise, whose backward is a copy, where a broadcast add's backward is a reduction (measured
    29 ms per layer at (48, 256, 256), a tenth of the step). No gradient flows into it.
    """
    padded = F.broadcast_greater_equal(F.reshape(key_positions, shape=(1, -1)), F.reshape(valid_length, shape=(-1, 1)))
    mask = F.broadcast_axis(F.expand_dims(padded * PADDED_KEY_SCORE, axis=1), axis=1, size=heads)
    mask = F.reshape(mask, shape=(-1, 1, 0), reverse=True)                               # (B * heads, 1, L)
    return F.BlockGrad(F.broadcast_like(mask, key_positions, lhs_axes=(1,), rhs_axes=(0,)))


class MaskedSelfAttentionCell(DotProductSelfAttentionCell):
    """GluonNLP's fused-QKV self-attention (same parameters, same interleaved kernels), with padded keys
    excluded by an additive mask (``key_padding_mask``) and the plain softmax.

    Why not GluonNLP's ``softmax(length=...)``: MXNet runs that through a generic kernel, measured 17x
    slower than the oneDNN softmax on one CPU thread (32 ms vs 1.9 ms on (48, 256, 256)); with the
    mask added first it is 6 ms, and it was 40% of MiniLM's forward. Equal to it to float32 rounding.

    In training graphs on the CPU (``use_training_kernels``), masked softmax and dropout are one operator
    of ours instead (``cpu_kernels``), given the windows' valid lengths in place of the mask.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._training_kernels = None          # use_training_kernels

    def hybrid_forward(self, F, qkv, keys, query_bias, key_bias, value_bias,  # pylint: disable=arguments-differ
                       query_weight, key_weight, value_weight):
        """qkv (L, B, units), keys: the key mask (B * heads, L, L), or the valid lengths (B,) under the training
        kernel -> (context (L, B, units), weights (B, heads, L, L))."""
        # The interleaved kernels want the projection laid out per head as [query; key; value] rows.
        per_head = [F.reshape(weight, shape=(self._num_heads, -1, 0), reverse=True)
                    for weight in (query_weight, key_weight, value_weight)]
        weight = F.reshape(F.concat(*per_head, dim=-2), shape=(-1, 0), reverse=True)
        bias = F.reshape(F.stack(*[F.reshape(b, shape=(self._num_heads, -1), reverse=True)
                                   for b in (query_bias, key_bias, value_bias)], axis=1), shape=(-1,))
        projected = F.FullyConnected(data=qkv, weight=weight, bias=bias, num_hidden=self.units * 3,
                                     no_bias=False, flatten=False)
        scores = F.contrib.interleaved_matmul_selfatt_qk(projected, heads=self._num_heads)   # scaled by 1/sqrt(d)
        kernels = _training_kernel(self)
        if kernels:
            weights = kernels.masked_softmax_dropout(F, scores, keys, heads=self._num_heads, p=self._dropout)
        else:
            weights = self.dropout_layer(F.softmax(scores + keys, axis=-1))
        context = F.contrib.interleaved_matmul_selfatt_valatt(projected, weights, heads=self._num_heads)
        return context, F.reshape(weights, shape=(-1, self._num_heads, 0, 0), reverse=True)


def _training_kernel(block):
    """The block's training kernels if it has them and this graph is traced for training (autograd's
    training mode: ``ModeTracedGraphs`` keeps such a graph out of evaluation), else None."""
    return block._training_kernels if block._training_kernels and mx.autograd.is_training() else None


class KernelLayerNorm(nn.LayerNorm):
    """Gluon's LayerNorm over the last axis; in training graphs on the CPU (``use_training_kernels``) our
    operator (``cpu_kernels``), whose backward is 15-20x faster than MXNet's."""

    _training_kernels = None

    def hybrid_forward(self, F, data, gamma, beta):  # pylint: disable=arguments-differ
        kernels = _training_kernel(self)
        if kernels is None:
            return super().hybrid_forward(F, data, gamma, beta)
        return kernels.layer_norm(F, data, gamma, beta, eps=self._epsilon)


def kernel_layer_norm(norm: nn.LayerNorm) -> KernelLayerNorm:
    """``norm`` (last axis) as a KernelLayerNorm with the same parameters (prefix and names unchanged)."""
    return KernelLayerNorm(epsilon=norm._epsilon, in_channels=norm.gamma.shape[0], prefix=norm.prefix,
                           params=norm.params)


def use_training_kernels(model: HybridBlock, kernels) -> None:
    """Give ``model``'s transformer stacks, attention cells and LayerNorms the CPU training kernels
    (``cpu_kernels.training_kernels()``; None: MXNet's operators), and make its top-level graphs
    follow autograd's training mode (``ModeTracedGraphs``)."""
    def visit(block):
        if isinstance(block, (TransformerStack, MaskedSelfAttentionCell, KernelLayerNorm)):
            block._training_kernels = kernels
        if isinstance(block, ModeTracedGraphs):
            block._graph_follows_mode = kernels is not None
        for child in block._children.values():
            visit(child)
    visit(model)


class ModeTracedGraphs:
    """Mixin for a HybridBlock whose graph can differ between training and evaluation (the training
    kernels are traced into training graphs only): its cached graph is dropped, and traced again, when
    it is called in the other autograd mode than the one it was traced in. Gluon traces a graph once
    and would otherwise replay it in both modes."""

    _graph_follows_mode = False
    _graph_mode = None

    def forward(self, x, *args):
        if self._graph_follows_mode and self._active and isinstance(x, mx.nd.NDArray):
            mode = mx.autograd.is_training()
            if self._graph_mode is not None and self._graph_mode != mode:
                self._clear_cached_op()
            self._graph_mode = mode
        return super().forward(x, *args)


def _make_cell(config: EncoderConfig) -> HybridBlock:
    cell = BERTEncoderCell(units=config.hidden_size, hidden_size=config.intermediate_size,
                           num_heads=config.num_heads, dropout=config.hidden_dropout,
                           activation=config.activation, layer_norm_eps=config.layer_norm_eps)
    with cell.name_scope():
        # BERTEncoderCell has one dropout rate for both; HF configs have two (attention_probs_dropout_prob).
        cell.attention_cell = MaskedSelfAttentionCell(units=config.hidden_size, num_heads=config.num_heads,
                                                      dropout=config.attention_dropout)
    cell.layer_norm = kernel_layer_norm(cell.layer_norm)
    cell.ffn.layer_norm = kernel_layer_norm(cell.ffn.layer_norm)
    return cell


class GluonEncoder(ModeTracedGraphs, HybridBlock):
    """Embeddings + transformer stack: ``(input_ids, token_types, valid_length) -> last hidden states``."""

    def __init__(self, config: EncoderConfig, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.config = config
        with self.name_scope():
            self.embeddings = Embeddings(config)
            self.encoder = TransformerStack(config)

    def hybrid_forward(self, F, input_ids, token_types, valid_length):  # pylint: disable=arguments-differ
        """(B, L), (B, L), (B,) float32 -> (B, L, hidden_size)."""
        return self.encoder(self.embeddings(input_ids, token_types), valid_length)

    def finish_initialization(self, ctx) -> None:
        """Give every parameter its shape and memory now: one forward pass over a single token.

        Why: GluonNLP's cells create Dense layers without ``in_units``, whose initialisation is
        deferred to the first forward; until then their values can be neither read nor written
        (weight conversion, checkpoints and the optimizer all need them).
        """
        one = mx.nd.zeros((1, 1), ctx=ctx)
        self(one, one, mx.nd.ones((1,), ctx=ctx))
