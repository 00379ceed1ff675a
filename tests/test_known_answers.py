"""Tests that know the right answer (issue 15): each catches a class of one-line bug that the
property tests let through (`python tests/planted_bugs.py` plants them and names the catcher).
The last test is the shipped model's golden generation, in the default suite."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import DIT_PRESETS
from kinema.dit.patchify import grid_positions, patchify, unpatchify
from kinema.dit.transformer import MMDiT
from kinema.flow.paths import interpolate, velocity
from kinema.flow.samplers import euler, heun
from kinema.flow.timesteps import TimestepConfig, sample_timesteps, sampling_schedule
from kinema.nn.modulation import ModulationOut, modulate
from kinema.nn.rope import default_axes, rope_angles
from kinema.train.dit_stage import flow_loss
from kinema.train.trainer import seeded

GOLDEN = Path(__file__).parent / "data" / "golden_shapes.npz"


def test_the_velocity_target_has_its_sign():
    """x_t = (1 - t) x0 + t x1, so dx_t/dt = x1 - x0: known values, and a model that returns the
    true velocity has a loss of exactly 0."""
    assert velocity(torch.zeros(2), torch.ones(2)).tolist() == [1.0, 1.0]
    assert interpolate(torch.zeros(1, 2), torch.full((1, 2), 4.0), torch.tensor([0.25])).tolist() == [[1.0, 1.0]]

    class Oracle(torch.nn.Module):  # knows the clean sample: v = (x_t - x0) / t = x1 - x0
        def forward(self, x, t, cond):
            return (x - self.z0) / t.view(-1, 1, 1, 1, 1)

    z0 = torch.randn(3, 4, 2, 2, 2, generator=seeded(0, 0))
    oracle = Oracle()
    oracle.z0 = z0
    loss = flow_loss(oracle, z0, random_text(3), TimestepConfig(kind="uniform"), seeded(0, 1))
    assert loss.item() < 1e-10


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.5, 2.0), (-1.0, 0.3)])
def test_logit_normal_timesteps_have_their_mean_and_spread(mean, std):
    t = sample_timesteps(TimestepConfig(kind="logit_normal", mean=mean, std=std), 40000, seeded(0, 0))
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - mean) < 0.05 and abs(logit.std().item() / std - 1) < 0.03


@pytest.mark.parametrize("n", [1, 4, 10])
def test_samplers_with_a_velocity_that_depends_on_t(n):
    """dx/dt = t from x(1) = 0: Euler takes v at each step's start, t = 1, (n-1)/n, ..., 1/n:
    x(0) = -(n + 1) / (2n). Heun's trapezoid is exact for a linear v, except its last step to 0,
    which is Euler: x(0) = -1/2 - 1 / (2 n^2). The times each call receives are recorded."""
    seen = {"euler": [], "heun": []}

    def v(name):
        return lambda x, t: seen[name].append(round(t, 6)) or torch.full_like(x, t)

    ts = sampling_schedule(n)
    assert euler(v("euler"), torch.zeros(1), ts).item() == pytest.approx(-(n + 1) / (2 * n), abs=1e-6)
    assert heun(v("heun"), torch.zeros(1), ts).item() == pytest.approx(-0.5 - 1 / (2 * n * n), abs=1e-6)
    grid = [round(1 - k / n, 6) for k in range(n)]  # 1, ..., 1/n
    assert seen["euler"] == grid
    assert seen["heun"] == [x for k, t in enumerate(grid) for x in ([t, grid[k + 1]] if k + 1 < n else [t])]


def test_each_rope_axis_moves_only_its_own_band():
    """head dim 32 -> axes (8, 12, 12): a step along t, h or w turns only that axis's band of angle
    pairs, by theta^(-2k / d) for pair k of the band."""
    axes = default_axes(32)
    assert axes == (8, 12, 12)
    angles = rope_angles(torch.eye(3), axes, theta=100.0)  # positions (1,0,0), (0,1,0), (0,0,1)
    bands = [slice(0, 4), slice(4, 10), slice(10, 16)]
    for axis, band in enumerate(bands):
        want = torch.zeros(16)
        d = axes[axis]
        want[band] = torch.tensor([100.0 ** (-2 * k / d) for k in range(d // 2)])
        torch.testing.assert_close(angles[axis], want)


def test_modulate_is_x_times_one_plus_scale_plus_shift():
    x = torch.tensor([[[1.0, 2.0]]])
    mod = ModulationOut(shift=torch.tensor([[[1.0, -1.0]]]), scale=torch.tensor([[[0.5, 0.0]]]), gate=None)
    assert modulate(x, mod).tolist() == [[[2.5, 1.0]]]


def test_token_order_on_an_asymmetric_grid():
    """Token t*h*w + y*w + x holds latent position (t, y, x), and its position row says (t, y, x)."""
    t, h, w = 2, 3, 4
    latent = torch.arange(t * h * w, dtype=torch.float32).view(1, 1, t, h, w)  # each voxel holds its own index
    tokens = patchify(latent, (1, 1, 1))  # [1, L, 1]
    assert tokens[0, :, 0].tolist() == list(range(t * h * w))
    pos = grid_positions((t, h, w))
    for i in (0, 5, 13, 23):
        assert pos[i].tolist() == [i // (h * w), (i // w) % h, i % w]
    x = torch.randn(1, 3, 2, 6, 8)
    tok = patchify(x, (1, 2, 2))  # patch (1, 2, 2): token (0, 1, 2) is voxels rows 2-3, columns 4-5 of frame 0
    torch.testing.assert_close(tok[0, 1 * 4 + 2].view(3, 1, 2, 2), x[0, :, 0:1, 2:4, 4:6])
    torch.testing.assert_close(unpatchify(tok, (1, 2, 2), (2, 3, 4)), x)


def test_permuting_frames_is_not_just_permuting_the_output():
    """A model with time positions must tell frame order apart: swapping two frames of the input
    does more than swap them in the output."""
    model = randomize_(MMDiT(DIT_PRESETS["tiny"]), std=0.2).eval()
    x, cond = torch.randn(1, 4, 3, 4, 4, generator=seeded(0, 0)), random_text(1)
    perm = [1, 0, 2]
    with torch.no_grad():
        a = model(x[:, :, perm], torch.tensor([0.5]), cond)
        b = model(x, torch.tensor([0.5]), cond)[:, :, perm]
    assert (a - b).abs().max() > 1e-3


GOLDEN_MODELS = {"shapes": GOLDEN, "shapes-i2v": GOLDEN.with_name("golden_shapes_i2v.npz"),
                 "photos-camera": GOLDEN.with_name("golden_photos_camera.npz")}


def golden_generation(model: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """A shipped model, fp32 on the CPU, one prompt, seed 0, 4 Euler steps at the model's guidance:
    (latent, frames). The image-to-video model is given the first frame of a fixed rendered clip of
    the prompt; the camera model a held-out photograph's clip's first frame and camera path, its
    frames with the render's detail restored."""
    from kinema.data.camera import path_features
    from kinema.data.photos import HELD_OUT, sample_photo_clip
    from kinema.data.shapes import sample_clip
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(model, device="cpu", precision="fp32")
    request = dict(prompt="a red circle moving right", num_frames=17, steps=4, seed=0)
    if model == "shapes-i2v":
        request["image"] = sample_clip(20_000, ("red", "circle", "right"))[0][0]  # a fixed clip, apart from the eval's
    if model == "photos-camera":  # a clip apart from the camera eval's (seeds 40 000 on)
        clip, path = sample_photo_clip(20_000, frames=17, size=64, held_out=True)
        request.update(prompt=HELD_OUT[path.photo], image=clip[0], camera=path_features(path, 64))
    z = pipe.latents(**request)
    frames = pipe(**request, restore_detail=True) if model == "photos-camera" else pipe.frames(z)[0]
    return z[0].numpy(), frames


@pytest.mark.parametrize("model", GOLDEN_MODELS)
def test_the_shipped_model_draws_its_golden_clip(model):
    """Any change to a part a shipped model uses (VAE, blocks, sampler, text encoder, given
    frames) moves this fixed-seed generation. Tolerances absorb fp32 differences between CPUs, not bugs."""
    z, frames = golden_generation(model)
    ref = np.load(GOLDEN_MODELS[model])
    assert np.abs(z - ref["latent"]).max() < 2e-2, np.abs(z - ref["latent"]).max()
    diff = np.abs(frames.astype(np.int16) - ref["frames"].astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 24, (diff.mean(), diff.max())
    assert math.isclose(float(frames.mean()), float(ref["frames"].mean()), abs_tol=1.0)


if __name__ == "__main__":  # python tests/test_known_answers.py [MODEL ...]: write golden references again
    import sys

    for name in sys.argv[1:] or GOLDEN_MODELS:
        z, frames = golden_generation(name)
        GOLDEN.parent.mkdir(exist_ok=True)
        np.savez_compressed(GOLDEN_MODELS[name], latent=z, frames=frames)
        print(f"wrote {GOLDEN_MODELS[name]}: latent {z.shape}, frames {frames.shape}")


def test_the_planted_bugs_still_have_their_lines():
    """tests/planted_bugs.py breaks these exact lines; if one is rewritten, update the harness."""
    import planted_bugs

    root = Path(__file__).resolve().parents[1]
    for what, file, right, _ in planted_bugs.BUGS:
        text = (root / file).read_text()
        assert all(line in text for line in ([right] if isinstance(right, str) else right)), what


def test_euler_steps_as_diffusers_flow_match_scheduler():
    """On the same sigmas, kinema's Euler sampler takes the steps of diffusers'
    FlowMatchEulerDiscreteScheduler (x <- x + (sigma_next - sigma) v). The schedules differ by
    design: diffusers ends at sigma_min before 0, kinema spaces 1 -> 0 evenly before the shift."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is a test extra (pip install -e '.[dev]')")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(8)

    def v(x, t):  # depends on x and on t
        return torch.sin(3 * x) + t * x

    x0 = torch.randn(2, 5, generator=seeded(0, 0))
    ref = x0.clone()
    for t in sched.timesteps:
        sigma = sched.sigmas[sched.index_for_timestep(t)] if hasattr(sched, "index_for_timestep") else t / 1000
        ref = sched.step(v(ref, float(sigma)), t, ref).prev_sample
    ours = euler(v, x0.clone(), sched.sigmas.float())
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
