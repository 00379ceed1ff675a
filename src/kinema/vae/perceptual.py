"""Perceptual terms for VAE training, by name (`vae.loss.perceptual_net`); each runs offline.

    "ms-ssim"  1 - multi-scale SSIM over every frame (Wang, Simoncelli and Bovik 2003): structure
               and contrast at each scale, luminance at the coarsest, with a Gaussian window
               (sigma 1.5, 11 taps), at as many of the five standard scales as the frame allows
               (11 px or more at the coarsest), their weights renormalised

A network-feature term (a discriminator's features, or a pretrained net shipped in a package)
registers beside it in PERCEPTUAL.

Shapes: x, y [B, C, T, H, W] in [-1, 1] (data range 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # the five scales' exponents (Wang et al. 2003)
WINDOW = 11


def gaussian_window(size: int = WINDOW, sigma: float = 1.5) -> torch.Tensor:
    """[size] normalised Gaussian taps (scikit-image's gaussian_weights with truncate 3.5: 11 taps at sigma 1.5)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian, 'valid' (no padding): [N, C, H, W] -> [N, C, H - 10, W - 10]."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1).to(x), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1).to(x), groups=c)


def ssim_parts(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image: x, y [N, C, H, W] -> ([N], [N])."""
    g = gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, g), _blur(y, g)
    vx, vy = _blur(x * x, g) - mx ** 2, _blur(y * y, g) - my ** 2
    cov = _blur(x * y, g) - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Multi-scale SSIM of every frame: x, y [B, C, T, H, W] -> [B * T]. Always in fp32, autocast or
    not: a variance as E[x^2] - E[x]^2 in bf16 loses all its digits, and the ratios blow up."""
    with torch.autocast(x.device.type, enabled=False):
        return _ms_ssim(*(v.float().transpose(1, 2).flatten(0, 1) for v in (x, y)), data_range)  # [B T, C, H, W]


def _ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    scales = 1
    while scales < len(WEIGHTS) and min(x.shape[-2:]) // 2 ** scales >= WINDOW:
        scales += 1
    w = [v / sum(WEIGHTS[:scales]) for v in WEIGHTS[:scales]]
    out = x.new_ones(x.shape[0])
    for i in range(scales):
        ssim, cs = ssim_parts(x, y, data_range)
        out = out * (ssim if i == scales - 1 else cs).clamp(min=1e-6) ** w[i]
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


def ms_ssim_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - ms_ssim(recon, target).mean()


PERCEPTUAL = {"ms-ssim": ms_ssim_loss}
