"""Faults a run must survive or refuse clearly: two runs in one folder, unwritable folders, damaged
checkpoints, a ``kill -9`` in the middle of training. Real CLI (in-process or ``python -m
bench.run_squad`` in a subprocess), tiny models, CPU."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.apps.run import main as run_squad
from bench.core.results import load_results
from tests.test_run_squad import base_args, error_lines, train_log_updates

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------- helpers
def lock_file(out: Path) -> Path:
    from bench.run.output_dir import LOCK_FILE
    return out / LOCK_FILE


def zero_bytes_inside(weights: Path, count: int = 64) -> None:
    """Zero ``count`` bytes in the middle of the tensor data (the header stays valid: it loads silently)."""
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = start + (len(data) - start) // 2
    assert any(data[middle:middle + count]), "these bytes are zero already"
    data[middle:middle + count] = bytes(count)
    weights.write_bytes(bytes(data))


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def without_recorded_hashes(ckpt: Path) -> None:
    """What a checkpoint written before hashes were recorded looks like."""
    meta = json.loads((ckpt / "meta.json").read_text())
    meta.pop("files", None)
    (ckpt / "meta.json").write_text(json.dumps(meta))


def cli_subprocess(argv: list[str], log: Path, *, unprivileged: bool = False) -> subprocess.Popen:
    """``python -m bench.run_squad`` in a child process, its output into ``log``. ``unprivileged``: as root,
    without the capability that lets root write into read-only folders (so that a chmod means to it what
    it means to a user)."""
    prefix = []
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be made here")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w", encoding="utf-8") as sink:    # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen(prefix + [sys.executable, "-m", "bench.run_squad", *argv], stdout=sink,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}):\n{log.read_text()[-4000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def complete_checkpoints(out: Path) -> list[Path]:
    found = [p.parent for p in (out / "checkpoints").glob("update_*/meta.json")]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


# ---------------------------------------------------------------------------------------- 2: one run per folder
@pytest.mark.slow
def test_a_second_run_into_a_busy_output_dir_is_refused(tiny_dirs, sample_files, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    argv = base_args(tiny_dirs["bert"], sample_files["2.0"], out, num_train_steps=100000, save_interval=100000)
    first = cli_subprocess(argv, tmp_path / "first.log")
    try:
        wait_for(lambda: (out / "train_log.jsonl").is_file(), first, tmp_path / "first.log")     # training
        lock = json.loads(lock_file(out).read_text())
        assert lock["pid"] == first.pid
        for extra in ([], ["--resume"], ["--overwrite_output_dir"]):
            assert run_squad(argv + extra) == 2
            errors = error_lines(capsys.readouterr().err)
            assert len(errors) == 1 and str(out) in errors[0] and f"pid {first.pid}" in errors[0], errors
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    # Killed: its lock is stale (its pid is dead on this host) and is taken over, with a warning.
    assert lock_file(out).is_file()
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], out, num_train_steps=1,
                               max_eval_samples=5, overwrite_output_dir=True)) == 0
    assert "stale lock" in caplog.text and str(first.pid) in caplog.text
    assert not lock_file(out).exists()                    # released at the end
    assert load_results(out / "results.json")["timing"]["updates"] == 1


# ---------------------------------------------------------------------------------------- 3: writable folders
@pytest.mark.slow
@pytest.mark.parametrize("where", ["output_dir", "checkpoints", "cache_dir"])
def test_an_unwritable_folder_is_refused_before_training(where, tiny_dirs, sample_files, tmp_path):
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    folder = {"output_dir": out, "checkpoints": out / "checkpoints", "cache_dir": cache}[where]
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        proc = cli_subprocess(base_args(tiny_dirs["bert"], sample_files["2.0"], out, num_train_steps=2,
                                        cache_dir=cache), tmp_path / "child.log", unprivileged=True)
        proc.wait(timeout=240)
    finally:
        folder.chmod(0o755)
    err = (tmp_path / "child.log").read_text()
    assert proc.returncode == 2, err[-4000:]
    errors = error_lines(err)
    assert len(errors) == 1 and str(folder) in errors[0], err[-4000:]
    assert not re.search(r"training \d+ windows", err) and not (out / "train_log.jsonl").exists()


# ---------------------------------------------------------------------------------------- 4: damaged checkpoints
@pytest.fixture(scope="module")
def trained(tiny_dirs, sample_files, tmp_path_factory):
    """A finished run of 3 updates with a checkpoint after each; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], out, **TRAINED_FLAGS)) == 0
    return out


TRAINED_FLAGS = dict(num_train_steps=3, save_interval=1, max_eval_samples=5, head="basic")


def copy_of(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def test_checkpoints_record_the_sha256_of_each_file(trained):
    from bench.core.io_utils import sha256_file
    from bench.run.checkpoints import verify_checkpoint

    ckpt = trained / "checkpoints" / "update_3"
    files = json.loads((ckpt / "meta.json").read_text())["files"]
    assert set(files) == {"model.safetensors", "trainer_state.pt"}
    assert all(files[name] == sha256_file(ckpt / name) for name in files)
    assert verify_checkpoint(ckpt) is True


def test_resume_falls_back_from_a_damaged_checkpoint(trained, tiny_dirs, sample_files, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = copy_of(trained, tmp_path)
    damaged = out / "checkpoints" / "update_3" / "model.safetensors"
    zero_bytes_inside(damaged)
    argv = base_args(tiny_dirs["bert"], sample_files["2.0"], out, resume=True, **TRAINED_FLAGS)
    assert run_squad(argv) == 0
    assert str(damaged) in caplog.text and "damaged" in caplog.text
    assert f"resumed from {out / 'checkpoints' / 'update_2'}" in caplog.text
    record = load_results(out / "results.json")
    assert record["timing"]["updates"] == 3 and record["timing"]["resumed_from"] == [2]
    assert record["metrics"]["best_checkpoint"] == "update_3"
    assert train_log_updates(out) == [1, 2, 3]


def test_resume_stops_naming_every_damaged_checkpoint_when_none_is_intact(trained, tiny_dirs, sample_files,
                                                                         tmp_path, capsys):
    out = copy_of(trained, tmp_path)
    shutil.rmtree(out / "checkpoints" / "update_1")
    newest, older = (out / "checkpoints" / name / "model.safetensors" for name in ("update_3", "update_2"))
    truncate(newest)                    # used to fail with "SafetensorError: incomplete metadata", no path
    zero_bytes_inside(older)            # used to load silently
    assert run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], out, resume=True, **TRAINED_FLAGS)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(newest) in errors[0] and str(older) in errors[0], errors


def test_all_evaluate_names_a_damaged_checkpoint(trained, tiny_dirs, sample_files, tmp_path, capsys):
    out = copy_of(trained, tmp_path)
    damaged = out / "checkpoints" / "update_1" / "model.safetensors"
    zero_bytes_inside(damaged)
    argv = base_args(tiny_dirs["bert"], sample_files["2.0"], out, resume=True, all_evaluate=True, **TRAINED_FLAGS)
    assert run_squad(argv) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(damaged) in errors[0] and "damaged" in errors[0], errors


def test_checkpoints_without_recorded_hashes_still_load(trained, tiny_dirs, sample_files, tmp_path, caplog,
                                                        capsys):
    out = copy_of(trained, tmp_path)
    for ckpt in (out / "checkpoints").iterdir():
        without_recorded_hashes(ckpt)
    argv = base_args(tiny_dirs["bert"], sample_files["2.0"], out, resume=True, **TRAINED_FLAGS)
    assert run_squad(argv) == 0
    assert "cannot be verified" in caplog.text and str(out / "checkpoints" / "update_3") in caplog.text
    # Unverifiable and garbled: the error names the file instead of "incomplete metadata".
    garbled = out / "checkpoints" / "update_3" / "model.safetensors"
    truncate(garbled)
    without_recorded_hashes(garbled.parent)
    capsys.readouterr()
    assert run_squad(argv) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(garbled) in errors[0], errors


# ---------------------------------------------------------------------------------------- 6: kill -9, then --resume
@pytest.mark.slow
def test_kill_9_during_training_then_resume_from_the_last_intact_checkpoint(tiny_dirs, sample_files, tmp_path,
                                                                            caplog):
    caplog.set_level(logging.INFO)
    out, cache = tmp_path / "run", tmp_path / "cache"
    total = 40
    argv = base_args(tiny_dirs["bert"], sample_files["2.0"], out, num_train_steps=total, save_interval=1,
                     max_eval_samples=5, head="basic", cache_dir=cache)
    proc = cli_subprocess(argv, tmp_path / "child.log")
    try:
        wait_for(lambda: len(complete_checkpoints(out)) >= 2, proc, tmp_path / "child.log")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    checkpoints = complete_checkpoints(out)
    newest, previous = checkpoints[-1], checkpoints[-2]
    assert int(newest.name.split("_")[1]) < total, "the run finished before it was killed"
    zero_bytes_inside(newest / "model.safetensors")
    # What a kill in the middle of writing leaves: a checkpoint staging folder and a feature-cache temp file.
    staging = out / "checkpoints" / f".{newest.name}.x1y2z3"
    shutil.copytree(previous, staging)
    leftover = cache / ".features-train-roberta-128-0123456789abcdef.npz.k9k9k9.tmp"
    leftover.write_bytes(b"half a cache file")
    an_hour_ago = time.time() - 3600
    os.utime(leftover, (an_hour_ago, an_hour_ago))

    assert run_squad(argv + ["--resume"]) == 0
    assert str(newest / "model.safetensors") in caplog.text and "damaged" in caplog.text
    assert f"resumed from {previous}" in caplog.text
    record = load_results(out / "results.json")
    assert record["timing"]["updates"] == total
    assert record["timing"]["resumed_from"] == [int(previous.name.split("_")[1])]
    assert train_log_updates(out) == list(range(1, total + 1))
    assert not staging.exists() and not leftover.exists()
    assert not lock_file(out).exists()
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []
