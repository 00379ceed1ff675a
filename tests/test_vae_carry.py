"""The decoder's carry head (kinema.vae.carry): the warp's known answers, the identity start, causality,
frame 0 kept, streamed == whole, tiled decoding exact, and that it learns to carry detail."""

import math

import pytest
import torch
from conftest import randomize_

from kinema.config import VAE_PRESETS
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.carry import BLOCK, MAX_SHIFT, RADIUS, CarryHead, matched, warp
from kinema.vae.coding import CodingPlan


def frames(b=2, t=6, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed))


def constant_flow(flow_x: float, flow_y: float, gate: float, channels: int = 4) -> CarryHead:
    """A head whose last conv is its bias alone: flow (flow_x, flow_y) and gate everywhere (1: 1 - 1e-15)."""
    head = CarryHead(channels)
    logit = 35.0 if gate == 1 else math.log(gate / (1 - gate))
    with torch.no_grad():
        head.net[-1].bias.copy_(torch.tensor([math.atanh(flow_x / MAX_SHIFT), math.atanh(flow_y / MAX_SHIFT), logit]))
    return head


def test_warp_known_answers():
    """Integer shifts move pixels exactly (x is channel 0, y channel 1; p reads p + flow); half a
    pixel on a ramp lands half way (bicubic weights are symmetric)."""
    img = torch.randn(1, 3, 8, 9, generator=torch.Generator().manual_seed(1))
    flow = torch.zeros(1, 2, 8, 9)
    flow[:, 0] = 1.0  # read one column to the right
    torch.testing.assert_close(warp(img, flow)[..., :-1], img[..., 1:], atol=1e-5, rtol=0)
    flow = torch.zeros(1, 2, 8, 9)
    flow[:, 1] = -2.0  # read two rows up
    torch.testing.assert_close(warp(img, flow)[..., 2:, :], img[..., :-2, :], atol=1e-5, rtol=0)
    ramp = torch.arange(9.0).expand(1, 1, 8, 9).contiguous()
    flow = torch.zeros(1, 2, 8, 9)
    flow[:, 0] = 0.5
    torch.testing.assert_close(warp(ramp, flow)[..., 2:-2], ramp[..., 2:-2] + 0.5, atol=1e-4, rtol=0)


def test_block_matching_finds_the_move():
    """y is prev moved by (2, -1) (y(p) = prev(p + (2, -1))): at a cold temperature the matched prev
    is y wherever the search and the block stay inside the frame; at a warm one, the plain average
    of all 81 moves."""
    prev = torch.randn(2, 3, 24, 26, generator=torch.Generator().manual_seed(4))
    y = torch.roll(prev, shifts=(1, -2), dims=(-2, -1))  # y[i, j] = prev[i - 1, j + 2]
    m = RADIUS + BLOCK // 2
    torch.testing.assert_close(matched(y, prev, 1e-4)[..., m:-m, m:-m], y[..., m:-m, m:-m], atol=1e-5, rtol=0)
    r = RADIUS
    padded = torch.nn.functional.pad(prev, (r, r, r, r), mode="replicate")
    mean = sum(padded[..., r + dy:r + dy + 24, r + dx:r + dx + 26] for dy in range(-r, r + 1) for dx in range(-r, r + 1)) / 81
    torch.testing.assert_close(matched(y, prev, 1e6), mean, atol=1e-5, rtol=0)
    # the same answers down the stacked path that training takes (prev needs a gradient there)
    stacked = prev.clone().requires_grad_()
    torch.testing.assert_close(matched(y, stacked, 1e-4)[..., m:-m, m:-m], y[..., m:-m, m:-m], atol=1e-5, rtol=0)
    torch.testing.assert_close(matched(y, stacked, 1e6), mean, atol=1e-5, rtol=0)


def test_block_matching_one_move_at_a_time_equals_all_at_once():
    """Decoding takes the moves one at a time with a running softmax; training stacks all 81. On
    frames that match nowhere exactly, at temperatures from sharp to flat, both give the same."""
    g = torch.Generator().manual_seed(5)
    prev, y = torch.randn(2, 3, 20, 22, generator=g), torch.randn(2, 3, 20, 22, generator=g)
    y = 0.5 * y + 0.5 * torch.roll(prev, shifts=(2, 1), dims=(-2, -1))
    for temperature in (1e-3, 0.05, 1.0):
        streamed = matched(y, prev, temperature)
        stacked = matched(y, prev.clone().requires_grad_(), torch.tensor(temperature, requires_grad=True))
        torch.testing.assert_close(streamed, stacked.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("motion", ["flow", "match"])
def test_a_new_head_moves_nothing_and_blends_half(motion):
    """Its last conv's weights are zero: gate 1/2, so frame t is y_t + (moved o_{t-1} - y_t) / 2, the
    flow head's move 0 (the match head's is tested above)."""
    y = frames(t=3)
    if motion == "match":  # the matched frame at the starting temperature, blended half
        o1 = y[:, :, 1] + 0.5 * (matched(y[:, :, 1], y[:, :, 0], 0.01) - y[:, :, 1])
        o2 = y[:, :, 2] + 0.5 * (matched(y[:, :, 2], o1, 0.01) - y[:, :, 2])
        torch.testing.assert_close(CarryHead(8, motion="match")(y), torch.stack([y[:, :, 0], o1, o2], dim=2),
                                   atol=1e-5, rtol=1e-5)
        return
    g = 0.5
    o1 = y[:, :, 1] + g * (y[:, :, 0] - y[:, :, 1])
    o2 = y[:, :, 2] + g * (o1 - y[:, :, 2])
    torch.testing.assert_close(CarryHead(8)(y), torch.stack([y[:, :, 0], o1, o2], dim=2), atol=1e-5, rtol=0)


def test_a_full_gate_carries_frame_0_along_the_flow():
    """gate 1, flow one pixel right a frame: frame t is frame 0 read t pixels to the right (where
    that stays inside the frame); with gate 0.5, half of it."""
    y = frames(b=1, t=4, h=6, w=12)
    out = constant_flow(1.0, 0.0, 1.0)(y)
    for t in range(4):
        torch.testing.assert_close(out[:, :, t, :, :12 - t], y[:, :, 0, :, t:], atol=1e-4, rtol=0)
    half = constant_flow(1.0, 0.0, 0.5)(y)
    torch.testing.assert_close(half[:, :, 1, :, :11], 0.5 * (y[:, :, 1, :, :11] + y[:, :, 0, :, 1:]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("motion", ["flow", "match"])
@torch.no_grad()
def test_causal_keeps_frame_0_and_streams_exactly(motion):
    head = randomize_(CarryHead(8, motion=motion), std=0.3)
    y = frames(t=7)
    out = head(y)
    torch.testing.assert_close(out[:, :, 0], y[:, :, 0])  # an image is as the decoder drew it
    assert (out[:, :, 1:] - y[:, :, 1:]).abs().mean() > 0.05  # (the head does something)
    later = y.clone()
    later[:, :, 4] += 1.0
    changed = head(later)
    torch.testing.assert_close(changed[:, :, :4], out[:, :, :4])  # the past does not see frame 4
    assert (changed[:, :, 4:] - out[:, :, 4:]).abs().mean(dim=(0, 1, 3, 4)).min() > 1e-3  # frame 4 and after do
    first = head(y[:, :, :3])  # a clip in two pieces, the last output frame carried
    torch.testing.assert_close(torch.cat([first, head(y[:, :, 3:], prev=first[:, :, -1])], dim=2), out)
    torch.testing.assert_close(head(y.clone(), inplace=True), out)


@pytest.mark.parametrize("motion", ["flow", "match"])
@pytest.mark.parametrize("plan", [CodingPlan(latent_chunk=1), CodingPlan(latent_chunk=2, tile=2)])
@torch.no_grad()
def test_a_vae_with_a_carry_head_decodes_streamed_and_tiled_as_whole(plan, motion):
    cfg = VAE_PRESETS["tiny"]
    vae = randomize_(CausalVAE(type(cfg)(**{**cfg.__dict__, "carry": 8, "carry_motion": motion})).eval(), std=0.2)
    z = torch.randn(1, cfg.latent_channels, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    whole = vae.decode(z, CodingPlan())
    torch.testing.assert_close(whole, vae.carry(vae.decoder(z)))
    assert (whole - vae.decoder(z)).abs().mean() > 1e-3  # (the head does something)
    torch.testing.assert_close(vae.decode(z, plan), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("motion", ["flow", "match"])
def test_the_head_learns_to_carry_detail_the_decoder_lost(motion):
    """A texture moving one pixel a frame, its later frames blurred (as a decoder draws them): a
    hundred steps teach the head to carry frame 0's detail along, well below the blurred frames' error."""
    torch.manual_seed(0)
    noise = torch.rand(4, 3, 22, 42, generator=torch.Generator().manual_seed(3)) * 2 - 1
    tex = torch.nn.functional.avg_pool2d(noise, 3, stride=1) * 3  # some structure a 3x3 blur leaves
    truth = torch.stack([tex[..., t:t + 20] for t in range(5)], dim=2)  # [4, 3, 5, 20, 20], content moves left
    blurred = torch.nn.functional.avg_pool3d(truth, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    y = torch.cat([truth[:, :, :1], blurred[:, :, 1:]], dim=2)  # frame 0 sharp, as the decoder's frame 0
    head = CarryHead(16, motion=motion)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    inner = (slice(None), slice(None), slice(1, None), slice(4, -4), slice(4, -4))  # later frames, away from edges
    before = (y - truth)[inner].abs().mean().item()
    for _ in range(100):
        loss = (head(y) - truth)[inner].abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = (head(y) - truth)[inner].abs().mean().item()
    assert after < 0.5 * before, (before, after)


def test_a_carry_head_is_added_to_a_trained_vae(tmp_path, tiny_model_dir):
    """vae.init_from a VAE without a head, into a recipe with one: the trained weights are kept and
    the head is new (its start: flow 0); any other difference in the config is still an error."""
    import dataclasses

    from kinema.errors import KinemaError
    from kinema.runtime import cpu_runtime
    from kinema.train.trainer import Log
    from kinema.train.vae_stage import VAEStage, load_vae, train_vae

    start = load_vae(tiny_model_dir)
    stage = VAEStage(steps=0, batch_size=1, frames=5, sample_every=0, init_from=str(tiny_model_dir))
    common = dict(seed=0, size=16, runtime=cpu_runtime("fp32"), resume=False)
    vae = train_vae(dataclasses.replace(start.cfg, carry=4), stage, run_dir=tmp_path / "a", log=Log(tmp_path / "a.txt"),
                    **common).eval()
    assert "(the carry head new)" in (tmp_path / "a.txt").read_text()
    assert vae.carry.lr_scale == stage.carry_lr_scale == 10.0  # a new head learns faster (trainer.param_groups)
    z = torch.randn(1, start.cfg.latent_channels, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z, CodingPlan()), CarryHead(4)(start.decode(z, CodingPlan())))
    with pytest.raises(KinemaError, match="config differs"):
        train_vae(dataclasses.replace(start.cfg, carry=4, base_channels=start.cfg.base_channels * 2), stage,
                  run_dir=tmp_path / "b", log=Log(tmp_path / "b.txt"), **common)
