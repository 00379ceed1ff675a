"""Packing (SPEC §2, NaViT): samples of different latent shapes share the rows of one sequence.

Bucketing batches samples of one shape; packing lays samples of any shapes side by side in rows
of at most `budget` tokens, so a step spends its tokens on samples instead of padding:

    samples i = 0 .. N-1    latent [C, t_i, h_i, w_i] -> L_i video tokens
    rows r = 0 .. R-1       the samples of row r one after another, padded to the longest row, L
    segment ids [R, L]      the sample of each token, -1 on padding

Attention never crosses samples: `kinema.nn.attention.packed_mask` keeps each query inside its own
segment, and each sample keeps its own positions, time and text (`forward_packed`, which
MMDiT.forward calls with a list of latents), so a packed sample's output equals its output alone
(tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kinema.dit.patchify import grid_positions, patch_grid, unpatchify
from kinema.dit.route import Route
from kinema.errors import KinemaError
from kinema.nn import sequence_parallel as sp
from kinema.nn.attention import grid_coords, packed_mask
from kinema.nn.embeddings import sincos_positions
from kinema.nn.modulation import PerToken
from kinema.text.encoders import TextStates


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


def forward_packed(model, xs: list[torch.Tensor], t: torch.Tensor | list[torch.Tensor], cond,
                   budget: int) -> list[torch.Tensor]:
    """`model` (an MMDiT) on samples of different shapes packed into rows of at most `budget`
    video tokens: xs[i] [C, t_i, h_i, w_i], t [N] or t[i] [frames_i], cond (a Conditioning) of N
    samples -> velocities [C, t_i, h_i, w_i], each what `model.forward` gives for that sample alone.
    (model and cond are untyped: kinema.dit.transformer imports this module.)"""
    grids = [patch_grid(tuple(x.shape[1:]), model.cfg.patch) for x in xs]
    split = sp.group() is not None  # sequence parallelism: rows padded to split evenly over the processes
    packing = Packing.plan([g[0] * g[1] * g[2] for g in grids], budget, multiple=sp.size() if split else 1)
    groups: dict[tuple[int, int, int], list[int]] = {}  # samples of one grid run together
    for i, g in enumerate(grids):
        groups.setdefault(g, []).append(i)
    tokens: list[torch.Tensor] = [None] * len(xs)
    for g, idx in groups.items():
        for i, v in zip(idx, model.video_tokens(torch.stack([xs[i] for i in idx]), g)):
            tokens[i] = v
    img = packing.pack(tokens)  # [R, L, D]
    t_clip = torch.stack([ti.amax() for ti in t])  # [N]: each clip's noisiest time, for the text refiner
    # each sample's text sits in its row beside its video; text padding, which no token reads,
    # is left out (but where the cross-attention reads it: Wan's)
    keep = cond.text.mask if model.dual or model.single or model.cfg.cross_attn_mask else torch.ones_like(cond.text.mask)
    text_packing = Packing.alongside(packing.rows, keep.sum(1).tolist())
    txt = text_packing.pack([x[k] for x, k in zip(model.text_tokens(cond.text, t_clip), keep)])  # [R, Lt_row, Dt]
    vec, txt_vec = packed_vectors(model, t, cond.text, groups, packing, text_packing)
    angles = None
    if model.cfg.positions == "rope":
        by_grid = {g: model.rope_angles(g, img.device) for g in groups}  # [Lv, Dh/2] or [H, Lv, Dh/2]
        per_sample = [by_grid[g] for g in grids]
        angles = packing.pack(per_sample, dim=per_sample[0].dim() - 2)
        angles = angles[:, None] if angles.dim() == 3 else angles  # [R, 1 or H, L, Dh/2]
    route = packed_route(model, packing, text_packing, grids, [m[k] for m, k in zip(cond.text.mask, keep)])
    out = packing.unpack(model.run(img, txt, vec, txt_vec, angles, route))
    return [unpatchify(o[None], model.cfg.patch, g)[0].float() for o, g in zip(out, grids)]


def packed_vectors(model, t, text: TextStates, groups: dict[tuple[int, int, int], list[int]], packing: Packing,
                   text_packing: Packing) -> tuple[PerToken, PerToken]:
    """conditioning_vectors of the packed samples, one call per grid (`groups`: grid -> samples), as
    PerTokens over the rows' video tokens and over their text tokens (padding takes value 0: its
    outputs are discarded)."""
    n = len(packing.lengths)
    values, index, text_values, offset = [], [None] * n, [None] * n, 0
    for g, idx in groups.items():
        ti = t[idx] if torch.is_tensor(t) else torch.stack([t[i] for i in idx])  # [n_g] or [n_g, frames]
        v, tv = model.conditioning_vectors(ti, text.index(idx), g)
        v = PerToken.of(v, g[0] * g[1] * g[2])  # values [n_g (x frames), D], index [n_g, L_g]
        for j, i in enumerate(idx):
            index[i], text_values[i] = v.index[j] + offset, tv[j]
        values.append(v.values)
        offset += v.values.shape[0]
    text_index = [torch.full((m,), i, device=values[0].device) for i, m in enumerate(text_packing.lengths)]
    return (PerToken(torch.cat(values), packing.pack(index)),
            PerToken(torch.stack(text_values), text_packing.pack(text_index)))


def packed_route(model, packing: Packing, text_packing: Packing, grids: list[tuple[int, int, int]],
                 text_valid: list[torch.Tensor]) -> "Route":
    """dense_route for packed rows: every pattern a mask inside each sample (packed_mask).
    text_valid[i]: [Lt_i] bool, which of sample i's packed text tokens are not padding."""
    device = text_valid[0].device
    route = Route()
    seg_v = packing.segment_ids(device)  # [R, Lv]
    coords_v = packing.pack([grid_coords(g, device) for g in grids])  # [R, Lv, 3]
    seg_t = text_packing.segment_ids(device)  # [R, Lt_row]
    valid_t = text_packing.pack(text_valid, fill=False)
    if model.dual or model.single:
        seg = torch.cat([seg_t, seg_v], dim=1)
        is_text = torch.cat([torch.ones_like(valid_t), torch.zeros_like(seg_v, dtype=torch.bool)], dim=1)
        valid = torch.cat([valid_t, torch.ones_like(seg_v, dtype=torch.bool)], dim=1)
        coords = torch.cat([coords_v.new_zeros(*seg_t.shape, 3), coords_v], dim=1)
        route.joint = {p: packed_mask(p, seg, coords, is_text, valid, model.cfg.window)
                       for p in set(model.cfg.block_patterns()[:model.cfg.dual_blocks + model.cfg.single_blocks])}
    no_text = torch.zeros_like(seg_v, dtype=torch.bool)
    for p in model.cfg.block_patterns()[model.cfg.dual_blocks + model.cfg.single_blocks:]:
        route.video[p] = ("full", packed_mask(p, seg_v, coords_v, no_text, ~no_text, model.cfg.window))
    keys = valid_t if model.cfg.cross_attn_mask else torch.ones_like(valid_t)
    # each video token reads its own sample's text; padding tokens read all (finite, discarded)
    route.text_mask = ((seg_v[:, :, None] == seg_t[:, None, :]) & keys[:, None, :] | (seg_v < 0)[:, :, None])[:, None]
    if model.latte_time_positions:
        route.time_positions = packing.pack([
            sincos_positions(grid_positions(g), model.cfg.dim, space=False) if g[0] > 1
            else torch.zeros(g[1] * g[2], model.cfg.dim) for g in grids])
    return route

