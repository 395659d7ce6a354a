"""``--backend mxnet`` end to end through the real CLI, on tiny models (CPU, offline), and against torch.

The same flags as ``tests/test_run_squad.py`` (its ``base_args``), plus ``--backend mxnet``:
every family trains and evaluates, a tiny model learns 30 real questions, the first
updates equal the torch backend's from the same weights, an interrupted run resumes to the
same parameters, checkpoints evaluate in either backend, and what the backend cannot do is
refused with a message naming the flag.

Needs the MXNet extra (``bash scripts/install_mxnet.sh``) next to torch. Without it the
module is skipped, unless SQUAD_BENCH_REQUIRE_MXNET=1 (CI) turns the skip into a failure
(``tests.conftest.import_mxnet_or_skip``)::

    OMP_NUM_THREADS=1 SQUAD_BENCH_REQUIRE_MXNET=1 python -m pytest tests/test_mxnet_run.py
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_mxnet_or_skip

mx, _ = import_mxnet_or_skip()
torch = pytest.importorskip("torch")

from safetensors.numpy import load_file, save_file  # noqa: E402

from bench.core.flags import config_from_args  # noqa: E402
from bench.backends.mxnet import run as mxnet_run  # noqa: E402
from bench.backends.mxnet import session as runner  # noqa: E402
from bench.run import driver  # noqa: E402
from bench.backends.mxnet.convert import encoder_config_from_hf, read_hf_config  # noqa: E402
from bench.backends.mxnet.heads import build_qa_model, load_torch_state, torch_state_from_gluon  # noqa: E402
from bench.backends.mxnet.optim import (TorchAdamW, clip_coefficient, global_grad_norm,  # noqa: E402
                                       parameter_rules)
from bench.apps.report import build_report, collect_runs  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from bench.apps.run import main as run_squad  # noqa: E402
from tests.squad_samples import write_sample  # noqa: E402
from tests.test_run_squad import FAMILY_MODEL_NAMES, LEARNING_FLAGS, OUTPUT_FILES, base_args  # noqa: E402
from tests.tiny_models import TINY_FAMILIES, make_tiny_model_dir  # noqa: E402

MX = {"backend": "mxnet"}


@pytest.fixture(scope="module")
def model_dirs(tiny_dirs, tiny_model):
    """One tiny model per family (dropout 0.1), plus dropout-free BERT and ELECTRA for the parity tests."""
    return {**tiny_dirs, **{f"{family}0": tiny_model(family, dropout=0.0) for family in ("bert", "electra")}}


def weights(run_dir: Path, update: int) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "checkpoints" / f"update_{update}" / "model.safetensors"))


def train_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def eval_only(argv: list[str]) -> list[str]:
    return [a for a in argv if a != "--do_train"]


# ---------------------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_trains_and_evaluates(family, model_dirs, sample_files, tmp_path):
    out = tmp_path / "run"
    head = "basic" if family in ("mobilebert", "distilbert") else "conditional"
    status = run_squad(base_args(model_dirs[family], sample_files["2.0"], out, model_name=FAMILY_MODEL_NAMES[family],
                                 num_train_steps=3, head=head, max_eval_samples=15, **MX))
    assert status == 0
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    record = load_results(out / "results.json")
    assert record["backend"] == "mxnet" and record["model"]["family"] == family
    assert record["head"] == head and record["dtype"] == "float32" and record["world_size"] == 1
    assert record["global_batch_size"] == 4 and record["hyperparameters"]["backend"] == "mxnet"
    assert record["timing"]["updates"] == 3 and record["timing"]["train_samples_per_second"] > 0
    assert record["data"]["num_eval_questions"] == 15
    assert set(record["metrics"]["tuned"]) == {"exact", "exact_thresh", "f1", "f1_thresh"}
    assert record["versions"]["mxnet"] == "1.9.1" and record["versions"]["gluonnlp"] == "0.10.0"
    # Training graphs ran our CPU kernels (bench.backends.mxnet.cpu_kernels); they must build here.
    assert record["versions"]["cpu_kernels"].startswith("mxnet-kernels-")
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 15 and set(json.loads((out / "na_prob.json").read_text())) == set(predictions)
    assert [line["update"] for line in train_log(out)] == [1, 2, 3]
    [ckpt] = (out / "checkpoints").iterdir()
    assert json.loads((ckpt / "meta.json").read_text())["backend"] == "mxnet"
    # Saved in the torch backend's names: the torch QAModel's keys exactly.
    assert set(weights(out, 3)) == set(_torch_qa_state(model_dirs[family], head))


def _torch_qa_state(folder: Path, head: str) -> dict:
    from bench.backends.torch import modeling

    model = modeling.build_qa_model(modeling.resolve_model_source("unused", str(folder)), head=head)
    return model.state_dict()


@pytest.mark.slow
def test_tiny_model_learns_the_questions_it_trained_on(model_dirs, squad_dir, tmp_path):
    """test_run_squad's learning check with the same flags: 30 real questions fitted to EM >= 90."""
    data = write_sample(squad_dir, tmp_path / "train.json", num_questions=30, version="2.0")
    out = tmp_path / "run"
    status = run_squad(base_args(model_dirs["bert"], data, out, **LEARNING_FLAGS, **MX))
    assert status == 0
    record = load_results(out / "results.json")
    assert record["metrics"]["fixed"]["exact"] >= 90.0, record["metrics"]


# ---------------------------------------------------------------------------------------- parity
# Dropout off, Adam's eps large (see test_run_squad.EQUIVALENCE_FLAGS: with eps 1e-6 a near-zero
# gradient's update is +-lr whatever its rounding noise), and every optimisation rule switched on:
# clipping, layer-wise decay, a frozen layer, accumulation, warm-up (update 1 at LR 0, then 1, 0.5),
# weight decay. The whole (40-question) dev file is evaluated: the report skips subset evaluations.
PARITY_FLAGS = dict(num_train_steps=3, save_interval=1, classifier_dropout=0.0, adam_epsilon=1e-2,
                    max_grad_norm=1.0, layerwise_decay=0.8, untunable_depth=1, wd=0.01, warmup_steps=1,
                    batch_size=2, num_accumulated=2)


def _initial_weights(folder: Path, head: str, path: Path) -> Path:
    """The tiny backbone with a fresh head, in torch names: both backends start from this file."""
    config = encoder_config_from_hf(read_hf_config(folder))
    model = build_qa_model(config, head=head)
    state = torch_state_from_gluon(model)
    state.update({f"backbone.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()
                  if f"backbone.{k}" in state})
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("family,head", [("bert0", "conditional"), ("electra0", "basic")])
def test_first_updates_match_the_torch_backend(family, head, model_dirs, sample_files, tmp_path):
    init = _initial_weights(model_dirs[family], head, tmp_path / "init.safetensors")
    runs = {}
    for backend in ("torch", "mxnet"):
        runs[backend] = tmp_path / backend
        assert run_squad(base_args(model_dirs[family], sample_files["2.0"], runs[backend], head=head,
                                   param_checkpoint=init, backend=backend, **PARITY_FLAGS)) == 0
    logs = {backend: train_log(path) for backend, path in runs.items()}
    assert abs(logs["torch"][0]["loss"] - logs["mxnet"][0]["loss"]) <= 1e-4
    assert abs(logs["torch"][0]["grad_norm"] - logs["mxnet"][0]["grad_norm"]) <= 1e-3
    assert [line["lr"] for line in logs["torch"]] == pytest.approx([line["lr"] for line in logs["mxnet"]])
    start = load_file(str(init))
    for update in (1, 2, 3):
        a, b = weights(runs["torch"], update), weights(runs["mxnet"], update)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=0, err_msg=f"update {update}: {name}")
    final = weights(runs["mxnet"], 3)
    assert max(float(np.abs(final[k] - start[k]).max()) for k in start) > 1e-3, "nothing moved: proves nothing"
    frozen = "backbone.embeddings.word_embeddings.weight"      # --untunable_depth 1 freezes the embeddings
    assert np.array_equal(final[frozen], start[frozen])
    _cross_evaluate(runs, head, model_dirs[family], sample_files["2.0"], tmp_path)


def _cross_evaluate(runs: dict, head: str, folder: Path, data: Path, tmp_path: Path) -> None:
    """A checkpoint of one backend, evaluated by the other, gives the predictions its own backend gave."""
    writer, reader = ("mxnet", "torch") if head == "conditional" else ("torch", "mxnet")
    out = tmp_path / f"{reader}_reads_{writer}"
    ckpt = runs[writer] / "checkpoints" / "update_3" / "model.safetensors"
    assert run_squad(eval_only(base_args(folder, data, out, head=head, param_checkpoint=ckpt, backend=reader))) == 0
    assert load_results(out / "results.json")["versions"]["cpu_kernels"] == "not used"    # evaluation builds none
    assert json.loads((out / "predictions.json").read_text()) == \
        json.loads((runs[writer] / "predictions.json").read_text())
    expected = json.loads((runs[writer] / "na_prob.json").read_text())
    got = json.loads((out / "na_prob.json").read_text())
    assert got == pytest.approx(expected, abs=1e-4)
    # Both runs in one report: the framework-parity table gets a row.
    runs_found, skipped = collect_runs([runs["torch"], runs["mxnet"]])
    markdown, _ = build_report(runs_found, skipped, [], tmp_path / "report")
    parity = markdown.split("## Framework parity (torch vs mxnet)")[1].split("\n## ")[0]
    assert f"| {head} · float32 |" in parity, parity


def test_optimizer_rules_match_the_torch_backend(model_dirs):
    """Layer multipliers, no-decay and frozen sets, per torch name, equal bench.backends.torch.optim's."""
    from bench.backends.torch import optim as torch_optim

    for family in TINY_FAMILIES:
        torch_model = _torch_model(model_dirs[family])
        config = encoder_config_from_hf(read_hf_config(model_dirs[family]))
        rules = parameter_rules(build_qa_model(config), layerwise_decay=0.8, untunable_depth=1)
        by_torch_name = {rule.torch_name: rule for rule in rules.values()}
        assert set(by_torch_name) == {name for name, _ in torch_model.named_parameters()}, family
        multipliers = torch_optim.lr_multipliers(torch_model, 0.8)
        assert {n: r.lr_mult for n, r in by_torch_name.items()} == pytest.approx(multipliers), family
        assert {n for n, r in by_torch_name.items() if not r.decays} == \
            torch_optim.no_decay_parameter_names(torch_model), family
        assert {n for n, r in by_torch_name.items() if r.frozen} == \
            torch_optim.frozen_parameter_names(torch_model, 1), family


def _torch_model(folder: Path):
    from bench.backends.torch import modeling

    return modeling.build_qa_model(modeling.resolve_model_source("unused", str(folder)))


def test_torch_adamw_equals_torch_optim_adamw():
    """Five steps with weight decay, an LR multiplier, a no-decay tensor and clipping: float32 rounding apart."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) * scale for w in start] for scale in (1e-3, 1, 5, 1e-2, 2)]
    reference = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in start]
    optimizer = torch.optim.AdamW([{"params": [reference[0]], "lr": 1e-2 * 0.5, "weight_decay": 0.1},
                                   {"params": [reference[1]], "lr": 1e-2, "weight_decay": 0.0}],
                                  betas=(0.9, 0.98), eps=1e-6, foreach=True)
    params = []
    for i, w in enumerate(start):
        param = mx.gluon.Parameter(f"w{i}", shape=w.shape)
        param.initialize()
        param.set_data(mx.nd.array(w))
        params.append(param)
    params[0].lr_mult, params[1].wd_mult = 0.5, 0.0
    trainer = mx.gluon.Trainer(params, TorchAdamW(beta1=0.9, beta2=0.98, epsilon=1e-6, learning_rate=1e-2, wd=0.1),
                               kvstore=None)
    for step_grads in grads:
        for tensor, g in zip(reference, step_grads):
            tensor.grad = torch.from_numpy(g.copy())
        torch_norm = float(torch.nn.utils.clip_grad_norm_(reference, 1.0))
        optimizer.step()
        for param, g in zip(params, step_grads):
            param.grad()[:] = mx.nd.array(g)
            param.data()._fresh_grad = True     # as backward() marks it
        norm = global_grad_norm(params)
        assert norm == pytest.approx(torch_norm, rel=1e-6)
        trainer.update(1.0 / clip_coefficient(norm, 1.0))
    for param, tensor, w in zip(params, reference, start):
        moved = np.abs(tensor.detach().numpy() - w).max()
        assert moved > 1e-2
        np.testing.assert_allclose(param.data().asnumpy(), tensor.detach().numpy(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_parameters(model_dirs, sample_files, tmp_path, monkeypatch, caplog):
    """With dropout on. The straight run also times one trial update first (the CPU-duration warning),
    which must be undone: equality then proves both the resume and the undo."""
    caplog.set_level(logging.INFO)      # pytest's root logger drops INFO, and run.log with it
    common = dict(num_train_steps=6, save_interval=2, max_saved_ckpt=2, **MX)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    monkeypatch.setattr(driver, "CPU_WARNING_WINDOWS", 0)
    assert run_squad(base_args(model_dirs["bert"], sample_files["2.0"], straight, **common)) == 0
    assert "one update on the longest windows took" in (straight / "run.log").read_text()
    monkeypatch.setattr(driver, "CPU_WARNING_WINDOWS", 10 ** 9)
    config = config_from_args(base_args(model_dirs["bert"], sample_files["2.0"], resumed, **common))
    assert mxnet_run(config, stop_after=3) is None          # interrupted after update 3, last checkpoint at 2
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["update_2"]
    assert run_squad(base_args(model_dirs["bert"], sample_files["2.0"], resumed, resume=True, **common)) == 0
    a, b = weights(straight, 6), weights(resumed, 6)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, rtol=0, err_msg=name)
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["update_4", "update_6"]
    assert "resumed from" in (resumed / "run.log").read_text()


def test_resume_refuses_a_torch_checkpoint(model_dirs, sample_files, tmp_path, capsys):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "update_1"
    ckpt.mkdir(parents=True)
    save_file({"x": np.zeros(1, np.float32)}, str(ckpt / "model.safetensors"))
    (ckpt / "trainer_state.pt").write_bytes(b"")
    (ckpt / "meta.json").write_text(json.dumps({"update": 1, "epoch": 0, "update_in_epoch": 1, "complete": True,
                                                "trainer_state": "trainer_state.pt", "backend": "torch"}))
    assert run_squad(base_args(model_dirs["bert"], sample_files["2.0"], out, num_train_steps=2, resume=True,
                               **MX)) == 2
    err = capsys.readouterr().err
    assert "written by --backend torch" in err and "--param_checkpoint" in err


# ---------------------------------------------------------------------------------------- loading
def test_backbone_path_replaces_the_pretrained_weights(model_dirs, sample_files, tmp_path):
    """--backbone_path takes a QA checkpoint's ``backbone.*`` tensors (or bare HF names), as the torch backend."""
    other = make_tiny_model_dir("bert", tmp_path / "other", seed=7)
    backbone = {f"backbone.{name}": value for name, value in load_file(str(other / "model.safetensors")).items()
                if not name.startswith("pooler.")}        # the torch backbone has no pooler either
    save_file(backbone, str(tmp_path / "backbone.safetensors"))
    config = config_from_args(base_args(model_dirs["bert"], sample_files["2.0"], tmp_path / "out",
                                        backbone_path=tmp_path / "backbone.safetensors", **MX))
    _, _, model = runner.load_model(config, mx.cpu())
    state = torch_state_from_gluon(model)
    for name, value in backbone.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)


def test_checkpoint_of_another_model_is_refused(model_dirs, sample_files, tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"backbone.pooler.dense.weight": np.zeros((2, 2), np.float32)}, str(wrong))
    argv = eval_only(base_args(model_dirs["bert"], sample_files["2.0"], tmp_path / "out", param_checkpoint=wrong,
                               **MX))
    assert run_squad(argv) == 2
    assert "wrong.safetensors" in capsys.readouterr().err


def test_offline_hub_failure_names_the_hub_id_and_model_path(monkeypatch, sample_files, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_squad(["--do_eval", "--backend", "mxnet", "--model_name", "google_albert_xxlarge_v2", "--dev_file",
                      str(sample_files["2.0"]), "--output_dir", str(tmp_path / "out"), "--gpus", "-1"]) == 2
    err = capsys.readouterr().err
    assert "albert/albert-xxlarge-v2" in err and "--model_path" in err


# ---------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("flags,message", [
    (dict(comm_backend="horovod"), r"--comm_backend horovod but this process was not started by its launcher.*"
                                   r"horovodrun -np N"),
    (dict(comm_backend="torchrun"), r"--comm_backend torchrun: --backend mxnet runs several processes only under "
                                    r"horovodrun.*cannot exchange MXNet gradients"),
    (dict(gpus="0,1"), r"--gpus 0,1 asks for several GPUs: .*horovodrun -np N .*--backend mxnet"),
    (dict(dtype="float16", gpus="-1"), r"--dtype float16 with --backend mxnet needs a GPU"),
    (dict(dtype="bfloat16"), r"--dtype bfloat16 is not supported by --backend mxnet"),
])
def test_unsupported_flags_are_refused_naming_the_flag(flags, message, model_dirs, sample_files, tmp_path, capsys):
    import re

    out = tmp_path / "run"
    assert run_squad(base_args(model_dirs["bert"], sample_files["2.0"], out, **{**MX, **flags})) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (out / "checkpoints").exists()


def test_int8_evaluation_is_refused(model_dirs, sample_files, tmp_path, capsys):
    argv = eval_only(base_args(model_dirs["bert"], sample_files["2.0"], tmp_path / "run", dtype="int8", **MX))
    assert run_squad(argv) == 2
    assert "--dtype int8 is not supported by --backend mxnet" in capsys.readouterr().err


def test_gluon_state_round_trips_through_a_checkpoint_file(model_dirs, tmp_path):
    """load_torch_state(torch_state_from_gluon(m)) is the identity, through safetensors on disk."""
    config = encoder_config_from_hf(read_hf_config(model_dirs["albert"]))
    first, second = build_qa_model(config), build_qa_model(config)
    save_file(torch_state_from_gluon(first), str(tmp_path / "m.safetensors"))
    load_torch_state(second, load_file(str(tmp_path / "m.safetensors")))
    a, b = torch_state_from_gluon(first), torch_state_from_gluon(second)
    assert all(np.array_equal(a[name], b[name]) for name in a)
