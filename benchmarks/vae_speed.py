"""VAE decode memory and speed: kinema whole / streamed / tiled, against diffusers' AutoencoderKLWan.

    python benchmarks/vae_speed.py                 # memory table and the speed ratio
    python benchmarks/vae_speed.py --memory-only   # decode peak memory alone
    python benchmarks/vae_speed.py --json docs/vae_speed_cpu.json
    python benchmarks/vae_speed.py --target        # issue 10's flat-memory target alone (two decodes)
    python benchmarks/vae_speed.py --target --tile 8   # ... with tiles of 8 latent pixels, not the size policy's
    python benchmarks/vae_speed.py --target --preset 4x8x8-flat   # any preset (default: 4x8x8)
    python benchmarks/vae_speed.py --encode        # encode peak memory, streamed, against Wan's

Memory: every configuration decodes in a fresh process (random weights: memory does not depend on
them), which reports its peak resident memory (ru_maxrss) and its resident memory just before the
decode (imports, weights, the latent). "activations" is the difference, less the output buffer.
A whole-clip decode that would need more than --max-whole-gb is not run.

Speed: the --preset (default 4x8x8: 16 channels, width 32) against diffusers' AutoencoderKLWan at the
same width (base_dim 32, one residual block per level as kinema's encoder has, Wan's default
temporal layout), encode and decode of 17 frames at 64x64 and 33 frames at 128x128, the two
alternating for --rounds rounds, each on its own output of the same input. Wan decodes one latent
frame at a time with its own causal cache, as kinema's streamed path does; both run in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

FRAMES = (17, 65, 257)
SIZES = (64, 128, 256)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(impl: str, preset: str = "4x8x8"):
    torch.manual_seed(0)
    if impl == "wan":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan(base_dim=32, z_dim=16, num_res_blocks=1).eval()
    from kinema.config import VAE_PRESETS
    from kinema.vae.autoencoder import CausalVAE

    return CausalVAE(VAE_PRESETS[preset]).eval()


def child(spec: dict) -> dict:
    """Decode (or, with "encode", encode) once in this process; report memory (or, with "caches",
    what a stream carries)."""
    from kinema.vae.coding import CodingPlan

    torch.set_num_threads(spec["threads"])
    vae = build(spec["impl"], spec.get("preset", "4x8x8"))
    t, h = 1 + (spec["frames"] - 1) // 4, spec["size"] // 8
    z = torch.randn(1, 16, t, h, h)
    if spec.get("caches"):
        return {"caches_mb": stream_caches(vae, z[:, :, :3]) / 2 ** 20}
    x = torch.rand(1, 3, spec["frames"], spec["size"], spec["size"]) * 2 - 1 if spec.get("encode") else None
    plan = CodingPlan(**spec["plan"]) if spec["plan"] is not None else None
    before = rss_mb()
    with torch.no_grad():
        start = time.perf_counter()
        if x is not None:
            out = vae.encode(x, return_dict=False)[0].mode() if spec["impl"] == "wan" else vae.encode(x, plan)[0]
        elif spec["impl"] == "wan":
            out = vae.decode(z, return_dict=False)[0]
        else:
            out = vae.decode(z, plan)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    output = out.numel() * out.element_size() / 2 ** 20
    return {"peak_mb": peak, "before_mb": before, "output_mb": output,
            "activations_mb": peak - before - output, "seconds": seconds}


@torch.no_grad()
def stream_caches(vae, z: torch.Tensor) -> int:
    """The most bytes a decode's CausalCache holds streaming z one latent frame at a time (from the
    second latent frame on every conv holds its full past: the stream's steady state)."""
    from kinema.vae.causal_conv import CausalCache

    cache, most = CausalCache(), 0
    for c in range(z.shape[2]):
        vae.decoder(z[:, :, c:c + 1], cache)
        most = max(most, cache.nbytes())
    return most


def measure(spec: dict) -> dict:
    """Run `child` in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SystemExit(f"{spec}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_table(args) -> list[dict]:
    from kinema.config import VAE_PRESETS
    from kinema.vae.coding import activation_bytes, plan_coding

    cfg = VAE_PRESETS[args.preset]
    rows = []
    for size in SIZES:
        for frames in FRAMES:
            latent = (1 + (frames - 1) // 4, size // 8, size // 8)
            with torch.no_grad():
                auto = plan_coding(cfg, latent)
            plans = {"whole": {}, "streamed": {"latent_chunk": 1}, "auto": None}
            for name, plan in plans.items():
                if name == "whole" and activation_bytes(cfg, frames, size, size) > args.max_whole_gb * 2 ** 30:
                    continue
                spec = {"impl": "kinema", "frames": frames, "size": size, "plan": plan, "threads": args.threads,
                        "preset": args.preset}
                r = measure(spec)
                label = f"auto {auto}" if name == "auto" else name
                rows.append({"impl": "kinema", "mode": label, "frames": frames, "size": size, **r})
                print(f"kinema {label:40s} {frames:4d} x {size:3d}px  peak {r['peak_mb']:7.0f} MB  "
                      f"activations {r['activations_mb']:6.0f} MB  output {r['output_mb']:5.0f} MB  {r['seconds']:6.1f} s",
                      flush=True)
            if args.wan and frames <= args.wan_max_frames:
                r = measure({"impl": "wan", "frames": frames, "size": size, "plan": None, "threads": args.threads})
                rows.append({"impl": "wan", "mode": "diffusers", "frames": frames, "size": size, **r})
                print(f"wan    {'diffusers (1 latent frame at a time)':40s} {frames:4d} x {size:3d}px  peak {r['peak_mb']:7.0f} MB  "
                      f"activations {r['activations_mb']:6.0f} MB  output {r['output_mb']:5.0f} MB  {r['seconds']:6.1f} s",
                      flush=True)
    return rows


def encode_table(args) -> list[dict]:
    """Encode peak memory at 256 px: kinema streamed one latent frame at a time (each frame through
    the encoder depth first, Encoder.depth_first) and as the size policy plans it, beside Wan's
    encode (its first frame, then 4 frames at a time, each chunk through the whole encoder)."""
    rows = []
    for frames in (17, 65):
        for impl, mode, plan in (("kinema", "streamed", {"latent_chunk": 1}), ("kinema", "auto", None),
                                 ("wan", "diffusers", None)):
            if impl == "wan" and not args.wan:
                continue
            r = measure({"impl": impl, "frames": frames, "size": 256, "plan": plan, "threads": args.threads,
                         "preset": args.preset, "encode": True})
            rows.append({"impl": impl, "mode": mode, "frames": frames, "size": 256, **r})
            print(f"encode {impl:6s} {mode:9s} {frames:4d} x 256px  peak {r['peak_mb']:6.0f} MB  activations "
                  f"{r['activations_mb']:6.0f} MB  {r['seconds']:6.1f} s", flush=True)
    return rows


def target(args) -> dict:
    """Issue 10's flat-memory target: a streamed, tiled 257-frame 256x256 decode should peak no
    higher than a whole 17-frame 64x64 decode plus the output buffer plus 10% (of that decode's
    peak); both in fresh processes, same allocator settings. The long decode runs as the size
    policy plans it, or (--tile N) streamed in tiles of N latent pixels."""
    from kinema.config import VAE_PRESETS
    from kinema.vae.coding import plan_coding

    small = measure({"impl": "kinema", "frames": 17, "size": 64, "plan": {}, "threads": args.threads, "preset": args.preset})
    shapes = {"impl": "kinema", "frames": 257, "size": 256, "threads": args.threads, "preset": args.preset}
    with torch.no_grad():
        policy = plan_coding(VAE_PRESETS[args.preset], (65, 32, 32))
    plan = {"latent_chunk": 1, "tile": args.tile} if args.tile else {"latent_chunk": policy.latent_chunk, "tile": policy.tile}
    big = measure({**shapes, "plan": plan})
    untiled = measure({**shapes, "plan": {"latent_chunk": 1}})  # the stream alone, for its memory and time
    caches = measure({**shapes, "plan": None, "caches": True})["caches_mb"]
    limit = small["peak_mb"] * 1.1 + big["output_mb"]
    room = limit - big["before_mb"] - big["output_mb"]  # what the limit leaves the streamed decode's activations
    diff, std = planned_against_whole(args.preset, plan, args.threads)
    row = {"whole_17x64_peak_mb": small["peak_mb"], "plan": plan, "policy": not args.tile,
           "streamed_257x256_peak_mb": big["peak_mb"], "output_mb": big["output_mb"], "limit_mb": limit,
           "met": big["peak_mb"] <= limit, "streamed_257x256_activations_mb": big["activations_mb"],
           "streamed_257x256_s": big["seconds"], "untiled_stream_caches_mb": caches, "activation_room_mb": room,
           "untiled_257x256_peak_mb": untiled["peak_mb"], "untiled_257x256_activations_mb": untiled["activations_mb"],
           "untiled_257x256_s": untiled["seconds"], "max_abs_diff_vs_whole_17x256": diff,
           "whole_17x256_std": std}
    print(f"whole 17 x 64px: peak {small['peak_mb']:.0f} MB; 257 x 256px, {plan}"
          f"{' (the size policy)' if not args.tile else ''}: peak {big['peak_mb']:.0f} MB "
          f"(activations {big['activations_mb']:.0f} MB, output {big['output_mb']:.0f} MB, {big['seconds']:.0f} s); "
          f"limit {small['peak_mb']:.0f} x 1.1 + {big['output_mb']:.0f} = {limit:.0f} MB: "
          f"{'met' if row['met'] else 'not met'} ({big['peak_mb'] / limit:.3f} of the limit)", flush=True)
    print(f"the limit leaves {room:.0f} MB for activations; streamed untiled: peak {untiled['peak_mb']:.0f} MB "
          f"(activations {untiled['activations_mb']:.0f} MB, of which caches {caches:.0f} MB; {untiled['seconds']:.0f} s: "
          f"the plan takes {big['seconds'] / untiled['seconds']:.2f}x its time)", flush=True)
    print(f"the same plan on 17 frames at 256x256 against the whole, untiled decode: max abs difference {diff:.2e} "
          f"(the output's standard deviation: {std:.3f})", flush=True)
    return row


@torch.no_grad()
def planned_against_whole(preset: str, plan: dict, threads: int) -> tuple[float, float]:
    """The largest difference between a decode by `plan` and the whole, untiled one, on 17 frames at
    256x256 (where the whole decode fits), random weights scaled up so that every pixel of the
    receptive field counts; and the whole decode's standard deviation."""
    from kinema.vae.coding import CodingPlan

    torch.set_num_threads(threads)
    vae = build("kinema", preset)
    for w in vae.parameters():
        w.mul_(2.0)
    z = torch.randn(1, 16, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(z, CodingPlan())
    return (vae.decode(z, CodingPlan(**plan)) - whole).abs().max().item(), whole.std().item()


def speed(args) -> list[dict]:
    kin, wan = build("kinema", args.preset), build("wan")
    rows = []
    for frames, size in ((17, 64), (33, 128)):
        x = torch.rand(1, 3, frames, size, size) * 2 - 1
        times = {k: [] for k in ("kinema encode", "wan encode", "kinema decode", "wan decode")}
        with torch.no_grad():
            z_k, z_w = kin.encode(x)[0], wan.encode(x, return_dict=False)[0].mode()
            for _ in range(args.rounds):
                for name, fn in (("kinema encode", lambda: kin.encode(x)), ("wan encode", lambda: wan.encode(x)),
                                 ("kinema decode", lambda: kin.decode(z_k)), ("wan decode", lambda: wan.decode(z_w))):
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        best = {k: min(v) for k, v in times.items()}
        for op in ("encode", "decode"):
            ratio = best[f"wan {op}"] / best[f"kinema {op}"]
            rows.append({"op": op, "frames": frames, "size": size, "kinema_s": best[f"kinema {op}"],
                         "wan_s": best[f"wan {op}"], "speed_ratio": ratio})
            print(f"{op} {frames} x {size}px: kinema {best[f'kinema {op}']:.3f} s, wan {best[f'wan {op}']:.3f} s, "
                  f"wan / kinema = {ratio:.2f} (>= 1: kinema faster)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--target", action="store_true", help="only issue 10's flat-memory target")
    p.add_argument("--tile", type=int, default=None, help="--target: tiles of this many latent pixels (default: the size policy's plan)")
    p.add_argument("--encode", action="store_true", help="only encode peak memory at 256 px, against Wan's")
    p.add_argument("--preset", default="4x8x8", help="the kinema VAE preset measured (4x8x8-flat: 2D at full resolution)")
    p.add_argument("--no-wan", dest="wan", action="store_false", help="leave diffusers out of the memory table")
    p.add_argument("--wan-max-frames", type=int, default=65, help="Wan's decode is slow: its longest clip")
    p.add_argument("--max-whole-gb", type=float, default=4.0, help="skip whole-clip decodes needing more")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    out = {"threads": args.threads, "preset": args.preset, "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    if args.target:
        out["target"] = target(args)
    elif args.encode:
        out["encode"] = encode_table(args)
    elif not args.speed_only:
        out["memory"] = memory_table(args)
    if not args.memory_only and not args.target and not args.encode:
        out["speed"] = speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
