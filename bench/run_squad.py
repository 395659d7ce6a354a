"""``python -m bench.run_squad``: the run script under its GluonNLP name (see ``bench.apps.run``)."""
import sys

from bench.apps.run import main

if __name__ == "__main__":
    sys.exit(main())
