"""The model folder of a from-scratch word-level family (``--model_name lstm_baseline`` / ``bidaf``).

Such a family has no pretrained checkpoint: before the model loads, the stage driver calls
``prepare_word_model``, which points ``--model_path`` at ``<output_dir>/model``, a folder every
backend then loads like any Hugging Face folder (config.json, tokenizer.json, model.safetensors):

* a fresh training run (``--do_train`` without ``--resume``) builds it: the vocabulary from the
  training file's questions and contexts (``bench.core.word_vocab``; its size and the unknown rate
  of the training and dev text are logged), the initial embeddings (``--word_vectors`` or random)
  and the hyper-parameters (``--rnn_hidden_size``, ...), written atomically by the main process;
* any other run (``--resume``, ``--do_eval`` alone) reuses the folder of ``--output_dir``, or the
  run folder above ``--param_checkpoint``, so evaluation tokenizes with the vocabulary it trained on.

Framework-free: the folder is numpy + tokenizers + safetensors' numpy API.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bench.core.families import get_family
from bench.core.models import get_model_spec
from bench.core.word_vocab import (build_tokenizer, build_vocab, count_words, embedding_matrix, read_word_vectors,
                                   unknown_rate, write_word_model)
from bench.run.model_source import ModelSourceError

__all__ = ["MODEL_FOLDER", "is_word_model_run", "prepare_word_model", "build_word_model", "find_word_model"]

logger = logging.getLogger("bench.run")

MODEL_FOLDER = "model"


def is_word_model_run(config) -> bool:
    """``--model_name`` names a from-scratch family and no ``--model_path`` is given."""
    if config.model_path:
        return False
    try:
        return get_model_spec(config.model_name).from_scratch
    except KeyError:
        return False


def prepare_word_model(config, train, dev, *, is_main: bool, barrier):
    """``config`` with ``--model_path`` set to the word model's folder (built or found); else ``config``."""
    if not is_word_model_run(config):
        return config
    if config.do_train and not config.resume:
        folder = Path(config.output_dir) / MODEL_FOLDER
        if is_main:
            build_word_model(config, train, dev, folder)
        barrier()
    else:
        folder = find_word_model(config)
        if is_main and dev is not None:
            _log_dev_unknown_rate(folder, dev)
    return dataclasses.replace(config, model_path=str(folder))


def find_word_model(config) -> Path:
    """The folder of an earlier run: ``<output_dir>/model``, or ``model/`` in a folder above --param_checkpoint."""
    family = get_model_spec(config.model_name).family
    places = [Path(config.output_dir)]
    if config.param_checkpoint:
        places += list(Path(config.param_checkpoint).resolve().parents)[:4]
    for place in places:
        folder = place / MODEL_FOLDER
        if (folder / "config.json").is_file():
            return folder
    raise ModelSourceError(f"--model_name {config.model_name} ({get_family(family).display_name}) is trained from "
                           f"scratch and no run folder holds its vocabulary: looked for {MODEL_FOLDER}/config.json in "
                           f"{', '.join(str(p) for p in places)}. Pass --model_path <training run>/{MODEL_FOLDER}")


def build_word_model(config, train, dev, folder: Path) -> Path:
    """Vocabulary, tokenizer, initial embeddings and config.json of a new word model, into ``folder``."""
    family = get_model_spec(config.model_name).family
    texts = _texts(train)
    vocab = build_vocab(count_words(texts), min_count=config.vocab_min_count, max_size=config.vocab_max_size)
    tokenizer = build_tokenizer(vocab)
    vectors = read_word_vectors(config.word_vectors, vocab) if config.word_vectors else None
    dim = vectors.dim if vectors is not None else config.word_dim
    matrix, found = embedding_matrix(vocab, dim, vectors, config.seed)
    _log_vocabulary(tokenizer, vocab, texts, dev)
    if vectors is not None:
        logger.info("--word_vectors %s: %d lines of %d dimensions; %d of %d vocabulary words found (the rest get "
                    "the mean vector); %s", config.word_vectors, vectors.lines, dim, found, len(vocab),
                    "tuned (--train_word_vectors)" if config.train_word_vectors else "frozen")
    model_config = {"model_type": family, "vocab_size": len(vocab), "word_dim": dim,
                    "rnn_hidden_size": config.rnn_hidden_size, "rnn_dropout": config.rnn_dropout,
                    "freeze_embeddings": vectors is not None and not config.train_word_vectors,
                    "word_vectors": str(config.word_vectors) if config.word_vectors else None,
                    "pad_token_id": vocab["[PAD]"], "initializer_range": 0.02}
    return write_word_model(folder, tokenizer, model_config, matrix)


def _texts(dataset) -> list[str]:
    """Questions and distinct contexts (a context is shared by several questions: counted once)."""
    contexts = list(dict.fromkeys(example.context for example in dataset.examples))
    return [example.question for example in dataset.examples] + contexts


def _log_dev_unknown_rate(folder: Path, dev) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rate, tokens = unknown_rate(tokenizer, _texts(dev))
    logger.info("word vocabulary of %s: %d entries; unknown rate %.2f%% of %d dev tokens", folder,
                tokenizer.get_vocab_size(), 100 * rate, tokens)


def _log_vocabulary(tokenizer, vocab: dict, texts: list[str], dev) -> None:
    rate, tokens = unknown_rate(tokenizer, texts)
    message = f"word vocabulary: {len(vocab)} entries; unknown rate {100 * rate:.2f}% of {tokens} training tokens"
    if dev is not None:
        dev_rate, dev_tokens = unknown_rate(tokenizer, _texts(dev))
        message += f", {100 * dev_rate:.2f}% of {dev_tokens} dev tokens"
    logger.info(message)
