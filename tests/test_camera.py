"""Camera control (issue 12): the camera features (kinema.data.camera) and the denoiser's camera
condition (DiTConfig.camera)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import DIT_PRESETS
from kinema.data import camera, photos
from kinema.dit.transformer import MMDiT
from kinema.errors import KinemaError
from kinema.eval import camera_oracle

CFG = dataclasses.replace(DIT_PRESETS["tiny"], camera=True)


# -- features -----------------------------------------------------------------------------------

def test_path_features_of_the_world_match_what_the_oracle_reads():
    video, path = photos.sample_photo_clip(11, held_out=True)
    want = camera.path_features(path, 64)
    got = camera.transform_features(camera_oracle.estimate_transforms(video), 64)
    assert want.shape == (17, 4) and np.abs(want[0]).max() < 1e-6
    assert np.abs(got - want).max() < 0.02  # shares of the frame, log scale, radians


def test_named_features_have_the_world_signs():
    """Each name's last-frame features must read back as that name through the oracle's rule."""
    for name in photos.MOTIONS:
        f = camera.named_features((name,), 17)[-1]
        m = np.eye(3)
        m[:2, :2] = math.exp(f[2]) * camera.rotation(f[3])
        m[:2, 2] = f[:2] * 64
        assert camera_oracle.motions_of(m, 64) == (name,)
    both = camera.named_features(("pan left", "zoom in"), 9)
    assert both.shape == (9, 4) and np.allclose(both[4], both[-1] / 2)  # linear in time
    assert both[-1][0] > 0 and both[-1][2] > 0


def test_parse_camera_and_its_errors():
    assert camera.parse_camera("pan-left,zoom-in") == ("pan left", "zoom in")
    assert camera.parse_camera(" rotate counter-clockwise ") == ("rotate counter-clockwise",)
    with pytest.raises(KinemaError, match="unknown camera motion 'tilt'"):
        camera.parse_camera("tilt")
    with pytest.raises(KinemaError, match="one of each kind"):
        camera.parse_camera("zoom-in,zoom-out")


def test_latent_features_keep_each_latent_frames_last_pixel_frame():
    f = np.arange(17 * 4, dtype=np.float32).reshape(17, 4)
    assert camera.latent_features(f, 4)[:, 0].tolist() == [0, 16, 32, 48, 64]  # pixel frames 0, 4, 8, 12, 16
    with pytest.raises(KinemaError, match="1 \\+ 4k"):
        camera.latent_features(f[:16], 4)


# -- the denoiser's camera condition --------------------------------------------------------------

def make_model(cfg=CFG) -> MMDiT:
    torch.manual_seed(0)
    return randomize_(MMDiT(cfg)).eval()


def with_camera(cond, cam):
    cond.camera = cam
    return cond


@torch.no_grad()
def test_a_fresh_camera_layer_adds_nothing():
    plain = make_model(DIT_PRESETS["tiny"])
    model = MMDiT(CFG).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("camera_in.") for k in missing)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    cam = torch.randn(2, 3, 4)
    want = plain(x, t, random_text(2))
    torch.testing.assert_close(model(x, t, with_camera(random_text(2), cam)), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model(x, t, random_text(2)), want, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_the_camera_reaches_its_own_frame_and_only_later_ones_under_causal_attention():
    model = make_model(dataclasses.replace(CFG, attention=("causal",)))
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    cam = torch.zeros(2, 3, 4)
    moved = cam.clone()
    moved[:, 1] = torch.tensor([0.3, 0.0, 0.2, 0.1])  # latent frame 1's camera
    a, b = model(x, t, with_camera(random_text(2), cam)), model(x, t, with_camera(random_text(2), moved))
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0])  # frame 0 does not see frame 1's camera
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])
    # a scalar t with a camera equals that t given per frame
    per_frame = model(x, t[:, None].expand(2, 3), with_camera(random_text(2), moved))
    torch.testing.assert_close(per_frame, b, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_a_temporal_patch_reads_its_last_frames_camera():
    model = make_model(dataclasses.replace(CFG, patch=(2, 2, 2)))
    x, t = torch.randn(1, 4, 4, 4, 4), torch.rand(1)  # 4 latent frames -> 2 token frames
    cam = torch.randn(1, 4, 4)
    first_of_pair = cam.clone()
    first_of_pair[:, [0, 2]] += 1.0  # frames 0 and 2 open their patches: not read
    torch.testing.assert_close(model(x, t, with_camera(random_text(1), cam)),
                               model(x, t, with_camera(random_text(1), first_of_pair)))
    last_of_pair = cam.clone()
    last_of_pair[:, 3] += 1.0
    assert not torch.allclose(model(x, t, with_camera(random_text(1), cam)),
                              model(x, t, with_camera(random_text(1), last_of_pair)))


def test_a_camera_of_the_wrong_shape_is_one_line():
    model = make_model()
    with pytest.raises(KinemaError, match=r"\[B, latent frames, 4\] = \[2, 3, 4\]"):
        model(torch.randn(2, 4, 3, 4, 4), torch.rand(2), with_camera(random_text(2), torch.zeros(2, 5, 4)))


# -- a camera recipe on the photo world, the pipeline and the CLI ---------------------------------

@pytest.fixture(scope="module")
def camera_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny text-to-video model fine-tuned 4 steps on the photo world with camera control and
    first frames given: the real recipe code, not a good model."""
    from conftest import tiny_recipe_dict

    from kinema.config import from_dict
    from kinema.train.recipe import Recipe, run

    r = tiny_recipe_dict(tmp_path_factory.mktemp("camrun") / "run", vae_steps=0, dit_steps=4)
    r["world"] = "photos"
    r["model"]["dit"].update(camera=True, frame_cond="concat")
    r["vae"]["init_from"] = str(tiny_model_dir)
    r["dit"].update(first_frame=0.9, init_from=str(tiny_model_dir))
    return run(from_dict(Recipe, r))


def test_a_camera_recipe_trains_on_the_photo_world_and_caches_each_clips_camera(camera_model_dir):
    from safetensors.torch import load_file

    from kinema.io.weights import load_weights

    cache = load_file(str(camera_model_dir.parent / "dit" / "cache.safetensors"))
    assert cache["camera"].shape == (8, 3, 4)  # 8 clips, 3 latent frames of 9 pixel frames
    assert torch.equal(cache["camera"][:, 0], torch.zeros(8, 4))  # frame 0 is the reference
    assert cache["camera"][:, -1].abs().sum() > 0
    weights = load_weights(camera_model_dir / "dit.safetensors")
    assert weights["camera_in.net.2.weight"].abs().sum() > 0  # it learnt something from zero


def test_camera_through_the_pipeline_and_the_cli(tmp_path, capsys, camera_model_dir, tiny_model_dir):
    from kinema.cli import main
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(camera_model_dir, device="cpu", precision="fp32")
    randomize_(pipe.dit)  # 4 steps leave the camera's effect under fp32's resolution: the plumbing is tested
    image = photos.sample_photo_clip(0, frames=1, size=32)[0][0]
    kw = dict(num_frames=9, steps=2, seed=0, image=image)
    left, right = (pipe.latents("a cat", camera=c, **kw) for c in ("pan-left", "pan-right"))
    assert not torch.allclose(left, right)
    same = pipe.latents("a cat", camera=camera.named_features(("pan left",), 9), **kw)
    assert torch.equal(same, left)  # names and features are one condition
    assert pipe("a cat", camera="pan-left", **kw).shape == (9, 32, 32, 3)
    with pytest.raises(KinemaError, match=r"\[9, 4\]"):
        pipe("a cat", camera=np.zeros((5, 4)), **kw)
    with pytest.raises(KinemaError, match="no camera control"):
        load_pipeline(tiny_model_dir, device="cpu", precision="fp32")("a cat", num_frames=9, steps=2, camera="zoom-in")
    out = tmp_path / "cam.mp4"
    assert main(["generate", "a cat", "--model", str(camera_model_dir), "--frames", "9", "--steps", "2",
                 "--camera", "zoom-in,pan-up", "-o", str(out)]) == 0 and out.is_file()
    assert main(["generate", "a cat", "--model", str(camera_model_dir), "--camera", "dolly", "-o", str(out)]) == 2
    assert "unknown camera motion 'dolly'" in capsys.readouterr().err


def test_eval_camera_on_the_world_and_a_model(tmp_path, capsys, camera_model_dir):
    import json

    from kinema.cli import main
    from kinema.eval.camera_report import evaluate_camera

    world, kept = evaluate_camera("world", clips=3, progress=False, keep=1)
    assert len(kept) == 2 and all(v.shape == (17, 64, 64, 3) for v in kept.values())
    assert world["summary"]["clip_psnr"]["mean"] == 100.0  # the true clips against themselves (PSNR_CAP)
    assert world["summary"]["path_error"]["mean"] < 1.0
    still, _ = evaluate_camera("still", clips=3, progress=False)  # the first frame held: no camera motion at all
    assert [r["found"] for r in still["rows"]] == [[]] * 3 and still["summary"]["right"]["mean"] == 0.0
    assert still["rows"][0]["clip_psnr"] < 100.0 and still["summary"]["path_error"]["mean"] > 1.0
    out = tmp_path / "cam.json"
    assert main(["eval", "camera", "--model", str(camera_model_dir), "--clips", "2", "--steps", "2",
                 "--device", "cpu", "--precision", "fp32", "--json", str(out), "--html", str(tmp_path / "cam.html")]) == 0
    assert (tmp_path / "cam.html").read_text().count("<img") == 1 + 4  # the chart, and 2 clips x (generated, true)
    result = json.loads(out.read_text())
    assert result["summary"]["first_psnr_recon"]["mean"] == 100.0  # concat clamps the first frame: the VAE's own
    assert result["summary"]["first_psnr"]["mean"] == pytest.approx(result["summary"]["recon_psnr"]["mean"])
    # the ceiling: the VAE's reconstruction of the whole true clip (every frame, not the first alone)
    from kinema.eval.camera_oracle import judge_camera
    from kinema.eval.camera_report import EVAL_SEED
    from kinema.eval.report import psnr
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(str(camera_model_dir), device="cpu", precision="fp32")
    clip, path = photos.sample_photo_clip(EVAL_SEED, frames=pipe.cfg.frames, size=pipe.cfg.height, held_out=True)
    recon = pipe.frames(pipe.video_latents(clip, pipe.cfg.frames))[0]
    row = result["rows"][0]
    assert row["recon_clip_psnr"] == pytest.approx(np.mean([psnr(a, b) for a, b in zip(recon, clip)]))
    assert row["recon_clip_psnr"] != pytest.approx(psnr(recon[0], clip[0]))
    assert row["recon_right"] == float(judge_camera(recon, path)["right"])  # judged on the reconstruction
    assert "motions right" in capsys.readouterr().out
    assert main(["eval", "camera", "--clips", "0"]) == 2


def test_the_photos_suite_adds_the_temporal_metrics(camera_model_dir):
    from kinema.eval.suite import run_suite

    result, kept = run_suite("photos", str(camera_model_dir), clips=2, steps=1, device="cpu", precision="fp32",
                             progress=False)
    assert {"first_psnr_recon", "clip_psnr", "right", "flicker", "dynamic"} <= set(result["summary"])
    assert all("motion_smoothness" in row for row in result["rows"]) and len(kept) == 4
    assert result["settings"]["suite"] == "photos" and result["settings"]["clips"] == 2
