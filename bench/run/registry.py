"""Backends registered by name and imported lazily.

``get_backend("torch")`` imports ``bench.backends.torch`` only when asked, so the
core never pulls in a deep-learning framework. A backend whose extra is not
installed fails loudly with the pip command that installs it.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from bench.core.errors import BenchError

__all__ = ["BACKENDS", "BackendUnavailable", "get_backend"]


@dataclass(frozen=True)
class BackendInfo:
    module: str             # module that implements the backend
    requires: tuple         # top-level modules it needs
    install_hint: str


BACKENDS = {
    "torch": BackendInfo("bench.backends.torch", ("torch", "transformers", "safetensors"),
                         'pip install "torch==2.13.0" -e ".[torch]"'),
    "mxnet": BackendInfo("bench.backends.mxnet", ("mxnet", "gluonnlp"),
                         'bash scripts/install_mxnet.sh  (MXNet 1.9.1 needs numpy < 2; see README)'),
}


class BackendUnavailable(BenchError, RuntimeError):
    pass


def get_backend(name: str):
    """Import and return the backend module registered as ``name``."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}")
    info = BACKENDS[name]
    for requirement in info.requires:
        if importlib.util.find_spec(requirement) is None:
            raise BackendUnavailable(
                f"--backend {name} needs the Python package {requirement!r}, which is not installed. "
                f"Install it with: {info.install_hint}")
    try:
        return importlib.import_module(info.module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "bench":
            raise BackendUnavailable(f"--backend {name} is not implemented yet ({info.module} missing)") from exc
        raise
