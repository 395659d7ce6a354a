"""The Hugging Face side of ``squad-bench speed``: runs inside its own transformers 4.57.6 environment.

``QuestionAnsweringPipeline`` was removed in transformers 5.x, so ``bench.apps.speed`` creates a
virtual environment with ``torch==2.13.0 transformers==4.57.6 accelerate==1.12.0`` (see
``baseline_env``) and runs this file there, by path, as a subprocess:

    HF_ENV/bin/python bench/apps/speed/hf_worker.py REQUEST.json RESULT.json

Standalone on purpose: it imports nothing from ``bench``. That environment does not have ``bench``
installed (nor its dependencies in the versions bench needs), and the baseline must be Hugging Face
code only, fed the same model folder, questions and settings. So the few helpers it shares in
spirit with ``measure.py`` (the clock, the peak memory) are written out here. torch and transformers
are imported inside the functions, so that bench's own tests can import this module without them.

The request is ``{"task": ..., ...}`` with one of these tasks (each returns timings, the
process's peak resident memory and the library versions):

``pipeline``
    ``pipeline("question-answering")`` over the questions of ``questions_file`` (a JSON list of
    {id, question, context}) once per entry of ``runs`` (each {name, batch_size or null for the
    pipeline's default, dtype}); returns every run's answers and wall/CPU seconds.
``postprocess``
    The pipeline's own ``preprocess`` + ``postprocess`` around logits given in ``logits_file``
    (one row per window, in the pipeline's window order): times ``postprocess`` alone.
``train``
    ``transformers.Trainer`` with ``AutoModelForQuestionAnswering`` on the padded features of
    ``features_file`` for ``warmup_steps + steps`` steps per entry of ``runs`` ({name, bf16});
    returns samples/s and real (non-pad) tokens/s over the steps after the warm-up.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(
        os.path.abspath(__file__)):
    # Run by path, Python puts this file's folder first on sys.path: its sibling modules must not
    # shadow what the baseline imports.
    del sys.path[0]

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict:
    wall, cpu = clock()
    return {"wall_s": round(wall - start[0], 4), "cpu_s": round(cpu - start[1], 4)}


def peak_memory() -> dict:
    import torch
    if torch.cuda.is_available():
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated())}
    return {"kind": "rss", "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "accelerate", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def device_index() -> int:
    import torch
    return 0 if torch.cuda.is_available() else -1


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ pipeline
def make_pipeline(model_dir: str, dtype: str):
    import torch
    from transformers import pipeline
    return pipeline("question-answering", model=model_dir, tokenizer=model_dir, device=device_index(),
                    torch_dtype=getattr(torch, dtype))


def answer_all(qa, questions: list[dict], request: dict, batch_size: int | None) -> list[dict]:
    kwargs = {"max_seq_len": request["max_seq_length"], "doc_stride": request["doc_stride"],
              "max_answer_len": request["max_answer_length"]}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    outputs = qa(question=[q["question"] for q in questions], context=[q["context"] for q in questions], **kwargs)
    return outputs if isinstance(outputs, list) else [outputs]


def run_pipeline(request: dict) -> dict:
    questions = read_json(request["questions_file"])
    runs = {}
    for run in request["runs"]:
        qa = make_pipeline(request["model_dir"], run["dtype"])
        answer_all(qa, questions[:request.get("warmup_questions", 8)], request, run["batch_size"])  # warm-up
        start = clock()
        outputs = answer_all(qa, questions, request, run["batch_size"])
        timing = since(start)
        runs[run["name"]] = {**timing, "questions": len(questions), "batch_size": run["batch_size"] or 1,
                             "dtype": run["dtype"], "questions_per_s": round(len(questions) / timing["wall_s"], 2),
                             "answers": {q["id"]: o["answer"] for q, o in zip(questions, outputs)}}
    return {"runs": runs}


# ------------------------------------------------------------------------------------------ postprocess
def pipeline_windows(qa, question: dict, request: dict) -> list[dict]:
    return list(qa.preprocess({"question": question["question"], "context": question["context"]},
                              doc_stride=request["doc_stride"], max_seq_len=request["max_seq_length"]))


def attach_logits(qa, questions: list[dict], logits, request: dict) -> tuple[list[list[dict]], int]:
    """The pipeline's windows of every question with our logits attached; checks the token ids match."""
    import torch

    outputs, row = [], 0
    for question in questions:
        windows = pipeline_windows(qa, question, request)
        for window in windows:
            ids = window["input_ids"][0].numpy()
            if not np.array_equal(ids, logits["input_ids"][row, :len(ids)]):
                raise SystemExit(f"window {row} of question {question['id']}: token ids differ from ours")
            width = len(ids)
            window["start"] = torch.from_numpy(logits["start_logits"][row, :width].copy())[None]
            window["end"] = torch.from_numpy(logits["end_logits"][row, :width].copy())[None]
            row += 1
        outputs.append(windows)
    if row != len(logits["start_logits"]):
        raise SystemExit(f"{row} pipeline windows for {len(logits['start_logits'])} rows of logits")
    return outputs, row


def run_postprocess(request: dict) -> dict:
    """Times the pipeline's postprocess on given logits; checks the windows match the given token ids."""
    questions = read_json(request["questions_file"])
    logits = np.load(request["logits_file"])
    qa = make_pipeline(request["model_dir"], "float32")
    outputs, windows = attach_logits(qa, questions, logits, request)      # preprocessing is not timed
    start = clock()
    answers = [qa.postprocess(question_windows, top_k=1, max_answer_len=request["max_answer_length"])
               for question_windows in outputs]
    timing = since(start)
    return {**timing, "questions": len(questions), "windows": windows,
            "answers": {q["id"]: a["answer"] for q, a in zip(questions, answers)}}


# ------------------------------------------------------------------------------------------ train
def load_padded_features(path: str):
    """Windows padded to max_seq_length, as run_qa.py prepares them by default (pad_to_max_length)."""
    import torch

    class PaddedFeatures(torch.utils.data.Dataset):
        def __init__(self):
            with np.load(path) as arrays:
                self.arrays = {name: torch.from_numpy(arrays[name].astype(np.int64)) for name in arrays.files}

        def __len__(self) -> int:
            return len(self.arrays["input_ids"])

        def __getitem__(self, i: int) -> dict:
            return {name: values[i] for name, values in self.arrays.items()}

    return PaddedFeatures()


def counting_collator(token_counts: list):
    """default_data_collator that also records each batch's real (non-pad) tokens, in batch order."""
    from transformers import default_data_collator

    def collate(items):
        batch = default_data_collator(items)
        token_counts.append(int(batch["attention_mask"].sum()))
        return batch
    return collate


def step_clock_callback(stamps: list):
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(clock())
    return StepClock()


def train_once(request: dict, dataset, bf16: bool) -> dict:
    import torch
    from transformers import AutoModelForQuestionAnswering, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(request["model_dir"])
    warmup, steps = request["warmup_steps"], request["steps"]
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=request["batch_size"],
                                 max_steps=warmup + steps, bf16=bf16, use_cpu=not torch.cuda.is_available(),
                                 save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
                                 dataloader_num_workers=0, seed=0)
        tokens, stamps = [], []
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counting_collator(tokens),
                          callbacks=[step_clock_callback(stamps)])
        trainer.train()
    (wall0, cpu0), (wall1, cpu1) = stamps[warmup - 1], stamps[-1]
    samples = steps * request["batch_size"]
    real_tokens = sum(tokens[warmup:warmup + steps])
    return {"steps": steps, "warmup_steps": warmup, "batch_size": request["batch_size"],
            "wall_s": round(wall1 - wall0, 4), "cpu_s": round(cpu1 - cpu0, 4),
            "samples_per_s": round(samples / (wall1 - wall0), 3),
            "real_tokens_per_s": round(real_tokens / (wall1 - wall0), 1),
            "padded_tokens_per_s": round(samples * dataset.arrays["input_ids"].shape[1] / (wall1 - wall0), 1),
            "optimizer": str(trainer.args.optim), "dtype": "bfloat16" if bf16 else "float32"}


def run_train(request: dict) -> dict:
    dataset = load_padded_features(request["features_file"])
    return {"runs": {run["name"]: train_once(request, dataset, run["bf16"]) for run in request["runs"]}}


TASKS = {"pipeline": run_pipeline, "postprocess": run_postprocess, "train": run_train}


def main(argv: list[str]) -> int:
    import torch

    request_path, result_path = argv
    request = read_json(request_path)
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    result = TASKS[request["task"]](request)
    result.update({"task": request["task"], "peak_memory": peak_memory(), "versions": versions(),
                   "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"})
    tmp = f"{result_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
