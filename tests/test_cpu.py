"""The CPU's abilities (``bench.run.cpu``) and every place that acts on them: the torch backend's
default dtype, the demo's reason for float32, the emulated-bfloat16 warning of a run, results.json's
``hardware.cpu``, and the speed benchmark's bf16 rows and GEMM-peak shares (pure functions).
CPU only; no test asserts a timing."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.apps import demo
from bench.apps.run import main as run_squad
from bench.apps.speed.figures import EMULATED_BF16_SKIP, mfu, peak_fraction, peak_fractions, training_dtypes
from bench.apps.speed.render import render_markdown
from bench.run import cpu
from tests.test_run_squad import base_args

# /proc/cpuinfo of an AVX2-only AMD EPYC (the machine where bfloat16 trained 24x slower), trimmed.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq \
pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase \
tsc_adjust bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass retbleed smt_rsb

processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu avx avx2 fma
"""
# A Sapphire Rapids Xeon: AVX-512 BF16 and AMX.
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_fp16 \
amx_bf16 amx_tile amx_int8 avx_vnni
vmx flags\t: vnmi preemption_timer
"""
# A Skylake Xeon: AVX-512 without BF16 (torch's own oneDNN check calls bf16 "supported" there).
XEON_AVX512_NO_BF16 = """model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl
"""
# An ARM server (Graviton 3): "Features", no x86 flags line.
ARM = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc \
dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def abilities(text: str, _detect=cpu.detect_cpu) -> cpu.CpuAbilities:
    """The abilities of a /proc/cpuinfo text (the real detector, even while fake_cpu replaces it)."""
    return _detect(text)


@pytest.fixture
def fake_cpu(monkeypatch):
    """Make every caller of bench.run.cpu.detect_cpu() see the CPU of a given /proc/cpuinfo text."""
    def use(text: str) -> cpu.CpuAbilities:
        fake = abilities(text)
        monkeypatch.setattr(cpu, "detect_cpu", lambda cpuinfo_text=None: fake if cpuinfo_text is None
                            else abilities(cpuinfo_text))
        monkeypatch.setattr(cpu, "_WARNED", set())
        return fake
    return use


# ------------------------------------------------------------------------------------ detection
def test_avx2_only_epyc_has_no_native_bf16():
    epyc = abilities(EPYC_AVX2)
    assert epyc.model == "AMD EPYC 7B12" and epyc.flags_known
    assert epyc.avx2 and not (epyc.avx512 or epyc.avx512_bf16 or epyc.amx or epyc.amx_bf16)
    assert not epyc.native_bf16
    assert "bfloat16 emulated (no AVX-512 BF16/AMX)" in epyc.describe() and "no AVX-512," in epyc.describe()
    assert "emulated bfloat16 would be about 24x slower than float32" in cpu.float32_reason(epyc)


def test_xeon_with_avx512_bf16_and_amx_has_native_bf16():
    xeon = abilities(XEON_AMX)
    assert xeon.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert xeon.avx2 and xeon.avx512 and xeon.avx512_bf16 and xeon.amx and xeon.amx_bf16 and xeon.native_bf16
    assert "bfloat16 native" in xeon.describe() and cpu.float32_reason(xeon) is None
    record = xeon.as_record()
    assert record["native_bf16"] is True and json.loads(json.dumps(record)) == record
    assert record["cores_available"] >= 1 and record["logical_cpus"] >= record["cores_available"]


def test_avx512_without_bf16_is_not_native():
    skylake = abilities(XEON_AVX512_NO_BF16)
    assert skylake.avx512 and not skylake.avx512_bf16 and not skylake.native_bf16


def test_non_x86_text_says_its_flags_are_unknown():
    arm = abilities(ARM)
    assert not arm.flags_known and arm.model == "unknown"
    assert not (arm.avx2 or arm.avx512 or arm.avx512_bf16 or arm.amx or arm.native_bf16)
    assert "CPU flags unknown" in arm.describe()
    assert "unknown" in cpu.float32_reason(arm)
    assert not abilities("").flags_known


def test_this_machine_is_read_once():
    assert cpu.detect_cpu() is cpu.detect_cpu()
    assert cpu.detect_cpu().cores_available >= 1


def test_flags_left_out_rehearse_an_avx2_only_cpu(monkeypatch):
    xeon = cpu.detect_cpu(XEON_AMX, without="avx512, AMX")
    assert xeon.avx2 and not (xeon.avx512 or xeon.avx512_bf16 or xeon.amx or xeon.amx_bf16 or xeon.native_bf16)
    assert xeon.flags_left_out == ("avx512", "amx") and abilities(XEON_AMX).flags_left_out == ()
    assert "flags left out (SQUAD_BENCH_CPU_WITHOUT): avx512*, amx*" in xeon.describe()
    assert "has no native bfloat16" in cpu.float32_reason(xeon)
    assert xeon.as_record()["flags_left_out"] == ["avx512", "amx"]
    older = {k: v for k, v in abilities(XEON_AMX).as_record().items() if k != "flags_left_out"}
    assert "left out" not in cpu.describe_cpu(older)      # a record written before the field existed
    monkeypatch.setenv(cpu.CPU_WITHOUT_ENV, "avx512,amx")     # this machine: read when it is detected
    machine = cpu._this_machine.__wrapped__()
    assert machine.flags_left_out == ("avx512", "amx") and not (machine.avx512 or machine.native_bf16)


def test_the_avx2_rehearsal_script_caps_detection_and_kernels():
    root = Path(__file__).resolve().parents[1]
    probe = ("import json, os; from bench.run.cpu import detect_cpu; print(json.dumps([detect_cpu().as_record(), "
             "{k: os.environ[k] for k in ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'NPY_DISABLE_CPU_FEATURES')}]))")
    out = subprocess.run(["bash", str(root / "scripts" / "as_avx2_only.sh"), sys.executable, "-c", probe],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    record, caps = json.loads(out.splitlines()[-1])
    assert record["flags_left_out"] == ["avx512", "amx"] and not record["avx512"] and not record["native_bf16"]
    assert caps["ATEN_CPU_CAPABILITY"] == "avx2" and caps["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert {"X86_V4", "AVX512F"} <= set(caps["NPY_DISABLE_CPU_FEATURES"].split())   # numpy 2's and 1.26's names


@pytest.mark.parametrize("cores, processes, want", [(8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 4, 1), (2, 0, 2)])
def test_threads_per_process_share_the_available_cores(monkeypatch, cores, processes, want):
    fake = dataclasses.replace(abilities(EPYC_AVX2), cores_available=cores)
    monkeypatch.setattr(cpu, "detect_cpu", lambda cpuinfo_text=None: fake)
    assert cpu.threads_per_process(processes) == want
    assert cpu.threads_per_process(processes, threads=cores) == want     # a given count (torch's) shares alike


# ------------------------------------------------------------------------------------ the dtype choice
def test_torch_default_dtype_follows_the_cpus_native_bf16(fake_cpu, monkeypatch):
    import torch

    from bench.backends.torch import BACKEND

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_cpu(XEON_AMX)
    assert BACKEND.default_dtype() == "bfloat16"
    fake_cpu(EPYC_AVX2)
    assert BACKEND.default_dtype() == "float32"
    fake_cpu(ARM)
    assert BACKEND.default_dtype() == "float32"


class _StopBackend:
    """The real torch backend's dtype choice, with main() stopping before any training."""

    def __init__(self):
        from bench.backends.torch import BACKEND
        self.backend, self.configs = BACKEND, []

    def default_dtype(self):
        return self.backend.default_dtype()

    def has_accelerator(self):
        return False

    def main(self, config):
        self.configs.append(config)
        return 3


def test_demo_says_why_it_chose_float32(fake_cpu, monkeypatch, caplog, minilm_dir, squad_dir, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    stop = _StopBackend()
    monkeypatch.setattr(demo, "get_backend", lambda name: stop)
    fake_cpu(EPYC_AVX2)
    caplog.set_level(logging.INFO, logger="bench.apps.demo")
    assert demo.main(["--output_dir", str(tmp_path)]) == 3
    assert stop.configs[-1].dtype == "float32"
    lines = _demo_lines(caplog)
    assert len(lines) == 1
    assert lines[0].startswith("dtype float32: this CPU (AMD EPYC 7B12) has no native bfloat16 (no AVX-512 BF16/AMX)")
    assert "about 24x slower than float32 in training, measured on an AVX2-only AMD EPYC" in lines[0]

    caplog.clear()
    fake_cpu(XEON_AMX)
    assert demo.main(["--output_dir", str(tmp_path)]) == 3
    assert stop.configs[-1].dtype == "bfloat16"
    assert not _demo_lines(caplog)
    fake_cpu(EPYC_AVX2)
    assert demo.main(["--output_dir", str(tmp_path), "--dtype", "float32"]) == 3   # asked for: nothing to explain
    assert not _demo_lines(caplog)


def _demo_lines(caplog) -> list[str]:
    """The demo's log lines other than the recipe it prints every time."""
    return [r.getMessage() for r in caplog.records if r.name == "bench.apps.demo"
            and not r.getMessage().startswith("recipe: ")]


def test_demo_picks_its_recipe_by_the_cpus_bf16_and_prints_it(fake_cpu, monkeypatch, caplog, minilm_dir, squad_dir,
                                                               tmp_path):
    """float32 on a CPU does half the arithmetic per second: one epoch over the answer windows, no dropout;
    bfloat16 keeps 1.5 epochs over every window. Explicit --epochs/--lr win over either recipe."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    stop = _StopBackend()
    monkeypatch.setattr(demo, "get_backend", lambda name: stop)
    caplog.set_level(logging.INFO, logger="bench.apps.demo")
    chosen = {}
    for name, text in (("avx2", EPYC_AVX2), ("amx", XEON_AMX)):
        fake_cpu(text)
        caplog.clear()
        assert demo.main(["--output_dir", str(tmp_path)]) == 3
        config = stop.configs[-1]
        (recipe,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe: ")]
        chosen[name] = (config.dtype, config.epochs, config.answer_windows_only, config.batch_size, config.lr,
                        config.backbone_dropout, config.classifier_dropout, recipe)
    assert chosen["avx2"] == ("float32", 1.0, True, 8, 2e-4, 0.0, 0.0,
                              "recipe: float32 CPU (1 epoch over the answer windows, batches of 8, no dropout)")
    assert chosen["amx"] == ("bfloat16", 1.5, False, 16, 2e-4, None, 0.1, "recipe: bfloat16 (1.5 epochs, every window)")
    fake_cpu(XEON_AMX)                      # an explicit float32 on a bf16 CPU gets the float32 recipe
    assert demo.main(["--output_dir", str(tmp_path), "--dtype", "float32", "--epochs", "2", "--lr", "1e-4"]) == 3
    config = stop.configs[-1]
    assert (config.dtype, config.epochs, config.answer_windows_only, config.lr) == ("float32", 2.0, True, 1e-4)


def test_emulated_bf16_warning_is_given_once_and_only_where_it_applies(fake_cpu, caplog):
    fake_cpu(EPYC_AVX2)
    assert not cpu.warn_if_emulated_bf16("float32", "cpu")
    assert not cpu.warn_if_emulated_bf16("bfloat16", "cuda")
    assert cpu.warn_if_emulated_bf16("bfloat16", "cpu", main=False) and not caplog.records   # not the main rank
    assert cpu.warn_if_emulated_bf16("bfloat16", "cpu") and cpu.warn_if_emulated_bf16("bfloat16", "cpu")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    fake_cpu(XEON_AMX)
    assert not cpu.warn_if_emulated_bf16("bfloat16", "cpu")


def test_bf16_run_on_an_emulating_cpu_warns_and_records_the_cpu(fake_cpu, caplog, tiny_dirs, sample_files, tmp_path):
    """Through the real run CLI: one startup warning, and results.json's hardware.cpu record."""
    fake = fake_cpu(EPYC_AVX2)
    out = tmp_path / "run"
    status = run_squad(base_args(tiny_dirs["bert"], sample_files["1.1"], out, version="1.1", num_train_steps=1,
                                 dtype="bfloat16", max_eval_samples=8))
    assert status == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "bench.run.cpu"]
    assert len(warnings) == 1
    assert warnings[0].startswith("--dtype bfloat16 on a CPU without native bfloat16 (no AVX-512 BF16/AMX)")
    assert "about 24x slower than float32 in training, measured on an AVX2-only AMD EPYC" in warnings[0]
    assert "AMD EPYC 7B12" in warnings[0]
    record = json.loads((out / "results.json").read_text())
    assert record["hardware"]["cpu"] == fake.as_record()
    assert record["hardware"]["cpu"]["native_bf16"] is False and record["hardware"]["cpu"]["avx2"] is True


# ------------------------------------------------------------------------------------ the speed benchmark
def test_speed_training_rows_skip_emulated_bf16():
    assert training_dtypes("cpu", "float32", native_bf16=False) == (
        ["float32"], {"bfloat16 dynamic": EMULATED_BF16_SKIP, "bfloat16 padded": EMULATED_BF16_SKIP})
    assert EMULATED_BF16_SKIP == "skipped: bfloat16 is emulated on this CPU (no AVX-512 BF16/AMX)"
    assert training_dtypes("cpu", "bfloat16", native_bf16=True) == (["float32", "bfloat16"], {})
    assert training_dtypes("cuda", "float16", native_bf16=False) == (["float32", "float16"], {})
    assert training_dtypes("cuda", "bfloat16", native_bf16=False) == (["float32", "bfloat16"], {})


def test_peak_fraction_counts_six_flops_per_parameter_in_training_and_two_in_inference():
    assert peak_fraction(10_000_000, 2_000.0, 125e9, training=True) == round(6 * 1e7 * 2e3 / 125e9, 4)
    assert peak_fraction(10_000_000, 2_000.0, 125e9, training=False) == round(2 * 1e7 * 2e3 / 125e9, 4)
    assert peak_fraction(10_000_000, 2_000.0, None, training=True) is None
    assert peak_fraction(10_000_000, None, 125e9, training=False) is None
    assert mfu(10_000_000, 2_000.0, 125e9) == peak_fraction(10_000_000, 2_000.0, 125e9, training=True)


def _training_run(dtype: str, tokens_per_s: float) -> dict:
    return {"dtype": dtype, "batches": "dynamic + length grouping", "samples_per_s": 2.0, "real_tokens_per_s": tokens_per_s,
            "padded_tokens_per_s": tokens_per_s, "cpu_s": 4.0, "steps": 2}


def _figures_on_an_avx2_cpu() -> dict:
    training = {"ours": {"runs": {"float32 dynamic": _training_run("float32", 1000.0)}, "batch_size": 8,
                         "max_seq_length": 384, "steps": 2, "warmup_steps": 1},
                "hf_trainer": {"skipped": "--skip_baselines"}, "speedups": {},
                "skipped_runs": training_dtypes("cpu", "float32", native_bf16=False)[1]}
    inference = {"ours": {"runs": {"default": {"dtype": "float32", "wall_s": 2.0, "real_tokens": 10_000},
                                   "int8": {"dtype": "int8", "wall_s": 1.0, "real_tokens": 10_000}}}}
    eval_full = {"dtype": "float32", "real_tokens": 50_000, "stages": {"forward": {"wall_s": 5.0}}}
    return {"training": training, "inference": inference, "eval_full": eval_full}


def test_peak_fractions_read_training_and_inference_against_their_dtypes_peak():
    fractions = peak_fractions(_figures_on_an_avx2_cpu(), 10_000_000, {"float32": 125e9})
    assert fractions["training"] == {"float32 dynamic": round(6 * 1e7 * 1000 / 125e9, 4)}
    assert fractions["inference"] == {"figure 1 default (end to end)": round(2 * 1e7 * 5000 / 125e9, 4),
                                      "figure 1 int8 (end to end)": None,       # no int8 peak measured
                                      "figure 3 forward passes": round(2 * 1e7 * 10_000 / 125e9, 4)}
    skipped = {"training": {"skipped": "not selected"}, "inference": {"skipped": "x"}, "eval_full": {"skipped": "x"}}
    assert peak_fractions(skipped, 1, {"float32": 1.0}) == {"training": {}, "inference": {}}


def test_speed_md_labels_the_skipped_bf16_rows_and_prints_the_cpu_and_its_peak():
    figures = _figures_on_an_avx2_cpu()
    peaks = {"float32": {"flops_per_s": 125e9, "best_s": 0.137, "repeats": 9}}
    figures["cpu_peak"] = {"size": 2048, "threads": 2, "peaks": peaks, "inputs": {"seconds": 1.5},
                           "fractions": peak_fractions(figures, 10_000_000, {"float32": 125e9})}
    for name in ("inference", "eval_full", "postprocess", "features"):
        figures[name] = {"skipped": "not selected (--figures)"}
    figures["memory"] = {}
    report = {"mode": "full", "seconds": 1.0, "baselines_skipped": True, "hf_versions": None, "versions": {},
              "model": {"name": "m", "num_parameters": 22_700_000, "matmul_parameters": 10_000_000, "head_source": "x"},
              "machine": {"device": "cpu", "cpu": abilities(EPYC_AVX2).as_record(), "cpu_count": 2,
                          "torch_threads": 2, "native_bf16": False, "load_average_before": [0.1],
                          "load_average_after": [0.2]}}
    markdown = render_markdown({**report, "figures": figures})
    assert "| ours bfloat16 dynamic | skipped: bfloat16 is emulated on this CPU (no AVX-512 BF16/AMX) |" in markdown
    assert "| ours bfloat16 padded | skipped: bfloat16 is emulated on this CPU (no AVX-512 BF16/AMX) |" in markdown
    assert "AMD EPYC 7B12: AVX2, no AVX-512, no AVX-512 BF16, no AMX; bfloat16 emulated" in markdown
    assert "float32 **125.0 GFLOP/s**" in markdown
    assert f"| training: float32 dynamic | {100 * 6 * 1e7 * 1000 / 125e9:.1f}% |" in markdown
    older = {**report, "machine": {**report["machine"], "cpu": "AMD EPYC"},      # before the CPU record and probe
             "figures": {name: figure for name, figure in figures.items() if name != "cpu_peak"}}
    assert "(AMD EPYC, 2 cores, native bf16: False; 2 torch threads)" in render_markdown(older) and "GEMM peak" not in render_markdown(older)
