"""bench.backends.torch.optim: layer-wise LR decay, freezing, weight-decay groups, schedule."""
from __future__ import annotations

import logging
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.core.flags import config_from_dict  # noqa: E402
from bench.backends.torch.modeling import build_qa_model, resolve_model_source  # noqa: E402
from bench.backends.torch.optim import (build_optimizer, build_param_groups, build_scheduler,  # noqa: E402
                                       lr_multipliers)
from bench.run.training_rules import linear_schedule, warmup_updates  # noqa: E402
from tests.tiny_models import TINY_FAMILIES  # noqa: E402

D = 0.8

# Written out per family, independently of the implementation's rules.
EMBEDDING_PREFIXES = {
    "bert": ["embeddings."], "roberta": ["embeddings."], "mobilebert": ["embeddings."],
    "distilbert": ["embeddings."], "electra": ["embeddings.", "embeddings_project."],
    "albert": ["embeddings.", "encoder.embedding_hidden_mapping_in."],
}
LAYER_PREFIX = {"bert": "encoder.layer", "roberta": "encoder.layer", "mobilebert": "encoder.layer",
                "electra": "encoder.layer", "distilbert": "transformer.layer",
                "albert": "encoder.albert_layer_groups"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def build(tiny_dirs):
    def make(family: str, head: str = "conditional"):
        return build_qa_model(resolve_model_source("unused", str(tiny_dirs[family])), head=head)
    return make


def expected_layer(family: str, name: str):
    """"head", "embeddings" or the encoder layer index of a QAModel parameter name."""
    if not name.startswith("backbone."):
        return "head"
    inner = name[len("backbone."):]
    if any(inner.startswith(prefix) for prefix in EMBEDDING_PREFIXES[family]):
        return "embeddings"
    prefix = LAYER_PREFIX[family] + "."
    assert inner.startswith(prefix), f"unexpected backbone parameter {name}"
    return int(inner[len(prefix):].split(".")[0])


def expected_multiplier(family: str, name: str, d: float) -> float:
    num_layers = 1 if family == "albert" else 2   # ALBERT: 2 layers sharing 1 group
    layer = expected_layer(family, name)
    if layer == "head":
        return 1.0
    if layer == "embeddings":
        return d ** (num_layers + 2)
    return d ** (num_layers + 1 - layer)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_parameter_gets_the_electra_multiplier(family, build):
    model = build(family)
    multipliers = lr_multipliers(model, D)
    names = [name for name, _ in model.named_parameters()]
    assert sorted(multipliers) == sorted(names)
    for name in names:
        assert multipliers[name] == pytest.approx(expected_multiplier(family, name, D)), name
    levels = sorted(set(round(m, 12) for m in multipliers.values()))
    expected_levels = [D ** 3, D ** 2, 1.0] if family == "albert" else [D ** 4, D ** 3, D ** 2, 1.0]
    assert levels == pytest.approx(expected_levels)


def test_albert_has_three_levels_and_says_so(build, caplog):
    model = build("albert")
    with caplog.at_level(logging.WARNING):
        multipliers = lr_multipliers(model, D)
    assert "ALBERT shares" in caplog.text
    assert multipliers["backbone.embeddings.word_embeddings.weight"] == pytest.approx(D ** 3)
    assert multipliers["backbone.encoder.embedding_hidden_mapping_in.weight"] == pytest.approx(D ** 3)
    shared = [m for n, m in multipliers.items() if ".albert_layer_groups." in n]
    assert shared and all(m == pytest.approx(D ** 2) for m in shared)
    assert multipliers["head.start_scores.weight"] == 1.0


def test_electra_embedding_projection_decays_with_the_embeddings(build):
    multipliers = lr_multipliers(build("electra"), D)
    assert multipliers["backbone.embeddings_project.weight"] == pytest.approx(D ** 4)


@pytest.mark.parametrize("d", [-1.0, 0.0, 1.0])
def test_decay_disabled_gives_all_ones(d, build):
    assert set(lr_multipliers(build("bert"), d).values()) == {1.0}


def test_unmapped_backbone_parameter_is_an_error(build):
    model = build("bert")
    model.backbone.register_parameter("mystery", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="mystery"):
        lr_multipliers(model, D)


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert"])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_untunable_depth_freezes_embeddings_and_lowest_layers(family, depth, build):
    model = build(family)
    groups = build_param_groups(model, lr=1e-4, wd=0.01, layerwise_decay=-1, untunable_depth=depth)
    expected_frozen = {name for name, _ in model.named_parameters()
                       if expected_layer(family, name) == "embeddings"
                       or (isinstance(expected_layer(family, name), int) and expected_layer(family, name) < depth)}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == expected_frozen and frozen
    in_optimizer = {name for group in groups for name in group["param_names"]}
    assert in_optimizer == {name for name, _ in model.named_parameters()} - expected_frozen


def test_negative_untunable_depth_freezes_nothing(build):
    model = build("bert")
    build_param_groups(model, lr=1e-4, wd=0.01, layerwise_decay=-1, untunable_depth=-1)
    assert all(p.requires_grad for p in model.parameters())


def is_bias_or_norm(name: str) -> bool:
    """By naming convention of the six families (checked against module types by the code under test)."""
    module_name = name.rsplit(".", 1)[0].rsplit(".", 1)[-1].lower()
    return name.endswith("bias") or "norm" in module_name


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_no_decay_groups_hold_exactly_biases_and_norm_weights(family, build):
    model = build(family)
    groups = build_param_groups(model, lr=1e-4, wd=0.01, layerwise_decay=D, untunable_depth=-1)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["param_names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.01 for n in g["param_names"]}
    names = {name for name, _ in model.named_parameters()}
    assert no_decay == {name for name in names if is_bias_or_norm(name)}
    assert decay == names - no_decay
    assert any(re.search(r"norm\.weight$", name, re.I) for name in no_decay)
    multipliers = lr_multipliers(model, D)
    for group in groups:
        assert group["lr"] == pytest.approx(1e-4 * group["lr_scale"])
        assert all(multipliers[name] == pytest.approx(group["lr_scale"]) for name in group["param_names"])


def test_schedule_warms_up_then_decays_linearly(build):
    model = build("bert")
    optimizer = torch.optim.AdamW(build_param_groups(model, lr=1e-3, wd=0.0, layerwise_decay=0.5,
                                                     untunable_depth=-1), lr=1e-3)
    scheduler = build_scheduler(optimizer, num_updates=10, warmup=2)
    expected = {0: 0.0, 1: 0.5, 2: 1.0, 6: 0.5, 10: 0.0}
    for update in range(11):
        if update in expected:
            for group in optimizer.param_groups:
                assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"] * expected[update]), update
        optimizer.step()
        scheduler.step()
    assert len({g["lr_scale"] for g in optimizer.param_groups}) == 4


def test_schedule_without_warmup_starts_at_peak():
    assert linear_schedule(0, 10, 0) == 1.0
    assert linear_schedule(5, 10, 0) == 0.5
    assert linear_schedule(12, 10, 0) == 0.0


def test_warmup_steps_override_ratio():
    config = config_from_dict({"do_train": True, "warmup_ratio": 0.1})
    assert warmup_updates(config, 1000) == 100
    config = config_from_dict({"do_train": True, "warmup_ratio": 0.1, "warmup_steps": 7})
    assert warmup_updates(config, 1000) == 7
    assert warmup_updates(config, 5) == 5


def test_build_optimizer_reads_the_flags(build):
    model = build("electra")
    config = config_from_dict({"do_train": True, "lr": 3e-5, "wd": 0.02, "adam_betas": "(0.9, 0.98)",
                               "adam_epsilon": 1e-8, "layerwise_decay": D, "untunable_depth": 1})
    optimizer = build_optimizer(model, config)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8
    assert optimizer.defaults["fused"] is True      # CPU and CUDA have the fused kernel
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable
    assert {round(g["lr"] / 3e-5, 12) for g in optimizer.param_groups} == {round(D ** 2, 12), 1.0}
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    optimizer.step()
