"""Time loops over tensors (torch_xla's `scan`): recurrent cells, functions of tensors."""

from typing import Optional

import torch
import torch_xla
from torch import nn
from torch_xla.experimental.scan import scan
from torch.func import functional_call


class GRU(nn.Module):
    """A GRU over the time axis of a batch-first sequence."""

    def __init__(self, d_in, d):
        super().__init__()
        self.cell = nn.GRUCell(d_in, d)
        self.proj = nn.Linear(d, d_in)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        cell_params = dict(self.cell.named_parameters())

        def _gru_step(carry, x_t):
            h, cell_params = carry
            h = functional_call(self.cell, cell_params, (x_t, h))
            return (h, cell_params), torch.tanh(h)  # per step

        (h, _), outs = scan(_gru_step, (h, cell_params), x.movedim(1, 0))
        return self.proj(outs.movedim(0, 1)), h


class Cell(nn.Module):
    """An Elman cell of the project, with a gain passed at every step."""

    def __init__(self, d_in, d):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.rec = nn.Linear(d, d, bias=False)

    def forward(self, x, h, gain: float = 1.0):
        return torch.tanh(self.inp(x) + gain * self.rec(h))


class BackwardLSTM(nn.Module):
    """Two carries, read from the end; the last step's output read after the loop."""

    def __init__(self, d_in, d, causal: bool = True):
        super().__init__()
        self.cell = nn.LSTMCell(d_in, d)
        self.mix = Cell(d_in, d)
        self.causal = causal

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        g: torch.Tensor,
    ):
        cell_params = dict(self.cell.named_parameters())
        mix_params = dict(self.mix.named_parameters())

        def _backward_lstm_step(carry, x_t):
            h, c, cell_params, mix_params, g = carry
            h, c = functional_call(self.cell, cell_params, (x_t, (h, c)))
            y = functional_call(self.mix, mix_params, (x_t, h), {"gain": 0.5}) * g
            return (h, c, cell_params, mix_params, g), (y, y)

        (h, c, _, _, _), (outs, all_y) = scan(
            _backward_lstm_step,
            (h, c, cell_params, mix_params, g),
            x.flip(0),
        )
        y = all_y[-1]
        return outs, h + c, y


def leaky(xs: torch.Tensor, w: torch.Tensor, h: torch.Tensor, leak: float = 0.9):
    def _leaky_step(carry, x_t):
        h, w = carry
        h = leak * h + torch.tanh(x_t @ w)
        return (h, w), h

    (h, _), ys = scan(_leaky_step, (h, w), xs.movedim(1, 0))
    return ys.movedim(0, 2), h


def pairs(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor):
    def _pairs_step(h, inputs):
        a_t, b_t = inputs
        h = torch.sigmoid(a_t) * h + b_t
        return h, None

    h, _ = scan(_pairs_step, h, (a, b))
    return h


def maybe_pairs(a: torch.Tensor, b: Optional[torch.Tensor], h: torch.Tensor):
    for a_t, b_t in zip(a, b):  # `b` may be None
        h = torch.sigmoid(a_t) * h + b_t
    return h


def running_max(x: torch.Tensor):
    best = x[0]

    def _running_max_step(best, row):
        best = torch.maximum(best, row)  # a carry only: no outputs
        return best, None

    best, _ = scan(_running_max_step, best, x)
    return best


def host_log(x: torch.Tensor, h: torch.Tensor):
    for t in range(x.size(0)):
        h = h + x[t]
        print(h.sum())
    return h
