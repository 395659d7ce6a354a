"""Measured process of figure 2: our training step with dynamic padding + length grouping and with
padded batches, in the dtypes the parent chose (float32, and the machine's low precision where it
is native: ``figures.training_dtypes``); it also writes the padded windows the
Hugging Face Trainer baseline trains on."""
from __future__ import annotations

from pathlib import Path

from bench.apps.speed.qa_model import device, feature_params, load_qa_model, load_tokenizer, threads
from bench.apps.speed.train_step import train_steps

TRAINER_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")


def task_training(request: dict) -> dict:
    """Figure 2, our side: TorchSteps.run_update with dynamic padding + length grouping, and padded batches."""
    from bench.core.data import load_squad
    from bench.core.features import build_features

    model = load_qa_model(request["model_dir"], device())
    tokenizer = load_tokenizer(request["model_dir"])
    dataset = load_squad(request["data"], for_training=True)
    params = feature_params(model.family, "overlap", request)   # run_qa.py's doc_stride is an overlap too
    features = build_features(dataset.examples, tokenizer, params, is_training=True)
    _save_padded_features(Path(request["features_file"]), features, tokenizer.pad_token_id or 0)
    del model
    runs = {}
    for dtype in request["dtypes"]:                 # figures.training_dtypes: none emulated
        for batches in ("dynamic", "padded"):
            runs[f"{dtype} {batches}"] = train_steps(request, features, dtype=dtype, padded=batches == "padded",
                                                     pad_id=tokenizer.pad_token_id or 0)
    return {"runs": runs, "windows": len(features), "batch_size": request["batch_size"],
            "max_seq_length": request["max_seq_length"], "steps": request["steps"],
            "warmup_steps": request["warmup_steps"], "threads": threads()}


def _save_padded_features(path: Path, features, pad_id: int) -> None:
    """The training windows padded to max_seq_length, as run_qa.py feeds transformers.Trainer."""
    import numpy as np

    from bench.core.features import batch_arrays

    arrays = batch_arrays(features, np.arange(len(features)), pad_id=pad_id, round_to=features.params.max_seq_length)
    np.savez(path, **{name: arrays[name].astype(np.int32) for name in TRAINER_INPUTS})
