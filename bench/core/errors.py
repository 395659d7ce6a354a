"""The base class of every error that is the user's to fix, not a bug.

A bad flag, a malformed SQuAD file, a missing model folder: each module raises
its own subclass with a message naming the file, field or flag. Entry points
catch ``BenchError`` and print that one line (exit status 2) instead of a
traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["BenchError", "DataFileNotFound", "FeatureParamsError"]


class BenchError(Exception):
    """Something the user asked for or supplied cannot work; the message says what and where."""


class DataFileNotFound(BenchError, FileNotFoundError):
    """A SQuAD file that should exist does not (the message names the prepare-data command)."""


class FeatureParamsError(BenchError, ValueError):
    """Window settings (--max_seq_length, --doc_stride, ...) that cannot work."""
