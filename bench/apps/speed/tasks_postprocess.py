"""Measured processes of figures 4 and 5: post-processing (against the reference loop, and on figure 1's
logits) and feature building (cold and from the cache)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.apps.speed.common import SpeedError
from bench.apps.speed.measure import clock, fastest, since
from bench.apps.speed.qa_model import feature_params, load_tokenizer
from bench.apps.speed.tasks_inference import postprocess_logits, subset
from bench.core.io_utils import atomic_write_json


# ---------------------------------------------------------------------------------------- figure 4
def task_postprocess(request: dict) -> dict:
    """Figure 4, our side: vectorized vs the reference loop; ours on figure 1's float32 logits."""
    result = {"reference": _reference_comparison(request)}
    result.update(_same_logits(request))
    return result


def _reference_comparison(request: dict) -> dict:
    """postprocess_compare (``benchmarks/postprocess_speed.py``'s measurement) on dev-v2.0, or a subset of it."""
    from bench.apps.speed import postprocess_compare

    data = request["data"]
    if request["questions"]:
        from bench.core.data import load_squad
        data = str(Path(request["work"]) / "postprocess_subset.json")
        _write_squad_subset(subset(load_squad(request["data"]), request["questions"]), Path(data))
    report = postprocess_compare.main(["--data", data, "--repeats", "1" if request["questions"] else "3",
                                       "--max-seq-length", str(request["max_seq_length"]),
                                       "--doc-stride", str(request["doc_stride"])])
    return {k: v for k, v in report.items() if k != "all_runs"}


def _write_squad_subset(dataset, path: Path) -> None:
    """A SQuAD file with just these examples (one paragraph per question; contexts repeat)."""
    articles = [{"title": "subset", "paragraphs": [
        {"context": ex.context, "qas": [{"id": ex.qid, "question": ex.question, "is_impossible": ex.is_impossible,
                                         "answers": [{"text": a.text, "answer_start": a.start} for a in ex.answers]}]}
        for ex in dataset.examples]}]
    atomic_write_json(path, {"version": dataset.version, "data": articles}, indent=None)


def _same_logits(request: dict) -> dict:
    """Our post-processing of figure 1's float32 logits (the ones the pipeline's post-processing gets)."""
    import numpy as np

    from bench.core.data import load_squad
    from bench.core.features import build_features

    dataset = subset(load_squad(request["dev11"]), len(json.loads(Path(request["questions_file"]).read_text())))
    tokenizer = load_tokenizer(request["model_dir"])
    params = feature_params(request["family"], "overlap", request)
    features = build_features(dataset.examples, tokenizer, params, is_training=False)
    with np.load(request["logits_file"]) as stored:
        logits = {"start_logits": stored["start_logits"], "end_logits": stored["end_logits"]}
    begin = clock()
    preds = postprocess_logits(dataset, features, logits, request, version_2=False)
    return {"same_logits": {**since(begin), "questions": len(dataset.examples), "windows": len(features)},
            "answers": preds.predictions}


# ---------------------------------------------------------------------------------------- figure 5
def task_features(request: dict) -> dict:
    """Figure 5: build_features on dev-v2.0 cold (best of N) and load_or_build_features from the cache."""
    from bench.core.data import load_squad
    from bench.core.features import build_features, load_or_build_features

    dataset = subset(load_squad(request["data"]), request["questions"])
    tokenizer = load_tokenizer(request["model_dir"])
    params = feature_params(request["family"], "step", request)
    cold, features = fastest(lambda: build_features(dataset.examples, tokenizer, params, is_training=False),
                             request["repeats"])

    def cached():
        return load_or_build_features(dataset.examples, tokenizer, params, is_training=False,
                                      data_sha256=dataset.sha256, cache_dir=request["cache_dir"])
    cached()                                                   # builds and writes the cache file
    warm, loaded = fastest(cached, max(3, request["repeats"]))
    if len(loaded) != len(features):
        raise SpeedError("cached features differ from the built ones")
    n = len(dataset.examples)
    return {"questions": n, "windows": len(features), "cold_wall_s": cold["wall_s"], "cold_cpu_s": cold["cpu_s"],
            "cached_wall_s": warm["wall_s"], "cached_cpu_s": warm["cpu_s"],
            "cold_examples_per_s": round(n / cold["wall_s"], 1), "cached_examples_per_s": round(n / warm["wall_s"], 1),
            "cache_speedup": round(cold["wall_s"] / warm["wall_s"], 1), "params": dict(params.__dict__)}
