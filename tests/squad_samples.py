"""Small SQuAD files cut from the real shared data, for fast end-to-end tests."""
from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_sample(squad_dir: Path, out_path: Path, *, num_questions: int, version: str = "2.0",
                 source: str = "train-v2.0.first10.json.gz", max_context_chars: int = 700) -> Path:
    """Take the first ``num_questions`` questions (short paragraphs only) into a new SQuAD file.

    For ``version="1.1"`` unanswerable questions are left out and the v2 fields dropped.
    """
    with gzip.open(squad_dir / source, "rt", encoding="utf-8") as f:
        data = json.load(f)
    taken = 0
    articles = []
    for article in data["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if taken >= num_questions or len(para["context"]) > max_context_chars:
                continue
            qas = []
            for qa in para["qas"]:
                if taken >= num_questions:
                    break
                if version == "1.1":
                    if qa.get("is_impossible"):
                        continue
                    qa = {"id": qa["id"], "question": qa["question"], "answers": qa["answers"]}
                qas.append(qa)
                taken += 1
            if qas:
                paragraphs.append({"context": para["context"], "qas": qas})
        if paragraphs:
            articles.append({"title": article["title"], "paragraphs": paragraphs})
    out_path.write_text(json.dumps({"version": f"v{version}", "data": articles}), encoding="utf-8")
    return out_path
