"""Normalisations. RMSNorm over the channel dim is per position, so it keeps causality in time."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm over the last dim (or over `dim`), computed in fp32; `affine=False` has no weight
    (LTX's block norms, where AdaLN supplies the scale)."""

    def __init__(self, channels: int, eps: float = 1e-6, dim: int = -1, affine: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.eps, self.dim = eps, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(self.dim, keepdim=True) + self.eps)
        if self.weight is None:
            return y.to(x.dtype)
        shape = [1] * x.dim()
        shape[self.dim] = -1
        if not torch.is_grad_enabled():  # inference: scale in place, one full-size temporary fewer
            return y.mul_(self.weight.float().view(shape)).to(x.dtype)
        return (y * self.weight.float().view(shape)).to(x.dtype)
