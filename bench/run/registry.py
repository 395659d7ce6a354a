"""Backends registered by name and imported lazily, and the resolver of registry references.

``get_backend("torch")`` imports ``bench.backends.torch`` only when asked, so the
core never pulls in a deep-learning framework, and returns its ``BACKEND`` object (the
``bench.run.backend.Backend`` contract). A backend whose extra is not installed fails
loudly with the pip command that installs it.

The core's registries (model families, heads, losses) name their per-backend implementations
as ``"module:attribute"`` strings; ``load_implementation`` imports them when first used.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from bench.core.errors import BenchError

__all__ = ["BACKENDS", "BackendUnavailable", "get_backend", "unavailable_reason", "load_implementation"]


@dataclass(frozen=True)
class BackendInfo:
    module: str             # module that implements the backend
    requires: tuple         # top-level modules it needs
    install_hint: str


BACKENDS = {
    "torch": BackendInfo("bench.backends.torch", ("torch", "transformers", "safetensors"),
                         'pip install "torch==2.13.0" -e ".[torch]"'),
    "mxnet": BackendInfo("bench.backends.mxnet", ("mxnet", "gluonnlp"),
                         'bash scripts/install_mxnet.sh  (MXNet 1.9.1 needs numpy < 2; see docs/mxnet.md)'),
}


class BackendUnavailable(BenchError, RuntimeError):
    pass


def unavailable_reason(name: str) -> str | None:
    """Why the backend ``name`` cannot be loaded here (unknown, or a package missing, with the install
    command), or None when it can; imports nothing, so a parent process can ask without loading a framework."""
    if name not in BACKENDS:
        return f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}"
    info = BACKENDS[name]
    for requirement in info.requires:
        if importlib.util.find_spec(requirement) is None:
            return (f"--backend {name} needs the Python package {requirement!r}, which is not installed. "
                    f"Install it with: {info.install_hint}")
    return None


def get_backend(name: str):
    """Import the backend registered as ``name`` and return its ``BACKEND`` (a ``Backend``)."""
    reason = unavailable_reason(name)
    if reason:
        raise BackendUnavailable(reason)
    return importlib.import_module(BACKENDS[name].module).BACKEND


def load_implementation(reference: str):
    """The object a registry reference ``"package.module:attribute"`` names (imported on first use)."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
