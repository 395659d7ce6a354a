"""The model both sides of ``squad-bench speed`` load, and how the measured processes load and run it.

The benchmark's model folder is a Hugging Face ``*ForQuestionAnswering`` folder (config, weights,
tokenizer) that transformers' pipeline and Trainer load as is; our side loads it as a QAModel with
the basic head holding the folder's ``qa_outputs`` weights. torch and transformers are imported
inside the functions: only the measured processes call them.

The torch backend's API is used here (its default dtype, build_qa_model, inference_model,
predict_windows, autocast_factory) and in ``train_step`` (its optimizer step), nowhere else in
this package.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from bench.apps.speed.common import SpeedError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt",
                   "vocab.json", "spiece.model")


def device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype() -> str:
    """The torch backend's choice: bfloat16 where native, float16 on older GPUs, else float32."""
    from bench.backends.torch import BACKEND
    return BACKEND.default_dtype()


def threads() -> int:
    import torch
    return torch.get_num_threads()


def synchronize(on) -> None:
    """Wait for the GPU's queued work (timings); nothing on a CPU."""
    import torch
    if on.type == "cuda":
        torch.cuda.synchronize(on)


def load_qa_model(model_dir: str, on):
    """Our QAModel (basic head) with the folder's backbone and its qa_outputs weights as the head."""
    from safetensors.torch import load_file

    from bench.backends.torch.modeling import build_qa_model
    from bench.run.model_source import resolve_model_folder

    model = build_qa_model(resolve_model_folder("bert_base", model_dir), head="basic", dropout=0.1)
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    model.head.span_scores.weight.data.copy_(weights["qa_outputs.weight"])
    model.head.span_scores.bias.data.copy_(weights["qa_outputs.bias"])
    return model.to(on).eval()


def load_tokenizer(model_dir: str):
    """The folder's fast tokenizer, as a run loads it (bench.run.model_source)."""
    from bench.run.model_source import load_tokenizer as load_run_tokenizer, resolve_model_folder
    return load_run_tokenizer(resolve_model_folder("bert_base", model_dir))


def feature_params(family: str, stride_mode: str, window: dict):
    """The run's window parameters (bench.run.pipeline.feature_params) for ``window``'s settings."""
    from bench.run.pipeline import feature_params as run_feature_params

    flags = SimpleNamespace(max_seq_length=window["max_seq_length"], max_query_length=window["max_query_length"],
                            doc_stride=window["doc_stride"], stride_mode=stride_mode)
    return run_feature_params(flags, family)


def autocast(dtype: str, on):
    """An autocast context for float16/bfloat16, else a null context (float32, int8)."""
    from bench.backends.torch.session import autocast_factory
    return autocast_factory(dtype if dtype in ("float16", "bfloat16") else "float32", on)()


def for_inference(model, dtype: str):
    """(model to run, autocast dtype) for evaluating in ``dtype`` (the backend's inference_model)."""
    from bench.backends.torch.modeling import inference_model
    return inference_model(model, dtype)


def predict_logits(run_model, features, *, autocast_dtype: str, batch_size: int, pad_id: int) -> dict:
    """Forward passes over every window; ``run_model, autocast_dtype`` come from for_inference(model, dtype)."""
    import numpy as np

    from bench.backends.torch.inference import predict_windows
    from bench.run.helpers import EvalBatching

    on = next(run_model.parameters()).device
    batching = EvalBatching(head=run_model.head_type, batch_size=batch_size, pad_id=pad_id)
    return predict_windows(run_model, features, np.arange(len(features)), batching, device=on,
                           autocast=autocast(autocast_dtype, on))


# ---------------------------------------------------------------------------------------- the folder
def copy_tokenizer(source: Path, out_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)


def write_qa_folder(base: Path, out_dir: Path, checkpoint: str | None = None) -> str:
    """Save ``base`` as an AutoModelForQuestionAnswering folder; returns where its QA head came from.

    ``checkpoint`` (ours, basic head) overrides backbone and head. A folder that already has a QA
    head keeps it; otherwise the head is drawn with a fixed seed, so both sides load the same weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    config = AutoConfig.from_pretrained(str(base))
    trained = any(arch.endswith("ForQuestionAnswering") for arch in (config.architectures or []))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForQuestionAnswering.from_pretrained(str(base), dtype=torch.float32)
    if checkpoint:
        _load_our_checkpoint(model, Path(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    copy_tokenizer(base, out_dir)
    if checkpoint:
        return f"trained (--checkpoint {checkpoint})"
    return "trained (from the folder)" if trained else "untrained (seeded random): EM/F1 only compare the two sides"


def _load_our_checkpoint(model, checkpoint: Path) -> None:
    """Copy a QAModel checkpoint (backbone.*, head.span_scores.*) into a *ForQuestionAnswering model."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint))
    if "head.span_scores.weight" not in state:
        raise SpeedError(f"--checkpoint {checkpoint}: no basic head (head.span_scores); train with --head basic")
    prefix = model.base_model_prefix
    mapped = {f"{prefix}.{key[len('backbone.'):]}": value for key, value in state.items()
              if key.startswith("backbone.")}
    mapped.update({"qa_outputs.weight": state["head.span_scores.weight"],
                   "qa_outputs.bias": state["head.span_scores.bias"]})
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise SpeedError(f"--checkpoint {checkpoint} does not match the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def write_random_backbone(config, model_class, out_dir: Path, tokenizer_source: Path) -> Path:
    """``model_class(config)`` with seed-0 random weights and ``tokenizer_source``'s tokenizer, saved to ``out_dir``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_class(config).save_pretrained(str(out_dir))
    copy_tokenizer(tokenizer_source, out_dir)
    return out_dir
