"""Figure arithmetic of ``squad-bench speed``: best repeats, ratios, scores, answer agreement,
peak memory, MFU and shares of the CPU's GEMM peak, the dtypes figure 2 measures. Pure functions
on the results of the measured processes; no framework."""
from __future__ import annotations

# Dense bf16/fp16 tensor-core peak FLOP/s by GPU name (first match wins), for MFU.
PEAK_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
              ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("V100", 125e12), ("T4", 65e12),
              ("RTX 4090", 165e12), ("A6000", 155e12))


# ---------------------------------------------------------------------------------------- figure 1
def best_runs(results: list[dict]) -> dict:
    """Per run name, the repeat with the shortest wall time, plus every repeat's wall/CPU seconds."""
    if results[0].get("skipped"):
        return results[0]
    best = {}
    for result in results:
        for name, run in result["runs"].items():
            if name not in best or run["wall_s"] < best[name]["wall_s"]:
                best[name] = dict(run)
    for name in best:
        best[name]["all_repeats"] = [[r["runs"][name]["wall_s"], r["runs"][name]["cpu_s"]] for r in results]
    return {**results[-1], "runs": best}


def compare_inference(ours: dict, theirs: dict, last: dict, data: dict) -> dict:
    """Figure 1 from the best repeats of both sides: speed-ups, the pipeline's EM/F1, answer agreement."""
    figure = {"ours": _without_answers(ours), "hf_pipeline": _without_answers(theirs),
              "questions": last["questions"], "data": data["dev11"]}
    if theirs.get("skipped"):
        figure.update({"speedup_default": None, "speedup_same": None, "agreement": None})
        return figure
    for name in ("default", "same"):
        figure["hf_pipeline"]["runs"][name]["scores"] = score_answers(data["dev11"], last["question_ids"],
                                                                      theirs["runs"][name]["answers"])
    pairs = {"default": ("default", "default"), "same": ("same", "same")}
    figure["speedup_default"], figure["speedup_same"] = (
        ratio(ours["runs"][a]["questions_per_s"], theirs["runs"][b]["questions_per_s"]) for a, b in pairs.values())
    figure["f1_gap_default"] = round(ours["runs"]["default"]["scores"]["f1"]
                                     - figure["hf_pipeline"]["runs"]["default"]["scores"]["f1"], 3)
    if "int8" in ours["runs"]:       # the reduced-precision path against the pipeline's defaults (AVX2-only CPUs' lever)
        figure["speedup_int8"] = ratio(ours["runs"]["int8"]["questions_per_s"], theirs["runs"]["default"]["questions_per_s"])
    figure["agreement"] = {name: answer_agreement(ours["runs"][a]["answers"], theirs["runs"][b]["answers"])
                           for name, (a, b) in pairs.items()}
    return figure


def _without_answers(result: dict) -> dict:
    if result.get("skipped"):
        return result
    return {**result, "runs": {name: {k: v for k, v in run.items() if k != "answers"}
                               for name, run in result["runs"].items()}}


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def score_answers(data_file: str, question_ids: list[str], answers: dict) -> dict:
    """EM/F1 (bench.core.scoring) of ``answers`` on the questions ``question_ids`` of ``data_file``."""
    import dataclasses

    from bench.core.data import load_squad
    from bench.core.scoring import evaluate

    dataset = load_squad(data_file)
    wanted = set(question_ids)
    subset = dataclasses.replace(dataset, examples=[ex for ex in dataset.examples if ex.qid in wanted])
    scores = evaluate(subset, answers)
    return {"exact_match": round(scores.get("exact_match", scores.get("exact")), 3), "f1": round(scores["f1"], 3)}


def answer_agreement(ours: dict, theirs: dict) -> dict:
    """How often two systems give the same answer to the same question.

    ``exact``: share of the common questions whose answer strings are identical; ``normalized``:
    identical after SQuAD's answer normalization (case, punctuation, articles, whitespace).
    """
    from bench.core.scoring import normalize_answer

    common = sorted(set(ours) & set(theirs))
    if not common:
        return {"questions": 0, "exact": None, "normalized": None}
    exact = sum(ours[q] == theirs[q] for q in common)
    normalized = sum(normalize_answer(ours[q]) == normalize_answer(theirs[q]) for q in common)
    return {"questions": len(common), "exact": round(exact / len(common), 4),
            "normalized": round(normalized / len(common), 4)}


# ---------------------------------------------------------------------------------------- figures 2 and 4
def compare_training(ours: dict, theirs: dict, skipped_runs: dict | None = None) -> dict:
    """Figure 2: each of our runs against the Trainer run of the same dtype (samples/s); the rows
    not measured (``training_dtypes``) under ``skipped_runs`` with why."""
    figure = {"ours": ours, "hf_trainer": theirs, "speedups": {}, "skipped_runs": skipped_runs or {}}
    if not theirs.get("skipped"):
        for name, run in ours["runs"].items():
            baseline = theirs["runs"].get(run["dtype"])
            figure["speedups"][name] = ratio(run["samples_per_s"], baseline["samples_per_s"]) if baseline else None
    return figure


def compare_postprocess(ours: dict, theirs: dict) -> dict:
    """Figure 4: ours on figure 1's logits against the pipeline's post-processing of the same logits."""
    figure = {"ours": {k: v for k, v in ours.items() if k != "answers"}, "hf_pipeline_postprocess":
              {k: v for k, v in theirs.items() if k != "answers"}}
    if not theirs.get("skipped"):
        figure["speedup_vs_hf_cpu"] = ratio(theirs["cpu_s"], ours["same_logits"]["cpu_s"])
        figure["speedup_vs_hf_wall"] = ratio(theirs["wall_s"], ours["same_logits"]["wall_s"])
        figure["agreement_vs_hf"] = answer_agreement(ours["answers"], theirs["answers"])
    return figure


# ---------------------------------------------------------------------------------------- figure 6
def compare_frameworks(runs: dict) -> dict:
    """The frameworks figure from every repeat of each backend: the fastest training and the fastest evaluation
    of each (they may come from different repeats), and MXNet / torch for both."""
    best = {backend: {"training": max((r["training"] for r in results), key=lambda t: t["samples_per_s"]),
                      "evaluation": max((r["evaluation"] for r in results), key=lambda t: t["windows_per_s"]),
                      "peak_memory": max((r["peak_memory"] for r in results), key=lambda m: m["bytes"]),
                      "device": results[-1]["device"],
                      "all_repeats": [[r["training"]["samples_per_s"], r["evaluation"]["windows_per_s"]]
                                      for r in results]}
            for backend, results in runs.items()}
    last = runs["torch"][-1]
    return {**best, "batch_size": last["batch_size"], "eval_batch_size": last["eval_batch_size"],
            "max_seq_length": last["max_seq_length"],
            "ratios": {"training": ratio(best["mxnet"]["training"]["samples_per_s"],
                                         best["torch"]["training"]["samples_per_s"]),
                       "evaluation": ratio(best["mxnet"]["evaluation"]["windows_per_s"],
                                           best["torch"]["evaluation"]["windows_per_s"])}}


def memory_figure(figures: dict) -> dict:
    """Figure 6: the peak memory every measured process reported, by figure and side."""
    table = {}
    for figure_name, figure in figures.items():
        for side, result in figure.items():
            if isinstance(result, dict) and "peak_memory" in result:
                table[f"{figure_name}/{side}"] = result["peak_memory"]
            if isinstance(result, dict) and "stage_peak_rss" in result:
                table.update(_stage_peaks(f"{figure_name}/{side}", result["stage_peak_rss"]))
        if isinstance(figure, dict) and "stage_peak_rss" in figure:
            table.update(_stage_peaks(figure_name, figure["stage_peak_rss"]))
        if isinstance(figure, dict) and "peak_memory" in figure:
            table[figure_name] = figure["peak_memory"]
    return table


def _stage_peaks(prefix: str, peaks: dict) -> dict:
    return {f"{prefix}/{stage}": {"kind": "rss_sampled", "bytes": peak} for stage, peak in peaks.items()}


# ---------------------------------------------------------------------------------------- GPU
def peak_flops(device_name: str) -> float | None:
    """Dense bf16/fp16 tensor-core peak FLOP/s of a GPU, by name; None when unknown."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu(num_parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: 6 x parameters x tokens/s (forward + backward) over the peak."""
    return peak_fraction(num_parameters, tokens_per_s, peak, training=True)


def peak_fraction(num_parameters: int, tokens_per_s: float | None, peak: float | None, *,
                  training: bool) -> float | None:
    """Share of ``peak`` FLOP/s the model's matrix multiplies use: 6 FLOPs per parameter per token
    in training (forward + backward), 2 in inference (forward); None without a peak or a rate."""
    if not peak or not tokens_per_s:
        return None
    return round((6.0 if training else 2.0) * num_parameters * tokens_per_s / peak, 4)


# ---------------------------------------------------------------------------------------- the CPU's limit
EMULATED_BF16_SKIP = "skipped: bfloat16 is emulated on this CPU (no AVX-512 BF16/AMX)"


def training_dtypes(device: str, default_dtype: str, native_bf16: bool) -> tuple[list[str], dict[str, str]]:
    """Figure 2's dtypes (float32 and the machine's low precision) and the rows it skips, with why.

    A CPU without native bfloat16 (bench.run.cpu) would only emulate it (24x slower than float32 in
    training on an AVX2-only EPYC): its bfloat16 rows are skipped rather than reported as if they meant
    something. A GPU measures its default low precision (bfloat16, or float16 on older GPUs).
    """
    if device == "cuda":
        return ["float32", default_dtype if default_dtype != "float32" else "bfloat16"], {}
    if native_bf16:
        return ["float32", "bfloat16"], {}
    return ["float32"], {f"bfloat16 {batches}": EMULATED_BF16_SKIP for batches in ("dynamic", "padded")}


def peak_fractions(figures: dict, num_parameters: int, peaks: dict) -> dict:
    """Training and inference as a share of the GEMM probe's peak of their dtype (``peaks``:
    dtype -> FLOP/s): every training run, figure 1's runs end to end, figure 3's forward passes."""
    fractions = {"training": {}, "inference": {}}
    training = figures.get("training", {})
    for name, run in ({} if training.get("skipped") else training["ours"]["runs"]).items():
        fractions["training"][name] = peak_fraction(num_parameters, run["real_tokens_per_s"], peaks.get(run["dtype"]),
                                                    training=True)
    inference = figures.get("inference", {})
    for name, run in ({} if inference.get("skipped") else inference["ours"]["runs"]).items():
        fractions["inference"][f"figure 1 {name} (end to end)"] = peak_fraction(
            num_parameters, _per_second(run.get("real_tokens"), run["wall_s"]), peaks.get(run["dtype"]), training=False)
    evaluation = figures.get("eval_full", {})
    if not evaluation.get("skipped") and "real_tokens" in evaluation:
        fractions["inference"]["figure 3 forward passes"] = peak_fraction(
            num_parameters, _per_second(evaluation["real_tokens"], evaluation["stages"]["forward"]["wall_s"]),
            peaks.get(evaluation["dtype"]), training=False)
    return fractions


def _per_second(count, seconds) -> float | None:
    return count / seconds if count and seconds else None
