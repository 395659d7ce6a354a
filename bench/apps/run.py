"""Fine-tune and evaluate an extractive QA model on SQuAD: the run_squad script.

Accepts every flag of GluonNLP's ``scripts/question_answering/run_squad.py`` with
the same names and defaults (see ``bench.core.flags.FLAGS``), so its published
commands run unchanged, plus ``--backend``, ``--model_path``, ``--train_file``,
``--dev_file``, ``--head``, ``--stride_mode``, ``--seeds`` and a few more.

Examples::

    # one process (GPU 0, or the CPU when there is none)
    python -m bench.run_squad --model_name google_electra_small --data_dir squad \\
        --version 2.0 --do_train --do_eval --batch_size 32 --epochs 2 --lr 3e-4 \\
        --layerwise_decay 0.8 --wd 0 --output_dir runs/electra_small

    # 4 GPUs on one machine, either launcher
    horovodrun -np 4 -H localhost:4 python -m bench.run_squad --comm_backend horovod ...
    torchrun --nproc_per_node 4 -m bench.run_squad --comm_backend torchrun ...

    # several seeds into runs/x/seed_<s>/
    python -m bench.run_squad ... --seeds 1,2,3

    # a recipe of bench.core.presets (model and hyperparameters); explicit flags win
    python -m bench.run_squad --preset electra_small --data_dir squad --epochs 1 --output_dir runs/x
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from bench.run.registry import get_backend
from bench.core.flags import build_run_parser, config_from_dict, parse_seeds
from bench.core.errors import BenchError
from bench.core.presets import PRESETS, get_preset, preset_run_flags


def per_seed_configs(config) -> list:
    """``--seeds 1,2,3``: one config per seed, each writing to ``<output_dir>/seed_<s>``."""
    if not config.seeds:
        return [config]
    return [dataclasses.replace(config, seed=seed, seeds=None,
                                output_dir=str(Path(config.output_dir) / f"seed_{seed}"))
            for seed in parse_seeds(config.seeds)]


def build_parser() -> argparse.ArgumentParser:
    """The run flags (bench.core.flags) plus ``--preset NAME``."""
    parser = build_run_parser()
    parser.add_argument("--preset", metavar="NAME",
                        help="start from a recipe of bench.core.presets (its model and flags); flags given "
                             f"on the command line win. One of: {', '.join(PRESETS)}")
    return parser


def config_from_argv(argv: list[str] | None = None):
    """Parse and validate the command line into a RunConfig.

    With ``--preset NAME`` the preset's values become the parser's defaults and the command line
    is parsed again, so every flag given explicitly wins (an unknown name is an UnknownPresetError).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset is not None:
        parser.set_defaults(**preset_run_flags(get_preset(args.preset)))
        args = parser.parse_args(argv)
    values = vars(args)
    del values["preset"]
    return config_from_dict(values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_argv(argv)
        backend = get_backend(config.backend)
        for seed_config in per_seed_configs(config):
            status = backend.main(seed_config)
            if status:
                return status
    except BenchError as exc:        # the user's to fix: one line, no traceback
        print(f"run_squad: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
