"""bench.run.native_build: what the backends' CPU kernels are compiled for, where they are cached, and
how a failed build is reported. (The kernels themselves: tests/test_torch_kernels.py and
tests/test_mxnet_kernels.py.)"""
from __future__ import annotations

import subprocess

import pytest

from bench.run import native_build
from bench.run.cpu import detect_cpu


@pytest.mark.parametrize("flags, avx512_code", [("fpu sse2 avx avx2 fma", False),
                                                ("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16", True)])
def test_an_avx2_only_cpu_gets_no_avx512_code(monkeypatch, flags, avx512_code):
    """What the kernels are compiled for follows this CPU's detection (faked both ways here), so that
    ``scripts/as_avx2_only.sh`` rehearses an AVX2-only CPU's build on a bigger one."""
    monkeypatch.setattr(native_build, "detect_cpu", lambda: detect_cpu(f"model name\t: Fake\nflags\t\t: {flags}\n"))
    assert ("-mno-avx512f" not in native_build.compile_flags()) == avx512_code
    assert "-march=native" in native_build.compile_flags(("-fopenmp",)) and "-fopenmp" in native_build.compile_flags(
        ("-fopenmp",))


def test_a_library_is_built_once_cached_by_content_and_a_failure_names_its_cause(monkeypatch, tmp_path):
    monkeypatch.setenv("SQUAD_BENCH_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "add.cc"
    source.write_text('extern "C" int add(int a, int b) { return a + b; }\n')
    first = native_build.build_library("probe", (source,))
    assert first.parent == tmp_path / "cache" / "cpu-kernels" and first.name.startswith("probe-")
    assert native_build.build_library("probe", (source,)) == first                # cached, not rebuilt
    assert not [p for p in first.parent.iterdir() if p.suffix == ".tmp"]           # written, then renamed
    source.write_text('extern "C" int add(int a, int b) { return a - b; }\n')
    assert native_build.build_library("probe", (source,)) != first                # a new source, a new key
    source.write_text("this is not C++\n")
    with pytest.raises(subprocess.CalledProcessError) as failure:
        native_build.build_library("probe", (source,))
    assert native_build.build_failure(failure.value).startswith("g++ failed: ")
    assert "error" in native_build.build_failure(failure.value)
    monkeypatch.setattr(native_build, "COMPILER", "no-such-compiler-here")
    with pytest.raises(OSError, match="no-such-compiler-here not found on PATH"):
        native_build.build_library("probe", (source,))


def test_the_switch_turns_every_backends_kernels_off(monkeypatch):
    monkeypatch.delenv(native_build.KERNELS_ENV, raising=False)
    assert native_build.kernels_enabled()
    monkeypatch.setenv(native_build.KERNELS_ENV, "0")
    assert not native_build.kernels_enabled()


def assert_kernels_fall_back(training_kernels, monkeypatch, tmp_path, caplog) -> None:
    """For each backend's ``training_kernels()`` (tests/test_torch_kernels.py, tests/test_mxnet_kernels.py):
    None when switched off, and None with a one-line warning naming the cause, building nothing, when the
    compiler is missing. Leaves the function's cache empty."""
    import logging

    training_kernels.cache_clear()
    try:
        monkeypatch.setenv(native_build.KERNELS_ENV, "0")
        assert training_kernels() is None
        training_kernels.cache_clear()
        monkeypatch.delenv(native_build.KERNELS_ENV)
        monkeypatch.setenv("SQUAD_BENCH_CACHE", str(tmp_path))
        monkeypatch.setattr(native_build, "COMPILER", "no-such-compiler-here")
        with caplog.at_level(logging.WARNING, logger="bench.run"):
            assert training_kernels() is None
        assert "could not be built (no-such-compiler-here not found on PATH)" in caplog.text
        assert not any(tmp_path.rglob("*.so"))
    finally:
        training_kernels.cache_clear()
