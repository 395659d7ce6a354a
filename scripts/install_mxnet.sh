#!/usr/bin/env bash
# Install the MXNet extra (MXNet 1.9.1 + GluonNLP 0.10.0) into the CURRENT Python environment,
# next to the torch backend, so that one process can run and compare both backends.
#
#   bash scripts/install_mxnet.sh                     # install, verify, print versions
#   PYTHON=/path/to/python bash scripts/install_mxnet.sh
#
# What it installs and why:
#   * numpy 1.26.x: MXNet 1.9.1 cannot run with numpy 2 (its C API and aliases are gone), so numpy is
#     moved to the newest 1.x. torch 2.13 (CPU), transformers 5.x, tokenizers, safetensors and
#     matplotlib all work with it. MXNet 1.9.1 still uses the alias numpy.bool (removed in numpy 1.24):
#     bench.backends.mxnet.compat restores it before importing mxnet.
#   * Cython, setuptools, wheel: GluonNLP 0.10.0 is an sdist that compiles a Cython extension.
#   * mxnet==1.9.1 (CPU wheel, bundles OpenBLAS) and gluonnlp==0.10.0. GluonNLP is built with
#     --no-build-isolation: an isolated build would fetch numpy 2 and an unpinned toolchain.
#   * transformers, safetensors, huggingface_hub: the backend's tokenizer (AutoTokenizer imports without
#     torch), its weight reader (safetensors' numpy API) and the hub cache. Already there next to torch.
#   * torch stays exactly as installed: every pip call runs under a constraint pinning the torch that is
#     there (an unpinned torch would pull several GB of CUDA packages).
#
# One environment for both backends: `--backend torch` and `--backend mxnet` run from the same Python,
# and the tests compare them in one process. The mxnet wheel is CPU-only (no CUDA build of 1.9.1 is
# installed here). Several MXNet processes need Horovod built for MXNet: run scripts/install_horovod.sh
# after this script (docs/mxnet.md#several-processes-horovod).
#
# Idempotent: exits at once when numpy < 2, mxnet 1.9.1 and gluonnlp 0.10.0 already import together.
# Fails loudly (non-zero, with the reason) on every error.
set -euo pipefail

MXNET_VERSION=1.9.1
GLUONNLP_VERSION=0.10.0
NUMPY_SPEC="numpy>=1.26,<2"
BACKEND_DEPS=("transformers>=4.40" "safetensors>=0.4" "huggingface_hub")
PYTHON=${PYTHON:-python3}

log() { echo "[install_mxnet] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The same check bench.backends.mxnet.compat.import_mxnet makes: numpy 1.x, mxnet and gluonnlp at the pinned
# versions, importable together. Prints the versions; exit status 0 only when all is well.
check_ready() {
    "$PYTHON" - "$MXNET_VERSION" "$GLUONNLP_VERSION" <<'EOF'
import sys, warnings
mxnet_version, gluonnlp_version = sys.argv[1:3]
import numpy
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"numpy {numpy.__version__} is installed; MXNet {mxnet_version} needs numpy < 2")
if "bool" not in numpy.__dict__:
    numpy.bool = bool          # MXNet 1.9.1 still uses the alias removed in numpy 1.24
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet, gluonnlp
if mxnet.__version__ != mxnet_version or gluonnlp.__version__ != gluonnlp_version:
    sys.exit(f"found mxnet {mxnet.__version__} / gluonnlp {gluonnlp.__version__}, "
             f"expected {mxnet_version} / {gluonnlp_version}")
total = float(mxnet.nd.ones((2, 3)).sum().asscalar())
if total != 6.0:
    sys.exit(f"mxnet computes nonsense: sum of a 2x3 array of ones = {total}")
import huggingface_hub, safetensors.numpy, transformers  # the backend's tokenizer, weights and hub cache
print(f"numpy {numpy.__version__}, mxnet {mxnet.__version__}, gluonnlp {gluonnlp.__version__}")
EOF
}

# Pin whatever torch is installed, so no dependency resolution can replace it. Empty file without torch.
write_constraints() {
    local torch_version
    torch_version=$("$PYTHON" -c 'import importlib.metadata as m
try:
    print(m.version("torch"))
except m.PackageNotFoundError:
    pass')
    if [[ -n "$torch_version" ]]; then
        echo "torch==$torch_version" >"$CONSTRAINTS"
        log "keeping torch==$torch_version (pinned for every pip call)"
    else
        : >"$CONSTRAINTS"
        log "torch is not installed; installing the MXNet extra alone"
    fi
    TORCH_BEFORE=$torch_version
}

pip_install() {
    log "pip install $*"
    "$PYTHON" -m pip install --constraint "$CONSTRAINTS" "$@" || die "pip install $* failed"
}

check_torch_unchanged() {
    [[ -z "$TORCH_BEFORE" ]] && return
    local now
    now=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))')
    [[ "$now" == "$TORCH_BEFORE" ]] || die "torch changed from $TORCH_BEFORE to $now during the install"
    "$PYTHON" -c 'import torch, numpy; torch.from_numpy(numpy.ones(2, numpy.float32)).sum().item()' \
        || die "torch no longer works with the installed numpy"
}

main() {
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "no pip for $PYTHON"
    log "python: $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    local versions
    if versions=$(check_ready 2>/dev/null); then
        log "already installed ($versions); nothing to do"
        exit 0
    fi
    local started
    started=$(date +%s)
    CONSTRAINTS=$(mktemp)
    trap 'rm -f "$CONSTRAINTS"' EXIT
    write_constraints
    # Build tools and numpy first: the GluonNLP build below uses exactly these (no build isolation).
    pip_install "$NUMPY_SPEC" "Cython" "setuptools" "wheel"
    pip_install "$NUMPY_SPEC" "mxnet==$MXNET_VERSION"
    pip_install --no-build-isolation "$NUMPY_SPEC" "gluonnlp==$GLUONNLP_VERSION"
    pip_install "$NUMPY_SPEC" "${BACKEND_DEPS[@]}"
    check_torch_unchanged
    versions=$(check_ready) || die "installed, but mxnet/gluonnlp do not import (see above)"
    log "done in $(( $(date +%s) - started )) s: $versions${TORCH_BEFORE:+, torch $TORCH_BEFORE}"
}

main "$@"
