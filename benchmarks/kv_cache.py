"""What the KV cache saves in a diffusion-forcing rollout (kinema.nn.kv_cache): the same rollout
with the context's keys and values cached and recomputed at every step, timed in one process,
alternating, with the largest difference between the two rollouts' latents.

    python benchmarks/kv_cache.py [--arch wan] [--frames 33] [--chunk 1] [--steps 25] [--rounds 3]

The denoiser is the preset's frame-causal form (`attention: [causal]`) with random weights, at the
Shapes size (64 x 64 pixels, 16 latent channels, a window of 5 latent frames = 17 frames): speed
does not depend on the weights. Each round runs both rollouts once; the table gives the medians
and the range of the per-round ratios (uncached / cached: > 1, the cache is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from kinema.config import DIT_PRESETS
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.pipelines.long import rollout_latents
from kinema.runtime import cpu_model, resolve_runtime
from kinema.text.encoders import TextStates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="wan")
    ap.add_argument("--frames", type=int, default=33, help="pixel frames (1 + 4k); the window is 17")
    ap.add_argument("--chunk", type=int, default=1)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    if args.frames < 21 or (args.frames - 1) % 4:
        raise SystemExit(f"--frames {args.frames}: give 1 + 4k frames, at least 21 (the window is 17)")
    rt = resolve_runtime(args.device, args.precision)
    cfg = dataclasses.replace(DIT_PRESETS[args.arch], in_channels=16, attention=("causal",))
    torch.manual_seed(0)
    model = MMDiT(cfg).to(rt.device).eval()
    for p in model.parameters():  # (zero-initialised gates would leave attention out of the timing)
        torch.nn.init.normal_(p, std=0.02)
    g = torch.Generator().manual_seed(0)

    def text(n: int) -> Conditioning:
        return Conditioning(TextStates(torch.randn(1, n, cfg.text_dim, generator=g), torch.ones(1, n, dtype=torch.bool),
                                       torch.randn(1, cfg.text_dim, generator=g)).to(rt.device))

    cond, uncond = text(12), text(12)
    first = torch.randn(1, 16, 5, 8, 8, generator=g).to(rt.device)
    frames = 1 + (args.frames - 1) // 4
    kw = dict(frames=frames, chunk=args.chunk, steps=args.steps, guidance=args.guidance, sampler="euler", shift=1.0,
              runtime=rt)
    print(f"{cpu_model() if rt.device.type == 'cpu' else rt.describe()}; torch {torch.__version__}; {rt.precision}")
    print(f"{args.arch} (causal), {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; {args.frames} frames "
          f"= {frames} latent frames, window 5, chunk {args.chunk}, {args.steps} steps, guidance {args.guidance}")
    times = {True: [], False: []}
    out = {}
    for _ in range(args.rounds):
        for cached in (True, False):
            rt.synchronize()
            t0 = time.perf_counter()
            out[cached] = rollout_latents(model, cond, uncond, first, [0], cache=cached, **kw)
            rt.synchronize()
            times[cached].append(time.perf_counter() - t0)
    ratios = [u / c for c, u in zip(times[True], times[False])]
    new = frames - 5
    print("| rollout | seconds (median) | per new latent frame |")
    print("|---|---:|---:|")
    for cached in (True, False):
        t = statistics.median(times[cached])
        print(f"| {'with the KV cache' if cached else 'without (context recomputed each step)'} | {t:.2f} | {t / new:.3f} |")
    print(f"speed-up (without / with): {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
          f"largest latent difference {(out[True] - out[False]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
