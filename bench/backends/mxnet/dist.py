"""MXNet-side communication: one process, or Horovod's MXNet API under horovodrun.

``open_comm(detect_world(config.comm_backend, config.gpus))`` returns:

* ``MxComm``         one process (``--comm_backend device``): every collective is the identity;
* ``MxHorovodComm``  ``horovod.mxnet`` over Gloo (``--comm_backend horovod`` under horovodrun;
                     build Horovod with MXNet support: ``bash scripts/install_horovod.sh``).

Launch command (docs/distributed.md)::

    horovodrun -np 2 -H localhost:2 python -m bench.run_squad --backend mxnet --comm_backend horovod ...

The update step (``bench.backends.mxnet.steps.MxSteps``), the same for both::

    comm.broadcast_parameters(params)           # once, in begin(): rank 0's weights everywhere
    for micro_batch in update:                   # grad_req='add' accumulates the local gradients
        (sum of per-window losses / local windows in the update).backward()
    comm.average_gradients(params)               # one all-reduce per update, before clipping
    clip on the global norm of the averaged gradient; trainer.update(...)

Every rank has the same number of windows per update (``bench.run.distributed.epoch_shard``
pads by wrapping), so the average of the ranks' local means is the mean over the global batch:
2 processes x batch 2 equal 1 process x batch 4.

Horovod's calls run under ``bench.run.failfast.deadline``, so a rank whose peer died or hangs
ends itself in bounded time (Horovod 0.28.1 has no working collective timeout with Gloo).
Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np

from bench.backends.mxnet.compat import import_mxnet
from bench.run.distributed import HOROVODRUN_HINT, DistributedConfigError, WorldInfo, concat_by_rank
from bench.run.failfast import deadline

mx, _ = import_mxnet()

__all__ = ["DEFAULT_TIMEOUT_S", "MxComm", "MxHorovodComm", "import_horovod_mxnet", "open_comm"]

# As the torch backend's: long enough for rank 0 to post-process a whole evaluation while the
# other ranks wait in a barrier.
DEFAULT_TIMEOUT_S = 1800

INSTALL_HINT = ("bash scripts/install_horovod.sh (it builds Horovod 0.28.1 for PyTorch and MXNet when mxnet is "
                "installed; run bash scripts/install_mxnet.sh first)")


class MxComm:
    """One process: every collective is the identity."""

    def __init__(self, world: WorldInfo | None = None):
        self.world = world or WorldInfo(0, 0, 1, 1, "none", True, None)
        self.rank, self.world_size, self.is_main = self.world.rank, self.world.world_size, self.world.is_main

    def barrier(self) -> None:
        pass

    def broadcast_parameters(self, params: dict) -> None:
        """Rank 0's values of ``params`` (name -> gluon Parameter) on every rank."""

    def average_gradients(self, params: list) -> None:
        """Replace every parameter's gradient by its mean over the ranks, in place."""

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        return value

    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Every rank's arrays concatenated along axis 0 in rank order on rank 0; None elsewhere."""
        return concat_by_rank([arrays])

    def shutdown(self) -> None:
        pass


class MxHorovodComm(MxComm):
    """horovod.mxnet (Gloo on the CPU). Tensor names are fixed per call site: the calls of one
    rank are sequential (each waits for its result), so a name is never in flight twice."""

    def __init__(self, world: WorldInfo, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__(world)
        hvd = import_horovod_mxnet()
        # Read by hvd.init(); bounds the rendezvous (default 30 s, short when a rank starts slowly).
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(max(1, int(timeout_s))))
        self.hvd, self.timeout_s = hvd, timeout_s
        with deadline(timeout_s, "hvd.init (rendezvous)"):
            hvd.init()
        if (hvd.rank(), hvd.size()) != (world.rank, world.world_size):
            raise RuntimeError(f"Horovod reports rank {hvd.rank()} of {hvd.size()} but the launcher's environment "
                               f"said rank {world.rank} of {world.world_size}")

    def _wait(self, arrays, what: str) -> None:
        """MXNet runs Horovod's operations asynchronously: block (boundedly) until they are done."""
        with deadline(self.timeout_s, what):
            for array in arrays:
                array.wait_to_read()

    def barrier(self) -> None:
        # horovod.mxnet has no barrier: an all-reduce every rank must join is one.
        self._wait([self.hvd.allreduce(mx.nd.zeros((1,)), name="squad_bench.barrier")], "barrier")

    def broadcast_parameters(self, params: dict) -> None:
        self.hvd.broadcast_parameters(params, root_rank=0, prefix="squad_bench.params.")
        self._wait([param.data() for param in params.values()], "broadcast_parameters")

    def average_gradients(self, params: list) -> None:
        grads = [param.grad() for param in params]
        self.hvd.grouped_allreduce_(grads, op=self.hvd.Average, name="squad_bench.grads")
        self._wait(grads, "gradient all-reduce")

    def mean(self, value: float) -> float:
        total = self.hvd.allreduce(mx.nd.array([value], dtype="float64"), op=self.hvd.Average,
                                   name="squad_bench.mean")
        self._wait([total], "mean over processes")
        return float(total.asscalar())

    def gather_arrays_to_main(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        # Horovod has no gather-to-one; allgather_object copes with different row counts per rank.
        with deadline(self.timeout_s, "gather_arrays_to_main"):
            gathered = self.hvd.allgather_object(dict(arrays), name="squad_bench.eval")
        return concat_by_rank(gathered) if self.is_main else None

    def shutdown(self) -> None:
        with deadline(self.timeout_s, "hvd.shutdown"):
            self.hvd.shutdown()


def import_horovod_mxnet():
    """``horovod.mxnet``, or a DistributedConfigError saying how to build it.

    Horovod loads its MXNet library with RTLD_GLOBAL, which puts that library's dependency
    libmxnet.so in the process's global symbol scope too (mxnet itself loads it RTLD_LOCAL).
    libmxnet.so exports its own copies of C++ standard-library templates, built with an older
    compiler and the old ABI, so a torch imported afterwards (transformers imports it when it is
    installed) binds to them and crashes while loading (measured: a segfault in a static
    initializer of libtorch_python.so, in libmxnet's std::_Hashtable::_M_rehash). Nothing needs
    Horovod's symbols globally, so its libraries are loaded RTLD_LOCAL here.
    """
    import_mxnet()                 # the numpy.bool alias first: horovod.mxnet imports mxnet itself
    try:
        with _horovod_libraries_loaded_locally():
            import horovod.mxnet as hvd
    except (ImportError, OSError) as exc:
        raise DistributedConfigError(
            f"--backend mxnet --comm_backend horovod needs Horovod built with MXNet support (horovod.mxnet): "
            f"run {INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    return hvd


@contextlib.contextmanager
def _horovod_libraries_loaded_locally():
    """While importing horovod.mxnet: ctypes.CDLL loads Horovod's own libraries RTLD_LOCAL."""
    real_cdll = ctypes.CDLL

    class LocalHorovodCDLL(real_cdll):
        def __init__(self, name, mode=ctypes.DEFAULT_MODE, *args, **kwargs):
            if name and f"{os.sep}horovod{os.sep}" in os.fspath(name):
                mode = (mode & ~ctypes.RTLD_GLOBAL) | ctypes.RTLD_LOCAL
            super().__init__(name, mode, *args, **kwargs)

    ctypes.CDLL = LocalHorovodCDLL
    try:
        yield
    finally:
        ctypes.CDLL = real_cdll


def open_comm(world: WorldInfo, timeout_s: float = DEFAULT_TIMEOUT_S) -> MxComm:
    """Join the job described by ``world`` (from ``bench.run.distributed.detect_world``)."""
    if world.launcher == "none":
        return MxComm(world)
    if world.launcher == "horovod":
        return MxHorovodComm(world, timeout_s)
    raise DistributedConfigError(
        f"--backend mxnet cannot run under the {world.launcher} launcher (torch.distributed workers cannot "
        f"exchange MXNet gradients); launch it with horovodrun: {HOROVODRUN_HINT} --backend mxnet")
