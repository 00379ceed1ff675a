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


def test_warp_moves_the_picture_as_the_features_say():
    """Known answers: a shift of 8 px to the right and 4 px down moves the content by exactly that;
    still features give the image back; the held-out world's clips are their first frame warped
    along the path's features, wherever that frame saw the content."""
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    f = np.zeros((3, 4), dtype=np.float32)
    f[1, :2] = 8 / 40, 4 / 32  # shares of each side
    out = camera.warp(image, f)
    assert out.shape == (3, 32, 40, 3) and np.array_equal(out[0], image)
    assert np.array_equal(out[1, 4:, 8:], image[:-4, :-8])
    assert np.array_equal(out[1, :4, 8:], np.broadcast_to(image[:1, :-8], (4, 32, 3)))  # the border repeated
    square = image[:32, :32]
    turn = np.zeros((1, 4), dtype=np.float32)
    turn[0, 3] = math.pi / 2  # content at s R(theta) p: right of the centre goes below it (y points down)
    assert np.abs(camera.warp(square, turn)[0].astype(int) - np.rot90(square, -1)).max() <= 1
    rows, cols = np.mgrid[0:32, 0:40] + 0.5  # a ramp: bilinear sampling is exact on it
    ramp = np.repeat((2 * rows + 3 * cols)[..., None], 3, axis=-1)
    zoom = np.zeros((1, 4), dtype=np.float32)
    zoom[0, 2] = math.log(2.0)  # zoom in 2x: frame pixel q shows the image at centre + (q - centre) / 2
    want = 2 * (16 + (rows - 16) / 2) + 3 * (20 + (cols - 20) / 2)
    assert np.abs(camera.warp(ramp.astype(np.uint8), zoom)[0, ..., 0] - want).max() <= 1
    clip, path = photos.sample_photo_clip(3, held_out=True)
    warped = camera.warp(clip[0], camera.path_features(path, 64))
    inner = slice(20, 44)  # the middle of the frame stays in view along the path
    assert np.abs(warped[:, inner, inner].astype(int) - clip[:, inner, inner]).mean() < 8
    still = np.repeat(clip[:1], 17, axis=0)
    assert np.abs(still[:, inner, inner].astype(int) - clip[:, inner, inner]).mean() > 12


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


def test_a_camera_render_recipe_caches_each_clips_render_and_the_pipeline_reads_it(tmp_path, camera_model_dir,
                                                                                    tiny_model_dir, monkeypatch):
    """dit.camera_render: the cache holds the VAE's latents of each clip's first frame warped along
    its path (known answer for clip 0); training shows the denoiser its clip's render; the pipeline
    shows it the same render of the given image; a cache made without renders is refused."""
    import shutil

    from kinema.train import dit_stage

    seen = []  # what each training step's concat channels carry on generated frames
    flow_loss = dit_stage.flow_loss

    def recording(model, z0, cond, *args):
        seen.append(cond.frames)
        return flow_loss(model, z0, cond, *args)

    monkeypatch.setattr(dit_stage, "flow_loss", recording)

    from conftest import tiny_recipe_dict
    from safetensors.torch import load_file

    from kinema.config import from_dict
    from kinema.pipelines.pipeline import load_pipeline
    from kinema.train.dit_stage import training_clips
    from kinema.train.recipe import Recipe, run

    r = tiny_recipe_dict(tmp_path / "run", vae_steps=0, dit_steps=2)
    r["world"] = "photos"
    r["precision"] = "fp32"  # the known answer below re-encodes in fp32; on a bf16 CPU "auto" would cache bf16 codes
    r["model"]["dit"].update(camera=True, frame_cond="concat", camera_render=True)
    r["vae"]["init_from"] = str(tiny_model_dir)
    r["dit"].update(first_frame=0.9, init_from=str(tiny_model_dir))
    recipe = from_dict(Recipe, r)
    model_dir = run(recipe)
    cache = load_file(str(tmp_path / "run" / "dit" / "cache.safetensors"))
    render, latent = cache["render_mean"].float(), cache["latent_mean"].float()
    assert render.shape == latent.shape == (8, 4, 3, 8, 8)
    assert torch.allclose(render[:, :, 0], latent[:, :, 0])  # frame 0 is the first frame itself
    assert not torch.allclose(render[:, :, -1], latent[:, :, -1], atol=1e-3)  # later: the render, not the clip
    pipe = load_pipeline(model_dir, device="cpu", precision="fp32")
    wanted = pipe.vae.normalize(render)  # [8, C, t, h, w]: each cached clip's render, as training normalises it
    given = [(f, b) for f in seen for b in range(f.known.shape[0]) if f.known[b, 0]]
    assert seen and given and all(f.guide is not None for f in seen)
    for f, b in given:  # a clip given its first frame reads that clip's render on every later frame
        assert torch.equal(f.guide[b, :, 0], torch.zeros_like(f.guide[b, :, 0]))
        assert min((f.guide[b, :, 1:] - wanted[:, :, 1:]).abs().flatten(1).amax(1)) < 1e-5
    clip_of, _, _, features, _ = training_clips("photos", recipe.dit, recipe.model, recipe.seed)
    image = clip_of(0)[0]
    seen = torch.from_numpy(camera.warp(image, features[0])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    assert torch.allclose(render[0], pipe.vae.encode(seen)[0][0], atol=2e-3)  # (fp16 in the cache)
    given = pipe.given_frames(9, image)
    guide = pipe.camera_render(image, features[0], 9, given)
    want = pipe.video_latents(camera.warp(image, features[0]), 9)
    assert torch.equal(guide[:, :, 0], torch.zeros_like(guide[:, :, 0])) and torch.equal(guide[:, :, 1:], want[:, :, 1:])
    still = pipe.camera_render(image, None, 9, given)  # no camera: the image held
    assert torch.allclose(still[:, :, 1:], pipe.video_latents(np.repeat(image[None], 9, axis=0), 9)[:, :, 1:])
    randomize_(pipe.dit)
    kw = dict(num_frames=9, steps=2, seed=0, image=image, camera=features[0])
    rendered = pipe.latents("a cat", **kw)
    pipe.cfg.dit.camera_render = False  # the same denoiser without the render in its channels
    assert not torch.allclose(rendered, pipe.latents("a cat", **kw))
    from kinema.eval.camera_report import EVAL_SEED, clip_psnr, evaluate_camera

    result, _ = evaluate_camera(str(model_dir), clips=1, steps=1, device="cpu", precision="fp32", progress=False)
    clip, path = photos.sample_photo_clip(EVAL_SEED, frames=9, size=32, held_out=True)
    pipe = load_pipeline(model_dir, device="cpu", precision="fp32")
    guide = pipe.frames(pipe.video_latents(camera.warp(clip[0], camera.path_features(path, 32)), 9))[0]
    assert result["rows"][0]["render_clip_psnr"] == pytest.approx(clip_psnr(guide, clip))
    assert result["settings"]["guidance"] == pipe.cfg.guidance  # none asked for: the model's, and recorded
    old = tmp_path / "old"  # a cache from a camera model without renders
    (old / "dit").mkdir(parents=True)
    shutil.copy(camera_model_dir.parent / "dit" / "cache.safetensors", old / "dit" / "cache.safetensors")
    r["run_dir"] = str(old)
    with pytest.raises(KinemaError, match="holds no camera renders"):
        run(from_dict(Recipe, r))


def test_restoring_detail_puts_the_render_back_where_the_first_frame_saw_it(tmp_path, capsys, camera_model_dir):
    """--restore-detail adds render - VAE(render) where the first frame saw the content: frame 0 comes
    out as the given image itself; pixels the first frame never saw keep the model's values; the
    rest move by that residual (known values); a model without renders, or no image, is one line."""
    from kinema.cli import main
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(camera_model_dir, device="cpu", precision="fp32")
    pipe.cfg.dit.camera_render = True  # the same denoiser reading a render in its concat channels
    randomize_(pipe.dit)
    image = photos.sample_photo_clip(3, frames=1, size=32)[0][0]
    features = camera.named_features(("pan left",), 9)
    kw = dict(num_frames=9, steps=2, seed=0, image=image, camera=features)
    plain, restored = pipe("a cat", **kw), pipe("a cat", restore_detail=True, **kw)
    assert np.abs(plain[0].astype(int) - image).max() > 8  # the VAE's reconstruction of the image...
    assert np.abs(restored[0].astype(int) - image).max() <= 1  # ...becomes the image (rounding apart)
    seen = camera.warp(np.full_like(image, 255), features, padding="zeros")
    assert (seen[-1] == 0).any() and (seen[-1] == 255).any()  # the pan shows content the first frame did not
    assert np.array_equal(restored[seen == 0], plain[seen == 0])  # there: the model's own pixels
    render = camera.warp(image, features)
    coded = pipe.frames(pipe.video_latents(render, 9))[0]
    full = seen == 255
    want = np.clip(plain.astype(int) + render.astype(int) - coded.astype(int), 0, 255)
    assert np.abs(restored[full].astype(int) - want[full]).max() <= 1  # seen: plus the render's lost detail
    pipe.cfg.dit.camera_render = False
    with pytest.raises(KinemaError, match="camera_render model"):
        pipe("a cat", restore_detail=True, **kw)
    assert main(["generate", "a cat", "--model", str(camera_model_dir), "--frames", "9", "--steps", "2",
                 "--restore-detail", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "needs a dit.camera_render model and an image" in capsys.readouterr().err
    from kinema.eval.camera_report import evaluate_camera

    with pytest.raises(KinemaError, match="not --model warp"):
        evaluate_camera("warp", clips=1, restore_detail=True)


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
    warp, _ = evaluate_camera("warp", clips=3, progress=False)  # the first frame moved along the true path
    for a, b in zip(warp["rows"], still["rows"]):
        assert a["clip_psnr"] > b["clip_psnr"] + 3 and a["path_error"] < b["path_error"]
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
