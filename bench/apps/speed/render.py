"""``speed.md``: the report of ``squad-bench speed`` as markdown, one section per figure."""
from __future__ import annotations

from bench.apps.speed.common import GPU_ANCHORS, TARGETS, WINDOW
from bench.run.cpu import describe_cpu


def render_markdown(report: dict) -> str:
    figures = report["figures"]
    lines = [f"# Speed ({report['mode']} mode)", "", _machine_line(report), ""]
    for title, key, render in _SECTIONS:
        figure = figures.get(key)
        if isinstance(figure, dict) and figure.get("skipped"):
            lines += [f"## {title}", "", f"Not run: {figure['skipped']}.", ""]
        else:
            lines += render(figures, report)
    lines += [f"Total {report['seconds']:.0f} s. Wall seconds are the best repeat; CPU seconds are process "
              f"CPU time (see speed.json for every repeat).", ""]
    return "\n".join(lines)


def _machine_line(report: dict) -> str:
    machine, model = report["machine"], report["model"]
    hf = report.get("hf_versions") or {}
    baseline = ("baselines skipped (--skip_baselines)" if report["baselines_skipped"]
                else f"baseline: transformers {hf.get('transformers')} / torch {hf.get('torch')}")
    cpu = (describe_cpu(machine["cpu"]) if isinstance(machine["cpu"], dict)       # older reports: the CPU's name
           else f"{machine['cpu']}, {machine['cpu_count']} cores, native bf16: {machine['native_bf16']}")
    return (f"Model {model['name']} ({model['num_parameters'] / 1e6:.1f} M parameters, QA head "
            f"{model['head_source']}); {machine['device']} ({cpu}; {machine['torch_threads']} torch threads); "
            f"ours: torch {report['versions'].get('torch')} / transformers {report['versions'].get('transformers')}; "
            f"{baseline}. Load average before/after: {machine['load_average_before'][0]} / "
            f"{machine['load_average_after'][0]}.")


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def _target(value, target, higher=True) -> str:
    if value is None:
        return f"target {'≥' if higher else '≤'} {target}"
    met = value >= target if higher else abs(value) <= target
    return f"{'met' if met else 'NOT met'} (target {'≥' if higher else '≤'} {target})"


def _md_inference(figures: dict, report: dict) -> list[str]:
    fig = figures["inference"]
    ours, hf = fig["ours"]["runs"], fig["hf_pipeline"]
    lines = _inference_table(fig["questions"], ours, {} if hf.get("skipped") else hf["runs"])
    if hf.get("skipped"):
        return lines + ["Baseline skipped: no ratios.", ""]
    return lines + _inference_ratios(fig, ours) + [""]


def _inference_table(questions: int, ours: dict, hf_runs: dict) -> list[str]:
    lines = [f"## 1. Inference end to end ({questions} SQuAD 1.1 dev questions)", "",
             "| run | dtype | batch | questions/s | wall s | CPU s | EM | F1 |", "|---|---|---|---|---|---|---|---|"]
    for label, run in [(f"ours, {k}", v) for k, v in ours.items()] + [(f"HF pipeline, {k}", v) for k, v in hf_runs.items()]:
        scores = run.get("scores", {})
        lines.append(f"| {label} | {run['dtype']} | {run['batch_size']} | {_fmt(run['questions_per_s'])} | "
                     f"{_fmt(run['wall_s'], 2)} | {_fmt(run['cpu_s'], 2)} | {_fmt(scores.get('exact_match'), 2)} | "
                     f"{_fmt(scores.get('f1'), 2)} |")
    return lines + [""]


def _inference_ratios(fig: dict, ours: dict) -> list[str]:
    agreement = fig["agreement"]
    int8 = ours.get("int8")
    lines = [f"- Defaults (ours {ours['default']['dtype']} batch {ours['default']['batch_size']} vs pipeline "
             f"float32 batch 1): **{_fmt(fig['speedup_default'], 2)}×** — {_target(fig['speedup_default'], TARGETS['inference_default'])}; "
             f"F1 gap {_fmt(fig['f1_gap_default'], 2)} — {_target(fig['f1_gap_default'], TARGETS['f1_gap'], higher=False)}.",
             f"- Same dtype and batch (float32, batch {WINDOW['eval_batch_size']}): **{_fmt(fig['speedup_same'], 2)}×** — "
             f"{_target(fig['speedup_same'], TARGETS['inference_same'])}.",
             f"- Answer agreement (identical strings): defaults {_fmt(100 * agreement['default']['exact'], 1)}%, "
             f"same {_fmt(100 * agreement['same']['exact'], 1)}% (after SQuAD normalization "
             f"{_fmt(100 * agreement['default']['normalized'], 1)}% / {_fmt(100 * agreement['same']['normalized'], 1)}%)."]
    if int8:
        delta = int8["delta_vs_float32"]
        lines.append(f"- int8 (dynamic, per-channel weights, feed-forward outputs float32): {_fmt(int8['questions_per_s'])} "
                     f"q/s = **{_fmt(fig.get('speedup_int8'), 2)}×** the pipeline's defaults — "
                     f"{_target(fig.get('speedup_int8'), TARGETS['inference_int8'])} (the goal on CPUs without native "
                     f"bfloat16); EM/F1 change vs float32 {_fmt(delta['exact_match'], 2)} / {_fmt(delta['f1'], 2)} — "
                     f"{_target(delta['f1'], TARGETS['f1_gap'], higher=False)}.")
    return lines


def _md_training(figures: dict, report: dict) -> list[str]:
    fig = figures["training"]
    ours, hf = fig["ours"], fig["hf_trainer"]
    lines = [f"## 2. Training throughput (batch {ours['batch_size']}, max_seq_length {ours['max_seq_length']}, "
             f"{ours['steps']} steps after {ours['warmup_steps']} warm-up)", "",
             "| run | dtype | batches | samples/s | real tokens/s | padded tokens/s | CPU s/step | vs Trainer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in ours["runs"].items():
        lines.append(f"| ours {name} | {run['dtype']} | {run['batches']} | {_fmt(run['samples_per_s'], 2)} | "
                     f"{_fmt(run['real_tokens_per_s'], 0)} | {_fmt(run['padded_tokens_per_s'], 0)} | "
                     f"{_fmt(run['cpu_s'] / run['steps'], 2)} | {_fmt(fig['speedups'].get(name), 2, '×')} |")
    for name, why in fig.get("skipped_runs", {}).items():
        lines.append(f"| ours {name} | {why} | | | | | | |")
    for name, run in ({} if hf.get("skipped") else hf["runs"]).items():
        lines.append(f"| HF Trainer ({run['optimizer']}) | {run['dtype']} | padded to {ours['max_seq_length']} | "
                     f"{_fmt(run['samples_per_s'], 2)} | {_fmt(run['real_tokens_per_s'], 0)} | "
                     f"{_fmt(run['padded_tokens_per_s'], 0)} | {_fmt(run['cpu_s'] / run['steps'], 2)} | 1× |")
    lines.append("")
    if not hf.get("skipped"):
        for name, ratio in fig["speedups"].items():
            target = TARGETS["train_padded"] if "padded" in name else TARGETS["train_dynamic"]
            lines.append(f"- ours {name}: {_fmt(ratio, 2)}× Trainer — {_target(ratio, target)}.")
        lines.append("")
    return lines


def _md_eval_full(figures: dict, report: dict) -> list[str]:
    fig = figures["eval_full"]
    s = fig["stages"]
    return [f"## 3. Evaluation of dev-v2.0 ({fig['questions']:,} questions, {fig['windows']:,} windows, "
            f"{fig['dtype']}, batch {fig['batch_size']})", "",
            "| stage | wall s | CPU s | peak RSS MiB |", "|---|---|---|---|"] + [
            f"| {name} | {_fmt(t['wall_s'], 2)} | {_fmt(t['cpu_s'], 2)} | "
            f"{_fmt(fig['stage_peak_rss'].get(name, 0) / 2**20, 0)} |" for name, t in s.items()] + [
            "", f"- {fig['windows_per_s']:.1f} windows/s in the forward passes; EM {fig['scores']['exact']:.2f} / "
            f"F1 {fig['scores']['f1']:.2f} at the fixed threshold.", ""]


def _md_postprocess(figures: dict, report: dict) -> list[str]:
    fig = figures["postprocess"]
    ours, ref = fig["ours"], fig["ours"].get("reference")
    lines = ["## 4. Post-processing", ""]
    if ref and not ref.get("skipped"):
        lines.append(f"- Vectorized vs reference loop ({ref['questions']:,} dev-v2.0 questions, {ref['windows']:,} "
                     f"windows, random logits): {ref['vectorized_cpu_s']:.3f} s vs {ref['reference_cpu_s']:.3f} s CPU = "
                     f"**{ref['speedup_cpu']:.1f}×** (with every n-best dict built: {ref['speedup_with_to_dict_cpu']:.1f}×).")
    else:
        lines.append(f"- Reference loop: {(ref or {}).get('skipped', 'not run')}.")
    same = ours["same_logits"]
    hf = fig["hf_pipeline_postprocess"]
    if hf.get("skipped"):
        lines.append(f"- Ours on figure 1's float32 logits: {same['cpu_s']:.3f} s CPU for {same['questions']} questions; "
                     f"pipeline post-processing skipped.")
    else:
        lines.append(f"- Same logits as the pipeline ({same['questions']} questions of figure 1, float32): ours "
                     f"{same['cpu_s']:.3f} s CPU (n_best_size {WINDOW['n_best_size']}) vs the pipeline's "
                     f"postprocess {hf['cpu_s']:.3f} s CPU (top_k 1) = **{_fmt(fig['speedup_vs_hf_cpu'], 1)}×**; "
                     f"identical answers {_fmt(100 * fig['agreement_vs_hf']['exact'], 1)}%.")
    return lines + [""]


def _md_features(figures: dict, report: dict) -> list[str]:
    fig = figures["features"]
    return ["## 5. Feature building (dev-v2.0)", "",
            f"- {fig['questions']:,} questions → {fig['windows']:,} windows: cold {fig['cold_wall_s']:.3f} s "
            f"({fig['cold_examples_per_s']:,.0f} examples/s), cached {fig['cached_wall_s'] * 1000:.1f} ms "
            f"({fig['cached_examples_per_s']:,.0f} examples/s): **{fig['cache_speedup']:.0f}×** — "
            f"{_target(fig['cache_speedup'], TARGETS['feature_cache'])}.", ""]


def _md_gpu(figures: dict, report: dict) -> list[str]:
    fig = figures.get("gpu")
    if not fig:
        return ["## GPU", "", "No GPU here: the GPU figure (ELECTRA-base training at 384 in bf16/fp16, MFU, "
                "evaluation time) was not run.", ""]
    lines = [f"## GPU ({fig['device_name']}): ELECTRA-base, max_seq_length 384", "",
             "| dtype | sequences/s | real tokens/s | MFU |", "|---|---|---|---|"]
    for name, run in fig["runs"].items():
        lines.append(f"| {name} | {_fmt(run['samples_per_s'], 1)} | {_fmt(run['real_tokens_per_s'], 0)} | "
                     f"{_fmt(100 * run['mfu'] if run['mfu'] else None, 1, '%')} |")
    lines += ["", f"- Anchors: NVIDIA DLE ELECTRA-base {GPU_ANCHORS['electra_base_a100_40gb_amp_seq_per_s']} seq/s "
              f"(A100-40GB, AMP); BERT-large {GPU_ANCHORS['bert_large_a100_80gb_amp_seq_per_s']} seq/s (A100-80GB, AMP).",
              f"- dev-v2.0 evaluation: {fig['eval']['wall_s']:.1f} s ({fig['eval']['windows_per_s']:.0f} windows/s).", ""]
    return lines


def _md_cpu_peak(figures: dict, report: dict) -> list[str]:
    fig = figures.get("cpu_peak")
    if not fig:                                   # reports written before the probe existed
        return []
    peaks = ", ".join(f"{dtype} **{peak['flops_per_s'] / 1e9:,.1f} GFLOP/s**" for dtype, peak in fig["peaks"].items())
    lines = ["## The CPU's own limit: GEMM peak", "",
             f"- {fig['size']}×{fig['size']} matmul repeated for about {fig.get('inputs', {}).get('seconds', '?')} s per dtype, best "
             f"repeat, {fig['threads']} torch threads: {peaks}.",
             f"- Share of that peak (6 × {report['model'].get('matmul_parameters', 0) / 1e6:.2f} M non-embedding "
             f"parameters × real tokens/s in training, 2 × in inference; attention's own FLOPs not counted):", "",
             "| run | share of its dtype's peak |", "|---|---|"]
    for kind, runs in fig["fractions"].items():
        lines += [f"| {kind}: {name} | {_fmt(100 * share if share is not None else None, 1, '%')} |"
                  for name, share in runs.items()]
    return lines + [""]


def _md_frameworks(figures: dict, report: dict) -> list[str]:
    fig = figures.get("frameworks")
    if not fig:                                   # reports written before the figure existed
        return []
    lines = [f"## 6. MXNet backend vs torch backend (float32, training batch {fig['batch_size']} with dynamic padding "
             f"+ length grouping, evaluation batch {fig['eval_batch_size']}, max_seq_length {fig['max_seq_length']})",
             "", "| backend | training samples/s | real tokens/s | evaluation windows/s | peak RSS MiB |",
             "|---|---|---|---|---|"]
    for backend in ("torch", "mxnet"):
        run = fig[backend]
        lines.append(f"| {backend} ({run['device']}) | {_fmt(run['training']['samples_per_s'], 2)} | "
                     f"{_fmt(run['training']['real_tokens_per_s'], 0)} | {_fmt(run['evaluation']['windows_per_s'], 2)} | "
                     f"{_fmt(run['peak_memory']['bytes'] / 2**20, 0)} |")
    ratios = fig["ratios"]
    return lines + ["", f"- MXNet / torch: training **{_fmt(ratios['training'], 2)}×** — "
                    f"{_target(ratios['training'], TARGETS['mxnet_vs_torch'])}; evaluation "
                    f"**{_fmt(ratios['evaluation'], 2)}×** — {_target(ratios['evaluation'], TARGETS['mxnet_vs_torch'])}.", ""]


def _md_memory(figures: dict, report: dict) -> list[str]:
    lines = ["## 7. Peak memory", "", "| process / stage | kind | MiB |", "|---|---|---|"]
    for name, peak in figures["memory"].items():
        lines.append(f"| {name} | {peak['kind']} | {peak['bytes'] / 2**20:,.0f} |")
    return lines + [""]


_SECTIONS = (("The CPU's own limit", "cpu_peak", _md_cpu_peak), ("1. Inference end to end", "inference", _md_inference), ("2. Training throughput", "training", _md_training),
             ("3. Evaluation of dev-v2.0", "eval_full", _md_eval_full), ("4. Post-processing", "postprocess", _md_postprocess),
             ("5. Feature building", "features", _md_features), ("GPU", "gpu", _md_gpu),
             ("6. MXNet backend vs torch backend", "frameworks", _md_frameworks), ("7. Peak memory", "memory", _md_memory))
