import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import DIT_PRESETS, DiTConfig
from kinema.dit.blocks import DualStreamBlock, SingleStreamBlock
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.errors import KinemaError
from kinema.nn.modulation import Modulation
from kinema.text.encoders import TextStates

CFG = DIT_PRESETS["tiny"]


def test_zero_initialised_blocks_are_identity():
    torch.manual_seed(0)
    img, txt, vec = torch.randn(2, 10, 32), torch.randn(2, 4, 32), torch.randn(2, 32)
    rope = torch.randn(14, 8)
    dual = DualStreamBlock(32, 2)
    out_img, out_txt = dual(img, txt, vec, rope, None)
    assert torch.equal(out_img, img) and torch.equal(out_txt, txt)
    single = SingleStreamBlock(32, 2)
    x = torch.cat([txt, img], dim=1)
    assert torch.equal(single(x, vec, rope, None), x)
    # and not the identity once the modulation is trained
    randomize_(single.mod)
    assert not torch.allclose(single(x, vec, rope, None), x)


def test_modulation_is_fp32_under_autocast():
    mod = randomize_(Modulation(16, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mod(torch.randn(3, 16))
    assert all(m.shift.dtype == torch.float32 and m.gate.shape == (3, 1, 16) for m in out)


def make_model(cfg: DiTConfig = CFG) -> MMDiT:
    torch.manual_seed(0)
    return randomize_(MMDiT(cfg)).eval()


@torch.no_grad()
def test_output_shape_and_zero_init_output():
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    cond = random_text(2)
    assert MMDiT(CFG)(x, t, cond).abs().max() == 0  # zero-initialised final layer
    assert make_model()(x, t, cond).shape == x.shape


@torch.no_grad()
def test_text_padding_is_masked():
    model = make_model()
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    cond = random_text(2, tokens=6, valid=3)
    out = model(x, t, cond)
    tokens = cond.text.tokens.clone()
    tokens[:, 3:] = torch.randn_like(tokens[:, 3:]) * 5  # garbage in the padding
    out2 = model(x, t, Conditioning(TextStates(tokens, cond.text.mask, cond.text.pooled)))
    torch.testing.assert_close(out, out2)
    tokens[:, :3] += 1.0  # but real tokens matter
    assert not torch.allclose(out, model(x, t, Conditioning(TextStates(tokens, cond.text.mask, cond.text.pooled))))


@torch.no_grad()
def test_batch_elements_are_independent():
    model = make_model()
    x, t, cond = torch.randn(3, 4, 3, 4, 4), torch.rand(3), random_text(3)
    full = model(x, t, cond)
    one = model(x[1:2], t[1:2], cond.index(slice(1, 2)))
    torch.testing.assert_close(full[1:2], one, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_timestep_and_text_condition_the_output():
    model = make_model()
    x, cond = torch.randn(1, 4, 3, 4, 4), random_text(1)
    assert not torch.allclose(model(x, torch.tensor([0.2]), cond), model(x, torch.tensor([0.8]), cond))
    assert not torch.allclose(model(x, torch.tensor([0.5]), cond), model(x, torch.tensor([0.5]), random_text(1, seed=1)))


def test_param_count_of_shipped_preset():
    model = MMDiT(DIT_PRESETS["shapes"])
    n = sum(p.numel() for p in model.parameters())
    assert 5e6 < n < 15e6  # small enough to ship (< 40 MB with the VAE), big enough to learn Shapes


# ---- attention patterns inside the model (kinema.nn.attention; DiTConfig.attention)

def patterned(attention, **kw) -> MMDiT:
    return make_model(DiTConfig(**{**CFG.__dict__, "attention": attention, **kw}))


def test_block_patterns_repeat_over_dual_then_single_blocks():
    cfg = DiTConfig(**{**CFG.__dict__, "dual_blocks": 2, "single_blocks": 3, "attention": ("spatial", "temporal", "full")})
    assert cfg.block_patterns() == ["spatial", "temporal", "full", "spatial", "temporal"]
    import pytest

    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="dit.attention"):
        DiTConfig(attention=("dilated",))


@torch.no_grad()
def test_patterns_equal_full_attention_where_they_coincide():
    cond, t = random_text(2), torch.rand(2)
    one_frame = torch.randn(2, 4, 1, 4, 4)  # a latent of one frame: spatial == full
    full = make_model()
    torch.testing.assert_close(patterned(("spatial",))(one_frame, t, cond), full(one_frame, t, cond))
    one_token = torch.randn(2, 4, 3, 2, 2)  # one token a frame (patch 2x2): temporal == full
    torch.testing.assert_close(patterned(("temporal",))(one_token, t, cond), full(one_token, t, cond))
    x = torch.randn(2, 4, 3, 4, 4)  # a window covering the 3 x 2 x 2 grid: window == full
    torch.testing.assert_close(patterned(("window",), window=(5, 3, 3))(x, t, cond), full(x, t, cond))
    assert not torch.allclose(patterned(("spatial", "temporal"))(x, t, cond), full(x, t, cond))


@torch.no_grad()
def test_frame_causal_model_ignores_later_frames():
    """Across blocks too: text tokens, which every frame reads, do not read video under "causal"."""
    model = patterned(("causal",))
    cond, t = random_text(2), torch.rand(2)
    x = torch.randn(2, 4, 3, 4, 4)
    y = x.clone()
    y[:, :, 2] += 1.0  # change the last latent frame
    a, b = model(x, t, cond), model(y, t, cond)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])
    assert not torch.allclose(make_model()(x, t, cond)[:, :, :2], make_model()(y, t, cond)[:, :, :2])  # full leaks


# ---- per-frame timesteps (t of shape [B, frames])

@torch.no_grad()
def test_per_frame_times_all_equal_to_t_are_scalar_t():
    model, cond = make_model(), random_text(2)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.tensor([0.3, 0.8])
    torch.testing.assert_close(model(x, t[:, None].expand(2, 3), cond), model(x, t, cond), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(model(x, torch.tensor([[0.3, 0.3, 0.9], [0.8, 0.8, 0.8]]), cond), model(x, t, cond))


@torch.no_grad()
def test_a_frames_time_reaches_that_frames_tokens_only():
    """Frame-causal attention, so nothing flows backwards in time: lowering the last frame's time
    (the clip's noisiest frame, which drives the text stream, stays the same) changes the last
    frame's output only. A time broadcast along the wrong token axis fails this."""
    model, cond = patterned(("causal",)), random_text(2)
    x = torch.randn(2, 4, 3, 4, 4)
    a = model(x, torch.tensor([[0.9, 0.5, 0.4], [0.2, 0.7, 0.6]]), cond)
    b = model(x, torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.7, 0.3]]), cond)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])


def test_per_frame_times_must_cover_every_latent_frame():
    import pytest

    with pytest.raises(ValueError, match="per-frame t has 2 frames"):
        make_model()(torch.randn(1, 4, 3, 4, 4), torch.rand(1, 2), random_text(1))


# ---- cross-attention DiT (Wan / Latte layout)

WAN_TINY = {**CFG.__dict__, "dual_blocks": 0, "single_blocks": 0, "cross_blocks": 2, "modulation": "shared",
            "text_adapter": "mlp", "pooled": False, "qk_norm_across_heads": True}


def cross_model(attention=("full",), **kw) -> MMDiT:
    return make_model(DiTConfig(**{**WAN_TINY, "attention": attention, **kw}))


@torch.no_grad()
def test_cross_blocks_layouts_reduce_to_full_attention_where_they_coincide():
    """In cross blocks, spatial / temporal are reshapes (not masks): they must still agree with full
    attention where the patterns coincide, and differ elsewhere."""
    cond, t = random_text(2), torch.rand(2)
    one_frame, one_token = torch.randn(2, 4, 1, 4, 4), torch.randn(2, 4, 3, 2, 2)
    torch.testing.assert_close(cross_model(("spatial",))(one_frame, t, cond), cross_model()(one_frame, t, cond))
    torch.testing.assert_close(cross_model(("temporal",))(one_token, t, cond), cross_model()(one_token, t, cond))
    x = torch.randn(2, 4, 3, 4, 4)
    assert not torch.allclose(cross_model(("spatial", "temporal"))(x, t, cond), cross_model()(x, t, cond))


@torch.no_grad()
def test_cross_blocks_causal_and_text_masking():
    model, cond, t = cross_model(("causal",), modulation="per_block", pooled=True), random_text(2), torch.rand(2)
    x = torch.randn(2, 4, 3, 4, 4)
    y = x.clone()
    y[:, :, 2] -= 1.0
    torch.testing.assert_close(model(x, t, cond)[:, :, :2], model(y, t, cond)[:, :, :2])
    # padding is hidden from the cross-attention unless cross_attn_mask is off (Wan's released model)
    garbage = Conditioning(TextStates(cond.text.tokens.clone(), cond.text.mask, cond.text.pooled))
    garbage.text.tokens[:, 4:] = 3.0
    torch.testing.assert_close(model(x, t, cond), model(x, t, garbage))
    unmasked = cross_model(cross_attn_mask=False)
    assert not torch.allclose(unmasked(x, t, cond), unmasked(x, t, garbage))


def test_modulation_table_adds_to_the_shared_projection_in_order():
    """Wan's order: (shift, scale, gate) for attention, then for the MLP; per token too."""
    from kinema.nn.modulation import ModulationTable

    table = ModulationTable(3, 2)
    with torch.no_grad():
        table.table.copy_(torch.arange(18.0).view(6, 3) * 100)
    shared = torch.arange(18.0)[None]  # [1, 6 * 3]
    attn, mlp = table(shared)
    assert attn.shift.tolist() == [[[0.0, 101.0, 202.0]]] and attn.gate.shape == (1, 1, 3)
    assert mlp.gate.tolist() == [[[15 * 101.0, 16 * 101.0, 17 * 101.0]]]
    per_token = table(shared[:, None].expand(1, 4, 18))
    assert per_token[1].gate.shape == (1, 4, 3) and torch.equal(per_token[1].gate[0, 2], mlp.gate[0, 0])


def test_shared_modulation_needs_cross_blocks():
    import pytest

    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="cross blocks only"):
        DiTConfig(**{**CFG.__dict__, "modulation": "shared"})


# ---- AsymmDiT (Mochi) and expert AdaLN (CogVideoX)

@torch.no_grad()
def test_asymmetric_text_stream_and_its_equal_width_reduction():
    cfg = DiTConfig(**{**CFG.__dict__, "dual_blocks": 2, "single_blocks": 0, "text_width": 16})
    model = make_model(cfg)
    assert model.dual[0].txt.qkv.weight.shape == (3 * 32, 16) and model.dual[0].txt.proj.weight.shape == (16, 32)
    assert model.dual[0].txt.mod.lin.weight.shape == (6 * 16, 32)  # the text AdaLN reads the 32-wide time vector
    x, t, cond = torch.randn(2, 4, 3, 4, 4), torch.rand(2), random_text(2)
    assert model(x, t, cond).shape == x.shape
    # at equal widths the AsymmDiT is the MM-DiT: the same weights load and give the same output
    equal = make_model(DiTConfig(**{**CFG.__dict__, "dual_blocks": 2, "single_blocks": 0, "text_width": 32}))
    plain = MMDiT(DiTConfig(**{**CFG.__dict__, "dual_blocks": 2, "single_blocks": 0})).eval()
    plain.load_state_dict(equal.state_dict())
    torch.testing.assert_close(plain(x, t, cond), equal(x, t, cond))


@pytest.mark.parametrize("sequential", [False, True])
def test_expert_adaln_modulates_text_and_video_tokens_separately(monkeypatch, sequential):
    """Parallel (HunyuanVideo-style) and sequential (CogVideoX) single-stream blocks alike."""
    from kinema.dit import blocks

    block = blocks.SharedStreamBlock(8, 2, expert=True) if sequential else SingleStreamBlock(8, 2, expert=True)
    video_mod = block.stream.mod if sequential else block.mod
    with torch.no_grad():
        block.mod_txt.lin.bias.fill_(1.0)  # text shift = scale = gate = 1
        video_mod.lin.bias.fill_(2.0)  # video: 2
    seen = []
    real = blocks.modulate
    monkeypatch.setattr(blocks, "modulate", lambda x, mod: seen.append(mod) or real(x, mod))
    x = torch.randn(2, 7, 8)  # 3 text tokens, then 4 video tokens
    out = block(x, torch.randn(2, 8), torch.zeros(7, 2), None, text_len=3, txt_vec=torch.randn(2, 8))
    shift = seen[0].shift
    assert shift.shape == (2, 7, 8) and (shift[:, :3] == 1).all() and (shift[:, 3:] == 2).all()
    assert out.shape == x.shape


@torch.no_grad()
def test_cross_blocks_without_cross_attention_ignore_the_text():
    """cross_attention (True, False): the second block has no cross-attention weights; with none
    cross-attending (and no pooled text) the text cannot reach the output at all."""
    model = cross_model(cross_attention=(True, False))
    assert hasattr(model.cross[0], "cross_q") and not hasattr(model.cross[1], "cross_q")
    deaf = cross_model(cross_attention=(False,))
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    assert torch.equal(deaf(x, t, random_text(2, seed=1)), deaf(x, t, random_text(2, seed=2)))
    assert not torch.equal(model(x, t, random_text(2, seed=1)), model(x, t, random_text(2, seed=2)))


def test_mochi_rope_starts_as_rope_3d_and_learns():
    """The learned frequencies start as RoPE-3D's (each pair one axis), so an untrained `mochi`
    layout is `per_head` RoPE over the centred positions; they get gradients and then mix axes."""
    from kinema.nn.rope import centred_positions, rope_angles

    cfg = DiTConfig(**{**DIT_PRESETS["mochi-tiny"].__dict__})
    model = MMDiT(cfg)
    grid = (3, 2, 4)
    want = rope_angles(centred_positions(grid), model.rope_axes, cfg.rope_theta)  # [Lv, Dh/2]
    torch.testing.assert_close(model.rope_angles(grid), want.expand(cfg.heads, -1, -1))
    randomize_(model, std=0.1)
    x, cond = torch.randn(1, 4, 3, 4, 8), random_text(1, tokens=5, dim=cfg.text_dim)
    model(x, torch.rand(1), cond).square().mean().backward()
    assert model.rope_freqs.grad.abs().amax() > 0



@torch.no_grad()
def test_fixed_rope_angles_are_computed_once_per_grid_and_learned_ones_every_call(monkeypatch):
    """Computing RoPE-3D's angles on the host every forward left an H100 idle for 55 of 130 ms
    (benchmarks/dit_speed.py, hunyuan): a model computes them once per (grid, device). The learned
    (mochi) frequencies change with training, so theirs are never kept."""
    import kinema.dit.transformer as transformer
    from kinema.nn.rope import rope_angles

    calls = []
    monkeypatch.setattr(transformer, "rope_angles", lambda *a: calls.append(a) or rope_angles(*a))
    model = make_model()
    x, t, cond = torch.randn(2, 4, 3, 4, 4), torch.rand(2), random_text(2)
    first = model(x, t, cond)
    assert len(calls) == 1
    torch.testing.assert_close(model(x, t, cond), first, rtol=0, atol=0)
    assert len(calls) == 1  # the same grid: kept
    model(torch.randn(2, 4, 5, 4, 4), t, cond)
    assert len(calls) == 2  # a new grid: computed
    pos = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (5, 2, 2)), indexing="ij"), -1).reshape(-1, 3)
    torch.testing.assert_close(model.rope_angles((5, 2, 2)), rope_angles(pos, model.rope_axes, model.cfg.rope_theta))

    mochi = MMDiT(DiTConfig(**{**DIT_PRESETS["mochi-tiny"].__dict__}))
    before = mochi.rope_angles((3, 2, 4)).clone()
    mochi.rope_freqs.mul_(2.0)
    torch.testing.assert_close(mochi.rope_angles((3, 2, 4)), 2.0 * before)

def test_attention_pooling_ignores_padding():
    from kinema.nn.embeddings import AttentionPool

    pool = AttentionPool(16, 8, heads=4)
    states, valid = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    changed = states.clone()
    changed[0, 3:] = 100.0
    out, again = pool(states, valid), pool(changed, valid)
    torch.testing.assert_close(out, again)
    assert not torch.allclose(out[0], pool(states, torch.ones_like(valid))[0])  # with the padding seen it differs


def test_mochi_parts_are_for_dual_blocks_and_swiglu_width():
    from kinema.dit.blocks import SwiGLU

    with pytest.raises(KinemaError, match="dual-stream and sequential single-stream blocks only"):
        DiTConfig(mlp="swiglu", single_blocks=1)
    with pytest.raises(KinemaError, match="dit.residual"):
        DiTConfig(residual="tanh")
    ff = SwiGLU(48, 192)  # Mochi: (4 * 48 * 2) // 3 = 128
    assert ff.proj_in.weight.shape == (256, 48) and ff.proj_out.weight.shape == (48, 128) and ff.proj_in.bias is None


def test_shape_condition_tells_the_model_the_clips_shape():
    """dit.shape_condition: a clip's (t, h, w) token grid enters the time vector, the same for every
    sample; two grids of the same area but other aspect give other vectors, and without the
    condition the vector ignores the grid."""
    from kinema.dit.transformer import shape_features

    cfg = DiTConfig(**{**CFG.__dict__, "shape_condition": True})
    model = MMDiT(cfg)
    assert shape_features((2, 4, 8)).shape == (1, 96)
    t, text = torch.rand(2), random_text(2, tokens=5, dim=cfg.text_dim).text
    wide, tall = model.conditioning_vectors(t, text, (2, 4, 8))[0], model.conditioning_vectors(t, text, (2, 8, 4))[0]
    assert not torch.allclose(wide, tall)
    plain = MMDiT(CFG)
    torch.testing.assert_close(plain.conditioning_vectors(t, text, (2, 4, 8))[0], plain.conditioning_vectors(t, text, (2, 8, 4))[0])
    x = torch.randn(2, 4, 2, 8, 16)
    assert model(x, t, Conditioning(text)).shape == x.shape


@pytest.mark.parametrize("name", [n for n in DIT_PRESETS if n.endswith("-tiny")])
@torch.no_grad()
def test_residual_streams_are_fp32_under_autocast(name):
    """Every block takes and returns fp32 streams under bf16 autocast (the matmuls inside run in
    bf16): the first block's input included, which the fp32 AdaLN gate alone left in bf16."""
    model = make_model(DIT_PRESETS[name])
    seen = []

    def record(module, args, output):
        streams = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 3][:1]  # the video (or joint) stream
        outs = output if isinstance(output, tuple) else (output,)
        seen.append((type(module).__name__, streams[0].dtype, [o.dtype for o in outs]))

    blocks = [*model.dual, *model.single, *model.cross]
    for block in blocks:
        block.register_forward_hook(record)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 4, 3, 4, 4), torch.rand(2), random_text(2))
    assert len(seen) == len(blocks)
    assert all(dtype == torch.float32 and outs == [torch.float32] * len(outs) for _, dtype, outs in seen), seen
