"""What every benchmark here shares: runs of the real CLI (``python -m bench.cli ...``), one process each.
Imported by a benchmark script after it has put the repository on ``sys.path``.

A finished run (its folder holds ``results.json``) is reused, so an interrupted benchmark resumes where it
stopped; a failed command stops the benchmark with the command's exit status.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.core.flags import flags_to_argv

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
    """One run of the run script with ``flags``; its results.json (reused when the folder holds a finished run)."""
    results = Path(flags["output_dir"]) / "results.json"
    if not results.is_file():
        squad_bench("run", *flags_to_argv({**flags, "overwrite_output_dir": True}), benchmark=benchmark)
    return json.loads(results.read_text(encoding="utf-8"))
