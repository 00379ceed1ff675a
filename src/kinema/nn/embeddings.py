"""Timestep and vector embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from kinema.nn.attention import attention, key_padding_mask


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0, scale: float = 1000.0) -> torch.Tensor:
    """t: [B] in [0, 1] -> sinusoidal features [B, dim] (fp32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    """[B, in_dim] -> [B, dim]: Linear, SiLU, Linear."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """pos: [L] -> [L, dim] = [sin(pos w), cos(pos w)], w_i = 10000^(-i / (dim / 2)) (DiT, SD3, Latte);
    computed in float64 on the CPU, returned as fp32."""
    if dim % 2:
        raise ValueError(f"a sin-cos embedding needs an even width, got {dim}")
    omega = 10000.0 ** -(torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.detach().to("cpu", torch.float64)[:, None] * omega
    return torch.cat([out.sin(), out.cos()], dim=-1).float()


def sincos_positions(positions: torch.Tensor, dim: int, temporal: bool = True, space: bool = True) -> torch.Tensor:
    """Absolute sin-cos positions [L, 3] (t, h, w) -> [L, dim], added to the patch embeddings.

    Space as DiT / SD3 lay it out: the first half of the width encodes w, the second half h.
    `temporal` adds a 1D sin-cos of t over the whole width (Latte, Open-Sora 1.0); an image
    model (SD3, PixArt) has none. `space=False` gives the temporal part alone."""
    if dim % 4:
        raise ValueError(f"2D sin-cos positions need a width divisible by 4, got {dim}")
    time = sincos_1d(positions[:, 0], dim)
    if not space:
        return time
    emb = torch.cat([sincos_1d(positions[:, 2], dim // 2), sincos_1d(positions[:, 1], dim // 2)], dim=-1)
    return emb + time if temporal else emb


class LearnedPositions(nn.Module):
    """A learned embedding per axis, summed: table_t[t] + table_h[h] + table_w[w] -> [L, dim], for
    token grids up to `max_grid` (t, h, w)."""

    def __init__(self, dim: int, max_grid: tuple[int, int, int]):
        super().__init__()
        self.max_grid = tuple(max_grid)
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(n, dim) * 0.02) for n in self.max_grid)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: [L, 3] integer-valued (t, h, w) -> [L, dim]"""
        idx = positions.long()
        top = idx.amax(0).tolist() if len(idx) else [0, 0, 0]
        if any(p >= n for p, n in zip(top, self.max_grid)):
            raise ValueError(f"a token grid up to {tuple(p + 1 for p in top)} exceeds the learned positions' "
                             f"max_grid {self.max_grid}; train with a larger dit.max_grid or use RoPE")
        return sum(table[idx[:, i]] for i, table in enumerate(self.tables))


def masked_mean(states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The mean over the real tokens: states [B, L, D], valid [B, L] -> [B, D]."""
    w = valid[..., None].to(states.dtype)
    return (states * w).sum(1) / w.sum(1).clamp(min=1)


class AttentionPool(nn.Module):
    """Mochi's pooled text vector: one query, made from the masked mean of the text states, attends
    over [mean; states] (padding hidden). states [B, Lt, Dtext], valid [B, Lt] -> [B, out_dim]."""

    def __init__(self, dim: int, out_dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention pooling splits the text width {dim} into {heads} heads; it must divide")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(states, valid)[:, None]  # [B, 1, Dtext]
        x = torch.cat([mean, states], dim=1)  # [B, 1 + Lt, Dtext]
        q = self.q(mean).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, 1, Dh]
        k, v = (y.unflatten(-1, (self.heads, -1)).transpose(1, 2) for y in self.kv(x).chunk(2, dim=-1))
        keep = key_padding_mask(torch.cat([valid.new_ones(valid.shape[0], 1), valid.bool()], dim=1))
        return self.out(attention(q, k, v, keep)[:, 0])  # [B, out_dim]
