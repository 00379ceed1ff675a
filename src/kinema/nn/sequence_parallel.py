"""Ulysses sequence parallelism (DeepSpeed-Ulysses): attention over a sequence split across processes.

Each of P processes holds L / P tokens (its contiguous share) of every head. One all-to-all trades
tokens for heads, so each process holds all L tokens of H / P heads and runs ordinary attention on
them (kinema.nn.attention, masks and all); a second all-to-all trades back. The result is the
attention of the whole sequence, each process keeping its own tokens' outputs.

When H does not divide by P the heads cannot be split: `sequence_attention` says so once in a
warning and falls back to gathering every process's keys and values (more memory, the same
result).

MM-DiT's joint attention over [text; video] (`joint_attention`): every process keeps all Lt text
tokens (few, and the text stream runs whole on every process) and its share of the video tokens.
The video tokens trade places with heads as above; each process takes its H / P heads of the text
beside them, attends over the whole [text; video] sequence, sends the video outputs back and
gathers the text outputs of every head.

Shapes: q, k, v [B, H, L / P, Dh] (this process's tokens); mask None, [B, 1, 1, L] or
[B, 1, L, L] over the whole sequence; out [B, L / P, H * Dh].
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist

from kinema.nn import kv_cache
from kinema.nn.attention import attention

_GROUP = None  # the process group of the active `scope`, None outside one


@contextmanager
def scope(group=None):
    """Inside: a denoiser's token sequence is split over the processes of `group` (default: all),
    and its self-attention runs as sequence_attention (kinema.dit.transformer reads `group()`)."""
    global _GROUP
    before, _GROUP = _GROUP, group or dist.group.WORLD
    try:
        yield
    finally:
        _GROUP = before


@contextmanager
def off():
    """Suspend an active scope (e.g. to sample on one process while training runs split)."""
    global _GROUP
    before, _GROUP = _GROUP, None
    try:
        yield
    finally:
        _GROUP = before


def group():
    return _GROUP


def size() -> int:
    """Processes that split the sequence (1 outside a scope)."""
    return dist.get_world_size(_GROUP) if _GROUP is not None else 1


def local_tokens(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """This process's contiguous share of the tokens along `dim`."""
    p, r = dist.get_world_size(_GROUP), dist.get_rank(_GROUP)
    if x.shape[dim] % p:
        raise ValueError(f"{x.shape[dim]} tokens do not split over {p} processes; use a token grid divisible by {p}")
    return x.chunk(p, dim=dim)[r]


def gather_tokens(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Every process's tokens, in order (differentiable: the backward sums what each process's loss
    sends to this process's tokens)."""
    return _gather(x, _GROUP, dim)


class _AllGather(torch.autograd.Function):
    """All processes' x concatenated along `dim`; the backward sums the gradient over the processes
    and keeps this process's part. (torch.distributed.nn.functional.all_gather's backward gave
    wrong gradients here on gloo: tests/test_dist.py checks the gradients through this one.)"""

    @staticmethod
    def forward(ctx, x, dim: int, group):
        ctx.args = (dim, group)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        dim, group = ctx.args
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=group)
        return grad.chunk(dist.get_world_size(group), dim=dim)[dist.get_rank(group)], None, None


def _exchange(x: torch.Tensor, scatter: int, gather: int, group=None) -> torch.Tensor:
    p = dist.get_world_size(group)
    parts = [c.contiguous() for c in x.chunk(p, dim=scatter)]
    out = [torch.empty_like(parts[0]) for _ in range(p)]
    dist.all_to_all(out, parts, group=group)
    return torch.cat(out, dim=gather)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter: int, gather: int, group):
        ctx.args = (scatter, gather, group)
        return _exchange(x, scatter, gather, group)

    @staticmethod
    def backward(ctx, grad):
        scatter, gather, group = ctx.args
        return _exchange(grad, gather, scatter, group), None, None, None


def _all_to_all(x: torch.Tensor, scatter: int, gather: int, group=None) -> torch.Tensor:
    """Split x along `scatter` into P parts, send part i to process i, and concatenate what comes
    back along `gather` (differentiable: the backward sends the gradients back the same way)."""
    return _AllToAll.apply(x, scatter, gather, group)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                      group=None, layout: str = "full", grid=None) -> torch.Tensor:
    """Heads split, whole sequence: [B, H, L/P, Dh] -> all-to-all -> [B, H/P, L, Dh] -> attention
    (in any layout: the whole sequence is there) -> [B, H/P, L, Dh] -> all-to-all -> [B, L/P, H * Dh]."""
    p = dist.get_world_size(group)
    if q.shape[1] % p:
        raise ValueError(f"Ulysses sequence parallelism splits the {q.shape[1]} heads over {p} processes; "
                         f"use a head count divisible by {p} (or the gathered fallback)")
    q, k, v = (_all_to_all(x, scatter=1, gather=2, group=group) for x in (q, k, v))  # [B, H/P, L, Dh]
    if mask is not None and mask.shape[1] > 1:  # a per-head mask follows its heads
        mask = mask.chunk(p, dim=1)[dist.get_rank(group)]
    out = attention(q, k, v, mask, layout=layout, grid=grid)  # [B, L, H/P * Dh]
    b, n, _ = out.shape
    out = out.view(b, n, q.shape[1], -1).transpose(1, 2)  # [B, H/P, L, Dh]
    return _all_to_all(out, scatter=2, gather=1, group=group).transpose(1, 2).reshape(b, n // p, -1)


def gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                       group=None, layout: str = "full", grid=None) -> torch.Tensor:
    """Any head count: gather every process's keys and values, attend with the local queries. A
    spatial or temporal layout gathers the queries too and keeps this process's rows."""
    r = dist.get_rank(group)
    if layout != "full":
        n = q.shape[2]
        out = attention(*(_gather(x, group) for x in (q, k, v)), mask, layout=layout, grid=grid)  # [B, L, H Dh]
        return out[:, r * n:(r + 1) * n]
    k, v = (_gather(x, group) for x in (k, v))  # [B, H, L, Dh]
    if mask is not None and mask.shape[-2] > 1:  # rows of this process's queries
        n = q.shape[2]
        mask = mask[..., r * n:(r + 1) * n, :]
    return attention(q, k, v, mask)


def _gather(x: torch.Tensor, group=None, dim: int = 2) -> torch.Tensor:
    """Every process's x along `dim` (differentiable)."""
    return _AllGather.apply(x, dim, group)


def sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                       group=None, layout: str = "full", grid=None) -> torch.Tensor:
    """Ulysses when the heads divide by the processes, else the gathered fallback (with a warning)."""
    if q.shape[1] % dist.get_world_size(group):
        warnings.warn(f"{q.shape[1]} heads do not split over {dist.get_world_size(group)} processes: sequence "
                      f"parallelism gathers keys and values instead (more memory)", stacklevel=2)
        return gathered_attention(q, k, v, mask, group, layout, grid)
    return ulysses_attention(q, k, v, mask, group, layout, grid)


def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                   layout: str = "full", grid=None) -> torch.Tensor:
    """A model's self-attention over its token sequence: kinema.nn.attention.attention, or, inside a
    `scope`, over the tokens split across processes (this process's share; the mask is over the
    whole sequence). Inside an open kinema.nn.kv_cache, the keys and values go through it."""
    k, v = kv_cache.extend(k, v)
    if _GROUP is None:
        return attention(q, k, v, mask, layout=layout, grid=grid)
    return sequence_attention(q, k, v, mask, _GROUP, layout, grid)


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, text_len: int) -> torch.Tensor:
    """MM-DiT's attention over [text; video]: q, k, v [B, H, Lt + Lv', Dh], the first `text_len`
    tokens text, mask over the whole joint sequence -> [B, Lt + Lv', H * Dh]. Outside a `scope`
    Lv' = Lv and this is `attention`; inside, Lv' = Lv / P, this process's video tokens. Inside an
    open kinema.nn.kv_cache, the keys and values go through it."""
    k, v = kv_cache.extend(k, v, text_len)
    if _GROUP is None:
        return attention(q, k, v, mask)
    p, r = dist.get_world_size(_GROUP), dist.get_rank(_GROUP)
    lt, b, heads = text_len, q.shape[0], q.shape[1]
    if heads % p:
        return _gathered_joint(q, k, v, mask, lt)
    text = [x[:, :, :lt].chunk(p, dim=1)[r] for x in (q, k, v)]  # [B, H/P, Lt, Dh]: this process's heads
    video = [_all_to_all(x[:, :, lt:], scatter=1, gather=2, group=_GROUP) for x in (q, k, v)]  # [B, H/P, Lv, Dh]
    out = attention(*(torch.cat(pair, dim=2) for pair in zip(text, video)), mask)  # [B, Lt + Lv, H/P * Dh]
    out = out.view(b, out.shape[1], heads // p, -1).transpose(1, 2)  # [B, H/P, Lt + Lv, Dh]
    txt = _gather(out[:, :, :lt], _GROUP, dim=1)  # [B, H, Lt, Dh]: every head
    vid = _all_to_all(out[:, :, lt:], scatter=2, gather=1, group=_GROUP)  # [B, H, Lv/P, Dh]
    return torch.cat([txt, vid], dim=2).transpose(1, 2).reshape(b, lt + vid.shape[2], -1)


def _gathered_joint(q, k, v, mask, lt: int) -> torch.Tensor:
    """joint_attention for any head count: every process's video keys and values gathered; the
    text queries (the same on every process) and this process's video queries attend to all."""
    warnings.warn(f"{q.shape[1]} heads do not split over {dist.get_world_size(_GROUP)} processes: sequence "
                  f"parallelism gathers keys and values instead (more memory)", stacklevel=3)
    k, v = (torch.cat([x[:, :, :lt], _gather(x[:, :, lt:], _GROUP)], dim=2) for x in (k, v))
    if mask is not None and mask.shape[-2] > 1:  # rows of the text and of this process's video queries
        n, r = q.shape[2] - lt, dist.get_rank(_GROUP)
        rows = torch.cat([torch.arange(lt), lt + r * n + torch.arange(n)]).to(mask.device)
        mask = mask.index_select(-2, rows)
    return attention(q, k, v, mask)
