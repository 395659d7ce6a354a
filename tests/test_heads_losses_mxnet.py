"""The bilstm head and the focal / label-smoothing losses on the MXNet backend, against the torch backend.

* the losses against the numpy computation of tests/test_heads_losses.py, and against torch (values and
  gradients, hybridized);
* the Gluon ``BiLSTM`` against torch's packed ``nn.LSTM``: the gate order (i, f, g, o) by hand, outputs and
  gradients, the padding;
* the torch <-> Gluon parameter names of the LSTM, and whole bilstm models moving between the backends;
* per-window losses and scores, and the parameters after 3 updates through the run script, torch vs
  MXNet, for bilstm x {ce, focal, label_smoothing} and basic x {focal, label_smoothing};
* every new head x loss learns 32 real questions through the run script (slow).

Needs the MXNet extra; skipped without it unless SQUAD_BENCH_REQUIRE_MXNET=1
(``tests.conftest.import_mxnet_or_skip``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import import_mxnet_or_skip

mx, _ = import_mxnet_or_skip()
torch = pytest.importorskip("torch")

from mxnet.gluon import HybridBlock  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from bench.apps.run import main as run_squad  # noqa: E402
from bench.backends.mxnet.convert import encoder_config_from_hf, read_hf_config, structural_params  # noqa: E402
from bench.backends.mxnet.heads import (BiLSTM, batch_to_nd, build_qa_model, gluon_to_torch_name,  # noqa: E402
                                       load_torch_state, masked_log_softmax, torch_state_from_gluon,
                                       torch_to_gluon_name)
from bench.backends.mxnet.losses import position_loss  # noqa: E402
from bench.backends.mxnet.optim import parameter_rules  # noqa: E402
from bench.backends.torch import modeling as torch_modeling  # noqa: E402
from bench.backends.torch import optim as torch_optim  # noqa: E402
from bench.backends.torch.heads import masked_log_softmax as torch_masked_log_softmax  # noqa: E402
from bench.backends.torch.losses import position_loss as torch_position_loss  # noqa: E402
from bench.core import heads as head_registry  # noqa: E402
from bench.core.losses import LossSetting  # noqa: E402
from bench.core.results import load_results  # noqa: E402
from tests.squad_samples import write_sample  # noqa: E402
from tests.test_heads_losses import (LEARNING, LEARNING_FLAGS, MASK, SCORES, TARGETS, hand_log_probs,  # noqa: E402
                                     hand_loss)
from tests.test_mxnet_backend import (LABELS, TORCH_INPUTS, _first_batch, _torch_tensors,  # noqa: E402,F401
                                      train_examples)      # train_examples: a fixture of the parity tests
from tests.test_mxnet_run import PARITY_FLAGS, _initial_weights, eval_only, train_log, weights  # noqa: E402
from tests.test_run_squad import base_args  # noqa: E402

MX = {"backend": "mxnet"}
SETTINGS = {"ce": LossSetting("ce"), "focal": LossSetting("focal", {"focal_gamma": 2.0}),
            "focal_default": LossSetting("focal"), "label_smoothing": LossSetting("label_smoothing"),
            "label_smoothing_0.4": LossSetting("label_smoothing", {"label_smoothing": 0.4})}
PARITY = [("bilstm", "ce"), ("bilstm", "focal"), ("bilstm", "label_smoothing"), ("basic", "focal"),
          ("basic", "label_smoothing")]


# ---------------------------------------------------------------------------------------- losses
class _Loss(HybridBlock):
    """The loss of masked scores (``masked_log_softmax``), or of given log-probabilities (``scores=False``)."""

    def __init__(self, setting, scores: bool = True):
        super().__init__()
        self._loss, self._scores = position_loss(setting), scores

    def hybrid_forward(self, F, values, mask, targets):  # pylint: disable=arguments-differ
        log_probs = masked_log_softmax(F, values, mask) if self._scores else values
        return self._loss(F, log_probs, targets)


def _mxnet_loss_and_grad(setting, hybridize: bool, values=SCORES, scores: bool = True):
    block = _Loss(setting, scores)
    if hybridize:
        block.hybridize()
    values = mx.nd.array(values)
    values.attach_grad()
    with mx.autograd.record():
        loss = block(values, mx.nd.array(MASK), mx.nd.array(TARGETS))
    loss.backward()
    return loss.asnumpy(), values.grad.asnumpy()


def _torch_loss_and_grad(setting, values=SCORES, scores: bool = True):
    values = torch.from_numpy(values.copy()).requires_grad_()
    log_probs = torch_masked_log_softmax(values, torch.from_numpy(MASK)) if scores else values
    loss = torch_position_loss(setting)(log_probs, torch.from_numpy(TARGETS))
    loss.sum().backward()
    return loss.detach().numpy(), values.grad.numpy()


@pytest.mark.filterwarnings("ignore:The 1-th input to HybridBlock is not used")      # the mask, given log-probs
@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_losses_match_the_hand_computation_and_torch(name, hybridize):
    """On the hand reference's own log-probabilities (rounded to float32), the loss functions of both
    backends give its values within 1e-6 and equal gradients; from the scores, through each backend's
    masked log-softmax (MXNet's float32 log-softmax is ~3e-6 off), within 1e-5."""
    setting = SETTINGS[name]
    expected = hand_loss(setting)
    log_probs = hand_log_probs().astype(np.float32)
    loss, grad = _mxnet_loss_and_grad(setting, hybridize, log_probs, scores=False)
    torch_loss, torch_grad = _torch_loss_and_grad(setting, log_probs, scores=False)
    np.testing.assert_allclose(loss, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(torch_loss, expected, rtol=0, atol=1e-6)
    assert np.abs(grad - torch_grad).max() <= 1e-6 and np.all(grad[~MASK] == 0)
    loss, grad = _mxnet_loss_and_grad(setting, hybridize)
    torch_loss, torch_grad = _torch_loss_and_grad(setting)
    np.testing.assert_allclose(loss, expected, rtol=0, atol=1e-5)
    assert np.abs(loss - torch_loss).max() <= 1e-5 and np.abs(grad - torch_grad).max() <= 1e-5
    assert np.all(grad[~MASK] == 0)


# ---------------------------------------------------------------------------------------- BiLSTM
def _twin_lstms(size: int, seed: int = 0):
    """torch's nn.LSTM and a Gluon BiLSTM with the same (random) weights, moved by name."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = torch.nn.LSTM(size, size, num_layers=2, batch_first=True, bidirectional=True)
    gluon = BiLSTM(size, size, num_layers=2, dropout=0.0)
    gluon.initialize()
    params = structural_params(gluon)
    for name, value in reference.state_dict().items():
        params[torch_to_gluon_name(name, set())].set_data(mx.nd.array(value.numpy()))
    return reference, gluon


def test_gate_order_is_i_f_g_o_in_both(monkeypatch):
    """Two steps of the second layer's forward direction, by hand: with every weight zero and only that
    direction's i2h bias set, its gates are constant, c1 = sigma(i) tanh(g), h1 = sigma(o) tanh(c1),
    c2 = sigma(f) c1 + sigma(i) tanh(g), h2 = sigma(o) tanh(c2), reading the bias blocks in (i, f, g, o)
    order (the forget gate shows at the second step). Both frameworks agree with the hand computation."""
    size = 2
    reference, gluon = _twin_lstms(size)
    bias = np.array([0.3, -0.2, 1.1, 0.4, -0.7, 0.9, 0.5, -1.3], np.float32)       # i | f | g | o, 2 units each
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    i, f, g, o = (bias[k * size:(k + 1) * size] for k in range(4))
    c1 = sigmoid(i) * np.tanh(g)
    h1 = sigmoid(o) * np.tanh(c1)
    c2 = sigmoid(f) * c1 + sigmoid(i) * np.tanh(g)          # zero inputs and zero recurrent weights: same gates
    h2 = sigmoid(o) * np.tanh(c2)
    with torch.no_grad():
        for name, tensor in reference.named_parameters():
            tensor.zero_()
            if name == "bias_ih_l1":
                tensor.copy_(torch.from_numpy(bias))
    params = structural_params(gluon)
    for name, tensor in reference.state_dict().items():
        params[torch_to_gluon_name(name, set())].set_data(mx.nd.array(tensor.numpy()))
    steps = np.zeros((1, 2, size), np.float32)
    torch_out = reference(torch.from_numpy(steps))[0].detach().numpy()
    gluon_out = gluon(mx.nd.array(steps), mx.nd.array([2])).asnumpy()
    for out in (torch_out, gluon_out):
        np.testing.assert_allclose(out[0, :, :size], [h1, h2], rtol=0, atol=1e-6)


def test_bilstm_equals_torch_packed_lstm_with_padding():
    """Outputs, input gradients and parameter gradients, imperative and hybridized, on right-padded
    windows of lengths 9, 5 and 1 (garbage in the padding)."""
    size, lengths = 6, np.array([9, 5, 1])
    reference, gluon = _twin_lstms(size)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 9, size)).astype(np.float32)
    inputs[np.arange(9)[None, :] >= lengths[:, None]] = 50.0
    weight = rng.normal(size=(3, 9, 2 * size)).astype(np.float32)
    x = torch.from_numpy(inputs.copy()).requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=True,
                                                     enforce_sorted=False)
    expected = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=9)[0]
    (expected * torch.from_numpy(weight)).sum().backward()
    for hybridize in (False, True):
        if hybridize:
            gluon.hybridize()
        x_nd = mx.nd.array(inputs)
        x_nd.attach_grad()
        with mx.autograd.record():
            out = gluon(x_nd, mx.nd.array(lengths))
            total = (out * mx.nd.array(weight)).sum()
        total.backward()
        assert np.abs(out.asnumpy() - expected.detach().numpy()).max() <= 1e-6
        assert np.abs(x_nd.grad.asnumpy() - x.grad.numpy()).max() <= 1e-6
        grads = {gluon_to_torch_name(name): param.grad().asnumpy() for name, param in structural_params(gluon).items()}
        assert set(grads) == {name for name, _ in reference.named_parameters()}
        for name, tensor in reference.named_parameters():
            assert np.abs(grads[name] - tensor.grad.numpy()).max() <= 1e-6, name
        for param in structural_params(gluon).values():
            param.zero_grad()


def test_gluon_lstm_ignores_sequence_length_on_the_cpu():
    """Why BiLSTM exists: gluon.rnn.LSTM(use_sequence_length=True) gives the same outputs whatever the lengths
    on the CPU, so its backward direction reads the padding. If this starts failing, MXNet reads the lengths
    and BiLSTM could become gluon.rnn.LSTM(bidirectional=True, use_sequence_length=True)."""
    layer = mx.gluon.rnn.LSTM(4, num_layers=1, layout="NTC", bidirectional=True, input_size=3,
                              use_sequence_length=True)
    layer.initialize()
    inputs = mx.nd.random.normal(shape=(2, 5, 3))
    full, short = (layer(inputs, sequence_length=mx.nd.array(lengths)).asnumpy() for lengths in ([5, 5], [5, 2]))
    assert np.array_equal(full, short)


def test_lstm_names_convert_both_ways():
    pairs = {"head.lstm.weight_ih_l0": "head.lstm.l0_i2h_weight",
             "head.lstm.weight_hh_l1_reverse": "head.lstm.r1_h2h_weight",
             "head.lstm.bias_ih_l1": "head.lstm.l1_i2h_bias",
             "head.lstm.bias_hh_l0_reverse": "head.lstm.r0_h2h_bias"}
    for torch_name, gluon_name in pairs.items():
        assert torch_to_gluon_name(torch_name, set()) == gluon_name
        assert gluon_to_torch_name(gluon_name) == torch_name
    assert torch_to_gluon_name("head.span_scores.weight", set()) == "head.span_scores.weight"
    assert gluon_to_torch_name("head.end_layer_norm.gamma") == "head.end_layer_norm.weight"


# ---------------------------------------------------------------------------------------- whole models
@pytest.fixture(scope="module")
def bert0(tiny_model):
    return tiny_model("bert", dropout=0.0)


@pytest.fixture
def no_lstm_dropout(monkeypatch):
    monkeypatch.setattr(head_registry, "BILSTM_LAYER_DROPOUT", 0.0)


def _torch_model(folder, head, loss):
    source = torch_modeling.resolve_model_source("unused", str(folder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch_modeling.build_qa_model(source, head=head, dropout=0.0, loss=loss)
    return model.eval(), torch_modeling.load_tokenizer(source), source


def test_a_bilstm_model_moves_between_the_backends(bert0, tmp_path):
    """torch state -> Gluon -> torch names is the identity, and the Gluon model has no other parameter."""
    torch_model, _, _ = _torch_model(bert0, "bilstm", "ce")
    state = {name: value.numpy() for name, value in torch_model.state_dict().items()}
    model = build_qa_model(encoder_config_from_hf(read_hf_config(bert0)), head="bilstm")
    load_torch_state(model, state)
    back = torch_state_from_gluon(model)
    assert set(back) == set(state)
    assert all(np.array_equal(back[name], state[name]) for name in state)


@pytest.mark.parametrize("head,loss", PARITY)
def test_per_window_loss_and_scores_match_torch(head, loss, bert0, train_examples, no_lstm_dropout):
    """Same weights, the first real training batch (padded, both kinds of windows), dropout off."""
    setting = SETTINGS[loss]
    torch_model, tokenizer, source = _torch_model(bert0, head, setting)
    arrays = _first_batch(train_examples, tokenizer, source.input_style)
    with torch.no_grad():
        torch_loss = torch_model(**_torch_tensors(arrays, TORCH_INPUTS + LABELS))["loss"].numpy()
        torch_scores = torch_model.predict(**_torch_tensors(arrays, TORCH_INPUTS))
    model = build_qa_model(encoder_config_from_hf(read_hf_config(bert0)), head=head, dropout=0.0, loss=setting)
    load_torch_state(model, {name: value.numpy() for name, value in torch_model.state_dict().items()})
    model.hybridize()
    nd = batch_to_nd(arrays)
    with mx.autograd.record(train_mode=False):
        loss_nd = model(nd["input_ids"], nd["token_types"], nd["valid_length"], nd["candidate_mask"],
                        nd["start_positions"], nd["end_positions"], nd["is_impossible"])
    loss_nd.backward()
    loss_diff = float(np.abs(loss_nd.asnumpy() - torch_loss).max())
    scores = model.predict(nd)
    candidates = arrays["candidate_mask"].astype(bool)
    score_diff = max(float(np.abs(scores[name] - torch_scores[name].numpy())[candidates].max()) for name in scores)
    print(f"\n{head} x {loss}: per-window loss max |torch - mxnet| = {loss_diff:.2e}, "
          f"candidate scores {score_diff:.2e}")
    assert loss_diff <= 1e-5 and score_diff <= 1e-5
    assert all(np.array_equal(scores[name][~candidates], torch_scores[name].numpy()[~candidates]) for name in scores)
    without_grad = [name for name, param in structural_params(model).items()
                    if name.startswith("head.") and not np.abs(param.grad().asnumpy()).sum() > 0]
    assert without_grad == []


# ---------------------------------------------------------------------------------------- optimizer
def test_bilstm_optimizer_rules_match_the_torch_backend(bert0):
    """Layer multipliers and frozen sets per torch name equal the torch backend's; the LSTM is head."""
    torch_model, _, _ = _torch_model(bert0, "bilstm", "ce")
    rules = parameter_rules(build_qa_model(encoder_config_from_hf(read_hf_config(bert0)), head="bilstm"),
                            layerwise_decay=0.8, untunable_depth=1)
    by_torch_name = {rule.torch_name: rule for rule in rules.values()}
    assert set(by_torch_name) == {name for name, _ in torch_model.named_parameters()}
    multipliers = torch_optim.lr_multipliers(torch_model, 0.8)
    assert {n: r.lr_mult for n, r in by_torch_name.items()} == pytest.approx(multipliers)
    assert {n for n, r in by_torch_name.items() if r.frozen} == torch_optim.frozen_parameter_names(torch_model, 1)
    lstm = [rule for name, rule in by_torch_name.items() if name.startswith("head.lstm.")]
    assert len(lstm) == 16 and all(r.layer is None and r.lr_mult == 1.0 and not r.frozen for r in lstm)
    # MXNet: biases never decay, LSTM biases included (the torch side: test_heads_losses.test_lstm_biases_do_not_decay)
    assert {n for n, r in by_torch_name.items() if n.startswith("head.lstm.") and not r.decays} == \
        {n for n in by_torch_name if n.startswith("head.lstm.bias_")}


def test_bilstm_decay_sets_match_the_torch_backend(bert0):
    torch_model, _, _ = _torch_model(bert0, "bilstm", "ce")
    rules = parameter_rules(build_qa_model(encoder_config_from_hf(read_hf_config(bert0)), head="bilstm"),
                            layerwise_decay=0.8, untunable_depth=1)
    assert {r.torch_name for r in rules.values() if not r.decays} == \
        torch_optim.no_decay_parameter_names(torch_model)


# ---------------------------------------------------------------------------------------- run script
def _run_flags(loss: str) -> dict:
    """--focal_gamma 2 (not the default 1) so that parity also covers the flag's value."""
    return {"focal": dict(focal_gamma=2.0), "label_smoothing": dict(label_smoothing=0.2)}.get(loss, {})


@pytest.mark.parametrize("head,loss", PARITY)
def test_first_updates_match_the_torch_backend(head, loss, bert0, sample_files, tmp_path, no_lstm_dropout):
    """test_mxnet_run's parity run (dropout off, every optimisation rule on) for the new heads x losses:
    the first loss and the parameters after each of 3 updates agree; the bilstm x ce checkpoint written
    by torch gives the same predictions evaluated by MXNet."""
    init = _initial_weights(bert0, head, tmp_path / "init.safetensors")
    flags = {**PARITY_FLAGS, "max_eval_samples": 8, **_run_flags(loss)}
    runs = {}
    for backend in ("torch", "mxnet"):
        runs[backend] = tmp_path / backend
        assert run_squad(base_args(bert0, sample_files["2.0"], runs[backend], head=head, loss=loss,
                                   param_checkpoint=init, backend=backend, **flags)) == 0
    logs = {backend: train_log(path) for backend, path in runs.items()}
    loss_diff = abs(logs["torch"][0]["loss"] - logs["mxnet"][0]["loss"])
    start = load_file(str(init))
    param_diffs = []
    for update in (1, 2, 3):
        a, b = weights(runs["torch"], update), weights(runs["mxnet"], update)
        assert a.keys() == b.keys() == start.keys()
        param_diffs.append(max(float(np.abs(a[name] - b[name]).max()) for name in a))
    moved = max(float(np.abs(weights(runs["mxnet"], 3)[k] - start[k]).max()) for k in start)
    print(f"\n{head} x {loss}: first loss |torch - mxnet| = {loss_diff:.2e}; parameters after updates 1-3: "
          f"{', '.join(f'{d:.2e}' for d in param_diffs)} (largest move {moved:.2e})")
    assert loss_diff <= 1e-5
    assert max(param_diffs) <= 1e-6
    assert moved > 1e-3, "nothing moved: proves nothing"
    if (head, loss) == ("bilstm", "ce"):
        out = tmp_path / "mxnet_reads_torch"
        ckpt = runs["torch"] / "checkpoints" / "update_3" / "model.safetensors"
        assert run_squad(eval_only(base_args(bert0, sample_files["2.0"], out, head=head, param_checkpoint=ckpt,
                                             max_eval_samples=8, **MX))) == 0
        assert json.loads((out / "predictions.json").read_text()) == \
            json.loads((runs["torch"] / "predictions.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("head,loss", LEARNING)
def test_new_heads_and_losses_learn_the_questions_they_trained_on(head, loss, tiny_dirs, squad_dir, tmp_path):
    """The torch learning check on MXNet: 32 real questions fitted to EM >= 90."""
    data = write_sample(squad_dir, tmp_path / "train.json", num_questions=32, version="2.0")
    out = tmp_path / "run"
    assert run_squad(base_args(tiny_dirs["bert"], data, out, head=head, loss=loss, **LEARNING_FLAGS, **MX)) == 0
    record = load_results(out / "results.json")
    assert record["backend"] == "mxnet" and record["head"] == head
    assert record["metrics"]["fixed"]["exact"] >= 90.0, record["metrics"]
