"""kinema's presets against the reference implementations (diffusers, a dev extra): the same
random weights through a state-dict adapter give the same output, to 1e-5 in fp32."""

import pytest
import torch
from conftest import randomize_

from kinema.dit.transformer import Conditioning, MMDiT
from kinema.text.encoders import TextStates

diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference: pip install -e '.[dev]'")


def matched(adapter, ref) -> MMDiT:
    """kinema's model carrying `ref`'s random weights (every tensor randomised, zero inits too)."""
    randomize_(ref, std=0.1)
    ref.eval()
    cfg = adapter.dit_config(ref.config)
    model = MMDiT(cfg).eval()
    model.load_state_dict(adapter.convert(ref.state_dict(), cfg))
    return model


def text(batch: int, tokens: int, dim: int, pooled_dim: int, valid: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(tokens)[None] < torch.tensor(valid)[:, None]  # real tokens first, as tokenizers pad
    states = torch.randn(batch, tokens, dim, generator=g) * mask[..., None]
    return states, mask, torch.randn(batch, pooled_dim, generator=g)


@pytest.mark.parametrize("refiner_layers", [0, 2])
def test_hunyuan_video_matches_diffusers(refiner_layers):
    from kinema.adapters import hunyuan_video

    ref = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
        num_refiner_layers=refiner_layers, mlp_ratio=2.0, patch_size=2, patch_size_t=1, guidance_embeds=False,
        text_embed_dim=24, pooled_projection_dim=20, rope_axes_dim=(4, 6, 6), rope_theta=256.0)
    model = matched(hunyuan_video, ref)

    x = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, mask, pooled = text(2, 6, 24, 20, valid=[4, 2])
    with torch.no_grad():
        expected = ref(x, t * 1000.0, states, mask.long(), pooled, return_dict=False)[0]
        got = model(x, t, Conditioning(TextStates(states, mask, pooled)))
    assert expected.abs().mean() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_adapter_refuses_what_it_cannot_place():
    from kinema.adapters import hunyuan_video
    from kinema.errors import KinemaError

    ref = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=0, patch_size=2, patch_size_t=1, guidance_embeds=False, text_embed_dim=24,
        pooled_projection_dim=20, rope_axes_dim=(4, 6, 6))
    cfg = hunyuan_video.dit_config(ref.config)
    state = dict(ref.state_dict(), **{"extra.weight": torch.zeros(1)})
    with pytest.raises(KinemaError, match="no place"):
        hunyuan_video.convert(state, cfg)
    with pytest.raises(KinemaError, match="guidance"):
        hunyuan_video.dit_config({**ref.config, "guidance_embeds": True})


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2)])
def test_wan_matches_diffusers(patch):
    from kinema.adapters import wan

    ref = diffusers.WanTransformer3DModel(
        patch_size=patch, num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=24,
        freq_dim=256, ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        rope_max_seq_len=32)
    model = matched(wan, ref)

    x = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, mask, pooled = text(2, 6, 24, 24, valid=[4, 2])  # Wan's text: zero-padded, and attended whole
    with torch.no_grad():
        expected = ref(x, t * 1000.0, states, return_dict=False)[0]
        got = model(x, t, Conditioning(TextStates(states, mask, pooled)))
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qk_norm", [None, "rms_norm"])
def test_sd3_matches_diffusers(qk_norm):
    """SD3 / SD3.5-style MM-DiT on an image (a one-frame video): dual-stream blocks, the last one
    text-pre-only, absolute 2D sin-cos positions cropped from a fixed grid. The latent is smaller
    than the grid and not square, so a wrong crop offset or a swapped (h, w) half fails."""
    from kinema.adapters import sd3

    ref = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=20,
        pos_embed_max_size=12, qk_norm=qk_norm)
    model = matched(sd3, ref)
    assert model.cfg.positions == "sincos-2d" and model.cfg.qk_norm == (qk_norm is not None)

    x = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, _, pooled = text(2, 6, 24, 20, valid=[6, 6])
    mask = torch.ones(2, 6, dtype=torch.bool)  # SD3 attends to every text token
    with torch.no_grad():
        expected = ref(x, states, pooled, t * 1000.0, return_dict=False)[0]
        got = model(x[:, :, None], t, Conditioning(TextStates(states, mask, pooled)))[:, :, 0]
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sd3_adapter_refuses_mmdit_x():
    from kinema.adapters import sd3
    from kinema.errors import KinemaError

    ref = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=20,
        pos_embed_max_size=12)
    with pytest.raises(KinemaError, match="dual attention"):
        sd3.dit_config({**ref.config, "dual_attention_layers": (0,)})
    cfg = sd3.dit_config(ref.config)
    state = ref.state_dict()
    state["pos_embed.pos_embed"] = state["pos_embed.pos_embed"].flip(1)  # a table kinema would not compute
    with pytest.raises(KinemaError, match="pos_embed"):
        sd3.convert(state, cfg)


def test_ltx_video_matches_diffusers():
    """LTX-Video: packed tokens, its RoPE across the whole width (16 = 2 x 8: two frequencies per
    axis and two unrotated pairs first), weightless RMSNorm, text padding masked. The RoPE scale
    (2.5, 64, 64) makes every position exact in float32 (t / 8, h / 32, w / 32) in both."""
    from kinema.adapters import ltx_video

    ref = diffusers.LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=2, caption_channels=24)
    scale = (2.5, 64.0, 64.0)
    cfg = ltx_video.dit_config(ref.config, rope_interpolation_scale=scale)
    randomize_(ref, std=0.1)
    ref.eval()
    model = MMDiT(cfg).eval()
    model.load_state_dict(ltx_video.convert(ref.state_dict(), cfg))
    assert cfg.rope_scale == (1 / 8, 1 / 32, 1 / 32)

    x = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, mask, pooled = text(2, 6, 24, 24, valid=[4, 2])
    packed = x.flatten(2).transpose(1, 2)  # [B, t h w, C]
    with torch.no_grad():
        expected = ref(packed, states, t * 1000.0, mask.long(), num_frames=3, height=4, width=6,
                       rope_interpolation_scale=scale, return_dict=False)[0]
        got = model(x, t, Conditioning(TextStates(states, mask, pooled))).flatten(2).transpose(1, 2)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_bias", [True, False])
def test_latte_matches_diffusers(attention_bias):
    """Latte-1: spatial blocks with cross-attention alternating with temporal blocks without it,
    2D sin-cos positions at the input and temporal ones added after the first spatial block."""
    from kinema.adapters import latte

    ref = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2, cross_attention_dim=16,
        attention_bias=attention_bias, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=24, video_length=3)
    model = matched(latte, ref)
    assert model.cfg.cross_flags() == [True, False, True, False]

    x = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, mask, pooled = text(2, 6, 24, 24, valid=[4, 2])
    with torch.no_grad():
        expected = ref(x, t * 1000.0, states, return_dict=False)[0]  # no text mask: Latte attends to padding
        got = model(x, t, Conditioning(TextStates(states, mask, pooled)))
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_mochi_matches_diffusers():
    """Mochi (AsymmDiT): a text stream narrower than the video's, learned RoPE frequencies that mix
    the axes over centred positions, SwiGLU, tanh-gated sandwich-normed residuals, attention-pooled
    text; a non-square 2x3 token grid and text padding that differs per sample."""
    from kinema.adapters import mochi

    ref = diffusers.MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=24, time_embed_dim=256)
    model = matched(mochi, ref)
    assert model.cfg.text_width == 16 and not model.dual[-1].text_out

    x = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, mask, pooled = text(2, 6, 24, 24, valid=[4, 2])
    with torch.no_grad():
        expected = ref(x, states, t * 1000.0, mask.long(), return_dict=False)[0]
        got = model(x, t, Conditioning(TextStates(states, mask, pooled)))
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_bias", [True, False])
def test_cogvideox_matches_diffusers(attention_bias):
    """CogVideoX 1.0: one stream's weights over [text; video] with expert AdaLN, LayerNorm QK norm,
    3D sin-cos positions (time a quarter of the width, space interpolated by 1.875) on a 3x2x3
    token grid, a time vector narrower than the model; text padded to max_text_seq_length, all seen."""
    from kinema.adapters import cogvideox

    ref = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=24, text_embed_dim=24,
        num_layers=2, attention_bias=attention_bias, sample_width=6, sample_height=4, sample_frames=9, patch_size=2,
        max_text_seq_length=6, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0)
    model = matched(cogvideox, ref)
    assert model.cfg.time_dim == 24 and model.cfg.time_freq_dim == 32

    x = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.85])
    states, _, pooled = text(2, 6, 24, 24, valid=[4, 2])
    with torch.no_grad():
        expected = ref(x.transpose(1, 2), states, t * 1000.0, return_dict=False)[0].transpose(1, 2)
        got = model(x, t, Conditioning(TextStates(states, torch.ones(2, 6, dtype=torch.bool), pooled)))
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
