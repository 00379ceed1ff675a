"""How much can a head after the decoder gain by carrying the previous output frame along? (issue 10)

For a VAE without a carry head, on held-out photo clips: the decoder's later frames (1-16), then the
same frames with the previous *output* frame moved onto each by block matching
(kinema.vae.carry.matched) and blended in with a fixed gate, and with the best gate per pixel (an
oracle that looks at the true frame: the most any gate can get from that moved frame).

    python benchmarks/vae_carry_probe.py --model runs/vae_leaves_look_clips/vae/ckpt/step_0001200 --clips 64 --json docs/vae_carry_probe.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from kinema.data import shapes
from kinema.eval.recon import photo_case
from kinema.runtime import resolve_runtime, to_device
from kinema.train.vae_stage import load_vae
from kinema.vae.carry import matched


def psnr(mse: float) -> float:
    return float(10 * np.log10(4.0 / mse))  # pixels in [-1, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.01, 0.001])
    ap.add_argument("--json")
    args = ap.parse_args()
    runtime = resolve_runtime("auto", "auto")
    vae = load_vae(args.model).to(runtime.device).eval()
    if vae.carry is not None:
        raise SystemExit(f"{args.model} has a carry head; the probe asks what one would add to a VAE without one")
    gates = (0.5, 1.0)
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, args.clips, args.batch):
        seeds = range(start, min(args.clips, start + args.batch))  # kinema eval vae --world photos's clips
        x = torch.stack([shapes.to_tensor(photo_case(i, 17, 64, held_out=True)[0]) for i in seeds])
        with torch.no_grad(), runtime.autocast():
            y = vae.decode(vae.encode(to_device(x, runtime.device))[0]).float().cpu()
        err = lambda o: (o - x)[:, :, 1:].pow(2).mean().item() * len(seeds)  # noqa: E731
        sums["decoder"] = sums.get("decoder", 0.0) + err(y)
        for temp in args.temperature:
            outs = {g: y.clone() for g in gates}
            best = y.clone()
            for t in range(1, y.shape[2]):
                for g, o in outs.items():
                    o[:, :, t] += g * (matched(y[:, :, t], o[:, :, t - 1], temp) - y[:, :, t])
                moved = matched(y[:, :, t], best[:, :, t - 1], temp)
                closer = (moved - x[:, :, t]).abs().sum(1, keepdim=True) < (y[:, :, t] - x[:, :, t]).abs().sum(1, keepdim=True)
                best[:, :, t] = torch.where(closer, moved, y[:, :, t])
            for g, o in outs.items():
                key = f"matched, temperature {temp}, gate {g}"
                sums[key] = sums.get(key, 0.0) + err(o)
            key = f"matched, temperature {temp}, best gate per pixel (oracle)"
            sums[key] = sums.get(key, 0.0) + err(best)
        n += len(seeds)
    rows = {k: psnr(v / n) for k, v in sums.items()}
    print(f"{args.model}: frames 1-16 of {n} held-out photo clips, PSNR (dB, of the mean squared error)\n")
    print("| later frames | PSNR |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "clips": n, "frames_1_16_psnr": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
