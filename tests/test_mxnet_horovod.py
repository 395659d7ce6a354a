"""``--backend mxnet --comm_backend horovod`` under horovodrun: 2 CPU processes (Gloo), tiny models.

* Through the real CLI, 2 processes x batch 2 end with the parameters of 1 process x batch 4 and of
  1 x batch 2 x ``--num_accumulated 2`` (to 1e-5, after 3 updates, with global-norm clipping active):
  gradients are averaged before the clipping, windows are sharded as on the torch backend.
* A rank killed in the middle of training ends the job in bounded time; a rank that hangs ends it
  after the collective deadline (``bench.run.failfast.deadline``).
* What is still not supported is refused with the reason (the recipe commands and torchrun included).

Needs the MXNet extra and Horovod built with MXNet (``bash scripts/install_mxnet.sh`` then
``bash scripts/install_horovod.sh``, which ``scripts/test.sh`` runs); with SQUAD_BENCH_REQUIRE_MXNET=1
a missing piece fails, never skips::

    OMP_NUM_THREADS=1 SQUAD_BENCH_REQUIRE_MXNET=1 python -m pytest tests/test_mxnet_horovod.py
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_mxnet_or_skip

mx, _ = import_mxnet_or_skip()

from bench.apps.run import main as run_squad  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from tests.test_distributed_run import digests, final_weights, launch, launcher_command  # noqa: E402
from tests.test_run_squad import EQUIVALENCE_FLAGS, base_args  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow       # horovodrun jobs

# Clipping on, between the measured gradient norms (4.1, 5.6 and 2.8 in the 3 updates): it clips the second
# update only, so it must see the averaged gradient, and a wrong scale of the average (a sum, say) shows
# (clipping every update would hide it: a clipped gradient has the same norm whatever its scale).
FLAGS = {**EQUIVALENCE_FLAGS, "backend": "mxnet", "max_grad_norm": 4.5}


@pytest.fixture(scope="module", autouse=True)
def horovod_mxnet_is_built():
    """horovod.mxnet must import: a missing build fails with the install command (never a skip)."""
    from bench.backends.mxnet.dist import import_horovod_mxnet
    hvd = import_horovod_mxnet()
    assert hvd.gloo_built(), "Horovod was built without Gloo: bash scripts/install_horovod.sh"


@pytest.fixture(scope="module")
def setup(tiny_model, sample_files):
    """The dropout-free tiny BERT and 40 real SQuAD 2.0 questions."""
    return {"model": tiny_model("bert", dropout=0.0), "data": sample_files["2.0"]}


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    for name in ("RANK", "WORLD_SIZE", "HOROVOD_RANK", "HOROVOD_SIZE", "SQUAD_BENCH_DEVICE_WORKER"):
        env.pop(name, None)
    return env


def _horovodrun(*command: str) -> list[str]:
    """``horovodrun -np 2 -H localhost:2 --gloo COMMAND`` (what tests.test_distributed_run launches)."""
    launcher = launcher_command("horovod", 2)
    return launcher[:launcher.index("--gloo") + 1] + list(command)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_and_accumulation(setup, tmp_path):
    out = tmp_path / "two"
    proc = launch("horovod", 2, base_args(setup["model"], setup["data"], out, batch_size=2, **FLAGS))
    ranks = digests(proc)
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1], ranks        # replicas in sync
    record = load_results(out / "results.json")
    assert record["backend"] == "mxnet" and record["world_size"] == 2 and record["global_batch_size"] == 4
    # Only rank 0 writes: one log, one set of outputs; evaluation split over the ranks, gathered on rank 0.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best_results.json", "checkpoints", "na_prob.json", "nbest_predictions.json", "predictions.json",
         "results.json", "run.log", "train_log.jsonl"])
    assert len(json.loads((out / "predictions.json").read_text())) == 5
    assert "rank 1/2" not in (out / "run.log").read_text()

    single, accumulated = tmp_path / "one", tmp_path / "acc"
    assert run_squad(base_args(setup["model"], setup["data"], single, batch_size=4, **FLAGS)) == 0
    assert run_squad(base_args(setup["model"], setup["data"], accumulated, batch_size=2, num_accumulated=2,
                               **FLAGS)) == 0
    grad_norms = [json.loads(line)["grad_norm"] for line in (single / "train_log.jsonl").read_text().splitlines()]
    assert min(grad_norms) < FLAGS["max_grad_norm"] < max(grad_norms), f"clips all or nothing: {grad_norms}"
    # The logged loss is the mean over the ranks: the global batch's, as in one process.
    np.testing.assert_allclose(_losses(out), _losses(single), atol=1e-5)
    two, one, acc = final_weights(out), final_weights(single), final_weights(accumulated)
    assert sorted(two) == sorted(one)
    for name in two:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, rtol=0, err_msg=f"2x2 vs 1x4: {name}")
        np.testing.assert_allclose(two[name], acc[name], atol=1e-5, rtol=0, err_msg=f"2x2 vs 1x2x2: {name}")


def _pids_with(marker: str, rank: str) -> list[int]:
    """This test's processes of ``rank`` (their environment carries the test's unique marker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (f"SQUAD_BENCH_TEST_MARKER={marker}".encode() in environ and f"HOROVOD_RANK={rank}".encode() in environ
                and b"bench.run_squad" in cmdline):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_ends_the_job_in_bounded_time(setup, tmp_path):
    out, marker = tmp_path / "out", uuid.uuid4().hex
    argv = base_args(setup["model"], setup["data"], out, batch_size=2,
                     **{**FLAGS, "num_train_steps": 100000, "save_interval": 100000})
    job = subprocess.Popen(launcher_command("horovod", 2) + argv, cwd=REPO, env=_env(SQUAD_BENCH_TEST_MARKER=marker),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = out / "train_log.jsonl"
        deadline = time.monotonic() + 240
        while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
            assert job.poll() is None, f"the job ended before training:\n{job.communicate()[0][-4000:]}"
            assert time.monotonic() < deadline, "no training progress within 240 s"
            time.sleep(0.5)
        victims = _pids_with(marker, "1")
        assert victims, "rank 1's process was not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = job.communicate(timeout=120)
        seconds = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode != 0, output[-4000:]
    assert seconds < 60, f"the job took {seconds:.0f} s to end after rank 1 died"
    assert not (out / "results.json").exists()


HANG_WORKER = '''
import sys, time
from bench.run.distributed import detect_world
from bench.run.failfast import run_with_failfast
from bench.backends.mxnet.dist import MxHorovodComm


def main():
    comm = MxHorovodComm(detect_world("horovod", "-1"), timeout_s=10)
    if comm.rank == 1:
        time.sleep(3600)                    # hangs: never joins the barrier
    comm.barrier()
    raise AssertionError("the barrier returned although rank 1 never came")


run_with_failfast(main)
'''


def test_a_hung_rank_ends_the_job_after_the_collective_deadline(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(HANG_WORKER))
    command = _horovodrun(sys.executable, str(script))
    started = time.monotonic()
    job = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    output = job.stdout + job.stderr
    assert job.returncode != 0, output
    assert "barrier did not finish within 10 s" in output, output
    assert "barrier returned" not in output, output
    assert seconds < 90


# ---------------------------------------------------------------------------------------- refusals
def test_horovodrun_without_the_horovod_flag_is_refused_with_the_flag(setup, tmp_path):
    argv = base_args(setup["model"], setup["data"], tmp_path / "out", num_train_steps=1, backend="mxnet")
    command = _horovodrun(sys.executable, "-m", "bench.run_squad", *argv)     # without --comm_backend horovod
    job = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert job.returncode != 0
    assert "pass --comm_backend horovod" in job.stdout + job.stderr


def test_torchrun_is_refused_with_the_horovodrun_command(setup, tmp_path):
    argv = base_args(setup["model"], setup["data"], tmp_path / "out", num_train_steps=1, backend="mxnet")
    job = subprocess.run(launcher_command("torchrun", 2) + argv, cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=120)
    output = job.stdout + job.stderr
    assert job.returncode != 0
    assert "--comm_backend torchrun: --backend mxnet runs several processes only under horovodrun" in output, \
        output[-3000:]
    assert "cannot exchange MXNet gradients" in output


@pytest.mark.parametrize("use_horovod,expected", [
    ("1", "horovodrun -np 2 -H localhost:2 python3 -m bench.run_squad"),
    ("0", "python3 -m bench.run_squad"),
])
def test_recipe_commands_take_the_mxnet_backend(use_horovod, expected, tmp_path):
    """USE_HOROVOD=1 with EXTRA_ARGS="--backend mxnet": horovodrun with --comm_backend horovod, which the
    backend runs; USE_HOROVOD=0 with 2 GPUs asks for device workers, which it refuses with the reason."""
    env = _env(DRY_RUN="1", NUM_GPUS="2", EXTRA_ARGS="--backend mxnet", DATA_DIR=str(tmp_path), PYTHON="python3")
    job = subprocess.run(["bash", str(REPO / "commands" / "run_squad2_electra_small.sh"), use_horovod],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    command = job.stdout.strip().splitlines()[-1]
    assert command.startswith(expected) and "--backend mxnet" in command, command
    assert ("--comm_backend horovod" in command) == (use_horovod == "1"), command
    if use_horovod == "0":
        from bench.apps.run import config_from_argv
        from bench.backends.mxnet.session import refuse_other_launchers
        from bench.run.distributed import DistributedConfigError
        words = command.split()[3:]                  # after "python3 -m bench.run_squad"
        with pytest.raises(DistributedConfigError, match=r"--gpus 0,1 asks for several GPUs: .*horovodrun"):
            refuse_other_launchers(config_from_argv(words))
