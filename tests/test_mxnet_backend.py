"""bench.backends.mxnet against the torch backend, on tiny random HF models and real SQuAD text.

Needs the MXNet extra (``bash scripts/install_mxnet.sh``: numpy 1.26, mxnet 1.9.1,
gluonnlp 0.10.0) next to torch. Without it the module is skipped, unless
SQUAD_BENCH_REQUIRE_MXNET=1 (CI, after the install script) turns the skip into a failure
(``tests.conftest.import_mxnet_or_skip``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.backends.mxnet import compat
from tests.conftest import import_mxnet_or_skip

mx, nlp = import_mxnet_or_skip()
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.core.data import load_squad  # noqa: E402
from bench.core.features import FeatureParams, batch_arrays, build_features  # noqa: E402
from bench.backends.mxnet.convert import (ConversionError, base_model_state, encoder_config_from_hf,  # noqa: E402
                                         load_hf_encoder, read_hf_config)
from bench.backends.mxnet.heads import (batch_to_nd, build_qa_model, load_torch_state,  # noqa: E402
                                       torch_state_from_gluon)
from bench.run.pipeline import plan_epoch  # noqa: E402
from bench.backends.mxnet.encoders import GluonEncoder  # noqa: E402
from bench.backends.torch import modeling as torch_modeling  # noqa: E402
from tests.squad_samples import CONTEXTS, QUESTIONS  # noqa: E402
from tests.tiny_models import encode_qa_batch, tiny_config  # noqa: E402

CONVERTED_FAMILIES = ("bert", "roberta", "electra", "albert", "distilbert", "mobilebert")
TOLERANCE = 1e-4
TORCH_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "candidate_mask")
LABELS = ("start_positions", "end_positions", "is_impossible")


@pytest.fixture(scope="module")
def train_examples(squad_dir):
    return load_squad(squad_dir / "train-v2.0.first10.json.gz", for_training=True).examples[:40]


def _torch_model(folder: Path, head: str):
    source = torch_modeling.resolve_model_source("unused", str(folder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the head's init
        model = torch_modeling.build_qa_model(source, head=head, dropout=0.1)
    return model.eval(), torch_modeling.load_tokenizer(source), source


def _first_batch(examples, tokenizer, input_style: str) -> dict:
    """The first micro-batch of epoch 0, exactly as the training pipeline plans and pads it."""
    params = FeatureParams(max_seq_length=128, max_query_length=32, doc_stride=64, input_style=input_style)
    features = build_features(examples, tokenizer, params, is_training=True)
    order = np.random.default_rng(100).permutation(len(features))
    plan = plan_epoch(features, order, epoch=0, rank=0, world_size=1, seed=100, batch_size=8, num_accumulated=1)
    arrays = batch_arrays(features, plan.updates[0][0], pad_id=tokenizer.pad_token_id)
    assert arrays["is_impossible"].any() and not arrays["is_impossible"].all()   # both kinds of windows
    assert (arrays["attention_mask"] == 0).any()                                 # padding is exercised
    return arrays


def _torch_tensors(arrays: dict, names) -> dict:
    return {name: torch.from_numpy(np.ascontiguousarray(arrays[name])) for name in names}


def _gluon_twin(torch_model, folder: Path, head: str):
    config = encoder_config_from_hf(read_hf_config(folder))
    model = build_qa_model(config, head=head, dropout=0.1)
    load_torch_state(model, {name: value.numpy() for name, value in torch_model.state_dict().items()})
    return model


def _gluon_loss(model, nd: dict):
    return model(nd["input_ids"], nd["token_types"], nd["valid_length"], nd["candidate_mask"],
                 nd["start_positions"], nd["end_positions"], nd["is_impossible"])


# ---------------------------------------------------------------------------------------- compat
def test_import_mxnet_restores_numpy_alias():
    import numpy

    assert numpy.bool is bool
    assert compat.import_mxnet() == (mx, nlp)                      # imported once
    assert (mx.__version__, nlp.__version__) == (compat.MXNET_VERSION, compat.GLUONNLP_VERSION)


# Run in a fresh process: MXNet sizes its OpenMP teams once, when the library loads.
THREADS_PROBE = """
import json, os
import torch
torch.set_num_threads(2)
from bench.backends.mxnet.compat import import_mxnet
mx, _ = import_mxnet()
mx.nd.ones((1,)).asnumpy()                              # the engine's worker threads exist now
before = len(os.listdir("/proc/self/task"))
x, w = mx.nd.ones((2048, 512)), mx.nd.ones((512, 512))
mx.nd.FullyConnected(x, w, num_hidden=512, no_bias=True).asnumpy()
print(json.dumps({"torch": torch.get_num_threads(), "env": os.environ.get("MXNET_OMP_MAX_THREADS"),
                  "omp_helpers": len(os.listdir("/proc/self/task")) - before}))
"""


@pytest.mark.parametrize("local_size, want", [(None, "2"), ("2", "1")])
def test_mxnet_operators_get_torchs_threads_shared_among_local_ranks(local_size, want):
    """Without OMP_NUM_THREADS, MXNet alone would run every operator on half the processors (one
    thread on 2 cores): its engine must get torch's 2 threads (an OpenMP helper thread appears
    when the matmul runs), divided among a launcher's local processes, and torch keeps its 2."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    if local_size:
        env["HOROVOD_LOCAL_SIZE"] = local_size
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe["torch"] == 2 and probe["env"] == want
    assert (probe["omp_helpers"] > 0) == (want != "1"), probe


def test_numpy_2_is_refused_with_the_install_hint(monkeypatch):
    import numpy

    monkeypatch.setattr(compat, "_imported", None)
    monkeypatch.setattr(numpy, "__version__", "2.4.0")
    with pytest.raises(compat.MXNetUnavailable, match="numpy < 2.*bash scripts/install_mxnet.sh"):
        compat.import_mxnet()


# ---------------------------------------------------------------------------------------- encoders
def _assert_encoder_matches(folder: Path, family: str, tokenizer_folder: Path | None = None) -> None:
    """Last hidden states of the converted encoder = HF's, on real tokenized text with padding."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder or folder))
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    hf_model = AutoModel.from_pretrained(str(folder)).eval()
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if getattr(hf_model.config, "type_vocab_size", 0) > 1:
        kwargs["token_type_ids"] = batch["token_type_ids"]
    with torch.no_grad():
        expected = hf_model(**kwargs).last_hidden_state.numpy()

    encoder, config = load_hf_encoder(folder)
    assert config.family == family
    nd = batch_to_nd({name: batch[name].numpy() for name in TORCH_INPUTS})
    hidden = encoder(nd["input_ids"], nd["token_types"], nd["valid_length"]).asnumpy()

    real = batch["attention_mask"].numpy().astype(bool)
    assert not real.all()                                    # some windows are padded
    error = np.abs(hidden - expected)[real].max()
    assert error <= TOLERANCE
    # Relative to the outputs' spread too: MobileBERT's (no LayerNorm) are small at random init.
    assert error <= TOLERANCE * expected[real].std()


@pytest.mark.parametrize("family", CONVERTED_FAMILIES)
def test_encoder_matches_hugging_face(family, tiny_dirs):
    _assert_encoder_matches(tiny_dirs[family], family)


@pytest.mark.parametrize("switches", [{"trigram_input": False}, {"use_bottleneck_attention": True}])
def test_mobilebert_variants_match_hugging_face(switches, tiny_dirs, tmp_path):
    from transformers import AutoModel

    config = tiny_config("mobilebert")
    for name, value in switches.items():
        setattr(config, name, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        AutoModel.from_config(config).save_pretrained(str(tmp_path))
    _assert_encoder_matches(tmp_path, "mobilebert", tokenizer_folder=tiny_dirs["mobilebert"])


def test_roberta_positions_start_after_padding_idx(tiny_dirs):
    config = encoder_config_from_hf(read_hf_config(tiny_dirs["roberta"]))
    assert config.position_offset == 2 and config.type_vocab_size == 1
    assert encoder_config_from_hf(read_hf_config(tiny_dirs["bert"])).position_offset == 0


def test_pretrained_minilm_matches_hugging_face(minilm_dir):
    """Real pretrained weights (all-MiniLM-L6-v2: BERT, 6 layers, hidden 384), not only random ones."""
    _assert_encoder_matches(minilm_dir, "bert")


def test_task_checkpoint_names_are_normalised():
    state = {"bert.embeddings.LayerNorm.gamma": 1, "bert.embeddings.LayerNorm.beta": 2, "qa_outputs.weight": 3,
             "backbone.encoder.layer.0.output.dense.weight": 4}
    assert base_model_state(state, "bert") == {"embeddings.LayerNorm.weight": 1, "embeddings.LayerNorm.bias": 2,
                                               "qa_outputs.weight": 3, "encoder.layer.0.output.dense.weight": 4}


def test_unknown_family_is_refused_with_the_supported_families():
    with pytest.raises(ConversionError, match=r"'xlnet'.*Supported families: bert, roberta, electra, "
                                              r"albert, distilbert, mobilebert"):
        encoder_config_from_hf({"model_type": "xlnet"}, where="xlnet_base")


@pytest.mark.parametrize("switches, message", [({"normalization_type": "layer_norm"}, "no_norm"),
                                               ({"key_query_shared_bottleneck": False}, "cannot run")])
def test_unsupported_mobilebert_switches_are_refused(switches, message):
    with pytest.raises(ConversionError, match=message):
        encoder_config_from_hf({**tiny_config("mobilebert").to_dict(), **switches})


def test_missing_tensor_is_named(tiny_dirs, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(tiny_dirs["bert"], folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConversionError, match="encoder.layer.1.output.dense.weight"):
        load_hf_encoder(folder)


# ---------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("head", ["conditional", "basic"])
@pytest.mark.parametrize("family", CONVERTED_FAMILIES)
def test_loss_and_predictions_match_torch(family, head, tiny_dirs, train_examples):
    """Same weights, same first training batch, dropout off: per-window losses and inference scores agree."""
    torch_model, tokenizer, source = _torch_model(tiny_dirs[family], head)
    arrays = _first_batch(train_examples, tokenizer, source.input_style)
    with torch.no_grad():
        torch_loss = torch_model(**_torch_tensors(arrays, TORCH_INPUTS + LABELS))["loss"].numpy()
        torch_scores = torch_model.predict(**_torch_tensors(arrays, TORCH_INPUTS))

    model = _gluon_twin(torch_model, tiny_dirs[family], head)
    nd = batch_to_nd(arrays)
    assert np.abs(_gluon_loss(model, nd).asnumpy() - torch_loss).max() <= TOLERANCE
    scores = model.predict(nd)
    assert set(scores) == set(torch_scores)
    for name, expected in torch_scores.items():
        if name.endswith("_index"):
            assert np.array_equal(scores[name], expected.numpy()), name
        else:
            # Masked (non-candidate) scores are -1e30 in both: compare them relatively.
            assert np.allclose(scores[name], expected.numpy(), rtol=1e-6, atol=TOLERANCE), name


@pytest.mark.parametrize("head", ["conditional", "basic"])
def test_hybridized_training_forward_and_backward(head, tiny_dirs, train_examples):
    """The hybridized graph gives the same loss inside autograd, and every parameter gets a gradient."""
    torch_model, tokenizer, source = _torch_model(tiny_dirs["electra"], head)
    arrays = _first_batch(train_examples, tokenizer, source.input_style)
    with torch.no_grad():
        torch_loss = torch_model(**_torch_tensors(arrays, TORCH_INPUTS + LABELS))["loss"].numpy()
    model = _gluon_twin(torch_model, tiny_dirs["electra"], head)
    model.hybridize()
    nd = batch_to_nd(arrays)
    with mx.autograd.record(train_mode=False):     # dropout off, as torch's eval()
        loss = _gluon_loss(model, nd)
    loss.backward()
    assert np.abs(loss.asnumpy() - torch_loss).max() <= TOLERANCE
    without_grad = [name for name, param in model._collect_params_with_prefix().items()
                    if not np.abs(param.grad().asnumpy()).sum() > 0]
    assert without_grad == []


@pytest.mark.parametrize("family", CONVERTED_FAMILIES)
def test_backbone_dropout_replaces_the_config_rates(family, tiny_dirs, train_examples):
    """--backbone_dropout 0 on a folder whose config.json says 0.1: two training-mode passes agree (the
    backbone's dropout is off, under the family's own keys); without the flag they differ."""
    from bench.backends.mxnet.session import load_model
    from bench.core.flags import config_from_dict

    for backbone_dropout, same in ((0.0, True), (None, False)):
        config = config_from_dict({"backend": "mxnet", "model_path": str(tiny_dirs[family]), "head": "basic",
                                   "classifier_dropout": 0.0, "backbone_dropout": backbone_dropout,
                                   "max_seq_length": 128, "max_query_length": 32, "do_eval": True,
                                   "dev_file": "unused.json"})
        source, tokenizer, model = load_model(config, mx.cpu())
        nd = batch_to_nd(_first_batch(train_examples, tokenizer, source.input_style))
        with mx.autograd.record(train_mode=True):
            first, second = (_gluon_loss(model, nd).asnumpy() for _ in range(2))
        assert np.array_equal(first, second) == same, (family, backbone_dropout)


def test_fused_inference_graph_predicts_the_same_and_training_after_it_is_unchanged(tiny_dirs, train_examples):
    """predict_windows builds oneDNN-fused graphs on the CPU: the same scores as the plain graph, and
    afterwards the encoder trains exactly as one that never predicted (same gradients)."""
    from bench.backends.mxnet import inference
    from bench.run.helpers import EvalBatching, predict_in_batches

    torch_model, tokenizer, source = _torch_model(tiny_dirs["bert"], "basic")
    params = FeatureParams(max_seq_length=128, max_query_length=32, doc_stride=64, input_style=source.input_style)
    features = build_features(train_examples, tokenizer, params, is_training=True)
    arrays = _first_batch(train_examples, tokenizer, source.input_style)
    models = [_gluon_twin(torch_model, tiny_dirs["bert"], "basic") for _ in range(2)]
    for model in models:
        model.hybridize()
    batching = EvalBatching(head="basic", batch_size=8, pad_id=tokenizer.pad_token_id)
    fused = inference.predict_windows(models[0], features, np.arange(16), batching, ctx=mx.cpu())
    plain = predict_in_batches(features, np.arange(16), lambda batch: models[1].predict(batch_to_nd(batch)), batching)
    for name, values in fused.items():
        assert np.allclose(values, plain[name], rtol=1e-6, atol=TOLERANCE), name
    grads = []
    for model in models:
        with mx.autograd.record(train_mode=False):
            loss = _gluon_loss(model, batch_to_nd(arrays))
        loss.backward()
        grads.append({name: param.grad().asnumpy() for name, param in model._collect_params_with_prefix().items()})
    assert all(np.allclose(grads[0][name], grads[1][name], atol=1e-6) for name in grads[1])


@pytest.mark.parametrize("hybridized", [True, False])
def test_fused_inference_leaves_the_encoder_as_it_found_it(hybridized, tiny_dirs):
    from bench.backends.mxnet import inference

    torch_model, _, _ = _torch_model(tiny_dirs["bert"], "basic")
    model = _gluon_twin(torch_model, tiny_dirs["bert"], "basic")
    if hybridized:
        model.hybridize()
    with inference.fused_for_inference(model, mx.cpu()):
        assert model.backbone._active
    assert model.backbone._active is hybridized


def test_gluon_weights_go_back_to_torch_names(tiny_dirs):
    torch_model, _, _ = _torch_model(tiny_dirs["albert"], "conditional")
    state = {name: value.numpy() for name, value in torch_model.state_dict().items()}
    model = _gluon_twin(torch_model, tiny_dirs["albert"], "conditional")
    back = torch_state_from_gluon(model)
    assert set(back) == set(state)
    assert all(np.array_equal(back[name], state[name]) for name in state)


def test_torch_state_with_foreign_tensors_is_refused(tiny_dirs):
    torch_model, _, _ = _torch_model(tiny_dirs["bert"], "basic")
    state = {name: value.numpy() for name, value in torch_model.state_dict().items()}
    state["backbone.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    model = build_qa_model(encoder_config_from_hf(read_hf_config(tiny_dirs["bert"])), head="basic")
    with pytest.raises(ConversionError, match="pooler"):
        load_torch_state(model, state)


# ------------------------------------------------------------------------------------ fast kernels
def test_attention_excludes_padded_keys():
    """The additive key mask: a window's outputs do not change with what its padding holds."""
    config = encoder_config_from_hf(tiny_config("bert", vocab_size=64, dropout=0.0).to_dict(), where="tiny")
    encoder = GluonEncoder(config)
    encoder.initialize(mx.init.Normal(0.02))
    encoder.finish_initialization(mx.cpu())
    ids = mx.nd.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]])
    other_padding = mx.nd.array([[5, 6, 7, 8, 40, 41], [9, 10, 11, 42, 43, 44]])
    valid = mx.nd.array([4, 3])
    first, second = (encoder(x, mx.nd.zeros_like(x), valid).asnumpy() for x in (ids, other_padding))
    np.testing.assert_allclose(first[0, :4], second[0, :4], atol=1e-5)
    np.testing.assert_allclose(first[1, :3], second[1, :3], atol=1e-5)
    assert not np.allclose(first[0, 4:], second[0, 4:])           # the padded positions do see their inputs
