"""AnimateDiff (issue 12): motion modules after the blocks of a frozen text-to-image model. Fresh,
they leave the image model as it is, frame by frame; trained, only they change."""

import copy
import dataclasses

import pytest
import torch
from conftest import random_text, randomize_, tiny_model_config

from kinema.config import DIT_PRESETS
from kinema.dit.transformer import MMDiT
from kinema.errors import KinemaError
from kinema.flow.timesteps import TimestepConfig
from kinema.runtime import cpu_runtime
from kinema.train.dit_stage import build_denoiser, flow_loss
from kinema.train.trainer import Log, OptimConfig, fit, seeded

IMAGE = DIT_PRESETS["sd3-tiny"]  # the image MM-DiT: attention within each frame
VIDEO = dataclasses.replace(IMAGE, motion_modules=True)


def image_and_video_models():
    torch.manual_seed(0)
    image = randomize_(MMDiT(IMAGE)).eval()
    video = MMDiT(VIDEO).eval()
    missing, unexpected = video.load_state_dict(image.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("motion.") for k in missing)
    return image, video


@torch.no_grad()
def test_fresh_motion_modules_draw_every_frame_as_the_image_model():
    image, video = image_and_video_models()
    x, t, cond = torch.randn(2, 4, 3, 4, 4), torch.rand(2), random_text(2)
    out = video(x, t, cond)
    for f in range(3):  # the image model on frame f alone
        torch.testing.assert_close(out[:, :, f:f + 1], image(x[:, :, f:f + 1], t, cond), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_trained_motion_modules_mix_frames_and_know_their_order():
    _, video = image_and_video_models()
    randomize_(video.motion, std=0.2, seed=1)
    x, t, cond = torch.randn(1, 4, 3, 4, 4), torch.rand(1), random_text(1)
    out = video(x, t, cond)
    moved = x.clone()
    moved[:, :, 2] += 1.0  # a change in the last frame reaches the first
    assert not torch.allclose(video(moved, t, cond)[:, :, 0], out[:, :, 0])
    swapped = video(x[:, :, [1, 0, 2]], t, cond)[:, :, [1, 0, 2]]  # time positions: order matters
    assert not torch.allclose(swapped, out, atol=1e-5)


def test_training_the_motion_modules_leaves_the_image_model_frozen(tmp_path):
    mc = tiny_model_config()
    mc.dit = VIDEO
    model = build_denoiser(mc, 0, "cpu", train_only="motion")
    randomize_(model, std=0.05, seed=2)  # a "trained" image model (a zero final layer passes no gradient back)
    before = copy.deepcopy(model.state_dict())
    z0, cond = torch.randn(4, 4, 3, 4, 4), random_text(4)
    fit(model, lambda m, s: (flow_loss(m, z0, cond, TimestepConfig(), seeded(0, s)), {}), steps=3,
        optim=OptimConfig(lr=1e-2, warmup=1), run_dir=tmp_path / "ckpt", config={}, log=Log(tmp_path / "log"),
        runtime=cpu_runtime("fp32"))
    after = model.state_dict()
    frozen = [k for k in before if not k.startswith("motion.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("motion."))


def test_motion_settings_that_cannot_work_are_one_line():
    mc = tiny_model_config()
    with pytest.raises(KinemaError, match="set model.dit.motion_modules true"):
        build_denoiser(mc, 0, "cpu", train_only="motion")
    with pytest.raises(KinemaError, match="motion_modules go after dual and single blocks"):
        dataclasses.replace(DIT_PRESETS["wan-tiny"], motion_modules=True)
