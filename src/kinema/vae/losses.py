"""VAE training losses; each term has its own weight and is off at weight 0.

`foreground_weight` counters the black background that dominates small-object worlds: without
it a 4x8x8 VAE learns to output black frames (pixels on objects get 1 + foreground_weight).
With `foreground_from="either"` a pixel also counts as foreground where the reconstruction is
bright: weighting the target alone makes bleeding into the background and ghost objects cheap
(weight 1) next to missing object pixels (weight 1 + fw), so objects grow, corners round off and
ghosts survive.

`foreground_per_clip` divides each clip's weights by their mean, so every clip weighs the same in
the batch. On a world mix (Shapes + photos) the bright photographs would otherwise carry about ten
times a Shapes clip's weight, while the objects of a Shapes clip still outweigh its background.

`gradient` compares spatial finite differences (an edge loss): a blurred edge or a rounded corner
costs where the pixel losses, which average over the whole frame, barely notice it.

`adversarial` (VAE stage) adds a 3D patch discriminator with a hinge loss from step
`adversarial_start` on, its term weighted adaptively (kinema.vae.discriminator).

`perceptual` adds a perceptual term by name (`perceptual_net`, kinema.vae.perceptual: "ms-ssim",
1 - multi-scale SSIM), for textures that L1 / L2 blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kinema.errors import KinemaError


@dataclass
class VAELossConfig:
    l1: float = 1.0
    l2: float = 0.0
    kl: float = 1e-6
    temporal: float = 0.0  # L1 between neighbouring-frame differences of output and target
    gradient: float = 0.0  # L1 between horizontal and vertical pixel differences of output and target
    foreground_weight: float = 0.0
    foreground_from: str = "target"  # "target", or "either": the target or the reconstruction
    foreground_per_clip: bool = False  # each clip's weights divided by their mean (world mixes)
    perceptual: float = 0.0
    perceptual_net: str = "ms-ssim"  # kinema.vae.perceptual.PERCEPTUAL
    adversarial: float = 0.0  # x the adaptive weight x the generator's hinge term
    adversarial_start: int = 0  # the discriminator and its term start at this step
    disc_channels: int = 32

    def __post_init__(self):
        from kinema.vae.perceptual import PERCEPTUAL

        if self.perceptual_net not in PERCEPTUAL:
            raise KinemaError(f"vae.loss.perceptual_net {self.perceptual_net!r}: use one of {', '.join(PERCEPTUAL)}")
        if self.foreground_from not in ("target", "either"):
            raise KinemaError(f"vae.loss.foreground_from must be 'target' or 'either', not {self.foreground_from!r}")


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), summed over latent dims, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


def brightness(x: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, T, H, W] in [-1, 1] -> [B, 1, T, H, W] in [0, 1] (max over RGB)."""
    return x.amax(dim=1, keepdim=True).add(1).mul(0.5).clamp(0, 1)


def pixel_weights(target: torch.Tensor, foreground_weight: float,
                  recon: torch.Tensor | None = None, per_clip: bool = False) -> torch.Tensor:
    """-> [B, 1, T, H, W]: 1 + fw * brightness of the target, or of the brighter of target and
    recon (detached: the weight is not a path for gradients); `per_clip`: divided by each clip's
    mean weight."""
    bright = brightness(target)
    if recon is not None:
        bright = torch.maximum(bright, brightness(recon.detach()))
    w = 1.0 + foreground_weight * bright
    return w / w.mean(dim=(1, 2, 3, 4), keepdim=True) if per_clip else w


def difference_error(recon: torch.Tensor, target: torch.Tensor, dim: int,
                     w: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between neighbour differences of recon and target along `dim` (2: time, 3: height,
    4: width), optionally weighted per pixel."""
    err = (recon.diff(dim=dim) - target.diff(dim=dim)).abs()
    return (err if w is None else w.narrow(dim, 1, w.shape[dim] - 1) * err).mean()


def vae_loss(cfg: VAELossConfig, recon: torch.Tensor, target: torch.Tensor,
             mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    recon, target = recon.float(), target.float()
    w = pixel_weights(target, cfg.foreground_weight, recon if cfg.foreground_from == "either" else None,
                      cfg.foreground_per_clip)
    terms: dict[str, torch.Tensor] = {}
    err = recon - target
    if cfg.l1:
        terms["l1"] = cfg.l1 * (w * err.abs()).mean()
    if cfg.l2:
        terms["l2"] = cfg.l2 * (w * err.pow(2)).mean()
    if cfg.kl:
        terms["kl"] = cfg.kl * kl_divergence(mean.float(), logvar.float())
    if cfg.temporal and recon.shape[2] > 1:
        terms["temporal"] = cfg.temporal * difference_error(recon, target, 2)
    if cfg.perceptual:
        from kinema.vae.perceptual import PERCEPTUAL

        terms["perceptual"] = cfg.perceptual * PERCEPTUAL[cfg.perceptual_net](recon, target)
    if cfg.gradient:
        terms["gradient"] = cfg.gradient * (difference_error(recon, target, 3, w) + difference_error(recon, target, 4, w))
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}
