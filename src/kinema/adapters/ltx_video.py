"""diffusers `LTXVideoTransformer3DModel` (LTX-Video) -> kinema's cross-attention DiT (the `ltx`
layout: cross blocks without a norm before the cross-attention, weightless RMSNorm under AdaLN,
shared modulation, QK RMSNorm across heads, LTX's RoPE across the whole width).

    cfg = dit_config(reference.config, rope_interpolation_scale=(8 / 25, 32, 32))
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))

LTX takes packed tokens [B, t h w, C] and the grid size; kinema takes the latent [B, C, t, h, w]
(patch 1: a token is a latent pixel, in the same order). LTX's RoPE positions depend on the
pipeline's `rope_interpolation_scale` (VAE time compression / frame rate, and the spatial
compression twice), which kinema fixes in the config as `rope_scale` = scale x patch / LTX's base
sizes (20 frames, 2048 x 2048). The two compute the same function (tests/test_adapters.py: 1e-5 in
fp32) when each scale is a power of two times LTX's; for other scales kinema multiplies positions
by one factor where LTX multiplies and divides in turn, and since LTX's angles reach 1.6e4 rad,
float32 rounding can then move them by about 1e-4 rad.
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource, cross_block
from kinema.config import DiTConfig
from kinema.errors import KinemaError

BASE = (20, 2048, 2048)  # LTXVideoRotaryPosEmbed's base_num_frames, base_height, base_width


def dit_config(c, rope_interpolation_scale: tuple[float, float, float] = (8 / 25, 32, 32)) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) and the pipeline's RoPE scale -> DiTConfig."""
    c = dict(c)
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    dim = heads * head_dim
    checks = {"patch_size": 1, "patch_size_t": 1, "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
              "norm_eps": 1e-6, "activation_fn": "gelu-approximate", "attention_bias": True, "attention_out_bias": True,
              "cross_attention_dim": dim}
    bad = [f"{k}={c.get(k)!r}" for k, want in checks.items() if c.get(k, want) != want]
    if bad:
        raise KinemaError(f"LTX-Video with {', '.join(bad)} has no kinema preset yet (expected {checks})")
    if c.get("out_channels", c["in_channels"]) not in (None, c["in_channels"]):
        raise KinemaError("only LTX-Video with out_channels == in_channels maps onto kinema")
    return DiTConfig(
        in_channels=c["in_channels"], patch=(1, 1, 1), dim=dim, heads=heads, dual_blocks=0, single_blocks=0,
        cross_blocks=c["num_layers"], mlp_ratio=4.0, text_dim=c["caption_channels"], qk_norm=True,
        qk_norm_across_heads=True, qk_norm_eps=1e-5, block_norm="rms", rope_layout="ltx", rope_theta=10000.0,
        rope_scale=tuple(s / b for s, b in zip(rope_interpolation_scale, BASE)), text_adapter="mlp", pooled=False,
        modulation="shared", cross_attn_norm=False, cross_attn_mask=True)


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "LTX-Video"), {}
    src.linear(out, "patch_in", "proj_in")
    src.embedder(out, "time_in", "time_embed.emb.timestep_embedder")
    src.linear(out, "time_proj", "time_embed.linear")
    src.linear(out, "text_in.0", "caption_projection.linear_1")
    src.linear(out, "text_in.2", "caption_projection.linear_2")
    for i in range(cfg.cross_blocks):
        a, b = f"transformer_blocks.{i}", f"cross.{i}"
        out[f"{b}.mod.table"] = src(f"{a}.scale_shift_table")  # [6, D]: (shift, scale, gate) x 2, as kinema's
        cross_block(src, out, a, b)
    out["final.table"] = src("scale_shift_table")  # [2, D]: (shift, scale)
    src.linear(out, "final.linear", "proj_out")
    src.check_all_used()
    return out
