"""Bad model inputs end a run with one line naming the flag, file or folder (exit status 2), never a
traceback: a --param_checkpoint that is missing or not safetensors, a --max_seq_length longer than the
model's position embeddings, a config.json of an unknown model type (with or without ``auto_map``
custom code), a sharded-weights index with no entries or missing shards, a folder of pickled weights.

Every case runs the real CLI (``bench.apps.run.main``) on the tiny models of ``tests.tiny_models``,
on both backends where both read the input (MXNet cases skip when the MXNet extra is not usable).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from bench.apps.run import main as run_squad
from bench.run import model_source
from bench.run.model_source import ModelSourceError, resolve_model_folder
from tests.test_run_squad import FAMILY_MODEL_NAMES, base_args

REPO = Path(__file__).resolve().parent.parent
INDEX = "model.safetensors.index.json"


def _mxnet_usable() -> bool:
    from bench.backends.mxnet import compat
    try:
        compat.import_mxnet()
    except compat.MXNetUnavailable:
        if os.environ.get("SQUAD_BENCH_REQUIRE_MXNET") == "1":
            raise
        return False
    return True


@pytest.fixture(params=["torch", "mxnet"])
def backend(request) -> str:
    if request.param == "mxnet" and not _mxnet_usable():
        pytest.skip("MXNet extra not usable here")
    return request.param


def cli_args(model_dir: Path, data: Path, out: Path, backend: str = "torch", **flags) -> list[str]:
    """Evaluation only (every failure here comes before features): the tiny defaults of base_args."""
    argv = base_args(model_dir, data, out, backend=backend, max_eval_samples=5, **flags)
    return [a for a in argv if a != "--do_train"]


def error_line(capsys) -> str:
    """The one line the run printed to stderr (and nothing else there)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("run_squad: error: "), lines
    return lines[0]


def copy_model(source: Path, dest: Path, **config_changes) -> Path:
    """A writable copy of a tiny model folder, with config.json keys changed (None deletes one)."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


# ------------------------------------------------------------------------- 1. --param_checkpoint
@pytest.mark.parametrize("kind", ["missing", "pickled", "folder without weights"])
def test_bad_param_checkpoint_is_one_line_naming_the_flag(kind, backend, tiny_dirs, sample_files, tmp_path,
                                                          capsys):
    target = {"missing": tmp_path / "nowhere.safetensors", "pickled": tmp_path / "model.bin",
              "folder without weights": tmp_path / "update_3"}[kind]
    if kind == "pickled":
        target.write_bytes(b"\x80\x04not really a pickle")
    elif kind == "folder without weights":
        target.mkdir()
    status = run_squad(cli_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "out", backend,
                                param_checkpoint=target))
    line = error_line(capsys)
    assert status == 2
    assert "--param_checkpoint" in line and target.name in line, line
    if kind == "pickled":
        assert ".safetensors" in line, line


def test_param_checkpoint_of_another_model_is_one_line(tiny_dirs, sample_files, tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"backbone.pooler.dense.weight": np.zeros((2, 2), np.float32)}, str(wrong))
    status = run_squad(cli_args(tiny_dirs["bert"], sample_files["2.0"], tmp_path / "out",
                                param_checkpoint=wrong))
    line = error_line(capsys)
    assert status == 2
    assert "--param_checkpoint" in line and "wrong.safetensors" in line and "does not match" in line, line


# ------------------------------------------------------------------------- 2. --max_seq_length
@pytest.mark.parametrize("family, length, limit", [("bert", 600, 512), ("roberta", 513, 512)])
def test_window_longer_than_the_position_embeddings_is_one_line(family, length, limit, backend, tiny_dirs,
                                                                 sample_files, tmp_path, capsys):
    status = run_squad(cli_args(tiny_dirs[family], sample_files["2.0"], tmp_path / "out", backend,
                                model_name=FAMILY_MODEL_NAMES[family], max_seq_length=length))
    line = error_line(capsys)
    assert status == 2
    assert f"--max_seq_length {length}" in line and str(limit) in line and str(tiny_dirs[family]) in line, line


@pytest.mark.parametrize("family, limit", [("bert", 512), ("roberta", 512), ("distilbert", 512)])
def test_window_limit_is_the_one_transformers_enforces(family, limit, tiny_dirs):
    """model_source.check_window_fits accepts exactly the lengths the transformers model can embed."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModel

    folder = resolve_model_folder("unused", str(tiny_dirs[family]))
    model_source.check_window_fits(folder, limit)
    with pytest.raises(ModelSourceError, match=f"--max_seq_length {limit + 1} "):
        model_source.check_window_fits(folder, limit + 1)
    model = AutoModel.from_pretrained(str(folder.folder), use_safetensors=True).eval()
    ids = torch.full((1, limit), 5, dtype=torch.long)
    with torch.no_grad():
        assert model(input_ids=ids).last_hidden_state.shape[1] == limit
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, limit + 1), 5, dtype=torch.long))


def test_window_check_reads_the_model_padding_offset(tiny_dirs, tmp_path):
    """RoBERTa-style positions start at pad_token_id + 1: a pad id of 3 leaves 514 - 4 = 510 positions."""
    folder = resolve_model_folder("unused", str(copy_model(tiny_dirs["roberta"], tmp_path / "m", pad_token_id=3)))
    model_source.check_window_fits(folder, 510)
    with pytest.raises(ModelSourceError, match="510"):
        model_source.check_window_fits(folder, 511)


# ------------------------------------------------------------------------- 3. unknown model types
def test_auto_map_custom_code_is_refused_in_one_line(backend, tiny_dirs, sample_files, tmp_path, capsys):
    folder = copy_model(tiny_dirs["bert"], tmp_path / "custom", model_type="my_custom_encoder",
                        auto_map={"AutoConfig": "configuration_my.MyConfig", "AutoModel": "modeling_my.MyModel"})
    (folder / "modeling_my.py").write_text("raise SystemExit('custom code ran')\n")
    (folder / "configuration_my.py").write_text("raise SystemExit('custom code ran')\n")
    status = run_squad(cli_args(folder, sample_files["2.0"], tmp_path / "out", backend))
    line = error_line(capsys)
    assert status == 2
    assert str(folder) in line and "my_custom_encoder" in line, line
    assert "custom code" in line and "trust_remote_code" in line, line


def test_auto_map_of_a_known_family_loads_its_own_class_without_custom_code(tiny_dirs, tmp_path):
    pytest.importorskip("torch")
    from bench.backends.torch.modeling import build_qa_model, load_tokenizer

    folder = copy_model(tiny_dirs["bert"], tmp_path / "custom", auto_map={"AutoModel": "modeling_my.MyModel"})
    (folder / "modeling_my.py").write_text("raise SystemExit('custom code ran')\n")
    source = resolve_model_folder("unused", str(folder))
    load_tokenizer(source)
    assert type(build_qa_model(source).backbone).__name__ == "BertModel"


@pytest.mark.parametrize("model_type", ["gpt2", "brand_new_type", None])
def test_unknown_model_type_is_one_line_naming_folder_and_type(model_type, backend, tiny_dirs, sample_files,
                                                               tmp_path, capsys):
    folder = copy_model(tiny_dirs["bert"], tmp_path / "other", model_type=model_type)
    status = run_squad(cli_args(folder, sample_files["2.0"], tmp_path / "out", backend))
    line = error_line(capsys)
    assert status == 2
    assert str(folder) in line and "model_type" in line, line
    if model_type is not None:
        assert repr(model_type) in line and "bert" in line, line     # the known types are listed


def test_unreadable_config_json_is_one_line(tiny_dirs, sample_files, tmp_path, capsys):
    folder = copy_model(tiny_dirs["bert"], tmp_path / "broken")
    (folder / "config.json").write_text("{not json")
    status = run_squad(cli_args(folder, sample_files["2.0"], tmp_path / "out"))
    line = error_line(capsys)
    assert status == 2 and str(folder / "config.json") in line, line


# ------------------------------------------------------------------------- 4. sharded weights index
def _sharded_copy(source: Path, dest: Path, weight_map: dict) -> Path:
    folder = copy_model(source, dest)
    (folder / "model.safetensors").unlink()
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("weight_map, words", [
    ({}, ["no entries"]),
    ({"embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
      "encoder.layer.0.output.dense.weight": "model-00002-of-00002.safetensors"},
     ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
])
def test_broken_weights_index_is_one_line_naming_it(weight_map, words, backend, tiny_dirs, sample_files, tmp_path,
                                                   capsys):
    folder = _sharded_copy(tiny_dirs["bert"], tmp_path / "sharded", weight_map)
    status = run_squad(cli_args(folder, sample_files["2.0"], tmp_path / "out", backend))
    line = error_line(capsys)
    assert status == 2
    assert str(folder / INDEX) in line, line
    for word in words:
        assert word in line, line


# ------------------------------------------------------------------------- 6. safetensors only
def test_pickled_weights_folder_is_refused_saying_safetensors_only(backend, tiny_dirs, sample_files, tmp_path,
                                                                   capsys):
    folder = copy_model(tiny_dirs["bert"], tmp_path / "bin_only")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    status = run_squad(cli_args(folder, sample_files["2.0"], tmp_path / "out", backend))
    line = error_line(capsys)
    assert status == 2
    assert f"--model_path {folder}" in line and "safetensors only" in line, line
    assert "--backend mxnet" not in line, line          # the rule is every backend's, not one backend's


def test_docs_promise_no_pickle_fallback():
    """The docs say what the code does: weights are read from safetensors only, on every backend."""
    from bench.backends.torch import hf_backbone

    for path in (REPO / "docs" / "run-script.md", REPO / "docs" / "mxnet.md", REPO / "README.md"):
        assert "torch.load(weights_only=True)" not in path.read_text(encoding="utf-8"), path
    assert "torch.load" not in hf_backbone.__doc__
    assert "safetensors only" in (REPO / "docs" / "run-script.md").read_text(encoding="utf-8")
