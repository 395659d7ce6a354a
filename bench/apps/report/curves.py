"""Training curves per configuration: the training loss of every seed (from the run's
``train_log.jsonl``, the --log_interval records) and dev EM/F1 at every evaluation (results.json
``metrics.evaluations``, written with --eval_interval) against optimizer updates.

A run without these logs is drawn without them; a configuration with neither is not drawn. A
missing or torn train_log.jsonl line is passed over, never an error. One PNG per configuration
under ``curves/`` in the report folder, linked from README.md's "Training curves" section.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.apps.report.runs import Group, Run

__all__ = ["train_losses", "evaluations", "curve_name", "has_curves", "curves_section", "write_curves"]

CURVES_DIR = "curves"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def train_losses(run: Run) -> list[tuple[int, float]]:
    """(update, loss) of the run's train_log.jsonl beside its results.json; [] without one."""
    path = run.folder / "train_log.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    points = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("update"), int) and _number(record.get("loss")) is not None:
            points[record["update"]] = float(record["loss"])
    return sorted(points.items())


def evaluations(run: Run) -> list[tuple[int, float | None, float | None]]:
    """(update, EM, F1) of every evaluation in results.json ``metrics.evaluations``; [] without it."""
    entries = (run.record.get("metrics") or {}).get("evaluations")
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("update"), int):
            out.append((entry["update"], _number(entry.get("exact", entry.get("exact_match"))),
                        _number(entry.get("f1"))))
    return sorted(out)


def has_curves(group: Group) -> bool:
    return any(train_losses(run) or evaluations(run) for run in group.runs)


def curve_name(group: Group) -> str:
    """``curves/<model>_<version>_<backend>_<head>_<dtype>_<set>.png``: stable for the same configuration."""
    model = "".join(c if c.isalnum() or c in "-." else "_" for c in Path(group.model).name)[:60]
    digest = hashlib.sha256((f"{group.model}|{group.eval_key}" + (f"|{group.teacher}" if group.teacher else "")
                             ).encode()).hexdigest()[:8]
    return f"{CURVES_DIR}/{model}_squad{group.version}_{'_'.join(group.variant)}_{digest}.png"


def curves_section(groups: list[Group]) -> list[str]:
    """README lines linking each configuration's curves; nothing when no run has logs."""
    drawn = [g for g in groups if has_curves(g)]
    if not drawn:
        return []
    lines = ["## Training curves", "",
             "Per configuration: training loss (train_log.jsonl) and dev EM/F1 at each evaluation "
             "(`--eval_interval`, results.json `metrics.evaluations`) against optimizer updates.", ""]
    for group in drawn:
        title = f"{group.model_text} · SQuAD {group.version} · {group.variant_text} · {group.eval_text}"
        lines.append(f"- [{title}]({curve_name(group)})")
    return lines + [""]


def _figure(group: Group):
    from bench.apps.report.figures import _figure as new_figure

    figure = new_figure(10.0, 4.0)
    loss_ax, eval_ax = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for i, run in enumerate(group.runs):
        color = f"C{i % 10}"
        losses = train_losses(run)
        if losses:
            loss_ax.plot([u for u, _ in losses], [v for _, v in losses], color=color, label=f"seed {run.seed}")
        points = evaluations(run)
        em = [(u, v) for u, v, _ in points if v is not None]
        f1 = [(u, v) for u, _, v in points if v is not None]
        if f1:
            eval_ax.plot([u for u, _ in f1], [v for _, v in f1], "o-", color=color, label=f"F1, seed {run.seed}")
        if em:
            eval_ax.plot([u for u, _ in em], [v for _, v in em], "s--", color=color, label=f"EM, seed {run.seed}")
    for ax, ylabel, empty in ((loss_ax, "training loss", "no train_log.jsonl"),
                              (eval_ax, "dev EM / F1 (fixed threshold)", "no evaluations during training")):
        ax.set_xlabel("optimizer updates")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    figure.suptitle(f"{group.model_text} · SQuAD {group.version} · {group.variant_text}", fontsize=9)
    figure.tight_layout()
    return figure


def write_curves(out_dir: Path, groups: list[Group]) -> list[str]:
    """Draw each configuration's curves; returns the PNG names written (relative to out_dir)."""
    from bench.apps.report.figures import _save_png

    written = []
    for group in groups:
        if not has_curves(group):
            continue
        name = curve_name(group)
        (Path(out_dir) / name).parent.mkdir(parents=True, exist_ok=True)
        _save_png(_figure(group), Path(out_dir) / name)
        written.append(name)
    return written
