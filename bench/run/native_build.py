"""Building the backends' CPU training kernels: one C++ source -> one shared library, compiled once per
machine and cached.

``g++ -O3 -march=native`` (plus the caller's flags, e.g. OpenMP), with no AVX-512 code where this CPU's
detection has none (``bench.run.cpu``: on an AVX2-only CPU ``-march=native`` means that already; under
``scripts/as_avx2_only.sh`` it makes the rehearsal compile what an AVX2-only CPU would). The library is
cached under ``~/.cache/squad-bench/cpu-kernels/`` (``SQUAD_BENCH_CACHE`` moves the root), named by a key
of the sources, the headers in ``bench/run/native/``, the compiler's version, the flags, this CPU's flags
and anything the caller adds (e.g. the framework's version), and written to a temporary name then
renamed, so concurrent ranks and interrupted builds never leave a broken file.

``SQUAD_BENCH_CPU_KERNELS=0`` turns every backend's kernels off (``kernels_enabled``); a backend without
its kernels trains with its framework's operators, which compute the same function more slowly.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from bench.core.io_utils import atomic_path
from bench.run.cpu import cpuinfo_text, detect_cpu

__all__ = ["build_library", "compile_flags", "kernels_enabled", "kernel_cache_dir", "build_failure",
           "library_version", "KERNELS_ENV", "NATIVE_INCLUDE", "COMPILER"]

logger = logging.getLogger("bench.run")

KERNELS_ENV = "SQUAD_BENCH_CPU_KERNELS"
NATIVE_INCLUDE = Path(__file__).with_name("native")        # headers shared by the backends' kernels
COMPILER = "g++"
# -fno-math-errno and -fno-trapping-math let the compiler vectorize floor() in the kernels' exp (2.6x faster
# softmax rows, measured) without changing any result; -ffast-math would, and would drop -inf handling.
BASE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")


def kernels_enabled() -> bool:
    return os.environ.get(KERNELS_ENV, "1") != "0"


def kernel_cache_dir() -> Path:
    root = os.environ.get("SQUAD_BENCH_CACHE") or Path.home() / ".cache" / "squad-bench"
    return Path(root) / "cpu-kernels"


def compile_flags(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    abilities = detect_cpu()
    no_avx512 = ("-mno-avx512f",) if abilities.flags_known and not abilities.avx512 else ()
    return BASE_FLAGS + no_avx512 + extra


def build_library(name: str, sources: tuple[Path, ...], *, flags: tuple[str, ...] = (),
                  include_dirs: tuple[Path, ...] = (), key_parts: tuple[str, ...] = ()) -> Path:
    """The cached shared library ``<name>-<key>.so`` of ``sources``, compiled now if missing.

    Raises OSError (no compiler) or subprocess.CalledProcessError (the compiler failed; ``build_failure``
    says it in one line)."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise OSError(f"{COMPILER} not found on PATH")
    all_flags = compile_flags(flags)
    includes = (NATIVE_INCLUDE, *include_dirs)
    library = kernel_cache_dir() / f"{name}-{_key(compiler, sources, all_flags, key_parts)}.so"
    if not library.exists():
        _compile(compiler, sources, all_flags, includes, library)
    return library


def library_version(library: Path | None) -> str:
    """For results.json's ``versions.cpu_kernels``: a built library's name (it carries the build key), or 'off'."""
    return library.stem if library else "off"


def build_failure(error: Exception) -> str:
    """One line on why ``build_library`` failed."""
    if isinstance(error, subprocess.CalledProcessError):
        lines = [line for line in (error.stderr or "").splitlines() if "error" in line] or \
            (error.stderr or "").strip().splitlines()
        return f"{COMPILER} failed: {lines[0].strip() if lines else 'no message'}"
    return str(error)


def _key(compiler: str, sources: tuple[Path, ...], flags: tuple[str, ...], key_parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in (*sources, *sorted(NATIVE_INCLUDE.glob("*.h"))):
        digest.update(path.read_bytes())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    digest.update("\n".join((version, *flags, *key_parts, _cpu_flags())).encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    """This CPU's flag line (``-march=native`` compiles for it)."""
    return next((line for line in cpuinfo_text().splitlines() if line.startswith("flags")), "")


def _compile(compiler: str, sources: tuple[Path, ...], flags: tuple[str, ...], includes: tuple[Path, ...],
             library: Path) -> None:
    with atomic_path(library) as tmp:
        subprocess.run([compiler, *flags, *(f"-I{path}" for path in includes), *map(str, sources), "-o", str(tmp)],
                       capture_output=True, text=True, check=True)
    logger.info("built %s", library)
