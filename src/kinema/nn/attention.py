"""The one attention entry point. Every variant (joint text+video, spatial-only, temporal-only,
windowed, packed segments, frame-causal) is a layout (reshape) or a mask around this call.
On GPUs SDPA dispatches to FlashAttention / memory-efficient kernels; on CPU to its fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q: [B, H, Lq, Dh], k, v: [B, H, Lk, Dh], mask: bool broadcastable to [B, H, Lq, Lk]
    (True = may attend) -> [B, Lq, H * Dh]"""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, Lq, Dh]
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid: [B, Lk] bool (True on real tokens) -> [B, 1, 1, Lk] for `attention`."""
    return valid[:, None, None, :]
