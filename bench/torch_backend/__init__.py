"""PyTorch + transformers backend, registered as ``--backend torch`` (loaded lazily by
``bench.backends.get_backend``).

``main(config)`` runs one validated RunConfig: several seeds one after another,
one worker process per GPU for ``--comm_backend device --gpus 0,1,..``, and a
fail-fast wrapper so that an error on any rank ends the whole job non-zero.
"""
from __future__ import annotations

__all__ = ["main", "run"]


def run(config, stop_after=None):
    """Run one seed in this process; returns the results record on rank 0 (else None)."""
    from bench.torch_backend.runner import run as run_one
    return run_one(config, stop_after=stop_after)


def main(config) -> int:
    from bench.torch_backend.dist import launch
    return launch(run, config)
