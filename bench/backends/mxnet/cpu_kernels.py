"""The MXNet backend's own CPU training kernel: attention masked softmax + dropout in one operator.

``cpu_kernels.cc`` beside this file is compiled once per machine (g++, OpenMP, ``-march=native``)
against the installed mxnet's operator-library API and loaded with ``mx.library.load``; the
shared library is cached under ``~/.cache/squad-bench/mxnet-kernels/`` (``SQUAD_BENCH_CACHE``
moves it), keyed by the source, the mxnet version, the compiler and the CPU's flags, and written
to a temporary name then renamed, so concurrent ranks and interrupted builds leave no broken file.

Why: in a training step of MiniLM at 384 tokens, MXNet's graph for the attention probabilities
(mask add, softmax, Dropout and their backwards) took about a fifth of the time, most of it drawing
one Mersenne-Twister number per element for dropout (docs/mxnet.md, "Speed"). The operator draws
16 bits per element from a counter-based generator seeded by MXNet's (``mx.random.seed`` repeats
it), and its backward needs no stored mask.

Used for training graphs on the CPU only (``encoders.MaskedSelfAttentionCell``); evaluation keeps
MXNet's softmax. If the kernel cannot be built (no compiler, a compile error) the backend says so
once in the log and trains with MXNet's operators, which compute the same function.
``SQUAD_BENCH_MXNET_KERNELS=0`` turns it off (to compare, or to rule it out).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.backends.mxnet.compat import import_mxnet
from bench.run.cpu import detect_cpu

__all__ = ["TrainingKernels", "training_kernels", "describe_kernels", "kernels_version", "compile_flags",
           "KERNELS_ENV", "OP_NAME", "LAYER_NORM_OP", "kernel_build_dir"]

logger = logging.getLogger("bench.run")

KERNELS_ENV = "SQUAD_BENCH_MXNET_KERNELS"
OP_NAME = "bench_masked_softmax_dropout"
LAYER_NORM_OP = "bench_layer_norm"
SOURCE = Path(__file__).with_name("cpu_kernels.cc")
COMPILER = "g++"
FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


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
    """The kernel, built and loaded on first use; None (said once in the log) where it is off or cannot be built."""
    if os.environ.get(KERNELS_ENV, "1") == "0":
        logger.info("%s=0: MXNet trains with its own softmax and dropout operators", KERNELS_ENV)
        return None
    mx, _ = import_mxnet()
    try:
        library = _built_library(mx)
    except (OSError, subprocess.CalledProcessError) as error:
        logger.warning("the MXNet backend's CPU attention kernel could not be built (%s): training uses MXNet's "
                       "softmax and dropout operators, about 20%% slower (docs/mxnet.md, \"Speed\")", _reason(error))
        return None
    try:
        mx.library.load(str(library), verbose=False)
    except mx.base.MXNetError as error:
        logger.warning("the MXNet backend's CPU attention kernel %s did not load (%s): training uses MXNet's "
                       "softmax and dropout operators", library, str(error).strip().splitlines()[0])
        return None
    kernels = TrainingKernels(library=library, threads=_mxnet_threads())
    logger.info("MXNet training graphs use %s (%s)", describe_kernels(kernels), library)
    return kernels


def describe_kernels(kernels: TrainingKernels | None) -> str:
    """For logs and the speed report: whether training graphs use the kernels."""
    return f"our CPU training kernels, {kernels.threads} threads" if kernels else "MXNet's operators only"


def kernels_version(kernels: TrainingKernels | None) -> str:
    """For results.json's ``versions``: the library's name (it carries the build key), or 'off'."""
    return kernels.library.stem if kernels else "off"


def kernel_build_dir() -> Path:
    root = os.environ.get("SQUAD_BENCH_CACHE") or Path.home() / ".cache" / "squad-bench"
    return Path(root) / "mxnet-kernels"


def _built_library(mx) -> Path:
    mxnet_dir = Path(mx.__file__).parent
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise OSError(f"{COMPILER} not found on PATH")
    sources = (SOURCE, mxnet_dir / "src" / "lib_api.cc", mxnet_dir / "include" / "mxnet" / "lib_api.h")
    library = kernel_build_dir() / f"cpu_kernels-{_build_key(mx, compiler, sources)}.so"
    if not library.exists():
        _compile(compiler, sources[:2], mxnet_dir / "include", library)
    return library


def _build_key(mx, compiler: str, sources: tuple[Path, ...]) -> str:
    """What the library depends on: the sources, mxnet's version, the compiler, its flags, and (for
    ``-march=native``) this CPU's flags."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    digest.update("\n".join((mx.__version__, version, *compile_flags(), _cpu_flags())).encode())
    return digest.hexdigest()[:16]


def compile_flags() -> tuple[str, ...]:
    """``FLAGS``, and no AVX-512 code where this CPU's detection has none (``bench.run.cpu``): on an
    AVX2-only CPU ``-march=native`` already means that; under ``scripts/as_avx2_only.sh`` (detection
    without avx512) it makes the rehearsal compile what an AVX2-only CPU would."""
    abilities = detect_cpu()
    return FLAGS + (("-mno-avx512f",) if abilities.flags_known and not abilities.avx512 else ())


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.startswith("flags")), "")


def _compile(compiler: str, sources: tuple[Path, ...], include: Path, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{library.name}.", suffix=".tmp", dir=library.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *compile_flags(), f"-I{include}", *map(str, sources), "-o", tmp],
                       capture_output=True, text=True, check=True)
        os.replace(tmp, library)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("built the MXNet backend's CPU attention kernel: %s", library)


def _mxnet_threads() -> int:
    """The OpenMP threads MXNet's operators use (``compat._give_mxnet_the_threads`` set them before the import)."""
    for name in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _reason(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        lines = (error.stderr or "").strip().splitlines()
        return f"{COMPILER} failed: {lines[0] if lines else 'no message'}"
    return str(error)
