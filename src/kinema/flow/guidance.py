"""Classifier-free guidance: v = v_uncond + w (v_cond - v_uncond), all channels, every step."""

from __future__ import annotations

import torch


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """scale 1 returns the conditional prediction; 0 the unconditional one."""
    return v_uncond + scale * (v_cond - v_uncond)
