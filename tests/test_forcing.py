"""Diffusion forcing (issue 12, long video route (d)): one noise level per latent frame in training,
a frame-causal KV cache (kinema.nn.kv_cache) and the rollout that uses it (kinema.pipelines.long)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_
from test_cli import assert_one_line_error, run_cli

from kinema.config import DIT_PRESETS
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.errors import KinemaError
from kinema.flow.paths import interpolate
from kinema.flow.timesteps import TimestepConfig, sample_timesteps
from kinema.nn.attention import pattern_mask, video_mask
from kinema.nn.kv_cache import KVCache
from kinema.pipelines.long import forcing_plan, rollout_latents
from kinema.runtime import cpu_runtime
from kinema.train.dit_stage import flow_loss


def causal_wan(**over) -> MMDiT:
    """A tiny frame-causal Wan, with RoPE fast enough (theta 10) that a frame's position shows."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(DIT_PRESETS["wan-tiny"], attention=("causal",), **{"rope_theta": 10.0, **over})
    return randomize_(MMDiT(cfg), std=0.3).eval()  # (large weights: attention, not the skip paths, sets the output)


def test_masks_after_cached_frames_are_the_rows_of_the_whole_clips_mask():
    """Known answer: the mask of 2 new token frames after 3 cached ones is the whole 5-frame mask's
    rows of those frames (and of the text), all of its columns."""
    grid, past, s = (2, 2, 3), 3, 6
    whole = video_mask("causal", (5, 2, 3))
    torch.testing.assert_close(video_mask("causal", grid, past=past), whole[past * s:])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    whole_joint = pattern_mask("causal", (5, 2, 3), valid)  # [B, 1, 3 + 30, 3 + 30]
    rows = torch.cat([torch.arange(3), 3 + past * s + torch.arange(2 * s)])
    assert torch.equal(pattern_mask("causal", grid, valid, past=past), whole_joint[:, :, rows])
    assert video_mask("full", grid, past=past).all() and video_mask("full", grid) is None


@torch.no_grad()
@pytest.mark.parametrize("positions", [dict(), dict(rope_layout="ltx")])
def test_cached_context_gives_the_velocities_of_the_whole_sequence(positions):
    """A frame-causal cross-attention model: the new frames' velocities with the context's keys and
    values from the cache equal the last frames of one forward over [context; new], at per-frame
    times (context at 0). This fails if the new frames' RoPE positions restart at 0, or if their
    mask lets them see less or more than the cached frames."""
    model = causal_wan(**positions)
    cond = random_text(2, dim=model.cfg.text_dim)
    ctx, new = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 2, 4, 4)
    t = torch.tensor([[0.9, 0.4], [0.2, 0.7]])
    whole = model(torch.cat([ctx, new], 2), torch.cat([torch.zeros(2, 3), t], 1), cond)[:, :, 3:]
    cache = KVCache()
    model(ctx, torch.zeros(2), cond, cache=cache)
    assert cache.frames == 3 and len(cache.entries) == model.cfg.cross_blocks
    torch.testing.assert_close(model(new, t, cond, cache=cache), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(new, t, cond, cache=cache), whole, rtol=1e-5, atol=1e-5)  # reading leaves it
    shifted = model(new, t, cond)  # the same frames as the start of a clip: other positions, no context
    assert (shifted - whole).abs().max() > 1e-3


def test_the_cache_refuses_models_it_cannot_serve():
    cond = random_text(1, dim=384)
    x, t = torch.randn(1, 4, 2, 4, 4), torch.rand(1)
    full = randomize_(MMDiT(DIT_PRESETS["wan-tiny"]))
    with pytest.raises(KinemaError, match=r"frame-causal attention in every block.*set dit.attention: \[causal\]"):
        full(x, t, cond, cache=KVCache())
    mmdit = randomize_(MMDiT(dataclasses.replace(DIT_PRESETS["tiny"], attention=("causal",))))
    with pytest.raises(KinemaError, match="cross-attention denoiser"):
        mmdit(x, t, random_text(1, dim=mmdit.cfg.text_dim), cache=KVCache())
    held = causal_wan(frame_cond="concat", hold_given=True)  # held frames come from before a cached call's x
    with pytest.raises(KinemaError, match="held given frames"):
        held(x, t, cond, cache=KVCache())
    model, cache = causal_wan(), KVCache()
    model(x, t, cond, cache=cache)
    with pytest.raises(KinemaError, match="recorded for a batch of 1, not 2"):
        model(torch.cat([x, x]), torch.cat([t, t]), random_text(2, dim=384), cache=cache)


@torch.no_grad()
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_rollout_with_the_cache_equals_rollout_without(guidance):
    """The issue's test: frame-causal sampling with a KV cache equals sampling without it, chunk by
    chunk (here 2 latent frames a chunk, the last one partial), guided and not."""
    model = causal_wan()
    cond, uncond = random_text(1, dim=384, seed=1), random_text(1, dim=384, seed=2)
    first = torch.randn(1, 4, 3, 4, 4)
    kw = dict(frames=8, chunk=2, steps=3, guidance=guidance, sampler="euler", shift=1.0, runtime=cpu_runtime())
    cached = rollout_latents(model, cond, uncond, first, [7], cache=True, **kw)
    plain = rollout_latents(model, cond, uncond, first, [7], cache=False, **kw)
    assert cached.shape == (1, 4, 8, 4, 4) and torch.equal(cached[:, :, :3], first)
    torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-4)
    other = rollout_latents(model, cond, uncond, first, [8], cache=True, **kw)  # chunk noise from the seed
    assert not torch.allclose(other[:, :, 3:], cached[:, :, 3:])


def test_frame_noise_gives_each_latent_frame_its_own_time():
    """flow_loss(frame_noise=1): t [B, frames], each frame noised to its own time; frame_noise=0
    draws exactly what it drew before (t [B], then the noise), so existing recipes train as before."""
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.update(x=x, t=t)
            return torch.zeros_like(x)

    z0 = torch.randn(3, 4, 5, 2, 2)
    cond = Conditioning(random_text(3).text)
    tcfg = TimestepConfig()
    g = torch.Generator().manual_seed(0)
    flow_loss(Spy(), z0, cond, tcfg, g)
    g2 = torch.Generator().manual_seed(0)
    t = sample_timesteps(tcfg, 3, generator=g2)
    x1 = torch.randn(z0.shape, generator=g2)
    assert torch.equal(seen["t"], t) and torch.equal(seen["x"], interpolate(z0, x1, t))

    flow_loss(Spy(), z0, cond, tcfg, torch.Generator().manual_seed(0), frame_noise=1.0)
    t, x = seen["t"], seen["x"]
    assert t.shape == (3, 5) and len(set(t.flatten().tolist())) == 15
    g2 = torch.Generator().manual_seed(0)
    sample_timesteps(tcfg, 3, generator=g2), torch.rand(3, generator=g2), sample_timesteps(tcfg, 15, generator=g2)
    x1 = torch.randn(z0.shape, generator=g2)
    for f in range(5):  # known answer, frame by frame: (1 - t_f) x0 + t_f x1
        want = (1 - t[:, f, None, None, None]) * z0[:, :, f] + t[:, f, None, None, None] * x1[:, :, f]
        torch.testing.assert_close(x[:, :, f], want)


def test_forcing_plan_known_values():
    assert forcing_plan(257, 17, 4, 1) == (5, 65)
    assert forcing_plan(17, 17, 4, 4) == (5, 5)
    with pytest.raises(KinemaError, match="--chunk 5: give 1 to 4 latent frames"):
        forcing_plan(33, 17, 4, 5)
    with pytest.raises(KinemaError, match=r"makes 1 \+ 4k frames, at least 17; --frames 30 is not one: use 33"):
        forcing_plan(30, 17, 4, 1)


def test_forcing_from_the_cli(tmp_path, capsys, tiny_model_dir):
    """The tiny (MM-DiT, full attention) model rolls forward without a cache; bad requests are one line."""
    code, out, _ = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--long", "forcing",
                           "--frames", "21", "--chunk", "2", "--steps", "1", "-o", tmp_path / "long.mp4")
    assert code == 0 and "(21 frames" in out
    for args, message in ((("--frames", "22"), "--long forcing makes 1 + 4k frames, at least 9; --frames 22 is not one: use 25"),
                          (("--frames", "21", "--chunk", "3"), "--chunk 3: give 1 to 2 latent frames"),
                          (("--frames", "21", "--image", str(tmp_path / "x.png")), "no image file at")):
        code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--long", "forcing", *args,
                               "--steps", "1", "-o", tmp_path / "bad.mp4")
        assert_one_line_error(code, err, message)
    assert not (tmp_path / "bad.mp4").exists()


def test_forcing_from_an_image_keeps_it(tiny_model_dir, monkeypatch):
    """--long forcing --image: the first window starts from the image (its latent given, bit for bit,
    as in image-to-video) and the rollout carries that window on; without it the video differs."""
    from kinema.pipelines import long
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    firsts = []
    real = long.rollout_latents
    monkeypatch.setattr(long, "rollout_latents", lambda model, cond, uncond, first, *a, **k:
                        firsts.append(first) or real(model, cond, uncond, first, *a, **k))
    kw = dict(num_frames=17, route="forcing", chunk=1, steps=2, seed=0)
    video = long.generate_long(pipe, "a red circle", image=image, **kw)
    plain = long.generate_long(pipe, "a red circle", **kw)
    want = pipe.video_latents(image[None], 1)[:, :, 0]
    assert video.shape == (17, 32, 32, 3) and torch.equal(firsts[0][:, :, 0], want)
    assert not torch.equal(firsts[1][:, :, 0], want) and not np.array_equal(video, plain)


def test_a_frame_causal_model_starts_from_a_full_attention_one(tiny_model_dir):
    """dit.init_from may change the attention patterns (masks, no weights): diffusion forcing
    fine-tunes a text-to-video model into a frame-causal one."""
    import json

    from kinema.config import DiTConfig, from_dict
    from kinema.pipelines.pipeline import load_pipeline
    from kinema.train.dit_stage import start_from

    cfg = json.loads((tiny_model_dir / "config.json").read_text())["dit"]
    model = MMDiT(from_dict(DiTConfig, {**cfg, "attention": ["causal"]}))
    start_from(model, str(tiny_model_dir))
    source = load_pipeline(tiny_model_dir, device="cpu", precision="fp32").dit.state_dict()
    assert model.state_dict().keys() == source.keys()
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_the_recipe_trains_with_per_frame_noise(tmp_path, monkeypatch):
    """dit.frame_noise reaches the loss of the training loop (and a causal model trains with it)."""
    from conftest import tiny_recipe_dict

    import kinema.train.dit_stage as dit_stage
    from kinema.config import from_dict
    from kinema.train.recipe import Recipe, run

    shares, loss = [], dit_stage.flow_loss
    monkeypatch.setattr(dit_stage, "flow_loss", lambda *a, **k: shares.append(a[5] if len(a) > 5 else k.get("frame_noise")) or loss(*a, **k))
    r = tiny_recipe_dict(tmp_path / "run", vae_steps=2, dit_steps=2)
    r["model"]["dit"]["attention"] = ["causal"]
    r["dit"]["frame_noise"] = 0.5
    assert (run(from_dict(Recipe, r)) / "dit.safetensors").is_file()
    assert shares == [0.5, 0.5]


def test_the_kv_cache_benchmark_runs_both_rollouts(monkeypatch, capsys):
    """benchmarks/kv_cache.py at its smallest: both rows, and in fp32 the same latents."""
    import re
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "kv_cache.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--frames", "21", "--steps", "2", "--rounds", "1",
                                      "--device", "cpu", "--precision", "fp32"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "| with the KV cache |" in out and "| without (context recomputed each step) |" in out
    assert float(re.search(r"largest latent difference (\S+)", out).group(1)) < 1e-4
