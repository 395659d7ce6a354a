"""The markdown tables: ours against the published numbers per SQuAD version (only runs whose model,
SQuAD version and evaluation set are the published ones), the other runs on their own, torch-vs-mxnet
parity, and every published number."""
from __future__ import annotations

import os
from pathlib import Path

from bench.apps.report.ledger import DASH, Ledger, escape, markdown_link
from bench.apps.report.runs import BACKENDS, VERSIONS, Group, model_order
from bench.core.results import official_dev_name
from bench.core.presets import PRESETS
from bench.core.references import (ORIGINAL_SOURCES, SOURCES, Reference, find_reference, model_label,
                                   original_reference, select_references)

__all__ = ["main_section", "other_section", "parity_section", "references_section", "table_models"]


def _group_link(ledger: Ledger, group: Group) -> str:
    folders = [r.folder.resolve() for r in group.runs]
    return ledger.rel(Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0])


def _seeds_cell(ledger: Ledger, group: Group) -> str:
    seeds = ", ".join(markdown_link(str(r.seed), ledger.rel(r.folder)) for r in group.runs)
    return f"{len(group.runs)}: {seeds}"


# ----------------------------------------------------------------------------- the main tables

def table_models(version: str, groups: list[Group], references: list[Reference]) -> list[str]:
    """Models with a recipe, a GluonNLP/original number for this version, or a comparable run of it."""
    names = {p.model_name for p in PRESETS.values()}
    names |= {g.model for g in groups if g.version == version and g.comparable}
    for ref in select_references(references, version=version):
        if (ref.source == "gluonnlp" and ref.precision == "fp32") or ref.source in ORIGINAL_SOURCES:
            names.add(ref.model)
    return sorted(names, key=model_order)


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
    where = ("main", group.version, group.model, "/".join(group.variant), group.eval_text)
    link = _group_link(ledger, group)
    cells = [escape(model_label(group.model)), group.variant_text, _seeds_cell(ledger, group)]
    cells += [ledger.stats_cell(where, f"{m}_fixed", group.fixed(m), link) for m in ("exact", "f1")]
    if group.version == "2.0":
        cells += [ledger.stats_cell(where, f"{m}_tuned", group.tuned(m), link) for m in ("exact", "f1")]
    ref_cells, gluon = _reference_cells(ledger, where, group.model, group.version, references)
    cells += ref_cells
    cells += [ledger.difference_cell(where, f"{m}_minus_gluonnlp", group.ours(m), gluon[m]) for m in ("exact", "f1")]
    return "| " + " | ".join(cells) + " |"


def _not_run_row(ledger: Ledger, model: str, version: str, references: list[Reference]) -> str:
    where = ("main", version, model, "", f"{official_dev_name(version)} (official)")
    ours = 4 if version == "2.0" else 2
    ref_cells, _ = _reference_cells(ledger, where, model, version, references)
    cells = [escape(model_label(model)), "not run", DASH] + [DASH] * ours + ref_cells + [DASH, DASH]
    return "| " + " | ".join(cells) + " |"


def main_section(ledger: Ledger, version: str, groups: list[Group], references: list[Reference]) -> list[str]:
    """Comparable groups only: a registry model on the official dev file of ``version``, evaluated in full."""
    groups = [g for g in groups if g.comparable]
    lines = [f"## SQuAD {version} (dev)", "",
             f"Runs of a registry model evaluated on the whole official `{official_dev_name(version)}`; every "
             "other run is under *Other models and evaluation sets*.", ""]
    if version == "2.0":
        lines += ["*EM/F1 fixed*: at the run's `--null_score_diff_threshold`. *tuned*: at the threshold that "
                  "is best on dev (`metrics.tuned`), which is what GluonNLP reports for v2.0, so *Δ* = our tuned "
                  "median − GluonNLP.", ""]
    else:
        lines += ["*Δ* = our median − GluonNLP.", ""]
    lines += _main_header(version)
    for model in table_models(version, groups, references):
        model_groups = [g for g in groups if g.model == model and g.version == version]
        if model_groups:
            lines += [_group_row(ledger, g, references) for g in model_groups]
        else:
            lines.append(_not_run_row(ledger, model, version, references))
    return lines + [""]


# ----------------------------------------------------------------------------- other runs

def _other_row(ledger: Ledger, group: Group) -> str:
    where = ("other", group.version, group.model, "/".join(group.variant), group.eval_text)
    link = _group_link(ledger, group)
    cells = [escape(group.model_text), group.version, escape(group.eval_text), group.variant_text,
             _seeds_cell(ledger, group)]
    cells += [ledger.stats_cell(where, f"{m}_fixed", group.fixed(m), link) for m in ("exact", "f1")]
    cells += [ledger.stats_cell(where, f"{m}_tuned", group.tuned(m), link) for m in ("exact", "f1")]
    return "| " + " | ".join(cells + [escape("; ".join(group.not_compared))]) + " |"


def other_section(ledger: Ledger, groups: list[Group]) -> list[str]:
    """Runs whose model or evaluation set is not the published one: never beside a published number."""
    lines = ["## Other models and evaluation sets", "",
             "Runs not compared with any published number: the model is not the registry's checkpoint "
             "(`model.registry_match`), or the evaluation set is not the official dev file of the run's SQuAD "
             "version evaluated in full (`data.eval_set.is_official_dev`; the shared rebuilt dev sets and XQuAD "
             "are other sets, and a schema v1 record is known to be on the official file only when its sha256 "
             "is the plain official file's). *EM/F1*: at the run's fixed threshold; *tuned* (SQuAD 2.0): at the "
             "threshold best on that same set.", ""]
    rows = [_other_row(ledger, g) for g in sorted((g for g in groups if not g.comparable),
                                                    key=lambda g: VERSIONS.index(g.version))]
    if not rows:
        return lines + ["None.", ""]
    lines += ["| Model | SQuAD | Evaluation set | Run (backend · head · dtype) | Seeds | EM | F1 | EM tuned "
              "| F1 tuned | Not compared because |",
              "|---|---|---|---|---|--:|--:|--:|--:|---|"]
    return lines + rows + [""]


# ----------------------------------------------------------------------------- framework parity

def _parity_rows(ledger: Ledger, groups: list[Group]) -> list[str]:
    by_key: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        backend, head, dtype = g.variant
        by_key.setdefault((g.model, g.version, g.eval_key, head, dtype), {})[backend] = g
    rows = []
    for (model, version, _, head, dtype), pair in sorted(by_key.items(), key=lambda kv: (model_order(kv[0][0]),
                                                                                          kv[0])):
        if not all(b in pair for b in BACKENDS):
            continue
        first = pair[BACKENDS[0]]
        where = ("parity", version, model, f"{head}/{dtype}", first.eval_text)
        cells = [escape(first.model_text), version, escape(first.eval_text), f"{head} · {dtype}"]
        for metric in ("exact", "f1"):
            cells += [ledger.stats_cell(where, f"{metric}_fixed_{b}", pair[b].fixed(metric),
                                        _group_link(ledger, pair[b])) for b in BACKENDS]
        cells += [ledger.stats_cell(where, f"train_samples_per_second_{b}",
                                    pair[b].timing("train_samples_per_second"), _group_link(ledger, pair[b]))
                  for b in BACKENDS]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def parity_section(ledger: Ledger, groups: list[Group]) -> list[str]:
    lines = ["## Framework parity (torch vs mxnet)", ""]
    rows = _parity_rows(ledger, groups)
    if not rows:
        return lines + ["No model has been run on both backends with the same head and dtype yet.", ""]
    lines += ["EM/F1 at the fixed threshold, both backends on the same evaluation set; training throughput in "
              "samples/s.", "",
              "| Model | SQuAD | Evaluation set | head · dtype | EM torch | EM mxnet | F1 torch | F1 mxnet "
              "| samples/s torch | samples/s mxnet |",
              "|---|---|---|---|--:|--:|--:|--:|--:|--:|"]
    return lines + rows + [""]


# ----------------------------------------------------------------------------- published numbers

def _reference_rows(ledger: Ledger, version: str, references: list[Reference]) -> list[str]:
    keyed: dict[tuple, dict[str, Reference]] = {}
    for ref in select_references(references, version=version, include_superseded=True):
        key = (ref.model, ref.source, ref.precision, ref.superseded)
        keyed.setdefault(key, {})[ref.metric] = ref
    order = lambda k: (model_order(k[0]), list(SOURCES).index(k[1]), ("fp32", "amp").index(k[2]), k[3])
    rows = []
    for key in sorted(keyed, key=order):
        model, source, precision, superseded = key
        refs = keyed[key]
        where = ("references", version, model, f"{source}/{precision}" + ("/superseded" if superseded else ""),
                 official_dev_name(version))
        notes = "; ".join(dict.fromkeys(r.note for r in refs.values() if r.note))
        threshold = "/".join(sorted({r.threshold for r in refs.values() if r.threshold})) or DASH
        cells = [escape(model_label(model)), SOURCES[source], precision]
        cells += [ledger.reference_cell(where, m, refs.get(m)) for m in ("exact", "f1")]
        cells += ([threshold] if version == "2.0" else []) + [escape(notes)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def references_section(ledger: Ledger, references: list[Reference]) -> list[str]:
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
