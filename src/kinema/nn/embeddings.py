"""Timestep and vector embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


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
