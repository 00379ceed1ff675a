"""Where a VAE loses to the naive baseline on photographs: PSNR by the target pixel's brightness,
and by frame, for each VAE beside the naive baseline (kinema.eval.recon's: as many numbers as the
latent, trilinear down and up); and a linear coder with the latent's budget, as a second baseline.

    python benchmarks/vae_photo_diagnosis.py --model runs/vae_photos/vae_decoder [--world photos] [--clips 32]
    python benchmarks/vae_photo_diagnosis.py --components 16 32 64 --clips 64   # the linear coder alone, by width

The linear coder is PCA fitted on the training photographs' clips (200 of them, new camera paths):
frame 0 in 8 x 8 patches, each kept as its first 16 components (the causal VAE's frame-0 latent:
16 numbers per 8 x 8 patch), and frames 1-16 in 4 x 8 x 8 spacetime patches kept as 16
components (its other latent frames). It is the best any linear map of that size can do on
average, so a trained nonlinear VAE should be above it. `--components` sets the latent width it
keeps (16: the 4x8x8x16 VAE's); several widths show what a wider latent would buy.

The Shapes VAE loss weighs a pixel 1 + 20 x its brightness (`vae.loss.foreground_weight`), which
suits objects on black and could cost a photograph's dark regions. If that weighting were why a
photo VAE trails the baseline, it would trail in the dark bins and not in the bright ones; if it
trails in every bin and every frame, the cause is elsewhere (capacity, training length).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from skimage.metrics import structural_similarity

from kinema.data import shapes
from kinema.errors import KinemaError
from kinema.eval.recon import detail_ratio, naive_baseline, photo_case
from kinema.runtime import resolve_runtime, to_device
from kinema.train.vae_stage import load_vae

BINS = np.linspace(0.0, 1.0, 6)  # brightness (max over RGB) of the target pixel, in fifths


def psnr(mse: np.ndarray) -> np.ndarray:
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def measure(model: str, vae, clips: int, world: str, batch: int = 8) -> dict:
    """`vae` (loaded from `model`, the name the tables give it) on `clips` clips of `world`."""
    runtime = resolve_runtime("auto", "auto")
    vae = vae.to(runtime.device)
    held_out = world == "photos"
    err = {"vae": np.zeros(len(BINS) - 1), "naive": np.zeros(len(BINS) - 1)}
    per_frame = {"vae": np.zeros(17), "naive": np.zeros(17)}
    count = np.zeros(len(BINS) - 1)
    ssim0 = {"vae": [], "naive": []}  # frame 0's SSIM, clip by clip
    detail0 = {"vae": [], "naive": []}  # and its detail ratio (kinema.eval.recon.detail_ratio: 1 as sharp as the clip)
    for start in range(0, clips, batch):
        cases = [photo_case(i, 17, 64, held_out=held_out)[0] for i in range(start, min(start + batch, clips))]
        x = torch.stack([shapes.to_tensor(ref) for ref in cases])
        with torch.no_grad(), runtime.autocast():
            out = vae.decode(vae.encode(to_device(x, runtime.device))[0]).float().cpu()
        for ref, rec, base in zip(cases, out, naive_baseline(x, vae.cfg)):
            target = ref.astype(np.float64) / 255
            which = np.clip(np.digitize(target.max(-1), BINS) - 1, 0, len(BINS) - 2)  # [T, H, W]
            for name, clip in (("vae", rec), ("naive", base)):
                sq = ((shapes.to_uint8(clip).astype(np.float64) / 255 - target) ** 2).mean(-1)
                err[name] += np.bincount(which.ravel(), weights=sq.ravel(), minlength=len(BINS) - 1)
                per_frame[name] += sq.mean(axis=(1, 2))
                ssim0[name].append(structural_similarity(ref[0], shapes.to_uint8(clip)[0], channel_axis=-1, data_range=255))
                detail0[name].append(detail_ratio(ref[0], shapes.to_uint8(clip)[0]))
            count += np.bincount(which.ravel(), minlength=len(BINS) - 1)
    return {"model": model, "world": world, "clips": clips, "pixel_share": (count / count.sum()).tolist(),
            "psnr_by_brightness": {k: psnr(v / np.maximum(count, 1)).tolist() for k, v in err.items()},
            "psnr_by_frame": {k: psnr(v / clips).tolist() for k, v in per_frame.items()},
            "frame0_ssim": {k: float(np.mean(v)) for k, v in ssim0.items()},
            "frame0_detail": {k: float(np.mean(v)) for k, v in detail0.items()}}


def write_picture(path: str, vaes: list, clips: list[int], world: str) -> None:
    """A PNG grid at 64 px a frame, one column a clip: frame 0 itself, then each model's reconstruction."""
    from PIL import Image

    runtime = resolve_runtime("auto", "auto")
    refs = [photo_case(i, 17, 64, held_out=world == "photos")[0][0] for i in clips]  # frame 0 of the diagnosed clips
    x = torch.stack([shapes.to_tensor(r[None]) for r in refs])
    rows = [np.concatenate(refs, 1)]
    for vae in vaes:
        vae = vae.to(runtime.device)
        with torch.no_grad(), runtime.autocast():
            out = vae.decode(vae.encode(to_device(x, runtime.device))[0]).float().cpu()
        rows.append(np.concatenate([shapes.to_uint8(o)[0] for o in out], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    print(f"wrote {path}")


def pca_coder(clips: int, world: str, fit_clips: int = 200, components: int = 16) -> dict:
    """PSNR of the linear coder (module docstring) on frame 0 and on frames 1-16."""
    from kinema.data.photos import sample_photo_clip

    def patches(video: np.ndarray, t: int) -> np.ndarray:  # [N, T, 64, 64, 3] -> [N * patches, t * 8 * 8 * 3]
        n, frames = video.shape[:2]
        v = video.reshape(n, frames // t, t, 8, 8, 8, 8, 3)
        return v.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, t * 8 * 8 * 3)

    fit = np.stack([sample_photo_clip(1000 + i, frames=17, size=64)[0] for i in range(fit_clips)]) / 255.0
    test = np.stack([photo_case(i, 17, 64, held_out=world == "photos")[0] for i in range(clips)]) / 255.0
    out = {}
    for name, sl, t in (("frame_0", slice(0, 1), 1), ("frames_1_16", slice(1, 17), 4)):
        train, held = patches(fit[:, sl], t), patches(test[:, sl], t)
        mu = train.mean(0)
        basis = np.linalg.svd(train - mu, full_matrices=False)[2][:components]
        rec = np.round(np.clip((held - mu) @ basis.T @ basis + mu, 0, 1) * 255) / 255  # uint8, as the others
        out[name] = float(psnr(((rec - held) ** 2).mean()))
        if t == 1:  # frame 0's SSIM, clip by clip: the patches back into frames
            frames = rec.reshape(len(test), 8, 8, 8, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(len(test), 64, 64, 3)
            out["frame_0_ssim"] = float(np.mean([structural_similarity(a, b, channel_axis=-1, data_range=1.0)
                                                 for a, b in zip(test[:, 0], frames)]))
            out["frame_0_detail"] = float(np.mean([detail_ratio(a, b) for a, b in zip(test[:, 0], frames)]))
    mse = 10 ** (-np.array([out["frame_0"], out["frames_1_16"]]) / 10)
    out["clip"] = float(psnr((mse[0] + 16 * mse[1]) / 17))  # the 17 frames' mean squared error
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="*", default=[], help="VAE run directories or model names (none: the linear coder alone)")
    ap.add_argument("--components", type=int, nargs="+", default=[16], help="the linear coder's latent widths (default 16)")
    ap.add_argument("--world", default="photos", choices=("photos", "photos-train"))
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--picture", default=None, help="write a PNG: frame 0 of --picture-clips, the clip on top, then each --model's")
    ap.add_argument("--picture-clips", type=int, nargs="+", default=[0, 3, 5, 9])
    args = ap.parse_args()
    try:  # every model before any work: a wrong path is one line, not a traceback an hour in
        vaes = [load_vae(m) for m in args.model]
    except KinemaError as e:
        sys.exit(f"error: {e}")
    if args.picture:
        write_picture(args.picture, vaes, args.picture_clips, args.world)
    results = [measure(m, vae, args.clips, args.world) for m, vae in zip(args.model, vaes)]
    linear = {k: pca_coder(args.clips, args.world, components=k) for k in args.components}
    if not results:
        print(f"\nThe linear coder (PCA) on {args.clips} {args.world} clips: PSNR (dB) of frame 0 and of frames 1-16, "
              f"and of the clip (the mean squared error over all 17 frames)\n")
        print("| latent width | frame 0 | frames 1-16 | clip |\n|---:|---:|---:|---:|")
        for k, r in linear.items():
            print(f"| {k} | {r['frame_0']:.2f} | {r['frames_1_16']:.2f} | {r['clip']:.2f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"world": args.world, "clips": args.clips, "linear_coder": linear}, f, indent=1)
            print(f"wrote {args.json}")
        return
    bins = [f"{a:.1f}-{b:.1f}" for a, b in zip(BINS[:-1], BINS[1:])]
    print(f"\nPSNR (dB) by the target pixel's brightness, {args.clips} {args.world} clips\n")
    print("| model | " + " | ".join(bins) + " |\n|---|" + "---:|" * len(bins))
    print("| share of pixels | " + " | ".join(f"{v:.0%}" for v in results[0]["pixel_share"]) + " |")
    print("| naive baseline | " + " | ".join(f"{v:.2f}" for v in results[0]["psnr_by_brightness"]["naive"]) + " |")
    for r in results:
        print(f"| {r['model']} | " + " | ".join(f"{v:.2f}" for v in r["psnr_by_brightness"]["vae"]) + " |")
    print("\nPSNR (dB) by frame (frame 0 is coded alone; then 4 frames per latent frame)\n")
    print("| model | " + " | ".join(str(t) for t in range(17)) + " |\n|---|" + "---:|" * 17)
    print("| naive baseline | " + " | ".join(f"{v:.1f}" for v in results[0]["psnr_by_frame"]["naive"]) + " |")
    for r in results:
        print(f"| {r['model']} | " + " | ".join(f"{v:.1f}" for v in r["psnr_by_frame"]["vae"]) + " |")
    print("\nPSNR (dB, of the mean squared error over the clips) of frame 0 and of frames 1-16: the VAEs, the naive "
          "baseline and the linear coder (PCA)\n")
    print("| coder | frame 0 | frames 1-16 | frame 0 SSIM | frame 0 detail |\n|---|---:|---:|---:|---:|")

    def split(per_frame: list[float]) -> str:  # PSNR of frame 0 | of frames 1-16 (from their mean squared error)
        mse = 10 ** (-np.asarray(per_frame) / 10)
        return f"{per_frame[0]:.2f} | {psnr(mse[1:].mean()):.2f}"
    print(f"| naive baseline | {split(results[0]['psnr_by_frame']['naive'])} | {results[0]['frame0_ssim']['naive']:.4f} "
          f"| {results[0]['frame0_detail']['naive']:.3f} |")
    for k, r in linear.items():
        print(f"| linear coder (PCA, {k} components per latent position) | {r['frame_0']:.2f} | {r['frames_1_16']:.2f} "
              f"| {r['frame_0_ssim']:.4f} | {r['frame_0_detail']:.3f} |")
    for r in results:
        print(f"| {r['model']} | {split(r['psnr_by_frame']['vae'])} | {r['frame0_ssim']['vae']:.4f} | {r['frame0_detail']['vae']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vaes": results, "linear_coder": linear}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
