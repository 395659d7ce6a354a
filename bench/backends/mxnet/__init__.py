"""MXNet 1.9.1 + GluonNLP 0.10.0 backend, registered as ``--backend mxnet`` (loaded lazily by
``bench.run.registry.get_backend``).

It fine-tunes the same Hugging Face checkpoints as the torch backend, with the same
flags, presets and outputs: ``convert`` reads a model folder's ``config.json`` +
``model.safetensors`` (numpy only, no torch) into Gluon encoders built from GluonNLP's
transformer cells (``encoders``, ``mobilebert``); ``heads`` holds the two QA heads,
parameter for parameter the torch backend's, so weights and checkpoints move between
the backends by name. One process (CPU, or one GPU with a CUDA build of MXNet)::

    python -m bench.run_squad --backend mxnet --model_name google_electra_small --do_train --do_eval ...

Modules:
    compat      import_mxnet(): numpy < 2 check, numpy.bool alias, OpenMP threads, install hint
    encoders    Gluon BERT / RoBERTa / ELECTRA / ALBERT / DistilBERT encoders (GluonNLP cells)
    mobilebert  Gluon MobileBERT (bottlenecks, NoNorm, stacked FFNs; no GluonNLP counterpart)
    convert     Hugging Face folder -> Gluon encoder with the converted weights
    heads       the conditional and basic QA heads, GluonQAModel (encoder + head), torch <-> Gluon
                parameter names
    optim       TorchAdamW (torch.optim.AdamW's update), lr_mult / wd_mult / grad_req rules, clipping
    train_loop  the update loop: accumulation, clipping, schedule, logging, checkpoints, --resume
    checkpoint  checkpoint files: torch-named safetensors + a pickle-free .npz trainer state
    inference   evaluation forward passes -> the core's output arrays
    runner      the stages of one run, from RunConfig to results.json

MXNet needs numpy < 2: install the extra with ``bash scripts/install_mxnet.sh``.
"""
from __future__ import annotations

__all__ = ["main", "run"]


def run(config, stop_after=None):
    """Run one seed in this process; returns the results record (None when ``stop_after`` interrupted it)."""
    from bench.backends.mxnet.runner import run as run_one
    return run_one(config, stop_after=stop_after)


def main(config) -> int:
    """The backend entry point of ``bench.run_squad``: one process, one seed per call."""
    run(config)
    return 0
