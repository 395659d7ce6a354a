#!/usr/bin/env bash
# Build and install Horovod 0.28.1 against the torch (and the mxnet) that are already installed.
#
#   bash scripts/install_horovod.sh            # build, install, verify: minutes (PyTorch + MXNet:
#                                              # 9.5-13 min wall on 2 shared, busy cores)
#   PYTHON=/path/to/python bash scripts/install_horovod.sh
#   WITH_MXNET=0 bash scripts/install_horovod.sh   # PyTorch only, even where mxnet is installed
#   REBUILD=1 bash scripts/install_horovod.sh      # build afresh even when Horovod works (no wheel cache)
#
# What it builds:
#   * CPU torch (torch.version.cuda is None): PyTorch + Gloo, no GPU operations.
#   * CUDA torch and nvcc on PATH:           PyTorch + Gloo + NCCL (HOROVOD_GPU_OPERATIONS=NCCL).
#     Set HOROVOD_NCCL_HOME / HOROVOD_CUDA_HOME yourself when they are not in the default places.
#   * + MXNet (horovod.mxnet, for --backend mxnet --comm_backend horovod) when mxnet imports
#     (scripts/install_mxnet.sh; scripts/test.sh runs it first): WITH_MXNET=auto, the default.
#     WITH_MXNET=1 requires it, WITH_MXNET=0 leaves it out. Horovod's CMake refuses NCCL
#     operations next to a CPU-only mxnet, so a CUDA torch with the CPU mxnet wheel stops with
#     that reason (install a CUDA mxnet, or WITH_MXNET=0).
#
# Why it is not just "pip install horovod":
#   * The 0.28.1 sdist hard-codes C++14 (CMAKE_CXX_STANDARD 14) but torch >= 2.1 headers
#     fail with "#error You need C++17 to compile PyTorch". Fixed upstream after the release
#     (horovod/horovod#3996, #4014, PR #3998) but never released, so a CXX wrapper rewrites
#     -std=c++14 / -std=gnu++14 to the C++17 form (for the MXNet library too: mxnet's headers
#     compile as C++17).
#   * The build must see the installed torch: --no-build-isolation (an isolated build would
#     download an unpinned torch with several GB of CUDA packages).
#   * pip's wheel cache is keyed by the sdist only, so it would happily reuse a Horovod wheel
#     compiled against another torch (import then dies with undefined symbols). We keep our own
#     wheel cache keyed by (horovod, python, torch, mxnet, gpu ops) and verify every install.
#   * MXNet: Horovod's CMake (cmake/Modules/FindMxnet.cmake) finds MXNet by running
#     `python -c "import mxnet ..."`, which fails with numpy >= 1.24 (mxnet 1.9.1 reads the removed
#     alias numpy.bool), and takes the C++ ABI from mxnet.library.compiled_with_gcc_cxx11_abi(),
#     which mxnet 1.9.1 lacks, so it would assume the new ABI although the pip wheel's libmxnet.so
#     uses the old one (_GLIBCXX_USE_CXX11_ABI=0). For the build only, a sitecustomize.py on
#     PYTHONPATH restores numpy.bool = bool before mxnet is imported and supplies that function
#     with the ABI read from libmxnet.so; Horovod then builds its MXNet library (and a copy of Gloo)
#     with the old ABI, next to the PyTorch one with torch's new ABI. At run time
#     bench.backends.mxnet.compat restores the alias before horovod.mxnet is imported.
#
# Idempotent: exits within seconds when horovod.torch (and horovod.mxnet, when MXNet is wanted)
# import and were built with Gloo (what `horovodrun --check-build` lists as PyTorch [+ MXNet] +
# Gloo; it is printed after a fresh install). Fails loudly (non-zero, with the reason) on every error.
set -euo pipefail

HOROVOD_VERSION=0.28.1
PYTHON=${PYTHON:-python}
WHEEL_CACHE_ROOT=${HOROVOD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/squad-bench/horovod-wheels}

log() { echo "[install_horovod] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# horovodrun is installed next to the interpreter; use that one, not whatever PATH finds first.
horovodrun_bin() { echo "$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")/horovodrun"; }

torch_version() { "$PYTHON" -c 'import torch; print(torch.__version__)'; }

# True when horovodrun is installed and horovod.torch imports with this torch, built with Gloo
# (and NCCL when asked), and, when MXNet is wanted, horovod.mxnet imports with this mxnet (its
# import checks the mxnet version recorded at build time) and was built with Gloo. Uses the
# modules' own build flags: `horovodrun --check-build` reports the same but takes about 25 s
# because it probes every framework in a subprocess.
horovod_is_ready() {
    [[ -x "$(horovodrun_bin)" ]] || return 1
    "$PYTHON" -c '
import sys
import horovod.torch as hvd
want_nccl, want_mxnet = sys.argv[1] == "NCCL", sys.argv[2] == "1"
ready = hvd.gloo_built() and (hvd.nccl_built() or not want_nccl)
if ready and want_mxnet:
    import numpy
    if "bool" not in numpy.__dict__:
        numpy.bool = bool          # mxnet 1.9.1 still reads the alias (see the header)
    import horovod.mxnet as hvd_mx
    ready = hvd_mx.gloo_built()
sys.exit(0 if ready else 1)
' "${HOROVOD_GPU_OPERATIONS:-}" "$BUILD_MXNET" >/dev/null 2>&1
}

# Choose GPU operations from the torch build, not from nvcc on PATH: a CPU torch on a machine
# with a CUDA toolkit must still get a CPU-only Horovod (a CUDA Horovod refuses a CPU torch).
configure_gpu_operations() {
    local torch_cuda=$1
    if [[ -z "$torch_cuda" ]]; then
        unset HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_BROADCAST HOROVOD_GPU
        GPU_TAG=cpu
        return
    fi
    command -v nvcc >/dev/null || die "torch is built for CUDA $torch_cuda but nvcc is not on PATH; \
install the CUDA toolkit (Horovod's NCCL operations compile CUDA code) or use a CPU torch"
    export HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS:-NCCL}
    GPU_TAG="cuda${torch_cuda}-$(echo "$HOROVOD_GPU_OPERATIONS" | tr '[:upper:]' '[:lower:]')"
    [[ "$HOROVOD_GPU_OPERATIONS" == NCCL ]] && use_pip_nccl_if_needed
    return 0
}

# A pip-installed CUDA torch brings NCCL as the nvidia-nccl-cu* wheel (nvidia/nccl/{include,lib}),
# which has libnccl.so.2 but no libnccl.so for the linker to find: point Horovod at it through a
# symlink and link it shared (the same library torch has already loaded at run time).
use_pip_nccl_if_needed() {
    [[ -n "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ]] && return 0
    local nccl_dir
    nccl_dir=$("$PYTHON" -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null) || return 0
    [[ -f "$nccl_dir/include/nccl.h" && -f "$nccl_dir/lib/libnccl.so.2" ]] || return 0
    NCCL_LINK_DIR=$(mktemp -d)
    ln -s "$nccl_dir/lib/libnccl.so.2" "$NCCL_LINK_DIR/libnccl.so"
    export HOROVOD_NCCL_INCLUDE="$nccl_dir/include" HOROVOD_NCCL_LIB="$NCCL_LINK_DIR" HOROVOD_NCCL_LINK=SHARED
    log "using NCCL from the pip package at $nccl_dir"
}

# "VERSION CXX11_ABI(0/1) CUDA(0/1)" of the installed mxnet, "none" when there is none; fails
# when mxnet is installed but does not import (numpy 2, say).
mxnet_info() {
    "$PYTHON" - <<'PY'
import importlib.util, mmap, sys, warnings
if importlib.util.find_spec("mxnet") is None:
    print("none")
    sys.exit(0)
import numpy
if "bool" not in numpy.__dict__:
    numpy.bool = bool
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mxnet
abi = getattr(getattr(mxnet, "library", None), "compiled_with_gcc_cxx11_abi", None)
if abi is not None:
    cxx11 = bool(abi())
else:   # mxnet 1.x: a new-ABI library names std::__cxx11 types in its symbols, an old-ABI one never does
    with open(mxnet.libinfo.find_lib_path()[0], "rb") as lib, \
            mmap.mmap(lib.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cxx11 = data.find(b"St7__cxx11") >= 0
print(mxnet.__version__, int(cxx11), int(mxnet.runtime.Features().is_enabled("CUDA")))
PY
}

# Decide BUILD_MXNET (0/1), MXNET_VERSION, MXNET_CXX11_ABI and MXNET_TAG from WITH_MXNET.
configure_mxnet() {
    local want=${WITH_MXNET:-auto} info mxnet_cuda
    BUILD_MXNET=0 MXNET_TAG=nomxnet MXNET_VERSION="" MXNET_CXX11_ABI=""
    case "$want" in auto|0|1) ;; *) die "WITH_MXNET must be auto, 0 or 1, got '$want'" ;; esac
    if [[ "$want" == 0 ]]; then
        log "WITH_MXNET=0: building for PyTorch only"
        return 0
    fi
    info=$(mxnet_info) || die "mxnet is installed but does not import with this numpy (see above); run \
bash scripts/install_mxnet.sh first, or set WITH_MXNET=0 for a PyTorch-only Horovod"
    if [[ "$info" == none ]]; then
        [[ "$want" == 1 ]] && die "WITH_MXNET=1 but mxnet is not installed; run bash scripts/install_mxnet.sh first"
        log "mxnet is not installed: building for PyTorch only (bash scripts/install_mxnet.sh first adds MXNet)"
        return 0
    fi
    read -r MXNET_VERSION MXNET_CXX11_ABI mxnet_cuda <<<"$info"
    if [[ -n "${HOROVOD_GPU_OPERATIONS:-}" && "$mxnet_cuda" != 1 ]]; then
        die "torch is built for CUDA (Horovod gets $HOROVOD_GPU_OPERATIONS operations) but mxnet $MXNET_VERSION is \
CPU-only, and Horovod's CMake refuses that pair ('Horovod build with GPU support was requested but this MXNet \
installation does not support CUDA'); install a CUDA build of mxnet $MXNET_VERSION, or set WITH_MXNET=0 for a \
PyTorch-only Horovod (--backend mxnet then runs one process)"
    fi
    BUILD_MXNET=1 MXNET_TAG="mxnet$MXNET_VERSION"
}

# The build-time sitecustomize.py that lets Horovod's CMake import mxnet (see the header). It acts
# only when something imports mxnet: numpy.bool first, then the ABI function on mxnet.library.
write_mxnet_build_shim() {
    cat >"$1/sitecustomize.py" <<'PY'
import importlib.machinery, os, sys


class _MXNetBuildShim:
    def find_spec(self, name, path=None, target=None):
        if name != "mxnet":
            return None
        sys.meta_path.remove(self)
        import numpy
        if "bool" not in numpy.__dict__:
            numpy.bool = bool
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        abi = os.environ.get("SQUAD_BENCH_MXNET_CXX11_ABI") == "1"

        def exec_and_add_abi(module):
            exec_module(module)
            library = getattr(module, "library", None)
            if library is not None and not hasattr(library, "compiled_with_gcc_cxx11_abi"):
                library.compiled_with_gcc_cxx11_abi = lambda: abi
        spec.loader.exec_module = exec_and_add_abi
        return spec


sys.meta_path.insert(0, _MXNetBuildShim())
PY
}

# The environment under which Python can import mxnet the way Horovod's build and probes do.
with_mxnet_shim() {
    PYTHONPATH="$SHIM_DIR${PYTHONPATH:+:$PYTHONPATH}" SQUAD_BENCH_MXNET_CXX11_ABI="${MXNET_CXX11_ABI:-0}" "$@"
}

# A compiler wrapper that turns the sdist's C++14 flag into C++17 (see the header).
make_cxx17_wrapper() {
    local dir=$1 real_cxx
    real_cxx=$(command -v "${CXX:-g++}") || die "no C++ compiler found (CXX=${CXX:-g++}); install g++"
    cat >"$dir/cxx17" <<EOF
#!/usr/bin/env bash
args=()
for arg in "\$@"; do
    case "\$arg" in
        -std=c++14) arg=-std=c++17 ;;
        -std=gnu++14) arg=-std=gnu++17 ;;
    esac
    args+=("\$arg")
done
exec "$real_cxx" "\${args[@]}"
EOF
    chmod +x "$dir/cxx17"
    echo "$dir/cxx17"
}

install_python_deps() {
    # Horovod's runtime deps; torch (and mxnet) are pinned through the constraint so nothing can replace them.
    "$PYTHON" -m pip install --constraint "$CONSTRAINTS" \
        "cloudpickle" "psutil" "pyyaml" "packaging" "cffi>=1.4.0" "setuptools" "wheel" \
        || die "could not install Horovod's Python dependencies"
}

build_wheel() {
    local out_dir=$1 work_dir cxx started
    work_dir=$(mktemp -d)
    cxx=$(make_cxx17_wrapper "$work_dir")
    command -v cmake >/dev/null || die "cmake not found; install it (apt-get install cmake)"
    log "building horovod==$HOROVOD_VERSION against torch $TORCH_VERSION (gpu: $GPU_TAG; mxnet: \
${MXNET_VERSION:-none}); takes minutes"
    local frameworks=(HOROVOD_WITHOUT_MXNET=1)
    if [[ "$BUILD_MXNET" == 1 ]]; then
        frameworks=(HOROVOD_WITH_MXNET=1)
        log "mxnet $MXNET_VERSION: C++11 ABI $MXNET_CXX11_ABI (read from libmxnet.so); build shim in $SHIM_DIR"
    fi
    started=$(date +%s)
    with_mxnet_shim env CXX="$cxx" \
        HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
        "${frameworks[@]}" MAKEFLAGS="-j${HOROVOD_BUILD_JOBS:-$(nproc)}" \
        "$PYTHON" -m pip wheel --no-build-isolation --no-deps --no-cache-dir \
        --constraint "$CONSTRAINTS" --wheel-dir "$work_dir/wheels" "horovod==$HOROVOD_VERSION" \
        || die "building horovod==$HOROVOD_VERSION failed (see the compiler output above)"
    mkdir -p "$out_dir"
    mv "$work_dir"/wheels/horovod-*.whl "$out_dir/"
    rm -rf "$work_dir"
    log "build took $(( $(date +%s) - started )) s"
}

install_wheel() {
    local wheel
    wheel=$(ls "$1"/horovod-*.whl)
    "$PYTHON" -m pip install --no-deps --force-reinstall --constraint "$CONSTRAINTS" "$wheel" \
        || die "installing $wheel failed"
}

check_torch_unchanged() {
    local now
    now=$(torch_version)
    [[ "$now" == "$TORCH_VERSION" ]] || die "torch changed from $TORCH_VERSION to $now during the install"
}

main() {
    local torch_info frameworks
    # One interpreter start for both facts: importing torch takes seconds on a busy machine.
    torch_info=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda or "")' 2>/dev/null) \
        || die "torch is not installed for $PYTHON; install it first: pip install torch==2.13.0"
    read -r TORCH_VERSION TORCH_CUDA <<<"$torch_info"
    configure_gpu_operations "${TORCH_CUDA:-}"
    configure_mxnet
    frameworks="PyTorch${MXNET_VERSION:+ + MXNet} + Gloo"
    if [[ "${REBUILD:-0}" != 1 ]] && horovod_is_ready; then
        log "horovod already works with torch $TORCH_VERSION${MXNET_VERSION:+ and mxnet $MXNET_VERSION} \
($frameworks); nothing to do"
        exit 0
    fi
    CONSTRAINTS=$(mktemp)
    SHIM_DIR=$(mktemp -d)
    trap 'rm -rf "$CONSTRAINTS" "$SHIM_DIR"' EXIT
    write_mxnet_build_shim "$SHIM_DIR"
    echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
    [[ -n "$MXNET_VERSION" ]] && echo "mxnet==$MXNET_VERSION" >>"$CONSTRAINTS"
    install_python_deps

    local py_tag cache_dir
    py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    cache_dir="$WHEEL_CACHE_ROOT/horovod-$HOROVOD_VERSION-$py_tag-torch$TORCH_VERSION-$MXNET_TAG-$GPU_TAG"
    [[ "${REBUILD:-0}" == 1 ]] && rm -rf "$cache_dir"
    if compgen -G "$cache_dir/horovod-*.whl" >/dev/null; then
        log "installing the cached wheel from $cache_dir"
        install_wheel "$cache_dir"
        if horovod_is_ready; then
            check_torch_unchanged
            log "done (cached wheel; $frameworks)"
            exit 0
        fi
        log "the cached wheel does not work here; rebuilding"
        rm -rf "$cache_dir"
    fi
    build_wheel "$cache_dir"
    install_wheel "$cache_dir"
    check_torch_unchanged
    horovod_is_ready || die "horovod installed but 'import horovod.torch'${MXNET_VERSION:+ or 'import horovod.mxnet'} \
fails or lacks Gloo; 'horovodrun --check-build' says: $(with_mxnet_shim "$(horovodrun_bin)" --check-build 2>&1 || true)"
    # The shim lets --check-build's probe import mxnet 1.9.1 with this numpy.
    with_mxnet_shim "$(horovodrun_bin)" --check-build
    log "done ($frameworks)"
}

main "$@"
