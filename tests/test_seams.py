"""Each extension goes in through one seam: a registry entry plus one module per backend.

A throw-away head, loss and model family are registered here (tests/plugins/ holds their torch
modules) and run through the real run script; nothing else in bench/ knows them. The files this
took are listed in docs/architecture.md ("Adding things").
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from bench.apps.run import main as run_squad  # noqa: E402
from bench.core import families, heads, losses  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from tests.test_run_squad import base_args  # noqa: E402
from tests.tiny_models import WORDPIECE_FILES  # noqa: E402


@contextmanager
def registered(registry, entry):
    """Register ``entry`` for the test only (the registries are process-wide)."""
    registry.register(entry)
    try:
        yield entry
    finally:
        registry.unregister(entry.name)


def toy_head_spec():
    return heads.HeadSpec("toy", "throw-away: one shared scorer on two learned offsets",
                          {"start_logits": heads.OutputSpec(("n", "width"), "float32", heads.PAD_LOGIT),
                           "end_logits": heads.OutputSpec(("n", "width"), "float32", heads.PAD_LOGIT)},
                          "logits", {"torch": "tests.plugins.toy_head:ToyHead"}, losses=("ce", "half_ce"))


def test_a_new_head_and_loss_run_through_the_run_script(tiny_dirs, sample_files, tmp_path):
    loss = losses.LossSpec("half_ce", "throw-away: half the cross-entropy",
                           {"torch": "tests.plugins.toy_head:half_cross_entropy"})
    with registered(heads.REGISTRY, toy_head_spec()), \
            registered(losses.REGISTRY, loss):
        out = tmp_path / "run"
        status = run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], out, head="toy", loss="half_ce",
                                     num_train_steps=3, max_eval_samples=10))
        assert status == 0
        record = load_results(out / "results.json")
        assert record["head"] == "toy" and record["timing"]["updates"] == 3
        assert record["metrics"]["fixed"]["f1"] >= 0
        # the loss the head trained with is the registered one: half of cross-entropy's scale
        first = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
        assert 0 < first["loss"] < 0.6 * 5.5      # CE over <=128 positions starts near ln(128) = 4.85


def test_a_head_refuses_a_loss_it_does_not_list(tiny_dirs, sample_files, tmp_path, capsys):
    with registered(heads.REGISTRY, toy_head_spec()):
        status = run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "r", head="basic",
                                     loss="nope"))
    assert status == 2
    assert "unknown --loss 'nope'" in capsys.readouterr().err


def test_an_unknown_head_lists_the_registered_ones(tiny_dirs, sample_files, tmp_path, capsys):
    status = run_squad(base_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "r", head="pointer_net"))
    assert status == 2
    err = capsys.readouterr().err
    assert "unknown --head 'pointer_net'" in err and "Known: conditional, basic" in err


def make_toy_family_dir(out, tokenizer_source):
    import torch

    from tests.plugins.toy_family import ToyGRU
    out.mkdir()
    for name in WORDPIECE_FILES:
        shutil.copy(tokenizer_source / name, out / name)
    config = {"model_type": "toy_gru", "vocab_size": 30522, "hidden_size": 32, "toy_layers": 1,
              "initializer_range": 0.02}
    (out / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    save_file(ToyGRU(SimpleNamespace(**config)).state_dict(), str(out / "model.safetensors"))
    return out


def test_a_new_family_runs_through_the_run_script(tiny_dirs, sample_files, tmp_path):
    family = families.ModelFamily("toy_gru", "Toy GRU", "bert", ("embeddings.",), r"encoder\.\w+_l(\d+)",
                                  {"torch": "tests.plugins.toy_family"}, num_layers_key="toy_layers")
    with registered(families.REGISTRY, family):
        model_dir = make_toy_family_dir(tmp_path / "toy", tiny_dirs["bert"])
        out = tmp_path / "run"
        status = run_squad(base_args(model_dir, sample_files["2.0"], out, head="basic", num_train_steps=3,
                                     max_eval_samples=10, untunable_depth=0))
        assert status == 0
        record = load_results(out / "results.json")
        assert record["model"]["family"] == "toy_gru" and record["timing"]["updates"] == 3


def test_a_family_without_a_module_for_a_backend_is_refused_by_name():
    family = families.ModelFamily("toy_gru", "Toy GRU", "bert", ("embeddings.",), r"encoder\.(\d+)",
                                  {"torch": "tests.plugins.toy_family"})
    with pytest.raises(families.UnknownFamilyError,
                       match="model type 'toy_gru'.*no --backend mxnet implementation.*--backend torch"):
        family.backend_module("mxnet")
