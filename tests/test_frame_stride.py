"""The frame-stride condition (DiTConfig.frame_stride) and the long-video routes built on it
(kinema.pipelines.long: keyframe, coarse2fine; issue 12)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_, tiny_recipe_dict
from test_cli import assert_one_line_error, run_cli

from kinema.config import DIT_PRESETS, from_dict
from kinema.data import shapes
from kinema.dit.transformer import MMDiT
from kinema.errors import KinemaError
from kinema.pipelines.long import blend_in_time, stride_plan, strided_video
from kinema.pipelines.pipeline import load_pipeline

CFG = dataclasses.replace(DIT_PRESETS["tiny"], frame_stride=True)


def strided(cond, stride):
    cond.stride = torch.tensor(stride, dtype=torch.float32)
    return cond


@torch.no_grad()
def test_a_fresh_stride_layer_adds_nothing_and_a_trained_one_reads_the_stride():
    torch.manual_seed(0)
    plain = randomize_(MMDiT(DIT_PRESETS["tiny"])).eval()
    model = MMDiT(CFG).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("stride_in.") for k in missing)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    want = plain(x, t, random_text(2))
    torch.testing.assert_close(model(x, t, strided(random_text(2), [4.0, 2.0])), want, atol=1e-6, rtol=1e-6)
    randomize_(model.stride_in, seed=1)
    one, four = model(x, t, strided(random_text(2), [1.0, 1.0])), model(x, t, strided(random_text(2), [4.0, 1.0]))
    torch.testing.assert_close(model(x, t, random_text(2)), one)  # no stride given: 1, the training rate
    assert not torch.allclose(four[0], one[0]) and torch.allclose(four[1], one[1])  # per sample
    with pytest.raises(KinemaError, match=r"one number per sample, \[2\]"):
        model(x, t, strided(random_text(2), [4.0]))


def test_stride_plan_known_values():
    assert stride_plan("keyframe", 65, 17, 4) == 4  # 4 fine clips, each between keyframes 4 apart
    assert stride_plan("coarse2fine", 33, 17, 2) == 8
    with pytest.raises(KinemaError, match=r"makes 1 \+ 16 x 4 = 65 frames; use --frames 65"):
        stride_plan("keyframe", 64, 17, 4)
    with pytest.raises(KinemaError, match="divides 16 .*: 2, 4, 8, 16"):
        stride_plan("keyframe", 49, 17, 3)


def test_blend_in_time_keeps_the_taken_frames_and_blends_between():
    frames = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 100, 40)])
    dense = blend_in_time(frames, 4)
    assert len(dense) == 9 and [int(f[0, 0, 0]) for f in dense] == [0, 25, 50, 75, 100, 85, 70, 55, 40]


@pytest.fixture(scope="module")
def stride_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fine-tuned 4 steps at strides 1 and 2 with first and last frames given."""
    from kinema.train.recipe import Recipe, run

    r = tiny_recipe_dict(tmp_path_factory.mktemp("striderun") / "run", vae_steps=0, dit_steps=4)
    r["model"]["dit"]["frame_stride"] = True
    r["vae"]["init_from"] = str(tiny_model_dir)
    r["dit"].update(strides=[1, 2], first_frame=0.5, last_frame=0.5, init_from=str(tiny_model_dir))
    return run(from_dict(Recipe, r))


def test_a_stride_recipe_draws_bouncing_clips_at_each_stride(stride_model_dir):
    from safetensors.torch import load_file

    from kinema.config import ModelConfig
    from kinema.train.dit_stage import DiTStage, training_clips

    cache = load_file(str(stride_model_dir.parent / "dit" / "cache.safetensors"))
    assert set(cache["stride"].tolist()) == {1.0, 2.0}
    mc = from_dict(ModelConfig, tiny_recipe_dict(stride_model_dir)["model"])
    stage = DiTStage(num_clips=8, captions_per_combo=2, strides=(1, 2))
    render, combo, _, _, strides = training_clips("shapes", stage, mc, seed=0)
    i = int(np.flatnonzero(strides == 2)[0])
    clip = render(i)
    assert clip.shape == (9, 32, 32, 3)
    # (the same draw again: a bouncing clip of 1 + 8 x 2 frames, every second frame kept)
    rng = np.random.default_rng([0, 7])
    seen = shapes.combos(held_out=False)
    rng.integers(len(seen), size=8)
    seed = int(rng.integers(0, 2**62, size=8)[i])
    assert np.array_equal(clip, shapes.sample_bouncing_clip(seed, seen[int(combo[i])], frames=17, size=32)[0][::2])


def test_stride_one_clips_come_from_the_world_the_recipe_names():
    """stride_one_world: plain draws stride-1 clips from the plain world (straight lines) and keeps
    the other strides bouncing; bouncing (the default) draws stride 1 bouncing too."""
    from kinema.config import ModelConfig
    from kinema.train.dit_stage import DiTStage, training_clips

    mc = from_dict(ModelConfig, {"frames": 17, "height": 32, "width": 32})
    rng = np.random.default_rng([0, 7])
    seen = shapes.combos(held_out=False)
    rng.integers(len(seen), size=16)
    seeds = rng.integers(0, 2**62, size=16)
    for world in ("plain", "bouncing"):
        stage = DiTStage(num_clips=16, captions_per_combo=2, strides=(1, 4), stride_one_world=world)
        render, combo, _, _, strides = training_clips("shapes", stage, mc, seed=0)
        one, four = (int(np.flatnonzero(strides == s)[0]) for s in (1, 4))
        c1, c4 = seen[int(combo[one])], seen[int(combo[four])]
        plain = shapes.sample_clip(int(seeds[one]), c1, frames=17, size=32)[0]
        bouncing = shapes.sample_bouncing_clip(int(seeds[one]), c1, frames=17, size=32)[0]
        assert not np.array_equal(plain, bouncing)
        assert np.array_equal(render(one), plain if world == "plain" else bouncing)
        assert np.array_equal(render(four), shapes.sample_bouncing_clip(int(seeds[four]), c4, frames=65, size=32)[0][::4])
    with pytest.raises(KinemaError, match="stride_one_world"):
        DiTStage(strides=(1, 4), stride_one_world="straight")


def spied_pipeline(model_dir, monkeypatch):
    """The pipeline, and the list of (keyword arguments, output) of each of its calls."""
    pipe = load_pipeline(model_dir, device="cpu", precision="fp32")
    calls, real = [], type(pipe).__call__

    def spy(self, prompt, **kw):
        out = real(self, prompt, **kw)
        calls.append((kw, out))
        return out

    monkeypatch.setattr(type(pipe), "__call__", spy)
    return pipe, calls


def test_the_keyframe_route_gives_each_fine_clip_its_keyframes(stride_model_dir, monkeypatch):
    pipe, calls = spied_pipeline(stride_model_dir, monkeypatch)
    video = strided_video(pipe, "a red circle", 17, "keyframe", stride=2, steps=1)
    (coarse_kw, coarse), fine = calls[0], calls[1:]
    assert coarse_kw["stride"] == 2 and len(fine) == 2 and video.shape == (17, 32, 32, 3)
    assert np.array_equal(fine[0][0]["end_image"], coarse[4]) and np.array_equal(fine[1][0]["end_image"], coarse[8])
    assert np.array_equal(fine[0][0]["image"], coarse[0]) and np.array_equal(fine[1][0]["image"], fine[0][1][-1])
    # the second clip's first frame is the VAE's reconstruction of the first's last: that one is kept
    assert np.array_equal(video[:9], fine[0][1]) and np.array_equal(video[9:], fine[1][1][1:])


def test_the_coarse2fine_route_refines_the_blended_clip(stride_model_dir, monkeypatch):
    pipe, calls = spied_pipeline(stride_model_dir, monkeypatch)
    video = strided_video(pipe, "a red circle", 17, "coarse2fine", stride=2, strength=0.3, steps=1)
    (_, coarse), fine = calls[0], calls[1:]
    dense = blend_in_time(coarse, 2)
    assert video.shape == (17, 32, 32, 3) and [kw["strength"] for kw, _ in fine] == [0.3, 0.3]
    assert np.array_equal(fine[0][0]["video"], dense[:9]) and np.array_equal(fine[1][0]["video"], dense[8:])


def test_strided_routes_from_the_cli_and_their_errors(tmp_path, capsys, stride_model_dir, tiny_model_dir):
    code, out, _ = run_cli(capsys, "generate", "a red circle", "--model", stride_model_dir, "--long", "keyframe",
                           "--stride", "2", "--frames", "17", "--steps", "1", "-o", tmp_path / "k.mp4")
    assert code == 0 and "(17 frames" in out
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", stride_model_dir, "--long", "coarse2fine",
                           "--frames", "20", "--steps", "1", "-o", tmp_path / "bad.mp4")
    assert_one_line_error(code, err, "--long coarse2fine with --stride 4 makes 1 + 8 x 4 = 33 frames; use --frames 33")
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--long", "keyframe",
                           "--stride", "2", "--frames", "17", "--steps", "1", "-o", tmp_path / "bad.mp4")
    assert_one_line_error(code, err, "needs a model trained at several frame strides")
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--strength", "0.3",
                           "-o", tmp_path / "bad.mp4")
    assert_one_line_error(code, err, "--long coarse2fine")
    assert not (tmp_path / "bad.mp4").exists()
    with pytest.raises(KinemaError, match="no frame-stride condition"):
        load_pipeline(tiny_model_dir, device="cpu", precision="fp32")("a red circle", num_frames=9, steps=1, stride=2)


def test_strides_on_another_world_are_refused():
    from kinema.config import ModelConfig
    from kinema.train.dit_stage import DiTStage, training_clips

    mc = from_dict(ModelConfig, tiny_recipe_dict(Path("unused"))["model"])
    for world in ("scenes", "photos"):
        with pytest.raises(KinemaError, match="train on world shapes only"):
            training_clips(world, DiTStage(num_clips=4, strides=(1, 4)), mc, seed=0)
