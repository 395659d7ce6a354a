#!/usr/bin/env bash
# Fine-tunes google_en_uncased_bert_wwm_large on SQuAD with the recipe of preset uncased_bert_wwm_large (bench/core/presets.py;
# `squad-bench launch --list` shows its global batch and published numbers).
# Usage: bash commands/run_squad2_uncased_bert_wwm_large.sh [USE_HOROVOD=0] [VERSION=2.0] [DTYPE=float32]
#   e.g. bash commands/run_squad2_uncased_bert_wwm_large.sh 1 2.0 float16   # Horovod, SQuAD 2.0, AMP
# Environment: NUM_GPUS DATA_DIR OUT_DIR PYTHON MODEL_PATH SEEDS EXTRA_ARGS; DRY_RUN=1 prints the
# command instead of running it. Defaults and details: `squad-bench launch --help`.
export PYTHONPATH="$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m bench.cli launch uncased_bert_wwm_large "$@"
