"""Offline builders of tiny, randomly initialised Hugging Face model folders, one per family.

Each folder looks like a hub checkpoint (``config.json`` + ``model.safetensors`` +
tokenizer files), so the torch backend loads it through the same path as a real
``--model_path``. The BERT-like families share the real bert-base-uncased
WordPiece tokenizer shipped with all-MiniLM-L6-v2; RoBERTa uses the tiny
byte-level BPE of ``tests.tiny.build_roberta_tokenizer_dir``. Tests get the folders from the
``tiny_model`` and ``tiny_dirs`` fixtures (``tests/conftest.py``), built once per session.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir

__all__ = ["TINY_FAMILIES", "make_tiny_model_dir", "tiny_config", "encode_qa_batch"]

TINY_FAMILIES = ("bert", "albert", "electra", "mobilebert", "roberta", "distilbert")

WORDPIECE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
BERT_VOCAB_SIZE = 30522

# Shared by every family: small enough that building and saving takes well under a second.
_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=512)


def tiny_config(family: str, vocab_size: int = BERT_VOCAB_SIZE, dropout: float = 0.1):
    """A transformers config of ``family`` with 2 layers and hidden size 32 (``dropout`` everywhere)."""
    from transformers import (AlbertConfig, BertConfig, DistilBertConfig, ElectraConfig, MobileBertConfig,
                              RobertaConfig)

    common = {**_SIZES, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}

    if family == "bert":
        return BertConfig(vocab_size=vocab_size, **common)
    if family == "albert":
        # Two layers sharing one group's weights, with a factorised (smaller) embedding like real ALBERT.
        return AlbertConfig(vocab_size=vocab_size, embedding_size=16, num_hidden_groups=1, inner_group_num=1,
                            hidden_act="gelu_new", **common)
    if family == "electra":
        # embedding_size < hidden_size, as in ELECTRA-small, so ``embeddings_project`` exists.
        return ElectraConfig(vocab_size=vocab_size, embedding_size=16, **common)
    if family == "mobilebert":
        return MobileBertConfig(vocab_size=vocab_size, embedding_size=16, true_hidden_size=16,
                                intra_bottleneck_size=16, num_feedforward_networks=2, **common)
    if family == "roberta":
        # RoBERTa numbers positions from padding_idx + 1, so 512 tokens need 514 position embeddings.
        common = {**common, "max_position_embeddings": 514}
        return RobertaConfig(vocab_size=vocab_size, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                             eos_token_id=2, **common)
    if family == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_position_embeddings=512, dropout=dropout, attention_dropout=dropout)
    raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def make_tiny_model_dir(family: str, out_dir: Path, *, roberta_tokenizer_dir: Path | None = None,
                        seed: int = 0, dropout: float = 0.1) -> Path:
    """Write a tiny random ``family`` model (config, safetensors weights, fast tokenizer) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if family == "roberta":
        if roberta_tokenizer_dir is None:
            raise ValueError("the roberta tiny model needs roberta_tokenizer_dir "
                             "(see tests.tiny.build_roberta_tokenizer_dir)")
        vocab_size = _copy_roberta_tokenizer(Path(roberta_tokenizer_dir), out_dir)
    else:
        _copy_wordpiece_tokenizer(out_dir)
        vocab_size = BERT_VOCAB_SIZE
    _save_random_model(tiny_config(family, vocab_size, dropout), out_dir, seed)
    return out_dir


def _copy_wordpiece_tokenizer(out_dir: Path) -> None:
    source = minilm_model_dir()
    if source is None:
        raise RuntimeError(f"all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL_HINT}")
    for name in WORDPIECE_FILES:
        shutil.copyfile(source / name, out_dir / name)


def _copy_roberta_tokenizer(tokenizer_dir: Path, out_dir: Path) -> int:
    """Copy the tokenizer files; return the vocabulary size (special tokens included)."""
    from transformers import AutoTokenizer

    for path in tokenizer_dir.iterdir():
        if path.is_file():
            shutil.copyfile(path, out_dir / path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    if tokenizer.pad_token_id != 1:
        raise ValueError(f"RoBERTa-style tokenizer must have <pad> at id 1, got {tokenizer.pad_token_id}")
    return len(tokenizer)


def _save_random_model(config, out_dir: Path, seed: int) -> None:
    import torch
    from transformers import AutoModel

    # fork_rng: seeding must not disturb the global RNG of the test that asked for a model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    model.save_pretrained(str(out_dir))


def save_tiny_qa_folder(family: str, out: Path, *, seed: int, num_hidden_layers: int | None = None) -> Path:
    """A tiny random ``<Family>ForQuestionAnswering`` saved by transformers itself (safetensors), with the
    WordPiece tokenizer: what a published fine-tuned QA folder looks like. The qa_outputs bias is set to a
    visible value, not the zero bias of a fresh Linear, so a test can tell the trained head was loaded."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(family, dropout=0.0)
    if num_hidden_layers is not None:
        config.num_hidden_layers = num_hidden_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForQuestionAnswering.from_config(config)
        with torch.no_grad():
            model.qa_outputs.bias.copy_(torch.tensor([0.5, -0.25]))
    model.save_pretrained(str(out), safe_serialization=True)
    for name in WORDPIECE_FILES:
        shutil.copyfile(minilm_model_dir() / name, out / name)
    return out


def encode_qa_batch(tokenizer, questions: list[str], contexts: list[str], pad_to: int | None = None) -> dict:
    """Question/context pairs -> torch tensors as the trainer feeds them (token types all 0 if absent).

    ``candidate_mask`` is True for CLS (index 0) and the context tokens: the only
    positions an answer may start or end at.
    """
    import torch

    padding = "max_length" if pad_to else True
    encoded = tokenizer(questions, contexts, padding=padding, max_length=pad_to, return_tensors="pt")
    candidate_mask = torch.zeros_like(encoded["input_ids"], dtype=torch.bool)
    for row in range(len(questions)):
        context_positions = [i for i, seq in enumerate(encoded.sequence_ids(row)) if seq == 1]
        candidate_mask[row, context_positions] = True
    candidate_mask[:, 0] = True
    token_type_ids = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "token_type_ids": token_type_ids, "candidate_mask": candidate_mask}
