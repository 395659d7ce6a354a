"""--report_to: TensorBoard, W&B (offline) and MLflow (local file store) through the real run script
on a tiny model; each tracker's records are read back with its own library and compared with
train_log.jsonl and results.json."""
from __future__ import annotations

import glob
import json
import logging
import struct
import sys
import types
from pathlib import Path

import pytest

from bench.apps.run import main as run_squad
from bench.core.results import load_results
from bench.run import trackers
from tests.test_run_squad import base_args


def train_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tiny_model, sample_files, tmp_path_factory):
    """One run reporting to all three trackers, with an evaluation every 2 updates."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("tracked")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_BASE_URL",
                 "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        mp.delenv(name, raising=False)
    mp.setenv("NETRC", str(root / "no.netrc"))
    mp.setenv("WANDB_CONFIG_DIR", str(root / "wandb_config"))
    mp.setenv("WANDB_CACHE_DIR", str(root / "wandb_cache"))
    out = root / "my_run"
    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.setLevel(logging.INFO)          # run.log then holds the INFO lines (pytest owns the handlers)
    try:
        status = run_squad(base_args(tiny_model("bert"), sample_files["2.0"], out, num_train_steps=4,
                                     max_eval_samples=10, eval_interval=2,
                                     report_to="tensorboard,wandb,mlflow"))
    finally:
        root_logger.setLevel(level)
        mp.undo()
    assert status == 0
    return out


def test_tensorboard_event_files_match_train_log(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tracked_run
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    log = train_log(out)
    assert len(log) == 4
    for key in ("loss", "lr", "grad_norm", "samples_per_second", "skipped_updates"):
        events = acc.Scalars(f"train/{key}")
        assert [e.step for e in events] == [r["update"] for r in log]
        assert [e.value for e in events] == pytest.approx([r[key] for r in log], rel=1e-5, abs=1e-6)
    evaluations = load_results(out / "results.json")["metrics"]["evaluations"]
    for key in ("exact", "f1", "HasAns_f1", "NoAns_exact", "tuned_f1", "tuned_f1_thresh"):
        events = acc.Scalars(f"eval/{key}")
        assert [e.step for e in events] == [e["update"] for e in evaluations] == [2, 4]
        assert [e.value for e in events] == pytest.approx([e[key] for e in evaluations], rel=1e-5)
    (params,) = acc.Tensors("hparams/text_summary")            # the hyper-parameters, as text
    assert "eval_interval: 2" in params.tensor_proto.string_val[0].decode()
    record = load_results(out / "results.json")
    assert acc.Scalars("final/exact")[-1].value == pytest.approx(record["metrics"]["fixed"]["exact"], rel=1e-5)


def wandb_records(path: Path) -> list:
    """The records of a W&B offline run file (.wandb: LevelDB-log framing of wandb's own protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):          # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def test_wandb_offline_run_matches_train_log(tracked_run):
    out = tracked_run
    files = glob.glob(str(out / "wandb" / "offline-run-*" / "*.wandb"))
    assert len(files) == 1, "offline by default: no credentials, no WANDB_MODE"
    history, config, summary, names = {}, {}, {}, []
    for record in wandb_records(Path(files[0])):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            names.append(record.run.display_name)
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            summary.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.summary.update})
    assert names == ["my_run"]
    assert config["lr"] == pytest.approx(1e-3) and config["report_to"] == "tensorboard,wandb,mlflow"
    for row in train_log(out):
        assert history[row["update"]]["train/loss"] == pytest.approx(row["loss"])
        assert history[row["update"]]["train/lr"] == pytest.approx(row["lr"])
    evaluations = load_results(out / "results.json")["metrics"]["evaluations"]
    for entry in evaluations:
        assert history[entry["update"]]["eval/exact"] == pytest.approx(entry["exact"])
        assert history[entry["update"]]["eval/f1"] == pytest.approx(entry["f1"])
    record = load_results(out / "results.json")
    assert summary["final/f1"] == pytest.approx(record["metrics"]["fixed"]["f1"])
    run_log = (out / "run.log").read_text()
    assert "wandb sync" in run_log and str(Path(files[0]).parent) in run_log


def test_mlflow_file_store_matches_train_log(tracked_run):
    from mlflow.tracking import MlflowClient

    out = tracked_run
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("squad-bench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "my_run" and run.info.status == "FINISHED"
    assert float(run.data.params["lr"]) == pytest.approx(1e-3)
    log = train_log(out)
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["update"], pytest.approx(r["loss"])) for r in log]
    evaluations = load_results(out / "results.json")["metrics"]["evaluations"]
    f1 = sorted(client.get_metric_history(run.info.run_id, "eval/f1"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in f1] == [(e["update"], pytest.approx(e["f1"])) for e in evaluations]
    assert run.data.metrics["final/exact"] == pytest.approx(load_results(out / "results.json")["metrics"]["fixed"]["exact"])


def test_report_to_names():
    assert trackers.parse_report_to("none") == [] and trackers.parse_report_to(None) == []
    assert trackers.parse_report_to("all") == ["tensorboard", "wandb", "mlflow"]      # all installed here
    assert trackers.parse_report_to("wandb, tensorboard") == ["wandb", "tensorboard"]
    with pytest.raises(trackers.TrackerError, match="unknown tracker.*comet"):
        trackers.parse_report_to("tensorboard,comet")


def test_missing_tracker_is_one_line_with_the_install_command(monkeypatch, tiny_model, sample_files, tmp_path,
                                                              capsys):
    monkeypatch.setattr(trackers, "_installed", lambda package: package != "wandb")
    assert trackers.parse_report_to("all") == ["tensorboard", "mlflow"]
    status = run_squad(base_args(tiny_model("bert"), sample_files["2.0"], tmp_path / "run", num_train_steps=1,
                                 report_to="wandb"))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[tracking]"' in err[0], err


def test_failing_tracker_warns_once_and_the_run_goes_on(monkeypatch, tiny_model, sample_files, tmp_path, caplog):
    calls = []

    class Broken:
        def log_params(self, params):
            calls.append("params")

        def log_scalars(self, scalars, step):
            calls.append(step)
            raise OSError("disk full")

        def log_summary(self, scalars):
            calls.append("summary")

        def close(self):
            calls.append("close")

    module = types.ModuleType("broken_tracker_for_tests")
    module.open = lambda run_name, output_dir: Broken()
    monkeypatch.setitem(sys.modules, "broken_tracker_for_tests", module)
    monkeypatch.setitem(trackers.TRACKERS, "broken",
                        trackers.TrackerInfo("broken", "broken_tracker_for_tests", "json"))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="bench.run.trackers"):
        status = run_squad(base_args(tiny_model("bert"), sample_files["2.0"], out, num_train_steps=3,
                                     max_eval_samples=10, report_to="broken"))
    assert status == 0
    assert calls == ["params", 1, "close"]          # dropped after its first failure
    warnings = [r for r in caplog.records if "--report_to broken failed" in r.getMessage()]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()
    assert [r["update"] for r in train_log(out)] == [1, 2, 3]
    assert load_results(out / "results.json")["metrics"]["fixed"]["exact"] >= 0


def test_mxnet_backend_reports_through_the_same_sink(tiny_model, sample_files, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import import_mxnet_or_skip
    import_mxnet_or_skip()
    out = tmp_path / "mx_run"
    assert run_squad(base_args(tiny_model("bert"), sample_files["2.0"], out, backend="mxnet", num_train_steps=4,
                               max_eval_samples=10, eval_interval=2, report_to="tensorboard")) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    log = train_log(out)
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (r["update"], pytest.approx(r["loss"], rel=1e-5)) for r in log]
    evaluations = load_results(out / "results.json")["metrics"]["evaluations"]
    assert [(e.step, e.value) for e in acc.Scalars("eval/f1")] == [
        (e["update"], pytest.approx(e["f1"], rel=1e-5)) for e in evaluations]
    assert [e["update"] for e in evaluations] == [2, 4]
