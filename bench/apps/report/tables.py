"""The markdown tables: ours against the published numbers per SQuAD version (only runs whose model,
SQuAD version and evaluation set are the published ones), the other runs on their own, torch-vs-mxnet
parity, teacher -> student (distillation), and every published number. Every run row shows the model's
parameter count and, for a run on the CPU, its evaluation questions/s next to EM/F1."""
from __future__ import annotations

import os
from pathlib import Path

from bench.apps.report.ledger import DASH, Ledger, escape, markdown_link
from bench.apps.report.runs import BACKENDS, VERSIONS, Group, model_order
from bench.core.results import official_dev_name
from bench.core.presets import PRESETS
from bench.core.references import (ORIGINAL_SOURCES, SCORE_METRICS, SOURCES, Reference, find_reference,
                                   SCORING_NOTES, model_label, original_reference, select_references)

__all__ = ["main_section", "other_section", "parity_section", "references_section", "table_models",
           "distillation_section", "reference_label"]


def _group_link(ledger: Ledger, group: Group) -> str:
    folders = [r.folder.resolve() for r in group.runs]
    return ledger.rel(Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0])


def _seeds_cell(ledger: Ledger, group: Group) -> str:
    seeds = ", ".join(markdown_link(str(r.seed), ledger.rel(r.folder)) for r in group.runs)
    return f"{len(group.runs)}: {seeds}"


def _size_speed_cells(ledger: Ledger, where: tuple, group: Group | None) -> list[str]:
    """Parameters (``model.num_parameters``) and CPU evaluation questions/s (runs without an accelerator)."""
    if group is None:
        return [DASH, DASH]
    if group.num_parameters is not None:
        ledger.add(where, "num_parameters", "value", group.num_parameters, len(group.runs))
    return [group.parameters_text, ledger.stats_cell(where, "cpu_eval_questions_per_second",
                                                     group.cpu_questions_per_second(), _group_link(ledger, group))]


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
                     "| Parameters | CPU questions/s | GluonNLP EM | GluonNLP F1 | Original EM | Original F1 | Δ EM "
                     "| Δ F1 |")
        lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    else:
        lines.append("| Model | Run (backend · head · dtype) | Seeds | EM | F1 | Parameters | CPU questions/s "
                     "| GluonNLP EM | GluonNLP F1 | Original EM | Original F1 | Δ EM | Δ F1 |")
        lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    return lines


def _reference_cells(ledger: Ledger, where: tuple, model: str, version: str,
                     references: list[Reference]) -> tuple[list[str], dict]:
    gluon = {m: find_reference(references, model, version, m, "gluonnlp", "fp32") for m in ("exact", "f1")}
    original = {m: original_reference(references, model, version, m) for m in ("exact", "f1")}
    cells = [ledger.reference_cell(where, f"gluonnlp_fp32_{m}", gluon[m]) for m in ("exact", "f1")]
    cells += [ledger.reference_cell(where, f"original_{m}", original[m]) for m in ("exact", "f1")]
    return cells, gluon


def _group_row(ledger: Ledger, group: Group, references: list[Reference]) -> str:
    where = ("main", group.version, group.model, group.variant_key, group.eval_text)
    link = _group_link(ledger, group)
    cells = [escape(model_label(group.model)), escape(group.variant_text), _seeds_cell(ledger, group)]
    cells += [ledger.stats_cell(where, f"{m}_fixed", group.fixed(m), link) for m in ("exact", "f1")]
    if group.version == "2.0":
        cells += [ledger.stats_cell(where, f"{m}_tuned", group.tuned(m), link) for m in ("exact", "f1")]
    cells += _size_speed_cells(ledger, where, group)
    ref_cells, gluon = _reference_cells(ledger, where, group.model, group.version, references)
    cells += ref_cells
    cells += [ledger.difference_cell(where, f"{m}_minus_gluonnlp", group.ours(m), gluon[m]) for m in ("exact", "f1")]
    return "| " + " | ".join(cells) + " |"


def _not_run_row(ledger: Ledger, model: str, version: str, references: list[Reference]) -> str:
    where = ("main", version, model, "", f"{official_dev_name(version)} (official)")
    ours = 4 if version == "2.0" else 2
    ref_cells, _ = _reference_cells(ledger, where, model, version, references)
    cells = [escape(model_label(model)), "not run", DASH] + [DASH] * (ours + 2) + ref_cells + [DASH, DASH]
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
    where = ("other", group.version, group.model, group.variant_key, group.eval_text)
    link = _group_link(ledger, group)
    cells = [escape(group.model_text), group.version, escape(group.eval_text), escape(group.variant_text),
             _seeds_cell(ledger, group)]
    cells += [ledger.stats_cell(where, f"{m}_fixed", group.fixed(m), link) for m in ("exact", "f1")]
    cells += [ledger.stats_cell(where, f"{m}_tuned", group.tuned(m), link) for m in ("exact", "f1")]
    cells += _size_speed_cells(ledger, where, group)
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
              "| F1 tuned | Parameters | CPU questions/s | Not compared because |",
              "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|---|"]
    return lines + rows + [""]


# ----------------------------------------------------------------------------- framework parity

def _parity_rows(ledger: Ledger, groups: list[Group]) -> list[str]:
    by_key: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        backend, head, dtype = g.variant
        by_key.setdefault((g.model, g.version, g.eval_key, head, dtype, g.teacher), {})[backend] = g
    rows = []
    for (model, version, _, head, dtype, teacher), pair in sorted(by_key.items(), key=lambda kv: (model_order(kv[0][0]),
                                                                                          kv[0])):
        if not all(b in pair for b in BACKENDS):
            continue
        first = pair[BACKENDS[0]]
        where = ("parity", version, model, f"{head}/{dtype}" + (f"/distilled:{teacher}" if teacher else ""),
                 first.eval_text)
        cells = [escape(first.model_text), version, escape(first.eval_text),
                 escape(f"{head} · {dtype}" + (f" · distilled from {teacher}" if teacher else ""))]
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

def reference_label(model: str, teacher: str = "") -> str:
    """A published model's label; a distilled number's names its teacher."""
    return model_label(model) + (f", distilled from {model_label(teacher)}" if teacher else "")


def _reference_key(ref: Reference) -> str:
    """The cell a reference row fills: EM/F1, parameters, or a speed measured on the CPU."""
    if ref.metric in SCORE_METRICS or ref.metric == "num_parameters":
        return ref.metric
    return f"{ref.device}_{ref.metric}"


def _parameters_cell(ledger: Ledger, where: tuple, ref: Reference | None) -> str:
    """A published parameter count (millions) as '66M', linked to its source."""
    if ref is None:
        return DASH
    ledger.add(where, "num_parameters_millions", "value", ref.value, "", ref.citation)
    return ledger.cite(f"{ref.value:g}M", ref.citation)


def _reference_rows(ledger: Ledger, version: str, references: list[Reference]) -> list[str]:
    keyed: dict[tuple, dict[str, Reference]] = {}
    for ref in select_references(references, version=version, include_superseded=True):
        key = (ref.model, ref.source, ref.precision, ref.superseded, ref.teacher)
        keyed.setdefault(key, {})[_reference_key(ref)] = ref
    order = lambda k: (model_order(k[0]), list(SOURCES).index(k[1]), ("fp32", "amp").index(k[2]), k[3], k[4])
    rows = []
    for key in sorted(keyed, key=order):
        model, source, precision, superseded, teacher = key
        refs = keyed[key]
        where = ("references", version, model, f"{source}/{precision}" + ("/superseded" if superseded else "")
                 + (f"/distilled:{teacher}" if teacher else ""), official_dev_name(version))
        # A number scored another way than the official script says so first (bench.core.references.SCORINGS).
        notes = "; ".join(dict.fromkeys([SCORING_NOTES[r.scoring] for r in refs.values() if r.scoring]
                                        + [r.note for r in refs.values() if r.note]))
        threshold = "/".join(sorted({r.threshold for r in refs.values() if r.threshold})) or DASH
        cells = [escape(reference_label(model, teacher)), SOURCES[source], precision]
        cells += [ledger.reference_cell(where, m, refs.get(m)) for m in ("exact", "f1")]
        cells += [_parameters_cell(ledger, where, refs.get("num_parameters")),
                  ledger.reference_cell(where, "cpu_questions_per_second", refs.get("cpu_questions_per_second"))]
        cells += ([threshold] if version == "2.0" else []) + [escape(notes)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def references_section(ledger: Ledger, references: list[Reference]) -> list[str]:
    lines = ["## Published numbers", "",
             "From `reference_results/*.csv` (one number per row; see its README). Each number links to its "
             "source. A struck-through number is a known error kept for the record; it is never compared "
             "against. *Parameters*: model size as the source states it; *CPU questions/s*: questions answered "
             "per second on a CPU, with the setting in the note.", ""]
    for version in VERSIONS:
        lines += [f"### SQuAD {version} (dev)", ""]
        if version == "2.0":
            lines += ["| Model | Source | Precision | EM | F1 | Parameters | CPU questions/s | Threshold | Note |",
                      "|---|---|---|--:|--:|--:|--:|---|---|"]
        else:
            lines += ["| Model | Source | Precision | EM | F1 | Parameters | CPU questions/s | Note |",
                      "|---|---|---|--:|--:|--:|--:|---|"]
        lines += _reference_rows(ledger, version, references) + [""]
    return lines


# ----------------------------------------------------------------------------- teacher -> student

def _ratio_cell(ledger: Ledger, where: tuple, fast: float | None, slow: float | None) -> str:
    """How many times faster the distilled student answers than its teacher (questions/s ratio)."""
    if fast is None or slow is None or slow <= 0:
        return DASH
    ledger.add(where, "cpu_speedup_vs_teacher", "ratio", fast / slow)
    return f"{fast / slow:.2f}×"


def _published_parameters(references: list[Reference], model: str, source: str) -> Reference | None:
    """The model's published parameter count: this source's, else any source's."""
    for wanted in (source, None):
        for ref in select_references(references, model=model, source=wanted):
            if ref.metric == "num_parameters":
                return ref
    return None


def _published_distillation_rows(ledger: Ledger, references: list[Reference]) -> list[str]:
    triples = sorted({(r.squad_version, r.source, r.model, r.teacher) for r in references
                      if r.distilled and not r.superseded},
                     key=lambda k: (VERSIONS.index(k[0]), list(SOURCES).index(k[1]), model_order(k[2]), k[3]))
    rows = []
    for version, source, student, teacher in triples:
        where = ("distillation", version, student, f"{source}/distilled:{teacher}", official_dev_name(version))
        find = lambda model, metric, of="", device=None: find_reference(references, model, version, metric, source,
                                                                         teacher=of, device=device)
        speed = {name: find(model, "questions_per_second", of, "cpu")
                 for name, model, of in (("teacher", teacher, ""), ("student", student, ""),
                                         ("distilled", student, teacher))}
        params = [_published_parameters(references, m, source) for m in (teacher, student)]
        cells = [SOURCES[source], version, escape(model_label(teacher))]
        cells += [ledger.reference_cell(where, f"teacher_{m}", find(teacher, m)) for m in ("exact", "f1")]
        cells += [ledger.reference_cell(where, "teacher_cpu_questions_per_second", speed["teacher"]),
                  escape(model_label(student))]
        cells += [ledger.reference_cell(where, f"student_{m}", find(student, m)) for m in ("exact", "f1")]
        cells += [ledger.reference_cell(where, f"distilled_{m}", find(student, m, teacher)) for m in ("exact", "f1")]
        cells += [ledger.reference_cell(where, "distilled_cpu_questions_per_second", speed["distilled"]),
                  _ratio_cell(ledger, where, *(speed[k].value if speed[k] else None for k in ("distilled", "teacher"))),
                  " → ".join(_parameters_cell(ledger, where, p) for p in params) if any(params) else DASH]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _teacher_group(student: Group, groups: list[Group]) -> Group | None:
    """The run of the teacher a distilled group names (``distillation.teacher`` as given): a run folder,
    a file in it, or one of its checkpoints (``<run>/checkpoints/update_N``), or a model's hub id / registry
    name, on the student's version and evaluation set."""
    given = student.teacher
    folders = [Path(given), Path(given).parent]
    if folders[1].name == "checkpoints":           # the run folder's checkpoints/ (bench.run.output_dir)
        folders.append(folders[1].parent)
    # matched on the last path parts of the folders as given
    tails = {folder.parts for folder in folders} - {()}
    for group in groups:
        if group.teacher or group.version != student.version or group.eval_key != student.eval_key:
            continue
        if given in (group.model, str(group.runs[0].identity["source"])) or any(
                r.folder.parts[-len(tail):] == tail for r in group.runs for tail in tails
                if ".." not in tail and not Path(*tail).is_absolute()) or any(
                Path(given).is_absolute() and os.path.abspath(r.folder) in {os.path.abspath(f) for f in folders}
                for r in group.runs):
            return group
    return None


def _run_distillation_rows(ledger: Ledger, groups: list[Group]) -> list[str]:
    rows = []
    for group in (g for g in groups if g.teacher):
        teacher = _teacher_group(group, groups)
        plain = next((g for g in groups if not g.teacher and (g.model, g.version, g.eval_key, g.variant) == (
            group.model, group.version, group.eval_key, group.variant)), None)
        where = ("distillation", group.version, group.model, group.variant_key, group.eval_text)
        block = group.runs[0].record["distillation"]
        fixed = lambda g, m: g.fixed(m) if g is not None else None
        link = lambda g: _group_link(ledger, g) if g is not None else None
        cells = [escape(group.eval_text), group.version,
                 escape(teacher.model_text if teacher else group.teacher)]
        cells += [ledger.stats_cell(where, f"teacher_{m}", fixed(teacher, m), link(teacher)) for m in ("exact", "f1")]
        teacher_speed = teacher.cpu_questions_per_second() if teacher else None
        cells += [ledger.stats_cell(where, "teacher_cpu_questions_per_second", teacher_speed, link(teacher)),
                  escape(f"{group.model_text} · {' · '.join(group.variant)}")]
        cells += [ledger.stats_cell(where, f"student_{m}", fixed(plain, m), link(plain)) for m in ("exact", "f1")]
        cells += [ledger.stats_cell(where, f"distilled_{m}", group.fixed(m), link(group)) for m in ("exact", "f1")]
        speed = group.cpu_questions_per_second()
        cells += [ledger.stats_cell(where, "distilled_cpu_questions_per_second", speed, link(group)),
                  _ratio_cell(ledger, where, speed.median if speed else None,
                              teacher_speed.median if teacher_speed else None),
                  f"{teacher.parameters_text if teacher else DASH} → {group.parameters_text}",
                  f"T={block.get('temperature')}, α={block.get('alpha')}"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def distillation_section(ledger: Ledger, groups: list[Group], references: list[Reference]) -> list[str]:
    """Teacher -> student: present only when a run has a ``distillation`` block or a published number is
    distilled. Per student: the teacher's EM/F1, the student fine-tuned alone, the student distilled from
    the teacher, CPU questions/s and parameters."""
    published, ours = _published_distillation_rows(ledger, references), _run_distillation_rows(ledger, groups)
    if not published and not ours:
        return []
    lines = ["## Teacher → student (distillation)", "",
             "A student fine-tuned with a teacher's soft targets (*Distilled*) beside the teacher and the same "
             "student fine-tuned alone (*Student*). EM/F1 in percent; *q/s*: questions answered per second on a "
             "CPU; *Speed-up*: distilled student q/s ÷ teacher q/s.", ""]
    if ours:
        lines += ["### Our runs", "",
                  "Runs whose results.json has a `distillation` block; *Student* is the run of the same model and "
                  "configuration without a teacher, on the same evaluation set. EM/F1 at the fixed threshold.", "",
                  "| Evaluation set | SQuAD | Teacher | Teacher EM | Teacher F1 | Teacher q/s | Student "
                  "| Student EM | Student F1 | Distilled EM | Distilled F1 | Distilled q/s | Speed-up "
                  "| Parameters | Temperature, α |",
                  "|---|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|---|"] + ours + [""]
    if published:
        lines += ["### Published", "",
                  "| Source | SQuAD | Teacher | Teacher EM | Teacher F1 | Teacher q/s | Student | Student EM "
                  "| Student F1 | Distilled EM | Distilled F1 | Distilled q/s | Speed-up | Parameters |",
                  "|---|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|"] + published + [""]
    return lines
