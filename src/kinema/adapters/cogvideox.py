"""diffusers `CogVideoXTransformer3DModel` (CogVideoX 1.0: 2B / 5B text-to-video) -> kinema's
MM-DiT with sequential single-stream blocks (the `cogvideox` layout).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))
    velocity = model(latent, t, cond)    # latent [B, C, T, H, W]; diffusers takes [B, T, C, H, W]

The two compute the same function (tests/test_adapters.py: 1e-5 in fp32). CogVideoX's parts are
kinema's `single_layout: sequential` with `expert_adaln`, `block_norm: layer-affine`,
`qk_norm_type: layer`, `positions: sincos-3d`, `time_dim` / `time_freq_dim` and
`final_norm: cogvideox`. Differences are only in packing: kinema fuses q, k, v into one Linear,
patchifies with a Linear instead of a stride-p Conv2d, and holds each block's two AdaLN Linears
(norm1: attention, norm2: MLP; each text and video) as one Modulation per stream.

CogVideoX attends to every text token, padding included, and adds its positions to text padded
to `max_text_seq_length`: give it text of that length and a mask of ones. CogVideoX 1.5 (RoPE,
temporal patches, the image-to-video offset embedding) has no kinema preset yet.
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource
from kinema.config import DiTConfig
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    unsupported = {"use_rotary_positional_embeddings": False, "use_learned_positional_embeddings": False,
                   "patch_size_t": None, "ofs_embed_dim": None, "flip_sin_to_cos": True, "freq_shift": 0,
                   "activation_fn": "gelu-approximate", "timestep_activation_fn": "silu",
                   "norm_elementwise_affine": True, "patch_bias": True}
    bad = [f"{k}={c[k]!r}" for k, v in unsupported.items() if k in c and c[k] != v]
    if bad:
        raise KinemaError(f"CogVideoX with {', '.join(bad)} (CogVideoX 1.5 or a variant) has no kinema preset yet")
    if c.get("out_channels") not in (None, c["in_channels"]):
        raise KinemaError("only CogVideoX with out_channels == in_channels maps onto kinema")
    heads, p = c["num_attention_heads"], c["patch_size"]
    dim = heads * c["attention_head_dim"]
    return DiTConfig(
        in_channels=c["in_channels"], patch=(1, p, p), dim=dim, heads=heads, dual_blocks=0, single_blocks=c["num_layers"],
        mlp_ratio=4.0, text_dim=c["text_embed_dim"], text_adapter="linear", pooled=False, qk_norm=True,
        qk_norm_type="layer", qkv_bias=c.get("attention_bias", True), block_norm="layer-affine", norm_eps=c["norm_eps"],
        single_layout="sequential", expert_adaln=True, positions="sincos-3d",
        sincos_scale=1.0 / c["spatial_interpolation_scale"], sincos_time_scale=1.0 / c["temporal_interpolation_scale"],
        time_freq_dim=dim, time_dim=c["time_embed_dim"], final_norm="cogvideox")


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "CogVideoX"), {}
    src.conv_patch(out, "patch_embed.proj")  # a Conv2d per frame
    src.linear(out, "text_in.0", "patch_embed.text_proj")
    src.embedder(out, "time_in", "time_embedding")
    bias = cfg.qkv_bias
    for i in range(cfg.single_blocks):
        a, b = f"transformer_blocks.{i}", f"single.{i}"
        for kind in ("weight", "bias"):  # norm1 / norm2: (shift, scale, gate) for video, then for text
            n1, n2 = (src(f"{a}.{n}.linear.{kind}").chunk(2) for n in ("norm1", "norm2"))
            out[f"{b}.stream.mod.lin.{kind}"] = torch.cat([n1[0], n2[0]])
            out[f"{b}.mod_txt.lin.{kind}"] = torch.cat([n1[1], n2[1]])
        src.linear(out, f"{b}.stream.norm1", f"{a}.norm1.norm")
        src.linear(out, f"{b}.stream.norm2", f"{a}.norm2.norm")
        src.linear(out, f"{b}.stream.qkv", f"{a}.attn1.to_q", f"{a}.attn1.to_k", f"{a}.attn1.to_v", bias=bias)
        src.linear(out, f"{b}.stream.qk_norm.q", f"{a}.attn1.norm_q")
        src.linear(out, f"{b}.stream.qk_norm.k", f"{a}.attn1.norm_k")
        src.linear(out, f"{b}.stream.proj", f"{a}.attn1.to_out.0")
        src.feed_forward(out, f"{b}.stream.mlp", f"{a}.ff")
    src.linear(out, "final.pre_norm", "norm_final")
    src.linear(out, "final.norm", "norm_out.norm")
    for kind in ("weight", "bias"):  # AdaLayerNorm(chunk_dim=1): (shift, scale), kinema's order too
        out[f"final.mod.lin.{kind}"] = src(f"norm_out.linear.{kind}")
    src.linear(out, "final.linear", "proj_out")  # rows (channel, ph, pw): kinema's order already
    src.check_all_used()
    return out
