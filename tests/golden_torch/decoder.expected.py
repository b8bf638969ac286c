"""Decoders whose layer loops become `scan_layers`: attention and MLP blocks, a
mask and positions passed to every layer, a tuple carry, HF-style outputs."""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_xla
from torch_xla.experimental.scan_layers import scan_layers


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, h, mask, positions):
        b, t, d = h.shape
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q = q + torch.sin(positions.to(q.dtype))[:, None, :, None]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None].logical_not(), float("-inf"))
        weights = F.softmax(scores, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d)), weights


class Block(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, h, mask=None, positions=None, scale: float = 1.0):
        attn, weights = self.attn(self.norm1(h), mask, positions)
        h = h + scale * attn
        h = h + self.mlp_out(self.norm2(h))
        return h, weights

    def mlp_out(self, x):
        return self.mlp[2](F.gelu(self.mlp[0](x)))


class _DecoderLayerStep(nn.Module):
    """One step of the loop over `self.layers` in `Decoder.forward`, for `scan_layers`."""

    def __init__(self, layer, mask, positions, scale):
        super().__init__()
        self.layer = layer
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("positions", positions, persistent=False)
        self.scale = scale

    def forward(self, h):
        # HF style: the layer returns a tuple
        layer_outputs = self.layer(h, self.mask, positions=self.positions, scale=self.scale)
        h = layer_outputs[0]
        return h


class Decoder(nn.Module):
    def __init__(self, d, heads, hidden, n_layers):
        super().__init__()
        self.layers = nn.ModuleList([Block(d, heads, hidden) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d)

    def forward(
        self,
        h: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        scale: float = 0.5,
    ):
        h = scan_layers(
            [_DecoderLayerStep(layer, mask, positions, scale) for layer in self.layers],
            h,
        )
        return self.norm(h)


class Pair(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mix = nn.Linear(2 * d, d)

    def forward(self, h, residual):
        new = torch.tanh(self.mix(torch.cat([h, residual], dim=-1)))
        return new, residual + new


class PairStack(nn.Module):
    def __init__(self, d, n_layers, n_active):
        super().__init__()
        self.n_active = n_active
        self.blocks = nn.Sequential(*[Pair(d) for _ in range(n_layers)])

    def forward(self, h: torch.Tensor):
        residual = torch.zeros_like(h)
        h, residual = scan_layers(self.blocks[: self.n_active], (h, residual))
        return h * residual


class _ReversedLayerStep(nn.Module):
    """One step of the loop over `self.layers` in `Reversed.forward`, for `scan_layers`."""

    def __init__(self, layer, gain):
        super().__init__()
        self.layer = layer
        self.register_buffer("gain", gain, persistent=False)

    def forward(self, x):
        x = torch.tanh(self.layer(x)) * self.gain + x
        return x


class Reversed(nn.Module):
    def __init__(self, d, n_layers):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            self.layers.append(nn.Linear(d, d))

    def forward(self, x: torch.Tensor, gain: torch.Tensor, training_only: bool = False):
        x = scan_layers(
            [_ReversedLayerStep(layer, gain) for layer in reversed(self.layers)],
            x,
        )
        return x
