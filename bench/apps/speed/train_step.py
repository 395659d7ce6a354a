"""Our real training step, timed: the torch backend's optimizer step (``TorchSteps.run_update``).

Figures 2 and GPU time ``train_steps``. The backend contract (``bench.run.backend``) has the
backend supply the step and the shared loop (``bench.run.loop``) drive it; here the loop is
replaced by a plain timed one over the same epoch plan, so that only the step is measured. The
calls into the backend's step are in ``_build_steps``, so a change of that API is made here only.
"""
from __future__ import annotations

from pathlib import Path

from bench.apps.speed.measure import clock, since
from bench.apps.speed.qa_model import device, load_qa_model, synchronize


def train_steps(request: dict, features, *, dtype: str, padded: bool, pad_id: int,
                model_dir: str | None = None, compile_backbone: bool = False) -> dict:
    """Time ``steps`` optimizer updates of our real training step after ``warmup_steps`` untimed ones."""
    warmup = request["warmup_steps"]
    config, steps = _build_steps(request, features, dtype=dtype, padded=padded, pad_id=pad_id,
                                 model_dir=model_dir or request["model_dir"], compile_backbone=compile_backbone)
    updates = plan_updates(config, features, warmup + request["steps"])
    timing = time_updates(steps, updates, warmup, synchronize=lambda: synchronize(device()))
    return {**timing, "dtype": dtype, "batches": "padded to max_seq_length" if padded else "dynamic + length grouping",
            "steps": len(updates) - warmup,
            "padded_tokens_per_s": round(_padded_tokens(features, updates[warmup:], steps.round_to)
                                         / timing["wall_s"], 1),
            "optimizer": _optimizer_kind(steps.optimizer)}


def time_updates(steps, updates: list, warmup: int, synchronize=lambda: None) -> dict:
    """Wall/CPU time, samples and real tokens of ``updates[warmup:]`` run by any backend's
    ``TrainingSteps.run_update``, after the first ``warmup`` untimed (``synchronize``: wait for a GPU)."""
    for index, micro_batches in enumerate(updates[:warmup]):
        steps.run_update(micro_batches, index)
    synchronize()
    tokens, start = 0, clock()
    for index, micro_batches in enumerate(updates[warmup:], start=warmup):
        tokens += steps.run_update(micro_batches, index).tokens
    synchronize()
    timing = since(start)
    samples = sum(len(mb) for update in updates[warmup:] for mb in update)
    return {**timing, "samples": samples, "samples_per_s": round(samples / timing["wall_s"], 3),
            "real_tokens_per_s": round(tokens / timing["wall_s"], 1)}


def _build_steps(request: dict, features, *, dtype: str, padded: bool, pad_id: int, model_dir: str,
                 compile_backbone: bool):
    """(config, the backend's TorchSteps) for ``warmup_steps + steps`` updates of a fresh model (seed 0),
    built as ``TorchSession.training_steps`` builds them, with the folder's QA head (qa_model)."""
    import torch

    from bench.backends.torch.dist import init_comm
    from bench.backends.torch.session import autocast_factory
    from bench.backends.torch.steps import TorchSteps
    from bench.core.flags import config_from_dict
    from bench.run.backend import TrainingSetup
    from bench.run.distributed import detect_world

    on = device()
    config = config_from_dict({"do_train": True, "model_path": model_dir, "head": "basic",
                               "batch_size": request["batch_size"], "dtype": dtype, "length_grouping": not padded,
                               "round_to": request["max_seq_length"] if padded else None, "lr": 3e-5,
                               "gpus": "0" if on.type == "cuda" else "-1", "max_seq_length": request["max_seq_length"],
                               "doc_stride": request["doc_stride"], "stride_mode": "overlap"})
    torch.manual_seed(0)
    model = load_qa_model(config.model_path, on).train()
    if compile_backbone:
        model.backbone.compile(dynamic=True)
    comm = init_comm(detect_world("device", config.gpus))
    setup = TrainingSetup(features=features, total_updates=request["warmup_steps"] + request["steps"],
                          warmup_updates=0, output_dir=Path("."))
    steps = TorchSteps(config, model, comm, setup, autocast_factory(dtype, on), pad_id)
    steps.begin()
    return config, steps


def plan_updates(config, features, total: int) -> list:
    """The first ``total`` updates of epoch 0 (each a list of micro-batches of window indices)."""
    import numpy as np

    from bench.run.pipeline import plan_epoch

    order = np.random.default_rng(0).permutation(len(features))
    plan = plan_epoch(features, order, epoch=0, rank=0, world_size=1, seed=0, batch_size=config.batch_size,
                      num_accumulated=1, length_grouping=config.length_grouping)
    return plan.updates[:total]


def _padded_tokens(features, updates, round_to: int | None) -> int:
    """Tokens the model actually processed, padding included (batch x its width, rounded up to ``round_to``)."""
    def width(batch) -> int:
        longest = int(features.lengths[batch].max())
        return -(-longest // round_to) * round_to if round_to else longest
    return sum(len(mb) * width(mb) for update in updates for mb in update)


def _optimizer_kind(optimizer) -> str:
    group = optimizer.param_groups[0]
    return f"AdamW ({'fused' if group.get('fused') else 'foreach' if group.get('foreach') else 'for-loop'})"
