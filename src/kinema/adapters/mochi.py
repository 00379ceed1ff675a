"""diffusers `MochiTransformer3DModel` (Genmo's Mochi 1, AsymmDiT) -> kinema's dual-stream MM-DiT
(the `mochi` layout: dual blocks only, a text stream narrower than the video's).

    cfg = dit_config(reference.config)
    model = MMDiT(cfg)
    model.load_state_dict(convert(reference.state_dict(), cfg))

The two compute the same function (tests/test_adapters.py: 1e-5 in fp32). Mochi's parts are
kinema's `block_norm: rms`, `qkv_bias: false`, `mlp: swiglu`, `residual: norm-tanh`,
`rope_layout: mochi` and `pooling: attention`. Differences are only in packing: Mochi's AdaLN has
no shift, (scale, gate) per branch, which kinema's (shift, scale, gate) Modulation holds with the
shift rows zero; kinema fuses q, k, v into one Linear, patchifies with a Linear instead of a
stride-p Conv2d, orders the final AdaLN as (shift, scale, gate) and each output patch as
(channel, ph, pw), and puts text before video in the joint sequence.

Mochi's released weights count time the other way: its transformer is given 1000 (1 - t) for
kinema's t and predicts minus kinema's velocity (its scheduler inverts the sigmas). The adapter
maps weights only; a sampler for the released model would pass 1 - t and negate the output.
"""

from __future__ import annotations

import torch

from kinema.adapters import StateSource
from kinema.config import DiTConfig
from kinema.errors import KinemaError


def dit_config(c) -> DiTConfig:
    """A diffusers config (its `.config` or a dict) -> DiTConfig."""
    c = dict(c)
    if c.get("qk_norm", "rms_norm") != "rms_norm" or c.get("activation_fn", "swiglu") != "swiglu":
        raise KinemaError("only Mochi with rms_norm QK norm and a swiglu feed-forward maps onto kinema")
    if c.get("time_embed_dim", 256) != 256:
        raise KinemaError(f"Mochi time_embed_dim {c['time_embed_dim']}: kinema's timestep features are 256 wide")
    if c.get("out_channels") not in (None, c["in_channels"]):
        raise KinemaError("only Mochi with out_channels == in_channels maps onto kinema")
    heads, p = c["num_attention_heads"], c["patch_size"]
    return DiTConfig(
        in_channels=c["in_channels"], patch=(1, p, p), dim=heads * c["attention_head_dim"], heads=heads,
        dual_blocks=c["num_layers"], single_blocks=0, mlp_ratio=4.0, text_dim=c["text_embed_dim"],
        text_width=c["pooled_projection_dim"], text_adapter="linear", qk_norm=True, qk_norm_eps=1e-5, block_norm="rms",
        mlp="swiglu", qkv_bias=False, residual="norm-tanh", rope_layout="mochi", pooling="attention")


def _scale_gate(src: StateSource, out: dict, dst: str, name: str, groups: int) -> None:
    """Mochi's AdaLN Linear, `groups` x (scale, gate) rows, -> kinema's Modulation rows, groups x
    (shift, scale, gate), the shift zero; one group (a pre-only stream: scale alone) -> the
    ungated (shift, scale)."""
    for kind in ("weight", "bias"):
        if groups == 1:
            scale = src(f"{name}.{kind}")
            out[f"{dst}.{kind}"] = torch.cat([torch.zeros_like(scale), scale])
            continue
        rows = list(src(f"{name}.{kind}").chunk(2 * groups))
        zero = torch.zeros_like(rows[0])
        out[f"{dst}.{kind}"] = torch.cat([y for i in range(groups) for y in (zero, rows[2 * i], rows[2 * i + 1])])


def convert(state: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    src, out = StateSource(state, "Mochi"), {}
    src.conv_patch(out, "patch_embed.proj")  # a Conv2d per frame
    src.embedder(out, "time_in", "time_embed.timestep_embedder")
    for mine, theirs in (("q", "to_q"), ("kv", "to_kv"), ("out", "to_out")):
        src.linear(out, f"pooled_in.{mine}", f"time_embed.pooler.{theirs}")
    src.linear(out, "text_in.0", "time_embed.caption_proj")
    out["rope_freqs"] = src("pos_frequencies")
    for i in range(cfg.dual_blocks):
        a, b = f"transformer_blocks.{i}", f"dual.{i}"
        last = i == cfg.dual_blocks - 1  # its text stream is pre-only: it gives keys and values alone
        _scale_gate(src, out, f"{b}.img.mod.lin", f"{a}.norm1.linear", 2)
        if last:
            _scale_gate(src, out, f"{b}.txt.mod.lin", f"{a}.norm1_context.linear_1", 1)
        else:
            _scale_gate(src, out, f"{b}.txt.mod.lin", f"{a}.norm1_context.linear", 2)
        for stream, q, k, v, qn, kn, proj, ff in (
                ("img", "to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out.0", "ff"),
                ("txt", "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k", "to_add_out", "ff_context")):
            src.linear(out, f"{b}.{stream}.qkv", f"{a}.attn1.{q}", f"{a}.attn1.{k}", f"{a}.attn1.{v}", bias=False)
            out[f"{b}.{stream}.qk_norm.q.weight"] = src(f"{a}.attn1.{qn}.weight")
            out[f"{b}.{stream}.qk_norm.k.weight"] = src(f"{a}.attn1.{kn}.weight")
            if stream == "txt" and last:
                continue
            src.linear(out, f"{b}.{stream}.proj", f"{a}.attn1.{proj}")
            src.linear(out, f"{b}.{stream}.mlp.proj_in", f"{a}.{ff}.net.0.proj", bias=False)
            src.linear(out, f"{b}.{stream}.mlp.proj_out", f"{a}.{ff}.net.2", bias=False)
    src.scale_shift(out, "final.mod.lin", "norm_out.linear")
    src.patch_out(out, "final.linear", "proj_out", cfg.patch)
    src.check_all_used()
    return out
