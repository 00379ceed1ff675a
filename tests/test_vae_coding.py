"""Streamed and tiled VAE coding (kinema.vae.coding): equal to the whole pass, and the halo is the
network's true receptive field."""

import pytest
import torch
from conftest import randomize_

from kinema.config import VAE_PRESETS
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.causal_conv import CausalCache
from kinema.vae.coding import CodingPlan, halo, plan_coding


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


@pytest.mark.parametrize("chunk", [1, 2, 3])
@torch.no_grad()
def test_streamed_equals_whole(chunk):
    """Time chunks of 1, 2 and 3 latent frames (3 does not divide 5: a short last chunk)."""
    vae = vae_of()
    x, z = clip(vae, (5, 4, 3))
    whole_mean, whole_logvar = vae.encode(x, CodingPlan())
    mean, logvar = vae.encode(x, CodingPlan(latent_chunk=chunk))
    torch.testing.assert_close(mean, whole_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, whole_logvar, atol=1e-5, rtol=1e-5)
    whole = vae.decode(z, CodingPlan())
    assert whole.abs().mean() > 0.1
    torch.testing.assert_close(vae.decode(z, CodingPlan(latent_chunk=chunk)), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("plan", [CodingPlan(tile=5), CodingPlan(tile=7), CodingPlan(latent_chunk=1, tile=4)])
@torch.no_grad()
def test_tiled_equals_untiled(plan):
    """A 26x23 latent grid, wider than two halos, so interior tiles see neither border; tiles of
    5 and 7 leave a ragged last tile."""
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


def test_size_policy():
    cfg = VAE_PRESETS["4x8x8"]
    with torch.no_grad():
        assert plan_coding(cfg, (5, 8, 8)).whole  # 17 frames at 64x64: about 35 MB
        long = plan_coding(cfg, (65, 8, 8), budget_mb=64)  # 257 frames: chunks of a few latent frames
        assert long.tile is None and 1 <= long.latent_chunk < 65
        big = plan_coding(cfg, (65, 32, 32), budget_mb=64)  # 257 frames at 256x256: tiles too
        assert big.latent_chunk == 1 and big.tile is not None and big.tile < 32
    assert plan_coding(cfg, (65, 32, 32), budget_mb=64).whole  # gradients on: the whole clip
    with pytest.raises(ValueError, match="at least 1"):
        CodingPlan(tile=0)


def test_frame_size_must_divide_by_the_spatial_factor():
    vae = vae_of()
    with pytest.raises(ValueError, match="multiple of the VAE's spatial factor 4; crop or resize to e.g. 8x12"):
        vae.encode(torch.zeros(1, 3, 5, 10, 12))
