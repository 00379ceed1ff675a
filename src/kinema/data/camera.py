"""Camera motion as numbers: what a camera path does to the picture, frame by frame, and the
condition a camera-controlled denoiser reads (MotionCtrl's camera poses, for a camera over a flat
photograph).

A camera over a photograph moves the content by a similarity transform. In frame pixels centred
on the frame's middle, the content of frame 0 at p is at `s R(theta) p + (tx, ty)` in frame t.
`true_transforms(path, size)` computes these from a recorded path (kinema.data.photos);
kinema.eval.camera_oracle estimates them from frames.

The condition per frame is FEATURES = 4 numbers: (tx / size, ty / size, log s, theta), all 0 at
frame 0 and for a still camera. `latent_features` keeps one row per latent frame: the last pixel
frame each latent frame codes (a causal VAE's latent k >= 1 codes frames r(k - 1) + 1 .. r k).
`named_features` turns motion names ("pan left", "zoom in", ...) into a path at the world's
typical magnitudes, for `kinema generate --camera`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kinema.data.photos import KINDS, MOTIONS, CameraPath, load_photo
from kinema.errors import KinemaError

FEATURES = 4
# a named motion over a whole clip, at about the middle of the photo world's ranges
# (kinema.data.photos.sample_path): a pan moves the content by a third of the frame, a zoom by
# 1.5x, a roll by 8 degrees
NAMED = {
    "pan left": (1 / 3, 0.0, 0.0, 0.0), "pan right": (-1 / 3, 0.0, 0.0, 0.0),
    "pan up": (0.0, 1 / 3, 0.0, 0.0), "pan down": (0.0, -1 / 3, 0.0, 0.0),
    "zoom in": (0.0, 0.0, math.log(1.5), 0.0), "zoom out": (0.0, 0.0, -math.log(1.5), 0.0),
    "rotate clockwise": (0.0, 0.0, 0.0, -math.radians(8)), "rotate counter-clockwise": (0.0, 0.0, 0.0, math.radians(8)),
}


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def true_transforms(path: CameraPath, size: int) -> np.ndarray:
    """[T, 3, 3] of a recorded path: frame coordinates u in [-1, 1] see photo point
    c_t + R(roll_t) u half_t (half_t = short side / zoom_t / 2), so frame 0's u_0 is at
    u_t = (half_0 / half_t) R(roll_0 - roll_t) u_0 + R(-roll_t) (c_0 - c_t) / half_t; in pixels u size / 2."""
    short = min(load_photo(path.photo).shape[:2])
    half = short / path.zoom / 2
    out = np.tile(np.eye(3), (len(path.zoom), 1, 1))
    for t in range(len(path.zoom)):
        out[t, :2, :2] = half[0] / half[t] * rotation(path.roll[0] - path.roll[t])
        out[t, :2, 2] = rotation(-path.roll[t]) @ (path.centre[0] - path.centre[t]) / half[t] * size / 2
    return out


def transform_features(transforms: np.ndarray, size: int) -> np.ndarray:
    """[T, 3, 3] similarity transforms (centred pixels) -> float32 [T, 4] (tx / size, ty / size, log s, theta)."""
    scale = np.hypot(transforms[:, 0, 0], transforms[:, 1, 0])
    angle = np.arctan2(transforms[:, 1, 0], transforms[:, 0, 0])
    return np.stack([transforms[:, 0, 2] / size, transforms[:, 1, 2] / size, np.log(scale), angle], axis=1).astype(np.float32)


def path_features(path: CameraPath, size: int) -> np.ndarray:
    """float32 [T, 4]: the condition of a recorded camera path."""
    return transform_features(true_transforms(path, size), size)


def parse_camera(text: str) -> tuple[str, ...]:
    """"pan-left,zoom-in" (or "pan left, zoom in") -> ("pan left", "zoom in"): at most one motion of each kind."""
    def key(name: str) -> str:
        return " ".join(name.replace("-", " ").split())

    known = {key(m): m for m in MOTIONS}
    parts = [part.strip() for part in text.split(",")]
    bad = [p for p in parts if key(p) not in known]
    if bad:
        raise KinemaError(f"unknown camera motion {bad[0]!r}; choose from "
                          f"{', '.join(m.replace(' ', '-') for m in MOTIONS)}, several joined by commas")
    names = tuple(known[key(p)] for p in parts)
    kinds = [k for n in names for k, pair in KINDS.items() if n in pair]
    if len(set(kinds)) != len(kinds):
        raise KinemaError(f"camera motions {text!r}: at most one of each kind (pan left / right, pan up / down, "
                          f"zoom, rotate)")
    return names


def named_features(motions: tuple[str, ...], frames: int) -> np.ndarray:
    """float32 [frames, 4]: the named motions together, each at its NAMED total by the last frame,
    linear in time (a zoom linear in log scale, as the photo world's are)."""
    total = np.zeros(FEATURES)
    for m in motions:
        total += NAMED[m]
    return (np.linspace(0.0, 1.0, frames)[:, None] * total[None]).astype(np.float32)


def latent_features(features: np.ndarray, time_compression: int) -> np.ndarray:
    """[..., T, 4] per pixel frame (T = 1 + r k) -> [..., 1 + k, 4]: each latent frame's last pixel frame."""
    frames = features.shape[-2]
    if (frames - 1) % time_compression:
        raise KinemaError(f"camera features for {frames} frames: a clip has 1 + {time_compression}k frames")
    return np.ascontiguousarray(features[..., ::time_compression, :])


def grid_maps(features: np.ndarray) -> torch.Tensor:
    """float [T, 4] camera features -> float64 [T, 3, 3]: frame t's grid point q (affine_grid's
    units, [-1, 1] across the frame) -> the image's (frame 0's) p = R(-theta) (q - t) / s."""
    f = torch.as_tensor(np.asarray(features, dtype=np.float64))
    cos, sin, inv = torch.cos(f[:, 3]), torch.sin(f[:, 3]), torch.exp(-f[:, 2])
    tx, ty = 2 * f[:, 0], 2 * f[:, 1]  # shifts over the frame side -> grid units ([-1, 1] spans the side)
    m = torch.zeros(len(f), 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1] = cos * inv, sin * inv  # R(-theta) = [[c, s], [-s, c]]
    m[:, 1, 0], m[:, 1, 1] = -sin * inv, cos * inv
    m[:, 0, 2] = -(cos * tx + sin * ty) * inv
    m[:, 1, 2] = -(-sin * tx + cos * ty) * inv
    m[:, 2, 2] = 1
    return m


def warp(image: np.ndarray, features: np.ndarray, padding: str = "border", mode: str = "bilinear") -> np.ndarray:
    """uint8 [H, W, 3] image and float [T, 4] camera features -> uint8 [T, H, W, 3]: the image as
    each frame's camera sees it, frame t's pixel q showing the image at R(-theta) (q - t) / s
    (grid_sample's `mode`; content the image does not hold is filled by `padding`). Over a
    flat photograph this is the true clip wherever the first frame saw the content: the render a
    camera-controlled denoiser can read (GEN3C's and ViewCrafter's renders along the camera path)."""
    h, w = image.shape[:2]
    theta = grid_maps(features)[:, :2]
    grid = F.affine_grid(theta.float(), [len(theta), 3, h, w], align_corners=False)
    src = torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None].expand(len(theta), -1, -1, -1)
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
