"""Torch-side communication for training and evaluation: one class per engine, one interface.

``init_comm(detect_world(args.comm_backend, args.gpus))`` returns a ``Comm``:

* ``LocalComm``      one process (``--comm_backend device`` with one GPU or the CPU);
* ``TorchDistComm``  torch.distributed, for ``torchrun`` / ``dist`` and the spawned workers of
                     ``--comm_backend device --gpus 0,1,..`` (NCCL on GPUs, Gloo on CPUs);
* ``HorovodComm``    Horovod, for ``horovodrun`` (build it with ``bash scripts/install_horovod.sh``).

Launch commands::

    python -m bench.run_squad --comm_backend device --gpus 0 ...                 # one GPU
    python -m bench.run_squad --comm_backend device --gpus 0,1,2,3 ...           # spawns 4 workers
    torchrun --standalone --nproc_per_node 4 -m bench.run_squad --comm_backend torchrun ...
    horovodrun -np 4 -H localhost:4 python -m bench.run_squad --comm_backend horovod ...

The update step the trainer runs, the same for every engine::

    model_for_train = comm.wrap_model(model)                      # DDP, or the model itself
    optimizer = comm.wrap_optimizer(optimizer, model, backward_passes_per_step=accumulation)
    comm.broadcast_initial_state(model, optimizer)                 # after any checkpoint resume
    for j, batch in enumerate(micro_batches):
        with comm.no_sync(model_for_train, is_last_micro_batch=j == len(micro_batches) - 1):
            (loss / windows_in_update).backward()
    comm.synchronize(optimizer)                                    # Horovod: finish the all-reduce
    clip_grad_norm_(model.parameters(), max_norm)
    with comm.skip_synchronize(optimizer):
        optimizer.step()

Failure rule: a rank that raises must not leave the others waiting in a collective. Every
rank runs under ``run_with_failfast``: on an exception it logs the error with its rank,
flushes, and leaves with ``os._exit(1)`` (no atexit hooks, which can block in a collective);
torchrun, horovodrun and ``spawn_device_workers`` then stop the remaining ranks and exit
non-zero. Collectives also time out (``timeout_s``), which covers a rank that hangs instead:
torch's process-group timeout raises in the waiting ranks; for Horovod, whose 0.28.1 stall
shutdown does not fire with Gloo, a watchdog thread ends the waiting rank.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist

from bench.run.distributed import (DEVICE_WORKER_ENV, DistributedConfigError, WorldInfo, concat_by_rank, parse_gpus,
                               should_spawn_device_workers)
# Fail-fast is framework-free and shared with the MXNet backend (bench.run.failfast).
from bench.run.failfast import deadline as _deadline
from bench.run.failfast import leave_process, run_with_failfast

__all__ = ["Comm", "DEFAULT_TIMEOUT_S", "DeviceWorkerFailed", "HorovodComm", "LocalComm", "TorchDistComm",
           "WorkerLogging", "find_free_port", "init_comm", "launch", "run_with_failfast", "spawn_device_workers"]

logger = logging.getLogger("bench.dist")

# torch.distributed's own default: long enough for rank 0 to post-process a whole evaluation
# while the other ranks wait in a barrier.
DEFAULT_TIMEOUT_S = 1800


class Comm(Protocol):
    """What the trainer and the evaluation use; see the module docstring for the update step."""
    rank: int
    world_size: int
    local_rank: int
    is_main: bool
    device: torch.device

    def barrier(self) -> None: ...
    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def broadcast_object(self, obj: Any) -> Any: ...
    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None: ...
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module: ...
    def wrap_optimizer(self, optimizer, model, backward_passes_per_step: int = 1): ...
    def broadcast_initial_state(self, model: torch.nn.Module, optimizer) -> None: ...
    def no_sync(self, model: torch.nn.Module, is_last_micro_batch: bool): ...
    def synchronize(self, optimizer) -> None: ...
    def skip_synchronize(self, optimizer): ...
    def shutdown(self) -> None: ...


# ------------------------------------------------------------------------------------ engines
class LocalComm:
    """One process: every collective is the identity."""

    def __init__(self, world: WorldInfo, device: torch.device):
        self.world = world
        self.rank, self.world_size = world.rank, world.world_size
        self.local_rank, self.is_main = world.local_rank, world.is_main
        self.device = device

    def barrier(self) -> None:
        pass

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average ``tensor`` over ranks, in place; returns the same tensor."""
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        return obj

    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Concatenate every rank's arrays along axis 0, in rank order, on rank 0; None elsewhere.

        Ranks may hold different numbers of rows (``bench.run.distributed.eval_shard`` blocks).
        """
        return concat_by_rank([arrays])

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wrap_optimizer(self, optimizer, model, backward_passes_per_step: int = 1):
        return optimizer

    def broadcast_initial_state(self, model: torch.nn.Module, optimizer) -> None:
        pass

    def no_sync(self, model: torch.nn.Module, is_last_micro_batch: bool):
        return contextlib.nullcontext()

    def synchronize(self, optimizer) -> None:
        pass

    def skip_synchronize(self, optimizer):
        return contextlib.nullcontext()

    def shutdown(self) -> None:
        pass


class TorchDistComm(LocalComm):
    """torch.distributed over the env:// variables of torchrun (or of spawn_device_workers)."""

    def __init__(self, world: WorldInfo, device: torch.device, timeout_s: float):
        super().__init__(world, device)
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=self.backend, init_method="env://", timeout=timeout,
                                rank=world.rank, world_size=world.world_size)
        _check_same_world(world, dist.get_rank(), dist.get_world_size())
        # CPU tensors and pickled objects (losses, evaluation outputs) go over Gloo even on GPUs,
        # so they never take GPU memory or need a device round trip.
        self.cpu_group = dist.new_group(backend="gloo", timeout=timeout) if self.backend == "nccl" else None

    def _group_for(self, tensor: torch.Tensor):
        return None if tensor.is_cuda else self.cpu_group

    def barrier(self) -> None:
        dist.barrier(group=self.cpu_group)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self._group_for(tensor))
        return tensor.div_(self.world_size)

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(dict(arrays), gathered, dst=0, group=self.cpu_group)
        return concat_by_rank(gathered) if self.is_main else None

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel; it broadcasts rank 0's parameters and buffers when built."""
        from torch.nn.parallel import DistributedDataParallel
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def broadcast_initial_state(self, model: torch.nn.Module, optimizer) -> None:
        """Nothing to do: DDP synced the parameters, and every rank built the same optimizer."""

    def no_sync(self, model: torch.nn.Module, is_last_micro_batch: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of an update."""
        from torch.nn.parallel import DistributedDataParallel
        if is_last_micro_batch or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class HorovodComm(LocalComm):
    """Horovod (Gloo controller; NCCL for GPU tensors when built with it).

    Every blocking Horovod call runs under a ``_deadline``: Horovod 0.28.1 has no collective
    timeout that fires when a peer hangs (measured: its stall shutdown never triggered with
    Gloo, and HOROVOD_GLOO_TIMEOUT_SECONDS only bounds the rendezvous), so a watchdog ends
    this rank after ``timeout_s`` and horovodrun then stops the job.
    """

    def __init__(self, world: WorldInfo, device: torch.device, timeout_s: float):
        super().__init__(world, device)
        hvd = _import_horovod()
        # Read by hvd.init(); bounds the rendezvous, whose default (30 s) is too short when one
        # rank starts slowly. A value the user exported wins.
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(max(1, int(timeout_s))))
        self.timeout_s = timeout_s
        with _deadline(timeout_s, "hvd.init (rendezvous)"):
            hvd.init()
        _check_same_world(world, hvd.rank(), hvd.size())
        self.hvd = hvd

    def barrier(self) -> None:
        with _deadline(self.timeout_s, "barrier"):
            self.hvd.barrier()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        with _deadline(self.timeout_s, "all_reduce_mean"):
            return tensor.copy_(self.hvd.allreduce(tensor, op=self.hvd.Average))

    def broadcast_object(self, obj: Any) -> Any:
        with _deadline(self.timeout_s, "broadcast_object"):
            return self.hvd.broadcast_object(obj, root_rank=0)

    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        # Horovod has no gather-to-one; allgather_object copes with different row counts per rank.
        with _deadline(self.timeout_s, "gather_arrays_to_main"):
            gathered = self.hvd.allgather_object(dict(arrays))
        return concat_by_rank(gathered) if self.is_main else None

    def wrap_optimizer(self, optimizer, model, backward_passes_per_step: int = 1):
        """hvd.DistributedOptimizer: averages gradients once every ``backward_passes_per_step`` backwards."""
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             backward_passes_per_step=backward_passes_per_step,
                                             op=self.hvd.Average)

    def broadcast_initial_state(self, model: torch.nn.Module, optimizer) -> None:
        """Copy rank 0's optimizer state (when it has any, e.g. after a resume), then its parameters.

        On an empty state hvd.broadcast_optimizer_state first takes a zero-gradient step to
        create it, which with AdamW still applies weight decay and counts a step, so a fresh
        start (every rank built the same optimizer) skips it. Parameters go last, so that
        step, taken on ranks that resumed nothing, cannot leave them behind rank 0's.
        """
        has_state = self.broadcast_object(bool(optimizer.state_dict()["state"]))
        with _deadline(self.timeout_s, "broadcast_initial_state"):
            if has_state:
                self.hvd.broadcast_optimizer_state(optimizer, root_rank=0, model=model)
            self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def synchronize(self, optimizer) -> None:
        """Wait for the gradient all-reduce that the last backward pass started."""
        with _deadline(self.timeout_s, "gradient all-reduce (optimizer.synchronize)"):
            optimizer.synchronize()

    def skip_synchronize(self, optimizer):
        return optimizer.skip_synchronize()

    def shutdown(self) -> None:
        with _deadline(self.timeout_s, "hvd.shutdown"):
            self.hvd.shutdown()


# ------------------------------------------------------------------------------------ factory
def init_comm(world: WorldInfo, timeout_s: float = DEFAULT_TIMEOUT_S) -> Comm:
    """Join the job described by ``world`` (from ``bench.run.distributed.detect_world``).

    ``timeout_s`` bounds every collective (torch: the process group timeout; Horovod: a
    watchdog, see HorovodComm), so a rank that hangs ends the job instead of a silent wait.
    """
    device = _select_device(world)
    if world.launcher == "none":
        return LocalComm(world, device)
    if world.launcher == "horovod":
        return HorovodComm(world, device, timeout_s)
    if world.launcher in ("torchrun", "device"):
        return TorchDistComm(world, device, timeout_s)
    raise ValueError(f"unknown launcher {world.launcher!r}")


def _select_device(world: WorldInfo) -> torch.device:
    if world.gpu is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        # The documented --gpus contract: the default "--gpus 0" still runs where there is no GPU.
        logger.warning("--gpus asks for GPU %d but torch %s sees no CUDA device: running on the CPU",
                       world.gpu, torch.__version__)
        return torch.device("cpu")
    if world.gpu >= torch.cuda.device_count():
        raise DistributedConfigError(f"--gpus asks for GPU {world.gpu} but only {torch.cuda.device_count()} "
                                     f"are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    torch.cuda.set_device(world.gpu)   # NCCL and Horovod use the current device
    return torch.device("cuda", world.gpu)


def _check_same_world(world: WorldInfo, rank: int, size: int) -> None:
    if (rank, size) != (world.rank, world.world_size):
        raise RuntimeError(f"the engine reports rank {rank} of {size} but the launcher's environment said "
                           f"rank {world.rank} of {world.world_size}")


def _import_horovod():
    try:
        import horovod.torch as hvd
    except ImportError as exc:
        raise DistributedConfigError(
            f"--comm_backend horovod needs Horovod built for this torch: run bash scripts/install_horovod.sh "
            f"({exc})") from exc
    return hvd


# ------------------------------------------------------------------------------------ fail-fast
# ------------------------------------------------------------------------------------ device mode
class DeviceWorkerFailed(RuntimeError):
    """A worker started by spawn_device_workers exited non-zero (its traceback is in its stderr)."""


def find_free_port() -> int:
    """A TCP port free on localhost now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_device_workers(fn: Callable[[Any], Any], fn_arg: Any, gpus: list[int]) -> None:
    """Run ``fn(fn_arg)`` in one new process per GPU in ``gpus`` and wait for all of them.

    This is ``--comm_backend device --gpus 0,1,2,3``::

        python -m bench.run_squad --comm_backend device --gpus 0,1,2,3 ...

    Each worker gets torchrun's variables (RANK = LOCAL_RANK = its index, WORLD_SIZE =
    LOCAL_WORLD_SIZE = len(gpus), MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port) plus
    SQUAD_BENCH_DEVICE_WORKER=1, so ``detect_world("device", gpus)`` in the worker returns rank i
    on GPU ``gpus[i]`` and ``init_comm`` joins a torch.distributed group, exactly like a torchrun
    worker. ``fn`` must be importable (a module-level function) and ``fn_arg`` picklable (argv, a
    config): workers are started with "spawn", because CUDA cannot be used after fork. A spawned
    interpreter starts with logging unconfigured (root level WARNING, no handler), so each worker
    first repeats this process's logging setup (``WorkerLogging``): the records a torchrun worker
    gets from the run script's ``logging.basicConfig`` reach rank 0's run.log and stderr here too.
    Workers run under ``run_with_failfast``; when one fails the others are terminated and
    DeviceWorkerFailed is raised here.
    """
    import torch.multiprocessing as mp
    port = find_free_port()
    try:
        mp.start_processes(_device_worker, args=(fn, fn_arg, len(gpus), port, WorkerLogging.of_this_process()),
                           nprocs=len(gpus), join=True, start_method="spawn")
    except mp.ProcessExitedException as exc:
        raise DeviceWorkerFailed(f"device worker {exc.error_index} (GPU {gpus[exc.error_index]}) exited with "
                                 f"status {exc.exit_code}; the other workers were stopped") from exc
    except mp.ProcessRaisedException as exc:
        raise DeviceWorkerFailed(f"device worker {exc.error_index} (GPU {gpus[exc.error_index]}) failed; "
                                 f"the other workers were stopped") from exc


@dataclass(frozen=True)
class WorkerLogging:
    """The root logger's level and its first handler's format: what a spawned worker repeats."""
    level: int
    fmt: str | None = None
    datefmt: str | None = None

    @classmethod
    def of_this_process(cls) -> "WorkerLogging":
        root = logging.getLogger()
        formatter = next((handler.formatter for handler in root.handlers if handler.formatter is not None), None)
        return cls(root.level, getattr(formatter, "_fmt", None), getattr(formatter, "datefmt", None))

    def apply(self) -> None:
        """In a fresh interpreter: a stderr handler with the parent's format, and the parent's level."""
        logging.basicConfig(format=self.fmt or logging.BASIC_FORMAT, datefmt=self.datefmt)
        logging.getLogger().setLevel(self.level)


def _device_worker(index: int, fn: Callable, fn_arg: Any, world_size: int, port: int,
                   worker_logging: WorkerLogging | None = None) -> None:
    if worker_logging is not None:
        worker_logging.apply()
    os.environ.update({"RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), DEVICE_WORKER_ENV: "1"})
    run_with_failfast(fn, fn_arg)
    # The rank's work is done and written (files are renamed into place before fn returns). Leave without
    # the interpreter's teardown: there a gloo process group still held by a DDP wrapper is destroyed late,
    # and it aborted finished workers ("terminate called without an active exception", SIGABRT) in 4 of 130
    # two-worker CPU jobs, after destroy_process_group had returned on both ranks.
    leave_process(0)


def launch(run_fn: Callable[[Any], Any], config) -> int:
    """Run ``run_fn(config)`` here, or in one spawned worker per GPU for ``--comm_backend device --gpus 0,1,..``.

    ``config`` needs ``comm_backend`` and ``gpus``. Returns the process exit status (0); any
    failure raises here (single process) or ends the rank non-zero (under a launcher).
    """
    if should_spawn_device_workers(config.comm_backend, config.gpus):
        spawn_device_workers(run_fn, config, parse_gpus(config.gpus))
    else:
        run_with_failfast(run_fn, config)
    return 0
