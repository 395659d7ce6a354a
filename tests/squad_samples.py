"""Sample SQuAD data for tests: small files cut from the real shared data (fast end-to-end runs),
and a few hand-written question/context pairs (model-level tests, ``tests.tiny_models.encode_qa_batch``)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

QUESTIONS = ["When was the tower built?", "Who designed the bridge over the river?",
             "What colour is the sky?", "Where is the museum?"]
CONTEXTS = ["The tower was built in 1889 by a team of engineers for the world fair in the city.",
            "The bridge over the river was designed by a young architect from the northern province.",
            "On a clear day the sky is blue, but at sunset it turns orange and then deep red.",
            "The museum stands in the old town square, next to the cathedral and the town hall."]


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
