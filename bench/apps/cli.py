"""``squad-bench``: one command, one subcommand per job.

Each subcommand lives in its own module exposing ``main(argv) -> int``; this file
only dispatches, importing the module when its subcommand is asked for, so
``squad-bench evaluate`` never loads a deep-learning framework.

    squad-bench prepare-data --version 2.0 --data_dir squad
    squad-bench run --model_name google_electra_small --do_train --do_eval ...
    squad-bench evaluate dev-v2.0.json predictions.json --na-prob-file na_prob.json
    squad-bench report --runs runs/ --out reports/
    squad-bench launch electra_base 1 2.0 float16
    squad-bench demo
    squad-bench speed --quick
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "prepare-data": ("bench.apps.prepare", "download or copy the official SQuAD files and verify them"),
    "run": ("bench.apps.run", "fine-tune and/or evaluate a model (GluonNLP run_squad.py flags)"),
    "evaluate": ("bench.apps.evaluate", "score a predictions file (drop-in for the official scripts)"),
    "report": ("bench.apps.report", "regenerate the comparison report from results.json files"),
    "launch": ("bench.apps.launch", "run a recipe (preset) on this machine, as commands/*.sh do"),
    "demo": ("bench.apps.demo", "fine-tune a real small BERT offline and report (about 8 minutes on 2 cores)"),
    "speed": ("bench.apps.speed", "speed benchmark against the Hugging Face baselines"),
    "make-student": ("bench.apps.make_student", "a smaller student from some of a teacher's layers (distillation)"),
    "flag-docs": ("bench.apps.flag_docs", "write docs/flags.md from the flag table (--check: exit 1 if stale)"),
}


def _usage() -> str:
    lines = ["usage: squad-bench <command> [options]", "", "commands:"]
    lines += [f"  {name:<14}{help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'squad-bench <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"squad-bench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
