"""The figures: F1 per model with reference markers (one per version), and F1 against training
device-hours and against training throughput. PNGs without a software/date stamp."""
from __future__ import annotations

import os
from pathlib import Path

from bench.apps.report.runs import VERSIONS, Group, Run
from bench.apps.report.tables import table_models
from bench.core.io_utils import atomic_path
from bench.core.references import Reference, find_reference, model_label, original_reference

__all__ = ["FIGURES", "write_figures"]

FIGURES = {"f1_squad2.0.png": "F1 per model on SQuAD 2.0 dev", "f1_squad1.1.png": "F1 per model on SQuAD 1.1 dev",
           "f1_vs_device_hours.png": "F1 against training device-hours",
           "f1_vs_train_throughput.png": "F1 against training throughput"}


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
    variants = list(dict.fromkeys(g.variant_text for g in version_groups))   # already in report order
    width = 0.8 / max(1, len(variants))
    drawn = []
    for group in version_groups:
        i, stats = variants.index(group.variant_text), group.fixed("f1")
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


def write_figures(out_dir: Path, runs: list[Run], groups: list[Group], references: list[Reference]) -> None:
    for version in VERSIONS:
        models = table_models(version, groups, references)
        _save_png(_bars_figure(version, groups, references, models), out_dir / f"f1_squad{version}.png")
    _save_png(_scatter_figure(runs, "train_device_hours", "training device-hours (accelerators x hours)"),
              out_dir / "f1_vs_device_hours.png")
    _save_png(_scatter_figure(runs, "train_samples_per_second", "training throughput (samples/s)"),
              out_dir / "f1_vs_train_throughput.png")
