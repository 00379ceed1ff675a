"""What a latent of the 4x8x8x16 budget can reach on held-out photo clips if it codes motion:
a linear coder that predicts each later frame from frame 0 moved by the camera, and spends the
latent frame's 16 numbers a cell on what the prediction misses.

    python benchmarks/vae_motion_coder.py --clips 64 --json docs/vae_motion_coder.json

Issue 10 asks for +4 dB over the naive baseline on held-out photographs. The best linear code of
the latent's size (PCA, `benchmarks/vae_photo_diagnosis.py`) gains 3.4 dB on frame 0 but only about
0.9 dB on the later frames, where each latent frame codes four frames of a moving camera. A video
codec would not code those frames afresh: it would move what it has already decoded and code the
difference. This script measures that route with linear parts only, as a yardstick for a VAE whose
decoder moves its past frames:

- `naive`: kinema.eval.recon's baseline (trilinear down to the latent's size and back);
- `pca`: frame 0 in 8 x 8 patches and the later frames in 4 x 8 x 8 spacetime patches, each kept as
  16 principal components of training clips (the linear path's start);
- `moved`: frame 0 as `pca` codes it, moved along the true camera path to every later frame
  (kinema.data.camera.warp, the border repeated), nothing else coded;
- `moved + residual`: the same, plus the residual of each 4 x 8 x 8 patch kept as 16 principal
  components of training residuals: the same number of latent values as `pca`, and 4 numbers a
  frame of camera motion beside them (0.6% of the latent);
- `chained`: as a codec's P-frames, each latent frame's four frames predicted from the last frame
  decoded before them (not frame 0), moved by the camera, plus 16 components of the residual
  (fitted in two rounds, each on the residuals of the coder the round before made).

Components are fitted on 200 clips over the training photographs (seeds 60 000 on); the eval
clips are `kinema eval vae --world photos`'s (seeds 50 000 on, held-out photographs). PSNR is per
clip on uint8 frames, averaged over clips, as `kinema eval vae` reports it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from kinema.config import VAE_PRESETS
from kinema.data import camera, photos, shapes
from kinema.eval.recon import naive_baseline

FRAMES, SIZE, R, S, K = 17, 64, 4, 8, 16


def frame_patches(frame: np.ndarray) -> np.ndarray:
    """float [H, W, 3] -> [cells, S S 3]"""
    h, w = frame.shape[0] // S, frame.shape[1] // S
    return frame.reshape(h, S, w, S, 3).transpose(0, 2, 1, 3, 4).reshape(h * w, -1)


def frame_unpatch(p: np.ndarray) -> np.ndarray:
    h = w = SIZE // S
    return p.reshape(h, w, S, S, 3).transpose(0, 2, 1, 3, 4).reshape(SIZE, SIZE, 3)


def group_patches(frames: np.ndarray) -> np.ndarray:
    """float [R k, H, W, 3] -> [k cells, R S S 3]: each latent frame's spacetime cells"""
    k, h, w = len(frames) // R, SIZE // S, SIZE // S
    x = frames.reshape(k, R, h, S, w, S, 3).transpose(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(k * h * w, -1)


def group_unpatch(p: np.ndarray, k: int) -> np.ndarray:
    h = w = SIZE // S
    return p.reshape(k, h, w, R, S, S, 3).transpose(0, 3, 1, 4, 2, 5, 6).reshape(k * R, SIZE, SIZE, 3)


class PCA:
    def __init__(self, x: np.ndarray, k: int = K):
        self.mean = x.mean(0)
        self.basis = np.linalg.svd(x - self.mean, full_matrices=False)[2][:k]  # [k, d]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.basis.T @ self.basis + self.mean


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (x * 255).round().clip(0, 255).astype(np.uint8)


def moved(first: np.ndarray, path: photos.CameraPath) -> np.ndarray:
    """frame 0 (uint8) moved along the path: float [T, H, W, 3] in [0, 1]"""
    return camera.warp(first, camera.path_features(path, SIZE)).astype(np.float64) / 255


def moved_from(frame: np.ndarray, maps: torch.Tensor, src: int, dst: range) -> np.ndarray:
    """float frame `src` [H, W, 3] as frames `dst` see it: [len(dst), H, W, 3] (border repeated)"""
    theta = torch.linalg.inv(maps[src])[None] @ maps[list(dst)]
    grid = torch.nn.functional.affine_grid(theta[:, :2].float(), [len(dst), 3, SIZE, SIZE], align_corners=False)
    x = torch.from_numpy(frame).permute(2, 0, 1).float()[None].expand(len(dst), -1, -1, -1)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1).double().numpy()


def chained(x: np.ndarray, first: np.ndarray, path: photos.CameraPath, pca: PCA | None) -> tuple[np.ndarray, np.ndarray]:
    """Each latent frame's 4 frames predicted from the last frame decoded before them, moved by the
    camera, plus `pca`'s code of the residual: (the decoded clip, the residual patches)."""
    maps = camera.grid_maps(camera.path_features(path, SIZE))
    out, residuals = [first], []
    for g in range((FRAMES - 1) // R):
        dst = range(1 + R * g, 1 + R * (g + 1))
        guess = moved_from(out[-1], maps, R * g, dst)
        r = group_patches(x[1 + R * g:1 + R * (g + 1)] - guess)
        residuals.append(r)
        decoded = guess + (group_unpatch(pca(r), 1) if pca else 0)
        out.extend(list(np.clip(decoded, 0, 1)))
    return np.stack(out), np.concatenate(residuals)


def fit(train: int) -> dict[str, PCA]:
    firsts, rests, residuals = [], [], []
    clips = [photos.sample_photo_clip(60_000 + i, frames=FRAMES, size=SIZE) for i in range(train)]
    for clip, _ in clips:
        x = clip.astype(np.float64) / 255
        firsts.append(frame_patches(x[0]))
        rests.append(group_patches(x[1:]))
    pcas = {"first": PCA(np.concatenate(firsts)), "rest": PCA(np.concatenate(rests))}
    for clip, path in clips:
        x = clip.astype(np.float64) / 255
        first = to_uint8(frame_unpatch(pcas["first"](frame_patches(x[0]))))
        residuals.append(group_patches(x[1:] - moved(first, path)[1:]))
    pcas["residual"] = PCA(np.concatenate(residuals))
    chains = []  # the chained coder's residuals, each after the previous latent frame's code
    for round_ in range(2):  # fitted on the residuals of the coder as it was fitted the round before
        chains = []
        for clip, path in clips:
            x = clip.astype(np.float64) / 255
            first = frame_unpatch(pcas["first"](frame_patches(x[0])))
            chains.append(chained(x, first, path, pcas.get("chained"))[1])
        pcas["chained"] = PCA(np.concatenate(chains))
    return pcas


def code(clip: np.ndarray, path: photos.CameraPath, pcas: dict[str, PCA]) -> dict[str, np.ndarray]:
    x = clip.astype(np.float64) / 255
    k = (FRAMES - 1) // R
    first = frame_unpatch(pcas["first"](frame_patches(x[0])))
    out = {"pca": np.concatenate([first[None], group_unpatch(pcas["rest"](group_patches(x[1:])), k)])}
    guess = moved(to_uint8(first), path)
    guess[0] = first
    out["moved"] = guess
    residual = group_unpatch(pcas["residual"](group_patches(x[1:] - guess[1:])), k)
    out["moved + residual"] = np.concatenate([first[None], guess[1:] + residual])
    out["chained"] = chained(x, first, path, pcas["chained"])[0]
    return {name: to_uint8(v) for name, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    t0 = time.time()
    pcas = fit(args.train)
    cfg = VAE_PRESETS["4x8x8"]
    scores: dict[str, list[float]] = {}
    per_frame: dict[str, np.ndarray] = {}
    for i in range(args.clips):
        clip, path = photos.sample_photo_clip(50_000 + i, frames=FRAMES, size=SIZE, held_out=True)  # eval vae's (photo_case)
        x = shapes.to_tensor(clip)[None]
        coded = {"naive": shapes.to_uint8(naive_baseline(x, cfg)[0]), **code(clip, path, pcas)}
        for name, rec in coded.items():
            scores.setdefault(name, []).append(peak_signal_noise_ratio(clip, rec, data_range=255))
            mse = ((rec.astype(np.float64) - clip) ** 2).mean(axis=(1, 2, 3))
            per_frame[name] = per_frame.get(name, 0) + mse / args.clips
    naive = float(np.mean(scores["naive"]))
    result = {name: {"psnr": float(np.mean(v)), "over_naive": float(np.mean(v)) - naive,
                     "frame0_psnr": float(10 * np.log10(255 ** 2 / per_frame[name][0])),
                     "later_psnr": float(10 * np.log10(255 ** 2 / per_frame[name][1:].mean())),
                     "per_frame_psnr": [round(float(10 * np.log10(255 ** 2 / m)), 2) for m in per_frame[name]]}
              for name, v in scores.items()}
    print(f"{args.clips} held-out photo clips of {FRAMES} frames at {SIZE} px; components from {args.train} training clips\n")
    print("| coder | clip PSNR | over naive | frame 0 | frames 1-16 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in result.items():
        print(f"| {name} | {r['psnr']:.2f} dB | {r['over_naive']:+.2f} dB | {r['frame0_psnr']:.2f} dB | {r['later_psnr']:.2f} dB |")
    print(f"\n{time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clips": args.clips, "train": args.train, "coders": result}, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
