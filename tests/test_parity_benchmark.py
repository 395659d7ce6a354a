"""``benchmarks/framework_parity.py``: its recipe is a valid run configuration on both backends, and its
summary (medians, spreads, the median-F1 gap against the 1.0 goal) is computed as documented."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.core.flags import config_from_dict, config_to_dict
from benchmarks import framework_parity


def test_the_recipe_is_the_float32_demo_recipe_and_valid_on_both_backends(tmp_path):
    flags = framework_parity.recipe_flags(Path("train.json"), Path("dev.json"), Path("minilm"))
    assert (flags["dtype"], flags["epochs"], flags["answer_windows_only"], flags["batch_size"], flags["lr"],
            flags["backbone_dropout"], flags["classifier_dropout"]) == ("float32", 1.0, True, 8, 2e-4, 0.0, 0.0)
    for backend in ("torch", "mxnet"):
        config = config_from_dict({**flags, "backend": backend, "seed": 1, "output_dir": str(tmp_path / backend)})
        assert config.backend == backend and config.model_path == "minilm"


def test_the_committed_recipe_can_be_run_again_with_this_machines_files(tmp_path):
    """--recipe_from: the recipe the committed runs recorded (batches of 16, lr 3e-4, before the demo changed),
    with this machine's data and model folders."""
    committed = Path(__file__).resolve().parent.parent / "reports/runs/parity/parity_results.json"
    flags = framework_parity.recipe_flags(Path("train.json"), Path("dev.json"), Path("minilm"), committed)
    assert (flags["batch_size"], flags["lr"], flags["max_seq_length"]) == (16, 3e-4, 192)
    assert (flags["train_file"], flags["dev_file"], flags["model_path"]) == ("train.json", "dev.json", "minilm")
    config = config_from_dict({**flags, "backend": "mxnet", "seed": 1, "output_dir": str(tmp_path)})
    assert config.batch_size == 16


def _record(seed: int, f1: float, samples_per_s: float = 4.0) -> dict:
    return {"seed": seed, "metrics": {"fixed": {"exact_match": f1 - 14.0, "f1": f1}},
            "timing": {"train_samples_per_second": samples_per_s}}


def test_summary_reports_medians_spreads_and_the_gap():
    torch_side = framework_parity.backend_summary([framework_parity.seed_result(_record(s, f1))
                                                   for s, f1 in ((1, 53.76), (2, 55.61), (3, 55.14))])
    mxnet_side = framework_parity.backend_summary([framework_parity.seed_result(_record(s, f1, 3.0))
                                                   for s, f1 in ((1, 53.75), (2, 54.82), (3, 54.5))])
    assert torch_side["f1"] == {"median": 55.14, "min": 53.76, "max": 55.61, "spread": 1.85}
    assert mxnet_side["train_samples_per_s"] == 3.0
    gap = framework_parity.compare({"torch": torch_side, "mxnet": mxnet_side})
    assert gap == {"median_f1_torch_minus_mxnet": 0.64, "goal": 1.0, "within_goal": True}
    assert framework_parity.compare({"torch": torch_side}) is None
    assert not framework_parity.compare({"torch": torch_side, "mxnet": {**mxnet_side, "f1": {"median": 53.0}}})[
        "within_goal"]


def test_defaults_run_five_seeds_on_both_backends():
    args = framework_parity.parse_args([])
    assert (args.seeds, args.backends, args.out) == ("1,2,3,4,5", "torch,mxnet", "runs/parity")


def test_a_finished_run_is_reused_only_with_the_flags_asked_for(tmp_path, monkeypatch):
    """The committed parity runs were trained in batches of 16 at lr 3e-4: asked for today's recipe, the
    benchmark runs them again instead of passing them off as today's."""
    from benchmarks import cli_runs

    flags = {**framework_parity.recipe_flags(Path("train.json"), Path("dev.json"), Path("minilm")),
             "backend": "torch", "seed": 1, "output_dir": str(tmp_path)}
    recorded = config_to_dict(config_from_dict(flags))
    old_recipe = {**recorded, "batch_size": 16, "lr": 3e-4}
    (tmp_path / "results.json").write_text(json.dumps({"hyperparameters": old_recipe}))
    commands = []
    monkeypatch.setattr(cli_runs, "squad_bench", lambda *argv, benchmark: commands.append(argv) or
                        (tmp_path / "results.json").write_text(json.dumps({"hyperparameters": recorded})))
    assert cli_runs.changed_flags(flags, old_recipe) == [
        "--batch_size 16 -> 8", "--lr 0.0003 -> 0.0002"]
    assert cli_runs.run(flags, benchmark="parity") == {"hyperparameters": recorded} and len(commands) == 1
    assert cli_runs.run(flags, benchmark="parity") == {"hyperparameters": recorded} and len(commands) == 1


def test_summarize_reads_the_kept_runs_and_runs_nothing(tmp_path, monkeypatch):
    """--summarize: parity_results.json from the results.json files already in <out>/<backend>/seed<N>
    (how the committed one is rebuilt after some of its runs are replaced); a missing run is named."""
    from benchmarks import cli_runs

    monkeypatch.setattr(cli_runs, "squad_bench", lambda *argv, benchmark: pytest.fail("--summarize ran a command"))
    for backend, f1s in (("torch", (53.76, 55.61, 55.14)), ("mxnet", (52.89, 54.5, 54.0))):
        for seed, f1 in enumerate(f1s, start=1):
            folder = tmp_path / backend / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(_record(seed, f1)))
    monkeypatch.setattr(framework_parity, "minilm_model_dir", lambda: Path("minilm"))
    monkeypatch.setattr(framework_parity, "shared_squad_dir", lambda: Path("squad"))
    assert framework_parity.main(["--out", str(tmp_path), "--seeds", "1,2,3", "--summarize"]) == 0
    written = json.loads((tmp_path / "parity_results.json").read_text())
    assert written["backends"]["mxnet"]["f1"]["median"] == 54.0
    assert written["comparison"]["median_f1_torch_minus_mxnet"] == 1.14
    with pytest.raises(SystemExit, match=r"seed4/results.json is missing"):
        framework_parity.main(["--out", str(tmp_path), "--seeds", "1,4", "--summarize"])
