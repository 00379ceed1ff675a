"""HunyuanVideo's token refiner (SPEC §4): a few self-attention blocks over the projected text
tokens, conditioned on the timestep and the mean text state, before the text enters the MM-DiT.
It lets a frozen encoder's features adapt to the denoising time. Gate-only AdaLN: each residual
branch is scaled by a gate from (time + pooled text); the gates start at zero, so an untrained
refiner is the identity.

Shapes: B batch, Lt text tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.dit.blocks import split_heads
from kinema.nn.attention import attention
from kinema.nn.embeddings import MLPEmbedder, masked_mean, timestep_embedding


class RefinerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.gates = nn.Linear(dim, 2 * dim)  # (attention gate, MLP gate) from the conditioning vector
        nn.init.zeros_(self.gates.weight)
        nn.init.zeros_(self.gates.bias)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, Lt, D], vec: [B, D], mask: [B, 1, Lt, Lt] -> [B, Lt, D]"""
        gate_attn, gate_mlp = self.gates(F.silu(vec))[:, None].chunk(2, dim=-1)  # [B, 1, D] each
        x = x + gate_attn * self.proj(attention(*split_heads(self.qkv(self.norm1(x)), self.heads), mask))
        return x + gate_mlp * self.mlp(self.norm2(x))


class TokenRefiner(nn.Module):
    """Its MLPs are 4x wide whatever the main model's ratio, as in HunyuanVideo."""

    def __init__(self, dim: int, heads: int, text_dim: int, blocks: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.time_in = MLPEmbedder(256, dim)
        self.pooled_in = MLPEmbedder(text_dim, dim)
        self.blocks = nn.ModuleList(RefinerBlock(dim, heads, mlp_ratio) for _ in range(blocks))

    def forward(self, x: torch.Tensor, raw: torch.Tensor, valid: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, Lt, D] projected text, raw: [B, Lt, Dtext] the encoder's states, valid: [B, Lt] bool,
        t: [B] -> refined text [B, Lt, D]"""
        vec = self.time_in(timestep_embedding(t)) + self.pooled_in(masked_mean(raw, valid))  # [B, D]
        mask = (valid[:, :, None] & valid[:, None, :])[:, None]  # [B, 1, Lt, Lt]: real tokens see real tokens
        mask[..., 0] = True  # and every row sees token 0, so padding rows are never empty
        for block in self.blocks:
            x = block(x, vec, mask)
        return x
