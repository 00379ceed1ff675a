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
are per position), so tiled output equals untiled output to float tolerance. The decoder goes
further (`Cuts`): each of its stages runs only on the pixels its tile depends on, so its
full-resolution stages and their causal caches are the tile's size, whatever the halo.

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


@dataclass(frozen=True)
class Cuts:
    """Where each stage of a decoder runs when only a window of its output is wanted. Walking the
    stages back from the window, each conv widens the region by its padding and each upsampler
    halves it, so `need[key]` is the region of stage `key`'s input the window depends on (rows
    y0, y1, columns x0, x1 in that stage's pixels, clamped to the frame). A stage computed on
    that region alone gives wrong values only near its cut edges, and those are outside what the
    next stage needs: the window comes out as in the whole frame. Low-resolution stages see the
    whole halo; full-resolution ones little more than the window."""

    need: dict  # stage key -> (y0, y1, x0, x1) of its input
    scale: dict  # stage key -> output pixels per pixel of its input
    prev: dict  # stage key -> the stage before it (None for the first)
    window: tuple[int, int, int, int]  # output rows r0, r1, columns c0, c1

    @classmethod
    def of(cls, decoder: nn.Module, window: tuple[int, int, int, int], hw: tuple[int, int]) -> "Cuts":
        """decoder: a kinema Decoder (its `stages()`, `patch`); window in output pixels of a latent
        grid of size hw."""
        stages = decoder.stages()
        up = lambda m: getattr(m, "upsamples_space", False)  # noqa: E731
        s = decoder.patch * 2 ** sum(up(m) for m in decoder.modules())  # output pixels per latent pixel
        scale, prev, last = {}, {}, None
        for key, mods in stages:
            scale[key], prev[key], last = s, last, key
            s //= 2 ** sum(up(m) for mod in mods for m in mod.modules())
        p = decoder.patch
        r0, r1, c0, c1 = window
        y0, y1, x0, x1 = r0 // p, -(-r1 // p), c0 // p, -(-c1 // p)  # the output conv's pixels (before unpatching)
        need = {}
        for key, mods in reversed(stages):
            for m in reversed([m for mod in mods for m in mod.modules()]):
                if isinstance(m, CausalConv3d):
                    (ph, pw) = m.space_pad
                    y0, y1, x0, x1 = y0 - ph, y1 + ph, x0 - pw, x1 + pw
                elif up(m):
                    y0, y1, x0, x1 = y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)
            h, w = (n * scale["in"] // scale[key] for n in hw)  # the frame at this stage's resolution
            y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
            need[key] = (y0, y1, x0, x1)
        return cls(need, scale, prev, window)

    def origin(self, key) -> tuple[int, int]:
        """The output pixel at the top left of stage `key`'s input region."""
        y0, _, x0, _ = self.need[key]
        return y0 * self.scale[key], x0 * self.scale[key]

    def cut(self, x: torch.Tensor, key) -> torch.Tensor:
        """x, the input of stage `key` as the stage before left it ([..., h, w]), cut to need[key]."""
        oy, ox = self.origin(self.prev[key]) if self.prev[key] is not None else (0, 0)
        s = self.scale[key]
        y0, y1, x0, x1 = self.need[key]
        return x[..., y0 - oy // s:y1 - oy // s, x0 - ox // s:x1 - ox // s]

    def crop(self, out: torch.Tensor, key) -> torch.Tensor:
        """The window of `out`, the output of the stages from `key` on, run on need[key]."""
        oy, ox = self.origin(key)
        r0, r1, c0, c1 = self.window
        return out[..., r0 - oy:r1 - oy, c0 - ox:c1 - ox]


def activation_bytes(cfg: VAEConfig, frames: int, height: int, width: int) -> int:
    """A rough peak of a whole-clip decode's activations, 40 bytes per full-resolution pixel and
    channel (benchmarks/vae_speed.py, default preset: 89 MB at 17 x 64x64, 303 MB at 65 x 64x64,
    342 MB at 17 x 128x128; 28-40 bytes)."""
    return 40 * cfg.base_channels * cfg.channel_mult[0] * frames * height * width


# a streamed decode (one latent frame at a time) keeps about this many bytes per full-resolution
# pixel and channel, caches included (benchmarks/vae_speed.py, default preset at 256x256: 348 MB)
STREAM_BYTES = 170
MIN_TILE = 8  # latent pixels: smaller tiles recompute the low-resolution stages' halo too often


def stream_bytes(cfg: VAEConfig, height: int, width: int) -> int:
    """A rough peak of a streamed decode's activations over height x width output pixels."""
    return STREAM_BYTES * cfg.base_channels * cfg.channel_mult[0] * height * width


CPU_BUDGET_MB = 256.0  # what the measured tables (docs/vae.md) were planned with


def budget_for(device: torch.device | str) -> float:
    """The size policy's activation budget in MB on `device`: CPU_BUDGET_MB on a CPU; on a CUDA GPU
    a quarter of the memory free at the call (the estimates are fp32 and the caller's own tensors
    need room), never less than CPU_BUDGET_MB. So a large GPU decodes in long untiled chunks what a
    CPU tiles, and a nearly full one plans as a CPU does."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(CPU_BUDGET_MB, free / 4 / 2 ** 20)
    return CPU_BUDGET_MB


def plan_coding(cfg: VAEConfig, latent_shape: tuple[int, int, int], budget_mb: float | None = None,
                halo_px: int = 0, device: torch.device | str = "cpu") -> CodingPlan:
    """The size policy: the whole clip when its activations fit `budget_mb`, else time chunks of as
    many latent frames as fit, else one latent frame at a time, in square tiles if the frame does
    not fit. `halo_px`: latent pixels a tile computes again a side at full resolution. A decoder
    cuts each stage to what its tile needs (Cuts), so its full-resolution stages run on the tile
    and 0 is right; its low-resolution stages still see the whole halo, so a tile is at least
    MIN_TILE (measured at 256x256: 2 x 2 tiles 1.2x the time of streaming alone, 4 x 4 1.7x). An
    encoder's first stages see its whole halo (`halo`): its tiles come only where the budget
    allows an interior of at least two halos well inside the frame, else it streams untiled.
    `budget_mb` None: budget_for(device), asked only when a plan is made (not in training)."""
    if torch.is_grad_enabled():
        return CodingPlan()
    t, h, w = latent_shape
    r, s = cfg.time_compression, cfg.space_compression
    budget = (budget_for(device) if budget_mb is None else budget_mb) * 2 ** 20
    frames_of = lambda k: 1 + r * (k - 1) + r  # noqa: E731  a chunk of k latent frames, plus the cached past
    if activation_bytes(cfg, 1 + r * (t - 1), h * s, w * s) <= budget:
        return CodingPlan()
    per_latent_frame = activation_bytes(cfg, r, h * s, w * s)
    if activation_bytes(cfg, frames_of(1), h * s, w * s) <= budget:
        return CodingPlan(latent_chunk=max(1, int(budget // per_latent_frame) - 1))
    if stream_bytes(cfg, h * s, w * s) <= budget:
        return CodingPlan(latent_chunk=1)
    side = math.isqrt(int(budget // stream_bytes(cfg, s, s)))  # latent pixels a tile may span, halo included
    tile = side - 2 * halo_px
    if halo_px and (tile < 2 * halo_px or side > 0.75 * max(h, w)):
        return CodingPlan(latent_chunk=1)
    tile = max(MIN_TILE, tile)
    n = math.ceil(max(h, w) / tile)  # as many tiles a side as that takes, of even size
    return CodingPlan(latent_chunk=1, tile=math.ceil(max(h, w) / n))


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
            if encoder:
                y = net(piece, cache)[:, :, :, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
            else:  # the decoder computes only what the tile needs at each stage (Cuts)
                y = net(piece, cache, ((y0 - ya) * up, (y1 - ya) * up, (x0 - xa) * up, (x1 - xa) * up) if pad else None)
            out[:, :, o0:o0 + y.shape[2], y0 * up:y1 * up, x0 * up:x1 * up] = y
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

