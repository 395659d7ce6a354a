"""bench.backends.torch.modeling on tiny random models of all six families, offline."""
from __future__ import annotations

import copy
import re
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.backends.torch.heads import MASKED_LOGIT  # noqa: E402
from bench.core.families import get_family  # noqa: E402
from bench.backends.torch.modeling import (ModelSourceError, QAModel, build_qa_model,  # noqa: E402
                                          inference_model, load_tokenizer, quantize_dynamic_int8,
                                          resolve_model_source)
from tests.squad_samples import CONTEXTS, QUESTIONS  # noqa: E402
from tests.tiny_models import TINY_FAMILIES, encode_qa_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    """tiny(family, head) -> (fresh QAModel in eval mode, tokenizer); loads each model once per module."""
    cache = {}

    def get(family: str, head: str = "conditional", dropout: float = 0.1):
        key = (family, head, dropout)
        if key not in cache:
            source = resolve_model_source("unused", str(tiny_dirs[family]))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the head's init
                cache[key] = (build_qa_model(source, head=head, dropout=dropout), load_tokenizer(source))
        model, tokenizer = cache[key]
        return copy.deepcopy(model).eval(), tokenizer
    return get


def labels(batch: dict) -> dict:
    """A 3-token answer starting at the second context token of each window; the last window unanswerable."""
    n = batch["input_ids"].shape[0]
    candidates = batch["candidate_mask"].clone()
    candidates[:, 0] = False
    first_context = candidates.int().argmax(-1)
    impossible = torch.tensor([False] * (n - 1) + [True])
    return {"start_positions": (first_context + 1).masked_fill(impossible, 0),
            "end_positions": (first_context + 3).masked_fill(impossible, 0),
            "is_impossible": impossible}


# ---------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_source_family_sdpa_and_layers(family, tiny, tiny_dirs):
    model, tokenizer = tiny(family)
    source = resolve_model_source("google_albert_base_v2", str(tiny_dirs[family]))
    assert source.family == family and source.folder == tiny_dirs[family]
    assert source.input_style == ("roberta" if family == "roberta" else "bert")
    assert tokenizer.is_fast
    assert model.family == family and model.head_type == "conditional"
    assert model.backbone.config._attn_implementation == "sdpa"
    assert model.num_layers == (1 if family == "albert" else 2)
    assert not any("pooler" in name for name, _ in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_local_folder_errors_name_the_missing_file(tmp_path):
    with pytest.raises(ModelSourceError, match="not a folder"):
        resolve_model_source("google_electra_small", str(tmp_path / "nowhere"))
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_model_source("google_electra_small", str(tmp_path))


def test_offline_hub_failure_is_immediate_and_helpful(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    started = time.perf_counter()
    with pytest.raises(ModelSourceError) as error:
        resolve_model_source("google_electra_small", None)
    assert time.perf_counter() - started < 5
    assert "google/electra-small-discriminator" in str(error.value)
    assert "--model_path" in str(error.value)


def test_cached_hub_model_is_used_without_network(monkeypatch, tmp_path, tiny_dirs):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--google--electra-small-discriminator" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tiny_dirs["electra"] / name).read_bytes())
    (tmp_path / "models--google--electra-small-discriminator" / "refs").mkdir()
    (tmp_path / "models--google--electra-small-discriminator" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    source = resolve_model_source("google_electra_small", None)
    assert source.source == "google/electra-small-discriminator"
    assert source.folder == snapshot and source.family == "electra"


def test_sharded_safetensors_are_read_and_pickles_never(tmp_path, tiny_dirs):
    """A model.safetensors.index.json folder loads its shards; a pytorch_model.bin beside them is ignored."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sharded"
    shutil.copytree(tiny_dirs["bert"], folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({key: state[key] for key in keys}, str(folder / shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {key: shard for shard, keys in halves.items() for key in keys}}))
    # Different weights in a pickle: loading them would show (and unpickling is never allowed).
    torch.save({key: value + 1.0 for key, value in state.items()}, folder / "pytorch_model.bin")
    backbone = build_qa_model(resolve_model_source("x", str(folder))).backbone.state_dict()
    for key, value in backbone.items():
        assert torch.equal(value, state[key]), key


def test_backbone_path_overrides_weights_with_strict_keys(tmp_path, tiny_dirs):
    from safetensors.torch import save_file

    source = resolve_model_source("x", str(tiny_dirs["bert"]))
    state = {k: v.clone() + 1.0 for k, v in build_qa_model(source).backbone.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    model = build_qa_model(source, backbone_path=tmp_path / "backbone.safetensors")
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    del state["embeddings.word_embeddings.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelSourceError, match="1 missing .*word_embeddings"):
        build_qa_model(source, backbone_path=tmp_path / "partial.safetensors")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_backbone_dropout_replaces_the_config_rates(family, tiny_dirs):
    """--backbone_dropout 0 sets the family's config keys and switches the backbone's dropout off: two
    training-mode passes agree; with config.json's 0.1 they differ."""
    source = resolve_model_source("unused", str(tiny_dirs[family]))
    tokenizer = load_tokenizer(source)
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    for backbone_dropout, same in ((0.0, True), (None, False)):
        model = build_qa_model(source, head="basic", dropout=0.0, backbone_dropout=backbone_dropout).train()
        config = model.backbone.config
        keys = get_family(family).dropout_keys
        assert [getattr(config, key) for key in keys] == [0.0 if same else 0.1] * len(keys)
        first, second = (model(**batch, **labels(batch))["loss"] for _ in range(2))
        assert torch.equal(first, second) == same, (family, backbone_dropout)


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_backbone_dropout_out_of_range_is_refused_naming_the_flag(value, tmp_path):
    from bench.core.flags import ConfigError, config_from_args
    with pytest.raises(ConfigError) as error:
        config_from_args(["--do_train", "--model_path", str(tmp_path), "--backbone_dropout", value])
    assert str(error.value) == f"--backbone_dropout must be in [0, 1), got {float(value)}"


# ---------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_forward_gives_finite_per_window_loss_for_both_heads(family, tiny):
    for head in ("conditional", "basic"):
        model, tokenizer = tiny(family, head)
        model.train()
        batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
        loss = model(**batch, **labels(batch))["loss"]
        assert loss.shape == (4,) and loss.dtype == torch.float32
        assert torch.isfinite(loss).all() and (loss > 0).all()
        loss.mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a gradient"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_predict_shapes_and_only_candidates_selected(family, tiny):
    model, tokenizer = tiny(family, "conditional")
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    out = model.predict(**batch, start_top_n=5, end_top_n=3)
    assert out["start_top_index"].shape == (4, 5) and out["start_top_index"].dtype == torch.long
    assert out["start_top_logit"].shape == (4, 5)
    assert out["end_top_index"].shape == (4, 5, 3) and out["end_top_logit"].shape == (4, 5, 3)
    assert out["null_score"].shape == (4,)
    candidates = batch["candidate_mask"]
    rows = torch.arange(4)
    assert candidates[rows[:, None], out["start_top_index"]].all()
    assert candidates[rows[:, None, None], out["end_top_index"]].all()

    model, _ = tiny(family, "basic")
    out = model.predict(**batch)
    length = batch["input_ids"].shape[1]
    assert set(out) == {"start_logits", "end_logits"}
    for name in ("start_logits", "end_logits"):
        logits = out[name]
        assert logits.shape == (4, length) and logits.dtype == torch.float32
        assert candidates[rows, logits.argmax(-1)].all()
        assert (logits[~candidates] == MASKED_LOGIT).all()


def test_conditional_scores_are_log_probabilities_of_span_and_null(tiny):
    """With every start and end kept, P(null) + Σ P(span) = 1: null_score vs span scores compare probabilities."""
    model, tokenizer = tiny("bert", "conditional")
    batch = encode_qa_batch(tokenizer, QUESTIONS[:2], CONTEXTS[:2])
    length = batch["input_ids"].shape[1]
    out = model.predict(**batch, start_top_n=length, end_top_n=length)
    span_log_probs = out["start_top_logit"][:, :, None] + out["end_top_logit"]
    total = torch.logsumexp(span_log_probs.flatten(1), -1).exp() + out["null_score"].exp()
    torch.testing.assert_close(total, torch.ones(2), atol=1e-4, rtol=0)


def test_short_windows_pad_top_k(tiny):
    model, tokenizer = tiny("bert", "conditional")
    batch = encode_qa_batch(tokenizer, ["Who?"], ["Me."])
    length = batch["input_ids"].shape[1]
    out = model.predict(**batch, start_top_n=length + 2, end_top_n=length + 1)
    assert out["start_top_index"].shape == (1, length + 2)
    assert out["end_top_index"].shape == (1, length + 2, length + 1)
    assert (out["start_top_logit"][0, length:] == MASKED_LOGIT).all()


@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_token_types_are_dropped_where_unused(family, tiny):
    model, tokenizer = tiny(family, "basic")
    assert not model.uses_token_types
    batch = encode_qa_batch(tokenizer, QUESTIONS[:2], CONTEXTS[:2])
    noisy = {**batch, "token_type_ids": torch.ones_like(batch["token_type_ids"])}
    torch.testing.assert_close(model.predict(**batch)["start_logits"], model.predict(**noisy)["start_logits"])


def test_token_types_are_used_by_bert(tiny):
    model, tokenizer = tiny("bert", "basic")
    assert model.uses_token_types
    batch = encode_qa_batch(tokenizer, QUESTIONS[:2], CONTEXTS[:2])
    flipped = {**batch, "token_type_ids": 1 - batch["token_type_ids"]}
    assert not torch.allclose(model.predict(**batch)["start_logits"], model.predict(**flipped)["start_logits"])


def _loss_parts(model: QAModel, batch: dict, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-window loss with labels (start, end), −log p(end | start) recomputed from the head)."""
    n = batch["input_ids"].shape[0]
    loss = model(**batch, start_positions=torch.full((n,), start), end_positions=torch.full((n,), end),
                 is_impossible=torch.zeros(n, dtype=torch.bool))["loss"]
    hidden = model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    end_lp = model.head.end_log_probs(hidden, torch.full((n, 1), start), batch["candidate_mask"])[:, 0, end]
    return loss, -end_lp


def test_conditional_training_feeds_the_true_start(tiny):
    model, tokenizer = tiny("electra", "conditional")
    batch = encode_qa_batch(tokenizer, QUESTIONS[:2], CONTEXTS[:2])
    with torch.no_grad():
        hidden = model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        start_lp = model.head.start_log_probs(hidden, batch["candidate_mask"])
        answerable_lp = model.head.answerable_log_probs(hidden, start_lp)[:, 0]
        for start in (12, 13):
            loss, end_nll = _loss_parts(model, batch, start, 14)
            # loss = ½(−log p_start − log p_end|start) − ½ log p_answerable; the end is conditioned on `start`.
            torch.testing.assert_close(loss, 0.5 * (-start_lp[:, start] + end_nll) - 0.5 * answerable_lp)
        _, end_nll_12 = _loss_parts(model, batch, 12, 14)
        _, end_nll_13 = _loss_parts(model, batch, 13, 14)
    assert not torch.allclose(end_nll_12, end_nll_13), "the end loss must depend on the given start"


def test_inference_ends_are_conditioned_on_each_top_start(tiny):
    model, tokenizer = tiny("bert", "conditional")
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    out = model.predict(**batch, start_top_n=4, end_top_n=4)
    with torch.no_grad():
        hidden = model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        start_lp = model.head.start_log_probs(hidden, batch["candidate_mask"])
        answerable_lp = model.head.answerable_log_probs(hidden, start_lp)[:, 0]
        for k in range(4):
            end_lp = model.head.end_log_probs(hidden, out["start_top_index"][:, k:k + 1], batch["candidate_mask"])
            top_lp, top_index = end_lp[:, 0].topk(4, dim=-1)
            torch.testing.assert_close(out["end_top_index"][:, k], top_index)
            torch.testing.assert_close(out["end_top_logit"][:, k], top_lp + answerable_lp[:, None])
    assert not torch.allclose(out["end_top_logit"][:, 0], out["end_top_logit"][:, 1])


@pytest.mark.parametrize("head", ["conditional", "basic"])
def test_gradient_accumulation_matches_one_big_batch(head, tiny):
    """Σ over micro-batches of loss.sum() / global_count gives the big batch's gradient."""
    model, tokenizer = tiny("bert", head, 0.0)
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS, pad_to=40)
    targets = labels(batch)

    def gradients(slices):
        model.zero_grad(set_to_none=True)
        for part in slices:
            inputs = {name: value[part] for name, value in {**batch, **targets}.items()}
            (model(**inputs)["loss"].sum() / 4).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    whole = gradients([slice(0, 4)])
    accumulated = gradients([slice(0, 2), slice(2, 4)])
    for name, grad in whole.items():
        torch.testing.assert_close(accumulated[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_quantized_int8_model_stays_close_to_float32(tiny):
    model, tokenizer = tiny("bert", "basic")
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    quantized = quantize_dynamic_int8(model)
    layer = quantized.backbone.encoder.layer[0]
    assert isinstance(layer.attention.self.query, torch.ao.nn.quantized.dynamic.Linear)
    assert layer.attention.self.query.weight().qscheme() == torch.per_channel_affine
    assert type(layer.output.dense) is torch.nn.Linear              # the feed-forward output stays float32
    expected, actual = model.predict(**batch), quantized.predict(**batch)
    candidates = batch["candidate_mask"]
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(actual[name][candidates], expected[name][candidates], atol=0.05, rtol=0.05)

    model, _ = tiny("bert", "conditional")
    expected, actual = model.predict(**batch), quantize_dynamic_int8(model).predict(**batch)
    torch.testing.assert_close(actual["null_score"], expected["null_score"], atol=0.05, rtol=0.05)
    torch.testing.assert_close(actual["start_top_logit"], expected["start_top_logit"], atol=0.05, rtol=0.05)


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "albert", "distilbert", "mobilebert"])
def test_int8_keeps_exactly_the_feed_forward_outputs_in_float32(family, tiny):
    """Each family's ffn_output_pattern names one Linear per feed-forward block (MobileBERT: its stacked
    FFNs too), never an attention projection; every other backbone Linear is quantized."""
    model, _ = tiny(family, "basic")
    pattern = re.compile(get_family(family).ffn_output_pattern)
    linears = [name for name, module in model.backbone.named_modules() if isinstance(module, torch.nn.Linear)]
    kept = [name for name in linears if pattern.search(name)]
    config = model.backbone.config
    blocks = getattr(config, "n_layers", None) or (config.num_hidden_groups if family == "albert"
                                                   else config.num_hidden_layers)
    blocks *= getattr(config, "num_feedforward_networks", 1)
    assert len(kept) == blocks and not any("attention" in name for name in kept), kept
    quantized = dict(quantize_dynamic_int8(model).backbone.named_modules())
    assert {name for name in linears if type(quantized[name]) is torch.nn.Linear} == set(kept)


@pytest.mark.parametrize("head", ["basic", "conditional"])
def test_inference_model_per_dtype(head, tiny):
    """CPU bfloat16: a copy with a bfloat16 backbone, run without autocast, float32 outputs close to
    float32's; the trained model is untouched. float32: the model itself. int8: a quantized copy."""
    model, tokenizer = tiny("bert", head)
    batch = encode_qa_batch(tokenizer, QUESTIONS, CONTEXTS)
    assert inference_model(model, "float32") == (model, "float32")
    low, autocast_dtype = inference_model(model, "bfloat16")
    assert autocast_dtype == "float32" and low is not model
    assert {p.dtype for p in low.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in low.head.parameters()} | {p.dtype for p in model.parameters()} == {torch.float32}
    expected, actual = model.predict(**batch), low.predict(**batch)
    for name, value in actual.items():
        assert value.dtype == expected[name].dtype, name
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[name], atol=0.1, rtol=0.05, msg=name)
    quantized, autocast_dtype = inference_model(model, "int8")
    assert autocast_dtype == "float32"
    assert isinstance(quantized.backbone.encoder.layer[0].attention.self.query, torch.ao.nn.quantized.dynamic.Linear)
