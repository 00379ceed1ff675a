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


def mlp_macs(dim: int, hidden: int, kind: str = "gelu") -> int:
    """Multiply-adds of one token through the MLP: two matrices, or SwiGLU's three at 2/3 the width."""
    if kind == "swiglu":
        return 3 * dim * (hidden * 2 // 3)
    return 2 * dim * hidden


def dit_flops(cfg: DiTConfig, grid: Grid, text_tokens: int, computed: bool = False) -> dict[str, float]:
    """Forward FLOPs of kinema's denoiser for one sample on a token grid with `text_tokens` text tokens.

    computed=True counts the attention the kernels actually run: SDPA with a mask computes every
    pair (joint MM-DiT attention: L^2; a masked cross block: N^2), while the spatial / temporal
    layouts of cross blocks compute only their own pairs. That is what `torch.utils.flop_counter`
    sees. computed=False counts each block's pattern, what a block-sparse kernel would run."""
    n, lt = grid[0] * grid[1] * grid[2], text_tokens
    d, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    patch_dim = cfg.in_channels * math.prod(cfg.patch)
    dt = cfg.text_width or d  # the text stream's width (AsymmDiT)
    td = cfg.time_dim or d  # the time vector's width, which every AdaLN projection reads
    text_in = {"mlp": cfg.text_dim * dt + dt * dt}.get(cfg.text_adapter, cfg.text_dim * dt)
    linear = 2 * patch_dim * d * n + text_in * lt  # patch in, final out; the text adapter
    linear += cfg.time_freq_dim * td + td * td  # the timestep MLP (per sample)
    if cfg.shape_condition:  # the clip-shape MLP (once per batch; per sample at batch 1)
        linear += 96 * td + td * td
    if cfg.pooled and cfg.pooling == "attention":  # Mochi: q from the mean, k and v over [mean; text], out
        dx = cfg.text_dim
        linear += dx * dx + 2 * dx * dx * (lt + 1) + dx * td
    elif cfg.pooled:
        linear += (cfg.pooled_dim or cfg.text_dim) * td + td * td
    per_stream = 4 * d * d + mlp_macs(d, hidden, cfg.mlp)  # qkv, proj, MLP (per token)
    text_stream = 4 * dt * d + mlp_macs(dt, int(dt * cfg.mlp_ratio), cfg.mlp)  # qkv up to d, proj back to dt, its MLP
    linear += cfg.dual_blocks * (per_stream * n + text_stream * lt + 6 * d * td + 6 * dt * td)  # + both AdaLNs
    if cfg.dual_blocks and not (cfg.single_blocks or cfg.cross_blocks):  # the last text stream is pre-only
        linear -= (text_stream - 3 * dt * d) * lt + 4 * dt * td  # (and its AdaLN: (shift, scale) alone)
    expert = 2 if cfg.expert_adaln else 1  # CogVideoX: a second AdaLN for the text tokens
    if cfg.single_layout == "sequential":  # one stream over [text; video], two AdaLN groups per expert
        linear += cfg.single_blocks * (per_stream * (n + lt) + expert * 6 * d * td)
    else:
        linear += cfg.single_blocks * (((3 * d + hidden) * d + (d + hidden) * d) * (n + lt) + expert * 3 * d * td)
    cross_hidden = round(d * cfg.mlp_ratio)
    crosses = sum(cfg.cross_flags())  # cross blocks that cross-attend (Latte's temporal blocks do not)
    linear += cfg.cross_blocks * (4 * d * d + 2 * d * cross_hidden) * n + crosses * (2 * d * d * n + 2 * d * d * lt)
    if cfg.modulation == "shared":
        linear += 6 * d * d  # one time projection for all blocks; the final layer adds a table
    else:
        linear += cfg.cross_blocks * 6 * d * td + 2 * d * td  # each block's AdaLN, the final (shift, scale)
    patterns = cfg.block_patterns()
    mm = cfg.dual_blocks + cfg.single_blocks
    pairs = sum((n + lt) ** 2 if computed else joint_pairs(p, grid, lt, cfg.window) for p in patterns[:mm])
    for p, cross in zip(patterns[mm:], cfg.cross_flags()):
        full_kernel = computed and p not in ("spatial", "temporal")
        pairs += (n * n if full_kernel else attention_pairs(p, grid, cfg.window)) + n * lt * cross  # self, cross
    attention = 2 * 2 * pairs * d  # QK^T and AV, H heads x Dh = D
    if cfg.pooled and cfg.pooling == "attention":
        attention += 2 * 2 * (lt + 1) * cfg.text_dim
    if cfg.rope_layout == "mochi":  # its angles: positions [Lv, 3] times the learned frequencies [3, H, Dh/2]
        attention += 2 * 3 * n * d // 2
    if cfg.refiner_blocks:  # HunyuanVideo's token refiner at the text width: time / pooled MLPs, blocks over the text
        linear += 256 * dt + dt * dt + cfg.text_dim * dt + dt * dt
        linear += cfg.refiner_blocks * ((4 * dt * dt + 2 * dt * 4 * dt) * lt + 2 * dt * dt)  # its MLP is 4x wide
        attention += 2 * 2 * cfg.refiner_blocks * lt * lt * dt
    return {"linear": 2.0 * linear, "attention": float(attention), "total": 2.0 * linear + attention}
