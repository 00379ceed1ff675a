"""Temporal quality of one clip, offline: flicker, motion magnitude and dynamic degree, motion
smoothness, frame consistency. VBench's formulas, with OpenCV's Farneback optical flow in place of
RAFT and flow-based frame interpolation in place of AMT, so these are kinema's metrics under
VBench's names' meaning, not VBench's numbers. A clip is uint8 [T, H, W, 3].

- flicker: 1 - mean |frame t+1 - frame t| / 255 (VBench's temporal flickering; 1 for a still clip).
- motion magnitude per frame pair: the mean of the largest 5% of flow magnitudes, in pixels of a
  256-pixel frame (VBench's `max_rad`, rescaled so its threshold holds at any size).
- dynamic: at least round(4 T / 16) frame pairs move more than 6 pixels (of 256) per frame at 8
  fps, VBench's rule; dynamic degree is the share of dynamic clips.
- motion smoothness: the odd frames are dropped and re-made from their neighbours by warping each
  halfway along the flow between them; 1 - mean |made - real| / 255. Smooth motion is what a
  midpoint interpolation predicts; jerky or shuffled frames are not.
- frame consistency: mean over frames t >= 1 of (cos(f_t, f_0) + cos(f_t, f_t-1)) / 2, each
  cosine floored at 0 (VBench's subject consistency with DINO features, background consistency
  with CLIP's). `frame_features` is pluggable; the offline default is the square root of a
  4x4x4-bin colour histogram (so each cosine is the Bhattacharyya coefficient of two frames'
  colour distributions), which motion leaves alone and a change of subject or colour does not.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kinema.errors import KinemaError

TOP_SHARE = 0.05       # VBench: the largest 5% of flow magnitudes
MOVE_THRESHOLD = 6.0   # pixels per frame at 256 px and 8 fps (VBench)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise KinemaError("the temporal metrics use OpenCV's optical flow: pip install 'kinema[eval]' "
                          "(opencv-python-headless)") from None
    return cv2


def check_clip(video: np.ndarray, min_frames: int = 2) -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or len(video) < min_frames:
        raise KinemaError(f"a clip for the temporal metrics is uint8 [T, H, W, 3] with T >= {min_frames}; "
                          f"got {video.dtype} {list(video.shape)}")
    return video


def flicker(video: np.ndarray) -> float:
    video = check_clip(video).astype(np.float64)
    return float(1.0 - np.abs(np.diff(video, axis=0)).mean() / 255.0)


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from frame a to frame b (uint8 [H, W, 3]): [H, W, 2] in pixels, b(x + flow(x)) ~ a(x).
    Farneback over a pyramid whose coarsest level is about 16 pixels."""
    cv2 = _cv2()
    ga, gb = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (a, b))
    levels = max(1, int(np.log2(min(a.shape[:2]) / 16)) + 1)
    return cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=levels, winsize=9, iterations=5,
                                        poly_n=5, poly_sigma=1.1, flags=0)


def motion_magnitudes(video: np.ndarray) -> np.ndarray:
    """[T - 1]: each consecutive pair's mean of its largest 5% flow magnitudes, in 256-px pixels."""
    video = check_clip(video)
    scale = 256.0 / min(video.shape[1:3])
    out = []
    for a, b in zip(video[:-1], video[1:]):
        rad = np.linalg.norm(optical_flow(a, b), axis=-1).ravel()
        k = max(1, int(len(rad) * TOP_SHARE))
        out.append(float(np.partition(rad, -k)[-k:].mean() * scale))
    return np.array(out)


def is_dynamic(video: np.ndarray, fps: float = 8.0, magnitudes: np.ndarray | None = None) -> bool:
    """VBench's rule, frames first taken at about 8 fps. `magnitudes`: the clip's motion_magnitudes,
    when already computed and the clip needs no thinning (fps of 12 or less)."""
    video = check_clip(video)
    step = max(1, round(fps / 8.0))
    video = video[::step]
    if magnitudes is None or step > 1:
        magnitudes = motion_magnitudes(video)
    threshold = max(1.0, 8.0 / fps) * MOVE_THRESHOLD
    return bool((magnitudes > threshold).sum() >= round(4 * len(video) / 16.0))


def dynamic_degree(videos, fps: float = 8.0) -> float:
    return float(np.mean([is_dynamic(v, fps) for v in videos]))


def _halfway(cv2, grid: np.ndarray, flow: np.ndarray, iters: int = 3) -> np.ndarray:
    """Where each pixel y of the middle frame came from: y - f(y0) / 2, with y0 that source itself
    (a fixed point, found by iterating: the flow is known at the source frame's pixels, not the
    middle frame's)."""
    src = grid - 0.5 * flow
    for _ in range(iters):
        f = cv2.remap(flow, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        src = grid - 0.5 * f
    return src


def midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between a and b: each warped halfway along the flow between them, averaged."""
    cv2 = _cv2()
    h, w = a.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    out = np.zeros(a.shape, np.float64)
    for src, dst in ((a, b), (b, a)):
        where = _halfway(cv2, grid, optical_flow(src, dst))
        out += cv2.remap(src, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) / 2
    return out


def motion_smoothness(video: np.ndarray) -> float:
    video = check_clip(video, min_frames=3)
    errors = [np.abs(midpoint(video[i - 1], video[i + 1]) - video[i]).mean() for i in range(1, len(video) - 1, 2)]
    return float(1.0 - np.mean(errors) / 255.0)


def colour_histogram(video: np.ndarray, bins: int = 4) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, bins^3]: the square root of each frame's joint RGB histogram (shares
    of pixels), so a dot product of two rows is their Bhattacharyya coefficient."""
    q = (video.astype(np.int64) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    return np.sqrt(np.stack([np.bincount(c.ravel(), minlength=bins**3) / c.size for c in codes]))


def frame_consistency(video: np.ndarray, frame_features: Callable[[np.ndarray], np.ndarray] = colour_histogram) -> float:
    video = check_clip(video)
    f = np.asarray(frame_features(video), dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    to_first = np.maximum(f[1:] @ f[0], 0.0)
    to_previous = np.maximum((f[1:] * f[:-1]).sum(axis=1), 0.0)
    return float(((to_first + to_previous) / 2).mean())


METRICS = ("flicker", "motion_smoothness", "frame_consistency", "motion_magnitude", "dynamic")


def temporal_scores(video: np.ndarray, fps: float = 8.0) -> dict[str, float]:
    """Every metric of one clip (at least 3 frames), `dynamic` judged at `fps`."""
    video = check_clip(video, min_frames=3)
    magnitudes = motion_magnitudes(video)  # (the flow of each pair, computed once for both figures)
    return {"flicker": flicker(video), "motion_smoothness": motion_smoothness(video),
            "frame_consistency": frame_consistency(video), "motion_magnitude": float(magnitudes.mean()),
            "dynamic": float(is_dynamic(video, fps, magnitudes))}
