"""What this machine's CPU can compute natively: one detector for every place that picks a dtype or
kernel on the CPU (framework-free: it reads ``/proc/cpuinfo``, never asks a framework).

Why it matters: bfloat16 is native only with AVX-512 BF16 or AMX. Elsewhere (an AVX2-only CPU)
every bfloat16 matrix multiply is emulated: training in bfloat16 ran at 0.31 samples/s against
7.57 in float32 on an AVX2-only AMD EPYC, 24x slower. So the torch backend defaults to float32 on
such a CPU (``TorchBackend.default_dtype``), the demo says why, an explicit ``--dtype bfloat16``
warns once (``warn_if_emulated_bf16``), results.json records the abilities
(``bench.run.record.hardware_info``) and the speed benchmark skips emulated-bfloat16 rows.

Only x86 Linux says which instructions it has (the ``flags`` line of ``/proc/cpuinfo``);
elsewhere the flags are unknown (``flags_known=False``, every flag False), and bfloat16 is
treated as not native.

To rehearse a smaller CPU's choices on a bigger one, ``SQUAD_BENCH_CPU_WITHOUT`` names flag prefixes
this machine's detection leaves out (``avx512,amx``: AVX2-only; ``scripts/as_avx2_only.sh`` also caps
the frameworks' kernels); the record and its one-line description say which were left out.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform

__all__ = ["CpuAbilities", "detect_cpu", "cpuinfo_text", "describe_cpu", "float32_reason", "warn_if_emulated_bf16",
           "EMULATED_BF16_COST", "NO_NATIVE_BF16", "CPU_WITHOUT_ENV"]

logger = logging.getLogger(__name__)

NO_NATIVE_BF16 = "no AVX-512 BF16/AMX"
EMULATED_BF16_COST = "about 24x slower than float32 in training, measured on an AVX2-only AMD EPYC"
_WARNED: set[str] = set()          # warn_if_emulated_bf16 warns once per process
CPU_WITHOUT_ENV = "SQUAD_BENCH_CPU_WITHOUT"


@dataclasses.dataclass(frozen=True)
class CpuAbilities:
    """The CPU's model and vector/matrix extensions, and the cores this process may use.

    ``model`` and the flags come from ``/proc/cpuinfo`` (or the text given to ``detect_cpu``);
    ``cores_available`` (the process's CPU affinity) and ``logical_cpus`` from this process.
    """
    model: str
    flags_known: bool            # False off x86 Linux: every flag below is then False
    avx2: bool
    avx512: bool                 # avx512f
    avx512_bf16: bool
    amx: bool                    # amx_tile or amx_bf16
    amx_bf16: bool
    cores_available: int
    logical_cpus: int
    flags_left_out: tuple[str, ...] = ()     # prefixes from SQUAD_BENCH_CPU_WITHOUT, e.g. ("avx512", "amx")

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matrix multiplies in hardware (AVX-512 BF16 or AMX-BF16), not emulated."""
        return self.avx512_bf16 or self.amx_bf16

    def as_record(self) -> dict:
        """The abilities as a JSON-ready dict (results.json ``hardware.cpu``, speed.json)."""
        return {**dataclasses.asdict(self), "flags_left_out": list(self.flags_left_out),
                "native_bf16": self.native_bf16}

    def describe(self) -> str:
        return describe_cpu(self.as_record())


def detect_cpu(cpuinfo_text: str | None = None, without: str = "") -> CpuAbilities:
    """This machine's CPU abilities (read once per process, less the flags ``SQUAD_BENCH_CPU_WITHOUT``
    names), or those of ``cpuinfo_text``, a ``/proc/cpuinfo`` text, less ``without`` (tests; the cores
    still come from this process)."""
    if cpuinfo_text is None:
        return _this_machine()
    return _parse(cpuinfo_text, fallback_model="unknown", without=without)


@functools.lru_cache(maxsize=1)
def cpuinfo_text() -> str:
    """This machine's ``/proc/cpuinfo`` (read once per process); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _this_machine() -> CpuAbilities:
    return _parse(cpuinfo_text(), fallback_model=platform.processor() or platform.machine() or "unknown",
                  without=os.environ.get(CPU_WITHOUT_ENV, ""))


def _parse(text: str, fallback_model: str, without: str = "") -> CpuAbilities:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    flags_line = fields.get("flags")           # x86 only; ARM says "Features" (other names)
    flags = set(flags_line.split()) if flags_line is not None else set()
    left_out = tuple(prefix.strip().lower() for prefix in without.split(",") if prefix.strip())
    flags = {flag for flag in flags if not flag.startswith(left_out)}
    model = fields.get("model name") or fields.get("hardware") or fallback_model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuAbilities(model=model, flags_known=flags_line is not None, avx2="avx2" in flags,
                        avx512="avx512f" in flags, avx512_bf16="avx512_bf16" in flags,
                        amx=bool({"amx_tile", "amx_bf16"} & flags), amx_bf16="amx_bf16" in flags,
                        cores_available=cores, logical_cpus=os.cpu_count() or cores, flags_left_out=left_out)


def threads_per_process(local_processes: int, threads: int | None = None) -> int:
    """``threads`` (default: the cores this process may use) shared evenly among the ``local_processes``
    processes a launcher started on this machine, at least one each: oversubscribed OpenMP threads spin
    and stall each other."""
    threads = detect_cpu().cores_available if threads is None else threads
    return max(1, threads // max(1, local_processes))


def describe_cpu(record: dict) -> str:
    """One line for logs and speed.md from an ``as_record()`` dict (e.g. read back from a JSON file)."""
    cores = f"{record['cores_available']} of {record['logical_cpus']} logical CPUs available"
    if not record["flags_known"]:
        return f"{record['model']}: CPU flags unknown (not x86 Linux), bfloat16 treated as emulated; {cores}"
    names = [name if record[key] else f"no {name}" for key, name in
             (("avx2", "AVX2"), ("avx512", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx", "AMX"))]
    bf16 = "bfloat16 native" if record["native_bf16"] else f"bfloat16 emulated ({NO_NATIVE_BF16})"
    left_out = record.get("flags_left_out") or []    # absent from records written before it existed
    rehearsal = f"; flags left out ({CPU_WITHOUT_ENV}): {', '.join(p + '*' for p in left_out)}" if left_out else ""
    return f"{record['model']}: {', '.join(names)}; {bf16}; {cores}{rehearsal}"


def float32_reason(abilities: CpuAbilities | None = None) -> str | None:
    """Why a CPU run defaults to float32, or None where bfloat16 is native."""
    abilities = abilities or detect_cpu()
    if abilities.native_bf16:
        return None
    if not abilities.flags_known:
        return (f"dtype float32: whether this CPU ({abilities.model}) computes bfloat16 natively is unknown "
                f"(no x86 flags in /proc/cpuinfo); emulated bfloat16 is {EMULATED_BF16_COST}")
    return (f"dtype float32: this CPU ({abilities.model}) has no native bfloat16 ({NO_NATIVE_BF16}); "
            f"emulated bfloat16 would be {EMULATED_BF16_COST}")


def warn_if_emulated_bf16(dtype: str, device_type: str, *, main: bool = True) -> bool:
    """Warn (once per process, on the main rank) that ``--dtype bfloat16`` on this CPU is emulated.

    Returns whether the run is an emulated-bfloat16 CPU run, warned here or before.
    """
    if dtype != "bfloat16" or device_type != "cpu":
        return False
    abilities = detect_cpu()
    if abilities.native_bf16:
        return False
    if main and "bf16" not in _WARNED:
        _WARNED.add("bf16")
        logger.warning("--dtype bfloat16 on a CPU without native bfloat16 (%s): bfloat16 is emulated, %s; "
                       "--dtype float32 is the fast choice here. CPU: %s", NO_NATIVE_BF16, EMULATED_BF16_COST,
                       abilities.describe())
    return True
