"""Word-level input for the recurrent families (``lstm_baseline``, ``bidaf``): tokenizer, vocabulary, vectors.

Framework-free (numpy, Hugging Face ``tokenizers``, safetensors' numpy API). The tokenizer is a
``tokenizers`` WordLevel model (NFD + lowercase + strip accents, then BERT's whitespace/punctuation
split), saved as ``tokenizer.json`` in a model folder; the feature builder reads its character
offsets exactly as it reads a subword tokenizer's, so windows, answer mapping and post-processing are
the transformers' code. Normalisation only changes the *tokens*: offsets point into the original
text, so an answer maps back to the exact context substring.

The vocabulary comes from the training file (questions and contexts, ``--vocab_min_count``,
``--vocab_max_size``); ``read_word_vectors`` reads GloVe / word2vec / fastText text files
(``.txt``/``.vec``, optionally ``.gz``) for the words of a vocabulary. ``write_word_model`` writes the
folder a run loads: config.json, tokenizer.json (+ tokenizer_config.json so transformers'
AutoTokenizer opens it without knowing the family) and model.safetensors with the initial
embedding matrix ``embeddings.word_embeddings.weight``.
"""
from __future__ import annotations

import gzip
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from bench.core.errors import BenchError
from bench.core.io_utils import atomic_path, atomic_write_text

__all__ = ["SPECIAL_TOKENS", "PAD", "UNK", "CLS", "SEP", "WordVectorError", "WordVectors", "normalize_word",
           "build_tokenizer", "count_words", "build_vocab", "unknown_rate", "read_word_vectors",
           "embedding_matrix", "write_word_model", "EMBEDDING_KEY"]

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)          # ids 0..3 in this order; PAD is 0 (padding_idx)
EMBEDDING_KEY = "embeddings.word_embeddings.weight"
# Scale of from-scratch embeddings and of words a vector file lacks when it is tuned: N(0, 0.1^2).
_INIT_STD = 0.1


class WordVectorError(BenchError, ValueError):
    """A vector file that cannot be read; the message names the file and line."""


def normalize_word(word: str) -> str:
    """What the tokenizer's normalizer does to a token (NFD, lowercase, accents dropped)."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def build_tokenizer(vocab: dict[str, int] | None = None):
    """A ``tokenizers.Tokenizer`` splitting words and punctuation, lowercased and accent-free.

    ``vocab`` maps token -> id and must start with SPECIAL_TOKENS; None gives the specials only
    (enough to split text for counting)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = vocab if vocab is not None else {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                                 normalizers.StripAccents()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
    return tokenizer


def _words(tokenizer, text: str) -> list[str]:
    """The normalised words of ``text``, as the tokenizer splits them."""
    normalized = tokenizer.normalizer.normalize_str(text)
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


def count_words(texts: Iterable[str]) -> Counter:
    splitter = build_tokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(_words(splitter, text))
    return counts


def build_vocab(counts: Counter, *, min_count: int = 1, max_size: int | None = None) -> dict[str, int]:
    """SPECIAL_TOKENS, then words seen at least ``min_count`` times, most frequent first (ties: alphabetical)."""
    kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS),
                  key=lambda w: (-counts[w], w))
    if max_size is not None:
        kept = kept[:max(0, max_size - len(SPECIAL_TOKENS))]
    return {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + kept)}


def unknown_rate(tokenizer, texts: Iterable[str]) -> tuple[float, int]:
    """Share of word tokens of ``texts`` that map to [UNK], and the number of tokens."""
    unk = tokenizer.token_to_id(UNK)
    total = unknown = 0
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        total += len(encoding.ids)
        unknown += sum(1 for i in encoding.ids if i == unk)
    return (unknown / total if total else 0.0), total


# ---------------------------------------------------------------------------------------- vectors
@dataclass
class WordVectors:
    """Vectors found for a vocabulary's words (normalised), the file's dimension and mean vector."""
    vectors: dict[str, np.ndarray]
    dim: int
    mean: np.ndarray
    lines: int


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return path.open("r", encoding="utf-8", errors="strict")


def _is_header(parts: list[str]) -> bool:
    """word2vec / fastText ``.vec`` files open with "<count> <dim>"."""
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def read_word_vectors(path: str | Path, wanted: Iterable[str] | None = None) -> WordVectors:
    """Read a text vector file, keeping the (normalised) words in ``wanted`` (None: all).

    The first occurrence of a normalised word wins (files list frequent forms first). The mean is
    over every vector of the file. A malformed line or a dimension unlike the first line's is one
    error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise WordVectorError(f"--word_vectors {path}: no such file")
    wanted = set(wanted) if wanted is not None else None
    vectors: dict[str, np.ndarray] = {}
    dim, total, count, number = None, None, 0, 0
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, 1):
                parts = line.rstrip("\r\n").rstrip(" ").split(" ")
                if number == 1 and _is_header(parts):
                    dim = int(parts[1])
                    continue
                if parts == [""]:
                    continue
                word, values = _parse_line(path, number, parts, dim)
                dim = len(values)
                total = values.astype(np.float64) if total is None else total + values
                count += 1
                key = normalize_word(word)
                if (wanted is None or key in wanted) and key not in vectors:
                    vectors[key] = values
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise WordVectorError(f"{path}:{number + 1}: cannot be read as a UTF-8 text vector file ({exc})") from None
    if count == 0:
        raise WordVectorError(f"{path}: no vectors found (expected lines 'word v1 v2 ...')")
    return WordVectors(vectors, dim, (total / count).astype(np.float32), count)


def _parse_line(path: Path, number: int, parts: list[str], dim: int | None) -> tuple[str, np.ndarray]:
    if len(parts) < 2:
        raise WordVectorError(f"{path}:{number}: malformed line (expected 'word v1 v2 ...')")
    width = dim if dim is not None else len(parts) - 1
    # A word may contain spaces (GloVe 840B): the last `width` fields are the numbers.
    if len(parts) - 1 < width or (dim is not None and len(parts) - 1 != width and not _spaced_word(parts, width)):
        raise WordVectorError(f"{path}:{number}: {len(parts) - 1} values, but the file's vectors have {width} "
                              f"dimensions (inconsistent dimension)")
    try:
        values = np.asarray(parts[-width:], dtype=np.float32)      # numpy parses the strings (fast)
    except ValueError:
        raise WordVectorError(f"{path}:{number}: malformed line (a vector value is not a number)") from None
    if not np.all(np.isfinite(values)):
        raise WordVectorError(f"{path}:{number}: malformed line (a vector value is not finite)")
    return " ".join(parts[:-width]), values


def _spaced_word(parts: list[str], width: int) -> bool:
    """More fields than the dimension: a word with spaces if the extra leading fields are not numbers."""
    extra = parts[1:len(parts) - width]
    return all(not _is_number(p) for p in extra)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def embedding_matrix(vocab: dict[str, int], dim: int, vectors: WordVectors | None, seed: int) -> tuple[np.ndarray, int]:
    """(V, dim) float32 initial embeddings and how many vocabulary words the vector file had.

    [PAD] is zero. With vectors: a word the file has gets its vector, every other word (and [UNK],
    [CLS], [SEP]) the file's mean vector. Without: N(0, 0.1^2) from ``seed``."""
    rng = np.random.default_rng(seed)
    if vectors is None:
        matrix = rng.normal(0.0, _INIT_STD, (len(vocab), dim)).astype(np.float32)
        found = 0
    else:
        matrix = np.tile(vectors.mean, (len(vocab), 1))
        found = 0
        for word, index in vocab.items():
            if word in vectors.vectors:
                matrix[index] = vectors.vectors[word]
                found += 1
    matrix[vocab[PAD]] = 0.0
    return matrix, found


# ---------------------------------------------------------------------------------------- the folder
def write_word_model(folder: str | Path, tokenizer, config: dict, matrix: np.ndarray) -> Path:
    """Write config.json, tokenizer.json, tokenizer_config.json and model.safetensors (atomic each)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "tokenizer.json", tokenizer.to_str(pretty=False))
    special = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP}
    # tokenizer_class: AutoTokenizer then needs no transformers model class for this model_type.
    atomic_write_text(folder / "tokenizer_config.json",
                      json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 30,
                                  **special}, indent=1))
    with atomic_path(folder / "model.safetensors") as partial:
        save_file({EMBEDDING_KEY: np.ascontiguousarray(matrix, dtype=np.float32)}, str(partial))
    # config.json last: a folder with a config is complete.
    atomic_write_text(folder / "config.json", json.dumps(config, indent=1, sort_keys=True))
    return folder
