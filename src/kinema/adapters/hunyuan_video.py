"""diffusers `HunyuanVideoTransformer3DModel` -> kinema's MM-DiT (the `hunyuan` layout).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))

The two compute the same function (tests/test_adapters.py: 1e-5 in fp32). Differences are only
in packing: kinema fuses q, k, v (and, in single-stream blocks, the MLP input) into one Linear,
patchifies with a Linear instead of a stride-p Conv3d, orders its final AdaLN as (shift, scale,
gate) where diffusers has (scale, shift), and puts text before video in the joint sequence
(attention does not depend on token order).
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource
from kinema.config import DiTConfig
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    if c.get("guidance_embeds"):
        raise KinemaError("guidance-distilled HunyuanVideo (guidance_embeds=True) has no kinema preset yet")
    if c.get("image_condition_type"):
        raise KinemaError(f"HunyuanVideo image conditioning {c['image_condition_type']!r} has no kinema preset yet")
    if c.get("qk_norm", "rms_norm") != "rms_norm" or c.get("out_channels", c["in_channels"]) not in (None, c["in_channels"]):
        raise KinemaError("only HunyuanVideo with rms_norm QK norm and out_channels == in_channels maps onto kinema")
    return DiTConfig(
        in_channels=c["in_channels"], patch=(c["patch_size_t"], c["patch_size"], c["patch_size"]),
        dim=c["num_attention_heads"] * c["attention_head_dim"], heads=c["num_attention_heads"],
        dual_blocks=c["num_layers"], single_blocks=c["num_single_layers"], mlp_ratio=float(c["mlp_ratio"]),
        text_dim=c["text_embed_dim"], qk_norm=True, rope_axes=tuple(c["rope_axes_dim"]), rope_theta=float(c["rope_theta"]),
        text_adapter="linear", refiner_blocks=c["num_refiner_layers"], pooled_dim=c["pooled_projection_dim"])


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "HunyuanVideo"), {}
    src.conv_patch(out, "x_embedder.proj")  # a Conv3d
    src.linear(out, "text_in.0", "context_embedder.proj_in")
    for mine, theirs in (("time_in", "time_text_embed.timestep_embedder"), ("pooled_in", "time_text_embed.text_embedder")):
        src.embedder(out, mine, theirs)
    ctx = "context_embedder"
    if not cfg.refiner_blocks:  # with no refiner layers diffusers still builds their time / text MLPs, unused
        src.used.update(k for k in state if k.startswith(f"{ctx}.time_text_embed."))
    else:
        for mine, theirs in (("time_in", "timestep_embedder"), ("pooled_in", "text_embedder")):
            src.embedder(out, f"refiner.{mine}", f"{ctx}.time_text_embed.{theirs}")
        for i in range(cfg.refiner_blocks):
            a, b = f"{ctx}.token_refiner.refiner_blocks.{i}", f"refiner.blocks.{i}"
            for norm in ("norm1", "norm2"):
                src.linear(out, f"{b}.{norm}", f"{a}.{norm}")
            src.linear(out, f"{b}.qkv", f"{a}.attn.to_q", f"{a}.attn.to_k", f"{a}.attn.to_v")
            src.linear(out, f"{b}.proj", f"{a}.attn.to_out.0")
            src.feed_forward(out, f"{b}.mlp", f"{a}.ff")
            src.linear(out, f"{b}.gates", f"{a}.norm_out.linear")
    for i in range(cfg.dual_blocks):
        a, b = f"transformer_blocks.{i}", f"dual.{i}"
        for stream, norm1, q, k, v, qn, kn, proj, ff in (
                ("img", "norm1", "to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out.0", "ff"),
                ("txt", "norm1_context", "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k",
                 "to_add_out", "ff_context")):
            src.linear(out, f"{b}.{stream}.mod.lin", f"{a}.{norm1}.linear")
            src.linear(out, f"{b}.{stream}.qkv", f"{a}.attn.{q}", f"{a}.attn.{k}", f"{a}.attn.{v}")
            out[f"{b}.{stream}.qk_norm.q.weight"] = src(f"{a}.attn.{qn}.weight")
            out[f"{b}.{stream}.qk_norm.k.weight"] = src(f"{a}.attn.{kn}.weight")
            src.linear(out, f"{b}.{stream}.proj", f"{a}.attn.{proj}")
            src.feed_forward(out, f"{b}.{stream}.mlp", f"{a}.{ff}")
    for i in range(cfg.single_blocks):
        a, b = f"single_transformer_blocks.{i}", f"single.{i}"
        src.linear(out, f"{b}.mod.lin", f"{a}.norm.linear")
        src.linear(out, f"{b}.linear1", f"{a}.attn.to_q", f"{a}.attn.to_k", f"{a}.attn.to_v", f"{a}.proj_mlp")
        out[f"{b}.qk_norm.q.weight"] = src(f"{a}.attn.norm_q.weight")
        out[f"{b}.qk_norm.k.weight"] = src(f"{a}.attn.norm_k.weight")
        src.linear(out, f"{b}.linear2", f"{a}.proj_out")
    src.scale_shift(out, "final.mod.lin", "norm_out.linear")
    src.linear(out, "final.linear", "proj_out")
    src.check_all_used()
    return out
