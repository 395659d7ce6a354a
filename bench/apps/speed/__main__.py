"""``python -m bench.apps.speed``: the command, and how the parent starts each measured process
(``python -m bench.apps.speed --_task NAME --_request R --_result S``)."""
from __future__ import annotations

import sys

from bench.apps.speed import main

if __name__ == "__main__":
    sys.exit(main())
