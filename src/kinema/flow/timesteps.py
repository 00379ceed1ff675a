"""Training timestep distributions and the shift (SPEC §5). The shift is one number per recipe
(`dit.timesteps.shift`): larger videos want a larger one, set with the resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kinema.errors import require

KINDS = ("uniform", "logit_normal", "u_shaped")


@dataclass
class TimestepConfig:
    kind: str = "logit_normal"  # one of KINDS
    mean: float = 0.0  # logit-normal location (SD3: 0)
    std: float = 1.0  # logit-normal scale (SD3: 1)
    a: float = 5.0  # U-shaped sharpness: p(u) ~ exp(a u) + exp(-a u) on [-1, 1] (Step-Video Turbo)
    shift: float = 1.0  # > 1 moves mass towards noise (larger videos need more)

    def __post_init__(self):
        require(self.kind in KINDS, "kind", self.kind, f"use one of {', '.join(KINDS)}")
        for name in ("std", "a", "shift"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be above 0")


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): the SD3 / Flux shift for higher token counts."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(cfg: TimestepConfig, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n timesteps in (0, 1) from the configured distribution, then shifted."""
    if cfg.kind == "uniform":
        t = torch.rand(n, generator=generator)
    elif cfg.kind == "logit_normal":
        t = torch.sigmoid(cfg.mean + cfg.std * torch.randn(n, generator=generator))
    elif cfg.kind == "u_shaped":
        # inverse CDF of p(u) ∝ cosh(a u) on [-1, 1]: F(u) = (sinh(a u) + sinh(a)) / (2 sinh(a))
        r = torch.rand(n, generator=generator, dtype=torch.float64)
        u = torch.asinh((2 * r - 1) * math.sinh(cfg.a)) / cfg.a
        t = ((u + 1) / 2).float()
    else:
        raise ValueError(f"unknown timestep distribution {cfg.kind!r}; choose from {KINDS}")
    return shift_timesteps(t, cfg.shift)


def sampling_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Decreasing times 1 -> 0 for an ODE sampler: [steps + 1]."""
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1), shift)
