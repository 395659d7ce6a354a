"""``squad-bench prepare-data``: download (or copy) and verify the SQuAD files.

The fetching and verifying is ``bench.core.squad_files``; this module is its command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
import urllib.request

from bench.core.squad_files import DEFAULT_TIMEOUT, PrepareError, prepare_squad

# -- command line ----------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "squad-bench prepare-data",
        description="Download (or copy with --from) the official SQuAD train and dev files and "
                    "verify their sha256.")
    parser.add_argument("--version", required=True, choices=["1.1", "2.0"], help="SQuAD version")
    parser.add_argument("--data_dir", "--data-dir", default="squad",
                        help="folder to put train-v{V}.json and dev-v{V}.json in (default: squad)")
    parser.add_argument("--from", dest="from_dir", metavar="LOCAL_DIR",
                        help="copy the files (or their .gz) from this folder instead of downloading")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"network timeout in seconds (default: {DEFAULT_TIMEOUT:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        # urlopen looked up at call time, so a test can stand in a fake for the real one
        paths = prepare_squad(args.version, args.data_dir, args.from_dir,
                              urlopen=urllib.request.urlopen, timeout=args.timeout)
    except (PrepareError, OSError) as exc:    # OSError: data_dir cannot be created
        print(f"prepare-data: error: {exc}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
