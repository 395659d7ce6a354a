#!/usr/bin/env bash
# Build and install Horovod 0.28.1 against the torch that is already installed.
#
#   bash scripts/install_horovod.sh            # build, install, verify: minutes (8.5 CPU-minutes;
#                                              # 12 min wall on 2 shared, busy cores)
#   PYTHON=/path/to/python bash scripts/install_horovod.sh
#
# What it builds:
#   * CPU torch (torch.version.cuda is None): PyTorch + Gloo, no GPU operations.
#   * CUDA torch and nvcc on PATH:           PyTorch + Gloo + NCCL (HOROVOD_GPU_OPERATIONS=NCCL).
#     Set HOROVOD_NCCL_HOME / HOROVOD_CUDA_HOME yourself when they are not in the default places.
#
# Why it is not just "pip install horovod":
#   * The 0.28.1 sdist hard-codes C++14 (CMAKE_CXX_STANDARD 14) but torch >= 2.1 headers
#     fail with "#error You need C++17 to compile PyTorch". Fixed upstream after the release
#     (horovod/horovod#3996, #4014, PR #3998) but never released, so a CXX wrapper rewrites
#     -std=c++14 / -std=gnu++14 to the C++17 form.
#   * The build must see the installed torch: --no-build-isolation (an isolated build would
#     download an unpinned torch with several GB of CUDA packages).
#   * pip's wheel cache is keyed by the sdist only, so it would happily reuse a Horovod wheel
#     compiled against another torch (import then dies with undefined symbols). We keep our own
#     wheel cache keyed by (horovod, python, torch, gpu ops) and verify every install.
#
# Idempotent: exits within seconds when horovod.torch imports and was built with Gloo (what
# `horovodrun --check-build` lists as PyTorch + Gloo; it is printed after a fresh install).
# Fails loudly (non-zero, with the reason) on every error.
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
# (and NCCL when asked). Uses horovod.torch's own build flags: `horovodrun --check-build`
# reports the same but takes about 25 s because it probes every framework in a subprocess.
horovod_is_ready() {
    [[ -x "$(horovodrun_bin)" ]] || return 1
    "$PYTHON" -c '
import sys
import horovod.torch as hvd
want_nccl = sys.argv[1] == "NCCL"
sys.exit(0 if hvd.gloo_built() and (hvd.nccl_built() or not want_nccl) else 1)
' "${HOROVOD_GPU_OPERATIONS:-}" >/dev/null 2>&1
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
    # Horovod's runtime deps; torch is pinned through the constraint so nothing can replace it.
    "$PYTHON" -m pip install --constraint "$CONSTRAINTS" \
        "cloudpickle" "psutil" "pyyaml" "packaging" "cffi>=1.4.0" "setuptools" "wheel" \
        || die "could not install Horovod's Python dependencies"
}

build_wheel() {
    local out_dir=$1 work_dir cxx started
    work_dir=$(mktemp -d)
    cxx=$(make_cxx17_wrapper "$work_dir")
    command -v cmake >/dev/null || die "cmake not found; install it (apt-get install cmake)"
    log "building horovod==$HOROVOD_VERSION against torch $TORCH_VERSION (gpu: $GPU_TAG); takes minutes"
    started=$(date +%s)
    CXX="$cxx" \
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    MAKEFLAGS="-j${HOROVOD_BUILD_JOBS:-$(nproc)}" \
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
    local torch_info
    # One interpreter start for both facts: importing torch takes seconds on a busy machine.
    torch_info=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda or "")' 2>/dev/null) \
        || die "torch is not installed for $PYTHON; install it first: pip install torch==2.13.0"
    read -r TORCH_VERSION TORCH_CUDA <<<"$torch_info"
    configure_gpu_operations "${TORCH_CUDA:-}"
    if horovod_is_ready; then
        log "horovod already works with torch $TORCH_VERSION (PyTorch + Gloo); nothing to do"
        exit 0
    fi
    CONSTRAINTS=$(mktemp)
    trap 'rm -f "$CONSTRAINTS"' EXIT
    echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
    install_python_deps

    local py_tag cache_dir
    py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    cache_dir="$WHEEL_CACHE_ROOT/horovod-$HOROVOD_VERSION-$py_tag-torch$TORCH_VERSION-$GPU_TAG"
    if compgen -G "$cache_dir/horovod-*.whl" >/dev/null; then
        log "installing the cached wheel from $cache_dir"
        install_wheel "$cache_dir"
        if horovod_is_ready; then
            check_torch_unchanged
            log "done (cached wheel)"
            exit 0
        fi
        log "the cached wheel does not work here; rebuilding"
        rm -rf "$cache_dir"
    fi
    build_wheel "$cache_dir"
    install_wheel "$cache_dir"
    check_torch_unchanged
    horovod_is_ready || die "horovod installed but 'import horovod.torch' fails or it lacks Gloo; \
'horovodrun --check-build' says: $("$(horovodrun_bin)" --check-build 2>&1 || true)"
    "$(horovodrun_bin)" --check-build
    log "done"
}

main "$@"
