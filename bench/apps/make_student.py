"""``squad-bench make-student``: a smaller student initialised from some of a teacher's layers.

As DistilBERT was initialised from every other layer of BERT::

    squad-bench make-student --from models/all-MiniLM-L6-v2 --layers 0,2,4 --out models/minilm-l3

writes a Hugging Face model folder whose config.json counts ``len(layers)`` layers (the family's
layer-count key, ``bench.core.families``), whose ``model.safetensors`` holds the teacher's
embeddings (and pooler) as they are and, as encoder layer ``i``, the teacher's layer
``layers[i]`` renumbered; no head (a QA head, ``qa_outputs``, or pretraining heads are left out, so
the folder is a plain backbone to fine-tune). The tokenizer files are copied. The folder is
assembled under a temporary name beside ``--out`` and renamed into place, so a failure leaves
nothing behind.

Framework-free: the safetensors files are read and written byte for byte (header JSON + raw
tensor bytes), so any dtype (bfloat16 included) passes unchanged and either backend can use the
result. Bad input (a missing folder, a layer out of range or repeated, an existing ``--out``)
stops with one line (exit status 2).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.families import get_family

__all__ = ["main", "make_student", "StudentError", "read_safetensors", "write_safetensors"]

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Backbone tensors kept besides the embeddings and the layers (a BERT's pooler).
KEPT_PREFIXES = ("pooler.",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")


class StudentError(BenchError, ValueError):
    """make-student input that cannot work; the message names the flag or file."""


# ----------------------------------------------------------------------------------- safetensors
def read_safetensors(path: Path) -> tuple[dict[str, dict], dict[str, bytes], dict]:
    """(header entries {name: {dtype, shape}}, raw bytes per tensor, __metadata__) of one file."""
    data = Path(path).read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise StudentError(f"{path}: not a safetensors file ({exc})") from None
    body = data[8 + size:]
    metadata = header.pop("__metadata__", {}) or {}
    entries, raw = {}, {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        entries[name] = {"dtype": info["dtype"], "shape": list(info["shape"])}
        raw[name] = body[begin:end]
    return entries, raw, metadata


def write_safetensors(path: Path, entries: dict[str, dict], raw: dict[str, bytes],
                      metadata: dict | None = None) -> None:
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name in entries:
        header[name] = {**entries[name], "data_offsets": [offset, offset + len(raw[name])]}
        offset += len(raw[name])
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in entries:
            f.write(raw[name])


def _read_weights(folder: Path) -> tuple[dict, dict]:
    if (folder / WEIGHTS).is_file():
        entries, raw, _ = read_safetensors(folder / WEIGHTS)
        return entries, raw
    if not (folder / INDEX).is_file():
        raise StudentError(f"--from {folder}: no {WEIGHTS} or {INDEX} (safetensors weights are required)")
    weight_map = json.loads((folder / INDEX).read_text(encoding="utf-8")).get("weight_map") or {}
    entries, raw = {}, {}
    for shard in sorted(set(weight_map.values())):
        if not (folder / shard).is_file():
            raise StudentError(f"{folder / INDEX}: shard {shard} is missing")
        more_entries, more_raw, _ = read_safetensors(folder / shard)
        entries.update(more_entries)
        raw.update(more_raw)
    return entries, raw


# ----------------------------------------------------------------------------------- the student
def parse_layers(text: str) -> list[int]:
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise StudentError(f"--layers {text!r}: expected comma-separated layer numbers like 0,2,4") from None
    if not layers:
        raise StudentError(f"--layers {text!r}: expected at least one layer number")
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise StudentError(f"--layers {text!r}: layer {repeated[0]} is given twice")
    return layers


def _split_prefix(name: str, family) -> tuple[str, str]:
    """(base-model prefix such as "bert." or "", the name relative to the backbone)."""
    for candidate in (name, name.split(".", 1)[1] if "." in name else None):
        if candidate is None:
            continue
        relative = candidate
        if relative.startswith(family.embedding_prefixes) or relative.startswith(KEPT_PREFIXES) \
                or re.match(family.layer_pattern, relative):
            return name[:len(name) - len(relative)], relative
    return "", name


def make_student(source: Path, layers: list[int], out: Path) -> Path:
    """Write the student folder ``out`` (see the module docstring); returns it."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise StudentError(f"--from {source}: not a folder")
    if not (source / "config.json").is_file():
        raise StudentError(f"--from {source}: config.json is missing")
    if out.exists():
        raise StudentError(f"--out {out} already exists; pass a new folder")
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        family = get_family(config["model_type"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise StudentError(f"--from {source}: config.json has no model_type this benchmark knows ({exc})") from None
    if family.name == "albert":
        raise StudentError(f"--from {source}: ALBERT shares one layer's weights across its depth; there are no "
                           f"separate layers to pick")
    depth = family.num_layers(config)
    outside = [layer for layer in layers if not 0 <= layer < depth]
    if outside:
        raise StudentError(f"--layers: layer {outside[0]} is out of range; {source} has layers 0..{depth - 1}")
    entries, raw = _read_weights(source)
    new_index = {old: new for new, old in enumerate(layers)}
    kept_entries, kept_raw = {}, {}
    for name in entries:
        _, relative = _split_prefix(name, family)
        if relative.startswith(family.embedding_prefixes) or relative.startswith(KEPT_PREFIXES):
            target = relative
        else:
            match = re.match(family.layer_pattern, relative)
            if match is None:
                continue                        # a head (qa_outputs, cls., ...): not part of the student
            layer = int(match.group(1))
            if layer not in new_index:
                continue
            target = relative[:match.start(1)] + str(new_index[layer]) + relative[match.end(1):]
        kept_entries[target], kept_raw[target] = entries[name], raw[name]
    if not any(re.match(family.layer_pattern, name) for name in kept_entries):
        raise StudentError(f"--from {source}: no encoder layer tensors matching {family.layer_pattern!r} were found")
    student_config = dict(config)
    student_config[family.num_layers_key] = len(layers)
    student_config.pop("architectures", None)       # a backbone, not a QA (or pretraining) model
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "config.json").write_text(json.dumps(student_config, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        write_safetensors(staging / WEIGHTS, kept_entries, kept_raw)
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squad-bench make-student",
                                     description="A smaller student from some of a teacher's layers "
                                                 "(DistilBERT-style initialisation).")
    parser.add_argument("--from", dest="source", required=True, help="the teacher's Hugging Face model folder")
    parser.add_argument("--layers", required=True, help="teacher layers to keep, in order, e.g. 0,2,4")
    parser.add_argument("--out", required=True, help="the student folder to create (must not exist)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = make_student(Path(args.source), parse_layers(args.layers), Path(args.out))
    except BenchError as exc:
        print(f"make-student: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: layers {args.layers} of {args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
