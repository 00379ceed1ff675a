"""kinema's denoiser against the reference implementation, with the same weights, and against the
machine: forward and forward+backward time and peak memory of the `wan` and `hunyuan` layouts
next to diffusers' WanTransformer3DModel and HunyuanVideoTransformer3DModel.

    python benchmarks/dit_speed.py [--dim 512] [--batch 4] [--runs 5] [--precision auto] [--latent 5 16 16]
                                   [--families wan hunyuan] [--no-fp32] [--one-process] [--compile]

Each (family, implementation, precision) runs in a fresh process that builds the diffusers model,
converts its weights with kinema.adapters (so both compute the same function, checked to 1e-4),
and times one of the two: the median of --runs after one warm-up. Each row alternates kinema and
diffusers processes for --rounds rounds and reports the medians and the range of the per-round
ratios, so a slow spell of a shared machine hits both alike. Peak memory is that process's
peak resident set (the same imports and models in every process, so the difference between two
rows is what the forward / backward itself holds); on a GPU it is the peak of allocated GPU memory
(torch.cuda.max_memory_allocated). Precisions: fp32 and the one the policy picks
(kinema.runtime). Then the machine's matmul peak at that precision (a 2048^3 matmul on a CPU, 8192^3
on a GPU), and each
kinema training step's achieved FLOP/s as a share of it (FLOPs from kinema.dit.cost, computed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FAMILIES = ("wan", "hunyuan")


def reference(family: str, dim: int, heads: int):
    import diffusers

    head_dim = dim // heads
    if family == "wan":  # 6 blocks
        return diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
            text_dim=384, freq_dim=256, ffn_dim=4 * dim, num_layers=6, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
    return diffusers.HunyuanVideoTransformer3DModel(  # 2 dual + 4 single blocks, one refiner block
        in_channels=16, out_channels=16, num_attention_heads=heads, attention_head_dim=head_dim, num_layers=2,
        num_single_layers=4, num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1, guidance_embeds=False,
        text_embed_dim=384, pooled_projection_dim=384, rope_axes_dim=(head_dim - 2 * (3 * head_dim // 8), 3 * head_dim // 8,
                                                                        3 * head_dim // 8), rope_theta=256.0)


def pair(family: str, precision: str, dim: int, heads: int, batch: int, latent: tuple[int, int, int],
         compile: bool = False):
    """(runtime, kinema model, diffusers model, run_kinema, run_diffusers): the same weights through
    the adapter, the same inputs; in fp32 the two outputs are checked to agree first. With
    `compile`, both models are then torch.compile'd alike (in place), and the timings' warm-up
    pays for the compile."""
    import torch

    from kinema.adapters import hunyuan_video, wan
    from kinema.dit.transformer import Conditioning, MMDiT
    from kinema.runtime import resolve_runtime
    from kinema.text.encoders import TextStates

    rt = resolve_runtime("cpu" if not torch.cuda.is_available() else "auto", precision)
    torch.manual_seed(0)
    ref = reference(family, dim, heads)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.02)
    adapter = wan if family == "wan" else hunyuan_video
    cfg = adapter.dit_config(ref.config)
    mine = MMDiT(cfg)
    mine.load_state_dict(adapter.convert(ref.state_dict(), cfg))
    ref, mine = ref.to(rt.device), mine.to(rt.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 16, *latent, generator=g).to(rt.device)  # default 5x16x16: 17 frames of 128x128, 320 tokens
    t = torch.rand(batch, generator=g).to(rt.device)
    valid = torch.arange(24)[None] < torch.randint(8, 25, (batch,), generator=g)[:, None]
    tokens = (torch.randn(batch, 24, 384, generator=g) * valid[..., None]).to(rt.device)
    pooled, valid = torch.randn(batch, 384, generator=g).to(rt.device), valid.to(rt.device)
    cond = Conditioning(TextStates(tokens, valid, pooled))

    def run_mine():
        return mine(x, t, cond)

    def run_ref():
        if family == "wan":
            return ref(x, t * 1000.0, tokens, return_dict=False)[0]
        return ref(x, t * 1000.0, tokens, valid.long(), pooled, return_dict=False)[0]

    if precision == "fp32":
        with torch.no_grad():
            a, b = run_mine(), run_ref()
        err = (a - b).abs().max().item() / b.abs().max().item()  # relative: TF32 matmuls on a GPU
        assert err < (1e-2 if rt.device.type == "cuda" else 1e-4), f"kinema and diffusers disagree by {err}"
        del a, b
        if rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
    if compile:  # after the check: it compares the eager functions
        mine.compile()
        ref.compile()
    return rt, mine, ref, run_mine, run_ref


def warmups(compile: bool) -> int:
    """Untimed steps before the timed ones: the first call of a compiled model compiles, and its
    guards may recompile once more."""
    return 3 if compile else 1


def timed(rt, fn, mode: str, runs: int, models, warmup: int = 1) -> float:
    """The median of `runs` steps after `warmup` ones (`warmups`): forward, or forward + backward ("train")."""
    import torch

    times = []
    for i in range(runs + warmup):
        with torch.set_grad_enabled(mode == "train"):
            rt.synchronize()
            t0 = time.perf_counter()
            with rt.autocast():
                out = fn()
            if mode == "train":
                out.float().pow(2).mean().backward()
            rt.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        for m in models:
            for p in m.parameters():
                p.grad = None
    return statistics.median(times)


def child(family: str, impl: str, precision: str, mode: str, dim: int, heads: int, batch: int, runs: int,
          latent: tuple[int, int, int], compile: bool = False) -> None:
    import torch

    rt, mine, ref, run_mine, run_ref = pair(family, precision, dim, heads, batch, latent, compile)
    seconds = timed(rt, run_mine if impl == "kinema" else run_ref, mode, runs, (mine, ref), warmups(compile))
    gpu = torch.cuda.max_memory_allocated() / 2**20 if rt.device.type == "cuda" else None
    print(json.dumps({"seconds": seconds, "gpu_mib": gpu, "precision": rt.precision}))


def one_process(args, precisions: list[str]) -> None:
    """--one-process: both models of a family in this process, kinema and diffusers alternated for
    --rounds rounds (each the median of --runs steps): times and ratios, no memory column (a
    short GPU lease cannot afford a fresh process per row)."""
    print("| family | precision | pass | kinema | diffusers | speed ratio (diffusers / kinema) |")
    print("|---|---|---|---:|---:|---:|")
    for family in args.families:
        for prec in precisions:
            rt, mine, ref, run_mine, run_ref = pair(family, prec, args.dim, args.heads, args.batch, tuple(args.latent),
                                                    args.compile)
            for mode in ("forward", "train"):
                warm = warmups(args.compile)
                rounds = [(timed(rt, run_mine, mode, args.runs, (mine, ref), warm),
                           timed(rt, run_ref, mode, args.runs, (mine, ref), warm)) for _ in range(args.rounds)]
                k, d = (statistics.median(r[i] for r in rounds) for i in (0, 1))
                ratios = [b / a for a, b in rounds]
                print(f"| {family} | {prec} | {'forward+backward' if mode == 'train' else 'forward'} | {1000 * k:.1f} ms | "
                      f"{1000 * d:.1f} ms | {d / k:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


def measure(args, family: str, impl: str, precision: str, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", family, impl, precision, mode, "--dim", str(args.dim), "--heads",
           str(args.heads), "--batch", str(args.batch), "--runs", str(args.runs), "--latent", *map(str, args.latent)]
    cmd += ["--compile"] if args.compile else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{family} {impl} {precision} {mode} failed with status {status}")
    row = json.loads(out.strip().splitlines()[-1])
    return {**row, "peak_mib": row["gpu_mib"] if row["gpu_mib"] is not None else usage.ru_maxrss / 1024}


def paired(args, family: str, precision: str, mode: str) -> tuple[dict, dict, list[float]]:
    """`--rounds` rounds of kinema then diffusers, each in a fresh process, so that a slow spell of
    a shared machine hits both alike: the medians over rounds, and each round's ratio."""
    rounds = [(measure(args, family, "kinema", precision, mode), measure(args, family, "diffusers", precision, mode))
              for _ in range(args.rounds)]

    def med(i: int) -> dict:
        return {key: statistics.median(r[i][key] for r in rounds) for key in ("seconds", "peak_mib")}

    return med(0), med(1), [d["seconds"] / k["seconds"] for k, d in rounds]


def matmul_peak(precision: str) -> float:
    """GFLOP/s of an n^3 matmul at `precision` under autocast on the policy's device (best of 5 after
    a warm-up): n = 2048 on a CPU, 8192 on a GPU (TF32 for fp32 there, as the runtime sets)."""
    import torch

    from kinema.runtime import resolve_runtime

    rt = resolve_runtime("auto", precision)
    n = 8192 if rt.device.type == "cuda" else 2048
    a = torch.randn(n, n, device=rt.device)
    best = float("inf")
    for _ in range(6):
        with rt.autocast():
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ a
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="kinema / diffusers process pairs per row, alternated")
    p.add_argument("--precision", default="auto", help="the second precision besides fp32 (default: the policy's)")
    p.add_argument("--latent", type=int, nargs=3, default=(5, 16, 16), metavar=("T", "H", "W"),
                   help="latent frames, height, width (patch 1x2x2); default 5 16 16: 320 video tokens")
    p.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    p.add_argument("--no-fp32", action="store_true", help="only the policy's precision (a GPU's time is short)")
    p.add_argument("--one-process", action="store_true", help="time both implementations in this process (no memory)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both models alike (fuses the elementwise kernels that take much of a GPU step)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child, args.dim, args.heads, args.batch, args.runs, tuple(args.latent), args.compile)
    import torch

    from kinema.adapters import hunyuan_video, wan
    from kinema.dit.cost import dit_flops
    from kinema.runtime import cpu_model, resolve_runtime

    rt = resolve_runtime("auto", args.precision)
    print(f"machine: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {rt.describe()}")
    lt, lh, lw = args.latent
    grid = (lt, lh // 2, lw // 2)
    print(f"models: width {args.dim}, {args.heads} heads, batch {args.batch}, {4 * (lt - 1) + 1} x {8 * lh} x {8 * lw} frames "
          f"-> {grid[0] * grid[1] * grid[2]} video tokens + 24 text{'; both torch.compiled' if args.compile else ''}")
    precisions = ([] if args.no_fp32 and rt.precision != "fp32" else ["fp32"]) + ([rt.precision] if rt.precision != "fp32" else [])
    if args.one_process:
        return one_process(args, precisions)
    peaks = {prec: matmul_peak(prec) for prec in precisions}  # measured again at the end; the best counts
    report = {"machine": cpu_model(), "device": rt.describe(), "torch": torch.__version__, "args": vars(args),
              "matmul_peak_gflops": peaks, "rows": []}
    print("| family | precision | pass | kinema | diffusers | speed ratio (diffusers / kinema) | peak memory kinema / diffusers | kinema share of matmul peak |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for family in args.families:
        cfg = (wan if family == "wan" else hunyuan_video).dit_config(reference(family, args.dim, args.heads).config)
        flops = dit_flops(cfg, grid, 24, computed=True)["total"] * args.batch
        for prec in precisions:
            for mode in ("forward", "train"):
                k, d, ratios = paired(args, family, prec, mode)
                step_flops = flops * (3 if mode == "train" else 1)
                share = step_flops / k["seconds"] / 1e9 / peaks[prec]
                row = {"family": family, "precision": prec, "pass": mode, "kinema_s": k["seconds"], "diffusers_s": d["seconds"],
                       "ratio": d["seconds"] / k["seconds"], "ratio_per_round": ratios, "kinema_peak_mib": k["peak_mib"], "diffusers_peak_mib": d["peak_mib"],
                       "kinema_gflops": step_flops / k["seconds"] / 1e9, "share_of_peak": share}
                report["rows"].append(row)
                print(f"| {family} | {prec} | {'forward+backward' if mode == 'train' else 'forward'} | {k['seconds']:.3f} s | "
                      f"{d['seconds']:.3f} s | {row['ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {k['peak_mib']:.0f} / {d['peak_mib']:.0f} MiB | "
                      f"{100 * share:.0f}% ({row['kinema_gflops']:.0f} of {peaks[prec]:.0f} GFLOP/s) |")
    after = {prec: matmul_peak(prec) for prec in precisions}
    print("matmul peak, GFLOP/s, before / after the rows: " + ", ".join(
        f"{prec} {peaks[prec]:.0f} / {after[prec]:.0f}" for prec in precisions) + " (shares above use the before figure)")
    report["matmul_peak_after_gflops"] = after
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
