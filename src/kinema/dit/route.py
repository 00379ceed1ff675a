"""How one forward's attention runs: the masks and layouts of every block, built once per call
(MMDiT.dense_route for a batch of one shape, kinema.dit.packing.packed_route for packed rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Route:
    """How one forward's attention runs (MMDiT.dense_route / packed_route): `joint` MM-DiT's mask
    per pattern over [text; video]; `video` each cross block pattern's (layout, mask); `text_mask`
    the cross-attention's mask; `grid` the token grid the layouts fold (None when packed);
    `time_positions` Latte's time embeddings [Lv, D], added after its first block."""

    joint: dict[str, torch.Tensor | None] = field(default_factory=dict)
    video: dict[str, tuple[str, torch.Tensor | None]] = field(default_factory=dict)
    text_mask: torch.Tensor | None = None
    grid: tuple[int, int, int] | None = None
    time_positions: torch.Tensor | None = None
