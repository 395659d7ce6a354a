"""The recipes (bench.core.presets) and the scripts rendered from them (bench.apps.gen_commands).

The expected recipe values are typed in from GluonNLP's published
generate_commands.py / commands/*.sh, not read back from the module under test.
The scripts are run for real with bash in DRY_RUN mode and the printed command
is parsed with the run script's own parser.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from bench.apps import gen_commands
from bench.core.flags import ConfigError, build_run_parser, config_from_dict
from bench.core.models import UnknownModelError
from bench.core.presets import (PRESETS, Preset, UnknownPresetError, get_preset, global_batch, preset_run_flags,
                           validate_preset)
from bench.core.references import load_references, select_references

REPO = Path(__file__).resolve().parent.parent
GLUONNLP_PRESETS = {"albert_base", "albert_large", "albert_xlarge", "albert_xxlarge", "electra_small",
                    "electra_base", "electra_large", "uncased_bert_base", "uncased_bert_large", "cased_bert_base",
                    "uncased_bert_wwm_large", "mobilebert", "roberta_large"}

# name: (model, batch per GPU, accumulation, epochs, lr, other flags that differ from the base recipe)
PUBLISHED = {
    "albert_base": ("google_albert_base_v2", 4, 3, 3, 2e-5, {}),
    "albert_large": ("google_albert_large_v2", 3, 4, 3, 2e-5, {}),
    "albert_xlarge": ("google_albert_xlarge_v2", 1, 12, 3, 2e-5, {"max_grad_norm": 0.1}),
    "albert_xxlarge": ("google_albert_xxlarge_v2", 1, 12, 3, 2e-5, {"max_grad_norm": 0.1}),
    "electra_small": ("google_electra_small", 8, 1, 2, 3e-4, {"layerwise_decay": 0.8, "wd": 0.0}),
    "electra_base": ("google_electra_base", 8, 1, 2, 1e-4, {"layerwise_decay": 0.8, "wd": 0.0}),
    "electra_large": ("google_electra_large", 2, 4, 2, 5e-5, {"layerwise_decay": 0.9, "wd": 0.0}),
    "mobilebert": ("google_uncased_mobilebert", 8, 1, 5, 4e-5, {"max_seq_length": 384}),
    "roberta_large": ("fairseq_roberta_large", 2, 6, 3, 3e-5, {"warmup_ratio": 0.2}),
    "uncased_bert_base": ("google_en_uncased_bert_base", 6, 2, 3, 3e-5, {}),
    "uncased_bert_large": ("google_en_uncased_bert_large", 2, 6, 3, 3e-5, {}),
    "cased_bert_base": ("google_en_cased_bert_base", 6, 2, 3, 3e-5, {}),
    "uncased_bert_wwm_large": ("google_en_uncased_bert_wwm_large", 3, 2, 2, 3e-5, {"max_seq_length": 384}),
}
BASE = {"warmup_ratio": 0.1, "wd": 0.01, "max_grad_norm": 1.0, "max_seq_length": 512, "doc_stride": 128,
        "max_query_length": 64, "layerwise_decay": -1.0}


# ----------------------------------------------------------------------------- presets

def test_every_gluonnlp_recipe_is_a_preset():
    assert GLUONNLP_PRESETS <= set(PRESETS)
    assert all(PRESETS[name].gluonnlp for name in GLUONNLP_PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
    preset = PRESETS[name]
    validate_preset(preset)
    assert preset.num_gpus == 4
    assert preset.flags["do_train"] and preset.flags["do_eval"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_matches_the_published_recipe(name):
    model, batch, accumulated, epochs, lr, changed = PUBLISHED[name]
    preset = PRESETS[name]
    assert preset.model_name == model
    expected = {**BASE, "batch_size": batch, "num_accumulated": accumulated, "epochs": epochs, "lr": lr, **changed}
    assert {k: preset.flags[k] for k in expected} == expected
    assert global_batch(preset) == batch * accumulated * 4


def test_global_batches_are_gluonnlps():
    assert {name: global_batch(PRESETS[name]) for name in ("albert_base", "albert_xxlarge", "roberta_large",
                                                           "electra_base", "mobilebert")} == {
        "albert_base": 48, "albert_xxlarge": 48, "roberta_large": 48, "electra_base": 32, "mobilebert": 32}


def test_presets_that_are_not_gluonnlps_say_so():
    ours = {name for name, p in PRESETS.items() if not p.gluonnlp}
    assert ours == {"roberta_base", "distilbert_base_uncased"}
    assert all(PRESETS[name].description.startswith("NOT a GluonNLP recipe") for name in ours)


def test_get_preset_suggests_close_names():
    assert get_preset("electra_base") is PRESETS["electra_base"]
    with pytest.raises(UnknownPresetError, match="Did you mean: electra_base"):
        get_preset("electra_bse")


@pytest.mark.parametrize("flags, error, message", [
    ({"no_such_flag": 1}, ConfigError, "unknown flag"),
    ({"batch_size": 0}, ConfigError, "--batch_size must be positive"),
    ({"batch_size": "8"}, ConfigError, "--batch_size"),
    ({"do_train": 1}, ConfigError, "--do_train"),
    ({"model_name": "google_electra_base"}, ConfigError, "Preset.model_name"),
])
def test_validate_preset_rejects_bad_flags(flags, error, message):
    preset = Preset("bad", "google_electra_base", {**PRESETS["electra_base"].flags, **flags}, "a broken recipe")
    with pytest.raises(error, match=message):
        validate_preset(preset)


def test_validate_preset_rejects_unknown_models():
    with pytest.raises(UnknownModelError, match="google_electra_base"):
        validate_preset(Preset("bad", "google_electra_bse", PRESETS["electra_base"].flags, "typo"))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_reference_sources_have_numbers_for_the_model(name):
    preset = PRESETS[name]
    references = load_references()
    for source in preset.reference_sources:
        assert select_references(references, model=preset.model_name, source=source), (name, source)


def test_run_flags_pass_the_run_config():
    config = config_from_dict(preset_run_flags(PRESETS["electra_large"]))
    assert (config.model_name, config.lr, config.layerwise_decay) == ("google_electra_large", 5e-5, 0.9)


# ----------------------------------------------------------------------------- generated scripts

def test_committed_scripts_match_the_generator():
    problems = gen_commands.stale_scripts(gen_commands.DEFAULT_COMMANDS_DIR, gen_commands.expected_scripts())
    assert problems == [], "run `squad-bench gen-commands`: " + "; ".join(problems)


def test_one_script_per_preset():
    assert sorted(p.name for p in (REPO / "commands").glob("*.sh")) == sorted(
        f"run_squad2_{name}.sh" for name in PRESETS)


def test_check_lists_stale_missing_and_leftover_scripts(tmp_path, capsys):
    assert gen_commands.main(["--out", str(tmp_path)]) == 0
    assert gen_commands.main(["--out", str(tmp_path), "--check"]) == 0
    edited = tmp_path / "run_squad2_electra_base.sh"
    edited.write_text(edited.read_text().replace("--lr 0.0001", "--lr 0.001"))
    (tmp_path / "run_squad2_albert_base.sh").unlink()
    leftover = tmp_path / "run_squad2_gone.sh"
    leftover.write_text(gen_commands.GENERATED_MARK + " from bench/core/presets.py\n")
    capsys.readouterr()
    assert gen_commands.main(["--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "run_squad2_electra_base.sh: differs" in err
    assert "run_squad2_albert_base.sh: missing" in err
    assert "run_squad2_gone.sh: no preset generates it" in err
    assert gen_commands.main(["--out", str(tmp_path)]) == 0
    assert not leftover.exists() and gen_commands.main(["--out", str(tmp_path), "--check"]) == 0


def test_script_header_states_recipe_batch_and_sources():
    text = (REPO / "commands" / "run_squad2_electra_base.sh").read_text()
    assert "Global batch: 8 per GPU x 1 accumulated x 4 GPUs = 32" in text
    assert "GluonNLP (reproduced), SQuAD 1.1/2.0, fp32/amp: https://github.com/dmlc/gluon-nlp" in text
    assert "Google ELECTRA, SQuAD 1.1/2.0, fp32: https://github.com/google-research/electra" in text
    assert "set -euo pipefail" in text
    assert os.access(REPO / "commands" / "run_squad2_electra_base.sh", os.X_OK)


def _dry_run(name: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(REPO / "commands" / f"run_squad2_{name}.sh"), *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=30)


def _printed_run_args(stdout: str) -> tuple[list[str], list[str]]:
    """(launcher words before '-m bench.run_squad', the run script's arguments) of the printed command."""
    words = shlex.split(stdout.strip().splitlines()[-1])
    at = words.index("bench.run_squad")
    assert words[at - 1] == "-m"
    return words[:at - 1], words[at + 1:]


@pytest.mark.parametrize("use_horovod", ["0", "1"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dry_run_prints_the_preset_command(name, use_horovod, tmp_path):
    done = _dry_run(name, use_horovod, "2.0", "float16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    launcher, run_args = _printed_run_args(done.stdout)
    args = build_run_parser().parse_args(run_args)
    config = config_from_dict(vars(args))
    preset = PRESETS[name]
    for flag, value in preset_run_flags(preset).items():
        assert getattr(config, flag) == value, flag
    assert (config.version, config.dtype, config.data_dir) == ("2.0", "float16", "squad")
    assert config.output_dir == f"fintune_{preset.model_name}_squad_2.0"
    if use_horovod == "1":
        assert launcher == ["horovodrun", "-np", "4", "-H", "localhost:4", "python3"]
        assert config.comm_backend == "horovod"
    else:
        assert launcher == ["python3"]
        assert (config.comm_backend, config.gpus) == ("device", "0,1,2,3")


def test_dry_run_prints_data_preparation_only_when_data_is_missing(tmp_path):
    done = _dry_run("electra_small", cwd=tmp_path)
    first = done.stdout.splitlines()[0]
    assert first.startswith("#") and first.endswith(
        "python3 -m bench.cli prepare-data --version 2.0 --data_dir squad")
    for split in ("train", "dev"):
        (tmp_path / "squad").mkdir(exist_ok=True)
        (tmp_path / "squad" / f"{split}-v2.0.json").write_text("{}")
    done = _dry_run("electra_small", cwd=tmp_path)
    assert len(done.stdout.splitlines()) == 1 and "prepare-data" not in done.stdout


def test_dry_run_environment_overrides(tmp_path):
    done = _dry_run("albert_base", "0", "1.1", cwd=tmp_path, NUM_GPUS="2", DATA_DIR="/data/my squad",
                    OUT_DIR="out/a", MODEL_PATH="/models/albert", SEEDS="1,2,3", PYTHON="python3.11",
                    EXTRA_ARGS="--head basic --max_eval_samples 100")
    launcher, run_args = _printed_run_args(done.stdout)
    config = config_from_dict(vars(build_run_parser().parse_args(run_args)))
    assert launcher == ["python3.11"]
    assert (config.gpus, config.data_dir, config.output_dir, config.model_path) == (
        "0,1", "/data/my squad", "out/a", "/models/albert")
    assert (config.seeds, config.head, config.max_eval_samples, config.version) == ("1,2,3", "basic", 100, "1.1")
    assert "--data_dir '/data/my squad'" in done.stdout.splitlines()[0]


def test_dry_run_without_gpus_uses_the_cpu(tmp_path):
    _, run_args = _printed_run_args(_dry_run("electra_small", cwd=tmp_path, NUM_GPUS="0").stdout)
    assert build_run_parser().parse_args(run_args).gpus == "-1"


@pytest.mark.parametrize("args, env, message", [
    (("2",), {}, "USE_HOROVOD"),
    (("0", "3.0"), {}, "VERSION"),
    (("1",), {"NUM_GPUS": "0"}, "Horovod needs NUM_GPUS >= 1"),
    (("0",), {"NUM_GPUS": "four"}, "NUM_GPUS"),
])
def test_bad_script_arguments_fail_clearly(args, env, message, tmp_path):
    done = _dry_run("electra_small", *args, cwd=tmp_path, **env)
    assert done.returncode == 2 and message in done.stderr


def test_the_demo_recipe_validates_and_trains_only_the_encoder():
    """The demo's flags are a valid run configuration; its embeddings are frozen (--untunable_depth 0)."""
    from bench.apps.demo import DEMO_FLAGS
    config = config_from_dict({**DEMO_FLAGS, "do_train": True, "do_eval": True, "model_path": "unused"})
    assert config.untunable_depth == 0 and config.epochs == 1.5 and config.dtype == "float32"
