"""The Hugging Face baseline's own environment: transformers 4.57.6 in a virtual environment.

``QuestionAnsweringPipeline`` was removed in transformers 5.x, so the baseline runs from a
virtual environment with ``HF_ENV_PACKAGES``, created on first use; ``hf_worker.py`` runs there.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.apps.speed.common import SpeedError

HF_ENV_PACKAGES = ("torch==2.13.0", "transformers==4.57.6", "accelerate==1.12.0")
DEFAULT_HF_ENV = Path.home() / ".cache" / "squad-bench" / "hf-4.57.6"


def ensure_hf_env(path: Path) -> Path:
    """The python of a virtual environment with HF_ENV_PACKAGES, created (or completed) when needed.

    A marker file lists what was installed, so later runs reuse the environment at once.
    ``torch==2.13.0`` resolves to the local CPU wheel on a machine without a GPU.
    """
    python = path / "bin" / "python"
    marker = path / "squad-bench-packages.txt"
    wanted = "\n".join(HF_ENV_PACKAGES)
    if python.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return python
    print(f"[speed] setting up the Hugging Face baseline environment in {path} "
          f"({' '.join(HF_ENV_PACKAGES)}) ...", file=sys.stderr, flush=True)
    if not python.is_file():
        _checked([sys.executable, "-m", "venv", str(path)], "python -m venv")
    _checked([str(python), "-m", "pip", "install", "--quiet", *HF_ENV_PACKAGES], "pip install")
    marker.write_text(wanted, encoding="utf-8")
    return python


def _checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SpeedError(f"{what} failed while setting up the baseline environment (pass --skip_baselines "
                         f"to run without it):\n{done.stderr[-2000:]}")


def hf_versions(figures: dict) -> dict | None:
    """The library versions the baseline worker reported (the first of its results that has them)."""
    for figure in figures.values():
        for value in figure.values() if isinstance(figure, dict) else ():
            if isinstance(value, dict) and "versions" in value and value.get("task"):
                return value["versions"]
    return None
