"""The recipes (bench.core.presets), the commands/*.sh wrappers that launch them, and --preset.

The expected recipe values are typed in from GluonNLP's published
generate_commands.py / commands/*.sh, not read back from the module under test.
The scripts are run for real with bash in DRY_RUN mode, their output compared
with ``squad-bench launch``'s (tests/test_launch.py has its golden commands) and
parsed with the run script's own parser.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.apps import launch
from bench.apps.run import config_from_argv
from bench.apps.run import main as run_main
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


# ----------------------------------------------------------------------------- commands/*.sh wrappers

def _script_problems(commands_dir: Path) -> list[str]:
    """Scripts that drifted from the presets: missing, left over, or not exactly a wrapper of
    ``squad-bench launch`` for the preset named in the file name (and its model in the header)."""
    problems = [f"run_squad2_{name}.sh: missing" for name in PRESETS
                if not (commands_dir / f"run_squad2_{name}.sh").is_file()]
    for path in sorted(commands_dir.glob("*.sh")):
        name = path.name.removeprefix("run_squad2_").removesuffix(".sh")
        if name not in PRESETS:
            problems.append(f"{path.name}: no preset {name!r}")
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines[-1] != f'exec "${{PYTHON:-python3}}" -m bench.cli launch {name} "$@"':
            problems.append(f"{path.name}: does not end by exec'ing `bench.cli launch {name}`")
        if len(lines) > 10 or sum("launch" in line and not line.startswith("#") for line in lines) != 1:
            problems.append(f"{path.name}: more than a wrapper of `squad-bench launch {name}`")
        if f" {PRESETS[name].model_name} " not in lines[1] or f"preset {name} " not in lines[1]:
            problems.append(f"{path.name}: its header does not name preset {name} and its model")
    return problems


def test_committed_scripts_are_wrappers_of_their_presets():
    problems = _script_problems(REPO / "commands")
    assert problems == [], "; ".join(problems)


def test_one_script_per_preset():
    assert sorted(p.name for p in (REPO / "commands").glob("*.sh")) == sorted(
        f"run_squad2_{name}.sh" for name in PRESETS)


def test_drifted_missing_and_leftover_scripts_are_caught(tmp_path):
    for path in (REPO / "commands").glob("*.sh"):
        (tmp_path / path.name).write_text(path.read_text())
    assert _script_problems(tmp_path) == []
    edited = tmp_path / "run_squad2_electra_base.sh"
    edited.write_text(edited.read_text().replace("launch electra_base", "launch electra_large"))
    (tmp_path / "run_squad2_albert_base.sh").unlink()
    (tmp_path / "run_squad2_gone.sh").write_text((tmp_path / "run_squad2_electra_small.sh").read_text())
    problems = "; ".join(_script_problems(tmp_path))
    assert "run_squad2_electra_base.sh: does not end by exec'ing `bench.cli launch electra_base`" in problems
    assert "run_squad2_albert_base.sh: missing" in problems
    assert "run_squad2_gone.sh: no preset 'gone'" in problems


def test_scripts_are_executable_and_pass_the_exit_status_through():
    for name in PRESETS:
        path = REPO / "commands" / f"run_squad2_{name}.sh"
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/env bash\n")
        assert path.read_text().splitlines()[-1].startswith("exec ")   # the launcher's status is the script's


def _dry_run(name: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(REPO / "commands" / f"run_squad2_{name}.sh"), *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_script_prints_its_presets_launch_command(name, tmp_path, monkeypatch):
    """Run for real with bash, from a folder outside the checkout: what launch renders for the preset."""
    done = _dry_run(name, "1", "2.0", "float16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    monkeypatch.chdir(tmp_path)       # the data check is relative to the folder the script ran in
    assert done.stdout == launch.render_dry_run(launch.plan_launch(PRESETS[name], "1", "2.0", "float16", env={}))
    words = shlex.split(done.stdout.splitlines()[-1])
    config = config_from_dict(vars(build_run_parser().parse_args(words[words.index("bench.run_squad") + 1:])))
    assert {flag: getattr(config, flag) for flag in preset_run_flags(PRESETS[name])} == preset_run_flags(
        PRESETS[name])


def test_script_data_preparation_only_when_data_is_missing(tmp_path):
    done = _dry_run("electra_small", cwd=tmp_path)
    first = done.stdout.splitlines()[0]
    assert first.startswith("#") and first.endswith(
        "python3 -m bench.cli prepare-data --version 2.0 --data_dir squad")
    for split in ("train", "dev"):
        (tmp_path / "squad").mkdir(exist_ok=True)
        (tmp_path / "squad" / f"{split}-v2.0.json").write_text("{}")
    done = _dry_run("electra_small", cwd=tmp_path)
    assert len(done.stdout.splitlines()) == 1 and "prepare-data" not in done.stdout


def test_script_environment_overrides(tmp_path):
    done = _dry_run("albert_base", "0", "1.1", cwd=tmp_path, NUM_GPUS="2", DATA_DIR="/data/my squad",
                    OUT_DIR="out/a", MODEL_PATH="/models/albert", SEEDS="1,2,3", PYTHON=sys.executable,
                    EXTRA_ARGS="--head basic --max_eval_samples 100")
    words = shlex.split(done.stdout.splitlines()[-1])
    at = words.index("bench.run_squad")
    config = config_from_dict(vars(build_run_parser().parse_args(words[at + 1:])))
    assert words[:at - 1] == [sys.executable]
    assert (config.gpus, config.data_dir, config.output_dir, config.model_path) == (
        "0,1", "/data/my squad", "out/a", "/models/albert")
    assert (config.seeds, config.head, config.max_eval_samples, config.version) == ("1,2,3", "basic", 100, "1.1")
    assert "--data_dir '/data/my squad'" in done.stdout.splitlines()[0]


@pytest.mark.parametrize("args, env, message", [
    (("2",), {}, "USE_HOROVOD"),
    (("0", "3.0"), {}, "VERSION"),
    (("1",), {"NUM_GPUS": "0"}, "Horovod needs NUM_GPUS >= 1"),
    (("0",), {"NUM_GPUS": "four"}, "NUM_GPUS"),
])
def test_bad_script_arguments_fail_clearly(args, env, message, tmp_path):
    done = _dry_run("electra_small", *args, cwd=tmp_path, **env)
    assert done.returncode == 2 and message in done.stderr


# ----------------------------------------------------------------------------- --preset on the run script

def test_run_script_preset_sets_the_recipe():
    config = config_from_argv(["--preset", "electra_large"])
    assert {flag: getattr(config, flag) for flag in preset_run_flags(PRESETS["electra_large"])} == preset_run_flags(
        PRESETS["electra_large"])
    assert (config.model_name, config.lr, config.layerwise_decay, config.wd) == ("google_electra_large", 5e-5, 0.9, 0.0)
    assert (config.do_train, config.do_eval, config.data_dir, config.gpus) == (True, True, "squad", "0")


def test_run_script_explicit_flags_win_over_the_preset():
    config = config_from_argv(["--lr", "3e-5", "--preset", "electra_base", "--model_name", "google_electra_small",
                               "--max_seq_length", "384", "--version", "1.1"])
    assert (config.lr, config.model_name, config.max_seq_length, config.version) == (
        3e-5, "google_electra_small", 384, "1.1")
    assert (config.batch_size, config.layerwise_decay, config.epochs) == (8, 0.8, 2.0)   # the rest: the preset's
    assert config_from_argv(["--preset", "albert_base", "--model_path", "/m"]).batch_size == 4


def test_run_script_without_a_preset_keeps_gluonnlps_defaults():
    config = config_from_argv(["--do_eval"])
    assert (config.model_name, config.lr, config.do_train) == ("google_albert_base_v2", 2e-5, False)


def test_run_script_unknown_preset_is_one_line_naming_the_known_ones(capsys):
    assert run_main(["--preset", "electra_bse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run_squad: error: unknown preset 'electra_bse'.")
    assert "Did you mean: electra_base" in err and "Known presets: " + ", ".join(sorted(PRESETS)) in err
    with pytest.raises(UnknownPresetError):
        config_from_argv(["--preset", "nope"])


def test_the_demo_recipe_validates_and_trains_only_the_encoder():
    """The demo's flags are a valid run configuration; its embeddings are frozen (--untunable_depth 0)."""
    from bench.apps.demo import DEMO_FLAGS
    config = config_from_dict({**DEMO_FLAGS, "do_train": True, "do_eval": True, "model_path": "unused"})
    assert config.untunable_depth == 0 and config.epochs == 1.5 and config.dtype == "float32"
