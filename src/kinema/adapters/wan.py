"""diffusers `WanTransformer3DModel` (Wan 2.1 / 2.2 text-to-video) -> kinema's cross-attention DiT
(the `wan` layout: cross blocks, shared modulation, MLP text adapter, no pooled text).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))

The two compute the same function (tests/test_adapters.py: 1e-5 in fp32). Differences are only
in packing: kinema fuses q, k, v (and the cross-attention's k, v) into one Linear, patchifies with
a Linear instead of a stride-p Conv3d, and orders each output patch as (channel, pt, ph, pw)
where Wan has (pt, ph, pw, channel).
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource, cross_block
from kinema.config import DiTConfig
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    if c.get("image_dim") or c.get("added_kv_proj_dim"):
        raise KinemaError("Wan image-to-video (image_dim / added_kv_proj_dim) has no kinema preset yet")
    if c.get("qk_norm") != "rms_norm_across_heads" or c.get("freq_dim", 256) != 256 or c.get("eps", 1e-6) != 1e-6:
        raise KinemaError("only Wan with rms_norm_across_heads, freq_dim 256 and eps 1e-6 maps onto kinema")
    if c.get("out_channels", c["in_channels"]) not in (None, c["in_channels"]):
        raise KinemaError("only Wan with out_channels == in_channels maps onto kinema")
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    dim = heads * head_dim
    h = w = 2 * (head_dim // 6)  # Wan's RoPE split: space 1/3 each, time the rest
    return DiTConfig(
        in_channels=c["in_channels"], patch=tuple(c["patch_size"]), dim=dim, heads=heads, dual_blocks=0, single_blocks=0,
        cross_blocks=c["num_layers"], mlp_ratio=c["ffn_dim"] / dim, text_dim=c["text_dim"], qk_norm=True,
        qk_norm_across_heads=True, rope_axes=(head_dim - h - w, h, w), rope_theta=10000.0, text_adapter="mlp",
        pooled=False, modulation="shared", cross_attn_norm=bool(c.get("cross_attn_norm", True)), cross_attn_mask=False)


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "Wan"), {}
    src.conv_patch(out, "patch_embedding")  # a Conv3d
    ce = "condition_embedder"
    src.embedder(out, "time_in", f"{ce}.time_embedder")
    src.linear(out, "time_proj", f"{ce}.time_proj")
    src.linear(out, "text_in.0", f"{ce}.text_embedder.linear_1")
    src.linear(out, "text_in.2", f"{ce}.text_embedder.linear_2")
    for i in range(cfg.cross_blocks):
        a, b = f"blocks.{i}", f"cross.{i}"
        out[f"{b}.mod.table"] = src(f"{a}.scale_shift_table")[0]  # [1, 6, D] -> [6, D]
        cross_block(src, out, a, b, ff="ffn")
        if cfg.cross_attn_norm:
            src.linear(out, f"{b}.norm2", f"{a}.norm2")
    out["final.table"] = src("scale_shift_table")[0]  # [1, 2, D] -> [2, D]: (shift, scale)
    src.patch_out(out, "final.linear", "proj_out", cfg.patch)  # (pt, ph, pw, c) rows -> (c, pt, ph, pw)
    src.check_all_used()
    return out
