"""A 3D patch discriminator for VAE training (SPEC §1): it judges space-time patches of a clip,
real or reconstructed, with a hinge loss; the VAE's adversarial term is weighted adaptively.

    d = PatchDiscriminator3D(channels=32, layers=3)
    logits = d(video)                          # [B, 3, T, H, W] -> [B, 1, T', H', W'] patch logits
    d_loss = hinge_d(d(real), d(recon.detach()))
    g_loss = generator_loss(d, recon)          # -mean D(recon), without touching D's gradients
    weight = adaptive_weight(rec_loss, g_loss, last_layer_weight)   # Esser et al. 2021 (VQGAN)

Causal in time like the VAE (CausalConv3d), so a one-frame image is judged as a video's first
frame and images and videos train together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.vae.causal_conv import CausalConv3d


class PatchDiscriminator3D(nn.Module):
    """Causal conv (3 -> C), then `layers` x (stride-2 causal conv in space (and time, for the first
    two), LeakyReLU 0.2), then a causal conv to one logit per patch. No normalisation: a
    per-sample norm would let the batch's other clips change a clip's score."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 3):
        super().__init__()
        convs = [CausalConv3d(in_channels, channels)]
        c = channels
        for i in range(layers):
            convs.append(CausalConv3d(c, min(2 * c, 8 * channels), 3, stride=(2 if i < 2 else 1, 2, 2)))
            c = min(2 * c, 8 * channels)
        self.convs = nn.ModuleList(convs)
        self.out = CausalConv3d(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.out(x)


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def generator_loss(d: nn.Module, recon: torch.Tensor) -> torch.Tensor:
    """-mean D(recon), with D's parameters out of the graph: its gradients reach the VAE only."""
    flags = [p.requires_grad for p in d.parameters()]
    for p in d.parameters():
        p.requires_grad_(False)
    try:
        return -d(recon).float().mean()
    finally:
        for p, f in zip(d.parameters(), flags):
            p.requires_grad_(f)


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """||grad_last rec_loss|| / (||grad_last g_loss|| + 1e-4), detached and clamped: the adversarial
    term pulls on the decoder's last layer about as hard as the reconstruction does."""
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()
