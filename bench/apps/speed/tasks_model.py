"""Measured process ``prepare_model``: the model folder both sides load, and what it is."""
from __future__ import annotations

from pathlib import Path

from bench.apps.speed.common import SpeedError
from bench.apps.speed.qa_model import default_dtype, device, load_qa_model, write_qa_folder, write_random_backbone
from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir
from bench.run.cpu import detect_cpu


def task_prepare_model(request: dict) -> dict:
    """The model folder both sides load: a *ForQuestionAnswering checkpoint (config, weights, tokenizer)."""
    import torch

    out_dir = Path(request["out_dir"])
    base, name = _base_model(request, out_dir.parent)
    head_source = write_qa_folder(Path(base), out_dir, request.get("checkpoint"))
    model = load_qa_model(str(out_dir), device())
    return {"name": name, "source": base, "model_dir": str(out_dir), "family": model.family,
            "head_source": head_source, "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "matmul_parameters": _matmul_parameters(model),
            "device": device().type, "native_bf16": device().type == "cpu" and detect_cpu().native_bf16,
            "default_dtype": default_dtype(), "threads": torch.get_num_threads(),
            "accelerator": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": _our_versions()}


def _matmul_parameters(model) -> int:
    """Parameters outside embedding tables: those the matrix multiplies use (a lookup costs no FLOPs;
    the tiny quick-mode BERT is 97 % embeddings), the N of the 6·N·tokens FLOP count."""
    import torch

    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return int(sum(p.numel() for p in model.parameters() if id(p) not in tables))


def _base_model(request: dict, work: Path) -> tuple[str, str]:
    """(folder, name) of the model to benchmark: --model_path, else a tiny random BERT (--quick) or MiniLM."""
    if request["model_path"] is not None:
        return request["model_path"], Path(request["model_path"]).name
    if request["quick"]:
        return str(_write_tiny_bert(work / "tiny_bert")), "tiny random BERT (2 layers, hidden 64)"
    if minilm_model_dir() is None:
        raise SpeedError(f"all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL_HINT}")
    return str(minilm_model_dir()), "all-MiniLM-L6-v2"


def _our_versions() -> dict:
    from bench.run.record import library_versions
    return library_versions(("torch", "transformers", "tokenizers", "numpy"))


def _write_tiny_bert(out_dir: Path) -> Path:
    """A 2-layer, hidden-64 random BERT with the real WordPiece tokenizer (from all-MiniLM-L6-v2)."""
    from transformers import BertConfig, BertModel

    source = minilm_model_dir()
    if source is None:
        raise SpeedError(f"--quick borrows the WordPiece tokenizer of all-MiniLM-L6-v2: {MINILM_INSTALL_HINT}")
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    return write_random_backbone(config, BertModel, out_dir, source)
