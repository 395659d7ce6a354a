"""PyTorch + transformers backend, registered as ``--backend torch`` (loaded lazily by
``bench.run.registry.get_backend``).

``main(config)`` runs one validated RunConfig: several seeds one after another,
one worker process per GPU for ``--comm_backend device --gpus 0,1,..``, and a
fail-fast wrapper so that an error on any rank ends the whole job non-zero.
"""
from __future__ import annotations

__all__ = ["main", "run"]


def run(config, stop_after=None):
    """Run one seed in this process; returns the results record on rank 0 (else None)."""
    from bench.backends.torch.runner import run as run_one
    return run_one(config, stop_after=stop_after)


def main(config) -> int:
    from bench.backends.torch.dist import launch
    return launch(run, config)
