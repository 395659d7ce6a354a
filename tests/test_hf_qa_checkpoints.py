"""Fine-tuned Hugging Face ``*ForQuestionAnswering`` folders: ``--model_path`` with ``--head basic`` loads the
trained ``qa_outputs`` as the basic head, so ``--do_eval`` alone scores a published fine-tuned model.

The folders are saved by transformers itself (``AutoModelForQuestionAnswering.from_config(...).save_pretrained``,
safetensors), and our start/end logits are checked against transformers' own on the same windows.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.core.data import load_squad  # noqa: E402
from bench.core.features import batch_arrays, build_features  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from bench.run.model_source import ModelSourceError, resolve_model_folder  # noqa: E402
from bench.run.pipeline import feature_params  # noqa: E402
from tests.tiny_models import save_tiny_qa_folder  # noqa: E402

FAMILIES = ("bert", "distilbert")
MODEL_NAMES = {"bert": "google_en_uncased_bert_base", "distilbert": "distilbert_base_uncased"}


def _save_qa_folder(family: str, out: Path, seed: int = 3) -> Path:
    """A tiny random ``<Family>ForQuestionAnswering`` saved by transformers, with the WordPiece tokenizer."""
    return save_tiny_qa_folder(family, out, seed=seed)


@pytest.fixture(scope="module")
def qa_folders(tmp_path_factory) -> dict[str, Path]:
    return {family: _save_qa_folder(family, tmp_path_factory.mktemp(f"qa_{family}")) for family in FAMILIES}


@pytest.fixture(scope="module")
def dev_examples(sample_files):
    return load_squad(sample_files["2.0"], version="2.0").examples[:12]


def _windows(folder: Path, examples):
    """Evaluation windows of ``examples`` for ``folder`` and one padded batch of all of them."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    source = resolve_model_folder("unused", str(folder))
    config = SimpleNamespace(max_seq_length=128, max_query_length=32, doc_stride=64, stride_mode="step")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    features = build_features(examples, tokenizer, feature_params(config, source.family), is_training=False)
    return source, batch_arrays(features, np.arange(len(features)), pad_id=tokenizer.pad_token_id)


def _transformers_logits(folder: Path, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(str(folder)).eval()
    inputs = {"input_ids": torch.from_numpy(arrays["input_ids"]).long(),
              "attention_mask": torch.from_numpy(arrays["attention_mask"]).long()}
    if model.config.model_type != "distilbert":
        inputs["token_type_ids"] = torch.from_numpy(arrays["token_type_ids"]).long()
    with torch.no_grad():
        out = model(**inputs)
    return out.start_logits.numpy(), out.end_logits.numpy()


def _assert_same_logits(ours: dict, theirs: tuple, candidates: np.ndarray, atol: float) -> None:
    """Ours mask non-candidate positions (only CLS and context tokens can be answers): compare the rest."""
    for name, expected in zip(("start_logits", "end_logits"), theirs):
        got = np.asarray(ours[name])
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got[candidates], expected[candidates], rtol=0, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------- torch
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_basic_head_is_the_trained_qa_outputs(family, qa_folders, dev_examples):
    from bench.backends.torch.modeling import build_qa_model

    folder = qa_folders[family]
    source, arrays = _windows(folder, dev_examples)
    model = build_qa_model(source, head="basic", dropout=0.1).eval()
    ours = model.predict(**{name: torch.from_numpy(np.ascontiguousarray(arrays[name]))
                            for name in ("input_ids", "attention_mask", "token_type_ids", "candidate_mask")})
    _assert_same_logits({k: v.numpy() for k, v in ours.items()}, _transformers_logits(folder, arrays),
                        arrays["candidate_mask"].astype(bool), atol=1e-5)


def test_torch_other_head_starts_untrained_and_says_so(qa_folders, caplog):
    from bench.backends.torch.modeling import build_qa_model

    source = resolve_model_folder("unused", str(qa_folders["bert"]))
    with caplog.at_level(logging.WARNING):
        model = build_qa_model(source, head="conditional")
    assert "BertForQuestionAnswering: its trained head is a basic head" in caplog.text
    assert "--head conditional starts untrained" in caplog.text
    assert model.head_type == "conditional"


def test_torch_base_model_folder_keeps_a_fresh_head(tiny_dirs):
    from bench.backends.torch.modeling import build_qa_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_qa_model(resolve_model_folder("unused", str(tiny_dirs["bert"])), head="basic")
    assert torch.count_nonzero(model.head.span_scores.bias) == 0       # a fresh Linear's zero bias


def test_qa_folder_without_qa_outputs_is_refused_in_one_line(qa_folders, tmp_path):
    from safetensors.numpy import load_file, save_file

    from bench.backends.torch.modeling import build_qa_model

    folder = tmp_path / "no_head"
    shutil.copytree(qa_folders["bert"], folder)
    state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.startswith("qa_outputs")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelSourceError, match="lack the trained QA head's qa_outputs.weight, qa_outputs.bias"):
        build_qa_model(resolve_model_folder("unused", str(folder)), head="basic")


def test_pickle_only_qa_folder_is_still_refused(qa_folders, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(qa_folders["bert"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match="safetensors only"):
        resolve_model_folder("unused", str(folder))


def test_do_eval_alone_scores_a_fine_tuned_folder(qa_folders, sample_files, tmp_path):
    from bench.apps.run import main as run_squad
    from tests.test_run_squad import base_args

    out = tmp_path / "eval_only"
    argv = [a for a in base_args(qa_folders["bert"], sample_files["2.0"], out, model_name=MODEL_NAMES["bert"],
                                 head="basic", max_eval_samples=10) if a != "--do_train"]
    assert run_squad(argv) == 0
    record = load_results(out / "results.json")
    assert record["head"] == "basic" and record["model"]["family"] == "bert"
    assert record["metrics"]["best_checkpoint"] == "pretrained" and record["timing"]["train_seconds"] is None
    assert record["metrics"]["token_accuracy"]["windows"] == record["data"]["num_eval_features"]
    assert "token_accuracy" in json.loads((out / "best_results.json").read_text())


# ---------------------------------------------------------------------------------------- MXNet
@pytest.mark.parametrize("family", FAMILIES)
def test_mxnet_basic_head_is_the_trained_qa_outputs(family, qa_folders, dev_examples):
    from tests.conftest import import_mxnet_or_skip

    mx, _ = import_mxnet_or_skip()
    from bench.backends.mxnet.heads import batch_to_nd
    from bench.backends.mxnet.session import load_model
    from bench.core.flags import RunConfig

    folder = qa_folders[family]
    _, arrays = _windows(folder, dev_examples)
    config = RunConfig(model_name=MODEL_NAMES[family], model_path=str(folder), head="basic", max_seq_length=128,
                       backend="mxnet")
    _, _, model = load_model(config, mx.cpu())
    _assert_same_logits(model.predict(batch_to_nd(arrays)), _transformers_logits(folder, arrays),
                        arrays["candidate_mask"].astype(bool), atol=1e-4)
