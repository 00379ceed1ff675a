"""Wall time and peak memory of one `kinema generate`, model load included, at each precision, and
the denoising loop against the reference implementation in the same run.

    python benchmarks/generate.py [--runs 5] [--model shapes] [--device auto] [--json out.json]

Prints first what the runtime policy sees: the CPU (or GPU), whether its bf16 is fast (measured, see
kinema/runtime.py), and the device and precision `auto` picks. Then:

1. End to end: `kinema generate PROMPT --precision P` as a fresh process, `--runs` times for each
   P in auto, fp32, bf16 (and fp16 on CUDA); median wall time and the median of each run's peak
   resident memory (from wait4's rusage; host memory, GPU memory is not in it).
2. Denoiser: kinema's MM-DiT (shipped weights) against diffusers' HunyuanVideoTransformer3DModel
   (the reference dual -> single stream MM-DiT) built with the same width, heads, depth, patch,
   RoPE split and text width, on the same inputs and device: 25 Euler steps with classifier-free
   guidance (batch 2) under each precision's autocast; median of `--runs` after one warm-up,
   printed as a ratio. Skipped without diffusers. On CUDA also kinema with `--compile` (the
   warm-up pays the compile).

To measure a CPU without fast bf16 on one that has it, cap oneDNN and ATen at AVX2 (the ISA of a
Zen 3 or a laptop; the policy's probe then measures bf16 ~50x slower and picks fp32):

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/generate.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "KINEMA_CPU_BF16")


def end_to_end(model: str, runs: int, prompt: str, device: str, precision: str) -> tuple[float, float]:
    exe = [sys.executable, "-m", "kinema.cli", "generate", prompt, "--model", model, "--device", device, "--precision", precision]
    times, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.Popen(exe + ["-o", str(Path(tmp) / f"{i}.mp4")], stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            times.append(time.perf_counter() - t0)
            if status != 0:
                raise SystemExit(f"kinema generate --precision {precision} failed with status {status}")
            peaks.append(usage.ru_maxrss / 1024)  # KiB -> MiB on Linux
    return statistics.median(times), statistics.median(peaks)


def denoiser_loops(model: str, runs: int, device: str, precisions: list[str]) -> dict[str, dict]:
    """{precision: {kinema_s, diffusers_s?, ...}} for the 25-step CFG loop of each denoiser."""
    import torch

    from kinema.flow.samplers import euler
    from kinema.flow.timesteps import sampling_schedule
    from kinema.pipelines.generate import guided_velocity, initial_noise
    from kinema.pipelines.pipeline import load_pipeline
    from kinema.runtime import resolve_runtime

    pipe = load_pipeline(model, device=device, precision="fp32")
    dev, cfg = pipe.runtime.device, pipe.cfg
    cond, uncond = pipe.encode_prompts(["a red circle moving right"]), pipe.encode_prompts([""])
    noise = initial_noise(pipe.latent_shape(cfg.frames), [0]).to(dev)
    ts = sampling_schedule(25)

    def timed(velocity_fn, rt) -> tuple[float, float]:
        out = []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(runs + 1):  # the first is a warm-up (kernel selection, caches)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            with torch.no_grad(), rt.autocast():
                euler(velocity_fn, noise.clone(), ts)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                out.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
        return statistics.median(out), peak

    try:
        from diffusers import HunyuanVideoTransformer3DModel
    except ImportError:
        HunyuanVideoTransformer3DModel = None
    ref = None
    if HunyuanVideoTransformer3DModel is not None:
        d = cfg.dit
        ref = HunyuanVideoTransformer3DModel(
            in_channels=d.in_channels, out_channels=d.in_channels, num_attention_heads=d.heads, attention_head_dim=d.head_dim,
            num_layers=d.dual_blocks, num_single_layers=d.single_blocks, num_refiner_layers=0, mlp_ratio=d.mlp_ratio,
            patch_size=d.patch[1], patch_size_t=d.patch[0], guidance_embeds=False, text_embed_dim=d.text_dim,
            pooled_projection_dim=d.text_dim, rope_axes_dim=tuple(pipe.dit.rope_axes)).eval().to(dev)
        both = [cond.text, uncond.text]
        tokens = torch.cat([t.tokens for t in both])
        mask = torch.cat([t.mask for t in both]).long()
        pooled = torch.cat([t.pooled for t in both])

        def ref_velocity(x, t):
            out = ref(torch.cat([x, x]), torch.full((2,), t * 1000.0, device=dev), tokens, mask, pooled, return_dict=False)[0]
            v_cond, v_uncond = out.float().chunk(2)
            return v_uncond + 5.0 * (v_cond - v_uncond)

    results = {}
    for precision in precisions:
        rt = resolve_runtime(dev, precision)
        r = {"kinema_params_m": sum(p.numel() for p in pipe.dit.parameters()) / 1e6}
        r["kinema_s"], r["kinema_gpu_mib"] = timed(guided_velocity(pipe.dit, cond, uncond, 5.0), rt)
        if ref is not None:
            r["diffusers_s"], r["diffusers_gpu_mib"] = timed(ref_velocity, rt)
            r["diffusers_params_m"] = sum(p.numel() for p in ref.parameters()) / 1e6
        results[rt.precision] = r
    if dev.type == "cuda":  # `--compile` on the GPU, at the precision auto picks
        from kinema.dit.transformer import MMDiT

        rt = resolve_runtime(dev, "auto")
        compiled = MMDiT(cfg.dit).to(dev).eval()
        compiled.load_state_dict(pipe.dit.state_dict())
        compiled.compile()
        r = {"kinema_params_m": results[rt.precision]["kinema_params_m"]}
        r["kinema_s"], r["kinema_gpu_mib"] = timed(guided_velocity(compiled, cond, uncond, 5.0), rt)
        results[f"{rt.precision} --compile"] = r
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", default="shapes")
    p.add_argument("--prompt", default="a red circle moving right")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    import torch

    from kinema.runtime import cpu_bf16, cpu_model, resolve_runtime

    rt = resolve_runtime(args.device, "auto")
    probe = cpu_bf16()
    capped = ", ".join(f"{k}={os.environ[k]}" for k in ISA_VARS if os.environ.get(k))
    report: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_bf16_fast": probe.native, "cpu_bf16_speedup": probe.speedup, "cpu_bf16_flags": list(probe.flags),
                    "env": capped, "device": str(rt.device), "auto_precision": rt.precision, "auto_reason": rt.reason}
    print(f"machine: {report['cpu']}, {report['cores']} cores, torch {torch.__version__}, {report['threads']} threads"
          + (f" ({capped})" if capped else ""))
    print(f"CPU bf16: {'fast' if probe.native else 'slow'}: {probe.how}; bf16 flags the OS reports: {', '.join(probe.flags) or 'none'}")
    print(f"auto picks: {rt.describe()}")

    precisions = ["fp32", "bf16"] + (["fp16"] if rt.device.type == "cuda" else [])
    print(f"\nkinema generate (17 frames 64x64, 25 Euler steps, CFG 5; fresh process: load + sample + decode + MP4), "
          f"{args.runs} runs each:")
    report["end_to_end"] = {}
    for precision in ["auto"] + precisions:
        wall, peak = end_to_end(args.model, args.runs, args.prompt, args.device, precision)
        report["end_to_end"][precision] = {"median_s": wall, "peak_mib": peak}
        label = f"auto (= {rt.precision})" if precision == "auto" else precision
        print(f"  --precision {label:14s} median {wall:.2f} s, peak host memory {peak:.0f} MiB")

    loops = denoiser_loops(args.model, args.runs, args.device, precisions)
    report["denoiser_loop"] = loops
    print(f"\ndenoising loop on {rt.device} (25 steps x CFG batch 2), median of {args.runs} after a warm-up:")
    for precision, r in loops.items():
        line = f"  {precision}: kinema {r['kinema_s']:.3f} s ({r['kinema_params_m']:.2f} M params)"
        if "diffusers_s" in r:
            line += (f", diffusers HunyuanVideoTransformer3DModel {r['diffusers_s']:.3f} s ({r['diffusers_params_m']:.2f} M params)"
                     f", ratio kinema/diffusers {r['kinema_s'] / r['diffusers_s']:.2f}")
        else:
            line += " (install diffusers for the reference comparison: pip install -e '.[bench]')"
        if rt.device.type == "cuda":
            line += f"; peak GPU memory kinema {r['kinema_gpu_mib']:.0f} MiB"
            if "diffusers_gpu_mib" in r:
                line += f", diffusers {r['diffusers_gpu_mib']:.0f} MiB"
        print(line)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
