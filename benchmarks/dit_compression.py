"""What the VAE's spatial compression costs the denoiser: one training step of the shipped
recipe's MM-DiT on 4x8x8 latents (16 x 5 x 8 x 8, 80 video tokens) against 4x4x4 latents
(16 x 5 x 16 x 16, 320 video tokens), each in a fresh process.

    python benchmarks/dit_compression.py [--steps 10] [--recipe configs/shapes.yaml]

A step is what `kinema train` does per batch, on the CPU: rectified-flow loss under the autocast the
recipe's precision resolves to (`auto`: kinema.runtime's choice for this CPU),
backward, gradient clipping and AdamW, at the recipe's batch size with 24 text tokens. Prints the
median step time and the peak resident memory of each, and the 4x4x4 / 4x8x8 ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one(recipe_path: str, space: int, steps: int) -> None:
    """Child process: time `steps` training steps (after 2 warm-up steps); print JSON."""
    import torch

    from kinema.dit.transformer import Conditioning, MMDiT
    from kinema.runtime import resolve_runtime
    from kinema.text.encoders import TextStates
    from kinema.train.dit_stage import flow_loss
    from kinema.train.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    runtime = resolve_runtime("cpu", recipe.precision)
    mc, stage = recipe.model, recipe.dit
    torch.manual_seed(0)
    model = MMDiT(mc.dit)
    opt = torch.optim.AdamW(model.parameters(), lr=stage.optim.lr)
    b, lt = stage.batch_size, mc.text.max_tokens
    latent = (b, mc.dit.in_channels, (mc.frames - 1) // 4 + 1, mc.height // space, mc.width // space)
    z0 = torch.randn(latent)
    cond = Conditioning(TextStates(torch.randn(b, lt, mc.dit.text_dim), torch.ones(b, lt, dtype=torch.bool),
                                   torch.randn(b, mc.dit.text_dim)))
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with runtime.autocast():
            loss = flow_loss(model, z0, cond, stage.timesteps, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), stage.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    tokens = latent[2] * (latent[3] // mc.dit.patch[1]) * (latent[4] // mc.dit.patch[2])
    print(json.dumps({"seconds": statistics.median(times), "tokens": tokens, "latent": list(latent[1:]),
                      "runtime": runtime.describe()}))


def measure(recipe: str, space: int, steps: int) -> dict:
    exe = [sys.executable, __file__, "--child", str(space), "--steps", str(steps), "--recipe", recipe]
    proc = subprocess.Popen(exe, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"the {space}x step benchmark failed with status {status}")
    return {**json.loads(out), "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--recipe", default="configs/shapes.yaml")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return one(args.recipe, args.child, args.steps)
    import torch

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    r8, r4 = measure(args.recipe, 8, args.steps), measure(args.recipe, 4, args.steps)
    print(r8["runtime"])
    for name, r in (("4x8x8", r8), ("4x4x4", r4)):
        print(f"{name}: latent {r['latent']}, {r['tokens']} video tokens: median {r['seconds']:.3f} s per training "
              f"step, peak memory {r['peak_mib']:.0f} MiB")
    print(f"ratio 4x4x4 / 4x8x8: step time {r4['seconds'] / r8['seconds']:.2f}, peak memory {r4['peak_mib'] / r8['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
