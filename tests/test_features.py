"""Feature building: window arithmetic, labels on real SQuAD data, templates, errors, cache, batches."""
from __future__ import annotations

import gzip
import json
import logging
import re
import string
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from bench.core.features import cache as feature_cache
from bench.core.data import Answer, SquadExample
from bench.core.features import (
    FeatureParams,
    Features,
    batch_arrays,
    build_features,
    features_cache_key,
    features_cache_path,
    load_or_build_features,
    tokenizer_fingerprint,
    window_spans,
)

TRAIN_FILE = "train-v2.0.first10.json.gz"


# --------------------------------------------------------------------------- helpers

def read_examples(path) -> list[SquadExample]:
    """SquadExamples straight from a SQuAD JSON file (independent of bench.core.data's loader)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    examples = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                answers = [Answer(a["text"], a["answer_start"]) for a in qa["answers"]]
                examples.append(SquadExample(qa["id"], article["title"], context, qa["question"], answers,
                                             bool(qa.get("is_impossible", False))))
    return examples


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower case, no punctuation, articles or extra blanks."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def example(context: str, question: str = "who ?", answer: tuple[str, int] | None = None,
            impossible: bool = False, qid: str = "q") -> SquadExample:
    answers = [Answer(*answer)] if answer else []
    return SquadExample(qid, "t", context, question, answers, impossible)


def context_positions(features: Features, w: int) -> np.ndarray:
    """Index, in the whole context's tokenization, of each context token of window ``w``."""
    return features.context_token_start[w] + np.arange(features.context_lengths[w])


def context_slice(features: Features, w: int) -> slice:
    lo = int(features.row_starts[w] + features.context_start[w])
    return slice(lo, lo + int(features.context_lengths[w]))


def bert_max_context_reference(starts, lengths, position) -> int:
    """BERT's _check_is_max_context, literally: the window where ``position`` has the most context."""
    best_score, best = None, None
    for w, (start, length) in enumerate(zip(starts, lengths)):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, w
    return best


@pytest.fixture(scope="module")
def train_examples(squad_dir):
    return read_examples(squad_dir / TRAIN_FILE)


@pytest.fixture(scope="module")
def small_params():
    # Short windows: most contexts need several, which exercises strides, labels and max-context.
    return FeatureParams(max_seq_length=128, max_query_length=32, doc_stride=48)


@pytest.fixture(scope="module")
def bert_train(train_examples, bert_tokenizer, small_params):
    return build_features(train_examples, bert_tokenizer, small_params, is_training=True)


@pytest.fixture(scope="module")
def roberta_train(train_examples, roberta_tokenizer, small_params):
    return build_features(train_examples, roberta_tokenizer, replace(small_params, input_style="roberta"),
                          is_training=True)


# --------------------------------------------------------------------------- window arithmetic

@pytest.mark.parametrize("mode, stride, context_length, room, starts, lengths", [
    ("step", 3, 10, 4, [0, 3, 6], [4, 4, 4]),        # 6 + 4 reaches the end: stop
    ("step", 3, 11, 4, [0, 3, 6, 9], [4, 4, 4, 2]),  # last window cut at the context end
    ("step", 4, 8, 4, [0, 4], [4, 4]),               # step == room: no overlap, nothing skipped
    ("step", 3, 4, 4, [0], [4]),                     # fits in one window
    ("step", 3, 0, 4, [0], [0]),                     # empty context still gets its window
    ("overlap", 1, 11, 4, [0, 3, 6, 9], [4, 4, 4, 2]),  # 1 shared token = step 3
    ("overlap", 2, 10, 5, [0, 3, 6], [5, 5, 4]),
    ("overlap", 0, 10, 5, [0, 5], [5, 5]),
])
def test_window_spans_hand_worked(mode, stride, context_length, room, starts, lengths):
    params = FeatureParams(doc_stride=stride, stride_mode=mode)
    owner, start, length = window_spans(np.array([context_length]), np.array([room]), params)
    assert owner.tolist() == [0] * len(starts)
    assert start.tolist() == starts and length.tolist() == lengths


def bert_doc_spans(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """The _DocSpan loop of Google's BERT run_squad.py: (start, length) of each window."""
    spans, start = [], 0
    while start < n_tokens:
        length = min(n_tokens - start, room)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return spans


@pytest.mark.parametrize("mode", ["step", "overlap"])
def test_window_spans_cover_every_token(mode):
    rng = np.random.default_rng(0)
    context_lengths = rng.integers(0, 400, size=300)
    rooms = rng.integers(20, 120, size=300)
    stride = 15
    owner, start, length = window_spans(context_lengths, rooms, FeatureParams(doc_stride=stride, stride_mode=mode))
    for i, (n, room) in enumerate(zip(context_lengths, rooms)):
        mine = owner == i
        s, l = start[mine], length[mine]
        covered = np.zeros(n, bool)
        for a, b in zip(s, l):
            covered[a:a + b] = True
        assert covered.all() and (l <= room).all() and (l > 0).all() == (n > 0)
        assert s[-1] + l[-1] == n                                   # last window ends at the context end
        assert (s[:-1] + l[:-1] < n).all()                          # earlier ones do not
        step = stride if mode == "step" else room - stride
        assert (np.diff(s) == step).all()
        if n:
            assert list(zip(s.tolist(), l.tolist())) == bert_doc_spans(n, room, step)


def test_build_windows_hand_worked(bert_tokenizer):
    # Every letter is one WordPiece token and "who ?" two, so a window holds 10 - 2 - 3 = 5 letters.
    context = "a b c d e f g h"
    params = FeatureParams(max_seq_length=10, max_query_length=2, doc_stride=2)
    f = build_features([example(context, answer=("f", 10))], bert_tokenizer, params, is_training=True)
    assert f.context_token_start.tolist() == [0, 2, 4]
    assert f.context_lengths.tolist() == [5, 5, 4]
    assert f.lengths.tolist() == [10, 10, 9]
    assert (f.context_start == 4).all()
    letters = context.split()
    for w in range(len(f)):
        tokens = bert_tokenizer.convert_ids_to_tokens(f.input_ids[f.window(w)].tolist())
        window_letters = letters[f.context_token_start[w]:][:f.context_lengths[w]]
        assert tokens == ["[CLS]", "who", "?", "[SEP]", *window_letters, "[SEP]"]
        assert f.token_type_ids[f.window(w)].tolist() == [0] * 4 + [1] * (len(tokens) - 4)
        assert [context[a:b] for a, b in f.offsets[context_slice(f, w)]] == window_letters
        assert (f.offsets[f.window(w)][:4] == -1).all() and (f.offsets[f.row_starts[w + 1] - 1] == -1).all()
    # Max context worked by hand: windows cover tokens 0-4, 2-6, 4-7. Token 3 ties (1 + .05 both)
    # and goes to the first window; token 5 ties on min (1) and the longer window 2-6 wins.
    expected = {0: [1, 1, 1, 1, 0], 1: [0, 0, 1, 1, 0], 2: [0, 0, 1, 1]}
    for w, marks in expected.items():
        assert f.is_max_context[context_slice(f, w)].tolist() == [bool(m) for m in marks]
    # "f" is context token 5: inside windows 1 (position 4 + 3) and 2 (4 + 1), not window 0.
    assert f.start_positions.tolist() == [0, 7, 5] and f.end_positions.tolist() == [0, 7, 5]
    assert f.is_impossible.tolist() == [True, False, False]


def test_overlap_mode_builds_hf_windows(bert_tokenizer):
    context = "a b c d e f g h i j k"
    params = FeatureParams(max_seq_length=9, max_query_length=2, doc_stride=1, stride_mode="overlap")
    f = build_features([example(context)], bert_tokenizer, params, is_training=False)
    assert f.context_token_start.tolist() == [0, 3, 6, 9]
    assert f.context_lengths.tolist() == [4, 4, 4, 2]


def test_contexts_whole_and_identical_to_the_tokenizer_call(bert_train, train_examples, bert_tokenizer):
    windows_of = {}
    for w, e in enumerate(bert_train.example_index.tolist()):
        windows_of.setdefault(e, []).append(w)
    for e in range(0, len(train_examples), 97):
        reference = bert_tokenizer(train_examples[e].context, add_special_tokens=False)["input_ids"]
        rebuilt = np.full(len(reference), -1)
        for w in windows_of[e]:
            rebuilt[context_positions(bert_train, w)] = bert_train.input_ids[context_slice(bert_train, w)]
        assert rebuilt.tolist() == reference


def test_backend_truncation_and_padding_are_ignored_and_left_alone(minilm_dir, train_examples, small_params):
    from transformers import AutoTokenizer
    plain = AutoTokenizer.from_pretrained(str(minilm_dir))
    plain.backend_tokenizer.no_truncation()
    plain.backend_tokenizer.no_padding()
    limited = AutoTokenizer.from_pretrained(str(minilm_dir))
    limited.backend_tokenizer.enable_truncation(max_length=16)
    limited.backend_tokenizer.enable_padding(length=200)
    sample = train_examples[:60]
    assert_same(build_features(sample, limited, small_params, is_training=True),
                build_features(sample, plain, small_params, is_training=True))
    assert limited.backend_tokenizer.truncation["max_length"] == 16
    assert limited.backend_tokenizer.padding["length"] == 200


def test_overlap_mode_matches_hugging_face_overflow_windows(minilm_dir, train_examples):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))   # its own copy: the call below changes settings
    sample = train_examples[:300:3]
    params = FeatureParams(max_seq_length=96, max_query_length=64, doc_stride=24, stride_mode="overlap")
    f = build_features(sample, tokenizer, params, is_training=False)
    hf = tokenizer([ex.question.strip() for ex in sample], [ex.context for ex in sample], truncation="only_second",
                   max_length=96, stride=24, return_overflowing_tokens=True)
    assert hf["overflow_to_sample_mapping"] == f.example_index.tolist()
    assert [hf["input_ids"][w] for w in range(len(f))] == [f.input_ids[f.window(w)].tolist() for w in range(len(f))]
    assert np.concatenate(hf["token_type_ids"]).tolist() == f.token_type_ids.tolist()


# --------------------------------------------------------------------------- labels

def label_match_rate(features: Features, examples) -> tuple[int, int]:
    """(windows whose labelled span normalizes to the answer, windows with an answer).

    A mismatch is only allowed where the gold answer is part of a token ("Tibet" in "Tibetan"):
    the labelled span must then still contain the answer's characters.
    """
    matched = total = 0
    for w in np.flatnonzero(~features.is_impossible):
        ex = examples[features.example_index[w]]
        answer = ex.answers[0]
        row = features.row_starts[w]
        start = features.offsets[row + features.start_positions[w], 0]
        end = features.offsets[row + features.end_positions[w], 1]
        total += 1
        if normalize_answer(ex.context[start:end]) == normalize_answer(answer.text):
            matched += 1
        else:
            assert start <= answer.start and end >= answer.start + len(answer.text), (ex.qid, start, end)
    return matched, total


def test_labels_round_trip_bert(bert_train, train_examples, capsys):
    matched, total = label_match_rate(bert_train, train_examples)
    with capsys.disabled():
        print(f"\n[features] BERT label round trip: {matched}/{total} = {matched / total:.4%}")
    assert total > 4000 and matched / total >= 0.99


def test_labels_round_trip_roberta(roberta_train, train_examples, capsys):
    # Byte-level BPE splits words finer than WordPiece, so fewer answers end inside a token.
    matched, total = label_match_rate(roberta_train, train_examples)
    with capsys.disabled():
        print(f"\n[features] RoBERTa label round trip: {matched}/{total} = {matched / total:.4%}")
    assert total > 4000 and matched / total >= 0.995


def test_labels_lie_in_the_context(bert_train):
    f = bert_train
    answered = ~f.is_impossible
    ends = f.context_start + f.context_lengths
    assert (f.start_positions[answered] >= f.context_start[answered]).all()
    assert (f.end_positions[answered] < ends[answered]).all()
    assert (f.start_positions <= f.end_positions).all()


def test_every_answerable_question_has_an_answer_window(bert_train, train_examples):
    answerable = {i for i, ex in enumerate(train_examples) if not ex.is_impossible}
    found = set(bert_train.example_index[~bert_train.is_impossible].tolist())
    assert len(answerable - found) <= len(answerable) // 500    # only answers the tokens cannot express


def test_unanswerable_and_missing_answers_point_at_cls(bert_train, train_examples, bert_tokenizer):
    impossible = np.array([train_examples[e].is_impossible for e in bert_train.example_index])
    assert impossible.sum() > 300
    assert bert_train.is_impossible[impossible].all()
    assert (bert_train.start_positions[impossible] == 0).all() and (bert_train.end_positions[impossible] == 0).all()
    # Windows of answerable questions that miss the answer also point at cls.
    outside = ~impossible & bert_train.is_impossible
    assert outside.any() and (bert_train.start_positions[outside] == 0).all()
    f = build_features([example("a b c"), example("a b c", answer=("b", 2), impossible=True)],
                       bert_tokenizer, FeatureParams(), is_training=True)
    assert f.is_impossible.tolist() == [True, True] and f.start_positions.tolist() == [0, 0]


def test_answer_edges_on_whitespace_snap_inward(bert_tokenizer):
    context = "alpha  beta gamma"
    f = build_features([example(context, answer=(" beta ", 6))], bert_tokenizer, FeatureParams(),
                       is_training=False)
    row, s, e = f.row_starts[0], f.start_positions[0], f.end_positions[0]
    assert context[f.offsets[row + s, 0]:f.offsets[row + e, 1]] == "beta"


def test_max_context_marks_one_window_per_token(bert_train, train_examples):
    f = bert_train
    for e in range(0, len(train_examples), 41):
        windows = np.flatnonzero(f.example_index == e)
        counts = Counter()
        for w in windows:
            marked = f.is_max_context[context_slice(f, w)]
            counts.update(context_positions(f, w)[marked].tolist())
            position_of = dict(zip(context_positions(f, w).tolist(), marked.tolist()))
            for p, is_max in position_of.items():
                best = bert_max_context_reference(f.context_token_start[windows], f.context_lengths[windows], p)
                assert is_max == (windows[best] == w)
        n_tokens = int(f.context_token_start[windows[-1]] + f.context_lengths[windows[-1]])
        assert counts == Counter(range(n_tokens))
    non_context = f.offsets[:, 0] == -1
    assert not f.is_max_context[non_context].any()


# --------------------------------------------------------------------------- templates and questions

def test_roberta_template(roberta_train, roberta_tokenizer):
    f = roberta_train
    bos, eos = roberta_tokenizer.bos_token_id, roberta_tokenizer.eos_token_id
    assert not f.token_type_ids.any()
    for w in range(0, len(f), 113):
        ids = f.input_ids[f.window(w)]
        cs = f.context_start[w]
        assert ids[0] == bos and ids[cs - 2] == eos and ids[cs - 1] == eos and ids[-1] == eos
        assert eos not in ids[1:cs - 2] and bos not in ids[1:]
        assert (f.offsets[f.window(w)][cs:-1] >= 0).all()


def test_bert_template(bert_train, bert_tokenizer):
    f = bert_train
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    for w in range(0, len(f), 113):
        ids, types = f.input_ids[f.window(w)], f.token_type_ids[f.window(w)]
        cs = f.context_start[w]
        assert ids[0] == cls and ids[cs - 1] == sep and ids[-1] == sep
        assert (types[:cs] == 0).all() and (types[cs:] == 1).all()
    assert len(f) == len(bert_train.example_index) and f.lengths.max() <= 128


def test_question_truncated_to_max_query_length(bert_tokenizer):
    question = "which " * 40 + "one ?"
    params = FeatureParams(max_seq_length=64, max_query_length=5, doc_stride=16)
    f = build_features([example("a b c", question=question)], bert_tokenizer, params, is_training=False)
    assert f.context_start[0] == 1 + 5 + 1
    assert bert_tokenizer.convert_ids_to_tokens(f.input_ids[1:6].tolist()) == ["which"] * 5


def test_empty_example_list(bert_tokenizer):
    f = build_features([], bert_tokenizer, FeatureParams(), is_training=True)
    assert len(f) == 0 and f.row_starts.tolist() == [0] and f.offsets.shape == (0, 2)


# --------------------------------------------------------------------------- bad settings

@pytest.mark.parametrize("params, phrase", [
    (FeatureParams(max_seq_length=384, doc_stride=0), "must be in 1..317"),
    (FeatureParams(max_seq_length=384, doc_stride=400), "would skip context tokens"),
    (FeatureParams(max_seq_length=384, doc_stride=317, stride_mode="overlap"), "must be in 0..316"),
    (FeatureParams(max_seq_length=64, max_query_length=64), "no room for context"),
    (FeatureParams(max_seq_length=68, max_query_length=64, input_style="roberta"), "= 0"),
    (FeatureParams(stride_mode="sliding"), "--stride_mode must be one of"),
])
def test_bad_strides_raise_a_clear_error(params, phrase, bert_tokenizer):
    with pytest.raises(ValueError) as err:
        build_features([example("a b c")], bert_tokenizer, params, is_training=True)
    message = str(err.value)
    assert phrase in message
    for flag, value in [("--max_seq_length", params.max_seq_length), ("--doc_stride", params.doc_stride),
                        ("--max_query_length", params.max_query_length), ("--stride_mode", params.stride_mode)]:
        assert f"{flag} {value}" in message


def test_slow_tokenizer_is_refused():
    with pytest.raises(TypeError, match="fast"):
        build_features([example("a")], object(), FeatureParams(), is_training=True)


# --------------------------------------------------------------------------- select and batches

def test_select_matches_windows(bert_train):
    picked = [5, 0, 17, 5]
    sub = bert_train.select(picked)
    assert len(sub) == 4 and sub.params == bert_train.params
    for i, w in enumerate(picked):
        assert sub.input_ids[sub.window(i)].tolist() == bert_train.input_ids[bert_train.window(w)].tolist()
        assert (sub.offsets[sub.window(i)] == bert_train.offsets[bert_train.window(w)]).all()
        assert sub.start_positions[i] == bert_train.start_positions[w]
        assert sub.context_token_start[i] == bert_train.context_token_start[w]
    mask = np.zeros(len(bert_train), bool)
    mask[[3, 9]] = True
    assert bert_train.select(mask).example_index.tolist() == bert_train.example_index[[3, 9]].tolist()
    assert len(bert_train.select([])) == 0


def test_batch_arrays_pads_and_rounds(bert_train):
    f = bert_train
    picked = np.array([2, 11, 40])
    lengths = f.lengths[picked]
    batch = batch_arrays(f, picked, pad_id=0)
    assert batch["input_ids"].shape == (3, lengths.max()) and batch["input_ids"].dtype == np.int64
    assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    for row, w in enumerate(picked):
        n = lengths[row]
        assert batch["input_ids"][row, :n].tolist() == f.input_ids[f.window(w)].tolist()
        assert batch["token_type_ids"][row, :n].tolist() == f.token_type_ids[f.window(w)].tolist()
        assert (batch["input_ids"][row, n:] == 0).all() and not batch["candidate_mask"][row, n:].any()
        cs, end = f.context_start[w], n - 1
        expected = np.zeros(batch["input_ids"].shape[1], bool)
        expected[0] = True
        expected[cs:end] = True
        assert batch["candidate_mask"][row].tolist() == expected.tolist()
    assert batch["feature_index"].tolist() == picked.tolist()
    assert batch["start_positions"].tolist() == f.start_positions[picked].tolist()
    assert batch["is_impossible"].dtype == bool
    short = np.argsort(f.lengths)[:2]
    assert batch_arrays(f, short, pad_id=7, round_to=8)["input_ids"].shape[1] % 8 == 0
    padded = batch_arrays(f, short, pad_id=7, round_to=8)["input_ids"]
    assert (padded[np.arange(2), f.lengths[short]] == 7).all()
    longest = [int(np.argmax(f.lengths))]
    assert batch_arrays(f, longest, pad_id=0, round_to=100)["input_ids"].shape[1] == f.params.max_seq_length
    assert batch_arrays(f, short, pad_id=0, round_to=None)["input_ids"].shape[1] == f.lengths[short].max()


# --------------------------------------------------------------------------- cache

@pytest.fixture(scope="module")
def few_examples(train_examples):
    return train_examples[:200]


@pytest.fixture
def count_builds(monkeypatch):
    calls = []
    real = feature_cache.build_features

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(feature_cache, "build_features", counting)
    return calls


def assert_same(a: Features, b: Features):
    for name in ("example_index", "row_starts", "context_start", "start_positions", "end_positions",
                 "is_impossible", "input_ids", "token_type_ids", "offsets", "is_max_context",
                 "context_token_start"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.params == b.params and a.cls_index == b.cls_index


def cached(examples, tokenizer, params, tmp_path, **kwargs):
    kwargs = {"is_training": True, "data_sha256": "d" * 64, **kwargs}
    return load_or_build_features(examples, tokenizer, params, cache_dir=tmp_path, **kwargs)


def test_cache_hit_and_misses(few_examples, bert_tokenizer, roberta_tokenizer, small_params, tmp_path,
                              count_builds):
    first = cached(few_examples, bert_tokenizer, small_params, tmp_path)
    again = cached(few_examples, bert_tokenizer, small_params, tmp_path)
    assert len(count_builds) == 1
    assert_same(first, again)
    cached(few_examples, bert_tokenizer, replace(small_params, doc_stride=40), tmp_path)
    cached(few_examples, bert_tokenizer, small_params, tmp_path, data_sha256="e" * 64)
    cached(few_examples, bert_tokenizer, small_params, tmp_path, is_training=False)
    cached(few_examples, roberta_tokenizer, small_params, tmp_path)
    cached(few_examples[:150], bert_tokenizer, small_params, tmp_path)
    assert len(count_builds) == 6
    assert len(list(tmp_path.glob("*.npz"))) == 6
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".npz")] == []   # no temp files


def test_tokenizer_fingerprint_tracks_vocabulary_not_call_settings(minilm_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    before = tokenizer_fingerprint(tok)
    tok(["some text"], truncation=True, max_length=4)      # changes the backend's truncation setting
    assert tokenizer_fingerprint(tok) == before
    tok.add_tokens(["zzqxnewtoken"])
    assert tokenizer_fingerprint(tok) != before


def test_damaged_cache_is_rebuilt_with_a_warning(few_examples, bert_tokenizer, small_params, tmp_path,
                                                 count_builds, caplog):
    good = cached(few_examples, bert_tokenizer, small_params, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="bench.core.features"):
        rebuilt = cached(few_examples, bert_tokenizer, small_params, tmp_path)
    assert "damaged" in caplog.text and len(count_builds) == 2
    assert_same(good, rebuilt)
    assert path.read_bytes() == data                           # the rebuilt file replaced the damaged one
    caplog.clear()
    # Flip one byte inside the token ids: the zip checksum (or the consistency check) catches it.
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="bench.core.features"):
        cached(few_examples, bert_tokenizer, small_params, tmp_path)
    assert "damaged" in caplog.text and len(count_builds) == 3


def test_cache_with_another_key_is_rebuilt(few_examples, bert_tokenizer, small_params, tmp_path,
                                           count_builds, caplog):
    cached(few_examples, bert_tokenizer, replace(small_params, doc_stride=40), tmp_path)
    (other,) = tmp_path.glob("*.npz")
    key = features_cache_key(few_examples, bert_tokenizer, small_params, is_training=True, data_sha256="d" * 64)
    target = features_cache_path(tmp_path, key, small_params, is_training=True)
    other.rename(target)                                       # right name, wrong contents
    with caplog.at_level(logging.WARNING, logger="bench.core.features"):
        f = cached(few_examples, bert_tokenizer, small_params, tmp_path)
    assert "built for other inputs (params differ)" in caplog.text and len(count_builds) == 2
    assert f.params == small_params
    assert len(cached(few_examples, bert_tokenizer, small_params, tmp_path)) == len(f)
    assert len(count_builds) == 2                              # the rebuilt file is now a hit


def test_overwrite_cache_rebuilds(few_examples, bert_tokenizer, small_params, tmp_path, count_builds):
    cached(few_examples, bert_tokenizer, small_params, tmp_path)
    cached(few_examples, bert_tokenizer, small_params, tmp_path, overwrite_cache=True)
    assert len(count_builds) == 2 and len(list(tmp_path.iterdir())) == 1


def test_cache_file_loads_without_pickle(few_examples, bert_tokenizer, small_params, tmp_path):
    cached(few_examples, bert_tokenizer, small_params, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path, allow_pickle=False) as stored:
        assert json.loads(bytes(stored["params_json"]).decode()) == {
            "max_seq_length": 128, "max_query_length": 32, "doc_stride": 48, "stride_mode": "step",
            "input_style": "bert"}
        assert all(stored[name].dtype != object for name in stored.files)


def test_core_module_imports_no_framework():
    import subprocess
    import sys
    code = ("import sys, bench.core.features; "
            "bad = [m for m in ('torch', 'mxnet', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- --answer_windows_only

def test_answer_windows_keep_answer_windows_and_every_window_of_unanswerable_questions(squad_dir, bert_tokenizer,
                                                                                       caplog):
    """--answer_windows_only (bench.run.pipeline.answer_windows) on real v2.0 data cut into short windows: the
    windows of answerable questions that miss the answer go; answer windows and unanswerable questions stay."""
    from bench.core.data import load_squad
    from bench.run.pipeline import answer_windows

    dataset = load_squad(squad_dir / TRAIN_FILE, for_training=True)
    answerable_first = [e for e in dataset.examples if not e.is_impossible][:150]
    dataset.examples = answerable_first + [e for e in dataset.examples if e.is_impossible][:150]
    features = build_features(dataset.examples, bert_tokenizer, FeatureParams(max_seq_length=96, doc_stride=32,
                                                                               max_query_length=32),
                              is_training=True)
    answerable = np.array([not e.is_impossible for e in dataset.examples])[features.example_index]
    missing = features.is_impossible & answerable
    assert missing.any() and (~answerable).any() and (~features.is_impossible).any()     # all three kinds present
    caplog.set_level(logging.INFO, logger="bench.run.pipeline")
    kept = answer_windows(features, dataset)
    assert len(kept) == len(features) - int(missing.sum())
    kept_answerable = np.array([not e.is_impossible for e in dataset.examples])[kept.example_index]
    assert not (kept.is_impossible & kept_answerable).any()
    assert (~answerable).sum() == int((kept.is_impossible).sum())          # every unanswerable window stays
    first = int(np.flatnonzero(~missing)[0])
    assert np.array_equal(kept.input_ids[kept.window(0)], features.input_ids[features.window(first)])
    assert f"training on {len(kept)} of {len(features)} windows" in caplog.text
