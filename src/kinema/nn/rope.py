"""RoPE-3D (SPEC §3, Q15): the head dim is split into disjoint (t, h, w) parts, each rotated by a
1D rotary embedding of that axis, so q.k depends only on the offset (dt, dh, dw). Always fp32.
"""

from __future__ import annotations

import math

import torch


def default_axes(head_dim: int) -> tuple[int, int, int]:
    """Split head_dim into even (d_t, d_h, d_w), space getting 3/8 each (64 -> 16, 24, 24)."""
    d_s = 2 * (head_dim * 3 // 16)
    return head_dim - 2 * d_s, d_s, d_s


def rope_angles(positions: torch.Tensor, axes: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """positions: [L, 3] (t, h, w) -> angles [L, head_dim / 2], fp32."""
    parts = []
    for i, dim in enumerate(axes):
        if dim % 2:
            raise ValueError(f"RoPE axis dims must be even, got {axes}")
        freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # [dim / 2]
        parts.append(positions[:, i, None].double() * freqs)
    return torch.cat(parts, dim=-1).float()


def ltx_rope_angles(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """LTX-Video's RoPE over the whole width: positions [L, 3] (already scaled) -> angles [L, dim / 2].

    D/6 frequencies theta^linspace(0, 1) * pi / 2, each applied to (t, h, w) in turn, so pair
    3k + a holds frequency k of axis a, at angle f_k (2 p_a - 1); the dim % 6 / 2 pairs left over
    come first, unrotated. Computed in float32 in LTX's order: its angles reach 1.6e4 rad, where
    float32 rounding is about 1e-3 rad, so another order would not reproduce its outputs."""
    freqs = theta ** torch.linspace(0.0, 1.0, dim // 6, dtype=torch.float32)
    freqs = freqs * math.pi / 2.0
    angles = (freqs * (positions.float()[..., None] * 2 - 1)).transpose(-1, -2).flatten(-2)  # [L, D/6 * 3]
    pad = angles.new_zeros(*angles.shape[:-1], (dim % 6) // 2)
    return torch.cat([pad, angles], dim=-1)


def centred_positions(grid: tuple[int, int, int], area: float = 192.0 ** 2) -> torch.Tensor:
    """Mochi's RoPE positions of a (t, h, w) token grid -> [L, 3] fp32, time-major: t = 0, 1, ...;
    h and w are the centres of h (w) equal cells spanning [-h s / 2, h s / 2], s = sqrt(area / (h w)),
    so every grid covers the same area of position space, whatever its size."""
    t, h, w = grid
    s = (area / (h * w)) ** 0.5

    def centres(n: int) -> torch.Tensor:
        edges = torch.linspace(-n * s / 2, n * s / 2, n + 1)
        return (edges[:-1] + edges[1:]) / 2

    return torch.stack(torch.meshgrid(torch.arange(t, dtype=torch.float32), centres(h), centres(w), indexing="ij"),
                       dim=-1).view(-1, 3)


def mixed_rope_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Mochi's learned RoPE: every frequency pair mixes the three axes. positions [L, 3], freqs
    [3, H, Dh/2] (a parameter) -> angles [H, L, Dh/2] = sum over axes of position x frequency, fp32.
    Initialised from `rope_angles(eye(3), axes)` it is RoPE-3D: each pair sees one axis."""
    return torch.einsum("la,ahf->hlf", positions.to(freqs.device, torch.float32), freqs.float())


def apply_rope(x: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
    """x: [B, H, L, Dh], angles: [L, Dh / 2] or per head [H, L, Dh / 2] -> x with each (even, odd)
    pair rotated, in fp32.
    None (a model with absolute positions) leaves x as it is."""
    if angles is None:
        return x
    xf = x.float().unflatten(-1, (-1, 2))  # [B, H, L, Dh/2, 2]
    cos, sin = angles.cos(), angles.sin()
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)
