"""``squad-bench speed``: the report machinery, the pure helpers, the Hugging Face worker (when its
environment exists) and the CPU training fast path (fast dropout, eager attention).

Correctness only: no test here asserts a timing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.apps import speed
from bench.apps.speed.figures import compare_frameworks
from bench.apps.speed.orchestrate import parse_figures
from bench.apps.speed.processes import HF_WORKER, child_environment
from bench.apps.speed.tasks_gpu import task_gpu
from bench.apps.speed.tasks_inference import task_inference
from bench.apps.speed.tasks_model import task_prepare_model
from bench.backends.torch.cpu_training import CPU_TRAINING_ATTENTION, FastDropout, fast_dropout
from bench.backends.torch.modeling import build_qa_model, load_tokenizer, resolve_model_source
from bench.run.registry import unavailable_reason
from tests.tiny_models import encode_qa_batch, make_tiny_model_dir

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One reduced quick run without baselines (no virtual environment), shared by the tests below."""
    out = tmp_path_factory.mktemp("speed")
    status = speed.main(["--quick", "--skip_baselines", "--max_questions", "40", "--out", str(out)])
    assert status == 0
    return out


def test_quick_run_writes_every_figure(quick_report):
    report = json.loads((quick_report / "speed.json").read_text())
    assert report["schema"] == speed.SCHEMA and report["mode"] == "quick" and report["baselines_skipped"]
    assert set(speed.FIGURES) <= set(report["figures"])
    figures = report["figures"]
    assert set(figures["inference"]["ours"]["runs"]) == {"default", "same", "int8"}
    assert figures["inference"]["hf_pipeline"] == {"skipped": "--skip_baselines"}
    assert figures["inference"]["speedup_default"] is None
    assert {"float32 dynamic", "float32 padded"} <= set(figures["training"]["ours"]["runs"])
    assert set(figures["eval_full"]["stages"]) == {"features", "forward", "postprocess", "scoring"}
    assert figures["postprocess"]["ours"]["same_logits"]["questions"] == 40
    assert figures["features"]["cache_speedup"] > 0
    assert any(key.startswith("eval_full/") for key in figures["memory"])
    assert report["machine"]["cpu_count"] and report["versions"]["torch"]
    cpu = report["machine"]["cpu"]                       # bench.run.cpu's abilities
    assert {"model", "flags_known", "avx2", "avx512", "avx512_bf16", "amx", "native_bf16", "cores_available"} <= set(cpu)
    assert report["machine"]["native_bf16"] == cpu["native_bf16"]
    low = {"bfloat16 dynamic", "bfloat16 padded"}
    if cpu["native_bf16"]:
        assert low <= set(figures["training"]["ours"]["runs"]) and not figures["training"]["skipped_runs"]
    else:
        assert not low & set(figures["training"]["ours"]["runs"]) and set(figures["training"]["skipped_runs"]) == low
    peak = figures["cpu_peak"]                           # the GEMM probe, its own process
    assert peak["size"] == 2048 and peak["peaks"]["float32"]["flops_per_s"] > 0
    assert ("bfloat16" in peak["peaks"]) == cpu["native_bf16"]
    assert set(peak["fractions"]["training"]) == set(figures["training"]["ours"]["runs"])
    assert all(0 < share for share in peak["fractions"]["training"].values())
    assert "figure 3 forward passes" in peak["fractions"]["inference"]
    assert "cpu_peak" in figures["memory"]
    for run in figures["inference"]["ours"]["runs"].values():
        assert run["questions_per_s"] > 0 and 0 <= run["scores"]["f1"] <= 100


def test_quick_run_times_both_backends_on_the_same_windows(quick_report):
    """The frameworks figure: torch and MXNet through the backend contract, and their ratios; without MXNet
    (and not required) it says how to install it."""
    figure = json.loads((quick_report / "speed.json").read_text())["figures"]["frameworks"]
    if unavailable_reason("mxnet") and os.environ.get("SQUAD_BENCH_REQUIRE_MXNET") != "1":
        assert "install_mxnet.sh" in figure["skipped"]
        return
    assert "skipped" not in figure
    for backend in ("torch", "mxnet"):
        run = figure[backend]
        assert run["training"]["samples"] == 3 * 8 and run["training"]["samples_per_s"] > 0
        assert run["evaluation"]["windows"] == 32 and run["evaluation"]["windows_per_s"] > 0
    assert "mxnet" in figure["mxnet"]["device"]
    assert figure["ratios"]["training"] == round(figure["mxnet"]["training"]["samples_per_s"]
                                                 / figure["torch"]["training"]["samples_per_s"], 3)
    assert "frameworks/mxnet" in json.loads((quick_report / "speed.json").read_text())["figures"]["memory"]
    assert "## 6. MXNet backend vs torch backend" in (quick_report / "speed.md").read_text()


def test_quick_run_markdown_has_every_section(quick_report):
    markdown = (quick_report / "speed.md").read_text()
    for title in ("## 1. Inference", "## 2. Training", "## 3. Evaluation", "## 4. Post-processing",
                  "## 5. Feature building", "## 7. Peak memory", "## GPU", "## The CPU's own limit: GEMM peak"):
        assert title in markdown
    assert "Baseline skipped" in markdown


def test_resume_reuses_the_processes_an_interrupted_run_finished(tmp_path, capsys):
    """--resume keeps the work folder and reuses a result only for exactly the same request."""
    args = ["--quick", "--skip_baselines", "--max_questions", "20", "--figures", "eval_full", "--out", str(tmp_path)]
    assert speed.main(args) == 0
    first = json.loads((tmp_path / "speed.json").read_text())
    capsys.readouterr()
    assert speed.main(args + ["--resume"]) == 0
    assert "eval_full: reusing" in capsys.readouterr().err
    again = json.loads((tmp_path / "speed.json").read_text())
    assert again["figures"]["eval_full"] == first["figures"]["eval_full"]
    assert speed.main(args[:3] + ["10"] + args[4:] + ["--resume"]) == 0   # another request: measured anew
    assert "eval_full: reusing" not in capsys.readouterr().err
    assert json.loads((tmp_path / "speed.json").read_text())["figures"]["eval_full"]["questions"] == 10


def test_unknown_figure_is_refused():
    with pytest.raises(speed.SpeedError, match="unknown"):
        parse_figures("inference,nope")
    with pytest.raises(speed.SpeedError, match="needs inference"):
        parse_figures("postprocess")


# ------------------------------------------------------------------------------------ pure helpers
def test_answer_agreement_counts_identical_and_normalized_answers():
    ours = {"q1": "the Eiffel Tower", "q2": "1889", "q3": "Paris", "q4": "only ours"}
    theirs = {"q1": "Eiffel Tower", "q2": "1889", "q3": "paris.", "q5": "only theirs"}
    assert speed.answer_agreement(ours, theirs) == {"questions": 3, "exact": round(1 / 3, 4), "normalized": 1.0}
    assert speed.answer_agreement({}, theirs) == {"questions": 0, "exact": None, "normalized": None}


def test_compare_frameworks_takes_each_backends_fastest_repeat():
    def result(backend, samples_per_s, windows_per_s):
        return {"backend": backend, "device": backend, "batch_size": 8, "eval_batch_size": 16, "max_seq_length": 384,
                "training": {"samples_per_s": samples_per_s}, "evaluation": {"windows_per_s": windows_per_s},
                "peak_memory": {"kind": "rss", "bytes": samples_per_s}}
    figure = compare_frameworks({"torch": [result("torch", 4.0, 10.0), result("torch", 5.0, 9.0)],
                                 "mxnet": [result("mxnet", 4.0, 9.0), result("mxnet", 3.0, 8.0)]})
    assert figure["ratios"] == {"training": 0.8, "evaluation": 0.9}
    assert figure["torch"]["all_repeats"] == [[4.0, 10.0], [5.0, 9.0]]
    assert figure["mxnet"]["peak_memory"]["bytes"] == 4.0


def test_mfu_uses_six_flops_per_parameter_per_token():
    assert speed.mfu(100_000_000, 1_000.0, 312e12) == round(6 * 1e8 * 1e3 / 312e12, 4)
    assert speed.mfu(100_000_000, 1_000.0, None) is None
    assert speed.peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert speed.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert speed.peak_flops("some CPU") is None


def test_existing_hf_env_is_reused_without_pip(tmp_path):
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / "squad-bench-packages.txt").write_text("\n".join(speed.HF_ENV_PACKAGES))
    assert speed.ensure_hf_env(env) == env / "bin" / "python"


def test_gpu_figure_code_path_runs_on_cpu_with_a_tiny_electra(tmp_path, squad_dir):
    """The GPU task is device-agnostic; a 2-layer ELECTRA exercises it here (no MFU without a GPU)."""
    tiny = {"embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64}
    data = {"train": str(squad_dir / "train-v2.0.first10.json.gz"), "dev20": str(squad_dir / "dev-v2.0.rebuilt.json.gz")}
    result = task_gpu({"data": data, "work": str(tmp_path), "electra_config": tiny, "batch_size": 4,
                             "warmup": 1, "steps": 2, "dtypes": ["float32"], "eval_questions": 20,
                             "window": {"max_seq_length": 128, "doc_stride": 32}})
    run = result["runs"]["float32"]
    assert run["steps"] == 2 and run["samples_per_s"] > 0 and run["mfu"] is None
    assert result["eval"]["windows"] >= 20


# ------------------------------------------------------------------------------------ Hugging Face worker
HF_PYTHON = speed.DEFAULT_HF_ENV / "bin" / "python"


def test_hf_worker_imports_nothing_from_bench():
    """It runs by path under the 4.57.6 environment's python, where bench is not installed; and
    torch/transformers load inside its functions only (bench imports it with them blocked)."""
    import ast

    tree = ast.parse(HF_WORKER.read_text(encoding="utf-8"))
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert names and not [n for n in names if n.split(".")[0] in ("bench", "tests", "benchmarks")]
    top_level = [alias.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names] + [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [n for n in top_level if n and n.split(".")[0] in ("torch", "transformers")]


@pytest.fixture(scope="module")
def hf_env():
    """The transformers 4.57.6 environment the benchmark uses, built here when missing (about a
    minute on a fresh machine: torch==2.13.0 from the local wheel + transformers from the registry)."""
    return speed.ensure_hf_env(speed.DEFAULT_HF_ENV)


def test_hf_worker_answers_postprocesses_and_trains(tmp_path, squad_dir, hf_env):
    model_dir = tmp_path / "qa"
    task_prepare_model({"model_path": None, "quick": True, "checkpoint": None, "out_dir": str(model_dir)})
    questions = tmp_path / "questions.json"
    request = {"model_dir": str(model_dir), "data": str(squad_dir / "dev-v1.1.rebuilt.json.gz"), "questions": 3,
               "questions_file": str(questions), "logits_file": str(tmp_path / "logits.npz"), **speed.WINDOW}
    ours = task_inference(request)
    env = child_environment(1)

    def worker(task_request: dict) -> dict:
        path = tmp_path / f"{task_request['task']}.json"
        path.write_text(json.dumps({**task_request, "model_dir": str(model_dir), **speed.WINDOW}))
        result = tmp_path / f"{task_request['task']}.result.json"
        subprocess.run([str(HF_PYTHON), str(HF_WORKER), str(path), str(result)], env=env, check=True,
                       timeout=600)
        return json.loads(result.read_text())

    answers = worker({"task": "pipeline", "questions_file": str(questions),
                      "runs": [{"name": "default", "batch_size": None, "dtype": "float32"}]})
    assert set(answers["runs"]["default"]["answers"]) == set(ours["question_ids"])
    post = worker({"task": "postprocess", "questions_file": str(questions), "logits_file": request["logits_file"]})
    assert post["windows"] == ours["runs"]["same"]["windows"]
    features = tmp_path / "padded.npz"
    n = 6
    np.savez(features, input_ids=np.full((n, 16), 1000, np.int32), token_type_ids=np.zeros((n, 16), np.int32),
             attention_mask=np.ones((n, 16), np.int32), start_positions=np.ones(n, np.int32),
             end_positions=np.full(n, 2, np.int32))
    trained = worker({"task": "train", "features_file": str(features), "batch_size": 2, "warmup_steps": 1,
                      "steps": 2, "runs": [{"name": "float32", "bf16": False}]})
    assert trained["runs"]["float32"]["steps"] == 2 and trained["runs"]["float32"]["real_tokens_per_s"] > 0


# ------------------------------------------------------------------------------------ CPU training fast path
def test_fast_dropout_drops_p_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    out = fast_dropout(x, 0.1)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.9))
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    torch.manual_seed(1)
    first = fast_dropout(x[:1001], 0.3)
    torch.manual_seed(1)
    assert torch.equal(first, fast_dropout(x[:1001], 0.3))          # the default generator decides
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_every_dropout_of_the_model_is_fast_dropout(minilm_dir, tmp_path):
    model_dir = make_tiny_model_dir("bert", tmp_path / "bert")
    model = build_qa_model(resolve_model_source("bert", str(model_dir)), head="conditional")
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(isinstance(m, FastDropout) for m in dropouts)


@pytest.mark.parametrize("family", ["bert", "electra", "distilbert"])
def test_cpu_training_attention_matches_sdpa_without_dropout(family, minilm_dir, tmp_path):
    """Same loss and gradients as the SDPA path when nothing is dropped; the config is restored."""
    model_dir = make_tiny_model_dir(family, tmp_path / family, dropout=0.0)
    source = resolve_model_source("bert", str(model_dir))
    model, tokenizer = build_qa_model(source, head="basic", dropout=0.0), load_tokenizer(source)
    batch = encode_qa_batch(tokenizer, ["Who wrote it?", "When was the tower finished?"],
                            ["Tolstoy wrote it in Yasnaya Polyana.", "It was finished in 1889, in Paris."])
    first_context = batch["candidate_mask"][:, 1:].int().argmax(-1) + 1
    labels = {"start_positions": first_context, "end_positions": first_context + 1}

    def loss_and_grads(fast: bool):
        model.cpu_training_attention = fast
        model.zero_grad(set_to_none=True)
        loss = model(**batch, **labels)["loss"].sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    fast_loss, fast_grads = loss_and_grads(True)
    assert model.backbone.config._attn_implementation == "sdpa"
    sdpa_loss, sdpa_grads = loss_and_grads(False)
    torch.testing.assert_close(fast_loss, sdpa_loss, atol=1e-5, rtol=1e-5)
    for name, grad in sdpa_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert CPU_TRAINING_ATTENTION != "sdpa"


def test_predict_windows_accepts_batches_wider_than_every_window(bert_tokenizer, minilm_dir, tmp_path, squad_dir):
    """round_to may pad a batch past the longest window: those columns are dropped, results unchanged."""
    from bench.core.data import load_squad
    from bench.core.features import FeatureParams, build_features
    from bench.run.pipeline import subset
    from bench.backends.torch.inference import predict_windows
    from bench.run.helpers import EvalBatching

    model_dir = make_tiny_model_dir("bert", tmp_path / "bert")
    model = build_qa_model(resolve_model_source("bert", str(model_dir)), head="basic").eval()
    dataset = subset(load_squad(squad_dir / "xquad.en.json.gz"), 6, seed=0)
    features = build_features(dataset.examples, bert_tokenizer, FeatureParams(max_seq_length=384), is_training=False)
    rows = np.arange(len(features))
    plain = predict_windows(model, features, rows, EvalBatching(head="basic", batch_size=4, pad_id=0, round_to=1),
                            device=torch.device("cpu"))
    wide = predict_windows(model, features, rows, EvalBatching(head="basic", batch_size=4, pad_id=0, round_to=256),
                           device=torch.device("cpu"))
    inside = np.arange(plain["start_logits"].shape[1])[None, :] < features.lengths[:, None]   # never read past it
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(wide[name][inside], plain[name][inside], atol=1e-4)


def test_cli_dispatches_speed_help():
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "speed", "--help"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0 and "--skip_baselines" in proc.stdout
