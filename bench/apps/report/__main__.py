"""``python -m bench.apps.report``: the same as ``squad-bench report``."""
import sys

from bench.apps.report import main

if __name__ == "__main__":
    sys.exit(main())
