"""Measured process ``cpu_peak``: the CPU's own matrix-multiply limit, the anchor the training and
inference figures are read against (``figures.peak_fractions``).

A square ``size`` x ``size`` matmul (2048: 17.2 GFLOP, large enough for the BLAS/oneDNN kernel to
reach its peak), repeated for about ``seconds`` per dtype after one untimed warm-up, best repeat
reported, with the thread count every measured process gets (``--threads``, else torch's default).
float32 always; bfloat16 only where the request asks for it (the CPU has native bfloat16).
Expected: about 125 GFLOP/s in float32 on 2 AVX2 cores.
"""
from __future__ import annotations

import time

from bench.apps.speed.qa_model import threads


def task_cpu_peak(request: dict) -> dict:
    """Best FLOP/s of a ``size`` x ``size`` matmul in each dtype of the request."""
    import torch

    size, seconds, min_repeats = request["size"], request["seconds"], request.get("min_repeats", 3)
    flops = 2.0 * size ** 3
    peaks = {}
    for name in request["dtypes"]:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
        out = torch.mm(a, b)                                 # warm-up: kernel selection, first touch
        times = []
        while len(times) < min_repeats or (sum(times) < seconds and len(times) < 1000):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - start)
        best = min(times)
        peaks[name] = {"flops_per_s": round(flops / best, 1), "best_s": round(best, 5), "repeats": len(times),
                       "all_s": [round(t, 5) for t in times]}
    return {"size": size, "threads": threads(), "peaks": peaks}
