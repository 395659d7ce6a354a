"""A throw-away QA head for the torch backend: start and end scores from one shared Linear(H, 1)
on two learned offsets. Registered by tests/test_seams.py alone (one HeadSpec + this class)."""
from __future__ import annotations

import torch
from torch import nn

from bench.backends.torch.heads import MASKED_LOGIT, masked_log_softmax
from bench.backends.torch.losses import position_loss


class ToyHead(nn.Module):
    def __init__(self, backbone_config, dropout: float, loss: str = "ce"):
        super().__init__()
        self.score = nn.Linear(backbone_config.hidden_size, 1)
        self.offsets = nn.Parameter(torch.zeros(2, backbone_config.hidden_size))
        self.position_loss = position_loss(loss)

    def _scores(self, hidden):
        return [self.score(hidden + offset)[..., 0].float() for offset in self.offsets]

    def loss(self, hidden, candidate_mask, starts, ends, is_impossible):
        start, end = (masked_log_softmax(s, candidate_mask) for s in self._scores(hidden))
        return 0.5 * (self.position_loss(start, starts) + self.position_loss(end, ends))

    def predict(self, hidden, candidate_mask, start_top_n: int, end_top_n: int) -> dict:
        start, end = (s.masked_fill(~candidate_mask, MASKED_LOGIT) for s in self._scores(hidden))
        return {"start_logits": start, "end_logits": end}


def half_cross_entropy(log_probs, targets):
    """A throw-away loss: half the cross-entropy (registered by the test with one LossSpec)."""
    return -0.5 * log_probs.gather(1, targets[:, None])[:, 0]
