"""``squad-bench launch``: run a recipe of ``bench.core.presets`` on one machine.

``commands/run_squad2_<preset>.sh`` are two-line wrappers of this command; it
builds the full run command (the recipe spelled out flag by flag, so a printed
command can be copied and edited), prepares the data when it is missing, and
replaces itself with the run (``os.execvp``: signals and the exit status pass
through).

Usage::

    squad-bench launch PRESET [USE_HOROVOD] [VERSION] [DTYPE]
    squad-bench launch --list          # every preset: recipe, model, global batch, published numbers

    squad-bench launch electra_base                          # 4 GPUs, SQuAD 2.0, float32
    squad-bench launch electra_base 1 2.0 float16            # Horovod, SQuAD 2.0, AMP
    DRY_RUN=1 NUM_GPUS=2 squad-bench launch albert_base 0 1.1   # print the command, run nothing
    bash commands/run_squad2_electra_base.sh 1 2.0 float16   # the same, from any folder

Arguments (an empty one takes its default):
    USE_HOROVOD  0 or 1 (default 0): 1 runs ``horovodrun -np N -H localhost:N PYTHON -m bench.run_squad
                 ... --comm_backend horovod``; 0 runs ``PYTHON -m bench.run_squad ... --comm_backend device
                 --gpus 0,1,..,N-1`` (``--gpus -1``, the CPU, when NUM_GPUS=0)
    VERSION      1.1 or 2.0 (default 2.0)
    DTYPE        float32 (default), float16, bfloat16, ...: the run script's --dtype

Environment (an empty variable counts as unset):
    NUM_GPUS     GPUs to use [the preset's, 4]; batch sizes are per GPU, so this changes the global batch
    DATA_DIR     [squad]; when DATA_DIR/train-vV.json or dev-vV.json is missing,
                 ``PYTHON -m bench.cli prepare-data --version V --data_dir DATA_DIR`` runs first
    OUT_DIR      [fintune_<model>_squad_<VERSION>]
    PYTHON       [python3]
    MODEL_PATH   adds --model_path MODEL_PATH
    SEEDS        e.g. 1,2,3: adds --seeds SEEDS
    EXTRA_ARGS   "--flag value ...": appended, split on spaces and tabs (no quoting, first line only)
    DRY_RUN=1    print the command (after a ``# ...`` line naming the data preparation it would need
                 first) instead of running anything

Bad arguments exit with status 2 and one line naming the argument.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping

from bench.core.errors import BenchError
from bench.core.flags import FLAG_BY_NAME
from bench.core.models import get_model_spec
from bench.core.presets import PRESETS, Preset, get_preset, global_batch
from bench.core.references import SOURCES, Reference, load_references, select_references
from bench.core.squad_files import squad_file_name

__all__ = ["LaunchError", "Launch", "recipe_args", "shell_join", "plan_launch", "render_dry_run",
           "describe_preset", "build_parser", "main"]

PROG = "squad-bench launch"
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=,+@%-]+")


class LaunchError(BenchError, ValueError):
    """An argument or environment variable of the launcher that cannot work; the message names it."""


@dataclass(frozen=True)
class Launch:
    command: list[str]              # what runs (exec'd)
    prepare: list[str] | None       # the data preparation to run first; None when the data is there


def _format_value(value) -> str:
    """Short, exact text for a flag value (3.0 -> 3, 0.0003 -> 0.0003, 5e-05 -> 5e-05)."""
    if isinstance(value, float):
        text = f"{value:g}"
        return text if float(text) == value else repr(value)
    return str(value)


def recipe_args(preset: Preset) -> list[str]:
    """The preset's flags as run-script arguments, in the preset's order (false switches left out)."""
    words = []
    for name, value in preset.flags.items():
        if FLAG_BY_NAME[name].store_true:
            words += [f"--{name}"] if value else []
        else:
            words += [f"--{name}", _format_value(value)]
    return words


def shell_join(words: list[str]) -> str:
    """Words as a POSIX shell reads them back: shlex.join, but a ``'`` is written ``'\\''``
    (as the bash scripts printed it) instead of shlex's ``'"'"'``."""
    return " ".join(word if _SAFE_WORD.fullmatch(word) else "'" + word.replace("'", "'\\''") + "'"
                    for word in words)


def _choice(value: str, default: str, allowed: tuple[str, ...], what: str) -> str:
    value = value or default
    if value not in allowed:
        raise LaunchError(f"{what} must be {' or '.join(allowed)}, got '{value}'")
    return value


def _extra_args(text: str) -> list[str]:
    """EXTRA_ARGS split as bash's ``read -r -a`` does: first line only, on spaces and tabs."""
    return [word for word in re.split(r"[ \t]+", text.split("\n", 1)[0]) if word]


def plan_launch(preset: Preset, use_horovod: str = "", version: str = "", dtype: str = "",
                env: Mapping[str, str] | None = None) -> Launch:
    """The command (and the data preparation) for a preset, from the arguments and the environment.

    Relative DATA_DIR paths are checked against the current folder, as the run resolves them.
    """
    env = os.environ if env is None else env
    use_horovod = _choice(use_horovod, "0", ("0", "1"), "USE_HOROVOD (1st argument)")
    version = _choice(version, "2.0", ("1.1", "2.0"), "VERSION (2nd argument)")
    num_gpus = env.get("NUM_GPUS") or str(preset.num_gpus)
    if not re.fullmatch(r"[0-9]+", num_gpus):
        raise LaunchError(f"NUM_GPUS must be a whole number, got '{num_gpus}'")
    data_dir = env.get("DATA_DIR") or "squad"
    python = env.get("PYTHON") or "python3"

    args = ["--model_name", preset.model_name, "--data_dir", data_dir,
            "--output_dir", env.get("OUT_DIR") or f"fintune_{preset.model_name}_squad_{version}",
            "--version", version, "--dtype", dtype or "float32", *recipe_args(preset)]
    for variable, flag in (("MODEL_PATH", "--model_path"), ("SEEDS", "--seeds")):
        if env.get(variable):
            args += [flag, env[variable]]
    args += _extra_args(env.get("EXTRA_ARGS", ""))

    if use_horovod == "1":
        if int(num_gpus) < 1:
            raise LaunchError("Horovod needs NUM_GPUS >= 1")
        command = ["horovodrun", "-np", num_gpus, "-H", f"localhost:{num_gpus}", python, "-m", "bench.run_squad",
                   *args, "--comm_backend", "horovod"]
    else:
        gpus = ",".join(str(i) for i in range(int(num_gpus))) or "-1"   # NUM_GPUS=0: the CPU
        command = [python, "-m", "bench.run_squad", *args, "--comm_backend", "device", "--gpus", gpus]

    has_data = all(os.path.isfile(os.path.join(data_dir, squad_file_name(split, version)))
                   for split in ("train", "dev"))
    prepare = None if has_data else [python, "-m", "bench.cli", "prepare-data", "--version", version,
                                     "--data_dir", data_dir]
    return Launch(command, prepare)


def render_dry_run(launch: Launch) -> str:
    """What DRY_RUN=1 prints: the data preparation as a comment line when it is needed, then the command."""
    lines = [] if launch.prepare is None else [
        f"# the data is missing; this would run first: {shell_join(launch.prepare)}"]
    return "\n".join(lines + [shell_join(launch.command)]) + "\n"


def _reference_lines(preset: Preset, references: list[Reference]) -> list[str]:
    """One line per source: which versions/precisions it reports and its citation(s)."""
    lines = []
    for source in preset.reference_sources:
        rows = select_references(references, model=preset.model_name, source=source)
        if not rows:
            lines.append(f"{SOURCES[source]}: no numbers in reference_results/ for {preset.model_name}")
            continue
        versions = "/".join(sorted({r.squad_version for r in rows}))
        precisions = "/".join(sorted({r.precision for r in rows}, key=("fp32", "amp").index))
        citations = " ".join(dict.fromkeys(r.citation for r in rows))
        lines.append(f"{SOURCES[source]}, SQuAD {versions}, {precisions}: {citations}")
    return lines or ["none for this checkpoint"]


def describe_preset(preset: Preset, references: list[Reference]) -> str:
    """A preset's recipe, model, global batch and published numbers (what ``--list`` prints)."""
    flags = preset.flags
    lines = [f"{preset.name}: {preset.description}.",
             f"  Model: {preset.model_name} ({get_model_spec(preset.model_name).hub_id})",
             f"  Global batch: {flags['batch_size']} per GPU x {flags['num_accumulated']} accumulated x "
             f"{preset.num_gpus} GPUs = {global_batch(preset)}",
             "  Published numbers (reference_results/*.csv, compared in reports/README.md):"]
    lines += [f"    {line}" for line in _reference_lines(preset, references)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a recipe (bench/core/presets.py) on this machine; "
                    "commands/run_squad2_<preset>.sh call this.",
        epilog=__doc__[__doc__.index("Arguments"):])
    parser.add_argument("preset", nargs="?", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("use_horovod", nargs="?", default="", metavar="USE_HOROVOD", help="0 or 1 (default 0)")
    parser.add_argument("version", nargs="?", default="", metavar="VERSION", help="1.1 or 2.0 (default 2.0)")
    parser.add_argument("dtype", nargs="?", default="", metavar="DTYPE", help="--dtype (default float32)")
    parser.add_argument("--list", action="store_true",
                        help="describe every preset (recipe, model, global batch, published numbers) and exit")
    return parser


def _run_prepare(command: list[str]) -> int:
    try:
        status = subprocess.call(command)
    except OSError as exc:
        print(f"{PROG}: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    return status if status >= 0 else 128 - status     # killed by a signal: a shell's 128 + N


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unexpected = parser.parse_known_args(argv)
    if unexpected:
        parser.error(f"unexpected argument(s) {' '.join(unexpected)}; "
                     "pass run flags in EXTRA_ARGS='--flag value ...'")
    if args.list:
        references = load_references()
        print("\n\n".join(describe_preset(preset, references) for preset in PRESETS.values()))
        return 0
    if args.preset is None:
        parser.error("PRESET is required (see --list)")
    try:
        launch = plan_launch(get_preset(args.preset), args.use_horovod, args.version, args.dtype)
    except BenchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("DRY_RUN") == "1":
        sys.stdout.write(render_dry_run(launch))
        return 0
    if launch.prepare is not None:
        status = _run_prepare(launch.prepare)
        if status:
            return status
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(launch.command[0], launch.command)
    except OSError as exc:
        print(f"{PROG}: cannot run {launch.command[0]}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
