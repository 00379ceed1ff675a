"""diffusers `SD3Transformer2DModel` (Stable Diffusion 3 / 3.5 Medium-style MM-DiT) -> kinema's
dual-stream MM-DiT on one frame (the `sd3` layout: dual blocks only, absolute 2D sin-cos positions
centred in a fixed grid, no RoPE).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))
    velocity = model(latent[:, :, None], t, cond)[:, :, 0]   # an image is a one-frame video

The two compute the same function (tests/test_adapters.py: 1e-5 in fp32). Differences are only
in packing: kinema fuses q, k, v into one Linear, patchifies with a Linear instead of a stride-p
Conv2d, orders the final (and the last text stream's) AdaLN as (shift, scale, gate) where
diffusers has (scale, shift), orders each output patch as (channel, ph, pw) where SD3 has
(ph, pw, channel), and puts text before video in the joint sequence.

SD3 attends to every text token, padding included: give it a text mask of ones.
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource
from kinema.config import DiTConfig
from kinema.dit.transformer import sincos_table
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    if c.get("dual_attention_layers"):
        raise KinemaError("SD3.5's dual attention layers (MMDiT-X, dual_attention_layers) have no kinema preset yet")
    if c.get("qk_norm") not in (None, "rms_norm"):
        raise KinemaError(f"SD3 qk_norm {c['qk_norm']!r}: only None and 'rms_norm' map onto kinema")
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    dim = heads * head_dim
    if c["caption_projection_dim"] != dim:
        raise KinemaError(f"SD3 caption_projection_dim {c['caption_projection_dim']} must equal the width {dim}")
    if c.get("out_channels", c["in_channels"]) not in (None, c["in_channels"]):
        raise KinemaError("only SD3 with out_channels == in_channels maps onto kinema")
    p, grid = c["patch_size"], c["pos_embed_max_size"]
    return DiTConfig(
        in_channels=c["in_channels"], patch=(1, p, p), dim=dim, heads=heads, dual_blocks=c["num_layers"], single_blocks=0,
        mlp_ratio=4.0, text_dim=c["joint_attention_dim"], qk_norm=c.get("qk_norm") == "rms_norm", text_adapter="linear",
        pooled_dim=c["pooled_projection_dim"], positions="sincos-2d", sincos_grid=grid,
        sincos_scale=(c["sample_size"] // p) / grid)


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "SD3"), {}
    src.conv_patch(out, "pos_embed.proj")  # a Conv2d
    if "pos_embed.pos_embed" in state:  # a fixed table, not weights: check that kinema computes the same one
        n = cfg.sincos_grid
        mine = sincos_table(cfg, (1, n, n))
        if not torch.allclose(src("pos_embed.pos_embed")[0].float(), mine, atol=1e-5):
            raise KinemaError("the SD3 checkpoint's pos_embed differs from kinema's sin-cos positions for its config")
    src.linear(out, "text_in.0", "context_embedder")
    for mine, theirs in (("time_in", "timestep_embedder"), ("pooled_in", "text_embedder")):
        src.embedder(out, mine, f"time_text_embed.{theirs}")
    for i in range(cfg.dual_blocks):
        a, b = f"transformer_blocks.{i}", f"dual.{i}"
        pre_only = i == cfg.dual_blocks - 1  # SD3's last block reads the text but writes none
        for stream, norm1, q, k, v, qn, kn, proj, ff in (
                ("img", "norm1", "to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out.0", "ff"),
                ("txt", "norm1_context", "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k",
                 "to_add_out", "ff_context")):
            if stream == "txt" and pre_only:
                src.scale_shift(out, f"{b}.txt.mod.lin", f"{a}.{norm1}.linear")
            else:
                src.linear(out, f"{b}.{stream}.mod.lin", f"{a}.{norm1}.linear")
            src.linear(out, f"{b}.{stream}.qkv", f"{a}.attn.{q}", f"{a}.attn.{k}", f"{a}.attn.{v}")
            if cfg.qk_norm:
                out[f"{b}.{stream}.qk_norm.q.weight"] = src(f"{a}.attn.{qn}.weight")
                out[f"{b}.{stream}.qk_norm.k.weight"] = src(f"{a}.attn.{kn}.weight")
            if not (stream == "txt" and pre_only):
                src.linear(out, f"{b}.{stream}.proj", f"{a}.attn.{proj}")
                src.feed_forward(out, f"{b}.{stream}.mlp", f"{a}.{ff}")
    src.scale_shift(out, "final.mod.lin", "norm_out.linear")
    src.patch_out(out, "final.linear", "proj_out", cfg.patch)  # (pt, ph, pw, c) rows -> (c, pt, ph, pw)
    src.check_all_used()
    return out
