"""``bench.backends.torch.rnn.lstm_within_lengths``: what an ``nn.LSTM`` over a packed sequence gives,
values and gradients, without packing (the bilstm head and the recurrent baselines use it)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from bench.backends.torch.rnn import lstm_within_lengths  # noqa: E402

LENGTHS = [11, 3, 7, 1, 11, 5]


def _packed(lstm, inputs, lengths):
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=inputs.size(1))[0]


def _values_and_gradients(fn, lstm, inputs, lengths, weights):
    out = fn(lstm, inputs, lengths)
    return (out, *torch.autograd.grad((out * weights).sum(), [inputs, *lstm.parameters()]))


@pytest.mark.parametrize("layers,bidirectional", [(2, True), (1, True), (1, False), (3, False)])
def test_values_and_gradients_equal_the_packed_lstms(layers, bidirectional):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    inputs = torch.randn(len(LENGTHS), max(LENGTHS), 6, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    weights = torch.randn(len(LENGTHS), max(LENGTHS), 5 * (2 if bidirectional else 1))
    want = _values_and_gradients(_packed, lstm, inputs, lengths, weights)
    got = _values_and_gradients(lstm_within_lengths, lstm, inputs, lengths, weights)
    for expected, actual in zip(want, got, strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert torch.all(got[0][1, 3:] == 0) and torch.all(got[1][1, 3:] == 0)   # padding: no output, no gradient


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 4, num_layers=2, batch_first=True, bidirectional=True, dropout=0.5)
    inputs, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    lstm.eval()
    torch.testing.assert_close(lstm_within_lengths(lstm, inputs, lengths), _packed(lstm, inputs, lengths),
                               rtol=0, atol=1e-6)
    lstm.train()
    first, second = (lstm_within_lengths(lstm, inputs, lengths) for _ in range(2))
    assert not torch.equal(first, second)


def test_float16_on_the_cpu_runs_in_float32():
    """oneDNN has no float16 LSTM on these CPUs: under float16 autocast the LSTM runs in float32."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, num_layers=2, batch_first=True, bidirectional=True).eval()
    inputs, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = lstm_within_lengths(lstm, inputs, lengths)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, lstm_within_lengths(lstm, inputs, lengths).detach(), rtol=0, atol=1e-6)


def test_a_projected_or_time_major_lstm_is_refused():
    for lstm in (torch.nn.LSTM(4, 4, proj_size=2, batch_first=True), torch.nn.LSTM(4, 4)):
        with pytest.raises(ValueError, match="batch_first nn.LSTM without projections"):
            lstm_within_lengths(lstm, torch.randn(1, 2, 4), torch.tensor([2]))
