"""``squad-bench launch`` (bench.apps.launch): what commands/run_squad2_<preset>.sh run.

The golden commands below are what the former bash scripts (91 lines each) printed
with DRY_RUN=1, captured before they became wrappers of the launcher; the printed
command is also parsed back with the run script's own parser. Nothing here trains:
the exec and the data preparation are replaced by recorders.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path

import pytest

from bench.apps import launch
from bench.core.flags import build_run_parser, config_from_dict
from bench.core.presets import PRESETS, preset_run_flags
from bench.core.references import load_references

ENV_VARS = ("NUM_GPUS", "DATA_DIR", "OUT_DIR", "PYTHON", "MODEL_PATH", "SEEDS", "EXTRA_ARGS", "DRY_RUN")
PREPARE_2_0 = "# the data is missing; this would run first: python3 -m bench.cli prepare-data --version 2.0 --data_dir squad"
ELECTRA_BASE_RECIPE = ("--do_train --do_eval --batch_size 8 --num_accumulated 1 --epochs 2 --lr 0.0001 --warmup_ratio 0.1 "
                       "--wd 0 --max_grad_norm 1 --layerwise_decay 0.8 --max_seq_length 512 --doc_stride 128 "
                       "--max_query_length 64")
ELECTRA_BASE_RUN = ("-m bench.run_squad --model_name google_electra_base --data_dir squad --output_dir "
                    "fintune_google_electra_base_squad_2.0 --version 2.0 --dtype float32 " + ELECTRA_BASE_RECIPE)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment of launcher variables but DRY_RUN=1, in an empty folder (so the data is missing)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _dry_run(capsys, *argv: str) -> tuple[int, str, str]:
    status = launch.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _printed_run_args(stdout: str) -> tuple[list[str], list[str]]:
    """(launcher words before '-m bench.run_squad', the run script's arguments) of the printed command."""
    words = shlex.split(stdout.strip().splitlines()[-1])
    at = words.index("bench.run_squad")
    assert words[at - 1] == "-m"
    return words[:at - 1], words[at + 1:]


def _make_data(folder: Path, version: str = "2.0", splits=("train", "dev")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (folder / f"{split}-v{version}.json").write_text("{}")


# ----------------------------------------------------------------------------- golden commands

def test_golden_horovod_amp_command(env, capsys):
    status, out, err = _dry_run(capsys, "electra_base", "1", "2.0", "float16")
    assert (status, err) == (0, "")
    assert out == (PREPARE_2_0 + "\nhorovodrun -np 4 -H localhost:4 python3 " +
                   ELECTRA_BASE_RUN.replace("float32", "float16") + " --comm_backend horovod\n")


def test_golden_defaults_with_the_data_present(env, capsys, tmp_path):
    _make_data(tmp_path / "squad")
    status, out, _ = _dry_run(capsys, "electra_base")
    assert out == f"python3 {ELECTRA_BASE_RUN} --comm_backend device --gpus 0,1,2,3\n" and status == 0


def test_golden_other_recipes(env, capsys, tmp_path):
    _make_data(tmp_path / "squad", "1.1")
    assert _dry_run(capsys, "mobilebert", "0", "1.1")[1] == (
        "python3 -m bench.run_squad --model_name google_uncased_mobilebert --data_dir squad --output_dir "
        "fintune_google_uncased_mobilebert_squad_1.1 --version 1.1 --dtype float32 --do_train --do_eval "
        "--batch_size 8 --num_accumulated 1 --epochs 5 --lr 4e-05 --warmup_ratio 0.1 --wd 0.01 --max_grad_norm 1 "
        "--layerwise_decay -1 --max_seq_length 384 --doc_stride 128 --max_query_length 64 "
        "--comm_backend device --gpus 0,1,2,3\n")
    assert _dry_run(capsys, "roberta_base", "", "1.1")[1] == (
        "python3 -m bench.run_squad --model_name fairseq_roberta_base --data_dir squad --output_dir "
        "fintune_fairseq_roberta_base_squad_1.1 --version 1.1 --dtype float32 --do_train --do_eval "
        "--batch_size 6 --num_accumulated 2 --epochs 3 --lr 3e-05 --warmup_ratio 0.2 --wd 0.01 --max_grad_norm 1 "
        "--layerwise_decay -1 --max_seq_length 512 --doc_stride 128 --max_query_length 64 "
        "--comm_backend device --gpus 0,1,2,3\n")


def test_golden_environment_overrides(env, capsys):
    for name, value in {"NUM_GPUS": "2", "DATA_DIR": "/data/my squad", "OUT_DIR": "out/a",
                        "MODEL_PATH": "/models/albert", "SEEDS": "1,2,3", "PYTHON": "python3.11",
                        "EXTRA_ARGS": "--head basic  --max_eval_samples 100"}.items():
        env.setenv(name, value)
    status, out, _ = _dry_run(capsys, "albert_base", "0", "1.1")
    assert out == (
        "# the data is missing; this would run first: python3.11 -m bench.cli prepare-data --version 1.1 "
        "--data_dir '/data/my squad'\n"
        "python3.11 -m bench.run_squad --model_name google_albert_base_v2 --data_dir '/data/my squad' "
        "--output_dir out/a --version 1.1 --dtype float32 --do_train --do_eval --batch_size 4 --num_accumulated 3 "
        "--epochs 3 --lr 2e-05 --warmup_ratio 0.1 --wd 0.01 --max_grad_norm 1 --layerwise_decay -1 "
        "--max_seq_length 512 --doc_stride 128 --max_query_length 64 --model_path /models/albert --seeds 1,2,3 "
        "--head basic --max_eval_samples 100 --comm_backend device --gpus 0,1\n")
    launcher, run_args = _printed_run_args(out)
    config = config_from_dict(vars(build_run_parser().parse_args(run_args)))
    assert launcher == ["python3.11"]
    assert (config.gpus, config.data_dir, config.output_dir, config.model_path) == (
        "0,1", "/data/my squad", "out/a", "/models/albert")
    assert (config.seeds, config.head, config.max_eval_samples, config.version) == ("1,2,3", "basic", 100, "1.1")


def test_golden_quoting_is_the_scripts_not_shlex(env, capsys):
    """A quote is written '\\'' as the bash scripts did (shlex.join would write '"'"')."""
    env.setenv("DATA_DIR", "d'q")
    env.setenv("OUT_DIR", "o=u,t")
    env.setenv("MODEL_PATH", "~/m")
    env.setenv("EXTRA_ARGS", "--foo \"a b\"\t--bar it's $HOME \\x\nignored")
    out = _dry_run(capsys, "electra_base", "1", "1.1", "float 16")[1]
    assert out.splitlines() == [
        "# the data is missing; this would run first: python3 -m bench.cli prepare-data --version 1.1 "
        "--data_dir 'd'\\''q'",
        "horovodrun -np 4 -H localhost:4 python3 -m bench.run_squad --model_name google_electra_base "
        "--data_dir 'd'\\''q' --output_dir o=u,t --version 1.1 --dtype 'float 16' " + ELECTRA_BASE_RECIPE +
        " --model_path '~/m' --foo '\"a' 'b\"' --bar 'it'\\''s' '$HOME' '\\x' --comm_backend horovod"]
    assert shlex.split(out.splitlines()[1])[11] == "d'q"


@pytest.mark.parametrize("num_gpus, gpus", [("0", "-1"), ("1", "0"), ("3", "0,1,2")])
def test_gpu_list_follows_num_gpus(env, capsys, num_gpus, gpus):
    env.setenv("NUM_GPUS", num_gpus)
    out = _dry_run(capsys, "electra_small")[1]
    assert out.endswith(f" --comm_backend device --gpus {gpus}\n")
    assert build_run_parser().parse_args(_printed_run_args(out)[1]).gpus == gpus


def test_empty_arguments_and_variables_take_the_defaults(env, capsys):
    for name in ("NUM_GPUS", "DATA_DIR", "OUT_DIR", "PYTHON", "MODEL_PATH", "SEEDS", "EXTRA_ARGS"):
        env.setenv(name, "")
    out = _dry_run(capsys, "electra_base", "", "", "")[1]
    assert out == f"{PREPARE_2_0}\npython3 {ELECTRA_BASE_RUN} --comm_backend device --gpus 0,1,2,3\n"


@pytest.mark.parametrize("use_horovod", ["0", "1"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_prints_its_recipe(env, capsys, name, use_horovod):
    status, out, _ = _dry_run(capsys, name, use_horovod, "2.0", "float16")
    assert status == 0
    launcher, run_args = _printed_run_args(out)
    config = config_from_dict(vars(build_run_parser().parse_args(run_args)))
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


def test_num_gpus_defaults_to_the_presets(env):
    preset = PRESETS["electra_base"]
    plan = launch.plan_launch(dataclasses.replace(preset, num_gpus=2), "1", env={})
    assert plan.command[:5] == ["horovodrun", "-np", "2", "-H", "localhost:2"]


# ----------------------------------------------------------------------------- data preparation

@pytest.mark.parametrize("present, missing", [((), True), (("train",), True), (("dev",), True),
                                              (("train", "dev"), False)])
def test_data_preparation_only_when_a_file_is_missing(env, tmp_path, present, missing):
    _make_data(tmp_path / "squad", splits=present)
    plan = launch.plan_launch(PRESETS["electra_small"], env={})
    assert plan.prepare == (["python3", "-m", "bench.cli", "prepare-data", "--version", "2.0", "--data_dir", "squad"]
                            if missing else None)


def test_data_of_the_other_version_does_not_count(env, tmp_path):
    _make_data(tmp_path / "squad", "2.0")
    assert launch.plan_launch(PRESETS["electra_small"], "0", "1.1", env={}).prepare is not None
    assert launch.plan_launch(PRESETS["electra_small"], "0", "2.0", env={"DATA_DIR": str(tmp_path / "squad")}
                              ).prepare is None


@pytest.fixture
def recorder(env):
    """Stand-ins for the data preparation (subprocess.call) and os.execvp, recording their calls."""
    calls = {"prepare": [], "exec": [], "prepare_status": 0}
    env.delenv("DRY_RUN")

    def call(command):
        calls["prepare"].append(command)
        return calls["prepare_status"]

    def execvp(file, args):
        calls["exec"].append((file, args))
    env.setattr(launch.subprocess, "call", call)
    env.setattr(launch.os, "execvp", execvp)
    return calls


def test_run_prepares_the_data_then_execs_the_command(recorder, tmp_path):
    launch.main(["electra_small", "1"])
    plan = launch.plan_launch(PRESETS["electra_small"], "1", env={})
    assert recorder["prepare"] == [plan.prepare]
    assert recorder["exec"] == [("horovodrun", plan.command)]
    _make_data(tmp_path / "squad")
    recorder["prepare"].clear()
    launch.main(["electra_small"])
    assert recorder["prepare"] == [] and recorder["exec"][-1][1][:3] == ["python3", "-m", "bench.run_squad"]


def test_a_failed_data_preparation_stops_the_run(recorder):
    recorder["prepare_status"] = 3
    assert launch.main(["electra_small"]) == 3 and recorder["exec"] == []
    recorder["prepare_status"] = -15            # killed by SIGTERM: a shell's 128 + 15
    assert launch.main(["electra_small"]) == 143


def test_a_missing_program_is_one_line_and_status_127(env, capsys, tmp_path):
    _make_data(tmp_path / "squad")
    env.setenv("PYTHON", str(tmp_path / "no-such-python"))
    env.delenv("DRY_RUN")
    assert launch.main(["electra_small"]) == 127
    assert "cannot run" in capsys.readouterr().err


def test_the_exit_status_of_the_run_passes_through(env, tmp_path):
    """For real: the wrapper execs the launcher, which execs the command (a stand-in horovodrun)."""
    import subprocess
    _make_data(tmp_path / "squad")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "horovodrun"
    fake.write_text('#!/bin/sh\necho "$@" > "$RECORD"\nexit 7\n')
    fake.chmod(0o755)
    script = Path(__file__).resolve().parent.parent / "commands" / "run_squad2_electra_small.sh"
    done = subprocess.run(["bash", str(script), "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
                               "RECORD": str(tmp_path / "record")})
    assert done.returncode == 7, done.stderr
    recorded = (tmp_path / "record").read_text().split()
    assert recorded[:4] == ["-np", "4", "-H", "localhost:4"] and recorded[-2:] == ["--comm_backend", "horovod"]


# ----------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("args, variables, message", [
    (("electra_small", "2"), {}, "USE_HOROVOD (1st argument) must be 0 or 1, got '2'"),
    (("electra_small", "yes"), {"NUM_GPUS": "x"}, "USE_HOROVOD (1st argument) must be 0 or 1, got 'yes'"),
    (("electra_small", "0", "3.0"), {}, "VERSION (2nd argument) must be 1.1 or 2.0, got '3.0'"),
    (("electra_small", "1"), {"NUM_GPUS": "0"}, "Horovod needs NUM_GPUS >= 1"),
    (("electra_small", "0"), {"NUM_GPUS": "four"}, "NUM_GPUS must be a whole number, got 'four'"),
    (("electra_small", "0"), {"NUM_GPUS": "-1"}, "NUM_GPUS must be a whole number, got '-1'"),
    (("electra_smal",), {}, "unknown preset 'electra_smal'. Did you mean: electra_small"),
])
def test_bad_arguments_fail_clearly(env, capsys, args, variables, message):
    for name, value in variables.items():
        env.setenv(name, value)
    status, out, err = _dry_run(capsys, *args)
    assert (status, out) == (2, "")
    assert err.startswith(f"squad-bench launch: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["electra_small", "1", "2.0", "float16", "extra"], "unexpected argument(s) extra; pass run flags in EXTRA_ARGS"),
    (["electra_small", "--epochs", "1"], "unexpected argument(s) --epochs"),
    ([], "PRESET is required"),
])
def test_usage_errors_exit_2(env, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        _dry_run(capsys, *argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


# ----------------------------------------------------------------------------- --list, --help

def test_list_describes_every_preset(env, capsys):
    assert launch.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: {preset.description}." in out for name, preset in PRESETS.items())
    text = launch.describe_preset(PRESETS["electra_base"], load_references())
    assert "Model: google_electra_base (google/electra-base-discriminator)" in text
    assert "Global batch: 8 per GPU x 1 accumulated x 4 GPUs = 32" in text
    assert "GluonNLP (reproduced), SQuAD 1.1/2.0, fp32/amp: https://github.com/dmlc/gluon-nlp" in text
    assert "Google ELECTRA, SQuAD 1.1/2.0, fp32: https://github.com/google-research/electra" in text
    assert "none for this checkpoint" in launch.describe_preset(PRESETS["cased_bert_base"], load_references())


def test_help_documents_the_environment(env, capsys):
    with pytest.raises(SystemExit):
        launch.main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ENV_VARS)


def test_launch_is_a_squad_bench_command(env, capsys):
    from bench.apps import cli
    assert cli.main(["launch", "electra_base", "1", "2.0", "float16"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("horovodrun -np 4")
    assert "gen-commands" not in cli.SUBCOMMANDS
