"""Streamed and tiled VAE coding (kinema.vae.coding): equal to the whole pass, and the halo is the
network's true receptive field."""

import pytest
import torch
from conftest import randomize_

from kinema.config import VAE_PRESETS, VAEConfig
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.causal_conv import CausalCache, CausalConv3d
from kinema.vae.coding import CodingPlan, budget_for, halo, plan_coding


def vae_of(name: str = "tiny") -> CausalVAE:
    # weights large enough that a pixel's influence reaches the edge of its receptive field
    return randomize_(CausalVAE(VAE_PRESETS[name]).eval(), std=0.2)


def clip(vae: CausalVAE, latent=(3, 6, 5), seed: int = 0):
    """A video and a latent of the given latent grid (t, h, w)."""
    t, h, w = latent
    r, s = vae.cfg.time_compression, vae.cfg.space_compression
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 1 + r * (t - 1), h * s, w * s, generator=g),
            torch.randn(2, vae.cfg.latent_channels, t, h, w, generator=g))


@pytest.mark.parametrize("taps", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_streamed_equals_whole(chunk, taps, monkeypatch):
    """Time chunks of 1, 2 and 3 latent frames (3 does not divide 5: a short last chunk), with the
    convs fed the past and the chunk side by side (small frames) and tap by tap (large frames)."""
    import kinema.vae.causal_conv as cc

    monkeypatch.setattr(cc, "TAPS_FROM", 0 if taps else 2 ** 62)
    vae = vae_of()
    x, z = clip(vae, (5, 4, 3))
    whole_mean, whole_logvar = vae.encode(x, CodingPlan())
    mean, logvar = vae.encode(x, CodingPlan(latent_chunk=chunk))
    torch.testing.assert_close(mean, whole_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, whole_logvar, atol=1e-5, rtol=1e-5)
    whole = vae.decode(z, CodingPlan())
    assert whole.abs().mean() > 0.1
    torch.testing.assert_close(vae.decode(z, CodingPlan(latent_chunk=chunk)), whole, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_streamed_encode_goes_depth_first():
    """Streaming, full resolution sees one frame at a time and each downsampler its window (1 frame
    at the clip's start, then its time factor), however long the chunk; a chunk that ends inside a
    latent frame is one clear error."""
    vae = vae_of()
    seen: dict[str, list[int]] = {"full": [], "down": []}
    vae.encoder.levels[0][0].register_forward_hook(lambda m, a, o: seen["full"].append(a[0].shape[2]))
    vae.encoder.levels[0][-1].register_forward_hook(lambda m, a, o: seen["down"].append(a[0].shape[2]))
    x, _ = clip(vae, (5, 4, 3))
    vae.encode(x, CodingPlan(latent_chunk=3))
    factor = vae.cfg.factors()[0]
    assert seen["full"] == [1] * x.shape[2]
    assert seen["down"] == [1] + [factor] * ((x.shape[2] - 1) // factor)
    with pytest.raises(ValueError, match="ends inside a latent frame"):
        vae.encoder(x[:, :, :1 + vae.cfg.time_compression // 2 + 1], CausalCache())


@pytest.mark.parametrize("plan", [CodingPlan(tile=5), CodingPlan(tile=7), CodingPlan(latent_chunk=1, tile=9)])
@torch.no_grad()
def test_tiled_equals_untiled(plan):
    """A 26x23 latent grid, wider than two halos, so interior tiles see neither border; tiles of
    5, 7 and 9 leave a ragged last tile."""
    vae = vae_of()
    x, z = clip(vae, (2, 26, 23))
    torch.testing.assert_close(vae.encode(x, plan)[0], vae.encode(x, CodingPlan())[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae.decode(z, plan), vae.decode(z, CodingPlan()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", [True, False])
def test_halo_is_the_receptive_field(encoder):
    """The gradient of one pixel in the middle of the output reaches exactly `halo` latent pixels
    to one side or the other, never further."""
    vae = vae_of()
    s = vae.cfg.space_compression
    x, z = clip(vae, (1, 31, 31))
    net, inp = (vae.encoder, x[:1]) if encoder else (vae.decoder, z[:1])
    inp = inp.clone().requires_grad_(True)
    out = net(inp)
    c = out.shape[-1] // 2  # the middle output pixel: latent pixel 15 (decoder: one of its 4 x 4 sub-pixels)
    out[..., c, c].sum().backward()
    reach = inp.grad.abs().sum(dim=(0, 1, 2)) > 0  # [H, W] inputs that influence it
    rows = reach.any(1).nonzero().flatten()
    if encoder:
        rows = rows.div(s, rounding_mode="floor").unique()  # input pixels -> the latent pixels they belong to
    centre = c if encoder else c // s
    assert max(centre - rows.min().item(), rows.max().item() - centre) == halo(net, s, encoder)


@torch.no_grad()
def test_caches_are_separate_and_modules_keep_no_state():
    """Two clips streamed chunk by chunk in turn, each with its own cache, come out as they do alone;
    and a whole pass afterwards is unchanged by the streaming before it."""
    vae = vae_of()
    _, z = clip(vae, (3, 4, 4))
    alone = vae.decode(z, CodingPlan())
    caches = [CausalCache(), CausalCache()]
    parts = [[], []]
    for c in range(3):
        for i in range(2):
            parts[i].append(vae.decoder(z[i:i + 1, :, c:c + 1], caches[i]))
    streamed = torch.cat([torch.cat(p, dim=2) for p in parts])
    torch.testing.assert_close(streamed, alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(vae.decode(z, CodingPlan()), alone)


@pytest.mark.parametrize("taps", [False, True])
@torch.no_grad()
def test_a_cache_counts_the_frames_it_holds(taps, monkeypatch):
    """A 3-frame conv keeps its last 2 input frames: 2 x C x H x W floats; at the clip's start, on
    the tap-wise path, the zero frames are not held and count nothing."""
    import kinema.vae.causal_conv as cc

    monkeypatch.setattr(cc, "TAPS_FROM", 0 if taps else 2 ** 40)
    conv, cache = CausalConv3d(2, 3, 3), CausalCache()
    conv(torch.randn(1, 2, 1, 5, 6), cache)
    assert cache.nbytes() == (1 if taps else 2) * 2 * 5 * 6 * 4  # (concat path: the padding zeros are a tensor)
    conv(torch.randn(1, 2, 4, 5, 6), cache)
    assert cache.nbytes() == 2 * 2 * 5 * 6 * 4  # (tap-wise: the kept frames are copied out of the 4-frame chunk)
    frame = torch.zeros(1, 2, 1, 5, 6)
    cache.frames[conv] = [frame, frame]  # an upsampler's repeated frame: one tensor, held twice
    assert cache.nbytes() == 2 * 5 * 6 * 4


def test_size_policy():
    cfg = VAE_PRESETS["4x8x8"]
    with torch.no_grad():
        assert plan_coding(cfg, (5, 8, 8)).whole  # 17 frames at 64x64: about 90 MB
        long = plan_coding(cfg, (65, 8, 8), budget_mb=64)  # 257 frames: chunks of a few latent frames
        assert long.tile is None and 1 <= long.latent_chunk < 65
        # 257 frames at 256x256, streamed: about 356 MB (STREAM_BYTES), so tiles; 64 MB fits 13 latent
        # pixels a side (13 x 8 pixels x 170 bytes x 32 channels), and 3 tiles of 11 cover 32
        assert plan_coding(cfg, (65, 32, 32), budget_mb=256) == CodingPlan(latent_chunk=1, tile=16)
        assert plan_coding(cfg, (65, 32, 32), budget_mb=64) == CodingPlan(latent_chunk=1, tile=11)
        assert plan_coding(cfg, (65, 32, 32), budget_mb=1) == CodingPlan(latent_chunk=1, tile=8)  # never under MIN_TILE
        assert plan_coding(cfg, (65, 16, 16), budget_mb=256) == CodingPlan(latent_chunk=2)  # 128x128: 2 latent frames fit
        assert plan_coding(cfg, (65, 135, 240), budget_mb=256) == CodingPlan(latent_chunk=1, tile=27)  # 1080p: 9 x 5 tiles
        # an encoder's tiles see its whole halo at full resolution: none where they would be mostly halo
        assert plan_coding(cfg, (65, 32, 32), budget_mb=256, halo_px=8) == CodingPlan(latent_chunk=1)
        huge = plan_coding(cfg, (65, 135, 240), budget_mb=2048, halo_px=8)  # room for 77-pixel tiles: 61 inside, 8 a side
        assert huge == CodingPlan(latent_chunk=1, tile=60)  # 4 tiles of 60 cover 240
    assert plan_coding(cfg, (65, 32, 32), budget_mb=64).whole  # gradients on: the whole clip
    with pytest.raises(ValueError, match="at least 1"):
        CodingPlan(tile=0)


def test_the_budget_follows_the_device(monkeypatch):
    """On a CPU the policy plans with 256 MB (257 frames at 256x256: 2 x 2 tiles); on a CUDA GPU with
    a quarter of its free memory: 8 GiB free gives 2048 MB, in which the same clip streams in whole
    frames, and a nearly full GPU still gets the CPU's 256 MB."""
    free = {"bytes": 8 * 2 ** 30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2 ** 30))
    assert budget_for("cpu") == 256.0 and budget_for(torch.device("cuda:0")) == 2048.0
    cfg = VAE_PRESETS["4x8x8"]
    with torch.no_grad():
        assert plan_coding(cfg, (65, 32, 32), budget_for("cpu")) == CodingPlan(latent_chunk=1, tile=16)
        assert plan_coding(cfg, (65, 32, 32), budget_for("cuda")).tile is None
    free["bytes"] = 100 * 2 ** 20
    assert budget_for("cuda") == 256.0
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: asked.append(device) or (free["bytes"], 0))
    with torch.no_grad():
        assert plan_coding(cfg, (65, 32, 32), device="cuda").tile == 16 and len(asked) == 1  # no budget given: the device's
    assert plan_coding(cfg, (65, 32, 32), device="cuda").whole and len(asked) == 1  # training: no plan, no memory query


def test_frame_size_must_divide_by_the_spatial_factor():
    vae = vae_of()
    with pytest.raises(ValueError, match="multiple of the VAE's spatial factor 4; crop or resize to e.g. 8x12"):
        vae.encode(torch.zeros(1, 3, 5, 10, 12))


# the lean layout (2D at full resolution), Step-Video's dual path, LTX's patch, 2 x 3 in time
OTHER_COMPRESSIONS = ["4x8x8-flat-tiny", "8x16x16-tiny", "8x32x32-tiny", "6x8x8-tiny"]


@pytest.mark.parametrize("name", OTHER_COMPRESSIONS)
@torch.no_grad()
def test_every_compression_is_causal_and_round_trips(name):
    """Shapes, the frame rule (1 + r k), causality of encoder and decoder per latent window, and
    the image property (a frame alone has the latent a video starting with it has first)."""
    vae = vae_of(name)
    r, s = vae.cfg.time_compression, vae.cfg.space_compression
    assert {"4x8x8-flat-tiny": (4, 8), "8x16x16-tiny": (8, 16), "8x32x32-tiny": (8, 32), "6x8x8-tiny": (6, 8)}[name] == (r, s)
    x, z = clip(vae, (3, 2, 3))
    mean, _ = vae.encode(x)
    assert mean.shape == (2, vae.cfg.latent_channels, 3, 2, 3) and vae.decode(z).shape == x.shape
    later = x.clone()
    later[:, :, r + 1:] = torch.randn_like(later[:, :, r + 1:])  # after latent 1's window (frames 1..r)
    changed, _ = vae.encode(later)
    torch.testing.assert_close(changed[:, :, :2], mean[:, :, :2])
    assert not torch.allclose(changed[:, :, 2], mean[:, :, 2])
    z2 = z.clone()
    z2[:, :, 2] = torch.randn_like(z2[:, :, 2])
    torch.testing.assert_close(vae.decode(z2)[:, :, :r + 1], vae.decode(z)[:, :, :r + 1])
    torch.testing.assert_close(vae.encode(x[:, :, :1])[0][:, :, 0], mean[:, :, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=f"is not 1 \\+ {r}k"):
        vae.encode(x[:, :, :r])


@pytest.mark.parametrize("name", OTHER_COMPRESSIONS)
@torch.no_grad()
def test_every_compression_streams_exactly(name, monkeypatch):
    """Chunks of 1 and 3 latent frames, with the convs fed whole windows and tap by tap."""
    import kinema.vae.causal_conv as cc

    vae = vae_of(name)
    x, z = clip(vae, (4, 2, 2))
    for taps_from in (2 ** 62, 0):
        monkeypatch.setattr(cc, "TAPS_FROM", taps_from)
        for chunk in (1, 3):
            torch.testing.assert_close(vae.encode(x, CodingPlan(chunk))[0], vae.encode(x, CodingPlan())[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(vae.decode(z, CodingPlan(chunk)), vae.decode(z, CodingPlan()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", OTHER_COMPRESSIONS)
def test_every_compression_writes_its_training_samples(name, tmp_path):
    """The VAE stage's sample GIFs use the preset's own frame rule (13 frames at 6x, not 17)."""
    from kinema.train.vae_stage import recon_samples

    vae = vae_of(name)
    recon_samples(tmp_path, seed=0, size=vae.cfg.space_compression * 2)(vae, None, 5)
    assert (tmp_path / "samples" / "recon_0000005.gif").is_file()


@torch.no_grad()
def test_a_patched_dual_path_compression_tiles_exactly():
    """Space folded into channels (patch 2) and the dual path, on a grid wider than two halos."""
    vae = randomize_(CausalVAE(VAEConfig(latent_channels=8, base_channels=8, channel_mult=(1, 2, 2), temporal_down=(True, False),
                                         patch=2, downsample="dual")).eval(), std=0.2)
    x, z = clip(vae, (2, 27, 26))
    plan = CodingPlan(latent_chunk=1, tile=6)
    torch.testing.assert_close(vae.encode(x, plan)[0], vae.encode(x, CodingPlan())[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae.decode(z, plan), vae.decode(z, CodingPlan()), atol=1e-5, rtol=1e-5)


def test_bad_compression_configs_say_what_is_wrong():
    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="vae.downsample 'shuffle'"):
        VAEConfig(downsample="shuffle")
    with pytest.raises(ValueError, match="1 downsamplings .* need as many temporal_down / temporal_factors entries, got 3"):
        CausalVAE(VAEConfig(channel_mult=(1, 2)))
    with pytest.raises(KinemaError, match=r"vae.time_kernel \(1, 3\): one temporal kernel \(>= 1\) per level, 3 levels"):
        VAEConfig(channel_mult=(1, 2, 4), temporal_down=(False, True), time_kernel=(1, 3))
    with pytest.raises(KinemaError, match="levels 0-1 are all 2D, but the decoder repeats frames in time into level 1"):
        VAEConfig(channel_mult=(1, 2, 4), temporal_down=(False, True), time_kernel=(1, 1, 3))


def two_d_top() -> CausalVAE:
    """The 4x8x8-flat layout, small: time x2 at the lower downsampling only, 2D convs at full resolution."""
    return randomize_(CausalVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 2, 2), temporal_down=(False, True),
                                          time_kernel=(1, 3, 3))).eval(), std=0.2)


@torch.no_grad()
def test_a_2d_level_has_no_temporal_kernel_and_caches_nothing():
    """time_kernel 1 makes the full-resolution convs 2D (encoder and decoder), and a streamed decode
    carries no frames for them; the levels below keep their 3-frame kernels and their caches."""
    vae = two_d_top()
    full = [vae.encoder.conv_in, *vae.encoder.levels[0][0].modules(), vae.decoder.conv_out,
            *vae.decoder.levels[-1][0].modules(), vae.decoder.levels[-2][-1].conv]  # the last upsampler's conv runs at full res
    full = [m for m in full if isinstance(m, CausalConv3d)]
    assert len(full) == 7 and all(m.conv.kernel_size == (1, 3, 3) for m in full)
    assert vae.encoder.levels[0][-1].conv.conv.kernel_size == (3, 3, 3)  # the strided downsampling keeps 3
    assert vae.decoder.levels[0][0].conv1.conv.kernel_size == (3, 3, 3)
    _, z = clip(vae, (3, 3, 3))
    cache = CausalCache()
    vae.decoder(z[:1, :, :1], cache)
    assert cache.frames and not any(m in cache.frames for m in full)


@pytest.mark.parametrize("rows", [1, 3])
@torch.no_grad()
def test_the_2d_tail_in_strips_equals_the_whole(rows, monkeypatch):
    """A streamed decode runs everything after the last upsampler with a temporal kernel in strips of
    rows (here 1 and 3 input rows, ragged): equal to the whole decode. Its halo is the tail's true
    reach: the gradient of a middle output row reaches input rows exactly that far, not further."""
    import kinema.vae.autoencoder as ae

    vae = two_d_top()
    assert vae.decoder.tail == (1, 2, 2, 3)  # level 1 (of 0 lowest .. 2), its upsampler, x2, 3 rows of halo
    _, z = clip(vae, (3, 5, 4))
    whole = vae.decode(z, CodingPlan())
    monkeypatch.setattr(ae, "TAIL_ROWS", 2 * rows)
    torch.testing.assert_close(vae.decode(z, CodingPlan(latent_chunk=1)), whole, atol=1e-5, rtol=1e-5)
    _, wide = clip(vae, (2, 26, 23))  # tiles with cut stages, the tail in strips inside each
    torch.testing.assert_close(vae.decode(wide, CodingPlan(latent_chunk=1, tile=6)), vae.decode(wide, CodingPlan()),
                               atol=1e-5, rtol=1e-5)
    with torch.enable_grad():
        i, j, scale, halo_rows = vae.decoder.tail
        f = torch.randn(1, vae.decoder.levels[i][j].conv.conv.in_channels, 1, 15, 4, requires_grad=True)
        out = vae.decoder.levels_from(f, i, j, None)
        c = out.shape[3] // 2  # output row 15 of 30: input row 7
        out[:, :, :, c].sum().backward()
    rows = (f.grad.abs().sum(dim=(0, 1, 2, 4)) > 0).nonzero().flatten()
    assert max(c // scale - rows.min().item(), rows.max().item() - c // scale) == halo_rows



def _stage_inputs(decoder) -> dict:
    """Hooks that keep each decoder stage's input (Decoder.stages) with its gradient."""
    kept = {}

    def keep(key):
        def hook(module, args):
            args[0].retain_grad()
            kept[key] = args[0]
        return hook

    for key, mods in decoder.stages():
        mods[0].register_forward_pre_hook(keep(key))
    return kept


@pytest.mark.parametrize("preset", ["tiny", "4x8x8"])
def test_cuts_are_the_windows_dependencies(preset):
    """Each stage's region (Cuts.need) is exactly the bounding box of the stage input's pixels the
    output window depends on, by the gradient of the window: tight (full-resolution stages see
    little more than the window) and sufficient (tiled == untiled follows)."""
    from kinema.vae.coding import Cuts

    vae = vae_of(preset)
    s = vae.cfg.space_compression
    _, z = clip(vae, (1, 30, 27))
    kept = _stage_inputs(vae.decoder)
    z = z[:1].clone().requires_grad_(True)
    out = vae.decoder(z)
    window = (9 * s + 3, 13 * s + 1, 1, 5 * s)  # rows inside the frame, columns from next to its left edge
    out[..., window[0]:window[1], window[2]:window[3]].sum().backward()
    cuts = Cuts.of(vae.decoder, window, z.shape[-2:])
    kept["in"] = z
    for key, mods in vae.decoder.stages():
        seen = kept[key].grad.abs().sum(dim=(0, 1, 2)) > 0  # [h, w] pixels of the stage input that matter
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        box = (rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1)
        assert cuts.need[key] == box, key
    p = vae.decoder.patch  # the output conv (3x3) sees one pixel around the window, none past the frame's edge
    assert cuts.need["out"] == (window[0] // p - 1, -(-window[1] // p) + 1, 0, window[3] // p + 1)


@torch.no_grad()
def test_a_tiles_streamed_caches_are_the_size_of_its_regions():
    """A tile streamed with a window keeps, for each causal conv, frames of its stage's region, not
    of the frame: the full-resolution output conv's cached frames are the window plus its
    one-pixel reach, and the tile's whole cache is a fraction of the untiled one's."""
    from kinema.vae.coding import Cuts

    vae = vae_of("4x8x8")
    _, z = clip(vae, (3, 24, 24))
    z, s = z[:1], vae.cfg.space_compression
    whole = CausalCache()
    full = vae.decoder(z, whole)
    window = (0, 8 * s, 8 * s, 16 * s)  # a tile of 8x8 latent pixels on the top edge, 1/9 of the frame
    tile = CausalCache()
    out = vae.decoder(z, tile, window)
    torch.testing.assert_close(out, full[..., :8 * s, 8 * s:16 * s], atol=1e-5, rtol=1e-5)
    y0, y1, x0, x1 = Cuts.of(vae.decoder, window, z.shape[-2:]).need["out"]
    assert (y0, y1, x0, x1) == (0, 8 * s + 1, 8 * s - 1, 16 * s + 1)
    kept = tile.frames[vae.decoder.conv_out]  # a tensor of frames, or a list of them (CausalConv3d.taps)
    assert {tuple(f.shape[-2:]) for f in (kept if isinstance(kept, list) else [kept]) if f is not None} == \
        {(y1 - y0, x1 - x0)}
    assert tile.nbytes() < 0.3 * whole.nbytes()
