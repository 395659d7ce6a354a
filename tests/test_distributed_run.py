"""The real run script under torchrun and horovodrun: 2 CPU processes, tiny models (Gloo).

Needs Horovod built (scripts/install_horovod.sh, which the test command runs): a missing
horovodrun fails here with the install command, it is never skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bench.core.results import load_results
from tests.test_run_squad import EQUIVALENCE_FLAGS, base_args

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300

pytestmark = pytest.mark.slow       # every test launches the run script in 2 processes


@pytest.fixture(scope="module")
def setup(tiny_model, sample_files):
    """The dropout-free tiny BERT and 40 real SQuAD 2.0 questions."""
    return {"model": tiny_model("bert", dropout=0.0), "data": sample_files["2.0"]}


def launcher_command(launcher: str, nproc: int) -> list[str]:
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(_free_port()), "-m", "bench.run_squad", "--comm_backend", "torchrun"]
    horovodrun = shutil.which("horovodrun")
    if horovodrun is None:
        raise RuntimeError("horovodrun not found: run `bash scripts/install_horovod.sh` (the test command does)")
    return [horovodrun, "-np", str(nproc), "-H", f"localhost:{nproc}", "--gloo", sys.executable, "-m",
            "bench.run_squad", "--comm_backend", "horovod"]


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(launcher: str, nproc: int, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launcher_command(launcher, nproc) + argv, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env, cwd=REPO)
    assert proc.returncode == 0, f"{launcher} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def digests(proc: subprocess.CompletedProcess) -> dict[int, str]:
    found = re.findall(r"rank (\d+) final parameter digest ([0-9a-f]+)", proc.stdout + proc.stderr)
    return {int(rank): digest for rank, digest in found}


def final_weights(out: Path) -> dict[str, np.ndarray]:
    ckpt = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[1]))[-1]
    return load_file(str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("launcher", ["torchrun", "horovod"])
def test_two_process_run_matches_one_process_with_the_same_global_batch(launcher, setup, tmp_path):
    out = tmp_path / "two"
    proc = launch(launcher, 2, base_args(setup["model"], setup["data"], out, batch_size=2, **EQUIVALENCE_FLAGS))
    ranks = digests(proc)
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1], ranks
    record = load_results(out / "results.json")
    assert record["world_size"] == 2 and record["global_batch_size"] == 4
    # Only rank 0 writes: one log file, one set of outputs, no stray files from rank 1.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best_results.json", "checkpoints", "na_prob.json", "nbest_predictions.json", "predictions.json",
         "results.json", "run.log", "train_log.jsonl"])
    assert len(json.loads((out / "predictions.json").read_text())) == 5

    from bench.apps.run import main as run_squad
    single = tmp_path / "one"
    assert run_squad(base_args(setup["model"], setup["data"], single, batch_size=4, **EQUIVALENCE_FLAGS)) == 0
    accumulated = tmp_path / "acc"
    assert run_squad(base_args(setup["model"], setup["data"], accumulated, batch_size=2, num_accumulated=2,
                               **EQUIVALENCE_FLAGS)) == 0
    two, one, acc = final_weights(out), final_weights(single), final_weights(accumulated)
    for name in two:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, rtol=0, err_msg=f"2x2 vs 1x4: {name}")
        np.testing.assert_allclose(two[name], acc[name], atol=1e-5, rtol=0, err_msg=f"2x2 vs 1x2x2: {name}")


@pytest.mark.parametrize("launcher", ["torchrun", "horovod"])
def test_accumulation_under_a_launcher_matches_too(launcher, setup, tmp_path):
    """2 processes x batch 1 x 2 micro-batches: DDP no_sync / Horovod backward_passes_per_step."""
    out = tmp_path / "two_acc"
    proc = launch(launcher, 2, base_args(setup["model"], setup["data"], out, batch_size=1, num_accumulated=2,
                                         **EQUIVALENCE_FLAGS))
    ranks = digests(proc)
    assert ranks[0] == ranks[1]
    from bench.apps.run import main as run_squad
    single = tmp_path / "one"
    assert run_squad(base_args(setup["model"], setup["data"], single, batch_size=4, **EQUIVALENCE_FLAGS)) == 0
    a, b = final_weights(out), final_weights(single)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize("launcher", ["torchrun", "horovod"])
def test_a_bad_flag_on_every_rank_ends_the_job_quickly(launcher, setup, tmp_path):
    """A user error raised inside every rank (missing dev file) stops the launcher non-zero."""
    argv = base_args(setup["model"], setup["data"], tmp_path / "out", num_train_steps=2)
    argv[argv.index("--dev_file") + 1] = str(tmp_path / "missing.json")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launcher_command(launcher, 2) + argv, capture_output=True, text=True, timeout=120,
                          env=env, cwd=REPO)
    assert proc.returncode != 0
    assert "missing.json" in proc.stdout + proc.stderr
