"""ODE samplers for rectified flow: pure functions with one signature.

    sample(velocity_fn, x, ts) -> x at ts[-1]

`velocity_fn(x, t)` returns dx/dt at scalar time t (guidance already folded in, see guidance.py);
`ts` is a decreasing schedule from 1 (noise) to 0 (data), e.g. `timesteps.sampling_schedule`.
"""

from __future__ import annotations

from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


@torch.no_grad()
def euler(velocity_fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x = x + (t_next - t) * velocity_fn(x, t)
    return x


@torch.no_grad()
def heun(velocity_fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Second order: Euler predictor, trapezoidal corrector (plain Euler on the last step to t = 0)."""
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        v = velocity_fn(x, t)
        x_pred = x + (t_next - t) * v
        if t_next > 0:
            x = x + (t_next - t) * 0.5 * (v + velocity_fn(x_pred, t_next))
        else:
            x = x_pred
    return x


SAMPLERS: dict[str, Callable[[VelocityFn, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euler": euler,
    "heun": heun,
}
