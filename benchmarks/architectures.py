"""Every denoiser preset trained on the same data at the same budget, judged by the Shapes oracle.

    python benchmarks/architectures.py --steps 1700                      # equal steps (and batch, data)
    python benchmarks/architectures.py --steps 1700 --match-flops shapes # equal training FLOPs: each
                                                   # preset gets 1700 x (FLOPs of shapes / its FLOPs) steps
    python benchmarks/architectures.py --steps 300 --archs wan,latte --root /tmp/archs   # a subset
    python benchmarks/architectures.py --time-only                       # step and sampling times alone

1. One shared VAE, decoder fine-tune and latent / text cache (`kinema train RECIPE --stage cache`)
   serve every preset: each preset's run directory links to them, so the presets differ in the
   denoiser only.
2. Each preset trains with `kinema train RECIPE --arch NAME --resume` in its own run directory
   (root/NAME-BUDGET). A killed benchmark continues where it stopped: run the same command again.
   A finished preset is not trained again, and a finished evaluation is not run again.
3. Each trained model is judged by `kinema eval scenes` (level 2) or `kinema eval shapes` (level 1),
   as the recipe's world says.
4. Training step time and sampling time are measured for every preset in this process, one after
   the other, on the same random batch: they do not depend on the trained weights. Keep the
   machine otherwise idle while they run.

Prints a markdown table (docs/architectures.md keeps the committed ones) and writes every figure to
--json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from kinema.cli import arch_config
from kinema.config import ARCHS, DiTConfig
from kinema.dit.cost import dit_flops, token_grid
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.runtime import resolve_runtime
from kinema.text.encoders import TextStates
from kinema.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def kinema(*args: str, log: Path) -> None:
    """Run the kinema CLI as a user would; its output goes to `log`."""
    with open(log, "a") as f:
        code = subprocess.call([sys.executable, "-m", "kinema.cli", *args], stdout=f, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"kinema {' '.join(args)} failed with exit code {code}; see {log}")


def training_flops(cfg: DiTConfig, recipe) -> float:
    """FLOPs of one training step: forward + backward (3x the forward) over the batch."""
    mc = recipe.model
    grid = token_grid(mc.frames, mc.height, mc.width, (mc.vae.time_compression, mc.vae.space_compression,
                                                       mc.vae.space_compression), cfg.patch, causal=True)
    return 3 * dit_flops(cfg, grid, mc.text.max_tokens, computed=True)["total"] * recipe.dit.batch_size


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if not link_path.exists() and not link_path.is_symlink():
        link_path.symlink_to(target.resolve())


def train_and_eval(arch: str, steps: int, recipe_path: Path, recipe, shared: Path, run_dir: Path, eval_clips: int) -> dict:
    result_path = run_dir / "bench.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    for part in ("vae", "vae_decoder"):  # the shared VAE stages: complete, so --resume skips them
        if (shared / part).is_dir():
            link(shared / part, run_dir / part)
    link(shared / "dit" / "cache.safetensors", run_dir / "dit" / "cache.safetensors")
    bench_recipe = run_dir / "bench_recipe.yaml"
    bench_recipe.write_text(f"base: {recipe_path.resolve()}\nrun_dir: {run_dir.resolve()}\nexport_dir: null\n"
                            f"dit: {{steps: {steps}, sample_every: {steps}}}\n")
    model = run_dir / "model"
    if not (model / "dit.safetensors").is_file():
        t0 = time.time()
        kinema("train", str(bench_recipe), "--arch", arch, "--resume", log=run_dir / "bench.log")
        print(f"  {arch}: trained {steps} steps in {time.time() - t0:.0f} s (this session's part)", flush=True)
    eval_json = run_dir / "eval.json"
    if not eval_json.is_file():
        kind = ("scenes", "--clips", str(eval_clips)) if recipe.world == "scenes" else ("shapes", "--seeds", "2")
        kinema("eval", *kind, "--model", str(model), "--json", str(eval_json), log=run_dir / "bench.log")
    result = {"arch": arch, "steps": steps, "eval": {k: v for k, v in json.loads(eval_json.read_text()).items() if k != "rows"}}
    result_path.write_text(json.dumps(result, indent=2))
    return result


def time_preset(cfg: DiTConfig, recipe, runtime, repeats: int = 8, sample_batch: int = 8) -> dict:
    """Seconds per training step (forward, backward, AdamW) at the recipe's batch, and per sampled
    batch of `sample_batch` clips (25 Euler steps with guidance: 50 denoiser calls)."""
    from kinema.pipelines.generate import sample_latents
    from kinema.train.dit_stage import flow_loss

    mc, stage = recipe.model, recipe.dit
    g = torch.Generator().manual_seed(0)
    lat = (cfg.in_channels, 1 + (mc.frames - 1) // mc.vae.time_compression, mc.height // mc.vae.space_compression,
           mc.width // mc.vae.space_compression)

    def cond(b: int) -> Conditioning:
        n = mc.text.max_tokens
        mask = torch.arange(n)[None] < torch.randint(8, n + 1, (b, 1), generator=g)
        return Conditioning(TextStates(torch.randn(b, n, cfg.text_dim, generator=g) * mask[..., None], mask,
                                       torch.randn(b, cfg.text_dim, generator=g))).to(runtime.device)

    torch.manual_seed(0)
    model = MMDiT(cfg).to(runtime.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z0, c = torch.randn(stage.batch_size, *lat, generator=g).to(runtime.device), cond(stage.batch_size)
    times = []
    for i in range(repeats + 2):  # two warm-up steps
        t0 = time.perf_counter()
        with runtime.autocast():
            loss = flow_loss(model, z0, c, stage.timesteps, g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        runtime.synchronize()
        times.append(time.perf_counter() - t0)
    model.eval()
    noise = torch.randn(sample_batch, *lat, generator=g).to(runtime.device)
    with torch.no_grad():
        sample_latents(model, cond(sample_batch), cond(sample_batch), noise, steps=2, guidance=5.0, runtime=runtime)
        t0 = time.perf_counter()
        sample_latents(model, cond(sample_batch), cond(sample_batch), noise, steps=25, guidance=5.0, runtime=runtime)
        runtime.synchronize()
    return {"step_s": sorted(times[2:])[len(times[2:]) // 2], "sample_s": time.perf_counter() - t0}


ATTRS = ("colour", "shape", "direction", "pace", "binding", "count_frames")


def table(rows: list[dict], world: str) -> str:
    """Markdown: the oracle per attribute on one- and two-object scenes, motion by kind, cost."""
    if not any("eval" in r for r in rows):  # --time-only: the cost columns alone
        lines = ["| preset | params | train GFLOP / step | step s | sample s (8 clips, 25 steps, guided) |",
                 "|---|---:|---:|---:|---:|"]
        return "\n".join(lines + [f"| {r['arch']} | {r['params'] / 1e6:.2f} M | {r['train_flops'] / 1e9:,.0f} | "
                                   f"{r['step_s']:.3f} | {r['sample_s']:.2f} |" for r in rows])
    if world == "scenes":
        head = ("| preset | steps | 1 obj colour | 1 obj count | 2 obj colour | 2 obj count | shape | direction: diagonal / axis "
                "| pace | binding: 1 obj / 2 obj | held-out binding | params | train GFLOP / step | step s | sample s |")
        lines = [head, "|---|" + "---:|" * 14]
    else:
        lines = ["| preset | steps | colour | shape | direction | all three | one-object frames | params | train GFLOP / step "
                 "| step s | sample s |", "|---|" + "---:|" * 10]
    pct = "{:.0%}".format
    for r in rows:
        timing = (f"{r['step_s']:.3f} | {r['sample_s']:.2f}" if "step_s" in r else "not timed | not timed")  # --no-timing
        cost = f"{r['params'] / 1e6:.2f} M | {r['train_flops'] / 1e9:,.0f} | {timing}"
        e = r.get("eval")
        if e is None:
            lines.append(f"| {r['arch']} | {r['steps']} | " + " | ".join(["not run"] * (11 if world == "scenes" else 5))
                         + f" | {cost} |")
        elif world == "scenes":
            one, two, held, m = e["one_object"], e["two_objects"], e["held_out"], e["motion"]
            shape = (one["shape"] + 2 * two["shape"]) / 3  # per object: two-object clips hold twice as many
            pace = (one["pace"] + 2 * two["pace"]) / 3
            lines.append(f"| {r['arch']} | {r['steps']} | {pct(one['colour'])} | {pct(one['count_frames'])} | "
                         f"{pct(two['colour'])} | {pct(two['count_frames'])} | {pct(shape)} | "
                         f"{pct(m['diagonal'])} / {pct(m['axis'])} | {pct(pace)} | {pct(one['binding'])} / "
                         f"{pct(two['binding'])} | {pct(held['binding'])} | {cost} |")
        else:
            s = e["seen"]
            lines.append(f"| {r['arch']} | {r['steps']} | {pct(s['colour'])} | {pct(s['shape'])} | {pct(s['direction'])} | "
                         f"{pct(s['all_three'])} | {pct(s['one_object_frames'])} | {cost} |")
    judged = [r["eval"] for r in rows if "eval" in r]
    if world == "scenes" and judged:
        n = judged[0]["one_object"]["clips"]
        lines += ["", f"Each split has {n} clips: a share's 95% interval is about "
                  + ", ".join(f"±{100 * half_width(p, n):.0f} points at {p:.0%}" for p in (0.5, 0.8, 0.9))
                  + " (binomial); a difference between two rows needs about 1.4 times that (independent shares) "
                  "to lie beyond sampling noise."]
    return "\n".join(lines)


def half_width(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of a share p measured on n clips."""
    return 1.96 * (p * (1 - p) / n) ** 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "configs" / "scenes.yaml"), help="the shared recipe (its world decides the eval)")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated presets (default: every family)")
    p.add_argument("--steps", type=int, default=1700, help="denoiser steps of every preset (or of --match-flops' preset)")
    p.add_argument("--match-flops", default=None, metavar="ARCH",
                   help="equal training FLOPs: each preset trains steps x FLOPs(ARCH) / its FLOPs")
    p.add_argument("--root", default="runs/architectures", help="run directories: ROOT/shared and ROOT/NAME-BUDGET")
    p.add_argument("--clips", type=int, default=96, help="level-2 eval scenes per preset")
    p.add_argument("--time-only", action="store_true", help="measure step and sampling times, train nothing")
    p.add_argument("--no-timing", action="store_true", help="train and evaluate only")
    p.add_argument("--json", default=None, help="write every figure here")
    args = p.parse_args()

    recipe_path = Path(args.recipe)
    recipe = load_recipe(recipe_path)
    runtime = resolve_runtime(recipe.device, recipe.precision)
    archs = [a for a in args.archs.split(",") if a]
    cfgs = {a: arch_config(a, recipe.model.dit) for a in archs}
    flops = {a: training_flops(c, recipe) for a, c in cfgs.items()}
    if args.match_flops:
        ref = training_flops(arch_config(args.match_flops, recipe.model.dit), recipe)
        steps = {a: round(args.steps * ref / flops[a]) for a in archs}
        budget = f"flops-{args.match_flops}{args.steps}"
    else:
        steps, budget = dict.fromkeys(archs, args.steps), f"steps{args.steps}"
    print(f"{runtime.describe()}; {len(archs)} presets; budget {budget}", flush=True)

    root = Path(args.root)
    rows = [{"arch": a, "steps": steps[a], "params": sum(q.numel() for q in MMDiT(cfgs[a]).parameters()),
             "train_flops": flops[a]} for a in archs]
    if not args.time_only:
        shared = root / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        if not (shared / "dit" / "cache.safetensors").is_file():
            print(f"preparing the shared VAE stages and cache in {shared} ...", flush=True)
            kinema("train", str(recipe_path), "--stage", "cache", "--run-dir", str(shared), "--resume", log=shared / "bench.log")
        for r in rows:
            print(f"{r['arch']}: {r['steps']} steps ...", flush=True)
            r.update(train_and_eval(r["arch"], r["steps"], recipe_path, recipe, shared, root / f"{r['arch']}-{budget}",
                                    args.clips))
    if not args.no_timing:
        torch.manual_seed(0)
        for r in rows:
            r.update(time_preset(cfgs[r["arch"]], recipe, runtime))
            print(f"  timed {r['arch']}: step {r['step_s']:.3f} s, sampling {r['sample_s']:.2f} s", flush=True)
    print(f"\n{runtime.describe()}; recipe {recipe_path.name}, batch {recipe.dit.batch_size}, budget {budget}; "
          f"`python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`\n")
    print(table(rows, recipe.world))
    if args.json:
        out = {"budget": budget, "recipe": str(recipe_path), "runtime": runtime.describe(), "cpus": os.cpu_count(),
               "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
