"""Hugging Face-style encoders: per-layer outputs collected in tuples."""

from typing import Optional

import torch
import torch.nn as nn
import torch_xla
from torch.func import functional_call
from torch_xla.experimental.scan import scan


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


class _EncoderLayerStep(nn.Module):
    """One step of the loop over `self.layer` in `Encoder.forward`, for `scan`."""

    def __init__(self, layer, output_hidden_states, attention_mask):
        super().__init__()
        self.layer = layer
        self.output_hidden_states = output_hidden_states
        self.register_buffer("attention_mask", attention_mask, persistent=False)

    def forward(self, hidden_states):
        all_hidden_states_item = hidden_states if self.output_hidden_states else None
        # the first output is the new hidden state
        layer_outputs = self.layer(hidden_states, self.attention_mask)
        hidden_states = layer_outputs[0]
        return hidden_states, all_hidden_states_item

    @staticmethod
    def stacked_states(steps):
        """The parameters and buffers of `steps`, stacked along a new first axis (the stack is
        differentiable: gradients reach every layer's own parameters)."""
        states = [{**dict(s.named_parameters()), **dict(s.named_buffers())} for s in steps]
        return {key: torch.stack([state[key] for state in states]) for key in states[0]}


class Encoder(nn.Module):
    def __init__(self, width: int, hidden: int, n_layers: int):
        super().__init__()
        self.layer = nn.ModuleList([Layer(width, hidden) for _ in range(n_layers)])

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False):
        all_hidden_states = () if output_hidden_states else None
        steps = [
            _EncoderLayerStep(layer_module, output_hidden_states, attention_mask)
            for layer_module in self.layer
        ]
        if steps:
            def _layer_step(carry, state):
                return functional_call(steps[0], state, (carry,))

            hidden_states, all_hidden_states_items = scan(
                _layer_step,
                hidden_states,
                _EncoderLayerStep.stacked_states(steps),
            )
            if output_hidden_states:
                all_hidden_states = (
                    all_hidden_states + all_hidden_states_items.unbind(0)
                )
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


class _PairStackLayerStep(nn.Module):
    """One step of the loop over `self.layers` in `PairStack.forward`, for `scan`."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, h, r):
        h, r = self.layer(h, r)
        hs_item = h
        rs_item = r
        return (h, r), (hs_item, rs_item)

    @staticmethod
    def stacked_states(steps):
        """The parameters and buffers of `steps`, stacked along a new first axis (the stack is
        differentiable: gradients reach every layer's own parameters)."""
        states = [{**dict(s.named_parameters()), **dict(s.named_buffers())} for s in steps]
        return {key: torch.stack([state[key] for state in states]) for key in states[0]}


class PairStack(nn.Module):
    def __init__(self, width: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([Pair(width) for _ in range(n_layers)])

    def forward(self, h: torch.Tensor, r: torch.Tensor, n_active: int):
        hs, rs = (h,), ()
        steps = [
            _PairStackLayerStep(layer) for layer in reversed(self.layers[:n_active])
        ]
        if steps:
            def _layer_step(carry, state):
                return functional_call(steps[0], state, carry)

            (h, r), (hs_items, rs_items) = scan(
                _layer_step,
                (h, r),
                _PairStackLayerStep.stacked_states(steps),
            )
            hs += hs_items.unbind(0)
            rs = rs + rs_items.unbind(0)
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
