"""Data speed: does the data path keep training fed?

    python benchmarks/data_speed.py                  # a folder of 24 generated clips, the shipped model
    python benchmarks/data_speed.py --json docs/data_speed_cpu.json

Writes a folder of MP4s (Shapes and photo-world clips of mixed sizes, aspects, lengths and frame rates), then
measures, in this process:
  decode   clips / s that kinema.data.folder decodes, samples and crops (what `kinema prepare` reads)
  prepare  clips / s that `kinema prepare` encodes into a cache (decode + VAE + text encoder)
  loader   samples / s that LatentCache.batch serves from the cache (what training reads)
  train    samples / s that a training step of the shipped recipe's denoiser consumes
and prints loader / train as the ratio the issue asks for (>= 5 means the loader is not the limit).

Then packing against bucketing, on the same clips prepared in buckets of three sizes (64x64,
48x80, 80x48) and four lengths, plus still images: a step holds `--batch` rows of the longest
clip's tokens (the memory a bucketed step of `--batch` needs for its largest bucket), and
  pad      every clip padded to the longest (no buckets)
  bucket   `--batch` clips of one bucket (kinema's LatentCache.batch): the rest of the step's memory unused
  pack     clips of any shapes packed first-fit into the rows (kinema.dit.packing) until one no longer fits
give the share of the step's tokens that belong to clips (useful tokens); and training steps of
the shipped denoiser on bucketed and on packed batches are timed, as useful tokens per second.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch


def make_folder(root: Path, n: int) -> None:
    from kinema.data.photos import sample_photo_clip
    from kinema.data.shapes import sample_clip
    from kinema.io.video import write_mp4

    for i in range(n):
        if i % 2:
            clip = sample_photo_clip(i, frames=(20, 30)[i % 4 // 2], size=(64, 96)[i % 3 % 2])[0]
        else:
            clip = sample_clip(i, frames=17, size=(48, 64)[i % 4 // 2])[0]
        s = clip.shape[1]
        if i % 3 == 1:  # wide (5:3)
            clip = clip[:, s // 5: s // 5 + s * 3 // 5]
        elif i % 3 == 2:  # tall (3:5)
            clip = clip[:, :, s // 5: s // 5 + s * 3 // 5]
        write_mp4(clip, root / f"clip{i:03d}.mp4", fps=(8, 12)[i % 2])


def make_images(root: Path, n: int) -> None:
    from PIL import Image

    from kinema.data.photos import sample_photo_clip

    for i in range(n):
        Image.fromarray(sample_photo_clip(100 + i, frames=1, size=(64, 96)[i % 2])[0][0]).save(root / f"still{i:02d}.jpg")


def fill_rows(cache, rows: int, row_tokens: int, patch, g):
    """Clips drawn one by one from the whole cache and packed first-fit into `rows` rows of
    `row_tokens` tokens until a drawn clip no longer fits: -> (latents, text, Packing)."""
    from kinema.dit.packing import Packing
    from kinema.dit.patchify import patch_grid

    means, texts = [], []
    while True:
        mean, _, text = cache.mixed_batch(1, g)
        trial = Packing.plan([math.prod(patch_grid(tuple(m.shape[1:]), patch)) for m in means + mean], row_tokens)
        if len(trial.rows) > rows:
            break
        means, texts, packing = means + mean, texts + [text], trial
    return means, texts, packing


def packing_against_bucketing(pipe, cache, batch: int, steps: int, draws: int, g) -> dict:
    from kinema.dit.patchify import patch_grid
    from kinema.dit.transformer import Conditioning
    from kinema.flow.timesteps import TimestepConfig
    from kinema.text.encoders import TextStates
    from kinema.train.dit_stage import flow_loss, packed_flow_loss

    patch = pipe.cfg.dit.patch
    tokens = {s: math.prod(patch_grid(s[1:], patch)) for s in cache.shapes}
    longest = max(tokens.values())
    share = cache.sizes / cache.sizes.sum()
    out = {"buckets": {"x".join(map(str, s)): int(n) for s, n in zip(cache.shapes, cache.sizes)},
           "row_tokens": longest, "rows": batch}
    mean_tokens = float(sum(share[i] * tokens[s] for i, s in enumerate(cache.shapes)))
    out["pad_useful"] = mean_tokens / longest  # every clip padded to the longest
    out["bucket_useful"] = mean_tokens / longest  # a bucket's batch of `batch` clips in a step sized for the largest
    useful = [fill_rows(cache, batch, longest, patch, g)[2] for _ in range(draws)]
    out["pack_useful"] = sum(sum(p.lengths) for p in useful) / (draws * batch * longest)
    out["pack_clips_per_step"] = sum(len(p.lengths) for p in useful) / draws
    out["bucket_useful_tokens_per_step"] = batch * mean_tokens
    out["pack_useful_tokens_per_step"] = out["pack_useful"] * batch * longest

    model = pipe.dit.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tcfg = TimestepConfig()

    def bucketed() -> int:
        mean, _, text = cache.batch(batch, g)
        with pipe.runtime.autocast():
            loss = flow_loss(model, pipe.vae.normalize(mean.float()), Conditioning(text), tcfg, g)
        loss.backward()
        return mean.shape[0] * tokens[tuple(mean.shape[1:])]

    def packed() -> int:
        means, texts, packing = fill_rows(cache, batch, longest, patch, g)
        text = TextStates(*(torch.cat([getattr(t, k) for t in texts]) for k in ("tokens", "mask", "pooled")))
        with pipe.runtime.autocast():
            loss = packed_flow_loss(model, [pipe.vae.normalize(m[None].float()) for m in means], Conditioning(text),
                                    tcfg, g, longest)
        loss.backward()
        return sum(packing.lengths)

    for name, step in (("bucket", bucketed), ("pack", packed)):
        step()  # warm-up
        opt.zero_grad()
        start, done = time.perf_counter(), 0
        for _ in range(steps):
            done += step()
            opt.step()
            opt.zero_grad()
        out[f"{name}_train_useful_tokens_per_s"] = rate(done, time.perf_counter() - start)
    return out


def rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--batch", type=int, default=32, help="training batch (the shipped recipe's)")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
    p.add_argument("--draws", type=int, default=200, help="packed steps drawn for the useful-token share")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from kinema.data.folder import VideoFolder
    from kinema.data.latent_cache import ClipSettings, LatentCache, prepare
    from kinema.dit.transformer import Conditioning
    from kinema.pipelines.pipeline import load_pipeline
    from kinema.train.dit_stage import flow_loss

    pipe = load_pipeline("shapes")
    cfg = pipe.cfg
    out = {"runtime": pipe.runtime.describe(), "clips": args.clips}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        make_folder(root, args.clips)
        folder = VideoFolder(root, frames=cfg.frames, height=cfg.height, width=cfg.width, fps=8,
                             time_compression=cfg.vae.time_compression)
        start = time.perf_counter()
        for i in range(len(folder)):
            folder.clip(i, 0)
        out["decode_clips_per_s"] = rate(len(folder), time.perf_counter() - start)
        settings = ClipSettings(frames=cfg.frames, height=cfg.height, width=cfg.width)
        start = time.perf_counter()
        prepare(root, Path(tmp) / "cache", pipe.vae, pipe.text_encoder, cfg.text, settings, runtime=pipe.runtime,
                log=lambda *_: None)
        out["prepare_clips_per_s"] = rate(len(folder), time.perf_counter() - start)
        cache = LatentCache(Path(tmp) / "cache")
        g = torch.Generator().manual_seed(0)
        start, served = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            cache.batch(args.batch, g)
            served += args.batch
        out["loader_samples_per_s"] = rate(served, time.perf_counter() - start)

        model = pipe.dit.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        from kinema.flow.timesteps import TimestepConfig

        def step() -> None:
            mean, _, text = cache.batch(args.batch, g)
            with pipe.runtime.autocast():
                loss = flow_loss(model, pipe.vae.normalize(mean.float()), Conditioning(text), TimestepConfig(), g)
            loss.backward()
            opt.step()
            opt.zero_grad()

        step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        out["train_samples_per_s"] = rate(args.steps * args.batch, time.perf_counter() - start)
        make_images(root, 4)
        mixed = ClipSettings(frames=cfg.frames, height=cfg.height, width=cfg.width, fps=8,
                             sizes=((64, 64), (48, 80), (80, 48)), durations=(5, 9, 13, 17))
        prepare(root, Path(tmp) / "mixed", pipe.vae, pipe.text_encoder, cfg.text, mixed, runtime=pipe.runtime,
                log=lambda *_: None)
        out["packing"] = packing_against_bucketing(pipe, LatentCache(Path(tmp) / "mixed"), args.batch, args.steps,
                                                   args.draws, g)
    out["loader_over_train"] = out["loader_samples_per_s"] / out["train_samples_per_s"]
    pk = out["packing"]
    for k, v in out.items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"the loader serves {out['loader_over_train']:.0f}x what training consumes "
          f"({'enough' if out['loader_over_train'] >= 5 else 'NOT enough'}: the target is 5x)")
    print(f"packing: {pk['pack_useful']:.0%} of a step's tokens are clips' ({pk['pack_clips_per_step']:.1f} clips per step) "
          f"against {pk['bucket_useful']:.0%} with buckets of {args.batch} clips: "
          f"{pk['pack_useful_tokens_per_step'] / pk['bucket_useful_tokens_per_step']:.2f}x the useful tokens per step; "
          f"training: {pk['pack_train_useful_tokens_per_s']:.0f} against {pk['bucket_train_useful_tokens_per_s']:.0f} "
          f"useful tokens/s ({pk['pack_train_useful_tokens_per_s'] / pk['bucket_train_useful_tokens_per_s']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
