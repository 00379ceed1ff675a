"""3D causal VAE (SPEC §1): `1 + r k` frames -> `1 + k` latent frames (r the time compression),
space / (patch * 2**(levels-1)).

Every op is causal in time: CausalConv3d, per-position RMSNorm (a clip-wide GroupNorm would let
later frames change earlier latents), strided causal temporal downsampling (x2, or any factor f:
Mochi's 6x is 2 x 3), and temporal upsampling that repeats each latent frame f times and drops
the first f - 1 copies of the clip's first frame. A `T=1` image is a one-frame video.
`downsample: dual` adds Step-Video's parameter-free path beside each strided conv: space (and
time) folded into channels, averaged down to the new width; upsampling mirrors it.
`linear_path` adds a linear coder of each latent position's own patch beside both networks
(kinema.vae.linear_path), whose output convolutions then start at zero. `carry` puts a carry head
after the decoder (kinema.vae.carry): each output frame blends in the one before it, moved.

Every forward takes an optional `CausalCache`: then its input is the next time chunk of a clip
(kinema.vae.coding streams and tiles with it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kinema.config import VAEConfig
from kinema.nn.norms import RMSNorm
from kinema.vae.carry import CarryHead
from kinema.vae.causal_conv import CausalCache, CausalConv3d
from kinema.vae.coding import CodingPlan, Cuts, halo, in_strips, plan_coding, reach, run_tiled
from kinema.vae.linear_path import LinearPath

TAIL_ROWS = 64  # a streamed decode's 2D tail runs in strips of about this many output rows


def _norm(c: int) -> RMSNorm:
    return RMSNorm(c, dim=1)  # channels of [B, C, T, H, W]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kt: int = 3):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), CausalConv3d(cin, cout, (kt, 3, 3))
        self.norm2, self.conv2 = _norm(cout), CausalConv3d(cout, cout, (kt, 3, 3))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:  # [B, C, T, H, W] -> [B, C', T, H, W]
        inplace = not torch.is_grad_enabled()  # inference: the norms' outputs are fresh, so SiLU and the sum reuse them
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace), cache)
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace), cache)
        return h.add_(self.skip(x)) if inplace else self.skip(x) + h


def clip_start(module: nn.Module, cache: CausalCache | None) -> bool:
    """Whether this call holds the clip's first frame (always, without a cache), and note that it did."""
    first = cache is None or module not in cache.started
    if cache is not None:
        cache.started.add(module)
    return first


def fold(x: torch.Tensor, f: int, first: bool) -> torch.Tensor:
    """Space 2x2 and time f into channels, causally: [B, C, T, H, W] -> [B, 4 f C, T', H/2, W/2].
    At the clip's start f - 1 zero frames go before the first frame, so it makes a group alone
    (T = 1 + f k -> 1 + k); later chunks have whole groups."""
    if first and f > 1:
        x = F.pad(x, (0, 0, 0, 0, f - 1, 0))
    return rearrange(x, "b c (t f) (h p) (w q) -> b (c f p q) t h w", f=f, p=2, q=2)


def unfold(x: torch.Tensor, f: int, first: bool) -> torch.Tensor:
    """fold's inverse: [B, 4 f C, T, H, W] -> [B, C, f T (less f - 1 at the clip's start), 2H, 2W]."""
    x = rearrange(x, "b (c f p q) t h w -> b c (t f) (h p) (w q)", f=f, p=2, q=2)
    return x[:, :, f - 1:] if first else x


class Downsample(nn.Module):
    """Stride-2 causal conv in space and stride f in time (T = 1 + f k -> 1 + k). `dual`: plus the
    folded input (fold) averaged over groups of channels down to `cout`."""

    def __init__(self, cin: int, cout: int, factor: int, dual: bool = False):
        super().__init__()
        self.factor, self.dual = factor, dual
        self.conv = CausalConv3d(cin, cout, 3, stride=(factor, 2, 2))
        if dual and (4 * factor * cin) % cout:
            raise ValueError(f"the dual path folds {cin} channels into {4 * factor * cin}, not a multiple of {cout}")

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        first = clip_start(self, cache)
        y = self.conv(x, cache)
        if not self.dual:
            return y
        folded = fold(x, self.factor, first)  # [B, 4 f cin, T', H/2, W/2]
        return y + folded.unflatten(1, (y.shape[1], -1)).mean(2)


class Upsample(nn.Module):
    """Nearest x2 in space; in time repeat each frame f times and drop the clip's first frame's
    first f - 1 copies (1 + k -> 1 + f k); then a causal conv. `dual`: plus the input's channels
    repeated up to 4 f cout and unfolded (the mirror of Downsample's path)."""

    upsamples_space = True  # kinema.vae.coding.halo: the layers after it run at twice the resolution

    def __init__(self, cin: int, cout: int, factor: int, dual: bool = False, kt: int = 3):
        super().__init__()
        self.factor, self.dual, self.cout = factor, dual, cout
        self.conv = CausalConv3d(cin, cout, (kt, 3, 3))  # runs at the output's resolution
        if dual and (4 * factor * cout) % cin:
            raise ValueError(f"the dual path unfolds {cin} channels into {4 * factor * cout}, not a multiple of {cin}")

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if cache is not None:  # streaming: one output frame at a time, never the whole upsampled chunk
            return torch.cat(list(self.frames(x, cache)), dim=2)
        h = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # [B, C, T, 2H, 2W]
        if self.factor > 1:  # the whole clip: its first frame keeps one copy
            h = h.repeat_interleave(self.factor, dim=2)[:, :, self.factor - 1:]
        return self.plus_dual(self.conv(h), x, first=True)

    def frames(self, x: torch.Tensor, cache: CausalCache):
        """Stream a chunk [B, C, T, H, W]: yield its output frames [B, C', 1, 2H, 2W] one by one (f
        per input frame, one for the clip's first), each through the conv alone: the windows the
        whole pass computes. The conv upsamples each frame as it reads it (`upsample`), so its cache
        keeps input frames at this resolution, a quarter of the size, and a repeated frame once."""
        for t in range(x.shape[2]):
            xt = x[:, :, t:t + 1]
            first = clip_start(self, cache)
            copies = 1 if first else self.factor
            dual = self.plus_dual(None, xt, first) if self.dual else None  # [B, C', copies, 2H, 2W]
            for c in range(copies):
                y = self.conv(xt, cache, upsample=True)
                yield y if dual is None else y.add_(dual[:, :, c:c + 1])

    def plus_dual(self, y: torch.Tensor | None, x: torch.Tensor, first: bool) -> torch.Tensor:
        """y, plus (`dual`) the input x's channels repeated up to 4 f cout and unfolded (that alone for y None)."""
        if not self.dual:
            return y
        repeats = 4 * self.factor * self.cout // x.shape[1]
        path = unfold(x.repeat_interleave(repeats, dim=1), self.factor, first)
        return path if y is None else y + path


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        self.patch = cfg.patch
        kt, last = cfg.kernel_t, len(chans) - 1  # temporal kernel per level (cfg.time_kernel)
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch ** 2, chans[0], (kt(0), 3, 3))
        self.levels = nn.ModuleList()
        for i, c in enumerate(chans):
            blocks = [ResBlock(c, c, kt(i)) for _ in range(cfg.num_res_blocks)]
            if i < len(chans) - 1:
                blocks.append(Downsample(c, chans[i + 1], cfg.factors()[i], cfg.downsample == "dual"))
            self.levels.append(nn.ModuleList(blocks))
        self.mid = ResBlock(chans[-1], chans[-1], kt(last))
        self.norm_out = _norm(chans[-1])
        self.conv_out = CausalConv3d(chans[-1], 2 * cfg.latent_channels, (kt(last), 3, 3))
        # start with a narrow posterior (std e^-3): with logvar = 0 the sampling noise drowns the
        # mean, the decoder learns the average frame (black) and the latent carries nothing
        with torch.no_grad():
            self.conv_out.conv.bias[cfg.latent_channels:].fill_(-6.0)
        self.linear = LinearPath(cfg, encoder=True) if cfg.linear_path else None
        if self.linear is not None:  # the mean starts as the linear path's alone
            with torch.no_grad():
                self.conv_out.conv.weight[:cfg.latent_channels].zero_()
                self.conv_out.conv.bias[:cfg.latent_channels].zero_()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """x: [B, 3, T, H, W] -> moments [B, 2*Cz, t, h, w]"""
        linear = self.linear(x, clip_start(self.linear, cache)) if self.linear is not None else None
        if self.patch > 1:  # [B, 3, T, H, W] -> [B, 3 p p, T, H / p, W / p]
            x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=self.patch, q=self.patch)
        if cache is None:
            h = self.conv_in(x)
            for level in self.levels:
                for block in level:
                    h = block(h)
        else:
            h = self.depth_first(x, cache)
        h = self.mid(h, cache)
        moments = self.conv_out(F.silu(self.norm_out(h)), cache)
        if linear is None:
            return moments
        mean, logvar = moments.chunk(2, dim=1)
        return torch.cat([mean + linear, logvar], dim=1)

    def depth_first(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """A streamed chunk [B, C, T, H, W] (whole latent frames) through conv_in and the levels,
        one frame at a time: each frame goes on through a level as it arrives, and a downsampler
        runs as soon as it holds its next window's frames (one at the clip's start, then its time
        factor). So at most a factor's frames of each level are alive at once, not the chunk's."""
        out: list[torch.Tensor] = []
        waiting: list[list[torch.Tensor]] = [[] for _ in self.levels]  # frames before each downsampler

        def push(h: torch.Tensor, i: int) -> None:
            *blocks, down = self.levels[i]
            if not isinstance(down, Downsample):  # the last level: no downsampler
                blocks, down = [*blocks, down], None
            for block in blocks:
                h = block(h, cache)
            if down is None:
                out.append(h)
                return
            waiting[i].append(h)
            if len(waiting[i]) == (down.factor if down in cache.started else 1):
                group = torch.cat(waiting[i], dim=2) if len(waiting[i]) > 1 else waiting[i][0]
                waiting[i].clear()
                push(down(group, cache), i + 1)

        for frame in x.split(1, dim=2):
            push(self.conv_in(frame, cache), 0)
        if any(waiting):
            raise ValueError(f"a streamed chunk of {x.shape[2]} frames ends inside a latent frame; stream in chunks "
                             f"of whole latent frames")
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        kt, last = cfg.kernel_t, len(chans) - 1  # temporal kernel per level (cfg.time_kernel)
        self.conv_in = CausalConv3d(cfg.latent_channels, chans[-1], (kt(last), 3, 3))
        self.mid = ResBlock(chans[-1], chans[-1], kt(last))
        self.levels = nn.ModuleList()
        for i in reversed(range(len(chans))):
            blocks = [ResBlock(chans[i], chans[i], kt(i)) for _ in range(cfg.num_res_blocks + 1)]
            if i > 0:
                blocks.append(Upsample(chans[i], chans[i - 1], cfg.factors()[i - 1], cfg.downsample == "dual", kt(i - 1)))
            self.levels.append(nn.ModuleList(blocks))
        self.norm_out = _norm(chans[0])
        self.patch = cfg.patch
        self.conv_out = CausalConv3d(chans[0], cfg.in_channels * cfg.patch ** 2, (kt(0), 3, 3))
        self.linear = LinearPath(cfg, encoder=False) if cfg.linear_path else None
        if self.linear is not None:  # the output starts as the linear path's alone
            nn.init.zeros_(self.conv_out.conv.weight)
            nn.init.zeros_(self.conv_out.conv.bias)
        self.tail = self.spatial_tail()

    def spatial_tail(self) -> tuple[int, int, int, int] | None:
        """Where the decoder's 2D tail starts: the first upsampler from which on every conv is 2D
        (temporal kernel 1, cfg.time_kernel) and nothing repeats frames in time, so each output
        frame is a spatial function of one frame of the upsampler's input, and needs no cache.
        -> (level, block, output pixels per input pixel, halo in input pixels), or None."""
        spots = [(i, j) for i, blocks in enumerate(self.levels) for j, b in enumerate(blocks) if isinstance(b, Upsample)]
        for i, j in spots:
            rest = [*self.levels[i][j:], *(b for blocks in self.levels[i + 1:] for b in blocks), self.conv_out]
            mods = [m for r in rest for m in r.modules()]
            if all(c.time_pad == 0 for c in mods if isinstance(c, CausalConv3d)) and \
                    all(u.factor == 1 for u in mods if isinstance(u, Upsample)):
                scale = self.patch * 2 ** sum(isinstance(u, Upsample) for u in mods)
                return i, j, scale, math.ceil(reach(mods, float(scale)) / scale)
        return None

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None,
                interior: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """z: [B, Cz, t, h, w] -> [B, 3, T, H, W]. `interior` (rows r0, r1, columns c0, c1 of the
        output, z's grid times the spatial factor): decode only that window of z's output, each
        stage on the pixels of its input the window depends on (`Cuts`), -> [B, 3, T, r1-r0, c1-c0].
        A tile's full-resolution stages then run on little more than the tile, however wide the
        low-resolution stages' halo."""
        cuts = Cuts.of(self, interior, z.shape[-2:]) if interior is not None else None
        h = self.conv_in(cuts.cut(z, "in") if cuts else z, cache)
        out = self.levels_from(self.mid(cuts.cut(h, "mid") if cuts else h, cache), 0, 0, cache, cuts)
        if self.linear is None:
            return out
        if cuts is None:
            return out + self.linear(z, clip_start(self.linear, cache))
        # the linear path maps each latent pixel to its own patch: only the latent pixels under the window
        r0, r1, c0, c1 = interior
        p = cuts.scale["in"]  # output pixels per latent pixel
        y0, x0 = r0 // p, c0 // p
        linear = self.linear(z[..., y0:-(-r1 // p), x0:-(-c1 // p)], clip_start(self.linear, cache))
        return out + linear[..., r0 - y0 * p:r1 - y0 * p, c0 - x0 * p:c1 - x0 * p]

    def stages(self) -> list[tuple[object, list[nn.Module]]]:
        """The decoder's stages in the order they run, each (key, modules): conv_in, mid, each block
        of each level ((level, block)), and the output conv."""
        blocks = [((i, j), [b]) for i, level in enumerate(self.levels) for j, b in enumerate(level)]
        return [("in", [self.conv_in]), ("mid", [self.mid]), *blocks, ("out", [self.conv_out])]

    def levels_from(self, h: torch.Tensor, level: int, block: int, cache: CausalCache | None,
                    cuts: Cuts | None = None) -> torch.Tensor:
        """Run `h` from levels[level][block] to the output (with `cuts`, each block on the pixels the
        output window needs, and the output cropped to it). Streaming (a cache), each upsampler's
        output frames go on one at a time, depth first, so only one frame of each larger feature
        map is alive at once: the memory of a decode is that of about one output frame."""
        for i in range(level, len(self.levels)):
            blocks = self.levels[i]
            for j in range(block if i == level else 0, len(blocks)):
                if cuts is not None:
                    h = cuts.cut(h, (i, j))
                if cache is not None and self.tail is not None and (i, j) == self.tail[:2]:  # the 2D rest, in strips
                    _, _, scale, halo_rows = self.tail
                    rest = lambda f: self.levels_from(f, i, j, None)  # noqa: E731  (no cache: nothing to carry)
                    out = torch.cat([in_strips(rest, f, scale, halo_rows, max(1, TAIL_ROWS // scale))
                                     for f in h.split(1, dim=2)], dim=2)
                    return cuts.crop(out, (i, j)) if cuts else out
                if cache is not None and isinstance(blocks[j], Upsample):
                    return torch.cat([self.levels_from(f, i, j + 1, cache, cuts) for f in blocks[j].frames(h, cache)],
                                     dim=2)
                h = blocks[j](h, cache)
        if cuts is not None:
            h = cuts.cut(h, "out")
        out = self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()), cache)
        if self.patch > 1:  # [B, 3 p p, T, h, w] -> [B, 3, T, h p, w p]
            out = rearrange(out, "b (c p q) t h w -> b c t (h p) (w q)", p=self.patch, q=self.patch)
        return cuts.crop(out, "out") if cuts else out


class CausalVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if len(cfg.factors()) != len(cfg.channel_mult) - 1:
            raise ValueError(f"vae: {len(cfg.channel_mult) - 1} downsamplings (channel_mult has {len(cfg.channel_mult)} "
                             f"levels) need as many temporal_down / temporal_factors entries, got {len(cfg.factors())}")
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.carry = CarryHead(cfg.carry, cfg.in_channels, cfg.carry_motion) if cfg.carry else None
        # receptive-field radii in latent pixels (kinema.vae.coding), fixed by the architecture
        self.halos = (halo(self.encoder, cfg.space_compression, encoder=True),
                      halo(self.decoder, cfg.space_compression, encoder=False))

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
        `plan`: streamed / tiled (kinema.vae.coding); None lets the size policy choose, with the
        budget of x's device (kinema.vae.coding.budget_for)."""
        b, _, frames, height, width = x.shape
        self.check_frames(frames)
        self.check_size(height, width)
        s = self.cfg.space_compression
        latent = (self.latent_frames(frames), height // s, width // s)
        plan = plan or plan_coding(self.cfg, latent, halo_px=self.halos[0], device=x.device)
        if plan.whole:
            moments = self.encoder(x)
        else:
            moments = run_tiled(self.encoder, x, (b, 2 * self.cfg.latent_channels, *latent), plan, self.cfg, self.halos[0],
                                encoder=True)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, plan: CodingPlan | None = None) -> torch.Tensor:
        """z: [B, Cz, t, h, w] -> [B, 3, 1 + 4(t-1), 8h, 8w]. `plan` as for encode."""
        b, _, t, h, w = z.shape
        plan = plan or plan_coding(self.cfg, (t, h, w), device=z.device)  # (the decoder cuts its tiles' stages: no halo at full resolution)
        if plan.whole:
            y = self.decoder(z)
        else:
            r, s = self.cfg.time_compression, self.cfg.space_compression
            y = run_tiled(self.decoder, z, (b, self.cfg.in_channels, 1 + r * (t - 1), h * s, w * s), plan, self.cfg,
                          self.halos[1], encoder=False)
        if self.carry is None:
            return y
        # whole frames, one after the other (its reach grows with each frame): in place when not training
        return self.carry(y, inplace=not torch.is_grad_enabled())

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """The training round trip: x -> (reconstruction, mean, logvar), decoding mean + std * eps
        (the posterior mean when eps is None). Training calls this, not encode / decode, so a
        data-parallel wrapper (DDP) sees the whole step."""
        mean, logvar = self.encode(x)
        z = mean if eps is None else mean + (0.5 * logvar).exp() * eps.to(mean.dtype)
        return self.decode(z), mean, logvar

    # latents seen by the denoiser are normalised per channel with statistics of the training data
    # (latent_statistics below)
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


def latent_statistics(means: torch.Tensor, logvars: torch.Tensor, sampled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of the latents a denoiser trains on, from posterior means and log
    variances laid out [C, N] (every element of every clip, channel first).

    Without sampling the denoiser sees the means. With `sample_posterior` it sees mean + sigma * eps,
    whose variance is the means' variance plus the average posterior variance (the law of total
    variance); normalising those samples with the means' std alone leaves them wider than unit."""
    means = means.float()
    var = means.var(1)
    if sampled:
        var = var + logvars.float().exp().mean(1)
    return means.mean(1), var.sqrt()
