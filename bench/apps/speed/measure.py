"""Clocks and memory of one measured process: wall and process CPU seconds, peak memory per process
and per stage. Framework-free (torch is looked up in ``sys.modules``, never imported)."""
from __future__ import annotations

import os
import resource
import sys
import threading
import time


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict:
    wall, cpu = clock()
    return {"wall_s": round(wall - start[0], 4), "cpu_s": round(cpu - start[1], 4)}


def fastest(fn, repeats: int) -> tuple[dict, object]:
    """The fastest of ``repeats`` calls (wall and CPU seconds) and the last result."""
    timings, result = [], None
    for _ in range(repeats):
        start = clock()
        result = fn()
        timings.append(since(start))
    return min(timings, key=lambda t: t["wall_s"]), result


def peak_memory() -> dict:
    """This process's peak: torch.cuda.max_memory_allocated on a GPU, else the peak resident set."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated())}
    return {"kind": "rss", "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


class StagePeaks:
    """Peak resident set per named stage of one process, sampled every 20 ms by a background thread.

    Why sampling: ru_maxrss only grows, so the peak of a later, smaller stage would be hidden.
    """

    def __init__(self):
        self.peaks: dict[str, int] = {}
        self._stage, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stage(self, name: str):
        self._stage = name
        self.peaks.setdefault(name, _current_rss())
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.peaks[self._stage] = max(self.peaks[self._stage], _current_rss())
        self._stage = None

    def _sample(self):
        while not self._stop.wait(0.02):
            stage = self._stage
            if stage is not None:
                self.peaks[stage] = max(self.peaks.get(stage, 0), _current_rss())

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
