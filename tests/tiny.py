"""Offline builders of tiny tokenizers for tests (the tiny models themselves: ``tests.tiny_models``)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path


def squad_texts(squad_dir: Path, limit: int = 400) -> list[str]:
    """Contexts and questions from the real training sample, to train tokenizers on."""
    with gzip.open(squad_dir / "train-v2.0.first10.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    texts = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            texts.append(para["context"])
            texts.extend(qa["question"] for qa in para["qas"])
    return texts[:limit] if limit else texts


def build_roberta_tokenizer_dir(out_dir: Path, squad_dir: Path, vocab_size: int = 2000) -> Path:
    """Train a byte-level BPE with RoBERTa's special tokens and template; save it as a HF tokenizer folder.

    (transformers 5.x ignores ``vocab_file=`` on fast tokenizers, so the trained
    tokenizer object is handed over directly.)
    """
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(squad_texts(squad_dir, limit=0), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=True,
        add_prefix_space=False)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                               sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                               mask_token="<mask>")
    tok.save_pretrained(str(out_dir))
    return out_dir
