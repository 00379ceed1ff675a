"""Given frames (kinema.flow.frames; issue 12): an image to animate, start and end frames. They are
clamped in sampling (bit for bit in the output), clean at time 0 and out of the loss in training,
and a `concat` denoiser also reads them as input channels, starting as the model it was built from."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_, tiny_recipe_dict
from PIL import Image
from test_cli import run_cli

from kinema.config import DIT_PRESETS, from_dict
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.flow.frames import KnownFrames, generated_mse
from kinema.pipelines.generate import sample_latents
from kinema.pipelines.pipeline import load_pipeline
from kinema.runtime import cpu_runtime
from kinema.train.dit_stage import DiTStage, flow_loss, given_frames, start_from
from kinema.train.trainer import seeded

CFG = DIT_PRESETS["tiny"]


def frames_of(z: torch.Tensor, index: list[int]) -> KnownFrames:
    return KnownFrames.at(z, index)


def test_known_frames_known_values():
    z = torch.arange(2 * 1 * 3 * 1 * 1, dtype=torch.float32).view(2, 1, 3, 1, 1) + 1  # [[1, 2, 3], [4, 5, 6]]
    f = KnownFrames(z, torch.tensor([[True, False, False], [False, False, True]]))
    assert f.times(torch.tensor([0.5, 0.25])).tolist() == [[0.0, 0.5, 0.5], [0.25, 0.25, 0.0]]
    assert f.clamp(torch.zeros_like(z)).flatten().tolist() == [1, 0, 0, 0, 0, 6]
    channels = f.channels()  # [latents where given, 0 elsewhere; mask]
    assert channels.shape == (2, 2, 3, 1, 1)
    assert channels[:, 0].flatten().tolist() == [1, 0, 0, 0, 0, 6]
    assert channels[:, 1].flatten().tolist() == [1, 0, 0, 0, 0, 1]
    assert KnownFrames.at(z, [0, -1]).known.tolist() == [[True, False, True]] * 2


def test_held_given_frames_known_values():
    """hold (SVD): each generated frame carries the latest given frame before it, 0 before the first."""
    z = torch.arange(2 * 1 * 4 * 1 * 1, dtype=torch.float32).view(2, 1, 4, 1, 1) + 1  # [[1, 2, 3, 4], [5, 6, 7, 8]]
    f = KnownFrames(z, torch.tensor([[True, False, True, False], [False, True, False, False]]))
    held = f.channels(hold=True)
    assert held[:, 0].flatten().tolist() == [1, 1, 3, 3, 0, 6, 6, 6]
    assert held[:, 1].flatten().tolist() == [1, 0, 1, 0, 0, 1, 0, 0]  # the mask: given frames only
    assert torch.equal(f.channels(hold=False)[:, 0].flatten(), torch.tensor([1.0, 0, 3, 0, 0, 6, 0, 0]))
    wide = KnownFrames.at(torch.randn(1, 3, 4, 2, 5), [0])  # channels and pixels are held whole
    assert torch.equal(wide.channels(hold=True)[:, :3], wide.latents[:, :, :1].expand(-1, -1, 4, -1, -1))


def test_a_guide_fills_the_generated_frames_channels():
    """camera_render's guide: generated frames carry their guide, given frames their latents."""
    z = torch.arange(4, dtype=torch.float32).view(1, 1, 4, 1, 1) + 1  # [1, 2, 3, 4]
    f = KnownFrames(z, torch.tensor([[True, False, False, True]]), guide=-z)
    assert f.channels()[:, 0].flatten().tolist() == [1, -2, -3, 4]
    assert f.channels(hold=True)[:, 0].flatten().tolist() == [1, -2, -3, 4]  # a guide stands for hold
    assert f.channels()[:, 1].flatten().tolist() == [1, 0, 0, 1]  # the mask: given frames only
    both = KnownFrames.cat([f, f.index([0])])
    assert torch.equal(both.guide, -torch.cat([z, z])) and torch.equal(both.to("cpu").index([1]).guide, -z)
    with pytest.raises(ValueError, match="every item has a guide"):
        KnownFrames.cat([f, KnownFrames(z, f.known)])
    with pytest.raises(ValueError, match="guide must be shaped"):
        KnownFrames(z, f.known, guide=z[:, :, :2])
    render = torch.ones(3, 1, 3, 1, 1)  # shown where the clip's first frame is given, on its generated frames
    known = torch.tensor([[True, False, False], [False, False, True], [True, True, False]])
    assert KnownFrames(render, known).render_guide(render).flatten().tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1]


@torch.no_grad()
def test_a_held_given_frame_reaches_later_frames_without_attention_across_time():
    """With attention within frames only, frame 2 learns of the given frame 0 through held channels
    alone; without hold_given it cannot."""
    spatial = dataclasses.replace(CFG, frame_cond="concat", attention=("spatial",))
    x, t, text = torch.randn(1, 4, 3, 4, 4), torch.rand(1, 3), random_text(1).text
    z = torch.randn(1, 4, 3, 4, 4)
    given, other = KnownFrames.at(z, [0]), KnownFrames.at(z + torch.randn_like(z), [0])
    for hold in (False, True):
        torch.manual_seed(0)
        model = randomize_(MMDiT(dataclasses.replace(spatial, hold_given=hold))).eval()
        changed = model(x, t, Conditioning(text, given)) - model(x, t, Conditioning(text, other))
        assert changed[:, :, 0].abs().max() > 1e-3  # the given frame's own token reads it either way
        assert (changed[:, :, 2].abs().max() > 1e-3) == hold


def test_hold_given_needs_concat():
    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="hold_given"):
        dataclasses.replace(CFG, frame_cond="clamp", hold_given=True)
    for bad in (dict(frame_cond="concat"), dict(camera=True), dict(camera=True, frame_cond="concat", hold_given=True)):
        with pytest.raises(KinemaError, match="camera_render"):
            dataclasses.replace(CFG, camera_render=True, **bad)
    assert dataclasses.replace(CFG, camera_render=True, camera=True, frame_cond="concat").camera_render


def test_the_loss_is_the_mean_over_generated_frames_only():
    target = torch.zeros(1, 2, 3, 2, 2)
    v = target.clone()
    v[:, :, 0] = 100.0  # wrong on the given frame only
    given = frames_of(target, [0])
    assert generated_mse(v, target, given).item() == 0.0
    v[:, :, 1] = 3.0  # and on one of the two generated frames: mean of 9 over half the generated elements
    assert generated_mse(v, target, given).item() == pytest.approx(4.5)
    assert generated_mse(v, target, None).item() == pytest.approx((100 ** 2 + 9) / 3)


@torch.no_grad()
def test_training_sees_given_frames_clean_at_time_zero():
    """flow_loss hands the denoiser x_t with the given frames at their clean values and t = 0 there."""
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.update(x=x.clone(), t=t.clone())
            return torch.zeros_like(x)

    z0 = torch.randn(2, 4, 3, 4, 4)
    given = frames_of(z0, [0])
    flow_loss(Recorder(), z0, Conditioning(random_text(2).text, given), DiTStage().timesteps, seeded(0, 0))
    assert torch.equal(seen["x"][:, :, 0], z0[:, :, 0]) and not torch.allclose(seen["x"][:, :, 1], z0[:, :, 1])
    assert (seen["t"][:, 0] == 0).all() and (seen["t"][:, 1:] > 0).all() and seen["t"].shape == (2, 3)


def test_given_frame_draws():
    z0 = torch.zeros(4000, 1, 3, 1, 1)
    f = given_frames(z0, DiTStage(first_frame=0.75, last_frame=0.25), seeded(0, 0))
    assert abs(f.known[:, 0].float().mean() - 0.75) < 0.03 and abs(f.known[:, -1].float().mean() - 0.25) < 0.03
    assert not f.known[:, 1].any()
    assert given_frames(z0, DiTStage(), seeded(0, 0)) is None  # off: nothing drawn, the stream unchanged
    z0 = torch.zeros(4000, 1, 5, 1, 1)
    f = given_frames(z0, DiTStage(first_frame=1.0, context_frames=3), seeded(0, 0))
    lead = f.known.sum(1)  # a prefix of 1 to 3 given frames, each length about a third of the clips
    assert torch.equal(f.known, torch.arange(5)[None] < lead[:, None])
    assert all(abs((lead == n).float().mean() - 1 / 3) < 0.03 for n in (1, 2, 3))


def concat_model(seed: int = 0, random_frame_in: bool = True) -> MMDiT:
    torch.manual_seed(seed)
    model = randomize_(MMDiT(dataclasses.replace(CFG, frame_cond="concat"))).eval()
    if not random_frame_in:
        torch.nn.init.zeros_(model.frame_in.weight)
        torch.nn.init.zeros_(model.frame_in.bias)
    return model


@pytest.mark.parametrize("mode", ["clamp", "concat"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_given_frames_are_bit_identical_in_the_sampled_latents(mode, sampler):
    model = concat_model() if mode == "concat" else randomize_(MMDiT(CFG)).eval()
    z = torch.randn(2, 4, 3, 4, 4)
    given = KnownFrames(z, torch.tensor([[True, False, False], [True, False, True]]))
    text = random_text(2).text
    cond, uncond = Conditioning(text, given), Conditioning(random_text(2, seed=1).text, given)
    out = sample_latents(model, cond, uncond, torch.randn(2, 4, 3, 4, 4), steps=4, guidance=3.0, sampler=sampler,
                         runtime=cpu_runtime("fp32"))
    assert torch.equal(out[0, :, 0], z[0, :, 0]) and torch.equal(out[1, :, 0], z[1, :, 0]) and torch.equal(out[1, :, 2], z[1, :, 2])
    assert not torch.allclose(out[0, :, 2], z[0, :, 2])  # generated frames are sampled, not copied


@torch.no_grad()
def test_concat_reads_the_given_latents_and_starts_as_its_source():
    """frame_in zero-initialised: the concat model equals the clamp model it was built from, given
    frames or not; once it has weights, the given latents change its output."""
    clamp = randomize_(MMDiT(CFG)).eval()
    concat = MMDiT(dataclasses.replace(CFG, frame_cond="concat")).eval()
    concat.load_state_dict(clamp.state_dict(), strict=False)
    x, t, text = torch.randn(2, 4, 3, 4, 4), torch.rand(2, 3), random_text(2).text
    given = frames_of(torch.randn(2, 4, 3, 4, 4), [0])
    torch.testing.assert_close(concat(x, t, Conditioning(text, given)), clamp(x, t, Conditioning(text, given)), rtol=0, atol=0)
    randomize_(concat.frame_in, seed=3)
    other = KnownFrames(given.latents + 1, given.known)
    assert not torch.allclose(concat(x, t, Conditioning(text, given)), concat(x, t, Conditioning(text, other)))
    no_frames = concat(x, t, Conditioning(text))  # none given: zeros in the extra channels
    torch.testing.assert_close(no_frames, concat(x, t, Conditioning(text, KnownFrames(given.latents, given.known & False))))


def test_start_from_keeps_the_new_input_at_zero_and_refuses_another_denoiser(tmp_path, tiny_model_dir):
    from kinema.errors import KinemaError

    cfg = json.loads((tiny_model_dir / "config.json").read_text())["dit"]
    model = MMDiT(from_dict(type(CFG), {**cfg, "frame_cond": "concat"}))
    torch.nn.init.ones_(model.frame_in.weight)
    start_from(model, str(tiny_model_dir))  # frame_in is not in the source: it keeps what it had
    assert model.frame_in.weight.eq(1).all()
    source = load_pipeline(tiny_model_dir, device="cpu", precision="fp32").dit
    assert torch.equal(model.patch_in.weight, source.patch_in.weight)
    with pytest.raises(KinemaError, match="differs from the recipe's model.dit beyond frame_cond"):
        start_from(MMDiT(from_dict(type(CFG), {**cfg, "dim": 64})), str(tiny_model_dir))


def test_image_to_video_through_the_pipeline_and_the_cli(tmp_path, capsys, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    first, last = (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    given = pipe.given_frames(9, first, last)
    assert given.known.tolist() == [[True, False, True]]
    z = pipe.latents(["a red circle", "a blue square"], num_frames=9, steps=2, image=first, end_image=last)
    assert torch.equal(z[:, :, 0], given.latents[:, :, 0].expand(2, -1, -1, -1))
    assert torch.equal(z[:, :, -1], given.latents[:, :, -1].expand(2, -1, -1, -1))
    # the first latent frame of a causal VAE codes the first pixel frame alone: the image itself
    torch.testing.assert_close(given.latents[:, :, 0], pipe.video_latents(first[None], 1)[:, :, 0])

    Image.fromarray(first).resize((48, 40)).save(tmp_path / "first.png")
    Image.fromarray(last).convert("L").save(tmp_path / "last.png")
    code, out, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--frames", "9", "--steps", "2",
                             "--image", tmp_path / "first.png", "--end-image", tmp_path / "last.png", "-o", tmp_path / "v.mp4")
    assert code == 0 and (tmp_path / "v.mp4").is_file()
    assert "note: --image: the image is 48x40; cropped to 40x40 at the centre, then resized to the model's 32x32" in err


@pytest.mark.parametrize("mode, layer", [("concat", "frame_in"), ("tokens", "ref_in")])
def test_an_image_to_video_recipe_trains_from_a_text_to_video_model(mode, layer, tmp_path, tiny_model_dir):
    """First frames given in 90% of clips, the denoiser started from the tiny text-to-video model:
    it trains and exports with its new input layer (concat's from zero: it has learnt something)."""
    from kinema.io.weights import load_weights
    from kinema.train.recipe import Recipe, run

    r = tiny_recipe_dict(tmp_path / "run", vae_steps=0, dit_steps=4)
    r["model"]["dit"]["frame_cond"] = mode
    r["vae"]["init_from"] = str(tiny_model_dir)
    r["dit"].update(first_frame=0.9, init_from=str(tiny_model_dir))
    out = run(from_dict(Recipe, r))
    weights = load_weights(out / "dit.safetensors")
    assert weights[f"{layer}.weight"].abs().sum() > 0
    assert json.loads((out / "config.json").read_text())["dit"]["frame_cond"] == mode
    assert load_pipeline(out, device="cpu", precision="fp32").given_frames(9, np.zeros((32, 32, 3), np.uint8)).clamped \
        == (mode == "concat")


def test_psnr_known_values():
    from kinema.eval.report import PSNR_CAP, psnr

    black, white = np.zeros((2, 4, 4, 3), np.uint8), np.full((2, 4, 4, 3), 255, np.uint8)
    assert psnr(black, white) == 0.0 and psnr(black, black) == PSNR_CAP
    grey = black + 1  # mse 1: 20 log10(255)
    assert psnr(grey, black) == pytest.approx(48.1308, abs=1e-4)


def test_the_image_to_video_eval_gives_rendered_frames_and_scores_them(monkeypatch, tiny_model_dir):
    """--given ends: every clip's first and last frames are a rendered clip's; the first frame of
    the generation is the VAE's reconstruction of the given image, exactly (the clamp holds and the
    causal decoder's first frame reads the first latent frame alone)."""
    from kinema.eval.report import evaluate_shapes, format_table

    monkeypatch.setattr("kinema.eval.report.shapes.combos", lambda: [("red", "circle", "right"), ("yellow", "triangle", "up")])
    result = evaluate_shapes(str(tiny_model_dir), seeds=1, steps=2, device="cpu", precision="fp32", given="ends")
    rows = result["rows"]
    assert [r["first_psnr_recon"] for r in rows] == [100.0, 100.0]
    assert all(0 < r[k] < 100 for r in rows for k in ("first_psnr", "last_psnr", "clip_psnr"))
    assert result["settings"]["given"] == "ends" and "last frame to the end image" in format_table(result)


def tokens_model() -> MMDiT:
    torch.manual_seed(0)
    return randomize_(MMDiT(dataclasses.replace(CFG, frame_cond="tokens"))).eval()


@torch.no_grad()
def test_reference_tokens_condition_without_clamping():
    """frame_cond tokens: the given frames join the text as keys and values. A sample with none
    given is computed as without them (its reference tokens are masked); the given frame's place
    in time matters; and the sampler does not clamp, so the denoiser draws frame 0 itself."""
    model = tokens_model()
    x, t, text = torch.randn(2, 4, 3, 4, 4), torch.full((2,), 0.5), random_text(2).text
    latents = torch.randn(2, 4, 3, 4, 4)
    given = KnownFrames(latents, torch.tensor([[False, False, False], [True, False, False]]), clamped=False)
    out = model(x, t, Conditioning(text, given))
    alone = model(x[:1], t[:1], Conditioning(text.index(slice(0, 1))))
    torch.testing.assert_close(out[:1], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[1:], model(x[1:], t[1:], Conditioning(text.index(slice(1, 2)))))
    later = KnownFrames(latents[:, :, [2, 1, 0]], torch.tensor([[False] * 3, [False, False, True]]), clamped=False)
    assert not torch.allclose(model(x, t, Conditioning(text, later))[1:], out[1:])  # same latent, frame 2: moved

    given = KnownFrames.at(latents, [0])
    given.clamped = False
    z = sample_latents(model, Conditioning(text, given), Conditioning(random_text(2, seed=1).text, given),
                       torch.randn(2, 4, 3, 4, 4), steps=3, guidance=3.0, runtime=cpu_runtime("fp32"))
    assert not torch.allclose(z[:, :, 0], latents[:, :, 0])


def test_unclamped_frames_stay_in_the_loss():
    target, v = torch.zeros(1, 2, 3, 2, 2), torch.zeros(1, 2, 3, 2, 2)
    v[:, :, 0] = 3.0
    given = KnownFrames.at(target, [0])
    assert generated_mse(v, target, given).item() == 0.0
    given.clamped = False
    assert generated_mse(v, target, given).item() == pytest.approx(3.0)  # 9 over a third of the elements
