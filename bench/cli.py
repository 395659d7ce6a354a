"""``python -m bench.cli``: the ``squad-bench`` command (see ``bench.apps.cli``)."""
import sys

from bench.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
