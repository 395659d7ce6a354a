"""Experiment tracking: one framework-free sink that every backend's run reports to.

``--report_to`` (Hugging Face's convention) names the trackers, comma-separated: ``none`` (the
default), ``tensorboard``, ``wandb``, ``mlflow``, or ``all`` (every installed one). The registry
below has one entry per tracker, and each tracker is one module of this package that imports
its library lazily (inside ``open``), so nothing here imports a framework or a tracker library
until a run asks for it. See docs/tracking.md.

The sink receives, on the main process only: the run's hyper-parameters (``log_params``), every
``--log_interval`` record of ``train_log.jsonl`` (``log_train``), every evaluation
(``log_eval``), the final results.json metrics (``log_final``), and the run folder's name as the
run name. A tracker that fails mid-run warns once and is dropped; the run goes on, and
``train_log.jsonl`` and ``results.json`` are written as without it.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError

logger = logging.getLogger(__name__)

__all__ = ["TrackerInfo", "TRACKERS", "TrackerError", "parse_report_to", "open_sink", "Sink", "NullSink",
           "eval_scalars", "final_scalars", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[tracking]"'


class TrackerError(BenchError, ValueError):
    """--report_to names an unknown tracker, or one whose library is not installed (one line, with the fix)."""


@dataclass(frozen=True)
class TrackerInfo:
    """One tracker: its --report_to name, the module of this package that writes to it, its library."""
    name: str
    module: str         # bench.run.trackers.<module>: ``open(run_name, output_dir, params) -> writer``
    package: str        # the importable library it needs


TRACKERS: dict[str, TrackerInfo] = {info.name: info for info in (
    TrackerInfo("tensorboard", "bench.run.trackers.tensorboard", "tensorboard"),
    TrackerInfo("wandb", "bench.run.trackers.wandb", "wandb"),
    TrackerInfo("mlflow", "bench.run.trackers.mlflow", "mlflow"),
)}


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def parse_report_to(text: str | None) -> list[str]:
    """``--report_to`` -> tracker names. Unknown names, and named trackers that are not installed,
    raise TrackerError; ``all`` is every installed one; ``none`` (or nothing) is none."""
    names = [n.strip().lower() for n in (text or "none").split(",") if n.strip()]
    if not names or names == ["none"]:
        return []
    if "all" in names:
        return [name for name, info in TRACKERS.items() if _installed(info.package)]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise TrackerError(f"--report_to: unknown tracker(s) {', '.join(unknown)}; choose from none, "
                           f"{', '.join(TRACKERS)}, all")
    missing = [n for n in names if not _installed(TRACKERS[n].package)]
    if missing:
        raise TrackerError(f"--report_to {','.join(missing)}: not installed; install it with {INSTALL_HINT}")
    return list(dict.fromkeys(names))


def _scalar(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def eval_scalars(metrics: dict) -> dict[str, float]:
    """An evaluation's scores (``{"fixed": ..., "tuned": ...}`` or a flat dict) as flat numbers:
    exact, f1, HasAns_*/NoAns_* and, when present, the tuned threshold and scores (``tuned_*``)."""
    out = {}
    fixed = metrics.get("fixed", metrics) if isinstance(metrics, dict) else {}
    for key, value in (fixed or {}).items():
        if _scalar(value) is not None:
            out[key] = _scalar(value)
    if "exact_match" in out and "exact" not in out:     # SQuAD 1.1 scoring calls EM exact_match
        out["exact"] = out.pop("exact_match")
    for key, value in (metrics.get("tuned") or {}).items() if isinstance(metrics.get("tuned"), dict) else ():
        if _scalar(value) is not None:
            out[f"tuned_{key}"] = _scalar(value)
    return out


def final_scalars(record: dict) -> dict[str, float]:
    """The numbers of a results.json record worth a tracker's summary: its metrics and timing."""
    out = {f"final/{k}": v for k, v in eval_scalars(record.get("metrics") or {}).items()}
    for key, value in (record.get("timing") or {}).items():
        if _scalar(value) is not None:
            out[f"timing/{key}"] = _scalar(value)
    return out


def _flat_params(params: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in params.items()}


class NullSink:
    """No tracker: every call does nothing (other processes, ``--report_to none``)."""
    names: tuple = ()

    def log_params(self, params: dict) -> None: ...
    def log_train(self, record: dict) -> None: ...
    def log_eval(self, update: int, metrics: dict) -> None: ...
    def log_final(self, record: dict) -> None: ...
    def close(self) -> None: ...


class Sink(NullSink):
    """Fans each call out to the open trackers; one that raises warns once and is dropped."""

    def __init__(self, writers: dict):
        self.writers = dict(writers)
        self.names = tuple(writers)

    def _each(self, method: str, *args) -> None:
        for name, writer in list(self.writers.items()):
            try:
                getattr(writer, method)(*args)
            except Exception as exc:   # a tracker's trouble must never stop the run
                logger.warning("--report_to %s failed (%s: %s); the run goes on without it (train_log.jsonl "
                               "and results.json are complete)", name, type(exc).__name__, exc)
                self.writers.pop(name, None)
                try:
                    writer.close()
                except Exception:
                    pass

    def log_params(self, params: dict) -> None:
        self._each("log_params", _flat_params(params))

    def log_train(self, record: dict) -> None:
        update = int(record.get("update", 0))
        scalars = {f"train/{k}": float(v) for k, v in record.items()
                   if k not in ("update", "epoch") and _scalar(v) is not None}
        self._each("log_scalars", scalars, update)

    def log_eval(self, update: int, metrics: dict) -> None:
        self._each("log_scalars", {f"eval/{k}": v for k, v in eval_scalars(metrics).items()}, int(update))

    def log_final(self, record: dict) -> None:
        self._each("log_summary", final_scalars(record))

    def close(self) -> None:
        self._each("close")
        self.writers.clear()


def open_sink(report_to: str | None, output_dir: Path, params: dict, *, is_main: bool = True) -> NullSink:
    """The sink for this process: the trackers ``report_to`` names on the main process, else a NullSink.
    The run name is the run folder's name; the hyper-parameters are logged once here."""
    names = parse_report_to(report_to)     # every process checks the names: a typo fails everywhere alike
    if not is_main or not names:
        return NullSink()
    output_dir = Path(output_dir)
    run_name = output_dir.resolve().name
    writers = {}
    for name in names:
        try:
            writers[name] = importlib.import_module(TRACKERS[name].module).open(run_name, output_dir)
        except Exception as exc:
            logger.warning("--report_to %s could not start (%s: %s); the run goes on without it", name,
                           type(exc).__name__, exc)
    sink = Sink(writers)
    sink.log_params(params)
    return sink
