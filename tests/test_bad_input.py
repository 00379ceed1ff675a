"""The bad-input table (issue 15): every wrong recipe value is one line naming the field, the value
and what would be valid, exit 2, before any work (the run directory is never created)."""

import copy
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe_dict
from PIL import Image
from test_cli import assert_one_line_error, run_cli

from kinema.train.recipe import check_sizes, load_recipe

RECIPE_CASES = [
    # (path in the recipe, value, words the error line must hold)
    ("dit.optim.lr", "fast", ["dit.optim.lr", "expected a number", "'fast'"]),
    ("dit.optim.lr", float("nan"), ["dit.optim.lr", "expected a finite number"]),
    ("dit.optim.lr", 0.0, ["lr 0.0: must be above 0"]),
    ("dit.ckpt_every", 0, ["dit", "ckpt_every 0: must be at least 1"]),
    ("dit.log_every", 0, ["log_every 0: must be at least 1"]),
    ("dit.batch_size", 0, ["batch_size 0: must be at least 1"]),
    ("vae.batch_size", 0, ["vae", "batch_size 0: must be at least 1"]),
    ("dit.steps", -5, ["steps -5: must be at least 1"]),
    ("dit.steps", 0, ["steps 0: must be at least 1"]),
    ("dit.steps", True, ["dit.steps", "expected an integer", "True"]),
    ("vae.steps", -1, ["vae", "steps -1: must be at least 0"]),
    ("vae_decoder.keep_checkpoints", 0, ["vae_decoder", "keep_checkpoints 0: must be at least 1"]),
    ("dit.caption_dropout", 2, ["caption_dropout 2.0: must be in [0, 1]"]),
    ("dit.ema_decay", 1.0, ["ema_decay 1.0: must be in [0, 1)"]),
    ("dit.num_clips", 0, ["num_clips 0: must be at least 1"]),
    ("dit.timesteps.kind", "cosine", ["timesteps", "kind 'cosine': use one of uniform, logit_normal, u_shaped"]),
    ("dit.timesteps.std", -1, ["std -1.0: must be above 0"]),
    ("dit.optim.betas", [0.9, 1.5], ["betas", "two numbers in [0, 1)"]),
    ("model.dit.heads", 3, ["heads 3: must divide the width dim 32"]),
    ("model.height", 62, ["model.height 62 is not a multiple of the VAE's spatial factor 4"]),
    ("model.height", 36, ["model.height gives 9 latent pixels, not a multiple of the denoiser's patch 2"]),
    ("model.frames", 10, ["model.frames 10 is not 1 + 4k"]),
    ("model.frames", 100001, ["model.frames 100001: at most 4097 frames"]),
    ("model.frames", 0, ["frames 0: must be at least 1"]),
    ("model.vae.carry", -1, ["vae.carry -1: the carry head's channels, 0 for none"]),
    ("model.dit.in_channels", 8, ["model.dit.in_channels 8 is not the VAE's latent_channels 4"]),
    ("vae.length_schedule", [[0, 9, 0]], ["length_schedule[0] [0, 9, 0]"]),
    ("seed", "one", ["seed", "expected an integer"]),
    ("dit.curriculum", [[0]], ["dit: curriculum entry [0]"]),
    ("dit.first_frame", 1.5, ["first_frame 1.5: must be in [0, 1]"]),
    ("dit.context_frames", 0, ["context_frames 0: must be at least 1"]),
    ("dit.train_only", "all", ["train_only 'all': use motion, or leave it unset"]),
    ("model.dit.frame_cond", "ref", ["frame_cond 'ref': use 'clamp' or 'concat' or 'tokens'"]),
    ("dit.init_from", "/no/such/model", ["dit.init_from /no/such/model: no dit.safetensors there"]),
]


def set_path(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return d


@pytest.mark.parametrize("path, value, words", RECIPE_CASES, ids=[f"{p}={v!r}" for p, v, _ in RECIPE_CASES])
def test_a_bad_recipe_value_is_one_line_before_any_work(path, value, words, tmp_path, capsys):
    recipe = set_path(tiny_recipe_dict(tmp_path / "run"), path, value)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(capsys, "train", tmp_path / "r.yaml")
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config", sorted(Path(__file__).parents[1].glob("configs/**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_passes_the_checks(config):
    recipe = load_recipe(config)
    if recipe.dit.init_from and recipe.dit.init_from.startswith("runs/") and not Path(recipe.dit.init_from).exists():
        # another recipe's output (AnimateDiff's image model, configs/shapes_sd3.yaml): not built in a fresh clone
        recipe.dit.init_from = None
    check_sizes(recipe)


GENERATE_CASES = [
    (["--guidance", "nan"], ["guidance nan: use a number from 0 to 100"]),
    (["--guidance", "1e30"], ["guidance 1e+30"]),
    (["--guidance", "-1"], ["guidance -1.0"]),
    (["--shift", "inf"], ["shift inf: use a number above 0"]),
    (["--steps", "100000"], ["steps 100000: use 1 to 1000"]),
    (["--fps", "0"], ["--fps 0: use 1 to 240"]),
    (["--fps", "-5"], ["--fps -5"]),
    (["--seed", "-1"], ["seed -1: use whole numbers from 0 to 2**63 - 1"]),
    (["--seed", str(10 ** 23)], ["seed 1000000000000000000000"]),
    (["-o", "OUT/out"], ["kinema writes .mp4 files here; use a path ending in .mp4"]),
    (["-o", "OUT/out.xyz"], ["use a path ending in .mp4"]),
    (["-o", "OUT/out.gif"], ["use a path ending in .mp4 (a GIF: --gif PATH)"]),
    (["-o", "OUT/v.mp4", "--gif", "OUT/v.mp4"], ["--gif", "use a path ending in .gif"]),
    (["-o", "READONLY/v.mp4"], ["cannot write", "permission denied"]),
    (["-o", "OUT"], ["is a directory"]),
    (["--image", "IMGS/none.png"], ["no image file at"]),
    (["--image", "IMGS/bad.png"], ["cannot read the image", "give a PNG or JPEG file"]),
    (["--end-image", "IMGS/grey.png", "--frames", "1"], ["--end-image needs at least two latent frames: --frames 5 or more"]),
    (["--long", "keyframes"], ["--long 'keyframes': built routes are ar"]),
    (["--long", "ar", "--frames", "21"], ["makes 9 + 8n frames; --frames 21 is not one"]),
    (["--long", "ar", "--frames", "25", "--context", "0"], ["--context 0: give at least 1 latent frame"]),
    (["--long", "ar", "--end-image", "IMGS/grey.png"], ["--long continues a clip chunk by chunk: it takes --image"]),
    (["--long", "keyframe", "--frames", "32"], ["--long keyframe with --stride 4 makes 1 + 8 x 4 = 33 frames"]),
    (["--long", "coarse2fine", "--stride", "3", "--frames", "25"], ["--stride 3", "2, 4, 8"]),
    (["--long", "keyframe", "--frames", "33"], ["needs a model trained at several frame strides"]),
    (["--long", "ar", "--camera", "zoom-in"], ["it takes --image, not --video, --end-image, --camera"]),
    (["--long", "ar", "--restore-detail"], ["not --video, --end-image, --camera or --restore-detail"]),
    (["--camera", "dolly-in"], ["unknown camera motion 'dolly-in'", "pan-left"]),
    (["--camera", "zoom-in,zoom-out"], ["at most one of each kind"]),
    (["--camera", "pan-left"], ["this model has no camera control"]),
    (["--strength", "0.3"], ["--strength sets how much of an input video to keep"]),
]


@pytest.mark.parametrize("extra, words", GENERATE_CASES, ids=[" ".join(a) for a, _ in GENERATE_CASES])
def test_a_bad_generate_request_is_one_line_and_writes_nothing(extra, words, tmp_path, capsys, tiny_model_dir):
    import os

    (tmp_path / "OUT").mkdir()
    (tmp_path / "READONLY").mkdir(mode=0o500)
    if os.access(tmp_path / "READONLY", os.W_OK) and "READONLY/v.mp4" in extra:
        pytest.skip("running as a user who can write anywhere (root): no read-only directory to test")
    (tmp_path / "IMGS").mkdir()
    (tmp_path / "IMGS" / "bad.png").write_bytes(b"not a picture")
    Image.new("L", (40, 30), 128).save(tmp_path / "IMGS" / "grey.png")  # (grey, another size: fitted, not refused)
    extra = [a.replace("OUT", str(tmp_path / "OUT")).replace("READONLY", str(tmp_path / "READONLY"))
             .replace("IMGS", str(tmp_path / "IMGS")) for a in extra]
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--frames", "9", "--steps", "1", *extra]
    if "-o" not in extra:
        args += ["-o", str(tmp_path / "OUT" / "v.mp4")]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *words)
    assert not any((tmp_path / "OUT").iterdir()) and not any((tmp_path / "READONLY").iterdir())  # no empty file left


def test_a_prompt_that_is_not_utf8_is_one_line(tmp_path, capsys, tiny_model_dir):
    bad = b"a red \xff circle".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    code, _, err = run_cli(capsys, "generate", bad, "--model", tiny_model_dir, "--frames", "9", "--steps", "1",
                           "-o", tmp_path / "v.mp4")
    assert_one_line_error(code, err, "is not valid UTF-8 text")
    assert not (tmp_path / "v.mp4").exists()


def test_a_sampler_that_blows_up_is_an_error_not_a_black_video(tmp_path, tiny_model_dir, monkeypatch):
    """Non-finite latents (a huge guidance through the API, a broken model) are refused, never written."""
    import torch

    from kinema.errors import KinemaError
    from kinema.pipelines import pipeline as pl

    pipe = pl.load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    monkeypatch.setattr(pl, "sample_latents", lambda *a, **k: torch.full((1, 4, 3, 8, 8), float("nan")))  # noqa: ARG005
    with pytest.raises(KinemaError, match="non-finite latents"):
        pipe("a red circle", num_frames=9, steps=1)


def test_seeds_must_match_the_prompts(tiny_model_dir):
    from kinema.errors import KinemaError
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    with pytest.raises(KinemaError, match="3 seeds for 2 prompts"):
        pipe(["a", "b"], num_frames=9, steps=1, seed=[1, 2, 3])


def test_flipped_bytes_in_a_model_are_found_before_generating(tmp_path, tiny_model_dir, capsys):
    """Model directories carry a manifest (sizes, SHA-256) that loading checks: a flipped byte in
    the tensor data, which safetensors would load without a word, is one line. The shipped model has one."""
    import shutil

    from kinema.io.weights import MANIFEST, verify_manifest
    from kinema.pipelines.registry import resolve

    assert verify_manifest(resolve("shapes")) is None  # the shipped model's files are what was committed
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    assert (model / MANIFEST).is_file()
    data = bytearray((model / "dit.safetensors").read_bytes())
    data[-5] ^= 0x01  # a mantissa bit of an fp16 weight: finite, and invisible to safetensors
    (model / "dit.safetensors").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", model, "--frames", "9", "--steps", "1",
                           "-o", tmp_path / "v.mp4")
    assert_one_line_error(code, err, "is damaged: dit.safetensors does not match its SHA-256", "--no-verify")
    assert not (tmp_path / "v.mp4").exists()
    code, _, _ = run_cli(capsys, "generate", "a red circle", "--model", model, "--frames", "9", "--steps", "1",
                         "-o", tmp_path / "v.mp4", "--no-verify")  # the opt-out: it loads
    assert code == 0 and (tmp_path / "v.mp4").is_file()


def test_non_finite_weights_are_refused(tmp_path, tiny_model_dir):
    import shutil

    import torch

    from kinema.errors import KinemaError
    from kinema.io.weights import MANIFEST, load_weights, save_weights
    from kinema.pipelines.pipeline import load_pipeline

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    state = load_weights(model / "vae.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_weights(model / "vae.safetensors", state)
    (model / MANIFEST).unlink()  # a directory from before manifests: loaded, but its weights still checked
    with pytest.raises(KinemaError, match=f"vae.safetensors holds non-finite values \\(in {key}"):
        load_pipeline(model, device="cpu")


@pytest.mark.parametrize("args, words", [
    (["generate", "a red circle", "--seed", "1e23"], ["kinema generate: argument --seed: invalid int value: '1e23'"]),
    (["generate", "a red circle", "--frames", "many"], ["--frames: invalid int value"]),
    (["train"], ["kinema train", "required: config"]),
    (["evaluate"], ["invalid choice: 'evaluate'"]),
])
def test_command_line_errors_are_one_line(args, words, capsys):
    from kinema.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert_one_line_error(e.value.code, capsys.readouterr().err, *words)


def test_a_truncated_latent_cache_is_one_line(tmp_path, tiny_model_dir):
    from kinema.data.latent_cache import ClipSettings, LatentCache, prepare
    from kinema.data.shapes import sample_clip
    from kinema.errors import KinemaError
    from kinema.io.video import write_mp4
    from kinema.pipelines.pipeline import load_pipeline

    (tmp_path / "v").mkdir()
    for k in range(2):
        write_mp4(sample_clip(k, frames=9, size=32)[0], tmp_path / "v" / f"c{k}.mp4", fps=8)
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    prepare(tmp_path / "v", tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, ClipSettings(frames=9, height=32, width=32),
            runtime=pipe.runtime, log=lambda *_: None)
    shard = next((tmp_path / "c").glob("shard*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(KinemaError, match="is damaged .*run `kinema prepare` again"):
        LatentCache(tmp_path / "c")
