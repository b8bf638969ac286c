"""Time loops over tensors (torch_xla's `scan`): recurrent cells, functions of tensors."""

from typing import Optional

import torch
import torch_xla
from torch import nn


class GRU(nn.Module):
    """A GRU over the time axis of a batch-first sequence."""

    def __init__(self, d_in, d):
        super().__init__()
        self.cell = nn.GRUCell(d_in, d)
        self.proj = nn.Linear(d, d_in)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        outs = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            outs.append(torch.tanh(h))  # per step
        return self.proj(torch.stack(outs, dim=1)), h


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

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, g: torch.Tensor):
        outs = []
        for t in reversed(range(x.shape[0])):
            h, c = self.cell(x[t], (h, c))
            y = self.mix(x[t], h, gain=0.5) * g
            outs.append(y)
        return torch.stack(outs), h + c, y


def leaky(xs: torch.Tensor, w: torch.Tensor, h: torch.Tensor, leak: float = 0.9):
    ys = []
    for x_t in xs.unbind(1):
        h = leak * h + torch.tanh(x_t @ w)
        ys.append(h)
    return torch.stack(ys, dim=2), h


def pairs(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor):
    for a_t, b_t in zip(a, b):
        h = torch.sigmoid(a_t) * h + b_t
    return h


def maybe_pairs(a: torch.Tensor, b: Optional[torch.Tensor], h: torch.Tensor):
    for a_t, b_t in zip(a, b):  # `b` may be None
        h = torch.sigmoid(a_t) * h + b_t
    return h


def running_max(x: torch.Tensor):
    best = x[0]
    for row in x:
        best = torch.maximum(best, row)  # a carry only: no outputs
    return best


def host_log(x: torch.Tensor, h: torch.Tensor):
    for t in range(x.size(0)):
        h = h + x[t]
        print(h.sum())
    return h
