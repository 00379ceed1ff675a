"""Why a camera_render model's guide is weaker than the render: on held-out photo clips, the
given frame warped along the true path (kinema.data.camera.warp) against the true clip, the VAE's
code of that render against the render and against the true clip, and the VAE's code of the true
clip, for several resamplings and border fills.

    python benchmarks/camera_render.py --model runs/photos_camera_render/model --clips 24 --json docs/camera_render_diagnosis.json

If the render's and the VAE's errors were unrelated, the code of the render would sit near the
lower of the first two figures; where it sits far under both, the errors add up (both lose the
same detail: the render resamples the 64 px first frame, the true clip comes from the full photograph).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from kinema.data import camera, photos
from kinema.eval.camera_report import EVAL_SEED, clip_psnr
from kinema.pipelines.pipeline import load_pipeline

WAYS = (("bilinear", "border"), ("bicubic", "border"), ("bilinear", "reflection"), ("bilinear", "zeros"))


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model directory: its VAE codes the clips")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    pipe = load_pipeline(args.model, device="cpu", precision="fp32")
    frames, size = pipe.cfg.frames, pipe.cfg.height
    rows = {f"{mode}, {padding}": [] for mode, padding in WAYS}
    recon = []
    for i in range(args.clips):
        clip, path = photos.sample_photo_clip(EVAL_SEED + i, frames, size, held_out=True)
        features = camera.path_features(path, size)
        recon.append(clip_psnr(pipe.frames(pipe.video_latents(clip, frames))[0], clip))
        for mode, padding in WAYS:
            render = camera.warp(clip[0], features, padding=padding, mode=mode)
            code = pipe.frames(pipe.video_latents(render, frames))[0]
            rows[f"{mode}, {padding}"].append((clip_psnr(render, clip), clip_psnr(code, render), clip_psnr(code, clip)))
    print(f"{args.clips} held-out clips; the VAE's code of the true clip: {np.mean(recon):.2f} dB\n")
    print("| render | render to the true clip | its code to the render | its code to the true clip |\n|---|---:|---:|---:|")
    result = {"clips": args.clips, "model": args.model, "recon_clip_psnr": float(np.mean(recon)), "renders": {}}
    for way, values in rows.items():
        a, b, c = np.mean(values, axis=0)
        print(f"| {way} | {a:.2f} dB | {b:.2f} dB | {c:.2f} dB |")
        result["renders"][way] = {"render_psnr": float(a), "code_to_render_psnr": float(b), "code_psnr": float(c)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
