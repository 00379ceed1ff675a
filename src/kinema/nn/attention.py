"""The one attention entry point (SPEC §3). Every variant is a layout (a reshape) or a mask around
one SDPA call; on GPUs SDPA dispatches to FlashAttention (no mask) or the memory-efficient kernel
(with a mask), on CPU to its fused kernel. A block-sparse mask may go to flex attention instead,
where it measured faster on the device (`kinema.nn.flex`: never on the CPU).

Video tokens are in patchify order, time-major: token i of a (t, h, w) grid sits at frame
i // (h w), row (i // w) % h, column i % w. S = h w tokens per frame, T = t frames, N = S T.

    layout "full"      all N tokens attend to each other                      cost ~ N^2
    layout "spatial"   inside each frame: [B, H, T S, Dh] -> [B T, H, S, Dh]   cost ~ T S^2
    layout "temporal"  along each (h, w) track: -> [B S, H, T, Dh]             cost ~ S T^2
    mask "window"      a (wt, wh, ww) box around each query (local 3D)
    mask "causal"      a query sees its own and earlier frames (autoregressive chunks)
    mask "segment"     packed samples never see each other (segment ids; `packed_mask` joins
                       it with the other patterns, each over a sample's own grid)

Layouts are exact reshapes, so they cost what they save. When text tokens share the sequence
(MM-DiT joint attention) the same patterns are applied as masks over [text; video] instead:
`pattern_mask` builds them, and `tests/test_attention.py` checks that each layout equals its mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from kinema.nn.flex import choose_kernel, flex_attention_masked

Grid = tuple[int, int, int]  # (t, h, w) token grid
PATTERNS = ("full", "spatial", "temporal", "window", "causal")
LAYOUTS = ("full", "spatial", "temporal")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              layout: str = "full", grid: Grid | None = None) -> torch.Tensor:
    """q: [B, H, Lq, Dh], k, v: [B, H, Lk, Dh], mask: bool broadcastable to [B, H, Lq, Lk]
    (True = may attend) -> [B, Lq, H * Dh].

    layout "spatial" / "temporal" (video tokens only, Lq = Lk = t h w of `grid`) attends inside
    each frame / each (h, w) track; a mask then has the folded shape [B * T, H, S, S] / [B * S, H, T, T].
    (A model's self-attention over its token sequence goes through
    kinema.nn.sequence_parallel.self_attention, which calls this one unless the tokens are split.)"""
    if layout == "full":
        if choose_kernel(q, k, v, mask) == "flex":  # a block-sparse mask, where flex measured faster
            out = flex_attention_masked(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, Lq, Dh]
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)
    if grid is None or layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} needs a grid and one of {LAYOUTS}")
    t, hh, w = grid
    if layout == "spatial":
        fold, unfold = "b h (t s) d -> (b t) h s d", "(b t) s hd -> b (t s) hd"
    else:
        fold, unfold = "b h (t s) d -> (b s) h t d", "(b s) t hd -> b (t s) hd"
    q, k, v = (rearrange(x, fold, t=t, s=hh * w) for x in (q, k, v))
    return rearrange(attention(q, k, v, mask), unfold, t=t, s=hh * w)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid: [B, Lk] bool (True on real tokens) -> [B, 1, 1, Lk] for `attention`."""
    return valid[:, None, None, :]


def grid_coords(grid: Grid, device=None) -> torch.Tensor:
    """[N, 3] integer (frame, row, column) of each video token, in patchify order."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def video_mask(pattern: str, grid: Grid, window: Grid | None = None, device=None, past: int = 0) -> torch.Tensor | None:
    """[N, past * S + N] bool (query, key) for one pattern over video tokens; None for "full" with
    no `past` (no mask). `past`: the keys start with that many earlier frames of S = h w tokens
    (a KV cache's context, kinema.nn.kv_cache), and the queries' frames come after them.

    "window" keeps keys with |dt| <= wt // 2, |dh| <= wh // 2 and |dw| <= ww // 2 of the query
    (a box of odd size centred on it; an even size rounds down to the odd size below it)."""
    if pattern == "full" and not past:
        return None
    keys = grid_coords((past + grid[0], *grid[1:]), device)
    queries = keys[past * grid[1] * grid[2]:]
    return offset_mask(pattern, queries[:, None, :] - keys[None, :, :], window)


def offset_mask(pattern: str, d: torch.Tensor, window: Grid | None = None) -> torch.Tensor:
    """d: [..., 3] integer (frame, row, column) offsets query - key -> [...] bool: may the query see the key."""
    if pattern == "full":
        return torch.ones(d.shape[:-1], dtype=torch.bool, device=d.device)
    if pattern == "spatial":
        return d[..., 0] == 0
    if pattern == "temporal":
        return (d[..., 1] == 0) & (d[..., 2] == 0)
    if pattern == "causal":
        return d[..., 0] >= 0
    if pattern == "window":
        if window is None:
            raise ValueError("the window pattern needs a (t, h, w) window size")
        radius = torch.tensor([w // 2 for w in window], device=d.device)
        return (d.abs() <= radius).all(dim=-1)
    raise ValueError(f"unknown attention pattern {pattern!r}; choose from {', '.join(PATTERNS)}")


def packed_mask(pattern: str, segment_ids: torch.Tensor, coords: torch.Tensor, is_text: torch.Tensor,
                valid: torch.Tensor, window: Grid | None = None) -> torch.Tensor:
    """The mask of a packed sequence (kinema.dit.packing): several samples' tokens share each row.
    segment_ids [B, L] (the sample of each token, -1 on padding), coords [B, L, 3] (each video
    token's (frame, row, column) in its own sample's grid), is_text [B, L], valid [B, L] (False on
    text padding) -> [B, 1, L, L]. A query sees keys of its own sample only, and among them what
    `pattern_mask` lets it see: valid text keys always, video keys as `pattern` says (text queries
    see every video key of their sample but under "causal"). Every token sees itself, so no row is
    empty (padding rows see nothing else) and SDPA stays finite."""
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids >= 0)[:, :, None]
    video_key = (~is_text)[:, None, :]
    text_query = is_text[:, :, None]
    by_pattern = offset_mask(pattern, coords[:, :, None, :] - coords[:, None, :, :], window)  # [B, L, L]
    sees = torch.where(video_key, torch.where(text_query, pattern != "causal", by_pattern), valid[:, None, :])
    eye = torch.eye(segment_ids.shape[1], dtype=torch.bool, device=segment_ids.device)
    return ((same & sees) | eye)[:, None]


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """segment_ids: [B, L] int (samples packed into one sequence; -1 = padding) -> [B, 1, L, L]:
    a token sees only tokens of its own segment, and padding sees nothing but itself (so no row is
    empty and SDPA stays finite)."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    pad = segment_ids < 0
    eye = torch.eye(segment_ids.shape[1], dtype=torch.bool, device=segment_ids.device)
    return ((same & ~pad[:, None, :] & ~pad[:, :, None]) | (pad[:, :, None] & eye))[:, None]


def pattern_mask(pattern: str, grid: Grid, text_valid: torch.Tensor, window: Grid | None = None,
                 past: int = 0) -> torch.Tensor:
    """The joint [text; video] mask of an MM-DiT block whose video tokens follow `pattern`:
    text_valid [B, Lt] -> [B, 1, L, L] (L = Lt + N). Every token sees the valid text tokens; a
    video token sees the video tokens its pattern allows; text tokens see every video token,
    except under "causal", where they see none (text read from frame 2 would carry it to frame 0
    in the next block). For "full" use `key_padding_mask` (the same result without an L x L mask).
    `past` (a KV cache's context frames): the keys are [text; past frames; the grid], [B, 1, L, L + past * S]."""
    b, lt = text_valid.shape
    device = text_valid.device
    n = grid[0] * grid[1] * grid[2]
    vv = video_mask(pattern, grid, window, device, past)
    if vv is None:
        vv = torch.ones(n, n, dtype=torch.bool, device=device)
    nk = vv.shape[1]
    video_rows = torch.cat([text_valid[:, None, :].expand(b, n, lt), vv.expand(b, n, nk)], dim=2)  # [B, N, Lt + Nk]
    sees_video = text_valid.new_full((b, nk), pattern != "causal")
    text_rows = torch.cat([text_valid, sees_video], dim=1)[:, None, :].expand(b, lt, lt + nk)
    return torch.cat([text_rows, video_rows], dim=1)[:, None]  # [B, 1, L, Lt + Nk]
