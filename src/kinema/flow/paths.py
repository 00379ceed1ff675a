"""Rectified flow (SPEC §5): x_t = (1 - t) x0 + t x1 with x0 data and x1 noise; t = 1 is pure noise.

The model predicts the velocity dx_t/dt = x1 - x0; sampling integrates it from t = 1 down to 0.
"""

from __future__ import annotations

import torch


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0, x1: [B, ...]; t: [B] in [0, 1], or [B, t] one time per latent frame of [B, C, t, h, w]
    latents (diffusion forcing) -> x_t [B, ...]"""
    t = (t[:, None, :, None, None] if t.dim() == 2 else t.view(-1, *([1] * (x0.dim() - 1)))).to(x0.dtype)
    return (1 - t) * x0 + t * x1


def velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The regression target: d x_t / dt."""
    return x1 - x0
