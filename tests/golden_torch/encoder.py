"""Hugging Face-style encoders: per-layer outputs collected in tuples."""

from typing import Optional

import torch
import torch.nn as nn
import torch_xla


class Layer(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, h, attention_mask: Optional[torch.Tensor] = None):
        y = self.down(torch.tanh(self.up(h)))
        if attention_mask is not None:
            y = y * attention_mask[..., None]
        return (self.norm(h + y), y)


class Encoder(nn.Module):
    def __init__(self, width: int, hidden: int, n_layers: int):
        super().__init__()
        self.layer = nn.ModuleList([Layer(width, hidden) for _ in range(n_layers)])

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False):
        all_hidden_states = () if output_hidden_states else None
        for layer_module in self.layer:
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            # the first output is the new hidden state
            layer_outputs = layer_module(hidden_states, attention_mask)
            hidden_states = layer_outputs[0]
        if output_hidden_states:
            all_hidden_states = all_hidden_states + (hidden_states,)
        return hidden_states, all_hidden_states


class Pair(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)

    def forward(self, h, r):
        return torch.tanh(self.a(h) + r), r + self.b(h)


class PairStack(nn.Module):
    def __init__(self, width: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([Pair(width) for _ in range(n_layers)])

    def forward(self, h: torch.Tensor, r: torch.Tensor, n_active: int):
        hs, rs = (h,), ()
        for layer in reversed(self.layers[:n_active]):
            h, r = layer(h, r)
            hs += (h,)
            rs = rs + (r,)
        return h, r, hs, rs


class Attentions(nn.Module):
    def __init__(self, width: int, hidden: int, n_layers: int):
        super().__init__()
        self.layer = nn.ModuleList([Layer(width, hidden) for _ in range(n_layers)])

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            layer_outputs = layer_module(hidden_states)
            hidden_states = layer_outputs[0]
            if output_attentions:
                all_attentions = all_attentions + (layer_outputs[1],)
        return hidden_states, all_attentions


class ListOutputs(nn.Module):
    def __init__(self, width: int, hidden: int, n_layers: int):
        super().__init__()
        self.layer = nn.ModuleList([Layer(width, hidden) for _ in range(n_layers)])

    def forward(self, hidden_states: torch.Tensor):
        states = []
        for layer_module in self.layer:
            states.append(hidden_states)
            hidden_states = layer_module(hidden_states)[0]
        return hidden_states, states


class TensorFlag(nn.Module):
    def __init__(self, width: int, hidden: int, n_layers: int):
        super().__init__()
        self.layer = nn.ModuleList([Layer(width, hidden) for _ in range(n_layers)])

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor):
        kept = ()
        for layer_module in self.layer:
            if keep:
                kept = kept + (hidden_states,)
            hidden_states = layer_module(hidden_states)[0]
        return hidden_states, kept
