"""`kinema prepare` and training on your own videos (kinema.data.latent_cache): a resumable,
data-parallel cache that any split and any restart make the same, refused by another VAE."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_recipe_dict
from PIL import Image

from kinema.data.latent_cache import ClipSettings, LatentCache, prepare
from kinema.data.photos import sample_photo_clip
from kinema.data.shapes import sample_clip
from kinema.errors import KinemaError
from kinema.io.video import write_gif, write_mp4
from kinema.io.weights import load_weights
from kinema.pipelines.pipeline import load_pipeline
from kinema.runtime import cpu_runtime

SETTINGS = ClipSettings(frames=9, height=32, width=32, fps=8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Mixed sizes, lengths and containers, an image, and a broken file."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(5):
        write_mp4(sample_clip(k, frames=(13, 17, 21)[k % 3], size=(48, 64)[k % 2])[0], root / f"shape{k}.mp4", fps=8)
    write_mp4(sample_photo_clip(7, frames=20, size=40)[0], root / "photo.mp4", fps=10)
    write_gif(sample_clip(9)[0], root / "anim.gif", fps=8)
    Image.fromarray(sample_photo_clip(8, frames=1, size=36)[0][0]).save(root / "still.jpg")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    (root / "captions.jsonl").write_text("\n".join(json.dumps({"file": f"shape{k}.mp4", "caption": f"clip {k}"}) for k in range(5)))
    return root


def contents(cache: LatentCache) -> dict:
    return {(shape, k): v for shape, b in cache.buckets.items() for k, v in b.items()}


def same(a: LatentCache, b: LatentCache) -> bool:
    ca, cb = contents(a), contents(b)
    return ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


def test_prepare_buckets_skips_and_reports(videos, tmp_path, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    lines = []
    counts = prepare(videos, tmp_path / "cache", pipe.vae, pipe.text_encoder, pipe.cfg.text, SETTINGS,
                     runtime=pipe.runtime, log=lines.append)
    assert counts == {"encoded": 8, "skipped": 1, "already": 0}
    assert any("broken.mp4" in line for line in lines)
    cache = LatentCache(tmp_path / "cache", pipe.vae, pipe.cfg.text)
    assert sorted(cache.shapes) == [(4, 1, 8, 8), (4, 3, 8, 8)]  # the image alone; every video one latent shape
    assert len(cache) == 8
    # the caption states are the text encoder's for each file's caption
    part = [json.loads(x) for x in (tmp_path / "cache" / "part_00000.jsonl").read_text().splitlines()]
    assert {p["file"]: p.get("caption") for p in part}["shape3.mp4"] == "clip 3"
    assert {p["file"]: p.get("skipped", "") for p in part}["broken.mp4"] != ""
    line = next(p for p in part if p["file"] == "shape3.mp4")  # exactly the states inference computes (fp32)
    shard = load_weights(tmp_path / "cache" / line["shard"])
    assert torch.equal(shard[f"tokens.{line['key']}"], pipe.text_encoder(["clip 3"]).tokens[0])
    mean, logvar, text = cache.batch(5, torch.Generator().manual_seed(0))
    assert mean.shape[0] == 5 and text.tokens.shape[0] == 5


def test_interrupted_and_split_prepares_make_the_same_cache(videos, tmp_path, tiny_model_dir, monkeypatch):
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    args = (pipe.vae, pipe.text_encoder, pipe.cfg.text, SETTINGS)
    prepare(videos, tmp_path / "whole", *args, runtime=pipe.runtime, log=lambda *_: None)
    from kinema.data import folder

    real, calls = folder.VideoFolder.clip, []

    def dies_on_the_fifth(self, i, seed=0):
        calls.append(i)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, i, seed)

    monkeypatch.setattr(folder.VideoFolder, "clip", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        prepare(videos, tmp_path / "resumed", *args, runtime=pipe.runtime, shard_size=2, log=lambda *_: None)
    monkeypatch.setattr(folder.VideoFolder, "clip", real)
    again = prepare(videos, tmp_path / "resumed", *args, runtime=pipe.runtime, shard_size=2, log=lambda *_: None)
    assert again["already"] == 4  # two shards of two were on disk
    for rank in (1, 0):  # two processes' shares, in either order
        prepare(videos, tmp_path / "split", *args, runtime=pipe.runtime, rank=rank, world=2, shard_size=3, log=lambda *_: None)
    whole = LatentCache(tmp_path / "whole")
    assert same(whole, LatentCache(tmp_path / "resumed")) and same(whole, LatentCache(tmp_path / "split"))


def test_a_cache_from_another_vae_or_settings_is_refused(videos, tmp_path, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    prepare(videos, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, SETTINGS, runtime=pipe.runtime,
            log=lambda *_: None)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.conv.bias.add_(0.1)
    with pytest.raises(KinemaError, match="another VAE"):
        LatentCache(tmp_path / "c", pipe.vae, pipe.cfg.text)
    with pytest.raises(KinemaError, match="other settings or another VAE"):
        prepare(videos, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, SETTINGS, runtime=pipe.runtime)
    with pytest.raises(KinemaError, match="not a kinema cache"):
        LatentCache(tmp_path)


def test_kinema_train_on_a_prepared_folder(videos, tmp_path, tiny_model_dir, capsys):
    """The new user's path: kinema prepare, then kinema train RECIPE --data CACHE with the model's
    VAE (vae.init_from, steps 0); the exported model generates."""
    import yaml

    from kinema.cli import main

    assert main(["prepare", str(videos), "--out", str(tmp_path / "cache"), "--model", str(tiny_model_dir),
                 "--device", "cpu", "--precision", "fp32"]) in (0, None)
    recipe = tiny_recipe_dict(tmp_path / "run", vae_steps=0, dit_steps=3)
    recipe["vae"]["init_from"] = str(tiny_model_dir)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "r.yaml"), "--data", str(tmp_path / "cache")]) in (0, None)
    out = capsys.readouterr().out
    assert "model written to" in out
    log = (tmp_path / "run" / "train_log.txt").read_text()
    assert "8 clips in 2 bucket(s)" in log and "step 3/3" in log
    frames = load_pipeline(tmp_path / "run" / "model", device="cpu")("clip 3", num_frames=9, steps=2)
    assert frames.shape == (9, 32, 32, 3) and np.isfinite(frames).all()
    # the denoiser trained on posterior samples (the default): the exported normalisation is theirs
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    std = LatentCache(tmp_path / "cache", pipe.vae, pipe.cfg.text).channel_stats(sampled=True)[1]
    exported = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["vae"]["latent_std"]
    torch.testing.assert_close(torch.tensor(exported), std)


def test_prepare_with_size_and_length_buckets(videos, tmp_path, tiny_model_dir):
    """--sizes and --durations: clips of two lengths and the image land in their own buckets,
    and a training batch always comes from one."""
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    settings = ClipSettings(frames=9, height=32, width=32, fps=8, sizes=((32, 32), (32, 48)), durations=(5, 9, 13, 17))
    prepare(videos, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, settings, runtime=pipe.runtime,
            log=lambda *_: None)
    cache = LatentCache(tmp_path / "c", pipe.vae, pipe.cfg.text)
    assert {s[1] for s in cache.shapes} == {1, 4, 5}  # the image, 13-frame clips (1.6-2 s), 17-frame ones
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        mean, _, _ = cache.batch(3, g)
        assert tuple(mean.shape[1:]) in cache.shapes


def test_a_curriculum_draws_images_first_then_clips(videos, tmp_path, tiny_model_dir):
    from kinema.train.dit_stage import DiTStage, train_dit
    from kinema.train.trainer import Log

    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    prepare(videos, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, SETTINGS, runtime=pipe.runtime,
            log=lambda *_: None)
    cache = LatentCache(tmp_path / "c")
    g = torch.Generator().manual_seed(0)
    assert {cache.batch(2, g, max_frames=1)[0].shape[2] for _ in range(6)} == {1}
    with pytest.raises(KinemaError, match="no clip of at most 0 latent frames"):
        cache.batch(2, g, max_frames=0)
    with pytest.raises(KinemaError, match="no clip of at most 1 latent frames and latent side 2"):
        cache.mixed_batch(2, g, max_frames=1, max_side=2)
    from kinema.dit.transformer import MMDiT

    seen, forward = [], MMDiT.forward
    MMDiT.forward = lambda self, x, *a: seen.append(x.shape[2]) or forward(self, x, *a)
    try:
        stage = DiTStage(steps=6, batch_size=2, data=str(tmp_path / "c"), curriculum=((0, 1), (3, 99)), log_every=3,
                         ckpt_every=6, sample_every=0)
        train_dit(pipe.cfg, stage, pipe.vae, run_dir=tmp_path / "run", seed=0, runtime=pipe.runtime, resume=False,
                  log=Log(tmp_path / "log.txt"))
    finally:
        MMDiT.forward = forward
    assert seen[:3] == [1, 1, 1] and set(seen[3:]) <= {1, 3} and 3 in seen[3:]


def test_packed_training_mixes_shapes_in_one_step(videos, tmp_path, tiny_model_dir):
    """dit.pack_tokens: each step's clips come from every bucket at once and the denoiser takes
    them packed (a list of latents of different shapes); a budget under the longest clip is one line."""
    from kinema.train.dit_stage import DiTStage, train_dit
    from kinema.train.trainer import Log

    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    settings = ClipSettings(frames=9, height=32, width=32, fps=8, sizes=((32, 32), (32, 48)), durations=(5, 9, 13, 17))
    prepare(videos, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, settings, runtime=pipe.runtime,
            log=lambda *_: None)
    before = pipe.cfg.vae.latent_mean
    from kinema.dit import transformer

    seen, packed = [], transformer.forward_packed
    transformer.forward_packed = lambda model, xs, t, cond, budget: seen.append({x.shape[1:] for x in xs}) or packed(model, xs, t, cond, budget)
    try:
        stage = DiTStage(steps=3, batch_size=6, data=str(tmp_path / "c"), pack_tokens=96, log_every=1, ckpt_every=3,
                         sample_every=0)
        # under bf16 autocast, as `precision: auto` runs on most machines (the fp16 text cache once failed there)
        train_dit(pipe.cfg, stage, pipe.vae, run_dir=tmp_path / "run", seed=0, runtime=cpu_runtime("bf16"), resume=False,
                  log=Log(tmp_path / "log.txt"))
        with pytest.raises(KinemaError, match="longest clip has 80 video tokens, over dit.pack_tokens 40"):
            train_dit(pipe.cfg, DiTStage(steps=1, batch_size=6, data=str(tmp_path / "c"), pack_tokens=40), pipe.vae,
                      run_dir=tmp_path / "run40", seed=0, runtime=pipe.runtime, resume=False, log=Log(tmp_path / "log40.txt"))
    finally:
        transformer.forward_packed = packed
    assert len(seen) == 3 and any(len(shapes) > 1 for shapes in seen)
    assert "step 3/3 loss" in (tmp_path / "log.txt").read_text()
    assert pipe.vae.cfg is pipe.cfg.vae and pipe.cfg.vae.latent_mean == before  # the caller's VAE is left as it was


def test_a_curriculum_by_length_and_resolution(tmp_path, tiny_model_dir, capsys):
    """[from_step, max latent frames, max side in pixels]: small clips first, then every bucket;
    a malformed entry is one line before any work."""
    from kinema.train.dit_stage import curriculum_limit

    assert curriculum_limit(((0, 1, 32), (3, 5)), 0, 8) == (1, 4) and curriculum_limit(((0, 1, 32), (3, 5)), 3, 8) == (5, None)
    assert curriculum_limit((), 7, 8) == (None, None)
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    folder = tmp_path / "v"
    folder.mkdir()
    for k in range(4):  # two square clips, two wide ones
        clip = sample_clip(k, frames=9, size=48)[0]
        write_mp4(clip if k % 2 else clip[:, 8:40], folder / f"c{k}.mp4", fps=8)
    settings = ClipSettings(frames=9, height=32, width=32, fps=8, sizes=((32, 32), (32, 48)))
    prepare(folder, tmp_path / "c", pipe.vae, pipe.text_encoder, pipe.cfg.text, settings, runtime=pipe.runtime,
            log=lambda *_: None)
    cache = LatentCache(tmp_path / "c")
    assert {max(s[2:]) for s in cache.shapes} == {8, 12}  # 32 and 48 pixels at the tiny VAE's factor 4
    assert set(cache.allowed(max_side=32 // 4)) == {s for s in cache.shapes if max(s[2:]) == 8}
    g = torch.Generator().manual_seed(0)
    assert {max(m.shape[2:]) for _ in range(5) for m in cache.mixed_batch(3, g, max_side=8)[0]} == {8}
    assert {max(m.shape[2:]) for _ in range(5) for m in cache.mixed_batch(3, g)[0]} == {8, 12}
    import yaml
    from test_cli import assert_one_line_error, run_cli

    r = tiny_recipe_dict(tmp_path / "run")
    r["dit"]["curriculum"] = [[0, 1, 32, 7]]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    code, _, err = run_cli(capsys, "train", tmp_path / "r.yaml")
    assert_one_line_error(code, err, "dit: curriculum entry [0, 1, 32, 7]", "max side in pixels")
    assert not (tmp_path / "run").exists()
