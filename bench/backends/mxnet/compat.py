"""Importing MXNet 1.9.1 + GluonNLP 0.10.0 next to a modern scientific stack.

MXNet 1.9.1 (the last 1.x release) was built for numpy < 1.24:

* it cannot run with numpy 2 at all (compiled against the numpy 1 C API);
* with numpy 1.24 - 1.26 it imports only once the alias ``numpy.bool`` (removed in
  numpy 1.24) is restored, which ``import_mxnet`` does: the alias is the builtin
  ``bool``, exactly what numpy < 1.24 had, so no code sees a different value;
* on import, when ``OMP_NUM_THREADS`` is unset, it sets the calling thread's OpenMP
  thread count to 1. That thread count is shared with torch in the same process,
  which would then run single-threaded; ``import_mxnet`` puts it back.

Every module of this backend imports mxnet through ``import_mxnet()``, never directly.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import sys
import warnings

from bench.run.registry import BackendUnavailable

__all__ = ["import_mxnet", "set_openmp_threads", "MXNetUnavailable", "INSTALL_HINT", "MXNET_VERSION",
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
        openmp_threads_before = _default_openmp_threads()
        mx, nlp = _import_modules()
        _check_versions(mx, nlp)
        _restore_openmp_threads(mx, openmp_threads_before)
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


def _default_openmp_threads() -> int | None:
    """The OpenMP thread count to keep: torch's if torch is loaded, else what a fresh process gets;
    None when OMP_NUM_THREADS decides it."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None       # mxnet leaves the count alone when the variable is set
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _restore_openmp_threads(mx, threads: int | None) -> None:
    # MXSetNumOMPThreads is mxnet's own C API for omp_set_num_threads on the calling thread.
    if threads:
        mx.base.check_call(mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(threads)))


def set_openmp_threads(threads: int) -> None:
    """Set MXNet's OpenMP thread count (e.g. a machine's cores shared by several processes)."""
    _restore_openmp_threads(import_mxnet()[0], threads)
