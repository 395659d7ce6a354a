"""Hugging Face model folder -> Gluon encoder with the same weights, in memory, without torch.

``load_hf_encoder(folder)`` reads ``config.json`` and ``model.safetensors`` (or a
sharded ``model.safetensors.index.json``) with safetensors' numpy API, builds the
matching ``GluonEncoder`` and copies every tensor in. All tensors keep their HF
shapes (Gluon's Dense stores (out, in) like torch's Linear; RoBERTa's position
offset lives in the encoder, not in the table), so the conversion is a renaming,
and ``hf_name_map`` read backwards turns Gluon weights into HF names again.

Supported families: bert, roberta, electra (discriminator), albert (one layer per
group, as all released ALBERTs), distilbert (GluonNLP cells, ``encoders``) and
mobilebert (the released bottleneck/NoNorm architecture, ``mobilebert``). Anything
else is refused with a message naming the supported families.

There is no conversion cache on purpose: the conversion is a renaming, so reading
the safetensors file is its whole cost, and a cache file would cost the same to read.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.core.families import FAMILIES, get_family
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.encoders import ACTIVATIONS, EncoderConfig, GluonEncoder
from bench.backends.mxnet.mobilebert import MobileBertEncoder

mx, _ = import_mxnet()
from mxnet.gluon import HybridBlock  # noqa: E402

__all__ = ["SUPPORTED_FAMILIES", "ConversionError", "read_hf_config", "encoder_config_from_hf",
           "read_safetensors", "base_model_state", "hf_name_map", "convert_state", "assign_params",
           "structural_params", "make_encoder", "build_encoder", "load_hf_encoder"]

logger = logging.getLogger(__name__)

# The families the family table (bench.core.families) gives an MXNet encoder module.
SUPPORTED_FAMILIES = tuple(name for name, family in FAMILIES.items() if "mxnet" in family.backends)
# HF's base-model prefix in checkpoints saved from a task model (BertForQuestionAnswering, ...).
_BASE_PREFIXES = {"bert": "bert.", "roberta": "roberta.", "electra": "electra.", "albert": "albert.",
                  "distilbert": "distilbert.", "mobilebert": "mobilebert."}


class ConversionError(BenchError, ValueError):
    """A model folder or checkpoint that cannot become a Gluon encoder; the message says why.

    A BenchError: the folder or file is the user's to fix, so the CLI prints one line, no traceback."""


# ---------------------------------------------------------------------------------------- config
def read_hf_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: config.json is missing (expected a Hugging Face model folder)")
    return json.loads(path.read_text(encoding="utf-8"))


def _refuse_family(family: str, where: str) -> None:
    if family in SUPPORTED_FAMILIES:
        return
    raise ConversionError(f"{where}: --backend mxnet cannot build a {family or 'unknown'!r} model: it is not "
                          f"a BERT-family encoder this backend knows. "
                          f"Supported families: {', '.join(SUPPORTED_FAMILIES)} (use --backend torch for "
                          f"the others)")


def _activation(hf: dict, where: str) -> str:
    name = hf.get("hidden_act", hf.get("activation", "gelu"))
    if name not in ACTIVATIONS:
        raise ConversionError(f"{where}: activation {name!r} has no Gluon equivalent here "
                              f"(known: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def encoder_config_from_hf(hf: dict, where: str = "config.json") -> EncoderConfig:
    """The EncoderConfig of an HF ``config.json`` dict; unsupported families and options fail loudly."""
    family = hf.get("model_type", "")
    _refuse_family(family, where)
    if family == "distilbert":
        return _distilbert_config(hf, where)
    if family == "mobilebert":
        return _mobilebert_config(hf, where)
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not "
                              f"supported (only 'absolute')")
    hidden = hf["hidden_size"]
    groups = 0
    if family == "albert":
        if hf.get("inner_group_num", 1) != 1:
            raise ConversionError(f"{where}: ALBERT with inner_group_num {hf['inner_group_num']} is not "
                                  f"supported (every released ALBERT has 1)")
        groups = hf.get("num_hidden_groups", 1)
    return EncoderConfig(
        family=family, vocab_size=hf["vocab_size"], hidden_size=hidden,
        embedding_size=hf.get("embedding_size", hidden), num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), activation=_activation(hf, where),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        # RoBERTa numbers positions from padding_idx + 1 (HF create_position_ids_from_input_ids).
        position_offset=hf.get("pad_token_id", 1) + 1 if get_family(family).positions_after_padding else 0,
        num_layer_groups=groups)


def _distilbert_config(hf: dict, where: str) -> EncoderConfig:
    if hf.get("sinusoidal_pos_embds"):
        raise ConversionError(f"{where}: DistilBERT with sinusoidal_pos_embds is not supported")
    return EncoderConfig(
        family="distilbert", vocab_size=hf["vocab_size"], hidden_size=hf["dim"], embedding_size=hf["dim"],
        num_layers=hf["n_layers"], num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=0,
        layer_norm_eps=1e-12,   # hard-coded in HF's DistilBERT
        activation=_activation(hf, where), hidden_dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1))


def _mobilebert_config(hf: dict, where: str) -> EncoderConfig:
    """MobileBERT as released (bottleneck + NoNorm); other switch settings are refused, not approximated."""
    if not hf.get("use_bottleneck", True) or hf.get("normalization_type", "no_norm") != "no_norm":
        raise ConversionError(f"{where}: only MobileBERT with use_bottleneck=true and normalization_type="
                              f"'no_norm' (the released google/mobilebert-uncased architecture) is supported")
    if not (hf.get("use_bottleneck_attention", False) or hf.get("key_query_shared_bottleneck", True)):
        raise ConversionError(f"{where}: MobileBERT with neither use_bottleneck_attention nor "
                              f"key_query_shared_bottleneck cannot run (HF's query/key layers would get the full "
                              f"hidden size); the released model uses key_query_shared_bottleneck")
    return EncoderConfig(
        family="mobilebert", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        embedding_size=hf["embedding_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), activation=_activation(hf, where),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        true_hidden_size=hf.get("intra_bottleneck_size", 128),   # HF: true_hidden_size = intra_bottleneck_size
        intra_bottleneck_size=hf.get("intra_bottleneck_size", 128),
        num_feedforward_networks=hf.get("num_feedforward_networks", 4),
        trigram_input=hf.get("trigram_input", True),
        key_query_shared_bottleneck=hf.get("key_query_shared_bottleneck", True),
        use_bottleneck_attention=hf.get("use_bottleneck_attention", False))


# ---------------------------------------------------------------------------------------- weights
def read_safetensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors`` (or of the shards its index names), as numpy arrays."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    raise ConversionError(f"{folder}: no model.safetensors (--backend mxnet reads safetensors only; "
                          f"convert a pytorch_model.bin folder with transformers' save_pretrained first)")


def base_model_state(state: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    """Names as in HF's base model: task prefixes (``bert.``) and torch QAModel's ``backbone.`` removed,
    legacy LayerNorm ``gamma``/``beta`` renamed to ``weight``/``bias``."""
    prefixes = (_BASE_PREFIXES.get(family, ""), "backbone.")
    out = {}
    for name, value in state.items():
        for prefix in prefixes:
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.endswith(".gamma"):
            name = name[:-len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[:-len("beta")] + "bias"
        out[name] = value
    return out


def _bert_layer_names(layer: str) -> dict[str, str]:
    """Gluon cell name -> HF name stem for a BertLayer-style layer at HF prefix ``layer``."""
    return {"attention_cell.proj_query": f"{layer}attention.self.query",
            "attention_cell.proj_key": f"{layer}attention.self.key",
            "attention_cell.proj_value": f"{layer}attention.self.value",
            "proj": f"{layer}attention.output.dense",
            "layer_norm": f"{layer}attention.output.LayerNorm",
            "ffn.ffn_1": f"{layer}intermediate.dense",
            "ffn.ffn_2": f"{layer}output.dense",
            "ffn.layer_norm": f"{layer}output.LayerNorm"}


def _albert_layer_names(group: int) -> dict[str, str]:
    layer = f"encoder.albert_layer_groups.{group}.albert_layers.0."
    return {"attention_cell.proj_query": f"{layer}attention.query",
            "attention_cell.proj_key": f"{layer}attention.key",
            "attention_cell.proj_value": f"{layer}attention.value",
            "proj": f"{layer}attention.dense",
            "layer_norm": f"{layer}attention.LayerNorm",
            "ffn.ffn_1": f"{layer}ffn",
            "ffn.ffn_2": f"{layer}ffn_output",
            "ffn.layer_norm": f"{layer}full_layer_layer_norm"}


def _distilbert_layer_names(layer: int) -> dict[str, str]:
    stem = f"transformer.layer.{layer}."
    return {"attention_cell.proj_query": f"{stem}attention.q_lin",
            "attention_cell.proj_key": f"{stem}attention.k_lin",
            "attention_cell.proj_value": f"{stem}attention.v_lin",
            "proj": f"{stem}attention.out_lin",
            "layer_norm": f"{stem}sa_layer_norm",
            "ffn.ffn_1": f"{stem}ffn.lin1",
            "ffn.ffn_2": f"{stem}ffn.lin2",
            "ffn.layer_norm": f"{stem}output_layer_norm"}


def _cell_names(config: EncoderConfig, cell: int) -> dict[str, str]:
    if config.family == "albert":
        return _albert_layer_names(cell)
    if config.family == "distilbert":
        return _distilbert_layer_names(cell)
    return _bert_layer_names(f"encoder.layer.{cell}.")


def _embedding_names(config: EncoderConfig) -> dict[str, str]:
    names = {"embeddings.word_embeddings": "embeddings.word_embeddings",
             "embeddings.position_embeddings": "embeddings.position_embeddings",
             "embeddings.layer_norm": "embeddings.LayerNorm"}
    if config.type_vocab_size:
        names["embeddings.token_type_embeddings"] = "embeddings.token_type_embeddings"
    if config.embedding_size != config.hidden_size:
        names["embeddings.projection"] = {"electra": "embeddings_project",
                                          "albert": "encoder.embedding_hidden_mapping_in"}[config.family]
    return names


# Parameter suffixes: Gluon LayerNorm's gamma/beta are HF's weight/bias.
_LAYER_NORM_SUFFIXES = {"gamma": "weight", "beta": "bias"}
_DENSE_SUFFIXES = {"weight": "weight", "bias": "bias"}
_EMBEDDING_SUFFIXES = {"weight": "weight"}


def hf_name_map(config: EncoderConfig) -> dict[str, str]:
    """Gluon structural parameter name (``make_encoder(config)``) -> HF base-model parameter name."""
    if config.family == "mobilebert":
        # Its blocks carry HF's module names: the map is the identity (building allocates nothing).
        return {name: name for name in structural_params(MobileBertEncoder(config))}
    stems = dict(_embedding_names(config))
    for cell in range(config.num_cells):
        stems.update({f"encoder.cells.{cell}.{gluon}": hf for gluon, hf in _cell_names(config, cell).items()})
    mapping = {}
    for gluon, hf in stems.items():
        if gluon.endswith("layer_norm"):
            suffixes = _LAYER_NORM_SUFFIXES
        elif gluon.endswith("_embeddings"):
            suffixes = _EMBEDDING_SUFFIXES
        else:
            suffixes = _DENSE_SUFFIXES
        mapping.update({f"{gluon}.{g}": f"{hf}.{h}" for g, h in suffixes.items()})
    return mapping


def convert_state(config: EncoderConfig, hf_state: dict[str, np.ndarray], where: str = "checkpoint"
                  ) -> dict[str, np.ndarray]:
    """Gluon structural name -> float32 array, from an HF base-model state (see ``base_model_state``).

    Every parameter the encoder needs must be present; tensors the encoder does not use
    (pooler, pretraining heads, buffers such as ``position_ids``) are ignored.
    """
    mapping = hf_name_map(config)
    missing = sorted(hf for hf in mapping.values() if hf not in hf_state)
    if missing:
        raise ConversionError(f"{where}: {len(missing)} tensors the {config.family} encoder needs are missing, "
                              f"e.g. {', '.join(missing[:4])}")
    unused = sorted(set(hf_state) - set(mapping.values()))
    if unused:
        logger.debug("%s: ignoring %d tensors the encoder does not use, e.g. %s", where, len(unused), unused[:4])
    return {gluon: np.ascontiguousarray(hf_state[hf], dtype=np.float32) for gluon, hf in mapping.items()}


# ---------------------------------------------------------------------------------------- gluon side
def structural_params(block) -> dict:
    """Gluon parameters by structural name (``embeddings.layer_norm.gamma``), independent of the
    global name-prefix counters that Gluon's own parameter names depend on."""
    return block._collect_params_with_prefix()  # pylint: disable=protected-access


def assign_params(block, values: dict[str, np.ndarray], where: str = "checkpoint") -> None:
    """Set every parameter of ``block`` from ``values`` (structural names); names and shapes must match."""
    params = structural_params(block)
    missing = sorted(set(params) - set(values))
    unexpected = sorted(set(values) - set(params))
    wrong = sorted(name for name in set(params) & set(values) if tuple(params[name].shape) != values[name].shape)
    problems = [f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if keys]
    if problems:
        raise ConversionError(f"{where} does not match the Gluon model: {'; '.join(problems)}")
    for name, param in params.items():
        param.set_data(mx.nd.array(values[name], dtype=param.dtype))


def make_encoder(config: EncoderConfig):
    """The (uninitialised) Gluon encoder block of ``config``'s family."""
    return MobileBertEncoder(config) if config.family == "mobilebert" else GluonEncoder(config)


def build_encoder(config: EncoderConfig, ctx=None):
    """The family's Gluon encoder with initialised (random, fully shaped) parameters on ``ctx`` (default CPU)."""
    ctx = ctx or mx.cpu()
    encoder = make_encoder(config)
    encoder.initialize(mx.init.Normal(0.02), ctx=ctx)
    encoder.finish_initialization(ctx)
    return encoder


def load_hf_encoder(folder: Path, ctx=None, *, hidden_dropout: float | None = None,
                    attention_dropout: float | None = None) -> tuple[HybridBlock, EncoderConfig]:
    """The Gluon encoder of the HF model folder ``folder``, weights converted; dropout rates default to
    the config's."""
    folder = Path(folder)
    config = encoder_config_from_hf(read_hf_config(folder), where=str(folder))
    config = config.replace_dropout(config.hidden_dropout if hidden_dropout is None else hidden_dropout,
                                    config.attention_dropout if attention_dropout is None else attention_dropout)
    encoder = build_encoder(config, ctx)
    state = base_model_state(read_safetensors(folder), config.family)
    assign_params(encoder, convert_state(config, state, where=str(folder)), where=str(folder))
    return encoder, config
