"""A throw-away model family for the torch backend: word embeddings + a 1-layer GRU, trained from
scratch. Registered by tests/test_seams.py alone (one ModelFamily entry + this module's
``load_backbone``); its folder is config.json (model_type "toy_gru"), model.safetensors and a
WordPiece tokenizer."""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from safetensors.torch import load_file
from torch import nn


class ToyGRU(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden, _ = self.encoder(self.embeddings(input_ids))
        return Output(hidden * attention_mask[..., None])


@dataclass
class Output:
    last_hidden_state: torch.Tensor


def load_backbone(source) -> nn.Module:
    config = SimpleNamespace(**json.loads((source.folder / "config.json").read_text()))
    model = ToyGRU(config)
    model.load_state_dict(load_file(str(source.folder / "model.safetensors")))
    return model
