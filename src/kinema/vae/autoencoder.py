"""3D causal VAE (SPEC §1): `1 + 4k` frames -> `1 + k` latent frames, space / 2**(levels-1).

Every op is causal in time: CausalConv3d, per-position RMSNorm (a clip-wide GroupNorm would let
later frames change earlier latents), stride-2 causal temporal downsampling, and temporal
upsampling that repeats each latent frame twice and drops the first copy. A `T=1` image is a
one-frame video.

Every forward takes an optional `CausalCache`: then its input is the next time chunk of a clip
(kinema.vae.coding streams and tiles with it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.config import VAEConfig
from kinema.nn.norms import RMSNorm
from kinema.vae.causal_conv import CausalCache, CausalConv3d
from kinema.vae.coding import CodingPlan, plan_coding, run_tiled


def _norm(c: int) -> RMSNorm:
    return RMSNorm(c, dim=1)  # channels of [B, C, T, H, W]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = _norm(cout), CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:  # [B, C, T, H, W] -> [B, C', T, H, W]
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 causal conv in space, and in time when `temporal` (T = 1 + 2k -> 1 + k)."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return self.conv(x, cache)


class Upsample(nn.Module):
    """Nearest x2 in space; in time repeat each frame twice and drop the first copy (1 + k -> 1 + 2k)."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(cin, cout)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # [B, C, T, 2H, 2W]
        if self.temporal:
            first = cache is None or self not in cache.started  # only the clip's first frame loses a copy
            x = x.repeat_interleave(2, dim=2)[:, :, int(first):]  # [B, C, 2T - 1 (or 2T), 2H, 2W]
            if cache is not None:
                cache.started.add(self)
        return self.conv(x, cache)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = CausalConv3d(cfg.in_channels, chans[0])
        self.levels = nn.ModuleList()
        for i, c in enumerate(chans):
            blocks = [ResBlock(c, c) for _ in range(cfg.num_res_blocks)]
            if i < len(chans) - 1:
                blocks.append(Downsample(c, chans[i + 1], cfg.temporal_down[i]))
            self.levels.append(nn.ModuleList(blocks))
        self.mid = ResBlock(chans[-1], chans[-1])
        self.norm_out = _norm(chans[-1])
        self.conv_out = CausalConv3d(chans[-1], 2 * cfg.latent_channels)
        # start with a narrow posterior (std e^-3): with logvar = 0 the sampling noise drowns the
        # mean, the decoder learns the average frame (black) and the latent carries nothing
        with torch.no_grad():
            self.conv_out.conv.bias[cfg.latent_channels:].fill_(-6.0)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """x: [B, 3, T, H, W] -> moments [B, 2*Cz, t, h, w]"""
        h = self.conv_in(x, cache)
        for level in self.levels:
            for block in level:
                h = block(h, cache)
        h = self.mid(h, cache)
        return self.conv_out(F.silu(self.norm_out(h)), cache)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = CausalConv3d(cfg.latent_channels, chans[-1])
        self.mid = ResBlock(chans[-1], chans[-1])
        self.levels = nn.ModuleList()
        for i in reversed(range(len(chans))):
            blocks = [ResBlock(chans[i], chans[i]) for _ in range(cfg.num_res_blocks + 1)]
            if i > 0:
                blocks.append(Upsample(chans[i], chans[i - 1], cfg.temporal_down[i - 1]))
            self.levels.append(nn.ModuleList(blocks))
        self.norm_out = _norm(chans[0])
        self.conv_out = CausalConv3d(chans[0], cfg.in_channels)

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """z: [B, Cz, t, h, w] -> [B, 3, T, H, W]"""
        return self.levels_from(self.mid(self.conv_in(z, cache), cache), 0, 0, cache)

    def levels_from(self, h: torch.Tensor, level: int, block: int, cache: CausalCache | None) -> torch.Tensor:
        """Run `h` from levels[level][block] to the output. Streaming (a cache), each upsampler's
        output frames go on one at a time, depth first, so only one frame of each larger feature
        map is alive at once: the memory of a decode is that of about one output frame."""
        for i in range(level, len(self.levels)):
            blocks = self.levels[i]
            for j in range(block if i == level else 0, len(blocks)):
                h = blocks[j](h, cache)
                if cache is not None and isinstance(blocks[j], Upsample) and h.shape[2] > 1:
                    return torch.cat([self.levels_from(f, i, j + 1, cache) for f in h.split(1, dim=2)], dim=2)
        return self.conv_out(F.silu(self.norm_out(h)), cache)


class CausalVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if len(cfg.temporal_down) != len(cfg.channel_mult) - 1:
            raise ValueError("temporal_down needs one entry per downsampling (len(channel_mult) - 1)")
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.cfg.time_compression + 1

    def check_frames(self, frames: int) -> None:
        r = self.cfg.time_compression
        if (frames - 1) % r:
            raise ValueError(f"frame count {frames} is not 1 + {r}k (e.g. {r + 1}, {2 * r + 1}, {4 * r + 1})")

    def check_size(self, height: int, width: int) -> None:
        s = self.cfg.space_compression
        if height % s or width % s:
            raise ValueError(f"frame size {height}x{width} is not a multiple of the VAE's spatial factor {s}; "
                             f"crop or resize to e.g. {height // s * s or s}x{width // s * s or s}")

    def encode(self, x: torch.Tensor, plan: CodingPlan | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, T, H, W] in [-1, 1], T = 1 + 4k -> (mean, logvar), each [B, Cz, 1 + k, H/8, W/8].
        `plan`: streamed / tiled (kinema.vae.coding); None lets the size policy choose."""
        b, _, frames, height, width = x.shape
        self.check_frames(frames)
        self.check_size(height, width)
        s = self.cfg.space_compression
        latent = (self.latent_frames(frames), height // s, width // s)
        plan = plan or plan_coding(self.cfg, latent)
        if plan.whole:
            moments = self.encoder(x)
        else:
            moments = run_tiled(self.encoder, x, (b, 2 * self.cfg.latent_channels, *latent), plan, self.cfg, encoder=True)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, plan: CodingPlan | None = None) -> torch.Tensor:
        """z: [B, Cz, t, h, w] -> [B, 3, 1 + 4(t-1), 8h, 8w]. `plan` as for encode."""
        b, _, t, h, w = z.shape
        plan = plan or plan_coding(self.cfg, (t, h, w))
        if plan.whole:
            return self.decoder(z)
        r, s = self.cfg.time_compression, self.cfg.space_compression
        return run_tiled(self.decoder, z, (b, self.cfg.in_channels, 1 + r * (t - 1), h * s, w * s), plan, self.cfg,
                         encoder=False)

    # latents seen by the denoiser are normalised per channel with statistics of the training data
    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg.latent_mean is None or cfg.latent_std is None:
            return torch.zeros((), device=z.device), torch.ones((), device=z.device)
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(cfg.latent_mean, device=z.device).view(shape)
        return mean, torch.tensor(cfg.latent_std, device=z.device).view(shape)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean
