"""The PyTorch/XLA decoder written by hand with ``scan_layers``.

The blocks are the same; ``Decoder.forward`` runs them with ``scan_layers``
through an adapter that takes the mask and the positions in a tuple carry and
returns them unchanged. ``scan_layers`` traces every carried tensor with
gradients on, so they travel as floating-point tensors (the mask as 0.0/1.0)
and the adapter turns them back into what the blocks take.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_xla
from torch_xla.experimental.scan_layers import scan_layers


def rotate(x, positions):
    """Rotary position embedding of x [batch, heads, time, head_dim] at positions [time]."""
    half = x.shape[-1] // 2
    freqs = torch.exp(torch.arange(half, device=x.device, dtype=x.dtype) * (-math.log(10000.0) / half))
    angles = positions.to(x.dtype)[:, None] * freqs
    cos, sin = torch.cos(angles), torch.sin(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x, mask, positions):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = rotate(q, positions), rotate(k, positions)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        weights = F.softmax(scores.masked_fill(mask.logical_not(), float("-inf")), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.mlp_norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)

    def forward(self, x, mask, positions):
        x = x + self.attn(self.attn_norm(x), mask, positions)
        return x + self.down(F.gelu(self.up(self.mlp_norm(x))))


class WithContext(nn.Module):
    """One block for ``scan_layers``: the mask and the positions ride in the carry, unchanged."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x, mask, positions):
        return self.block(x, mask.bool(), positions.long()), mask, positions


class Decoder(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, hidden: int, n_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d, heads, hidden) for _ in range(n_layers)])
        self.final_norm = nn.LayerNorm(d)

    def forward(self, tokens):
        t = tokens.shape[1]
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=tokens.device))
        positions = torch.arange(t, device=tokens.device)
        x = self.embed(tokens)
        context = (mask.to(x.dtype), positions.to(x.dtype))
        x, _, _ = scan_layers([WithContext(layer) for layer in self.layers], (x, *context))
        return self.final_norm(x) @ self.embed.weight.T


def example_inputs(module=None, n_layers=8, seed=0):
    decoder = Decoder if module is None else module.Decoder
    torch.manual_seed(seed)
    model = decoder(vocab=50, d=32, heads=4, hidden=48, n_layers=n_layers).to(torch_xla.device()).eval()
    tokens = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(seed + 1))
    return {"self": model, "args": (tokens.to(torch_xla.device()),)}
