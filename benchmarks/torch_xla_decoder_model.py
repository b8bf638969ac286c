"""The model of the torch_xla decoder benchmark (``compile_torch_xla_decoder.py``), as users write it.

A stack of pre-norm decoder blocks (causal self-attention with rotary
position embeddings, then an MLP), looped over in ``Decoder.forward``; every
block gets the same boolean attention mask and int64 positions. No dropout
(the torch_xla rewrite declines layers that draw random numbers), no ``~`` on
boolean tensors (``.logical_not()``), no in-place operations.

The benchmark rewrites this file with ``loop2scan --framework torch_xla``
(the loop becomes a ``scan_layers`` call) and imports the rewritten copy.

    Decoder(d_model, heads, hidden, n_layers)
    Decoder.forward(h [batch, seq, d_model] float, mask [seq, seq] bool, positions [seq] int64)
        -> [batch, seq, d_model]
"""

import math

import torch
import torch.nn.functional as F
import torch_xla  # noqa: F401  (the target of this file)
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([b.neg(), a], dim=-1)


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.attn_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return x * angles.cos() + rotate_half(x) * angles.sin()

    def attention(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        q = self.rotary(q, positions)
        k = self.rotary(k, positions)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        attn = F.softmax(scores, dim=-1) @ v
        return self.out(attn.transpose(1, 2).reshape(b, s, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), mask, positions)
        return x + self.down(F.gelu(self.up(self.mlp_norm(x))))


class Decoder(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([Block(d_model, heads, hidden) for _ in range(n_layers)])
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h, mask, positions)
        return self.final_norm(h)
