"""What every benchmark here shares: runs of the real CLI (``python -m bench.cli ...``), one process each.
Imported by a benchmark script after it has put the repository on ``sys.path``.

A finished run (its folder holds ``results.json``) is reused when it ran with the flags asked for, so an
interrupted benchmark resumes where it stopped; one that ran with other flags (an older recipe) is run again,
saying which flags changed. A failed command stops the benchmark with the command's exit status.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.core.flags import config_from_dict, config_to_dict, flags_to_argv

__all__ = ["REPO", "squad_bench", "run"]

REPO = Path(__file__).resolve().parent.parent


def squad_bench(*argv: str, benchmark: str) -> None:
    """One ``python -m bench.cli`` command, echoed; a failure stops ``benchmark`` with its exit status."""
    command = [sys.executable, "-m", "bench.cli", *argv]
    print("+", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=REPO, check=False).returncode
    if status:
        raise SystemExit(f"{benchmark} benchmark: {' '.join(argv[:1])} failed with exit status {status}")


def run(flags: dict, *, benchmark: str) -> dict:
    """One run of the run script with ``flags``; its results.json (reused when the folder holds a finished
    run of the same flags)."""
    results = Path(flags["output_dir"]) / "results.json"
    if results.is_file():
        record = json.loads(results.read_text(encoding="utf-8"))
        changed = changed_flags(flags, record["hyperparameters"])
        if not changed:
            return record
        print(f"+ {results.parent}: finished with other flags ({', '.join(changed)}); running again", flush=True)
    squad_bench("run", *flags_to_argv({**flags, "overwrite_output_dir": True}), benchmark=benchmark)
    return json.loads(results.read_text(encoding="utf-8"))


def changed_flags(flags: dict, recorded: dict) -> list[str]:
    """``--name old -> new`` for each of ``flags`` whose value (as the run script would take it) differs from
    a results.json's ``hyperparameters``."""
    wanted = config_to_dict(config_from_dict(flags))
    return [f"--{name} {recorded.get(name)} -> {wanted[name]}" for name in flags if recorded.get(name) != wanted[name]]
