"""``python -m bench``: the same as the ``squad-bench`` command (see ``bench.apps.cli``)."""
import sys

from bench.apps.cli import main

sys.exit(main())
