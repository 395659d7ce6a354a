"""The bilstm head and the focal / label-smoothing losses on the torch backend (the MXNet side and the
torch-vs-MXNet parity: tests/test_heads_losses_mxnet.py).

* the losses against a numpy computation by hand, on a tiny masked batch;
* the flags: validation, what the registry says, what a head is built with;
* the bilstm head: padding never reaches a real position, its parameters are head parameters
  for layer-wise decay and freezing;
* every new head x loss learns 32 real questions through the run script (slow).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.apps.run import main as run_squad  # noqa: E402
from bench.backends.torch import optim as torch_optim  # noqa: E402
from bench.backends.torch.heads import MASKED_LOGIT, masked_log_softmax  # noqa: E402
from bench.backends.torch.losses import position_loss  # noqa: E402
from bench.backends.torch.modeling import build_qa_model, resolve_model_source  # noqa: E402
from bench.core import heads as head_registry  # noqa: E402
from bench.core.flags import ConfigError, config_from_args  # noqa: E402
from bench.core.heads import get_head  # noqa: E402
from bench.core.losses import LossSetting, get_loss, loss_options, loss_setting  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from tests.squad_samples import write_sample  # noqa: E402
from tests.test_run_squad import LEARNING_FLAGS, base_args  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two windows of 6 positions; position 1 (a question token) and the tail (padding) are not candidates.
SCORES = np.array([[0.5, 9.0, -1.0, 2.0, 0.0, 3.0],
                   [1.5, -4.0, 0.3, 0.2, 7.0, -7.0]], np.float32)
MASK = np.array([[1, 0, 1, 1, 1, 0],
                 [1, 0, 1, 1, 0, 0]], bool)
TARGETS = np.array([3, 0])


# ---------------------------------------------------------------------------------------- by hand
def hand_log_probs(scores=SCORES, mask=MASK) -> np.ndarray:
    """log-softmax over the candidates (float64); MASKED_LOGIT elsewhere."""
    out = np.full(scores.shape, MASKED_LOGIT, np.float64)
    for row in range(len(scores)):
        kept = scores[row][mask[row]].astype(np.float64)
        out[row][mask[row]] = kept - np.log(np.exp(kept).sum())
    return out


def hand_focal(gamma: float) -> np.ndarray:
    lp = hand_log_probs()
    return np.array([-(1 - np.exp(lp[b, t])) ** gamma * lp[b, t] for b, t in enumerate(TARGETS)])


def hand_label_smoothing(eps: float) -> np.ndarray:
    """-sum_j q_j log p_j with q = 1 - eps on the gold position and eps / (n - 1) on each other candidate."""
    lp = hand_log_probs()
    losses = []
    for b, gold in enumerate(TARGETS):
        candidates = np.flatnonzero(MASK[b])
        target = {j: (1 - eps if j == gold else eps / (len(candidates) - 1)) for j in candidates}
        losses.append(-sum(q * lp[b, j] for j, q in target.items()))
    return np.array(losses)


def torch_loss(loss, scores=SCORES) -> np.ndarray:
    log_probs = masked_log_softmax(torch.from_numpy(scores), torch.from_numpy(MASK))
    return position_loss(loss)(log_probs, torch.from_numpy(TARGETS)).numpy()


def test_hand_reference_is_what_it_says():
    """The numpy reference itself, on the numbers: window 1 has 3 candidates, so eps/2 each."""
    lp = hand_log_probs()
    assert np.allclose(np.exp(lp[1][MASK[1]]).sum(), 1.0)
    expected = -(0.8 * lp[1, 0] + 0.1 * lp[1, 2] + 0.1 * lp[1, 3])
    assert hand_label_smoothing(0.2)[1] == pytest.approx(expected)


def hand_loss(setting: LossSetting) -> np.ndarray:
    """The hand reference of a ce / focal / label_smoothing setting."""
    if setting.name == "label_smoothing":
        return hand_label_smoothing(setting.options["label_smoothing"])
    return hand_focal(setting.options.get("focal_gamma", 0.0))          # ce: gamma 0


HAND_CASES = [LossSetting("ce")] + [LossSetting("focal", {"focal_gamma": g}) for g in (0.0, 0.5, 1.0, 2.0)] + \
    [LossSetting("label_smoothing", {"label_smoothing": e}) for e in (0.0, 0.1, 0.2, 0.5)]


@pytest.mark.parametrize("setting", HAND_CASES, ids=lambda s: f"{s.name}{list(s.options.values())}")
def test_losses_match_the_hand_computation(setting):
    got = torch_loss(setting)
    np.testing.assert_allclose(got, hand_loss(setting), rtol=1e-6, atol=1e-6)
    if not any(setting.options.values()):            # gamma 0, eps 0: plain cross-entropy
        np.testing.assert_allclose(got, torch_loss("ce"), rtol=0, atol=1e-7)


def test_label_smoothing_ignores_the_masked_positions():
    """Masked scores do not enter the loss nor get a gradient, whatever they are."""
    other = SCORES.copy()
    other[~MASK] = np.linspace(-1e4, 1e4, (~MASK).sum())
    setting = LossSetting("label_smoothing", {"label_smoothing": 0.3})
    np.testing.assert_allclose(torch_loss(setting, other), torch_loss(setting), rtol=0, atol=1e-6)
    scores = torch.from_numpy(SCORES).requires_grad_()
    position_loss(setting)(masked_log_softmax(scores, torch.from_numpy(MASK)), torch.from_numpy(TARGETS)).sum().backward()
    assert torch.all(scores.grad[torch.from_numpy(~MASK)] == 0) and torch.all(torch.isfinite(scores.grad))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_of_a_certain_gold_position_is_zero_with_a_finite_gradient(gamma):
    """p_gold = 1 exactly (the other candidates 200 below): (1 - p)^gamma is 0, not a NaN gradient."""
    scores = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    log_probs = masked_log_softmax(scores, torch.ones(1, 3, dtype=torch.bool))
    loss = position_loss(LossSetting("focal", {"focal_gamma": gamma}))(log_probs, torch.tensor([0]))
    loss.sum().backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-30) and torch.all(torch.isfinite(scores.grad))


# ---------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flags,message", [
    (["--focal_gamma", "-0.5"], "--focal_gamma must be >= 0, got -0.5"),
    (["--label_smoothing", "1"], "--label_smoothing must be in [0, 1), got 1.0"),
    (["--label_smoothing", "-0.1"], "--label_smoothing must be in [0, 1), got -0.1"),
])
def test_loss_flags_are_validated_naming_the_flag_and_value(flags, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_args(["--do_train", "--model_path", str(tmp_path), "--head", "basic", *flags])
    assert str(error.value) == message


@pytest.mark.parametrize("loss", ["focal", "label_smoothing"])
def test_the_conditional_head_keeps_its_own_loss(loss, tmp_path):
    with pytest.raises(ConfigError, match=rf"--loss {loss} does not apply to --head conditional.*: ce$"):
        config_from_args(["--do_train", "--model_path", str(tmp_path), "--loss", loss])


def test_registry_entries_and_the_setting_a_head_is_built_with(tmp_path):
    for head in ("basic", "bilstm"):
        assert get_head(head).losses == ("ce", "focal", "label_smoothing")
        assert get_head(head).postprocess_input == "logits"
        assert set(get_head(head).outputs) == {"start_logits", "end_logits"}
    assert get_head("bilstm").needs_valid_length and not get_head("basic").needs_valid_length
    assert get_loss("focal").flags == ("focal_gamma",) and get_loss("label_smoothing").flags == ("label_smoothing",)
    assert get_loss("ce").flags == ()
    config = config_from_args(["--do_train", "--model_path", str(tmp_path), "--head", "bilstm", "--loss", "focal",
                               "--focal_gamma", "2.5", "--label_smoothing", "0.1"])
    assert loss_setting(config) == LossSetting("focal", {"focal_gamma": 2.5})
    assert loss_options("label_smoothing") == {"label_smoothing": 0.2}           # the flag's default
    assert loss_options("label_smoothing", {"label_smoothing": 0.05, "other": 1}) == {"label_smoothing": 0.05}
    assert LossSetting("ce").options == {}


# ---------------------------------------------------------------------------------------- bilstm head
@pytest.fixture(scope="module")
def bert_source(tiny_model):
    return resolve_model_source("unused", str(tiny_model("bert", dropout=0.0)))


def _bilstm_model(source, loss="ce"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_qa_model(source, head="bilstm", dropout=0.0, loss=loss).eval()


def test_bilstm_head_shapes_and_names(bert_source):
    model = _bilstm_model(bert_source)
    size = model.backbone.config.hidden_size
    lstm = model.head.lstm
    assert (lstm.num_layers, lstm.hidden_size, lstm.input_size, lstm.bidirectional, lstm.dropout) == \
        (2, size, size, True, 0.2)
    assert tuple(model.head.span_scores.weight.shape) == (2, 2 * size)
    head_names = {name for name in model.state_dict() if name.startswith("head.")}
    assert head_names == {f"head.lstm.{kind}_{gate}_l{layer}{suffix}" for kind in ("weight", "bias")
                          for gate in ("ih", "hh") for layer in (0, 1) for suffix in ("", "_reverse")} | \
        {"head.span_scores.weight", "head.span_scores.bias"}


def test_bilstm_padding_never_reaches_a_real_position(bert_source):
    """The same window alone and right-padded (with garbage states in the padding): equal scores, in both
    LSTM directions; the padded positions' features are zeros, as pad_packed_sequence leaves them."""
    head = _bilstm_model(bert_source).head
    size = head.span_scores.in_features // 2
    generator = torch.Generator().manual_seed(1)
    window = torch.randn(1, 7, size, generator=generator)
    padded = torch.cat([window, 100 * torch.randn(1, 5, size, generator=generator)], dim=1)
    other = torch.randn(1, 12, size, generator=generator)
    batch = torch.cat([padded, other])
    with torch.no_grad():
        alone = head.features(window, torch.tensor([7]))
        together = head.features(batch, torch.tensor([7, 12]))
        unpacked = head.features(batch)           # without lengths the backward direction starts in the padding
    torch.testing.assert_close(together[0, :7], alone[0], rtol=0, atol=1e-6)
    assert torch.all(together[0, 7:] == 0)
    assert (unpacked[0, :7] - alone[0]).abs().max() > 1e-3        # ... which the test above would have seen


def test_bilstm_trains_and_predicts_through_the_model(bert_source, bert_tokenizer):
    from tests.squad_samples import CONTEXTS, QUESTIONS
    from tests.tiny_models import encode_qa_batch

    batch = encode_qa_batch(bert_tokenizer, QUESTIONS, CONTEXTS)
    assert (batch["attention_mask"] == 0).any()
    first_context = batch["candidate_mask"][:, 1:].float().argmax(1) + 1
    labels = dict(start_positions=first_context, end_positions=first_context + 1,
                  is_impossible=torch.tensor([1, 0, 0, 0]))
    for loss in ("ce", "focal", "label_smoothing"):
        model = _bilstm_model(bert_source, loss).train()
        out = model(**batch, **labels)
        out["loss"].mean().backward()
        assert out["loss"].shape == (4,) and torch.all(torch.isfinite(out["loss"]))
        assert all(p.grad is not None for p in model.head.parameters())
    scores = model.eval().predict(**batch)
    assert set(scores) == {"start_logits", "end_logits"}
    assert torch.all(scores["start_logits"][~batch["candidate_mask"]] == MASKED_LOGIT)


def test_bilstm_is_a_head_for_layerwise_decay_and_freezing(bert_source):
    """Outside ``backbone.``: LR multiplier 1 with decay on, never frozen, with the scorer's (head) rules."""
    model = _bilstm_model(bert_source)
    lstm = {name for name, _ in model.named_parameters() if name.startswith("head.lstm.")}
    assert len(lstm) == 16
    multipliers = torch_optim.lr_multipliers(model, 0.5)
    assert {multipliers[name] for name in lstm} == {1.0} == {multipliers["head.span_scores.weight"]}
    assert min(multipliers.values()) < 0.5          # the backbone does decay
    assert not lstm & torch_optim.frozen_parameter_names(model, 1)
    groups = torch_optim.build_param_groups(model, lr=1e-3, wd=0.01, layerwise_decay=0.5, untunable_depth=1)
    group_of = {name: group for group in groups for name in group["param_names"]}
    assert {group_of[name]["lr"] for name in lstm} == {1e-3}
    assert {group_of[name]["weight_decay"] for name in lstm if "weight" in name.rpartition(".")[2]} == {0.01}


def test_lstm_biases_do_not_decay(bert_source):
    model = _bilstm_model(bert_source)
    biases = {name for name, _ in model.named_parameters() if name.startswith("head.lstm.bias_")}
    assert len(biases) == 8 and biases <= torch_optim.no_decay_parameter_names(model)


# ---------------------------------------------------------------------------------------- run script
def test_loss_flags_reach_the_head_through_the_run_script(tiny_model, sample_files, tmp_path):
    """--label_smoothing 0 is plain cross-entropy: the same first loss as --loss ce, from the same start."""
    first = {}
    for name, flags in {"ce": dict(loss="ce"), "ls0": dict(loss="label_smoothing", label_smoothing=0.0)}.items():
        out = tmp_path / name
        assert run_squad(base_args(tiny_model("bert", dropout=0.0), sample_files["2.0"], out, head="basic",
                                   num_train_steps=1, classifier_dropout=0.0, max_eval_samples=2, **flags)) == 0
        first[name] = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])["loss"]
    assert first["ls0"] == pytest.approx(first["ce"], abs=1e-6)


LEARNING = [("bilstm", "ce"), ("bilstm", "focal"), ("bilstm", "label_smoothing"), ("basic", "focal"),
            ("basic", "label_smoothing")]


@pytest.mark.slow
@pytest.mark.parametrize("head,loss", LEARNING)
def test_new_heads_and_losses_learn_the_questions_they_trained_on(head, loss, tiny_dirs, squad_dir, tmp_path):
    """test_run_squad's learning check for each new head x loss: 32 real questions fitted to EM >= 90."""
    data = write_sample(squad_dir, tmp_path / "train.json", num_questions=32, version="2.0")
    out = tmp_path / "run"
    assert run_squad(base_args(tiny_dirs["bert"], data, out, head=head, loss=loss, **LEARNING_FLAGS)) == 0
    record = load_results(out / "results.json")
    assert record["head"] == head and record["hyperparameters"]["loss"] == loss
    assert record["metrics"]["fixed"]["exact"] >= 90.0, record["metrics"]


def test_bilstm_layer_dropout_is_read_when_the_head_is_built(bert_source, monkeypatch):
    monkeypatch.setattr(head_registry, "BILSTM_LAYER_DROPOUT", 0.0)
    assert _bilstm_model(bert_source).head.lstm.dropout == 0.0
