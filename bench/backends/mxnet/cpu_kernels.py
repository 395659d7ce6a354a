"""The MXNet backend's own CPU training kernels: attention masked softmax + dropout, and LayerNorm.

``cpu_kernels.cc`` beside this file is compiled once per machine against the installed mxnet's
operator-library API (``include/``, ``src/lib_api.cc``) by ``bench.run.native_build`` (g++, OpenMP,
``-march=native``; cached, keyed by source, mxnet version, compiler and CPU) and loaded with
``mx.library.load``.

Why: in a training step of MiniLM at 384 tokens, MXNet's graph for the attention probabilities (mask
add, softmax, Dropout and their backwards) and LayerNorm's backward took about a third of the time,
most of it drawing one Mersenne-Twister number per element for dropout and in generic reductions
(docs/mxnet.md, "Speed"). The operators draw dropout's 16 bits per element from a counter-based
generator seeded by MXNet's (``mx.random.seed`` repeats it), and store no mask.

Used in training graphs on the CPU only (``encoders.use_training_kernels``); evaluation keeps MXNet's
operators. If the kernels cannot be built (no compiler, a compile error) the backend says so once in
the log and trains with MXNet's operators, which compute the same function.
``SQUAD_BENCH_CPU_KERNELS=0`` turns them off (to compare, or to rule them out).
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.backends.mxnet.compat import import_mxnet
from bench.run.cpu import detect_cpu
from bench.run.native_build import KERNELS_ENV, build_failure, build_library, kernels_enabled, library_version

__all__ = ["TrainingKernels", "training_kernels", "describe_kernels", "kernels_version", "OP_NAME", "LAYER_NORM_OP"]

logger = logging.getLogger("bench.run")

OP_NAME = "bench_masked_softmax_dropout"
LAYER_NORM_OP = "bench_layer_norm"
SOURCE = Path(__file__).with_name("cpu_kernels.cc")


@dataclass(frozen=True)
class TrainingKernels:
    """The loaded operator and the OpenMP threads it runs on (MXNet's own operators' count)."""
    library: Path
    threads: int

    def masked_softmax_dropout(self, F, scores, valid_length, heads: int, p: float):
        """(B * heads, L, L) scores, (B,) valid lengths -> dropped softmax over the valid keys."""
        return getattr(F, OP_NAME)(scores, valid_length, heads=heads, p=p, threads=self.threads)

    def layer_norm(self, F, data, gamma, beta, eps: float):
        """LayerNorm over the last axis of ``data``, which must be an intermediate value (its gradient is
        written, not added). gamma and beta go in through a copy, whose backward honours their
        ``grad_req='add'`` (gradient accumulation): the operator only writes its gradients."""
        return getattr(F, LAYER_NORM_OP)(data, F.identity(gamma), F.identity(beta), eps=eps, threads=self.threads)


@functools.lru_cache(maxsize=None)
def training_kernels() -> TrainingKernels | None:
    """The kernels, built and loaded on first use; None (said once in the log) where they are off or cannot be built."""
    if not kernels_enabled():
        logger.info("%s=0: MXNet trains with its own softmax, dropout and LayerNorm operators", KERNELS_ENV)
        return None
    mx, _ = import_mxnet()
    mxnet_dir = Path(mx.__file__).parent
    try:
        library = build_library("mxnet-kernels", (SOURCE, mxnet_dir / "src" / "lib_api.cc"), flags=("-fopenmp",),
                                include_dirs=(mxnet_dir / "include",),
                                key_parts=(mx.__version__, (mxnet_dir / "include" / "mxnet" / "lib_api.h").read_text()))
    except (OSError, subprocess.CalledProcessError) as error:
        logger.warning("the MXNet backend's CPU training kernels could not be built (%s): training uses MXNet's "
                       "operators, about 30%% slower (docs/mxnet.md, \"Speed\")", build_failure(error))
        return None
    try:
        mx.library.load(str(library), verbose=False)
    except mx.base.MXNetError as error:
        logger.warning("the MXNet backend's CPU training kernels %s did not load (%s): training uses MXNet's "
                       "operators", library, str(error).strip().splitlines()[0])
        return None
    kernels = TrainingKernels(library=library, threads=_mxnet_threads())
    logger.info("MXNet training graphs use %s (%s)", describe_kernels(kernels), library)
    return kernels


def describe_kernels(kernels: TrainingKernels | None) -> str:
    """For logs and the speed report: whether training graphs use the kernels."""
    return f"our CPU training kernels, {kernels.threads} threads" if kernels else "MXNet's operators only"


def kernels_version(kernels: TrainingKernels | None) -> str:
    """For results.json's ``versions.cpu_kernels``."""
    return library_version(kernels.library if kernels else None)


def _mxnet_threads() -> int:
    """The OpenMP threads MXNet's operators use (``compat._give_mxnet_the_threads`` set them before the import)."""
    for name in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return detect_cpu().cores_available
