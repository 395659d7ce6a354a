#!/usr/bin/env bash
# Run a command as if this CPU were AVX2-only, to rehearse such a machine's choices and test suite on a
# CPU with AVX-512 / bfloat16:   bash scripts/as_avx2_only.sh bash scripts/test.sh
#
# - bench.run.cpu's detection leaves out the avx512* and amx* flags (SQUAD_BENCH_CPU_WITHOUT), so every
#   dtype choice is an AVX2-only CPU's (float32 by default) and results.json / speed.json say so;
# - torch, oneDNN (torch's and MXNet's), MKL and OpenBLAS are capped at their AVX2 kernels, and numpy's
#   AVX-512 dispatch is switched off, so the arithmetic (its rounding too) is an AVX2 CPU's.
# What it cannot rehearse is speed: on an EPYC with AVX-512 a 2048^2 float32 matmul ran as fast capped
# as uncapped (169 against 160 GFLOP/s; an AVX2-only EPYC probes about 125), and a bfloat16 one ran
# about 1,000x slower than native (0.4 against 429 GFLOP/s; emulated bfloat16 trained 24x slower than
# float32 on the AVX2-only EPYC). See docs/speed.md. Time nothing with it.
set -euo pipefail
export SQUAD_BENCH_CPU_WITHOUT="avx512,amx"
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export OPENBLAS_CORETYPE=Haswell
# numpy 2 names its AVX-512 targets X86_V4/AVX512_ICL/AVX512_SPR, numpy 1.26 (MXNet's) AVX512F...; each
# ignores the other's names, so one list serves both (scripts/test.sh moves numpy from 2 to 1.26).
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL"
exec "$@"
