"""``python -m bench.evaluate``: the official-script drop-in (see ``bench.apps.evaluate``)."""
import sys

from bench.apps.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
