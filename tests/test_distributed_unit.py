"""Distributed layer: launcher detection, batch arithmetic, sharding, and real 2-process jobs.

    python -m pytest tests/test_distributed_unit.py -q

The launched tests start real jobs with torchrun, horovodrun (Gloo) and the device-mode
spawner on the CPU. Horovod must be installed (``bash scripts/install_horovod.sh``): a missing
horovodrun fails these tests with that command, it does not skip them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.run.distributed import (DistributedConfigError, WorldInfo, derive_accumulation, detect_world, epoch_shard,
                               eval_shard, global_batch, parse_gpus, should_spawn_device_workers)

REPO_ROOT = Path(__file__).resolve().parents[1]
# A failed rank must end the whole job well before this; the collectives in the failure
# runs use a 300 s timeout, so only the fail-fast teardown can finish within it. A hung rank
# (collective timeout 10 s in the worker script) must be noticed within the same limit.
TEARDOWN_LIMIT_S = 60
JOB_LIMIT_S = 120

TORCHRUN_ENV = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
HOROVOD_ENV = {"HOROVOD_RANK": "2", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "2"}
OMPI_ENV = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}


# ------------------------------------------------------------------------------- detect_world
def test_torchrun_env_is_read():
    world = detect_world("torchrun", "-1", TORCHRUN_ENV)
    assert world == WorldInfo(rank=3, local_rank=1, world_size=4, local_world_size=2, launcher="torchrun",
                              is_main=False, gpu=None)


@pytest.mark.parametrize("alias", ["dist", "dist_sync_device"])
def test_dist_aliases_mean_torchrun(alias):
    assert detect_world(alias, "-1", TORCHRUN_ENV).launcher == "torchrun"


def test_horovod_env_is_read():
    world = detect_world("horovod", None, HOROVOD_ENV)
    assert (world.rank, world.world_size, world.local_rank, world.local_world_size) == (2, 4, 0, 2)
    assert world.launcher == "horovod" and not world.is_main


def test_horovod_under_mpirun_reads_ompi_env():
    world = detect_world("horovod", "-1", OMPI_ENV)
    assert (world.rank, world.world_size, world.local_rank, world.local_world_size) == (1, 2, 1, 2)


def test_device_single_process():
    assert detect_world("device", "-1", {}) == WorldInfo(0, 0, 1, 1, "none", True, None)
    assert detect_world("device", "2", {}).gpu == 2


def test_device_worker_reads_the_spawned_env():
    env = {**TORCHRUN_ENV, "RANK": "1", "WORLD_SIZE": "2", "SQUAD_BENCH_DEVICE_WORKER": "1"}
    world = detect_world("device", "4,5", env)
    assert (world.rank, world.world_size, world.launcher, world.gpu) == (1, 2, "device", 5)


@pytest.mark.parametrize("gpus, expected", [("0", 1), ("6,7", 7), ("-1", None)])
def test_gpu_of_local_rank_1(gpus, expected):
    # One listed id means "GPU = local rank"; a list with one id per local process maps by index.
    assert detect_world("torchrun", gpus, TORCHRUN_ENV).gpu == expected


def test_too_few_gpus_for_the_local_processes_is_an_error():
    env = {**TORCHRUN_ENV, "LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": "3"}
    with pytest.raises(DistributedConfigError, match="lists 2 GPUs but 4 processes"):
        detect_world("torchrun", "0,1", env)


def test_horovod_without_horovodrun_tells_the_command():
    with pytest.raises(DistributedConfigError) as err:
        detect_world("horovod", "0", {})
    assert "--comm_backend horovod" in str(err.value) and "horovodrun -np" in str(err.value)


@pytest.mark.parametrize("flag", ["torchrun", "dist"])
def test_torchrun_without_torchrun_tells_the_command(flag):
    with pytest.raises(DistributedConfigError) as err:
        detect_world(flag, "0", {"RANK": "0"})
    message = str(err.value)
    assert f"--comm_backend {flag}" in message and "torchrun --standalone --nproc_per_node" in message
    assert "LOCAL_RANK" in message  # names what is missing


@pytest.mark.parametrize("env, flag", [({"WORLD_SIZE": "4"}, "torchrun"), ({"HOROVOD_SIZE": "2"}, "horovod"),
                                       ({"OMPI_COMM_WORLD_SIZE": "2"}, "horovod")])
def test_device_under_a_launcher_asks_for_the_right_flag(env, flag):
    with pytest.raises(DistributedConfigError, match=f"pass --comm_backend {flag}"):
        detect_world("device", "0", env)


def test_device_parent_with_several_gpus_must_spawn():
    assert should_spawn_device_workers("device", "0,1", {})
    assert not should_spawn_device_workers("device", "0,1", {"SQUAD_BENCH_DEVICE_WORKER": "1"})
    assert not should_spawn_device_workers("device", "0", {})
    assert not should_spawn_device_workers("torchrun", "0,1", {})
    with pytest.raises(DistributedConfigError, match="spawn_device_workers"):
        detect_world("device", "0,1", {})


@pytest.mark.parametrize("env, match", [({**TORCHRUN_ENV, "RANK": "4"}, "inconsistent"),
                                        ({**TORCHRUN_ENV, "RANK": "x"}, "non-integer")])
def test_bad_launcher_values(env, match):
    with pytest.raises(DistributedConfigError, match=match):
        detect_world("torchrun", "-1", env)


def test_unknown_backend():
    with pytest.raises(DistributedConfigError, match="choose one of"):
        detect_world("mpi", "0", {})


def test_parse_gpus():
    assert parse_gpus("0,1,2,3") == [0, 1, 2, 3]
    assert parse_gpus(" 3 ") == [3]
    assert parse_gpus("-1") == parse_gpus("") == parse_gpus(None) == []
    for bad in ("a", "0,0", "0,-1"):
        with pytest.raises(DistributedConfigError, match="--gpus"):
            parse_gpus(bad)


def test_distributed_module_does_not_import_torch():
    code = "import sys, bench.run.distributed; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_child_env()).returncode == 0


# ------------------------------------------------------------------------------- batch arithmetic
def test_global_batch():
    assert global_batch(batch_size=4, num_accumulated=2, world_size=8) == 64


@pytest.mark.parametrize("world_size, accumulation", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_accumulation_keeps_the_global_batch(world_size, accumulation):
    assert derive_accumulation(32, batch_size=4, world_size=world_size) == accumulation
    assert global_batch(4, accumulation, world_size) == 32


@pytest.mark.parametrize("args", [(30, 4, 2), (32, 4, 16), (32, 0, 1)])
def test_accumulation_errors(args):
    with pytest.raises(DistributedConfigError, match="--batch_size"):
        derive_accumulation(*args)


# ------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("num_items, world_size", [(10, 1), (10, 3), (12, 4), (2, 4), (1, 1)])
def test_epoch_shards_cover_everything_with_equal_counts(num_items, world_size):
    shards = [epoch_shard(num_items, r, world_size, epoch=0, seed=7) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1
    assert len(shards[0]) == -(-num_items // world_size)
    assert set(np.concatenate(shards)) == set(range(num_items))
    if num_items % world_size == 0:  # no padding: a true partition
        assert len(np.concatenate(shards)) == num_items


def test_epoch_shard_is_deterministic_and_changes_per_epoch():
    first = epoch_shard(100, 1, 4, epoch=3, seed=42)
    assert np.array_equal(first, epoch_shard(100, 1, 4, epoch=3, seed=42))
    assert not np.array_equal(first, epoch_shard(100, 1, 4, epoch=4, seed=42))
    assert not np.array_equal(first, epoch_shard(100, 1, 4, epoch=3, seed=43))


def test_epoch_shard_micro_batches_form_contiguous_global_blocks():
    # Micro-batch k of all ranks together = block k of the shared permutation (strided sharding).
    world_size, batch = 4, 3
    full = epoch_shard(24, 0, 1, epoch=1, seed=5)
    shards = [epoch_shard(24, r, world_size, epoch=1, seed=5) for r in range(world_size)]
    for k in range(2):
        union = np.concatenate([s[k * batch:(k + 1) * batch] for s in shards])
        assert set(union) == set(full[k * batch * world_size:(k + 1) * batch * world_size])


def test_epoch_shard_without_shuffle_and_empty():
    assert epoch_shard(5, 1, 2, epoch=0, seed=0, shuffle=False).tolist() == [1, 3, 0]
    assert epoch_shard(0, 0, 2, epoch=0, seed=0).size == 0
    with pytest.raises(ValueError, match="outside"):
        epoch_shard(5, 2, 2, epoch=0, seed=0)


def test_eval_shards_concatenate_back_in_order():
    shards = [eval_shard(11, r, 4) for r in range(4)]
    assert np.concatenate(shards).tolist() == list(range(11))
    assert [len(s) for s in shards] == [3, 3, 3, 2]


# ------------------------------------------------------------------------------- in-process comm
def test_local_comm_is_the_identity():
    import torch
    from bench.backends.torch.dist import LocalComm, init_comm
    comm = init_comm(detect_world("device", "-1", {}))
    assert isinstance(comm, LocalComm) and comm.is_main and comm.device.type == "cpu"
    tensor = torch.tensor([2.0])
    assert comm.all_reduce_mean(tensor) is tensor and tensor.item() == 2.0
    assert comm.broadcast_object({"a": 1}) == {"a": 1}
    gathered = comm.gather_arrays_to_main({"x": np.arange(3)})
    assert gathered["x"].tolist() == [0, 1, 2]
    model = torch.nn.Linear(2, 1)
    assert comm.wrap_model(model) is model
    with comm.no_sync(model, is_last_micro_batch=False), comm.skip_synchronize(None):
        pass


def test_gather_concatenates_variable_lengths_and_checks_keys():
    from bench.run.distributed import concat_by_rank as _concat_by_rank
    out = _concat_by_rank([{"a": np.zeros((2, 3))}, {"a": np.ones((1, 3))}])
    assert out["a"].shape == (3, 3) and out["a"][2].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="rank 1 gathered"):
        _concat_by_rank([{"a": np.zeros(1)}, {"b": np.zeros(1)}])


def test_failfast_reraises_in_a_plain_process(monkeypatch):
    from bench.run.failfast import LAUNCHER_ENV, run_with_failfast
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)

    def boom():
        raise KeyError("plain processes keep their exceptions")
    with pytest.raises(KeyError):
        run_with_failfast(boom)
    assert run_with_failfast(lambda x: x + 1, 1) == 2


def test_failfast_under_a_launcher_exits_with_one_line_for_user_errors():
    code = ("from bench.run.distributed import DistributedConfigError\n"
            "from bench.backends.torch.dist import run_with_failfast\n"
            "def bad():\n    raise DistributedConfigError('--gpus is wrong')\n"
            "run_with_failfast(bad)\n")
    job = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env={**_child_env(), "RANK": "3"},
                         capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert job.returncode == 2, job.stderr
    assert job.stderr.strip() == "[rank 3] error: --gpus is wrong"


# ------------------------------------------------------------------------------- launched jobs
# One script for every launcher. It checks the collectives and one full DDP/Horovod update
# (2 ranks x 2 micro-batches) against the same update computed by one process on the whole batch.
WORKER = '''
import sys
import threading
import time

import numpy as np
import torch
from bench.run.distributed import detect_world, epoch_shard
from bench.backends.torch.dist import init_comm, launch, run_with_failfast

torch.set_num_threads(1)
HANG_TIMEOUT_S = 10


def check(comm):
    r, n = comm.rank, comm.world_size
    assert n == 2, n
    mean = comm.all_reduce_mean(torch.tensor([float(r + 1)], dtype=torch.float64))
    assert mean.item() == 1.5, mean
    assert comm.broadcast_object({"from": r}) == {"from": 0}
    gathered = comm.gather_arrays_to_main({"rows": np.full((r + 1, 2), r), "ids": np.arange(r + 1) + 10 * r})
    if comm.is_main:
        assert gathered["rows"][:, 0].tolist() == [0, 1, 1], gathered
        assert gathered["ids"].tolist() == [0, 10, 11], gathered
    else:
        assert gathered is None
    check_one_update(comm)
    comm.barrier()
    print(f"OK rank {r}", flush=True)


def check_one_update(comm):
    torch.manual_seed(100 + comm.rank)            # ranks start different: broadcast/DDP must fix it
    model = torch.nn.Linear(4, 1)
    train_model = comm.wrap_model(model)
    optimizer = comm.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                    backward_passes_per_step=2)
    comm.broadcast_initial_state(model, optimizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(8, 4)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(8, 1)), dtype=torch.float32)
    mine = torch.as_tensor(epoch_shard(8, comm.rank, comm.world_size, epoch=0, seed=1))
    for j, part in enumerate(mine.split(2)):
        with comm.no_sync(train_model, is_last_micro_batch=j == 1):
            (((train_model(x[part]) - y[part]) ** 2).sum() / len(mine)).backward()
    comm.synchronize(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    with comm.skip_synchronize(optimizer):
        optimizer.step()
    reference = torch.nn.Linear(4, 1)
    reference.load_state_dict(start)
    ((reference(x) - y) ** 2).mean().backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(got, want, atol=1e-6), (got, want)


def worker(config):
    comm = init_comm(detect_world(config["comm_backend"], config["gpus"]), timeout_s=config["timeout_s"])
    if config["mode"] == "ok":
        check(comm)
        comm.shutdown()
        return
    if comm.rank == 1:
        misbehave(config["mode"])
    comm.barrier()                                     # rank 0 waits for a rank that never comes
    raise AssertionError("the barrier returned although rank 1 never came")


def misbehave(mode):
    if mode == "hang":
        time.sleep(3600)
    # A live non-daemon thread (a prefetcher, say) keeps an interpreter that exits normally
    # alive forever, with its sockets open: only the fail-fast exit ends this rank.
    threading.Thread(target=time.sleep, args=(3600,)).start()
    raise RuntimeError("rank 1 fails on purpose")


class Config(dict):
    __getattr__ = dict.__getitem__


if __name__ == "__main__":
    backend, mode = sys.argv[1], sys.argv[2]
    config = Config(comm_backend=backend, gpus="0,1" if backend == "device" else "-1", mode=mode,
                    timeout_s={"ok": 60, "fail": 300, "hang": HANG_TIMEOUT_S}[mode])
    sys.exit(launch(worker, config))
'''


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "HOROVOD_RANK", "HOROVOD_SIZE", "SQUAD_BENCH_DEVICE_WORKER"):
        env.pop(name, None)
    return env


def _tool(name: str, install_hint: str) -> str:
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; {install_hint}")
    return path


def _launch_command(launcher: str, script: Path, mode: str) -> list[str]:
    if launcher == "torchrun":
        return [_tool("torchrun", "pip install torch==2.13.0"), "--standalone", "--nproc_per_node", "2",
                str(script), "torchrun", mode]
    if launcher == "horovodrun":
        return [_tool("horovodrun", "install Horovod with: bash scripts/install_horovod.sh"),
                "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(script), "horovod", mode]
    return [sys.executable, str(script), "device", mode]


def _run_job(tmp_path: Path, launcher: str, mode: str, limit_s: float) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    started = time.monotonic()
    try:
        job = subprocess.run(_launch_command(launcher, script, mode), cwd=tmp_path, env=_child_env(),
                             capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{launcher} job ({mode}) still running after {limit_s} s:\n{exc.stdout}\n{exc.stderr}")
    return job, time.monotonic() - started


LAUNCHERS = ["torchrun", "horovodrun", "device"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_job(tmp_path, launcher):
    job, _ = _run_job(tmp_path, launcher, "ok", JOB_LIMIT_S)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output
    assert "OK rank 0" in output and "OK rank 1" in output, output


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_failing_rank_ends_the_job_non_zero(tmp_path, launcher):
    job, seconds = _run_job(tmp_path, launcher, "fail", TEARDOWN_LIMIT_S)
    output = job.stdout + job.stderr
    assert job.returncode != 0, output
    assert "rank 1 fails on purpose" in output, output
    assert "barrier returned" not in output, output
    assert seconds < TEARDOWN_LIMIT_S


@pytest.mark.slow
def test_a_hung_rank_ends_the_horovod_job(tmp_path):
    # Horovod 0.28.1 has no working collective timeout with Gloo; HorovodComm's watchdog is it.
    job, seconds = _run_job(tmp_path, "horovodrun", "hang", TEARDOWN_LIMIT_S)
    output = job.stdout + job.stderr
    assert job.returncode != 0, output
    assert "barrier did not finish within 10 s" in output, output
    assert seconds < TEARDOWN_LIMIT_S


# ------------------------------------------------------------------------------- run.log under every launcher
# What rank 0's run.log must hold after a 2-process training + evaluation run, whichever launcher
# started the ranks: the records of every stage, at INFO, from the first (the rank line) to the last.
RUN_LOG_RECORDS = ("INFO bench.run: rank 0/2 on", "INFO bench.core.features: built ", "INFO bench.run: training ",
                   "INFO bench.run: update 1 ", "INFO bench.run: update 2 ", "INFO bench.run.loop: saved ",
                   "INFO bench.run: rank 0 final parameter digest", "INFO bench.run.pipeline: eval update_2: ",
                   "INFO bench.run: SQuAD 2.0: EM ", "INFO bench.run: outputs in ")


def _run_script_command(launcher: str) -> list[str]:
    if launcher == "torchrun":
        return [_tool("torchrun", "pip install torch==2.13.0"), "--standalone", "--nproc_per_node", "2",
                "-m", "bench.run_squad", "--comm_backend", "torchrun"]
    if launcher == "horovodrun":
        return [_tool("horovodrun", "install Horovod with: bash scripts/install_horovod.sh"),
                "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "bench.run_squad",
                "--comm_backend", "horovod"]
    # --gpus 0,1 without a GPU: two spawned device workers on the CPU (Gloo), as on a 2-GPU machine.
    return [sys.executable, "-m", "bench.run_squad", "--comm_backend", "device"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_rank0_run_log_is_complete_under_every_launcher(launcher, tiny_model, sample_files, tmp_path):
    from tests.test_run_squad import base_args

    out = tmp_path / "out"
    argv = base_args(tiny_model("bert"), sample_files["2.0"], out, num_train_steps=2, max_eval_samples=5,
                     gpus="0,1" if launcher == "device" else "-1")
    try:
        job = subprocess.run(_run_script_command(launcher) + argv, cwd=REPO_ROOT, env=_child_env(),
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{launcher} run still going after 300 s:\n{exc.stdout}\n{exc.stderr}")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-6000:]
    log = (out / "run.log").read_text(encoding="utf-8")
    for record in RUN_LOG_RECORDS:
        assert record in log, f"{record!r} is missing from rank 0's run.log:\n{log}"
    assert "rank 1/2" not in log, log          # rank 0's log only


@pytest.mark.parametrize("env, want", [({}, 1), ({"HOROVOD_LOCAL_SIZE": "4"}, 4), ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
                                       ({"LOCAL_WORLD_SIZE": "3"}, 3), ({"HOROVOD_LOCAL_SIZE": "x"}, 1),
                                       ({"LOCAL_WORLD_SIZE": "0"}, 1)])
def test_local_processes_read_from_the_launchers_environment(env, want):
    from bench.run.distributed import local_processes

    assert local_processes(env) == want
