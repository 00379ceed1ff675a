"""The one generation loop: noise -> guided ODE solve in latent space -> latents.

Text-to-video uses it directly; image-to-video, video-to-video and long video (later issues)
differ only in the conditioning and in which latent frames are clamped, not in the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from kinema.dit.transformer import Conditioning
from kinema.flow.guidance import cfg_combine
from kinema.flow.samplers import SAMPLERS
from kinema.flow.timesteps import sampling_schedule
from kinema.runtime import Runtime


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """[B, *shape] with sample i drawn from its own seed, so a batch equals the samples one by one."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def guided_velocity(model: nn.Module, cond: Conditioning, uncond: Conditioning, guidance: float):
    """velocity_fn(x, t) for the samplers: one batched call for conditional + unconditional."""

    def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device)
        if guidance == 1.0:
            return model(x, tt, cond)
        v = model(torch.cat([x, x]), torch.cat([tt, tt]), Conditioning.cat([cond, uncond]))
        v_cond, v_uncond = v.chunk(2)
        return cfg_combine(v_cond, v_uncond, guidance)

    return velocity_fn


@torch.no_grad()
def sample_latents(model: nn.Module, cond: Conditioning, uncond: Conditioning, noise: torch.Tensor, *,
                   steps: int, guidance: float, sampler: str = "euler", shift: float = 1.0,
                   runtime: Runtime) -> torch.Tensor:
    """noise: [B, C, t, h, w] at t = 1 -> normalised latents at t = 0 (same shape), on noise's device."""
    ts = sampling_schedule(steps, shift)
    with runtime.autocast():
        out = SAMPLERS[sampler](guided_velocity(model, cond, uncond, guidance), noise, ts)
    return out.float()
