"""Data speed: does the data path keep training fed?

    python benchmarks/data_speed.py                  # a folder of 24 generated clips, the shipped model
    python benchmarks/data_speed.py --json docs/data_speed_cpu.json

Writes a folder of MP4s (Shapes and photo-world clips of mixed sizes, lengths and frame rates), then
measures, in this process:
  decode   clips / s that kinema.data.folder decodes, samples and crops (what `kinema prepare` reads)
  prepare  clips / s that `kinema prepare` encodes into a cache (decode + VAE + text encoder)
  loader   samples / s that LatentCache.batch serves from the cache (what training reads)
  train    samples / s that a training step of the shipped recipe's denoiser consumes
and prints loader / train as the ratio the issue asks for (>= 5 means the loader is not the limit).
"""

from __future__ import annotations

import argparse
import json
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
        write_mp4(clip, root / f"clip{i:03d}.mp4", fps=(8, 12)[i % 2])


def rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--batch", type=int, default=32, help="training batch (the shipped recipe's)")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
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
    out["loader_over_train"] = out["loader_samples_per_s"] / out["train_samples_per_s"]
    for k, v in out.items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"the loader serves {out['loader_over_train']:.0f}x what training consumes "
          f"({'enough' if out['loader_over_train'] >= 5 else 'NOT enough'}: the target is 5x)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
