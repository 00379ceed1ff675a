"""Streamed and tiled VAE coding (SPEC §1): any length and size in flat memory, equal to the whole pass.

    vae.decode(z)                                   # plan_coding picks by size (whole when it fits)
    vae.decode(z, CodingPlan(latent_chunk=1, tile=8))   # or say how

Time: the clip goes through the network in chunks of `latent_chunk` latent frames (the first chunk
covers the first frame plus the frames of the next latent_chunk - 1 latent frames). A CausalCache
carries each causal conv's past from chunk to chunk, so every conv computes the windows it
computes on the whole clip, and memory does not grow with the clip's length.

Space: each tile of `tile` x `tile` latent pixels is coded with a halo as wide as the network's
receptive field (`halo`) and only its interior is kept. Nothing is blended: the interior sees
exactly the inputs it sees in the whole frame (the VAE has no frame-global operation: its norms
are per position), so tiled output equals untiled output to float tolerance.

Streaming and tiling are for inference: with gradients on, the autograd graph keeps every
chunk's activations anyway, so `plan_coding` codes the whole clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kinema.config import VAEConfig
from kinema.vae.causal_conv import CausalCache, CausalConv3d


@dataclass(frozen=True)
class CodingPlan:
    """latent_chunk: latent frames per time chunk (None: the whole clip at once); tile: latent
    pixels per tile side (None: the whole frame)."""

    latent_chunk: int | None = None
    tile: int | None = None

    def __post_init__(self):
        for name in ("latent_chunk", "tile"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"CodingPlan.{name} must be at least 1, got {v}")

    @property
    def whole(self) -> bool:
        return self.latent_chunk is None and self.tile is None


def halo(net: nn.Module, space_compression: int, encoder: bool) -> int:
    """The receptive-field radius of an encoder or decoder in latent pixels: how far outside a
    tile its interior's outputs can see."""
    # video pixels per pixel of the current layer: the encoder starts at its patch (space folded
    # into channels), the decoder at the latent and halves it at each upsampler
    scale = float(net.patch) if encoder else float(space_compression)
    return math.ceil(reach(net.modules(), scale, encoder) / space_compression)


def reach(modules, scale: float, encoder: bool = False) -> float:
    """How far, in video pixels, the outputs of a run of `modules` (in the order they run) can see:
    each conv adds its padding at the scale it runs at (`scale`: video pixels per pixel of the
    first module's input; an upsampler halves it, a strided encoder conv doubles it)."""
    radius = 0.0
    for m in modules:
        if not encoder and getattr(m, "upsamples_space", False):
            scale /= 2
        if isinstance(m, CausalConv3d):
            radius += m.space_pad[0] * scale
            if encoder and m.conv.stride[1] == 2:
                scale *= 2
    return radius


def activation_bytes(cfg: VAEConfig, frames: int, height: int, width: int) -> int:
    """A rough peak of a whole-clip decode's activations, 40 bytes per full-resolution pixel and
    channel (benchmarks/vae_speed.py, default preset: 89 MB at 17 x 64x64, 303 MB at 65 x 64x64,
    342 MB at 17 x 128x128; 28-40 bytes)."""
    return 40 * cfg.base_channels * cfg.channel_mult[0] * frames * height * width


def plan_coding(cfg: VAEConfig, latent_shape: tuple[int, int, int], budget_mb: float = 256.0,
                halo_px: int = 12) -> CodingPlan:
    """The size policy: the whole clip when its activations fit `budget_mb`, else time chunks of as
    many latent frames as fit, else one latent frame at a time in square tiles that fit. A tile
    computes its halo (`halo_px` latent pixels a side) again, so tiles come only where the budget
    allows an interior of at least two halos (at most 4x the work) well inside the frame: at
    256x256 a tile was measured 7x slower than streaming alone, for more memory. Otherwise one
    latent frame at a time, untiled: the least memory without recomputation."""
    if torch.is_grad_enabled():
        return CodingPlan()
    t, h, w = latent_shape
    r, s = cfg.time_compression, cfg.space_compression
    budget = budget_mb * 2 ** 20
    frames_of = lambda k: 1 + r * (k - 1) + r  # noqa: E731  a chunk of k latent frames, plus the cached past
    if activation_bytes(cfg, 1 + r * (t - 1), h * s, w * s) <= budget:
        return CodingPlan()
    per_latent_frame = activation_bytes(cfg, r, h * s, w * s)
    if activation_bytes(cfg, frames_of(1), h * s, w * s) <= budget:
        return CodingPlan(latent_chunk=max(1, int(budget // per_latent_frame) - 1))
    side = math.isqrt(int(budget // activation_bytes(cfg, frames_of(1), s, s)))  # latent pixels, halo included
    tile = side - 2 * halo_px
    if tile < 2 * halo_px or side > 0.75 * max(h, w):
        return CodingPlan(latent_chunk=1)
    return CodingPlan(latent_chunk=1, tile=tile)


def _tiles(h: int, w: int, tile: int | None):
    """(y0, y1, x0, x1) of every tile of a h x w latent grid."""
    step_h, step_w = (tile, tile) if tile else (h, w)
    for y0 in range(0, h, step_h):
        for x0 in range(0, w, step_w):
            yield y0, min(h, y0 + step_h), x0, min(w, x0 + step_w)


def _chunks(t: int, k: int | None):
    """Latent frame ranges [c0, c1) of the time chunks."""
    k = k or t
    return [(c0, min(t, c0 + k)) for c0 in range(0, t, k)]


def _frames(c: int, r: int) -> int:
    """The first video frame of latent frame c: frame 0 is latent 0, then r frames per latent frame."""
    return 0 if c == 0 else 1 + r * (c - 1)


def run_tiled(net: nn.Module, x: torch.Tensor, out_shape, plan: CodingPlan, cfg: VAEConfig, halo_px: int,
              encoder: bool) -> torch.Tensor:
    """Run the encoder (x: video) or decoder (x: latent) over `plan`'s tiles and time chunks,
    filling an output of `out_shape`; tiles are coded one after the other, each streamed in time
    with `halo_px` latent pixels of context a side (`halo`)."""
    r, s = cfg.time_compression, cfg.space_compression
    lat = out_shape if encoder else x.shape  # the latent grid decides tiles and chunks
    t, h, w = lat[2:]
    pad = halo_px if plan.tile else 0
    up = s if not encoder else 1  # output pixels per latent pixel
    down = s if encoder else 1  # input pixels per latent pixel
    out = x.new_empty(out_shape)
    for y0, y1, x0, x1 in _tiles(h, w, plan.tile):
        ya, yb, xa, xb = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
        cache = CausalCache()
        for c0, c1 in _chunks(t, plan.latent_chunk):
            if encoder:
                piece = x[:, :, _frames(c0, r):_frames(c1, r), ya * down:yb * down, xa * down:xb * down]
                o0 = c0
            else:
                piece = x[:, :, c0:c1, ya:yb, xa:xb]
                o0 = _frames(c0, r)
            y = net(piece, cache)
            out[:, :, o0:o0 + y.shape[2], y0 * up:y1 * up, x0 * up:x1 * up] = \
                y[:, :, :, (y0 - ya) * up:(y1 - ya) * up, (x0 - xa) * up:(x1 - xa) * up]
            del y
    return out


def in_strips(fn, x: torch.Tensor, scale: int, halo_rows: int, rows: int) -> torch.Tensor:
    """`fn(x)` for a frame-local, spatially local `fn` ([B, C, T, h, w] -> [B, C', T, h s, w s],
    seeing at most `halo_rows` input rows away), computed in strips of `rows` input rows, each
    with its halo and cropped: equal to the whole (the interior of a strip sees what it sees in the
    whole frame), in the memory of one strip."""
    h = x.shape[3]
    if rows >= h:
        return fn(x)
    out = []
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - halo_rows), min(h, r1 + halo_rows)
        y = fn(x[:, :, :, a:b])
        out.append(y[:, :, :, (r0 - a) * scale:(r1 - a) * scale])
        del y
    return torch.cat(out, dim=3)

