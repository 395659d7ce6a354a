"""Measured process of the GPU figure: ELECTRA-base training at 384 in bfloat16 and float16 with MFU,
and the dev-v2.0 evaluation time. Device-agnostic code: it also runs (small) on a CPU."""
from __future__ import annotations

from pathlib import Path

from bench.apps.speed.common import GPU_ANCHORS, WINDOW, SpeedError
from bench.apps.speed.figures import mfu, peak_flops
from bench.apps.speed.measure import clock, since
from bench.apps.speed.qa_model import (device, feature_params, for_inference, load_qa_model, load_tokenizer,
                                       predict_logits, synchronize, write_qa_folder, write_random_backbone)
from bench.apps.speed.tasks_inference import subset
from bench.apps.speed.train_step import train_steps
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir

ELECTRA_BASE = {"embedding_size": 768, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072}


def task_gpu(request: dict) -> dict:
    """GPU figure: ELECTRA-base (random weights: speed does not depend on them) at 384, bf16 and fp16."""
    import torch

    from bench.core.data import load_squad
    from bench.core.features import build_features

    model_dir = _write_electra(Path(request["work"]) / "electra_base", request.get("electra_config", ELECTRA_BASE))
    tokenizer = load_tokenizer(str(model_dir))
    window = {**WINDOW, **request.get("window", {})}
    model = load_qa_model(str(model_dir), device())
    features = build_features(load_squad(request["data"]["train"], for_training=True).examples, tokenizer,
                              feature_params(model.family, "overlap", window), is_training=True)
    num_parameters = sum(p.numel() for p in model.parameters())
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = request["peak_tflops"] * 1e12 if request.get("peak_tflops") else peak_flops(device_name)
    runs = _training_runs(request, window, features, str(model_dir), tokenizer.pad_token_id or 0)
    for run in runs.values():
        run["mfu"] = mfu(num_parameters, run["real_tokens_per_s"], peak)
    return {"device_name": device_name, "num_parameters": num_parameters, "peak_flops": peak, "runs": runs,
            "anchors": GPU_ANCHORS, "eval": _gpu_eval(model, tokenizer, request, window)}


def _training_runs(request: dict, window: dict, features, model_dir: str, pad_id: int) -> dict:
    """train_steps with dynamic batches in every dtype of the request (bfloat16 and float16 by default)."""
    train_request = {**window, "batch_size": request.get("batch_size", 32), "warmup_steps": request.get("warmup", 5),
                     "steps": request.get("steps", 30), "model_dir": model_dir}
    return {dtype: train_steps(train_request, features, dtype=dtype, padded=False, pad_id=pad_id,
                               model_dir=model_dir, compile_backbone=request.get("compile", False))
            for dtype in request.get("dtypes", ("bfloat16", "float16"))}


def _gpu_eval(model, tokenizer, request: dict, window: dict) -> dict:
    from bench.core.data import load_squad
    from bench.core.features import build_features

    dataset = subset(load_squad(request["data"]["dev20"]), request.get("eval_questions"))
    features = build_features(dataset.examples, tokenizer, feature_params(model.family, "step", window), is_training=False)
    run_model, autocast_dtype = for_inference(model.eval(), "bfloat16")
    start = clock()
    predict_logits(run_model, features, autocast_dtype=autocast_dtype, batch_size=request.get("eval_batch_size", 128),
                   pad_id=tokenizer.pad_token_id or 0)
    synchronize(device())
    timing = since(start)
    return {**timing, "windows": len(features), "windows_per_s": round(len(features) / timing["wall_s"], 1)}


def _write_electra(out_dir: Path, sizes: dict) -> Path:
    """A random ELECTRA of ``sizes`` as a QA folder (speed does not depend on the weights' values)."""
    from transformers import ElectraConfig, ElectraModel

    if minilm_model_dir() is None:
        raise SpeedError(f"the GPU figure borrows the WordPiece tokenizer of all-MiniLM-L6-v2: {MINILM_INSTALL_HINT}")
    base = write_random_backbone(ElectraConfig(**sizes), ElectraModel, out_dir.parent / f"{out_dir.name}_backbone",
                                 minilm_model_dir())
    write_qa_folder(base, out_dir)
    return out_dir
