"""Task-specific distillation (``--teacher_path``): the teacher's start/end logits, computed once.

DistilBERT's second step of distillation: a student fine-tunes on SQuAD with, per window,

    L = (1 - a) * L_student + a * T^2 * 1/2 * [KL(softmax(t_s / T) || softmax(s_s / T))
                                               + KL(softmax(t_e / T) || softmax(s_e / T))]

where s/t are the student's/teacher's start (_s) and end (_e) logits over the window's candidate
positions (CLS and context), T is ``--distill_temperature`` and a ``--distill_alpha``
(docs/run-script.md#distillation). The teacher never runs during training: this stage opens it
through the same backend's session (``Session.load_model`` with a copy of the config whose
``model_path`` is the teacher's folder and whose head is its trained head), predicts every
training window once (``Session.predict``), and caches the logits beside the feature cache::

    <feature cache dir>/teacher-logits-<digest>.npz   start_logits, end_logits (n_windows, width) float32,
                                                       key_json (the key below, as UTF-8 bytes)

keyed by the sha256 of the teacher's weights and the training features' cache key
(``bench.core.features.features_cache_key``), read with ``allow_pickle=False``, written atomically;
a damaged file or one written for another key is rebuilt with a warning. The student reads them as
data (``TeacherLogits.batch``: the rows of a batch cut to its width), on every epoch, at no teacher
cost.

The teacher is a fine-tuned Hugging Face ``*ForQuestionAnswering`` folder (its ``qa_outputs`` is
loaded as a basic head), or one of our checkpoints (``<run>/checkpoints/update_N``, its head named
in meta.json) with ``--teacher_model_path`` the model folder it was fine-tuned from. Teacher and
student must tokenize identically (same tokenizer fingerprint and family input template): the
logits index the student's own windows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.core.features import features_cache_key, tokenizer_fingerprint
from bench.core.flags import ConfigError
from bench.core.heads import PAD_LOGIT, get_head
from bench.core.io_utils import atomic_path
from bench.run.checkpoints import META_FILE, MODEL_FILE, read_meta
from bench.run.helpers import feature_cache_dir

logger = logging.getLogger("bench.run")

__all__ = ["DistillError", "Teacher", "TeacherLogits", "resolve_teacher", "teacher_logits", "distillation_record",
           "formula_text", "require_distillable_head", "TEACHER_FORMAT_VERSION"]

# Bump whenever what the cache holds changes, so old files are rebuilt, not reused.
TEACHER_FORMAT_VERSION = 1


class DistillError(BenchError, ValueError):
    """A --teacher_path that cannot teach this student; the message names the folder."""


@dataclass(frozen=True)
class Teacher:
    """What --teacher_path resolved to."""
    given: str                      # --teacher_path as given (results.json distillation.teacher)
    model_folder: Path              # the Hugging Face folder the teacher's model is built from
    checkpoint: Path | None         # our checkpoint's model.safetensors (None: an HF QA folder)
    head: str                       # the teacher's trained head
    weight_files: tuple[Path, ...]  # what teacher_sha256 covers


@dataclass(frozen=True)
class TeacherLogits:
    """The teacher's start/end logits of every training window, (n_windows, width) float32."""
    start_logits: np.ndarray
    end_logits: np.ndarray
    temperature: float
    alpha: float

    def batch(self, indices, width: int) -> dict[str, np.ndarray]:
        """The rows of ``indices``, cut (or padded with PAD_LOGIT) to ``width`` columns."""
        indices = np.asarray(indices, dtype=np.int64)
        out = {}
        for name, values in (("teacher_start_logits", self.start_logits), ("teacher_end_logits", self.end_logits)):
            rows = values[indices, :width]
            if rows.shape[1] < width:
                rows = np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=PAD_LOGIT)
            out[name] = np.ascontiguousarray(rows, dtype=np.float32)
        return out


def require_distillable_head(head, head_name: str, framework: str) -> None:
    """Stop unless the backend's head class gives its start/end scores with its loss (``loss_and_scores``), which
    the distillation term reads (one pass, one dropout mask): a ConfigError naming --head."""
    if not hasattr(head, "loss_and_scores"):
        raise ConfigError(f"--head {head_name} cannot be distilled with --teacher_path: its {framework} class has no "
                          f"loss_and_scores(...) returning its start/end scores (see BasicHead)")


def formula_text(temperature: float, alpha: float) -> str:
    """The per-window loss, with this run's numbers (logged once at the start of training)."""
    return (f"distillation: loss per window = (1 - a) * L_student + a * T^2 * (KL_start + KL_end) / 2, "
            f"KL = KL(softmax(teacher / T) || softmax(student / T)) over the candidate positions, "
            f"T = {temperature:g}, a = {alpha:g}")


# ----------------------------------------------------------------------------------- the teacher
def _qa_architecture(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    names = config.get("architectures") if isinstance(config, dict) else None
    return next((n for n in names or () if isinstance(n, str) and n.endswith("ForQuestionAnswering")), None)


def _folder_weight_files(folder: Path, where: str) -> tuple[Path, ...]:
    if (folder / MODEL_FILE).is_file():
        return (folder / MODEL_FILE,)
    index = folder / "model.safetensors.index.json"
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        shards = tuple(folder / s for s in sorted({str(v) for v in weight_map.values()}))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        shards = ()
    if not shards or not all(p.is_file() for p in shards):
        raise DistillError(f"{where}: no safetensors weights (model.safetensors, or the shards of "
                           f"model.safetensors.index.json), so it cannot be a teacher")
    return shards


def resolve_teacher(config) -> Teacher:
    """--teacher_path checked (one line naming the folder): an HF QA folder, or our checkpoint with
    --teacher_model_path."""
    path = Path(config.teacher_path)
    where = f"--teacher_path {path}"
    if not path.is_dir():
        raise DistillError(f"{where}: not a folder")
    meta = read_meta(path) if (path / META_FILE).is_file() else None
    if meta is not None:                        # our checkpoint: <run>/checkpoints/update_N
        head = meta.get("head")
        if not isinstance(head, str) or get_head(head).postprocess_input != "logits":
            raise DistillError(f"{where}: a checkpoint of the {head} head, whose outputs are not start/end "
                               f"logits; a teacher must be a basic or bilstm head")
        if not config.teacher_model_path:
            raise DistillError(f"{where} is one of our checkpoints: pass --teacher_model_path, the model folder "
                               f"it was fine-tuned from")
        if not (path / MODEL_FILE).is_file():
            raise DistillError(f"{where}: the checkpoint has no {MODEL_FILE}")
        folder = Path(config.teacher_model_path)
        if not folder.is_dir():
            raise DistillError(f"--teacher_model_path {folder}: not a folder")
        return Teacher(str(path), folder, path / MODEL_FILE, head, (path / MODEL_FILE,))
    if not (path / "config.json").is_file():
        raise DistillError(f"{where}: no config.json (expected a fine-tuned *ForQuestionAnswering folder or a "
                           f"checkpoint folder with {META_FILE})")
    if _qa_architecture(path) is None:
        raise DistillError(f"{where}: not a question-answering model (config.json architectures names no "
                           f"*ForQuestionAnswering class), so it has no trained span scorer to teach with")
    return Teacher(str(path), path, None, "basic", _folder_weight_files(path, where))


def teacher_sha256(teacher: Teacher) -> str:
    """sha256 over the teacher's weight files (names and bytes)."""
    digest = hashlib.sha256()
    for path in teacher.weight_files:
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_same_tokenization(teacher: Teacher, student_tokenizer, student_style: str, student_where: str,
                            model_name: str = "") -> None:
    """Stop (one line naming both folders) unless the teacher tokenizes exactly as the student."""
    from bench.run.model_source import ModelSourceError, load_tokenizer, resolve_model_folder

    try:
        folder = resolve_model_folder(model_name, str(teacher.model_folder))
        tokenizer = load_tokenizer(folder)
    except ModelSourceError as exc:
        raise DistillError(f"--teacher_path {teacher.given}: {exc}") from None
    if folder.input_style != student_style or (tokenizer_fingerprint(tokenizer, folder.input_style)
                                               != tokenizer_fingerprint(student_tokenizer, student_style)):
        raise DistillError(f"the teacher {teacher.model_folder} and the student {student_where} tokenize "
                           f"differently (vocabulary or input template): distillation needs the same tokenizer")


def _teacher_config(config, teacher: Teacher):
    return dataclasses.replace(config, model_path=str(teacher.model_folder), head=teacher.head,
                               param_checkpoint=str(teacher.checkpoint) if teacher.checkpoint else None,
                               backbone_path=None, compile=False, dtype="float32", teacher_path=None,
                               teacher_model_path=None)


# ----------------------------------------------------------------------------------- the cache
def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def _read_cache(path: Path, key: dict, n_windows: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            if bytes(stored["key_json"]).decode("utf-8") != _key_text(key):
                logger.warning("teacher logits %s were computed for another teacher or other windows; "
                               "recomputing", path)
                return None
            start, end = np.asarray(stored["start_logits"]), np.asarray(stored["end_logits"])
        if start.ndim != 2 or start.shape != end.shape or start.shape[0] != n_windows \
                or start.dtype != np.float32 or end.dtype != np.float32:
            raise ValueError(f"arrays of shape {start.shape} / {end.shape}, expected ({n_windows}, width) float32")
        return start, end
    except Exception as exc:        # noqa: BLE001 - any damage means: rebuild
        logger.warning("teacher logits cache %s is damaged (%s: %s); recomputing it", path, type(exc).__name__, exc)
        return None


def _write_cache(path: Path, key: dict, start: np.ndarray, end: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, start_logits=start, end_logits=end,
                 key_json=np.frombuffer(_key_text(key).encode("utf-8"), dtype=np.uint8))


def teacher_cache_path(config, key: dict) -> Path:
    digest = hashlib.sha256(_key_text(key).encode("utf-8")).hexdigest()[:16]
    return feature_cache_dir(config) / f"teacher-logits-{digest}.npz"


def teacher_logits(session, config, train_ds, loaded, params, features) -> TeacherLogits:
    """The teacher's logits of every training window: from the cache, or predicted once and cached.

    Every process reads the same file state (after a barrier), so they agree whether to predict
    (``Session.predict`` is collective); the main process writes the cache, the others read it."""
    from bench.run.pipeline import dataset_cache_key

    teacher = resolve_teacher(config)
    check_same_tokenization(teacher, loaded.tokenizer, params.input_style, loaded.source.source, config.model_name)
    key = {"format_version": TEACHER_FORMAT_VERSION, "teacher_sha256": teacher_sha256(teacher),
           "teacher_head": teacher.head,
           "features": features_cache_key(train_ds.examples, loaded.tokenizer, params, is_training=True,
                                          data_sha256=dataset_cache_key(train_ds))}
    if getattr(config, "answer_windows_only", False):      # other windows: only then in the key (old caches stay valid)
        key["answer_windows_only"] = True
    path = teacher_cache_path(config, key)
    session.barrier()
    cached = _read_cache(path, key, len(features)) if path.exists() and not config.overwrite_cache else None
    if cached is None:
        logger.info("computing the teacher's logits of %d training windows once (%s)", len(features),
                    teacher.given)
        teacher_config = _teacher_config(config, teacher)
        teacher_model = session.load_model(teacher_config)
        outputs = session.predict(teacher_config, teacher_model, features, None)
        del teacher_model
        if session.is_main:
            width = int(features.lengths.max()) if len(features) else 0
            start = np.ascontiguousarray(outputs["start_logits"][:, :width], dtype=np.float32)
            end = np.ascontiguousarray(outputs["end_logits"][:, :width], dtype=np.float32)
            _write_cache(path, key, start, end)
            logger.info("cached the teacher's logits in %s", path)
        session.barrier()
        if not session.is_main:
            cached = _read_cache(path, key, len(features))
            if cached is None:
                raise DistillError(f"teacher logits {path}: written by the main process but unreadable here")
            start, end = cached
    else:
        start, end = cached
        logger.info("loaded the teacher's logits of %d training windows from %s", len(features), path)
    return TeacherLogits(start, end, float(config.distill_temperature), float(config.distill_alpha))


def distillation_record(config) -> dict:
    """results.json ``distillation`` (bench.core.results)."""
    teacher = resolve_teacher(config)
    return {"teacher": teacher.given, "teacher_sha256": teacher_sha256(teacher),
            "temperature": float(config.distill_temperature), "alpha": float(config.distill_alpha)}
