"""The one generation loop: noise -> guided ODE solve in latent space -> latents.

Text-to-video uses it directly; image-to-video, start and end frames, video-to-video and long
video differ only in the conditioning (Conditioning.frames: the given latent frames, clamped) and
in where the schedule starts, not in the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from kinema.dit.transformer import Conditioning
from kinema.flow.guidance import cfg_combine
from kinema.flow.paths import interpolate
from kinema.flow.samplers import SAMPLERS
from kinema.flow.timesteps import sampling_schedule
from kinema.runtime import Runtime


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """[B, *shape] with sample i drawn from its own seed, so a batch equals the samples one by one."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def guided_velocity(model: nn.Module, cond: Conditioning, uncond: Conditioning, guidance: float):
    """velocity_fn(x, t) for the samplers: one batched call for conditional + unconditional.
    Given frames (cond.held) are clean, at time 0, with velocity 0."""
    frames = cond.held

    def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device)
        if frames is not None:
            x, tt = frames.clamp(x), frames.times(tt)  # tt [B, t]
        if guidance == 1.0:
            v = model(x, tt, cond)
        else:
            v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([tt, tt]), Conditioning.cat([cond, uncond])).chunk(2)
            v = cfg_combine(v_cond, v_uncond, guidance)
        return v if frames is None else torch.where(frames.mask(v), torch.zeros((), dtype=v.dtype, device=v.device), v)

    return velocity_fn


def partial_schedule(steps: int, shift: float, strength: float) -> torch.Tensor:
    """The sampling schedule from t = `strength` down to 0 (video-to-video, SDEdit): the times of
    the full `steps` schedule below `strength`, after `strength` itself. 1 is the whole schedule;
    0 is [0], no step at all."""
    full = sampling_schedule(steps, shift)
    return torch.cat([torch.tensor([float(strength)]), full[full < strength]])


@torch.no_grad()
def sample_latents(model: nn.Module, cond: Conditioning, uncond: Conditioning, noise: torch.Tensor, *,
                   steps: int, guidance: float, sampler: str = "euler", shift: float = 1.0,
                   runtime: Runtime, start: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
    """noise: [B, C, t, h, w] at t = 1 -> normalised latents at t = 0 (same shape), on noise's device.
    `start` (video-to-video): clean latents noised to t = `strength` on the flow's path,
    (1 - s) start + s noise, and denoised from there. `cond.frames` (and uncond's, the same):
    given latent frames, held at their clean values from the first step to the last."""
    ts = sampling_schedule(steps, shift)
    x = noise
    if start is not None:
        ts = partial_schedule(steps, shift, strength)
        x = interpolate(start.to(noise), noise, torch.full((noise.shape[0],), float(strength), device=noise.device))
    if cond.held is not None:
        x = cond.held.clamp(x)
    with runtime.autocast():
        out = SAMPLERS[sampler](guided_velocity(model, cond, uncond, guidance), x, ts)
    return out.float()
