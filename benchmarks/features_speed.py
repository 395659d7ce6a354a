"""Time feature building and cached loading on a SQuAD file (default: the rebuilt dev-v2.0).

    python benchmarks/features_speed.py [--data PATH] [--max_seq_length 384] [--doc_stride 128]

Prints the build time, window and token counts, and the time to load the same features from
the cache (best of ``--repeat`` runs each), with the BERT WordPiece tokenizer of the installed
all-MiniLM-L6-v2 package. A printout, not a test: timings depend on the machine's load.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core.assets import MINILM_INSTALL_HINT, minilm_model_dir, shared_squad_dir
from bench.core.data import load_squad
from bench.core.features import FeatureParams, build_features, load_or_build_features


def best_time(fn, repeat: int):
    """(fastest wall time, last result) over ``repeat`` calls: the minimum is the least disturbed run."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def parse_args():
    squad = shared_squad_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(squad / "dev-v2.0.rebuilt.json.gz") if squad else None)
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--stride_mode", default="step", choices=["step", "overlap"])
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model_dir = minilm_model_dir()
    if args.data is None or model_dir is None:
        sys.exit(f"needs --data (or the shared SQuAD folder) and all-MiniLM-L6-v2 ({MINILM_INSTALL_HINT})")
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dataset = load_squad(args.data)
    params = FeatureParams(max_seq_length=args.max_seq_length, max_query_length=args.max_query_length,
                           doc_stride=args.doc_stride, stride_mode=args.stride_mode)

    build_s, features = best_time(
        lambda: build_features(dataset.examples, tokenizer, params, is_training=False), args.repeat)
    with tempfile.TemporaryDirectory() as cache_dir:
        def cached():
            return load_or_build_features(dataset.examples, tokenizer, params, is_training=False,
                                          data_sha256=dataset.sha256, cache_dir=cache_dir)
        write_s, _ = best_time(cached, 1)
        load_s, loaded = best_time(cached, args.repeat)
        cache_bytes = sum(p.stat().st_size for p in Path(cache_dir).glob("*.npz"))
    assert len(loaded) == len(features)

    print(f"data            {args.data} ({len(dataset.examples):,} questions)")
    print(f"params          {params}")
    print(f"windows         {len(features):,} ({len(features.input_ids):,} tokens, "
          f"{int(features.is_impossible.sum()):,} labelled impossible)")
    print(f"build           {build_s:.3f} s (best of {args.repeat})")
    print(f"build + write   {write_s:.3f} s (cache file {cache_bytes / 2**20:.1f} MiB)")
    print(f"cached load     {load_s * 1000:.1f} ms (best of {args.repeat})")
    print(f"speed-up        {build_s / load_s:.0f}x")


if __name__ == "__main__":
    main()
