"""CausalConv3d: a 3D convolution whose output frame t sees only input frames <= t.

Time is padded with (k_t - 1) * d_t zero frames on the past side only; space is padded
symmetrically. With zero padding, a single frame (T=1) passes through the last temporal slice
of the kernel alone, so an image is encoded exactly like the first frame of a video (SPEC §1, Q11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class CausalConv3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        dt, dh, dw = _triple(dilation)
        self.time_pad = (kt - 1) * dt
        self.space_pad = ((kh - 1) * dh // 2, (kw - 1) * dw // 2)
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=_triple(stride), dilation=(dt, dh, dw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T, H, W] -> [B, C', T', H', W']"""
        ph, pw = self.space_pad
        x = F.pad(x, (pw, pw, ph, ph, self.time_pad, 0))  # (W_left, W_right, H_top, H_bottom, T_past, T_future)
        return self.conv(x)
