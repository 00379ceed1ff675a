"""AdaLN modulation (named, flux-style). The projection is zero-initialised (AdaLN-Zero): shift =
scale = gate = 0 at init, so every residual branch starts closed and each block is the identity.
Computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kinema.runtime import no_autocast


@dataclass
class ModulationOut:
    shift: torch.Tensor  # [B, 1, D], or [B, L, D] per token
    scale: torch.Tensor  # [B, 1, D]
    gate: torch.Tensor | None  # [B, 1, D]; None from an ungated Modulation


@dataclass
class PerToken:
    """A conditioning vector that differs along the tokens but takes few values (one per frame
    under per-frame times, one per sample in a packed row): `values` [N, D] and `index` [B, L], the
    value each token takes. A projection maps the N values and gathers afterwards, so AdaLN costs
    N rows of matmul, not B L."""

    values: torch.Tensor
    index: torch.Tensor

    def map(self, fn) -> "PerToken":
        return PerToken(fn(self.values), self.index)

    def dense(self) -> torch.Tensor:
        """[B, L, D]"""
        return self.values[self.index]

    @staticmethod
    def of(vec: "torch.Tensor | PerToken", length: int) -> "PerToken":
        """A per-sample vector [B, D] as a PerToken over `length` tokens each."""
        if isinstance(vec, PerToken):
            return vec
        return PerToken(vec, torch.arange(vec.shape[0], device=vec.device)[:, None].expand(-1, length))

    @staticmethod
    def cat(first: "PerToken", second: "PerToken") -> "PerToken":
        """Tokens of `first` then of `second`, along L."""
        index = torch.cat([first.index, second.index + first.values.shape[0]], dim=1)
        return PerToken(torch.cat([first.values, second.values]), index)


Vec = torch.Tensor | PerToken  # [B, D], or per token


def project(vec: Vec, fn, dense: bool = True):
    """fn (a projection of rows) on vec in fp32, outside autocast: on the B rows of a [B, D] vector,
    or on a PerToken's N values, gathered to [B, L, ...] (`dense`) or kept as a PerToken."""
    values = vec.values if isinstance(vec, PerToken) else vec
    with no_autocast(values.device):
        if not isinstance(vec, PerToken):
            return fn(vec.float())
        out = vec.map(lambda v: fn(v.float()))
        return out.dense() if dense else out


class Modulation(nn.Module):
    """vec [B, D] -> `count` ModulationOut groups of [B, 1, D] (e.g. 2: one for attention, one for
    the MLP); a PerToken vec (per-frame times, packed samples) gives groups of [B, L, D]."""

    def __init__(self, dim: int, count: int, cond_dim: int | None = None, gated: bool = True):
        super().__init__()
        self.count, self.dim, self.parts = count, dim, 3 if gated else 2
        # cond_dim: the vector's width, if not dim (AsymmDiT); ungated (the final layer, a pre-only
        # stream: nothing reads a gate there) projects (shift, scale) alone, as the references do
        self.lin = nn.Linear(cond_dim or dim, self.parts * count * dim)
        nn.init.zeros_(self.lin.weight)  # AdaLN-Zero
        nn.init.zeros_(self.lin.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved when an ungated Modulation still had its (unread) gate rows load without them."""
        if self.parts == 2:
            for kind in ("weight", "bias"):
                t = state_dict.get(f"{prefix}lin.{kind}")
                if t is not None and t.shape[0] == 3 * self.count * self.dim:
                    state_dict[f"{prefix}lin.{kind}"] = t.unflatten(0, (self.count, 3, -1))[:, :2].flatten(0, 2)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, vec: Vec) -> list[ModulationOut]:
        out = project(vec, lambda v: self.lin(F.silu(v)))  # [B, 3 * count * D] or [B, L, 3 * count * D]
        if out.dim() == 2:
            out = out[:, None, :]
        k = self.parts
        chunks = out.chunk(k * self.count, dim=-1)
        return [ModulationOut(*chunks[k * i: k * i + k], *([None] if k == 2 else [])) for i in range(self.count)]


def joint_modulation(txt: ModulationOut, img: ModulationOut, text_len: int, length: int) -> ModulationOut:
    """Expert AdaLN (CogVideoX) over a joint [text; video] sequence of `length` tokens: the first
    `text_len` tokens take `txt`'s (shift, scale, gate), the others `img`'s -> [B, length, D] each."""
    return ModulationOut(*(torch.cat([a.expand(-1, text_len, -1), b.expand(-1, length - text_len, -1)], dim=1)
                           for a, b in ((txt.shift, img.shift), (txt.scale, img.scale), (txt.gate, img.gate))))


def modulate(x: torch.Tensor, mod: ModulationOut) -> torch.Tensor:
    """x: [B, L, D] (already normalised) -> x * (1 + scale) + shift"""
    return (x.float() * (1 + mod.scale) + mod.shift).to(x.dtype)


class ModulationTable(nn.Module):
    """Wan's shared modulation: the model projects the time vector once to 3 * count * D (`shared`),
    and each block adds its own learned table [3 * count, D]. Zero-initialised, as the shared
    projection is, so every block starts as the identity.

    shared [B, 3 * count * D] (or PerToken) -> `count` ModulationOut groups."""

    def __init__(self, dim: int, count: int):
        super().__init__()
        self.count = count
        self.table = nn.Parameter(torch.zeros(3 * count, dim))

    def forward(self, shared: Vec) -> list[ModulationOut]:
        out = project(shared, lambda v: v.unflatten(-1, (3 * self.count, -1)) + self.table)  # [B, (L,) 3c, D]
        chunks = [c[:, None] if c.dim() == 2 else c for c in out.unbind(-2)]
        return [ModulationOut(*chunks[3 * i: 3 * i + 3]) for i in range(self.count)]
