"""Framework-free helpers for distributed training: who am I, how big is the job, what do I train on.

Nothing here imports torch or horovod, so the launcher checks run (and fail with a clear
message) before a framework is loaded. The torch-side communication lives in
``bench.backends.torch.dist``.

How each ``--comm_backend`` is launched (one process per GPU in every multi-GPU mode)::

    # one process; --gpus 0 (one GPU) or --gpus -1 (CPU)
    python -m bench.run_squad --comm_backend device --gpus 0 ...
    # one machine, 4 GPUs, the script spawns the 4 workers itself (torch.distributed underneath)
    python -m bench.run_squad --comm_backend device --gpus 0,1,2,3 ...
    # one machine, 4 GPUs, torchrun starts the 4 workers ("dist" and "dist_sync_device" are the
    # same, for any launcher that sets torchrun's env:// variables, e.g. a SLURM script)
    torchrun --standalone --nproc_per_node 4 -m bench.run_squad --comm_backend torchrun ...
    # one machine, 4 GPUs, Horovod (install it with scripts/install_horovod.sh)
    horovodrun -np 4 -H localhost:4 python -m bench.run_squad --comm_backend horovod ...

GPU choice under a launcher: each process takes ``gpus[local_rank]`` when ``--gpus`` lists at
least ``local_world_size`` GPUs, and GPU ``local_rank`` when it lists exactly one (so the
default ``--gpus 0`` just means "use GPUs"); ``--gpus -1`` means CPU, and so does any --gpus on
a machine where torch sees no CUDA device (``init_comm`` logs a warning then).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from bench.core.errors import BenchError

__all__ = [
    "COMM_BACKENDS", "DEVICE_WORKER_ENV", "TORCHRUN_BACKENDS", "DistributedConfigError", "WorldInfo",
    "concat_by_rank", "derive_accumulation", "detect_world", "env_rank", "epoch_shard", "eval_shard",
    "global_batch", "parse_gpus", "should_spawn_device_workers",
]

COMM_BACKENDS = ("horovod", "torchrun", "dist", "dist_sync_device", "device")
# Names for torch.distributed under torchrun ("dist_sync_device" is GluonNLP's spelling).
TORCHRUN_BACKENDS = ("torchrun", "dist", "dist_sync_device")

# Set by bench.backends.torch.dist.spawn_device_workers in each worker it starts, so that a
# spawned worker (torchrun-like env) is told apart from a process that torchrun started.
DEVICE_WORKER_ENV = "SQUAD_BENCH_DEVICE_WORKER"

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
HOROVOD_VARS = ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE")
OMPI_VARS = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
             "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")

TORCHRUN_HINT = ("torchrun --standalone --nproc_per_node N -m bench.run_squad --comm_backend {flag} ...  "
                 "(several machines: torchrun --nnodes M --node_rank I --rdzv_backend c10d "
                 "--rdzv_endpoint HOST:29500 --nproc_per_node N -m bench.run_squad ...)")
HOROVODRUN_HINT = ("horovodrun -np N -H localhost:N python -m bench.run_squad --comm_backend horovod ...  "
                   "(several machines: horovodrun -np 8 -H host1:4,host2:4 python -m bench.run_squad ...)")


def local_processes(env: Mapping[str, str] | None = None) -> int:
    """How many processes a launcher (horovodrun/mpirun, torchrun) started on this machine, from its
    environment; 1 outside a launcher or when the value is unreadable (the world checks report that)."""
    env = os.environ if env is None else env
    for name in (HOROVOD_VARS[3], OMPI_VARS[3], TORCHRUN_VARS[3]):       # the launchers' local sizes
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


class DistributedConfigError(BenchError, ValueError):
    """A launcher / flag combination that cannot work; the message says how to launch instead."""


@dataclass(frozen=True)
class WorldInfo:
    """This process's place in the job.

    ``gpu`` is the CUDA device index this process uses, or None for CPU; whether CUDA is really
    there is checked by the framework side (``bench.backends.torch.dist.init_comm``).
    """
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    launcher: str  # "none" | "horovod" | "torchrun" | "device"
    is_main: bool
    gpu: int | None = None


def parse_gpus(gpus: str | None) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]``; None, ``""`` and ``"-1"`` mean CPU -> ``[]``."""
    text = (gpus or "").strip()
    if text in ("", "-1"):
        return []
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DistributedConfigError(f"--gpus {gpus!r}: expected comma-separated GPU ids such as 0,1,2,3 "
                                     f"(or -1 for CPU)") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise DistributedConfigError(f"--gpus {gpus!r}: GPU ids must be distinct and >= 0 (use -1 alone for CPU)")
    return ids


def should_spawn_device_workers(comm_backend: str, gpus: str | None, environ: Mapping[str, str] | None = None) -> bool:
    """True in the parent process of ``--comm_backend device --gpus 0,1,...`` (several GPUs).

    The caller then runs ``bench.backends.torch.dist.spawn_device_workers`` instead of training.
    """
    env = os.environ if environ is None else environ
    return comm_backend == "device" and len(parse_gpus(gpus)) > 1 and DEVICE_WORKER_ENV not in env


def detect_world(comm_backend: str, gpus: str | None, environ: Mapping[str, str] | None = None) -> WorldInfo:
    """Read this process's rank and sizes from the launcher's environment and check the flags.

    Raises DistributedConfigError naming the flag and the right launch command when the
    process was not started the way ``--comm_backend`` says.
    """
    env = os.environ if environ is None else environ
    gpu_ids = parse_gpus(gpus)
    if comm_backend == "horovod":
        return _horovod_world(env, gpu_ids)
    if comm_backend in TORCHRUN_BACKENDS:
        return _torchrun_world(env, gpu_ids, comm_backend)
    if comm_backend == "device":
        return _device_world(env, gpu_ids, gpus)
    raise DistributedConfigError(f"--comm_backend {comm_backend!r}: choose one of {', '.join(COMM_BACKENDS)}")


def env_rank(environ: Mapping[str, str] | None = None) -> str:
    """Best-effort global rank for log prefixes ("?" outside any launcher); never raises."""
    env = os.environ if environ is None else environ
    for name in ("RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK"):
        if name in env:
            return env[name]
    return "?"


def _read_ints(env: Mapping[str, str], names: tuple, flag: str, hint: str) -> list[int]:
    missing = [name for name in names if name not in env]
    if missing:
        raise DistributedConfigError(
            f"--comm_backend {flag} but this process was not started by its launcher "
            f"(missing {', '.join(missing)}). Launch it with: {hint}")
    try:
        return [int(env[name]) for name in names]
    except ValueError:
        raise DistributedConfigError(
            f"--comm_backend {flag}: non-integer launcher variable in "
            f"{', '.join(f'{n}={env[n]!r}' for n in names)}") from None


def _make_world(rank, local_rank, size, local_size, launcher, gpu_ids, flag) -> WorldInfo:
    if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise DistributedConfigError(
            f"--comm_backend {flag}: inconsistent launcher variables rank={rank} world_size={size} "
            f"local_rank={local_rank} local_world_size={local_size}")
    gpu = _gpu_for_local_rank(gpu_ids, local_rank, local_size)
    return WorldInfo(rank, local_rank, size, local_size, launcher, rank == 0, gpu)


def _gpu_for_local_rank(gpu_ids: list[int], local_rank: int, local_size: int) -> int | None:
    if not gpu_ids:
        return None
    if len(gpu_ids) >= local_size:
        return gpu_ids[local_rank]
    if len(gpu_ids) == 1:
        return local_rank  # the default "--gpus 0" under a launcher: one GPU per local process
    raise DistributedConfigError(
        f"--gpus {','.join(map(str, gpu_ids))} lists {len(gpu_ids)} GPUs but {local_size} processes run "
        f"on this machine; list one GPU per process, or one id (GPU = local rank), or -1 for CPU")


def _horovod_world(env, gpu_ids) -> WorldInfo:
    names = HOROVOD_VARS if HOROVOD_VARS[0] in env else OMPI_VARS if OMPI_VARS[0] in env else HOROVOD_VARS
    rank, size, local_rank, local_size = _read_ints(env, names, "horovod", HOROVODRUN_HINT)
    return _make_world(rank, local_rank, size, local_size, "horovod", gpu_ids, "horovod")


def _torchrun_world(env, gpu_ids, flag) -> WorldInfo:
    hint = TORCHRUN_HINT.format(flag=flag)
    rank, local_rank, size, local_size = _read_ints(env, TORCHRUN_VARS[:4], flag, hint)
    _read_ints(env, ("MASTER_PORT",), flag, hint)
    if "MASTER_ADDR" not in env:
        raise DistributedConfigError(f"--comm_backend {flag}: MASTER_ADDR is not set. Launch with: {hint}")
    return _make_world(rank, local_rank, size, local_size, "torchrun", gpu_ids, flag)


def _device_world(env, gpu_ids, gpus_flag) -> WorldInfo:
    if DEVICE_WORKER_ENV in env:  # a worker started by spawn_device_workers: torchrun-like env
        rank, local_rank, size, local_size = _read_ints(env, TORCHRUN_VARS[:4], "device", "spawn_device_workers")
        return _make_world(rank, local_rank, size, local_size, "device", gpu_ids, "device")
    _reject_foreign_launcher(env)
    if len(gpu_ids) > 1:
        raise DistributedConfigError(
            f"--comm_backend device --gpus {gpus_flag}: this is the parent process; it must start one worker "
            f"per GPU with bench.backends.torch.dist.spawn_device_workers (see should_spawn_device_workers)")
    return WorldInfo(0, 0, 1, 1, "none", True, gpu_ids[0] if gpu_ids else None)


def _reject_foreign_launcher(env) -> None:
    # Without this, N processes started by a launcher with the default flag would each train
    # the whole model alone and write over each other's output.
    for size_var, flag in (("WORLD_SIZE", "torchrun"), ("HOROVOD_SIZE", "horovod"),
                           ("OMPI_COMM_WORLD_SIZE", "horovod")):
        value = env.get(size_var, "1")
        if value.strip() not in ("", "0", "1"):
            raise DistributedConfigError(
                f"this process was started by a launcher ({size_var}={value}) but --comm_backend is device; "
                f"pass --comm_backend {flag}")


def global_batch(batch_size: int, num_accumulated: int, world_size: int) -> int:
    """Examples per optimizer step: per-process batch x accumulation steps x processes."""
    return batch_size * num_accumulated * world_size


def derive_accumulation(global_batch_size: int, batch_size: int, world_size: int) -> int:
    """Accumulation steps that keep ``global_batch_size`` fixed whatever the GPU count (nanoGPT style).

    ``derive_accumulation(32, 4, 2) == 4``: 2 GPUs x 4 examples x 4 micro-batches = 32, so 1, 2, 4
    or 8 GPUs train with the same optimizer steps and learning-rate schedule.
    """
    if min(global_batch_size, batch_size, world_size) < 1:
        raise DistributedConfigError(f"global batch {global_batch_size}, --batch_size {batch_size} and world "
                                     f"size {world_size} must all be >= 1")
    per_micro_step = batch_size * world_size
    if global_batch_size % per_micro_step:
        raise DistributedConfigError(
            f"the global batch {global_batch_size} is not divisible by --batch_size {batch_size} x "
            f"{world_size} processes = {per_micro_step}; pick a --batch_size (or global batch) so that "
            f"global = batch_size x world_size x accumulation")
    return global_batch_size // per_micro_step


def epoch_shard(num_items: int, rank: int, world_size: int, epoch: int, seed: int,
                shuffle: bool = True) -> np.ndarray:
    """Indices of ``range(num_items)`` that ``rank`` trains on in ``epoch``.

    Every rank draws the same permutation from (seed, epoch), pads it by wrapping around to a
    multiple of ``world_size`` (so all ranks take the same number of steps: a rank with one step
    fewer would leave the others waiting in an all-reduce), then takes the strided shard
    ``indices[rank::world_size]`` like torch's DistributedSampler. Strided, not contiguous,
    because then micro-batch k of all ranks together is the contiguous block
    ``indices[k*b*W:(k+1)*b*W]``: the same examples a single process with batch b*W would see.

    The one-off ``--pre_shuffle_seed`` shuffle of the feature order is the caller's job, before this.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    order = np.arange(num_items, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(order)
    if num_items == 0:
        return order
    padded = np.resize(order, -(-num_items // world_size) * world_size)  # np.resize repeats cyclically
    return padded[rank::world_size]


def eval_shard(num_items: int, rank: int, world_size: int) -> np.ndarray:
    """Contiguous block of ``range(num_items)`` that ``rank`` evaluates; no padding, sizes may differ by one.

    Contiguous so that concatenating the gathered results in rank order
    (``Comm.gather_arrays_to_main``) restores the original feature order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return np.array_split(np.arange(num_items, dtype=np.int64), world_size)[rank]


def concat_by_rank(per_rank: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every rank's ``eval_shard`` outputs (one dict per rank, in rank order) concatenated along axis 0:
    the outputs of all windows in feature order. Every rank must have gathered the same keys."""
    keys = list(per_rank[0])
    for rank, arrays in enumerate(per_rank):
        if list(arrays) != keys:
            raise ValueError(f"rank {rank} gathered arrays {sorted(arrays)} but rank 0 gathered {sorted(keys)}")
    return {key: np.concatenate([np.asarray(arrays[key]) for arrays in per_rank], axis=0) for key in keys}
