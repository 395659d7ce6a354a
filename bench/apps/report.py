"""``squad-bench report``: compare our runs with the published numbers.

Reads ``results.json`` files (``bench.core.results``; never logs or folder names) and
the reference CSVs (``bench.core.references``) and writes, into ``--out``:

* ``README.md``: per SQuAD version one row per model and run configuration
  (backend, head, dtype): our EM/F1 at the fixed null threshold and, for v2.0,
  at the dev-tuned threshold in separate columns; GluonNLP's fp32 number, the
  authors' original, and ours minus GluonNLP. Several seeds of one
  configuration show median, mean ± sample std and n. Then torch-vs-mxnet
  parity, every published number, the figures, and the skipped run folders.
* ``results.csv``: every number of those tables, one per row.
* ``*.png``: F1 per model with reference markers (one per version), and F1
  against training device-hours and against training throughput.

The output depends only on the inputs: everything is sorted, nothing carries a
date, and the PNGs are written without a software/date stamp. A broken or
partial results.json is listed under "Skipped runs" and never stops the report.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bench.core.io_utils import atomic_path
from bench.core.models import MODELS
from bench.core.presets import PRESETS
from bench.core.references import (DEFAULT_REFERENCE_DIR, ORIGINAL_SOURCES, SOURCES, Reference, find_reference,
                              load_references, model_label, original_reference, select_references)
from bench.core.results import ResultsError, find_results, load_results

__all__ = ["Run", "Skipped", "Group", "Stats", "collect_runs", "group_runs", "summarize", "build_report",
           "write_report", "FIGURES", "DEFAULT_REPORT_DIR", "build_parser", "main"]

DEFAULT_REPORT_DIR = Path(__file__).resolve().parents[2] / "reports"
VERSIONS = ("2.0", "1.1")   # the recipes target 2.0, so it comes first
BACKENDS = ("torch", "mxnet")
FIGURES = {"f1_squad2.0.png": "F1 per model on SQuAD 2.0 dev", "f1_squad1.1.png": "F1 per model on SQuAD 1.1 dev",
           "f1_vs_device_hours.png": "F1 against training device-hours",
           "f1_vs_train_throughput.png": "F1 against training throughput"}
CSV_COLUMNS = ("section", "squad_version", "model", "variant", "quantity", "statistic", "value", "n", "link")
DASH = "—"


# ----------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class Run:
    """One valid results.json."""
    path: Path
    record: dict

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def model(self) -> str:
        return str(self.record["model"]["name"])

    @property
    def version(self) -> str:
        return self.record["squad_version"]

    @property
    def variant(self) -> tuple[str, str, str]:
        return (self.record["backend"], self.record["head"], self.record["dtype"])

    @property
    def group_key(self) -> tuple:
        return (self.model, self.version) + self.variant

    @property
    def seed(self) -> int:
        return self.record["seed"]

    def fixed(self, metric: str) -> float | None:
        """EM ('exact') or F1 at the fixed threshold; v1.1 scoring calls EM 'exact_match'."""
        key = "exact_match" if metric == "exact" and self.version == "1.1" else metric
        return _number(self.record["metrics"]["fixed"].get(key))

    def tuned(self, metric: str) -> float | None:
        """v2.0 EM/F1 at the threshold tuned on dev; None for v1.1 or when missing."""
        tuned = self.record["metrics"].get("tuned")
        if self.version != "2.0" or not isinstance(tuned, dict):
            return None
        return _number(tuned.get(metric))

    def timing(self, key: str) -> float | None:
        return _number(self.record["timing"].get(key))


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str
    replaced_by: Path | None = None   # the newer run of the same configuration and seed


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _load(path: Path) -> Run | Skipped:
    try:
        record = load_results(path)
    except ResultsError as exc:
        reason = str(exc)
        return Skipped(path, reason.split(": ", 1)[1] if reason.startswith(f"{path}: ") else reason)
    subset = record["hyperparameters"].get("max_eval_samples")
    if subset is not None:   # a score on part of dev says nothing next to full-dev published numbers
        return Skipped(path, f"evaluated on a subset of dev (--max_eval_samples {subset}): "
                             "not comparable with full-dev numbers")
    return Run(path, record)


def _drop_repeated_seeds(runs: list[Run]) -> tuple[list[Run], list[Skipped]]:
    """Keep the newest run of each (configuration, seed); a re-run replaces, never double-counts."""
    newest: dict[tuple, Run] = {}
    skipped = []
    for run in sorted(runs, key=lambda r: (r.record["created"], str(r.path)), reverse=True):
        key = run.group_key + (run.seed,)
        if key in newest:
            skipped.append(Skipped(run.path, "older run of the same configuration and seed as",
                                   replaced_by=newest[key].path))
        else:
            newest[key] = run
    return list(newest.values()), skipped


def collect_runs(roots: Iterable[str | os.PathLike]) -> tuple[list[Run], list[Skipped]]:
    """Valid runs and the results.json files skipped with the reason, both sorted by path."""
    runs, skipped = [], []
    for path in find_results(list(roots)):
        loaded = _load(path)
        (runs if isinstance(loaded, Run) else skipped).append(loaded)
    runs, repeated = _drop_repeated_seeds(runs)
    return sorted(runs, key=lambda r: str(r.path)), sorted(skipped + repeated, key=lambda s: str(s.path))


# ----------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    mean: float
    std: float | None    # sample standard deviation (n - 1); None for one run


def summarize(values: Iterable[float | None]) -> Stats | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stats(len(values), statistics.median(values), statistics.fmean(values), std)


@dataclass
class Group:
    """Runs of one model, version, backend, head and dtype: different seeds of one configuration."""
    model: str
    version: str
    variant: tuple[str, str, str]
    runs: list[Run] = field(default_factory=list)

    @property
    def variant_text(self) -> str:
        return " · ".join(self.variant)

    def fixed(self, metric: str) -> Stats | None:
        return summarize(r.fixed(metric) for r in self.runs)

    def tuned(self, metric: str) -> Stats | None:
        return summarize(r.tuned(metric) for r in self.runs)

    def timing(self, key: str) -> Stats | None:
        return summarize(r.timing(key) for r in self.runs)

    def ours(self, metric: str) -> Stats | None:
        """What compares with GluonNLP: tuned on v2.0 (its best_results.json is dev-tuned), else fixed."""
        return self.tuned(metric) if self.version == "2.0" else self.fixed(metric)


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        group = groups.setdefault(run.group_key, Group(run.model, run.version, run.variant))
        group.runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.seed, str(r.path)))
    return [groups[k] for k in sorted(groups, key=_group_order)]


def _group_order(key: tuple) -> tuple:
    model, version, backend, head, dtype = key
    return (_model_order(model), version, BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS),
            backend, head, dtype)


def _model_order(name: str) -> tuple:
    """Registry order, then anything else by name."""
    order = list(MODELS)
    return (order.index(name), "") if name in order else (len(order), name)


# ----------------------------------------------------------------------------- cells and the CSV ledger

def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def _csv_number(value: float) -> str:
    return repr(round(value, 4))


def _published(value: float) -> str:
    """A published number with the digits it was published with (79.3, 83.57)."""
    return repr(round(value, 4))


def _link(text: str, target: str | None) -> str:
    return f"[{text}]({target})" if target else text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _citation_labels(references: list[Reference]) -> dict[str, str]:
    """A short markdown link label per citation URL: the source key, numbered when it has several."""
    by_source: dict[str, list[str]] = {}
    for ref in references:
        urls = by_source.setdefault(ref.source, [])
        if ref.citation not in urls:
            urls.append(ref.citation)
    return {url: source if len(urls) == 1 else f"{source}-{i}"
            for source, urls in by_source.items() for i, url in enumerate(urls, 1)}


@dataclass
class Ledger:
    """Collects the CSV twin of every number written into a markdown table, and the citations used."""
    out_dir: Path
    citation_labels: dict[str, str]
    rows: list[tuple] = field(default_factory=list)
    cited: set[str] = field(default_factory=set)

    def cite(self, text: str, url: str) -> str:
        """A reference-style link (keeps the wide tables readable as plain text)."""
        self.cited.add(url)
        return f"[{text}][{self.citation_labels[url]}]"

    def citation_definitions(self) -> list[str]:
        return sorted(f"[{self.citation_labels[url]}]: {url}" for url in self.cited)

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()

    def add(self, where: tuple, quantity: str, statistic: str, value: float, n: int | str = "",
            link: str | None = None) -> None:
        self.rows.append(where + (quantity, statistic, _csv_number(value), str(n), link or ""))

    def stats_cell(self, where: tuple, quantity: str, stats: Stats | None, link: str | None) -> str:
        """'[median](link) · mean ± std' for several seeds, '[value](link)' for one, a dash for none."""
        if stats is None:
            return DASH
        if stats.n == 1:
            self.add(where, quantity, "value", stats.median, 1, link)
            return _link(_fmt(stats.median), link)
        self.add(where, quantity, "median", stats.median, stats.n, link)
        self.add(where, quantity, "mean", stats.mean, stats.n, link)
        self.add(where, quantity, "std", stats.std, stats.n, link)
        return f"{_link(_fmt(stats.median), link)} · {_fmt(stats.mean)} ± {_fmt(stats.std)}"

    def reference_cell(self, where: tuple, quantity: str, ref: Reference | None) -> str:
        if ref is None:
            return DASH
        self.add(where, quantity, "value", ref.value, ref.n or "", ref.citation)
        text = self.cite(_published(ref.value), ref.citation)
        if ref.std is not None:
            self.add(where, quantity, "std", ref.std, ref.n or "", ref.citation)
            text += f" ± {_published(ref.std)}" + (f" (n={ref.n})" if ref.n else "")
        return f"~~{text}~~" if ref.superseded else text

    def difference_cell(self, where: tuple, quantity: str, ours: Stats | None, ref: Reference | None) -> str:
        if ours is None or ref is None:
            return DASH
        self.add(where, quantity, "difference", ours.median - ref.value, ours.n)
        return _signed(ours.median - ref.value)


def _group_link(ledger: Ledger, group: Group) -> str:
    folders = [r.folder.resolve() for r in group.runs]
    return ledger.rel(Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0])


def _seeds_cell(ledger: Ledger, group: Group) -> str:
    seeds = ", ".join(_link(str(r.seed), ledger.rel(r.folder)) for r in group.runs)
    return f"{len(group.runs)}: {seeds}"


# ----------------------------------------------------------------------------- the main tables

def _table_models(version: str, groups: list[Group], references: list[Reference]) -> list[str]:
    """Models with a recipe, a GluonNLP/original number for this version, or a run of it."""
    names = {p.model_name for p in PRESETS.values()}
    names |= {g.model for g in groups if g.version == version}
    for ref in select_references(references, version=version):
        if (ref.source == "gluonnlp" and ref.precision == "fp32") or ref.source in ORIGINAL_SOURCES:
            names.add(ref.model)
    return sorted(names, key=_model_order)


def _main_header(version: str) -> list[str]:
    lines = []
    if version == "2.0":
        lines.append("| Model | Run (backend · head · dtype) | Seeds | EM fixed | F1 fixed | EM tuned | F1 tuned "
                     "| GluonNLP EM | GluonNLP F1 | Original EM | Original F1 | Δ EM | Δ F1 |")
        lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    else:
        lines.append("| Model | Run (backend · head · dtype) | Seeds | EM | F1 "
                     "| GluonNLP EM | GluonNLP F1 | Original EM | Original F1 | Δ EM | Δ F1 |")
        lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    return lines


def _reference_cells(ledger: Ledger, where: tuple, model: str, version: str,
                     references: list[Reference]) -> tuple[list[str], dict]:
    gluon = {m: find_reference(references, model, version, m, "gluonnlp", "fp32") for m in ("exact", "f1")}
    original = {m: original_reference(references, model, version, m) for m in ("exact", "f1")}
    cells = [ledger.reference_cell(where, f"gluonnlp_fp32_{m}", gluon[m]) for m in ("exact", "f1")]
    cells += [ledger.reference_cell(where, f"original_{m}", original[m]) for m in ("exact", "f1")]
    return cells, gluon


def _group_row(ledger: Ledger, group: Group, references: list[Reference]) -> str:
    where = ("main", group.version, group.model, "/".join(group.variant))
    link = _group_link(ledger, group)
    cells = [_escape(model_label(group.model)), group.variant_text, _seeds_cell(ledger, group)]
    cells += [ledger.stats_cell(where, f"{m}_fixed", group.fixed(m), link) for m in ("exact", "f1")]
    if group.version == "2.0":
        cells += [ledger.stats_cell(where, f"{m}_tuned", group.tuned(m), link) for m in ("exact", "f1")]
    ref_cells, gluon = _reference_cells(ledger, where, group.model, group.version, references)
    cells += ref_cells
    cells += [ledger.difference_cell(where, f"{m}_minus_gluonnlp", group.ours(m), gluon[m]) for m in ("exact", "f1")]
    return "| " + " | ".join(cells) + " |"


def _not_run_row(ledger: Ledger, model: str, version: str, references: list[Reference]) -> str:
    where = ("main", version, model, "")
    ours = 4 if version == "2.0" else 2
    ref_cells, _ = _reference_cells(ledger, where, model, version, references)
    cells = [_escape(model_label(model)), "not run", DASH] + [DASH] * ours + ref_cells + [DASH, DASH]
    return "| " + " | ".join(cells) + " |"


def _main_section(ledger: Ledger, version: str, groups: list[Group], references: list[Reference]) -> list[str]:
    lines = [f"## SQuAD {version} (dev)", ""]
    if version == "2.0":
        lines += ["*EM/F1 fixed*: at the run's `--null_score_diff_threshold`. *tuned*: at the threshold that "
                  "is best on dev (`metrics.tuned`), which is what GluonNLP reports for v2.0, so *Δ* = our tuned "
                  "median − GluonNLP.", ""]
    else:
        lines += ["*Δ* = our median − GluonNLP.", ""]
    lines += _main_header(version)
    for model in _table_models(version, groups, references):
        model_groups = [g for g in groups if g.model == model and g.version == version]
        if model_groups:
            lines += [_group_row(ledger, g, references) for g in model_groups]
        else:
            lines.append(_not_run_row(ledger, model, version, references))
    return lines + [""]


# ----------------------------------------------------------------------------- framework parity

def _parity_rows(ledger: Ledger, groups: list[Group]) -> list[str]:
    by_key: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        backend, head, dtype = g.variant
        by_key.setdefault((g.model, g.version, head, dtype), {})[backend] = g
    rows = []
    for (model, version, head, dtype), pair in sorted(by_key.items(), key=lambda kv: (_model_order(kv[0][0]),
                                                                                       kv[0])):
        if not all(b in pair for b in BACKENDS):
            continue
        where = ("parity", version, model, f"{head}/{dtype}")
        cells = [_escape(model_label(model)), version, f"{head} · {dtype}"]
        for metric in ("exact", "f1"):
            cells += [ledger.stats_cell(where, f"{metric}_fixed_{b}", pair[b].fixed(metric),
                                        _group_link(ledger, pair[b])) for b in BACKENDS]
        cells += [ledger.stats_cell(where, f"train_samples_per_second_{b}",
                                    pair[b].timing("train_samples_per_second"), _group_link(ledger, pair[b]))
                  for b in BACKENDS]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _parity_section(ledger: Ledger, groups: list[Group]) -> list[str]:
    lines = ["## Framework parity (torch vs mxnet)", ""]
    rows = _parity_rows(ledger, groups)
    if not rows:
        return lines + ["No model has been run on both backends with the same head and dtype yet.", ""]
    lines += ["EM/F1 at the fixed threshold; training throughput in samples/s.", "",
              "| Model | SQuAD | head · dtype | EM torch | EM mxnet | F1 torch | F1 mxnet "
              "| samples/s torch | samples/s mxnet |",
              "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    return lines + rows + [""]


# ----------------------------------------------------------------------------- published numbers

def _reference_rows(ledger: Ledger, version: str, references: list[Reference]) -> list[str]:
    keyed: dict[tuple, dict[str, Reference]] = {}
    for ref in select_references(references, version=version, include_superseded=True):
        key = (ref.model, ref.source, ref.precision, ref.superseded)
        keyed.setdefault(key, {})[ref.metric] = ref
    order = lambda k: (_model_order(k[0]), list(SOURCES).index(k[1]), ("fp32", "amp").index(k[2]), k[3])
    rows = []
    for key in sorted(keyed, key=order):
        model, source, precision, superseded = key
        refs = keyed[key]
        where = ("references", version, model, f"{source}/{precision}" + ("/superseded" if superseded else ""))
        notes = "; ".join(dict.fromkeys(r.note for r in refs.values() if r.note))
        threshold = "/".join(sorted({r.threshold for r in refs.values() if r.threshold})) or DASH
        cells = [_escape(model_label(model)), SOURCES[source], precision]
        cells += [ledger.reference_cell(where, m, refs.get(m)) for m in ("exact", "f1")]
        cells += ([threshold] if version == "2.0" else []) + [_escape(notes)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _references_section(ledger: Ledger, references: list[Reference]) -> list[str]:
    lines = ["## Published numbers", "",
             "From `reference_results/*.csv` (one number per row; see its README). Each number links to its "
             "source. A struck-through number is a known error kept for the record; it is never compared "
             "against.", ""]
    for version in VERSIONS:
        lines += [f"### SQuAD {version} (dev)", ""]
        if version == "2.0":
            lines += ["| Model | Source | Precision | EM | F1 | Threshold | Note |", "|---|---|---|--:|--:|---|---|"]
        else:
            lines += ["| Model | Source | Precision | EM | F1 | Note |", "|---|---|---|--:|--:|---|"]
        lines += _reference_rows(ledger, version, references) + [""]
    return lines


# ----------------------------------------------------------------------------- figures

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)   # no pyplot: no global state, no display needed
    return figure


def _save_png(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        # no "Software" stamp: the same inputs give the same bytes (matplotlib writes no date to PNG)
        figure.savefig(tmp, format="png", metadata={"Software": None})
        os.chmod(tmp, 0o644)


def _draw_our_bars(ax, version: str, groups: list[Group], models: list[str]) -> list[float]:
    """One bar per configuration (fixed-threshold F1 median, std as error bar); tuned F1 as a ring."""
    version_groups = [g for g in groups if g.version == version]
    variants = list(dict.fromkeys(g.variant for g in version_groups))   # already in report order
    width = 0.8 / max(1, len(variants))
    drawn = []
    for group in version_groups:
        i, stats = variants.index(group.variant), group.fixed("f1")
        if stats is None or group.model not in models:
            continue
        x = models.index(group.model) - 0.4 + width * (i + 0.5)
        ax.bar(x, stats.median, width, yerr=stats.std or 0, color=f"C{i % 10}", capsize=2,
               label=group.variant_text + (" (fixed threshold)" if version == "2.0" else ""))
        drawn.append(stats.median)
        tuned = group.tuned("f1")
        if tuned is not None:
            ax.plot([x], [tuned.median], "o", mfc="none", mec="black", label="ours, dev-tuned threshold")
            drawn.append(tuned.median)
    return drawn


def _draw_reference_markers(ax, version: str, references: list[Reference], models: list[str]) -> list[float]:
    drawn = []
    for x, model in enumerate(models):
        gluon = find_reference(references, model, version, "f1", "gluonnlp", "fp32")
        original = original_reference(references, model, version, "f1")
        if gluon:
            ax.plot([x], [gluon.value], "D", color="black", label="GluonNLP fp32")
            drawn.append(gluon.value)
        if original:
            ax.plot([x], [original.value], "*", color="crimson", markersize=10, label="original (authors)")
            drawn.append(original.value)
    return drawn


def _bars_figure(version: str, groups: list[Group], references: list[Reference], models: list[str]):
    figure = _figure(max(8.0, 0.75 * len(models) + 2), 5.0)
    ax = figure.add_subplot(1, 1, 1)
    values = _draw_our_bars(ax, version, groups, models) + _draw_reference_markers(ax, version, references, models)
    ax.set_xticks(range(len(models)), [model_label(m) for m in models], rotation=40, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylim(max(0.0, min(values, default=0.0) - 5), 100)
    ax.set_ylabel("F1 (dev)")
    ax.set_title(f"SQuAD {version} dev F1: bars = ours (median over seeds, std as error bar)", fontsize=10)
    _dedup_legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside the plot: never over a bar
    figure.tight_layout()
    return figure


def _dedup_legend(ax, **placement) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(list(unique.values()), list(unique.keys()), fontsize=7, **placement)


def _scatter_figure(runs: list[Run], timing_key: str, xlabel: str):
    figure = _figure(8.0, 5.0)
    ax = figure.add_subplot(1, 1, 1)
    points = [(r.timing(timing_key), r.fixed("f1"), r) for r in runs]
    points = [(x, y, r) for x, y, r in points if x is not None and x > 0 and y is not None]
    for version, marker in (("1.1", "o"), ("2.0", "s")):
        chosen = [(x, y, r) for x, y, r in points if r.version == version]
        if chosen:
            ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], marker=marker, label=f"SQuAD {version}")
        for x, y, run in chosen:
            ax.annotate(f"{model_label(run.model)} · {run.variant[0]}", (x, y), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    if not points:
        ax.text(0.5, 0.5, "no training runs with timing yet", ha="center", va="center", transform=ax.transAxes)
    elif max(p[0] for p in points) > 10 * min(p[0] for p in points):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("F1 (dev, fixed threshold)")
    _dedup_legend(ax, loc="best")
    figure.tight_layout()
    return figure


def _write_figures(out_dir: Path, runs: list[Run], groups: list[Group], references: list[Reference]) -> None:
    for version in VERSIONS:
        models = _table_models(version, groups, references)
        _save_png(_bars_figure(version, groups, references, models), out_dir / f"f1_squad{version}.png")
    _save_png(_scatter_figure(runs, "train_device_hours", "training device-hours (accelerators x hours)"),
              out_dir / "f1_vs_device_hours.png")
    _save_png(_scatter_figure(runs, "train_samples_per_second", "training throughput (samples/s)"),
              out_dir / "f1_vs_train_throughput.png")


# ----------------------------------------------------------------------------- the report

def _intro(runs: list[Run], groups: list[Group], skipped: list[Skipped]) -> list[str]:
    return [
        "# SQuAD Bench results", "",
        "Generated by `squad-bench report` from `results.json` files and `reference_results/*.csv`; "
        "do not edit by hand. Regenerate with `squad-bench report --runs <run folders>` "
        "(with no `--runs`, the report holds the published numbers alone).", "",
        f"Runs: {len(runs)} in {len(groups)} configurations; {len(skipped)} skipped.", "",
        "EM = exact match, F1 = token F1, both on the dev set, in percent. A row is one configuration "
        "(model, backend, QA head, dtype); with several seeds a cell reads *median · mean ± std* (sample "
        "standard deviation) and *Seeds* gives n and links each run. Our numbers link to their run folders, "
        "published ones to their source. *GluonNLP* is its reproduced fp32 result; *Original* is the "
        "authors' own (Google, Fairseq).", ""]


def _figures_section() -> list[str]:
    lines = ["## Figures", ""]
    for name, title in FIGURES.items():
        lines += [f"![{title}]({name})", ""]
    return lines


def _skipped_section(ledger: Ledger, skipped: list[Skipped]) -> list[str]:
    lines = ["## Skipped runs", ""]
    if not skipped:
        return lines + ["None.", ""]
    for item in skipped:
        newer = f" [`{ledger.rel(item.replaced_by)}`]({ledger.rel(item.replaced_by)})" if item.replaced_by else ""
        lines.append(f"- [`{ledger.rel(item.path)}`]({ledger.rel(item.path)}): {_escape(item.reason)}{newer}")
    return lines + [""]


def build_report(runs: list[Run], skipped: list[Skipped], references: list[Reference],
                 out_dir: Path) -> tuple[str, str]:
    """The README.md text and the results.csv text (links relative to out_dir)."""
    ledger = Ledger(out_dir, _citation_labels(references))
    groups = group_runs(runs)
    lines = _intro(runs, groups, skipped)
    for version in VERSIONS:
        lines += _main_section(ledger, version, groups, references)
    lines += _parity_section(ledger, groups)
    lines += _references_section(ledger, references)
    lines += _figures_section()
    lines += _skipped_section(ledger, skipped)
    lines += ledger.citation_definitions()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(ledger.rows)
    return "\n".join(lines).rstrip("\n") + "\n", buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)   # mkstemp files are 0600; reports are shared


def write_report(run_roots: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 reference_dir: str | os.PathLike = DEFAULT_REFERENCE_DIR) -> tuple[list[Run], list[Skipped]]:
    """Read runs and references, write README.md, results.csv and the PNGs into out_dir."""
    out_dir = Path(out_dir)
    references = load_references(reference_dir)
    runs, skipped = collect_runs(run_roots)
    markdown, table = build_report(runs, skipped, references, out_dir)
    _write_text(out_dir / "README.md", markdown)
    _write_text(out_dir / "results.csv", table)
    _write_figures(out_dir, runs, group_runs(runs), references)
    return runs, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squad-bench report",
                                     description="Compare results.json files with the published SQuAD numbers.")
    parser.add_argument("--runs", nargs="+", action="extend", default=[], metavar="DIR",
                        help="run folders (searched recursively for results.json) or results.json files; "
                             "none: the report holds the published numbers alone")
    parser.add_argument("--out", default=str(DEFAULT_REPORT_DIR), help="output folder (default: reports/)")
    parser.add_argument("--references", default=str(DEFAULT_REFERENCE_DIR),
                        help="folder of reference CSVs (default: reference_results/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [root for root in args.runs if not Path(root).exists()]
    if missing:
        print(f"squad-bench report: error: no such run folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs, skipped = write_report(args.runs, args.out, args.references)
    print(f"wrote {args.out}/README.md from {len(runs)} runs ({len(skipped)} skipped)")
    for item in skipped:
        print(f"  skipped {item.path}: {item.reason}{f' {item.replaced_by}' if item.replaced_by else ''}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
