"""MXNet 1.9.1 + GluonNLP 0.10.0 backend, registered as ``--backend mxnet`` (loaded lazily by
``bench.run.registry.get_backend``).

It fine-tunes the same Hugging Face checkpoints as the torch backend, with the same
flags, presets and outputs: ``convert`` reads a model folder's ``config.json`` +
``model.safetensors`` (numpy only, no torch) into Gluon encoders built from GluonNLP's
transformer cells (``encoders``, ``mobilebert``); ``heads`` holds the two QA heads,
parameter for parameter the torch backend's, so weights and checkpoints move between
the backends by name. One process (CPU, or one GPU with a CUDA build of MXNet), or one per
GPU (or CPU slot) under horovodrun with Horovod's MXNet API::

    python -m bench.run_squad --backend mxnet --model_name google_electra_small --do_train --do_eval ...
    horovodrun -np 2 -H localhost:2 python -m bench.run_squad --backend mxnet --comm_backend horovod ...

Modules:
    compat      import_mxnet(): numpy < 2 check, numpy.bool alias, OpenMP threads, install hint
    encoders    Gluon BERT / RoBERTa / ELECTRA / ALBERT / DistilBERT encoders (GluonNLP cells)
    mobilebert  Gluon MobileBERT (bottlenecks, NoNorm, stacked FFNs; no GluonNLP counterpart)
    convert     Hugging Face folder -> Gluon encoder with the converted weights
    heads       the conditional and basic QA heads, GluonQAModel (encoder + head), torch <-> Gluon
                parameter names
    optim       TorchAdamW (torch.optim.AdamW's update), lr_mult / wd_mult / grad_req rules, clipping
    steps       the optimizer step the shared loop drives: accumulation, clipping, schedule, resume
    dist        communication: one process, or horovod.mxnet (broadcast, gradient average, gather)
    losses      the training losses (one function per loss registry entry)
    checkpoint  checkpoint files: torch-named safetensors + a pickle-free .npz trainer state
    inference   evaluation forward passes -> the core's output arrays
    session     the Session contract: refusals, device, model, predict, facts

MXNet needs numpy < 2: install the extra with ``bash scripts/install_mxnet.sh``.
"""
from __future__ import annotations

__all__ = ["BACKEND", "MxnetBackend", "run"]


def run(config, stop_after=None):
    """Run one seed in this process; returns the results record (None when ``stop_after`` interrupted it)."""
    from bench.run.driver import run as run_stages
    return run_stages(BACKEND, config, stop_after=stop_after)


class MxnetBackend:
    name = "mxnet"

    def open_session(self, config):
        from bench.backends.mxnet.session import MxSession
        return MxSession(config)

    def main(self, config) -> int:
        """One seed per call, in this process (one rank under horovodrun: a failure ends the rank at once,
        ``bench.run.failfast``)."""
        from bench.run.failfast import run_with_failfast
        run_with_failfast(run, config)
        return 0

    def has_accelerator(self) -> bool:
        from bench.backends.mxnet.compat import import_mxnet
        return import_mxnet()[0].context.num_gpus() > 0

    def default_dtype(self) -> str:
        return "float16" if self.has_accelerator() else "float32"


BACKEND = MxnetBackend()
