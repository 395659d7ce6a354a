"""Every fine-tuning recipe in one place, each derived from one base recipe.

GluonNLP wrote a ``*_cfg()`` function per model on top of ``base_cfg()`` and
rendered ``commands/run_squad2_<model>.sh`` from them; this module keeps that
shape (``_derive`` from ``BASE_FLAGS``) but the values are plain run flags
checked against ``bench.core.flags.FLAGS``, so a recipe cannot name a flag the run
script does not have. ``squad-bench launch PRESET`` (and the ``commands/*.sh``
wrappers of it) runs a recipe, ``--preset NAME`` on the run script starts from one,
and the reports read the reference sources named here.

Batch sizes are per GPU, as in GluonNLP: the global batch is
``batch_size * num_accumulated * num_gpus`` (see ``global_batch``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from bench.core.flags import FLAG_BY_NAME, ConfigError, config_from_dict
from bench.core.models import UnknownModelError, get_model_spec
from bench.core.errors import BenchError

__all__ = ["Preset", "PRESETS", "BASE_FLAGS", "UnknownPresetError", "get_preset", "global_batch",
           "validate_preset", "preset_run_flags"]

# GluonNLP's base_cfg() (scripts/question_answering/commands/generate_commands.py), which is
# also its ALBERT base recipe; doc_stride and max_query_length are run_squad.py's defaults,
# written out so every recipe states its whole windowing.
BASE_FLAGS: Mapping[str, Any] = MappingProxyType({
    "do_train": True, "do_eval": True,
    "batch_size": 4, "num_accumulated": 3, "epochs": 3.0, "lr": 2e-5,
    "warmup_ratio": 0.1, "wd": 0.01, "max_grad_norm": 1.0, "layerwise_decay": -1.0,
    "max_seq_length": 512, "doc_stride": 128, "max_query_length": 64,
})


class UnknownPresetError(BenchError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Preset:
    name: str                  # e.g. "electra_base"; the script is commands/run_squad2_<name>.sh
    model_name: str            # registry name (bench.core.models)
    flags: Mapping[str, Any]   # run flags of the recipe (everything but the model and the launch)
    description: str
    reference_sources: tuple[str, ...] = ()   # keys of bench.core.references.SOURCES with numbers for it
    gluonnlp: bool = True      # a recipe GluonNLP published (False: ours, marked as such)
    num_gpus: int = 4          # GPUs the recipe was tuned on (batch sizes are per GPU)

    def __post_init__(self):
        object.__setattr__(self, "flags", MappingProxyType(dict(self.flags)))


def _derive(parent: Mapping[str, Any] | Preset, **overrides: Any) -> dict[str, Any]:
    """A parent's flags with some changed, as GluonNLP's ``cfg = base_cfg(); cfg.x = ...``."""
    flags = dict(parent.flags if isinstance(parent, Preset) else parent)
    unknown = sorted(set(overrides) - set(FLAG_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown flag(s) in a preset: {', '.join(unknown)}")
    flags.update(overrides)
    return flags


def _albert() -> list[Preset]:
    base = Preset("albert_base", "google_albert_base_v2", _derive(BASE_FLAGS),
                  "GluonNLP's ALBERT base v2 recipe (its base_cfg)", ("gluonnlp", "google_albert"))
    large = Preset("albert_large", "google_albert_large_v2", _derive(base, batch_size=3, num_accumulated=4),
                   "GluonNLP's ALBERT large v2 recipe", ("gluonnlp", "google_albert"))
    # The two biggest ALBERTs fit one window per GPU and GluonNLP clips gradients harder for them.
    xlarge = Preset("albert_xlarge", "google_albert_xlarge_v2",
                    _derive(base, batch_size=1, num_accumulated=12, max_grad_norm=0.1),
                    "GluonNLP's ALBERT xlarge v2 recipe", ("gluonnlp", "google_albert"))
    xxlarge = Preset("albert_xxlarge", "google_albert_xxlarge_v2", _derive(xlarge),
                     "GluonNLP's ALBERT xxlarge v2 recipe (same as xlarge)", ("gluonnlp", "google_albert"))
    return [base, large, xlarge, xxlarge]


def _electra() -> list[Preset]:
    # ELECTRA is fine-tuned with layer-wise learning-rate decay and no weight decay.
    base = Preset("electra_base", "google_electra_base",
                  _derive(BASE_FLAGS, batch_size=8, num_accumulated=1, lr=1e-4, epochs=2.0,
                          layerwise_decay=0.8, wd=0.0),
                  "GluonNLP's ELECTRA base recipe (layer-wise LR decay, no weight decay)",
                  ("gluonnlp", "google_electra", "electra_paper"))
    small = Preset("electra_small", "google_electra_small", _derive(base, lr=3e-4),
                   "GluonNLP's ELECTRA small recipe (layer-wise LR decay, no weight decay)", ("gluonnlp", "google_electra"))
    large = Preset("electra_large", "google_electra_large",
                   _derive(base, batch_size=2, num_accumulated=4, lr=5e-5, layerwise_decay=0.9),
                   "GluonNLP's ELECTRA large recipe (layer-wise LR decay, no weight decay)",
                   ("gluonnlp", "google_electra", "electra_paper"))
    return [small, base, large]


def _bert() -> list[Preset]:
    uncased_base = Preset("uncased_bert_base", "google_en_uncased_bert_base",
                          _derive(BASE_FLAGS, batch_size=6, num_accumulated=2, lr=3e-5),
                          "GluonNLP's BERT base (uncased) recipe", ("gluonnlp", "google_bert", "hf_run_qa"))
    cased_base = Preset("cased_bert_base", "google_en_cased_bert_base", _derive(uncased_base),
                        "GluonNLP's cased BERT base recipe (run_squad2_gluon_en_cased_bert_base_v1.sh) applied "
                        "to Google's cased checkpoint; GluonNLP's numbers are for its own "
                        "gluon_en_cased_bert_base_v1 weights, so none are quoted for this one")
    uncased_large = Preset("uncased_bert_large", "google_en_uncased_bert_large",
                           _derive(uncased_base, batch_size=2, num_accumulated=6),
                           "GluonNLP's BERT large (uncased) recipe",
                           ("gluonnlp", "google_bert", "electra_paper"))
    wwm_large = Preset("uncased_bert_wwm_large", "google_en_uncased_bert_wwm_large",
                       _derive(uncased_base, batch_size=3, num_accumulated=2, epochs=2.0, max_seq_length=384),
                       "GluonNLP's BERT large whole-word-masking (uncased) recipe "
                       "(run_squad2_uncased_bert_wwm_large.sh; GluonNLP published AMP numbers only)",
                       ("gluonnlp",))
    return [uncased_base, cased_base, uncased_large, wwm_large]


def _others() -> list[Preset]:
    mobilebert = Preset("mobilebert", "google_uncased_mobilebert",
                        _derive(BASE_FLAGS, batch_size=8, num_accumulated=1, lr=4e-5, epochs=5.0,
                                max_seq_length=384),
                        "GluonNLP's MobileBERT recipe", ("gluonnlp", "google_mobilebert"))
    roberta_large = Preset("roberta_large", "fairseq_roberta_large",
                           _derive(BASE_FLAGS, batch_size=2, num_accumulated=6, lr=3e-5, warmup_ratio=0.2),
                           "GluonNLP's RoBERTa large recipe (longer warm-up)", ("gluonnlp", "fairseq_roberta"))
    roberta_base = Preset("roberta_base", "fairseq_roberta_base",
                          _derive(roberta_large, batch_size=6, num_accumulated=2),
                          "NOT a GluonNLP recipe: its RoBERTa large recipe with a bigger micro-batch "
                          "and the same global batch", ("deepset",), gluonnlp=False)
    distilbert = Preset("distilbert_base_uncased", "distilbert_base_uncased",
                        _derive(BASE_FLAGS, batch_size=6, num_accumulated=2, lr=3e-5),
                        "NOT a GluonNLP recipe: GluonNLP's BERT base recipe applied to DistilBERT",
                        ("hf_distillation",), gluonnlp=False)
    return [mobilebert, roberta_large, roberta_base, distilbert]


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {p.name: p for p in _albert() + _electra() + _bert() + _others()})


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name fails with the closest known names."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownPresetError(f"unknown preset {name!r}.{hint} Known presets: {', '.join(sorted(PRESETS))}")


def global_batch(preset: Preset) -> int:
    """Training windows per optimizer update over all GPUs."""
    return preset.flags["batch_size"] * preset.flags["num_accumulated"] * preset.num_gpus


def preset_run_flags(preset: Preset) -> dict[str, Any]:
    """The recipe as run flags, model included (``--preset``'s defaults; what ``launch`` passes)."""
    return {"model_name": preset.model_name, **preset.flags}


def _check_flag_types(preset: Preset) -> None:
    for name, value in preset.flags.items():
        flag = FLAG_BY_NAME[name]
        if flag.store_true:
            ok = isinstance(value, bool)
        elif flag.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, flag.type) and not isinstance(value, bool)
        if not ok:
            kind = "true/false" if flag.store_true else flag.type.__name__
            raise ConfigError(f"preset {preset.name}: --{name} = {value!r} should be {kind}")


def validate_preset(preset: Preset) -> None:
    """Raise ConfigError/UnknownModelError when a preset could not run as written."""
    unknown = sorted(set(preset.flags) - set(FLAG_BY_NAME))
    if unknown:
        raise ConfigError(f"preset {preset.name}: unknown flag(s) {', '.join(unknown)}")
    if "model_name" in preset.flags:
        raise ConfigError(f"preset {preset.name}: give the model as Preset.model_name, not a flag")
    try:
        get_model_spec(preset.model_name)
    except UnknownModelError as exc:
        raise UnknownModelError(f"preset {preset.name}: {exc}") from None
    if preset.num_gpus < 1:
        raise ConfigError(f"preset {preset.name}: num_gpus must be >= 1, got {preset.num_gpus}")
    _check_flag_types(preset)
    try:
        config_from_dict(preset_run_flags(preset))
    except ConfigError as exc:
        raise ConfigError(f"preset {preset.name}: {exc}") from None
