"""Cost accounting (SPEC §2, §3): token counts, attention pairs and FLOPs of a denoiser, for any
preset and video size, without building the model.

    token_grid(48, 720, 1280)                   -> (12, 45, 80): N = 43 200 (source table, §10.1)
    attention_pairs("spatial", (T, h, w))        -> T S^2; "temporal" -> S T^2; "full" -> (S T)^2
    dit_flops(cfg, grid, text_tokens=24)        -> {"linear", "attention", "total"} per sample, forward

FLOPs count a multiply-add as 2 and cover the matmuls (every Linear applied per token, and
QK^T plus AV in attention); norms, activations and RoPE are elementwise and left out. A training
step costs about 3x the forward (the backward is two matmuls per forward matmul).
`attention_pairs` is what a pattern costs when its kernel skips what it masks: the layouts
(reshapes) do, while SDPA with a mask still computes every pair of the sequence.
"""

from __future__ import annotations

import math

from kinema.config import DiTConfig

Grid = tuple[int, int, int]


def token_grid(frames: int, height: int, width: int, compression: Grid = (4, 8, 8), patch: Grid = (1, 2, 2),
               causal: bool = False) -> Grid:
    """Video size -> the (t, h, w) token grid after the VAE and patchify.

    causal=False counts frames // ct latent frames, as the source's table does (16 frames -> 4);
    causal=True is kinema's VAE, 1 + (frames - 1) // ct (17 frames -> 5). Height and width are
    padded up to a multiple of compression x patch (1080 -> 1088: 136 latent rows, 68 token rows)."""
    ct, ch, cw = compression
    pt, ph, pw = patch
    t = 1 + (frames - 1) // ct if causal else frames // ct
    return (math.ceil(t / pt), math.ceil(height / (ch * ph)), math.ceil(width / (cw * pw)))


def window_pairs(n: int, size: int) -> int:
    """Pairs (i, j) in 0..n-1 with |i - j| <= size // 2."""
    r = size // 2
    return sum(min(n - 1, i + r) - max(0, i - r) + 1 for i in range(n))


def attention_pairs(pattern: str, grid: Grid, window: Grid | None = None) -> int:
    """(query, key) pairs among the video tokens of one sample under `pattern`."""
    t, h, w = grid
    s = h * w
    if pattern == "full":
        return (s * t) ** 2
    if pattern == "spatial":
        return t * s * s
    if pattern == "temporal":
        return s * t * t
    if pattern == "causal":
        return s * s * t * (t + 1) // 2
    if pattern == "window":
        return math.prod(window_pairs(n, k) for n, k in zip(grid, window))
    raise ValueError(f"unknown attention pattern {pattern!r}")


def factorized_saving(grid: Grid) -> float:
    """Full 3D pairs over factorized 2+1D pairs (one spatial and one temporal pass): S T / (S + T)."""
    full = attention_pairs("full", grid)
    return full / (attention_pairs("spatial", grid) + attention_pairs("temporal", grid))


def joint_pairs(pattern: str, grid: Grid, text_tokens: int, window: Grid | None = None) -> int:
    """Pairs of one MM-DiT block's joint [text; video] attention (kinema.nn.attention.pattern_mask):
    every token sees the text, text sees all video (none under "causal"), video its pattern."""
    n, lt = grid[0] * grid[1] * grid[2], text_tokens
    text_rows = lt * (lt + (0 if pattern == "causal" else n))
    return text_rows + n * lt + attention_pairs(pattern, grid, window)


def dit_flops(cfg: DiTConfig, grid: Grid, text_tokens: int, computed: bool = False) -> dict[str, float]:
    """Forward FLOPs of kinema's MM-DiT for one sample on a token grid with `text_tokens` text tokens.

    computed=True counts the attention SDPA actually runs with a mask (every pair of the joint
    sequence, L^2), which is what `torch.utils.flop_counter` sees; False counts each block's pattern."""
    n, lt = grid[0] * grid[1] * grid[2], text_tokens
    d, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    patch_dim = cfg.in_channels * math.prod(cfg.patch)
    per_stream = 3 * d * d + d * d + 2 * d * hidden  # qkv, proj, MLP in and out (per token)
    single = (3 * d + hidden) * d + (d + hidden) * d  # linear1, linear2 (per token)
    linear = cfg.dual_blocks * per_stream * (n + lt) + cfg.single_blocks * single * (n + lt)
    linear += patch_dim * d * n + cfg.text_dim * d * lt + patch_dim * d * n  # patch in, text in, final out
    # per sample, not per token: timestep and pooled-text MLPs and every AdaLN projection
    linear += 256 * d + d * d + (cfg.pooled_dim or cfg.text_dim) * d + d * d
    linear += cfg.dual_blocks * 2 * (6 * d * d) + cfg.single_blocks * 3 * d * d + 3 * d * d  # final AdaLN: 3D
    pairs = sum((n + lt) ** 2 if computed else joint_pairs(p, grid, lt, cfg.window) for p in cfg.block_patterns())
    if cfg.refiner_blocks:  # HunyuanVideo's token refiner: its own time / pooled MLPs, blocks over the text
        linear += 256 * d + d * d + cfg.text_dim * d + d * d
        linear += cfg.refiner_blocks * ((4 * d * d + 2 * d * 4 * d) * lt + 2 * d * d)  # its MLP is 4x wide
        pairs += cfg.refiner_blocks * lt * lt
    attention = 2 * 2 * pairs * d  # QK^T and AV, H heads x Dh = D
    return {"linear": 2.0 * linear, "attention": float(attention), "total": 2.0 * linear + attention}
