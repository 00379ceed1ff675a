"""Spacetime patches (SPEC §2): a latent [B, C, t, h, w] <-> tokens [B, L, C*pt*ph*pw], time-major."""

from __future__ import annotations

import torch
from einops import rearrange

from kinema.nn.attention import grid_coords


def patch_grid(shape: tuple[int, int, int], patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """Latent (t, h, w) -> token grid (t/pt, h/ph, w/pw); each must divide."""
    if any(s % p for s, p in zip(shape, patch)):
        raise ValueError(f"latent size {shape} is not divisible by patch {patch}")
    return tuple(s // p for s, p in zip(shape, patch))


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """[B, C, t, h, w] -> [B, L, C*pt*ph*pw], L = (t/pt)(h/ph)(w/pw)"""
    pt, ph, pw = patch
    patch_grid(tuple(x.shape[2:]), patch)
    return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: torch.Tensor, patch: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """[B, L, C*pt*ph*pw] -> [B, C, t, h, w]; the exact inverse of `patchify`."""
    pt, ph, pw = patch
    t, h, w = grid
    return rearrange(tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def grid_positions(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(t, h, w) positions of each token in patchify order: [L, 3] float."""
    return grid_coords(grid, device).float()
