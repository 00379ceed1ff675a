"""The precision policy: compute in bf16 under autocast, keep weights, RoPE, modulation and losses
in fp32 (those modules cast explicitly)."""

from __future__ import annotations

import contextlib

import torch

from kinema.errors import KinemaError

PRECISIONS = ("bf16", "fp32")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise KinemaError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
