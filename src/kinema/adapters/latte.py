"""diffusers `LatteTransformer3DModel` (Latte-1) -> kinema's cross-attention DiT (the `latte`
layout: spatial and temporal blocks alternating, only the spatial ones cross-attending to the
text; shared modulation; 2D sin-cos positions at the input and 1D temporal ones after the first
spatial block).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))

Latte's spatial block i is kinema's cross block 2 i and its temporal block i is block 2 i + 1.
The two compute the same function (tests/test_adapters.py: 1e-5 in fp32) on latents of the
config's `sample_size`. On other sizes Latte stretches its sin-cos grid back to that size
(position x sample size / latent size), where kinema keeps one scale in `sincos_scale`.
Latte's pipeline passes no text mask (and its model cannot take one: the mask is not repeated
over the frames), so the text's padding is attended, and kinema's config does the same.
Packing differences: q, k, v fused into one Linear, patches by a Linear instead of a Conv2d,
each output patch ordered (channel, ph, pw) where Latte has (ph, pw, channel).
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource
from kinema.config import DiTConfig
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    dim = heads * head_dim
    checks = {"norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
              "activation_fn": "gelu-approximate", "cross_attention_dim": dim}
    bad = [f"{k}={c.get(k)!r}" for k, want in checks.items() if c.get(k) != want]
    if bad:
        raise KinemaError(f"Latte with {', '.join(bad)} has no kinema preset yet (expected {checks})")
    if c.get("out_channels", c["in_channels"]) not in (None, c["in_channels"]):
        raise KinemaError("only Latte with out_channels == in_channels (no learned sigma) maps onto kinema")
    p = c["patch_size"]
    return DiTConfig(
        in_channels=c["in_channels"], patch=(1, p, p), dim=dim, heads=heads, dual_blocks=0, single_blocks=0,
        cross_blocks=2 * c["num_layers"], mlp_ratio=4.0, text_dim=c["caption_channels"], qk_norm=False,
        attention=("spatial", "temporal"), cross_attention=(True, False), positions="sincos", sincos_time_at=1,
        sincos_scale=1.0 / max(c["sample_size"] // 64, 1), text_adapter="mlp", pooled=False, modulation="shared",
        cross_attn_norm=False, cross_attn_mask=False)  # Latte's pipeline attends to the text's padding too


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "Latte"), {}
    src.conv_patch(out, "pos_embed.proj")  # a Conv2d per frame
    src.embedder(out, "time_in", "adaln_single.emb.timestep_embedder")
    src.linear(out, "time_proj", "adaln_single.linear")
    src.linear(out, "text_in.0", "caption_projection.linear_1")
    src.linear(out, "text_in.2", "caption_projection.linear_2")

    def attn(dst: str, a: str, *names: str) -> None:  # q / k / v may have no bias (attention_bias=False)
        out[f"{dst}.weight"] = src(*(f"{a}.{n}.weight" for n in names))
        biases = [f"{a}.{n}.bias" for n in names]
        out[f"{dst}.bias"] = src(*biases) if biases[0] in state else out[f"{dst}.weight"].new_zeros(out[f"{dst}.weight"].shape[0])

    for i in range(cfg.cross_blocks):
        a = f"{'transformer_blocks' if i % 2 == 0 else 'temporal_transformer_blocks'}.{i // 2}"
        b = f"cross.{i}"
        out[f"{b}.mod.table"] = src(f"{a}.scale_shift_table")  # [6, D]: (shift, scale, gate) x 2, as kinema's
        attn(f"{b}.qkv", f"{a}.attn1", "to_q", "to_k", "to_v")
        src.linear(out, f"{b}.proj", f"{a}.attn1.to_out.0")
        if i % 2 == 0:
            attn(f"{b}.cross_q", f"{a}.attn2", "to_q")
            attn(f"{b}.cross_kv", f"{a}.attn2", "to_k", "to_v")
            src.linear(out, f"{b}.cross_proj", f"{a}.attn2.to_out.0")
        src.feed_forward(out, f"{b}.mlp", f"{a}.ff")
    out["final.table"] = src("scale_shift_table")  # [2, D]: (shift, scale)
    src.patch_out(out, "final.linear", "proj_out", cfg.patch)  # (pt, ph, pw, c) rows -> (c, pt, ph, pw)
    src.check_all_used()
    return out
