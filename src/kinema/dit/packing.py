"""Packing (SPEC §2, NaViT): samples of different latent shapes share the rows of one sequence.

Bucketing batches samples of one shape; packing lays samples of any shapes side by side in rows
of at most `budget` tokens, so a step spends its tokens on samples instead of padding:

    samples i = 0 .. N-1    latent [C, t_i, h_i, w_i] -> L_i video tokens
    rows r = 0 .. R-1       the samples of row r one after another, padded to the longest row, L
    segment ids [R, L]      the sample of each token, -1 on padding

Attention never crosses samples: `kinema.nn.attention.packed_mask` keeps each query inside its own
segment, and each sample keeps its own positions, time and text (MMDiT.forward_packed), so a packed
sample's output equals its output alone (tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kinema.errors import KinemaError


@dataclass(frozen=True)
class Packing:
    """Which samples share each row. `plan` fills rows first-fit, longest sample first."""

    rows: tuple[tuple[int, ...], ...]  # the samples of each row, in the order they sit
    lengths: tuple[int, ...]  # tokens of each sample
    length: int  # tokens per row: the longest row

    @classmethod
    def plan(cls, lengths: list[int], budget: int, multiple: int = 1) -> "Packing":
        """First-fit decreasing: each sample, longest first, goes into the first row with room. The
        row length is rounded up to a `multiple` (sequence parallelism splits rows evenly)."""
        lengths = tuple(int(n) for n in lengths)
        if max(lengths) > budget:
            raise KinemaError(f"a sample of {max(lengths)} tokens does not fit the packing budget of {budget} tokens "
                              f"(dit.pack_tokens): raise the budget to at least {max(lengths)}")
        rows: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
            r = next((r for r, left in enumerate(room) if left >= lengths[i]), None)
            if r is None:
                rows.append([])
                room.append(budget)
                r = len(rows) - 1
            rows[r].append(i)
            room[r] -= lengths[i]
        used = max(budget - left for left in room)
        return cls(tuple(tuple(r) for r in rows), lengths, -(-used // multiple) * multiple)

    @classmethod
    def alongside(cls, rows: tuple[tuple[int, ...], ...], lengths: list[int]) -> "Packing":
        """Other tokens of the same samples in the same rows (each sample's text beside its video)."""
        lengths = tuple(int(n) for n in lengths)
        return cls(rows, lengths, max(sum(lengths[i] for i in row) for row in rows))

    def useful(self) -> float:
        """The share of the packed tokens that belong to samples (not padding)."""
        return sum(self.lengths) / (len(self.rows) * self.length)

    def segment_ids(self, device=None) -> torch.Tensor:
        """[R, L] long: the sample index of each token, -1 on padding."""
        return self.pack([torch.full((self.lengths[i],), i, device=device) for i in range(len(self.lengths))], fill=-1)

    def pack(self, items: list[torch.Tensor], dim: int = 0, fill: float = 0) -> torch.Tensor:
        """items[i]: [..., L_i, ...] with the tokens along `dim` -> [R, ..., L, ...]: each row's samples
        concatenated along `dim` and padded with `fill` to L."""
        rows = []
        for row in self.rows:
            x = torch.cat([items[i] for i in row], dim=dim)
            pad = list(x.shape)
            pad[dim] = self.length - x.shape[dim]
            rows.append(torch.cat([x, x.new_full(pad, fill)], dim=dim))
        return torch.stack(rows)

    def unpack(self, x: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
        """The inverse of `pack`: [R, ..., L, ...] -> items[i] [..., L_i, ...] (`dim` counts without R)."""
        out: list[torch.Tensor | None] = [None] * len(self.lengths)
        for r, row in enumerate(self.rows):
            start = 0
            for i in row:
                out[i] = x[r].narrow(dim, start, self.lengths[i])
                start += self.lengths[i]
        return out
