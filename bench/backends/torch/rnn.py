"""An ``nn.LSTM`` over left-aligned padded sequences, each read only up to its length, without packing.

What ``pad_packed_sequence(lstm(pack_padded_sequence(x, lengths)))`` returns, computed another way.
Why: on the CPU a packed sequence runs torch's generic per-step loop, while a padded one runs the
fused (oneDNN) LSTM kernel. Measured with torch 2.13 on a 2-core AMD EPYC, a 2-layer bidirectional
LSTM (H = 32) over a batch of 8 x 128 steps, forward and backward: 86 ms packed, 11 ms padded.

Each direction of each layer is one single-layer call of the fused kernel over padded steps (the
``nn.LSTM``'s own parameters, so checkpoints and names do not change). The forward direction reads a
sequence's padding only after its real steps, so the real positions never see it. The backward
direction runs over the steps reversed *within* each length (a permutation that is its own inverse):
it starts at the last real step, the padding again comes last, and its output is reversed back the
same way.
Padded positions of the result are zero, as ``pad_packed_sequence`` leaves them. Dropout between
layers, as ``nn.LSTM`` applies it (training only, not after the last layer). The MXNet backend's
``BiLSTM`` (``bench.backends.mxnet.heads``) does the same with ``SequenceReverse``.

float16 on the CPU (``--dtype float16`` there) runs the LSTM in float32: oneDNN has no float16 LSTM
on these CPUs ("could not create a primitive descriptor"), with packed sequences as without them.

On a GPU the packed sequence stays: cuDNN reads it natively, and per-direction calls would have it
copy the weights into one buffer at every call (the "not part of single contiguous chunk" warning).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["lstm_within_lengths"]


def lstm_within_lengths(lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """inputs (B, T, C) (``lstm`` is batch_first), lengths (B,) -> (B, T, directions * H): each
    sequence's states over its first ``lengths[b]`` steps, zeros after them."""
    if not lstm.batch_first or lstm.proj_size:
        raise ValueError("lstm_within_lengths needs a batch_first nn.LSTM without projections")
    if inputs.device.type != "cpu":
        packed = pack_padded_sequence(inputs, lengths.long().cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=inputs.size(1))[0]
    if _float16(inputs):
        with torch.autocast("cpu", enabled=False):
            return lstm_within_lengths(lstm, inputs.float(), lengths)
    steps = torch.arange(inputs.size(1), device=inputs.device)
    lengths = lengths.to(device=inputs.device, dtype=torch.long)[:, None]
    real = steps[None, :] < lengths                                             # (B, T)
    reversal = torch.where(real, lengths - 1 - steps[None, :], steps[None, :])  # its own inverse
    states = inputs
    for layer in range(lstm.num_layers):
        directions = [_one_direction(lstm, states, f"l{layer}")]
        if lstm.bidirectional:
            backward = _one_direction(lstm, _reorder(states, reversal), f"l{layer}_reverse")
            directions.append(_reorder(backward, reversal))
        states = torch.cat(directions, dim=-1)
        if layer < lstm.num_layers - 1:
            states = F.dropout(states, lstm.dropout, lstm.training)
    return states * real[..., None].to(states.dtype)


def _float16(inputs: torch.Tensor) -> bool:
    """Whether the LSTM would run in float16 on the CPU: float16 inputs, or float16 CPU autocast."""
    autocast_half = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
    return inputs.dtype == torch.float16 or autocast_half


def _reorder(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values (B, T, F) with step t taken from step ``order[b, t]``."""
    return values.gather(1, order[..., None].expand_as(values))


def _one_direction(lstm: nn.LSTM, steps: torch.Tensor, suffix: str) -> torch.Tensor:
    """One layer, one direction of ``lstm`` over the (B, T, C) ``steps`` from zero states -> (B, T, H)."""
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
    weights = [getattr(lstm, f"{name}_{suffix}") for name in names]
    zeros = steps.new_zeros(1, steps.size(0), lstm.hidden_size)
    # torch.lstm is the operator nn.LSTM.forward itself calls (as _VF.lstm) with these arguments:
    # input, (h0, c0), flat weights, has_biases, num_layers, dropout, train, bidirectional, batch_first.
    output, _, _ = torch.lstm(steps, (zeros, zeros), weights, lstm.bias, 1, 0.0, lstm.training, False, True)
    return output
