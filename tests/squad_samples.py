"""Small SQuAD files cut from the real shared data, for fast end-to-end tests."""
from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_sample(squad_dir: Path, out_path: Path, *, num_questions: int, version: str = "2.0",
                 source: str = "train-v2.0.first10.json.gz", max_context_chars: int = 700,
                 unanswerable_share: float = 0.25) -> Path:
    """Write ``num_questions`` real questions on short paragraphs into a new SQuAD file.

    For ``version="2.0"`` about ``unanswerable_share`` of them are unanswerable; for
    ``"1.1"`` none are, and the v2 fields are dropped. Questions keep their file order.
    """
    with gzip.open(squad_dir / source, "rt", encoding="utf-8") as f:
        data = json.load(f)
    wanted_impossible = int(num_questions * unanswerable_share) if version == "2.0" else 0
    quota = {True: wanted_impossible, False: num_questions - wanted_impossible}
    articles = []
    for article in data["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if len(para["context"]) > max_context_chars:
                continue
            qas = []
            for qa in para["qas"]:
                impossible = bool(qa.get("is_impossible"))
                if quota[impossible] == 0:
                    continue
                quota[impossible] -= 1
                qas.append(qa if version == "2.0" else
                           {"id": qa["id"], "question": qa["question"], "answers": qa["answers"]})
            if qas:
                paragraphs.append({"context": para["context"], "qas": qas})
        if paragraphs:
            articles.append({"title": article["title"], "paragraphs": paragraphs})
    out_path.write_text(json.dumps({"version": f"v{version}", "data": articles}), encoding="utf-8")
    return out_path
