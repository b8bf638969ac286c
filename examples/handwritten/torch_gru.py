"""`examples/torch_gru.py` with its time loop written by hand as a torch_xla `scan`."""

import torch
import torch.nn as nn
import torch_xla
from torch.func import functional_call
from torch_xla.experimental.scan import scan


class GRU(nn.Module):
    def __init__(self, vocab: int, d_in: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_in)
        self.cell = nn.GRUCell(d_in, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, h: torch.Tensor):
        x = torch.tanh(self.embed(tokens))  # [batch, time, d_in]
        # the step cannot close over tensors: the cell's parameters ride in the carry
        params = dict(self.cell.named_parameters())

        def step(carry, x_t):
            h, params = carry
            h = functional_call(self.cell, params, (x_t, h))
            return (h, params), h

        (h, _), outs = scan(step, (h, params), x.transpose(0, 1))
        return self.head(outs.transpose(0, 1)), h


def example_inputs(module=None, steps=12, seed=0):
    gru = GRU if module is None else module.GRU
    torch.manual_seed(seed)
    model = gru(vocab=40, d_in=10, hidden=16).to(torch_xla.device()).eval()
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, 40, (3, steps), generator=g)
    h = torch.randn(3, 16, generator=g)
    return {"self": model, "args": (tokens.to(torch_xla.device()), h.to(torch_xla.device()))}
