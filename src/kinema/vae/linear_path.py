"""A linear coder beside the VAE's networks (`VAEConfig.linear_path`).

Each latent position's Cz numbers are a linear map of its own pixels, and back: frame 0's s x s
patch (the causal VAE codes frame 0 alone), and each later latent frame's r x s x s spacetime
patch. The encoder adds it to the posterior mean, the decoder to its output.

`fit_pca` sets the maps to the principal components of training clips: the best linear code of
that size on average. With the networks' output convolutions zero-initialised (as CausalVAE does
when the path is on), a VAE then starts as that linear coder, not at a random map, and trains only
what the networks add to it. On held-out photographs PCA codes frame 0 3.4 dB above the naive
baseline where the photo VAE's networks alone code it 0.4 dB below (docs/vae.md).

The path sees nothing outside its patch and nothing of another latent frame, so it keeps the
VAE's causality, its streaming (a `CausalCache` says whether a chunk holds the clip's first frame)
and its exact tiling (tiles are whole latent pixels).

    LinearPath(cfg, encoder=True)(x, first)    x [B, C, T, H, W] -> [B, Cz, t, h, w]
    LinearPath(cfg, encoder=False)(z, first)   z [B, Cz, t, h, w] -> [B, C, T, H, W]
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from kinema.config import VAEConfig


def patches(x: torch.Tensor, r: int, s: int, first: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """x [B, C, T, H, W] -> (frame 0's patches [B, 1, h, w, C s s] if `first`, the later frames'
    [B, t, h, w, C r s s] or None): T is 1 + r k at the clip's start, r k after it."""
    head = rearrange(x[:, :, :1], "b c t (h p) (w q) -> b t h w (c p q)", p=s, q=s) if first else None
    rest = x[:, :, 1:] if first else x
    tail = rearrange(rest, "b c (t f) (h p) (w q) -> b t h w (c f p q)", f=r, p=s, q=s) if rest.shape[2] else None
    return head, tail


class LinearPath(nn.Module):
    """One direction of the linear coder: `encoder=True` maps patches to latents (forward = encode),
    False maps latents to patches (forward = decode). `first` and `rest` are frame 0's map and the
    later latent frames'."""

    def __init__(self, cfg: VAEConfig, encoder: bool):
        super().__init__()
        c, r, s, cz = cfg.in_channels, cfg.time_compression, cfg.space_compression, cfg.latent_channels
        self.r, self.s, self.encoder = r, s, encoder
        pair = (lambda d: nn.Linear(d, cz)) if encoder else (lambda d: nn.Linear(cz, d))
        self.first, self.rest = pair(c * s * s), pair(c * r * s * s)

    def forward(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        return self.encode(x, first) if self.encoder else self.decode(x, first)

    def encode(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        """x [B, C, T, H, W] (T = 1 + r k with `first`, else r k) -> [B, Cz, t, h, w]"""
        head, tail = patches(x, self.r, self.s, first)
        parts = ([self.first(head)] if head is not None else []) + ([self.rest(tail)] if tail is not None else [])
        return rearrange(torch.cat(parts, dim=1), "b t h w c -> b c t h w")

    def decode(self, z: torch.Tensor, first: bool) -> torch.Tensor:
        """z [B, Cz, t, h, w] -> [B, C, T, H, W] (T = 1 + r (t - 1) with `first`, else r t)"""
        z = rearrange(z, "b c t h w -> b t h w c")
        out = []
        if first:
            out.append(rearrange(self.first(z[:, :1]), "b t h w (c p q) -> b c t (h p) (w q)", p=self.s, q=self.s))
            z = z[:, 1:]
        if z.shape[1]:
            out.append(rearrange(self.rest(z), "b t h w (c f p q) -> b c (t f) (h p) (w q)", f=self.r, p=self.s,
                                 q=self.s))
        return torch.cat(out, dim=2)


@torch.no_grad()
def fit_pca(encoder_path: LinearPath, decoder_path: LinearPath, clips: torch.Tensor) -> dict[str, float]:
    """Set both paths to the principal components of `clips` [N, C, T, H, W] (T = 1 + r k, k >= 1):
    frame 0's patches for the `first` maps, the later frames' for the `rest` maps. Encoding is
    projection onto the top Cz components after taking the patches' mean away; decoding is the
    mean plus their span. Returns the share of the patches' variance each map keeps."""
    head, tail = patches(clips.double(), encoder_path.r, encoder_path.s, first=True)
    kept = {}
    for name, data in (("first", head), ("rest", tail)):
        data = data.reshape(-1, data.shape[-1])
        mean = data.mean(0)
        centred = data - mean
        variance, vectors = torch.linalg.eigh(centred.T @ centred / len(data))  # ascending
        enc, dec = getattr(encoder_path, name), getattr(decoder_path, name)
        basis = vectors[:, -enc.out_features:].flip(1).T  # [Cz, D], largest first
        enc.weight.copy_(basis)
        enc.bias.copy_(-basis @ mean)
        dec.weight.copy_(basis.T)
        dec.bias.copy_(mean)
        kept[name] = float(variance[-enc.out_features:].sum() / variance.sum())
    return kept
