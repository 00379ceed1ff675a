"""Wall time and peak memory of one default `kinema generate`, model load included, and the
denoising loop against the reference implementation in the same run.

    python benchmarks/generate.py [--runs 5] [--model shapes]

1. End to end: `kinema generate PROMPT` as a fresh process, `--runs` times; median wall time and
   the median of each run's peak resident memory (from wait4's rusage).
2. Denoiser: kinema's MM-DiT (shipped weights) against diffusers' HunyuanVideoTransformer3DModel
   (the reference dual -> single stream MM-DiT) built with the same width, heads, depth, patch,
   RoPE split and text width, on the same inputs: 25 Euler steps with classifier-free guidance
   (batch 2), bf16 autocast; median of `--runs`, printed as a ratio. Skipped without diffusers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def end_to_end(model: str, runs: int, prompt: str) -> tuple[float, float]:
    exe = [sys.executable, "-m", "kinema.cli", "generate", prompt, "--model", model]
    times, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.Popen(exe + ["-o", str(Path(tmp) / f"{i}.mp4")], stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            times.append(time.perf_counter() - t0)
            if status != 0:
                raise SystemExit(f"kinema generate failed with status {status}")
            peaks.append(usage.ru_maxrss / 1024)  # KiB -> MiB on Linux
    return statistics.median(times), statistics.median(peaks)


def denoiser_loop(model: str, runs: int) -> dict:
    import torch

    from kinema.flow.samplers import euler
    from kinema.flow.timesteps import sampling_schedule
    from kinema.pipelines.generate import guided_velocity, initial_noise
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(model)
    cfg = pipe.cfg
    cond, uncond = pipe.encode_prompts(["a red circle moving right"]), pipe.encode_prompts([""])
    noise = initial_noise(pipe.latent_shape(cfg.frames), [0])
    ts = sampling_schedule(25)

    def timed(velocity_fn) -> float:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                euler(velocity_fn, noise.clone(), ts)
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    result = {"kinema_s": timed(guided_velocity(pipe.dit, cond, uncond, 5.0)),
              "kinema_params_m": sum(p.numel() for p in pipe.dit.parameters()) / 1e6}
    try:
        from diffusers import HunyuanVideoTransformer3DModel
    except ImportError:
        return result
    d = cfg.dit
    ref = HunyuanVideoTransformer3DModel(
        in_channels=d.in_channels, out_channels=d.in_channels, num_attention_heads=d.heads, attention_head_dim=d.head_dim,
        num_layers=d.dual_blocks, num_single_layers=d.single_blocks, num_refiner_layers=0, mlp_ratio=d.mlp_ratio,
        patch_size=d.patch[1], patch_size_t=d.patch[0], guidance_embeds=False, text_embed_dim=d.text_dim,
        pooled_projection_dim=d.text_dim, rope_axes_dim=tuple(pipe.dit.rope_axes)).eval()
    both = [cond.text, uncond.text]
    tokens = torch.cat([t.tokens for t in both])
    mask = torch.cat([t.mask for t in both]).long()
    pooled = torch.cat([t.pooled for t in both])

    def ref_velocity(x, t):
        out = ref(torch.cat([x, x]), torch.full((2,), t * 1000.0), tokens, mask, pooled, return_dict=False)[0]
        v_cond, v_uncond = out.float().chunk(2)
        return v_uncond + 5.0 * (v_cond - v_uncond)

    result["diffusers_s"] = timed(ref_velocity)
    result["diffusers_params_m"] = sum(p.numel() for p in ref.parameters()) / 1e6
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", default="shapes")
    p.add_argument("--prompt", default="a red circle moving right")
    args = p.parse_args()
    import torch

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    wall, peak = end_to_end(args.model, args.runs, args.prompt)
    print(f"kinema generate (17 frames 64x64, 25 Euler steps, CFG 5, load + sample + decode + MP4): "
          f"median {wall:.2f} s, peak memory {peak:.0f} MiB over {args.runs} runs")
    r = denoiser_loop(args.model, args.runs)
    line = f"denoising loop (25 steps x CFG batch 2, bf16): kinema {r['kinema_s']:.3f} s ({r['kinema_params_m']:.2f} M params)"
    if "diffusers_s" in r:
        line += (f", diffusers HunyuanVideoTransformer3DModel {r['diffusers_s']:.3f} s ({r['diffusers_params_m']:.2f} M params)"
                 f", ratio kinema/diffusers {r['kinema_s'] / r['diffusers_s']:.2f}")
    else:
        line += " (install diffusers for the reference comparison)"
    print(line)


if __name__ == "__main__":
    main()
