"""Measured processes of figures 1 and 3: our answering path end to end, and dev-v2.0 stage by stage."""
from __future__ import annotations

from pathlib import Path

from bench.apps.speed.measure import StagePeaks, clock, since
from bench.apps.speed.qa_model import (default_dtype, device, feature_params, for_inference, load_qa_model,
                                       load_tokenizer, predict_logits, threads)
from bench.core.io_utils import atomic_write_json


def subset(dataset, limit):
    """The run's reproducible subset (seed 0) of ``limit`` questions; all of them when ``limit`` is None."""
    from bench.run.pipeline import subset as run_subset
    return run_subset(dataset, limit, seed=0)


# ---------------------------------------------------------------------------------------- answering
def postprocess_logits(dataset, features, logits: dict, request: dict, version_2: bool | None = False):
    """Our post-processing of ``logits`` (candidates, null scores, answers): a QAPredictions."""
    from bench.core.postprocess import candidates_from_logits, null_scores_from_logits, postprocess

    start_logits, end_logits = logits["start_logits"], logits["end_logits"]
    candidates = candidates_from_logits(start_logits, end_logits, features, request["n_best_size"])
    return postprocess(dataset, features, candidates, null_scores_from_logits(start_logits, end_logits),
                       n_best_size=request["n_best_size"], max_answer_length=request["max_answer_length"],
                       version_2_with_negative=version_2)


def answer_questions(run_model, tokenizer, dataset, params, request: dict, *, autocast_dtype: str, batch_size: int,
                     version_2: bool = False) -> tuple[dict, object, dict]:
    """Our whole answering path: windows, forward passes, post-processing. Returns (answers, features, logits).

    ``run_model, autocast_dtype`` come from for_inference(model, dtype), called once, untimed.
    """
    from bench.core.features import build_features

    features = build_features(dataset.examples, tokenizer, params, is_training=False)
    logits = predict_logits(run_model, features, autocast_dtype=autocast_dtype, batch_size=batch_size,
                            pad_id=tokenizer.pad_token_id or 0)
    preds = postprocess_logits(dataset, features, logits, request, version_2)
    return preds.predictions, features, logits


# ---------------------------------------------------------------------------------------- figure 1
def task_inference(request: dict) -> dict:
    """Figure 1, our side: default (bf16 where native), float32 at batch 16, int8; plus logits for figure 4."""
    from bench.core.data import load_squad

    dataset = subset(load_squad(request["data"]), request["questions"])
    _write_questions(dataset, Path(request["questions_file"]))
    model, tokenizer = load_qa_model(request["model_dir"], device()), load_tokenizer(request["model_dir"])
    params = feature_params(model.family, "overlap", request)   # Hugging Face's doc_stride is an overlap
    runs = {"default": (default_dtype(), request["eval_batch_size"]), "same": ("float32", request["eval_batch_size"])}
    if device().type == "cpu":
        runs["int8"] = ("int8", request["eval_batch_size"])
    results = {}
    for name, (dtype, batch_size) in runs.items():
        results[name], features, logits = _inference_run(model, tokenizer, dataset, params, request, dtype, batch_size)
        if name == "same":
            _save_logits(Path(request["logits_file"]), features, logits)
    if "int8" in results:
        results["int8"]["delta_vs_float32"] = {k: round(results["int8"]["scores"][k] - results["same"]["scores"][k], 3)
                                               for k in ("exact_match", "f1")}
    return {"runs": results, "questions": len(dataset.examples), "question_ids": [ex.qid for ex in dataset.examples],
            "threads": threads()}


def _inference_run(model, tokenizer, dataset, params, request: dict, dtype: str, batch_size: int):
    """One timed pass of the answering path in ``dtype`` (after an untimed warm-up): (run, features, logits)."""
    from bench.core.scoring import evaluate

    run_model, autocast_dtype = for_inference(model, dtype)
    answer_questions(run_model, tokenizer, subset(dataset, 16), params, request, autocast_dtype=autocast_dtype,
                     batch_size=batch_size)                                    # warm-up, not timed
    start = clock()
    answers, features, logits = answer_questions(run_model, tokenizer, dataset, params, request,
                                                 autocast_dtype=autocast_dtype, batch_size=batch_size)
    timing = since(start)
    scores = evaluate(dataset, answers)
    run = {**timing, "dtype": dtype, "batch_size": batch_size, "windows": len(features),
           "real_tokens": int(features.lengths.sum()),
           "questions_per_s": round(len(dataset.examples) / timing["wall_s"], 2),
           "scores": {"exact_match": round(scores["exact_match"], 3), "f1": round(scores["f1"], 3)},
           "answers": answers}
    return run, features, logits


def _write_questions(dataset, path: Path) -> None:
    atomic_write_json(path, [{"id": ex.qid, "question": ex.question, "context": ex.context}
                             for ex in dataset.examples], indent=None)


def _save_logits(path: Path, features, logits: dict) -> None:
    """Start/end logits and token ids per window, padded, for the pipeline's post-processing (figure 4)."""
    import numpy as np

    from bench.core.features import batch_arrays

    ids = batch_arrays(features, np.arange(len(features)), pad_id=0)["input_ids"].astype(np.int32)
    width = ids.shape[1]
    np.savez(path, input_ids=ids, start_logits=logits["start_logits"][:, :width],
             end_logits=logits["end_logits"][:, :width])


# ---------------------------------------------------------------------------------------- figure 3
def task_eval_full(request: dict) -> dict:
    """Figure 3: dev-v2.0 with our defaults, stage by stage (features, forward, post-processing, scoring)."""
    from bench.core.data import load_squad

    dataset = subset(load_squad(request["data"]), request["questions"])
    model, tokenizer = load_qa_model(request["model_dir"], device()), load_tokenizer(request["model_dir"])
    params, dtype = feature_params(model.family, "step", request), default_dtype()
    run_model, autocast_dtype = for_inference(model, dtype)
    stages, peaks, features, scores = _evaluate_in_stages(run_model, autocast_dtype, tokenizer, dataset, params,
                                                          request)
    return {"questions": len(dataset.examples), "windows": len(features), "real_tokens": int(features.lengths.sum()),
            "dtype": dtype,
            "batch_size": request["eval_batch_size"], "stages": stages, "stage_peak_rss": peaks,
            "windows_per_s": round(len(features) / stages["forward"]["wall_s"], 2),
            "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 3),
            "scores": {"exact": round(scores["exact"], 3), "f1": round(scores["f1"], 3),
                       "best_f1": round(scores.get("best_f1", scores["f1"]), 3)}, "threads": threads()}


def _evaluate_in_stages(run_model, autocast_dtype: str, tokenizer, dataset, params, request: dict):
    """Features, forward passes, post-processing and scoring, each timed with its peak resident set:
    (stage timings, stage peaks, features, scores)."""
    from bench.core.features import build_features
    from bench.core.scoring import evaluate

    peaks, stages, out = StagePeaks(), {}, {}
    steps = (("features", lambda: build_features(dataset.examples, tokenizer, params, is_training=False)),
             ("forward", lambda: predict_logits(run_model, out["features"], autocast_dtype=autocast_dtype,
                                                batch_size=request["eval_batch_size"],
                                                pad_id=tokenizer.pad_token_id or 0)),
             ("postprocess", lambda: postprocess_logits(dataset, out["features"], out["forward"], request, None)),
             ("scoring", lambda: evaluate(dataset, out["postprocess"].predictions, na_probs=out["postprocess"].na_prob)))
    for name, step in steps:
        with peaks.stage(name):
            start = clock()
            out[name] = step()
            stages[name] = since(start)
    return stages, peaks.close(), out["features"], out["scoring"]

