"""Speed of SQuAD post-processing: the plain reference loop vs the vectorized numpy path.

A command-line wrapper: the measurement lives in ``bench.apps.speed.postprocess_compare`` (its
docstring says what is timed and how), which ``squad-bench speed`` also runs for figure 4. Usage:

    python benchmarks/postprocess_speed.py [--repeats 3] [--json OUT] [--data FILE] [--max-seq-length 384]
                                           [--doc-stride 128] [--n-best-size 20] [--max-answer-length 30]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.speed.postprocess_compare import main  # noqa: E402
from bench.core.errors import BenchError  # noqa: E402

if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(str(exc))
