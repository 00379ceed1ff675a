"""Exponential moving average of a model's parameters (kept in fp32).

The decay warms up as min(decay, (1 + n) / (10 + n)) over the first updates, so the average is
not dominated by the random initialisation (with a fixed 0.999, 5% of the init would survive
3000 steps).
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.float(), 1.0 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """`state` from disk (on the CPU) goes to the device the model's average lives on."""
        device = next(iter(self.shadow.values())).device if self.shadow else None
        self.shadow = {k: v.float().to(device, copy=True) for k, v in state.items()}
        self.updates = updates
