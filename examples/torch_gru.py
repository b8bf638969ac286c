"""A PyTorch/XLA GRU: a GRU cell called once per time step of a batch-major sequence.

The hidden states are stacked on the time axis and projected back to the
vocabulary.

Demonstrates the `--framework torch_xla` target on a time loop (chosen by
`auto`: the file imports `torch_xla`): loop2scan turns the loop into
`torch_xla.experimental.scan.scan`; the cell's parameters travel in the
scan's carry and are applied with `torch.func.functional_call`, so their
gradients reach the cell itself.

    GRU(vocab, d_in, hidden)
    GRU.forward(tokens [batch, time], h [batch, hidden]) -> (logits [batch, time, vocab], h [batch, hidden])
    example_inputs(module=None (this module), steps=12) -> {"self": GRU, "args": (tokens, h)}
"""

import torch
import torch.nn as nn
import torch_xla


class GRU(nn.Module):
    def __init__(self, vocab: int, d_in: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_in)
        self.cell = nn.GRUCell(d_in, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, h: torch.Tensor):
        x = torch.tanh(self.embed(tokens))  # [batch, time, d_in]
        outs = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return self.head(torch.stack(outs, dim=1)), h


def example_inputs(module=None, steps=12, seed=0):
    """A model built from ``module``'s classes (the original or the rewritten
    module), a batch of tokens and an initial state, on the XLA device."""
    gru = GRU if module is None else module.GRU
    torch.manual_seed(seed)
    model = gru(vocab=40, d_in=10, hidden=16).to(torch_xla.device()).eval()
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, 40, (3, steps), generator=g)
    h = torch.randn(3, 16, generator=g)
    return {"self": model, "args": (tokens.to(torch_xla.device()), h.to(torch_xla.device()))}


if __name__ == "__main__":
    ex = example_inputs()
    model, (tokens, h) = ex["self"], ex["args"]
    logits, h = model(tokens, h)
    torch_xla.sync()
    print("logits:", tuple(logits.shape), "final state:", tuple(h.shape))
