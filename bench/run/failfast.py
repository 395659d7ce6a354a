"""Framework-free fail-fast for multi-process runs: a rank that fails or waits too long ends itself.

Failure rule: a rank that raises must not leave the others waiting in a collective. Every rank
runs under ``run_with_failfast``: on an exception it logs the error with its rank, flushes, and
leaves with ``os._exit`` (no atexit hooks, which can block in a collective); the launcher
(horovodrun, torchrun, the device spawner) then stops the remaining ranks and exits non-zero.
A blocking collective runs under ``deadline``: Horovod 0.28.1 has no collective timeout that
fires when a peer hangs (its stall shutdown does not fire with Gloo, and
HOROVOD_GLOO_TIMEOUT_SECONDS only bounds the rendezvous), so a watchdog thread ends the
waiting rank after a bounded time.

Nothing here imports a framework: the MXNet backend (``bench.backends.mxnet.dist``) uses it
as it is.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from typing import Callable

from bench.core.errors import BenchError
from bench.run.distributed import DEVICE_WORKER_ENV, env_rank

__all__ = ["LAUNCHER_ENV", "deadline", "run_with_failfast", "under_launcher", "leave_process"]

# Environment variables a launcher sets; a process with none of them is a plain single process.
LAUNCHER_ENV = ("RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", DEVICE_WORKER_ENV)


def run_with_failfast(main_fn: Callable, *args, **kwargs):
    """Run ``main_fn(*args, **kwargs)``; under a launcher, an exception ends this process at once.

    Under a launcher the rank logs its traceback prefixed with its rank, flushes stdout, stderr
    and logging, and calls ``os._exit(1)`` (KeyboardInterrupt: 130; ``sys.exit(n)``: n; a
    ``BenchError``: one line, 2). A normal interpreter exit can block forever with its sockets
    open while the other ranks wait for it: it joins every live non-daemon thread and runs
    atexit hooks such as Horovod's shutdown. A plain single process re-raises instead, so
    in-process callers (tests, notebooks) see the exception.
    """
    try:
        return main_fn(*args, **kwargs)
    except BaseException as exc:
        if not under_launcher() or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        _exit_hard(exc)


def under_launcher() -> bool:
    return any(name in os.environ for name in LAUNCHER_ENV)


def _exit_hard(exc: BaseException) -> None:
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
        print(f"[rank {env_rank()}] exiting with status {code}: {exc.code}", file=sys.stderr)
    elif isinstance(exc, BenchError):  # the user's to fix: one line and status 2, as the entry points do
        code = 2
        print(f"[rank {env_rank()}] error: {exc}", file=sys.stderr)
    else:
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        print(f"[rank {env_rank()}] failed; ending this rank so the launcher stops the job:\n{text}",
              file=sys.stderr)
    leave_process(code)


def leave_process(code: int) -> None:
    """Flush logging, stdout and stderr, then end this process with ``code`` at once: no atexit hooks,
    no joining of threads, no interpreter teardown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """End this process (status 1) if the block runs longer than ``seconds``.

    A timer thread, because the blocked call is in C++ and cannot be interrupted from Python;
    exiting is the only way out, and the launcher then stops the other ranks.
    """
    def expire():
        print(f"[rank {env_rank()}] {what} did not finish within {seconds:g} s: another rank is hung or gone; "
              f"ending this rank so the launcher stops the job", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(1)
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
