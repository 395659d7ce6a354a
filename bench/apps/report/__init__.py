"""``squad-bench report``: compare our runs with the published numbers.

Reads ``results.json`` files (``bench.core.results``; never folder names; the tables never
read logs: only the training curves read each run's ``train_log.jsonl``) and
the reference CSVs (``bench.core.references``) and writes, into ``--out``:

* ``README.md``: per SQuAD version one row per model and run configuration
  (backend, head, dtype): our EM/F1 at the fixed null threshold and, for v2.0,
  at the dev-tuned threshold in separate columns; GluonNLP's fp32 number, the
  authors' original, and ours minus GluonNLP. Several seeds of one
  configuration show median, mean ± sample std and n. Only runs whose model,
  SQuAD version and evaluation set are the published ones are there (the
  registry's checkpoint, ``model.registry_match``, on the whole official dev
  file, ``data.eval_set.is_official_dev``); every other run is under "Other
  models and evaluation sets", labelled with its model and set. Then
  torch-vs-mxnet parity (per evaluation set), teacher -> student (only when a
  run has a ``distillation`` block or a published number is distilled), every
  published number, the figures (comparable runs only), and the skipped run
  folders. Every run row shows ``model.num_parameters`` and, for a run without
  an accelerator, ``timing.eval_questions_per_second``; published rows show
  their parameter count and CPU questions/s where the source gives them.
* ``results.csv``: every number of those tables, one per row.
* ``*.png``: F1 per model with reference markers (one per version), and F1
  against training device-hours and against training throughput.
* ``curves/*.png``: per configuration, the training loss (each run's
  ``train_log.jsonl``, beside its results.json) and dev EM/F1 at each evaluation
  (``metrics.evaluations``, ``--eval_interval``) against updates, linked under
  "Training curves"; a run without these logs is drawn without them.

The output depends only on the inputs: everything is sorted, nothing carries a
date, and the PNGs are written without a software/date stamp. A broken or
partial results.json is listed under "Skipped runs" and never stops the report.

Modules: ``runs`` (read, group and summarize results.json files), ``ledger`` (table
cells and their CSV twins), ``tables`` (the markdown tables), ``figures`` (the PNGs), ``curves``
(the training curves),
``render`` (README.md and results.csv, and writing everything).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.apps.report.figures import FIGURES
from bench.apps.report.render import build_report, write_report
from bench.apps.report.runs import Group, Run, Skipped, Stats, collect_runs, group_runs, summarize
from bench.core.references import DEFAULT_REFERENCE_DIR

__all__ = ["Run", "Skipped", "Group", "Stats", "collect_runs", "group_runs", "summarize", "build_report",
           "write_report", "FIGURES", "DEFAULT_REPORT_DIR", "build_parser", "main"]

DEFAULT_REPORT_DIR = Path(__file__).resolve().parents[3] / "reports"


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
