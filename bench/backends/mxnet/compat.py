"""Importing MXNet 1.9.1 + GluonNLP 0.10.0 next to a modern scientific stack.

MXNet 1.9.1 (the last 1.x release) was built for numpy < 1.24:

* it cannot run with numpy 2 at all (compiled against the numpy 1 C API);
* with numpy 1.24 - 1.26 it imports only once the alias ``numpy.bool`` (removed in
  numpy 1.24) is restored, which ``import_mxnet`` does: the alias is the builtin
  ``bool``, exactly what numpy < 1.24 had, so no code sees a different value;
* it sizes its operators' OpenMP teams once, when the library loads: with neither
  ``OMP_NUM_THREADS`` nor ``MXNET_OMP_MAX_THREADS`` set it takes half the processors
  (it assumes two hyperthreads per core), one thread on a 2-core machine, and sets the
  importing thread's count (shared with torch) to that as well. ``import_mxnet`` sets
  ``MXNET_OMP_MAX_THREADS`` first, to torch's thread count (or the cores this process may
  use): MXNet's engine threads then use them, and torch's count is left alone. Before
  this, MXNet ran every operator on one thread of two (training 0.50x torch's speed at
  384 tokens, evaluation 0.55x, measured on a 2-core AMD EPYC).

Every module of this backend imports mxnet through ``import_mxnet()``, never directly.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

from bench.run.registry import BackendUnavailable

__all__ = ["import_mxnet", "MXNetUnavailable", "INSTALL_HINT", "MXNET_VERSION",
           "GLUONNLP_VERSION"]

MXNET_VERSION = "1.9.1"
GLUONNLP_VERSION = "0.10.0"
INSTALL_HINT = "bash scripts/install_mxnet.sh"

_imported: tuple | None = None


class MXNetUnavailable(BackendUnavailable):
    """MXNet or GluonNLP missing, at the wrong version, or unusable with the installed numpy."""


def import_mxnet():
    """Import and return ``(mxnet, gluonnlp)``; raise MXNetUnavailable with the install hint if impossible.

    Safe to call repeatedly (the modules are imported once).
    """
    global _imported
    if _imported is None:
        _check_numpy()
        _give_mxnet_the_threads()
        mx, nlp = _import_modules()
        _check_versions(mx, nlp)
        _imported = (mx, nlp)
    return _imported


def _check_numpy() -> None:
    import numpy

    major = int(numpy.__version__.split(".")[0])
    if major >= 2:
        raise MXNetUnavailable(
            f"--backend mxnet needs numpy < 2 (MXNet {MXNET_VERSION} is compiled against the numpy 1 C API), "
            f"but numpy {numpy.__version__} is installed. Install the MXNet extra, which moves numpy to "
            f"1.26.x and keeps torch: {INSTALL_HINT}")
    # Why the alias: mxnet 1.9.1 reads numpy.bool at import; numpy >= 1.24 removed it (it was `bool`).
    if "bool" not in numpy.__dict__:
        numpy.bool = bool


def _import_modules():
    try:
        with warnings.catch_warnings():
            # mxnet's own import touches numpy functions removed by NEP 32 and distutils' LooseVersion:
            # noise about mxnet's internals, not about this project's code.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mxnet(\.|$)")
            mx = importlib.import_module("mxnet")
            nlp = importlib.import_module("gluonnlp")
    except ImportError as exc:
        raise MXNetUnavailable(
            f"--backend mxnet needs mxnet=={MXNET_VERSION} and gluonnlp=={GLUONNLP_VERSION} "
            f"({type(exc).__name__}: {exc}). Install them with: {INSTALL_HINT}") from exc
    # At run time too, mxnet.ndarray.utils asks scipy for a deprecated namespace on every array
    # conversion (thousands of warnings per run); only warnings raised inside mxnet are silenced.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mxnet(\.|$)")
    return mx, nlp


def _check_versions(mx, nlp) -> None:
    if mx.__version__ != MXNET_VERSION or nlp.__version__ != GLUONNLP_VERSION:
        raise MXNetUnavailable(
            f"--backend mxnet is written for mxnet {MXNET_VERSION} + gluonnlp {GLUONNLP_VERSION}, found "
            f"mxnet {mx.__version__} + gluonnlp {nlp.__version__}. Install the pinned versions with: "
            f"{INSTALL_HINT}")


def _give_mxnet_the_threads() -> None:
    """Set ``MXNET_OMP_MAX_THREADS`` (read once, when libmxnet loads) unless the user set it or
    ``OMP_NUM_THREADS`` (which MXNet then follows): torch's thread count if torch is loaded, else the
    cores this process may use, shared among the processes a launcher started on this machine
    (oversubscribed OpenMP threads spin and stall each other)."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_OMP_MAX_THREADS"):
        return
    from bench.run.cpu import threads_per_process
    from bench.run.distributed import local_processes

    torch = sys.modules.get("torch")       # torch's count, e.g. squad-bench speed --threads: both frameworks alike
    torch_threads = torch.get_num_threads() if hasattr(torch, "get_num_threads") else None
    os.environ["MXNET_OMP_MAX_THREADS"] = str(threads_per_process(local_processes(), torch_threads))
