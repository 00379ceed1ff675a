"""The photo world's camera oracle: the camera path a clip shows, estimated from the clip alone,
and the motions it names (kinema.data.photos: pan left / right / up / down, zoom in / out, rotate
clockwise / counter-clockwise).

A camera over a flat photograph moves the content by a similarity transform (shift, uniform
scale, rotation). For each pair of consecutive frames, OpenCV's Farneback flow gives
correspondences on a grid and `cv2.estimateAffinePartial2D` fits the similarity to them (RANSAC);
the pairs compose into the transform from frame 0 to every frame. In frame pixels centred on the
frame's middle, the content of frame 0 at p is at `s R(theta) p + (tx, ty)` in frame t.

`kinema.data.camera.true_transforms(path, size)` gives the same from the recorded camera path.
`path_error` compares the two as the mean distance, over frames and a grid of points, between
where each puts the points (pixels). `motions_of` reads the motions off the last frame's transform; the thresholds sit
well under the world's smallest motion (a pan of 12% of the frame, a zoom of 1.3x, a roll of 4
degrees) and well over what a still camera's estimate drifts.
"""

from __future__ import annotations

import math

import numpy as np

from kinema.data.camera import true_transforms
from kinema.data.photos import CameraPath
from kinema.eval.temporal import _cv2, check_clip, optical_flow

PAN_SHARE = 0.05        # of the frame's side
PAN_CROSS = 0.25        # a second pan axis counts from this share of the first (the world's diagonals: 0.43 or more)
ZOOM_LOG = math.log(1.12)
ROLL_RAD = math.radians(2.0)


def _centred(size: int) -> np.ndarray:
    """[3, 3]: top-left pixel coordinates (pixel centres at i) -> coordinates centred on the frame."""
    c = (size - 1) / 2
    return np.array([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[3, 3] similarity taking points src [N, 2] to dst [N, 2] (RANSAC; the identity if none fits)."""
    cv2 = _cv2()
    m = None
    if len(src) >= 8:
        m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
                                           ransacReprojThreshold=1.0)
    if m is None:
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return np.vstack([m, [0.0, 0.0, 1.0]])


def flow_points(a: np.ndarray, b: np.ndarray, valid: np.ndarray, step: int = 2, keep: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Grid points of a where `valid` [H, W] holds and a is textured (the `keep` share with the
    largest corner response, cv2.cornerMinEigenVal), and where the flow from a to b takes them.
    Flat regions (sky, a blank wall) have no flow to measure: left in, they outvote the motion
    with a consensus of zero."""
    cv2 = _cv2()
    flow = optical_flow(a, b)
    h, w = a.shape[:2]
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    texture = cv2.cornerMinEigenVal(cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255, 5)
    inside = valid[ys, xs]
    score = texture[ys, xs]
    if inside.any():
        inside &= score >= np.quantile(score[inside], 1 - keep)
    src = np.stack([xs[inside], ys[inside]], axis=1).astype(np.float64)
    return src, src + flow[ys[inside], xs[inside]]


def estimate_transforms(video: np.ndarray, margin: int = 4, refine: int = 2, verify: bool = True) -> np.ndarray:
    """[T, 3, 3]: frame 0 -> frame t in centred pixel coordinates (the identity at t = 0).

    Each frame's guess (the previous frame's transform followed by the flow between the two) is
    refined against frame 0 itself: frame t is warped back into frame 0's coordinates by the guess
    and the residual similarity between frame 0 and it is fitted, on the pixels the warp fills. So
    errors do not pile up along the clip. With `verify`, a refinement is taken only if frame t
    warped back by it matches frame 0 no worse than by the guess (mean absolute difference on the
    pixels both fill, at least 50): where little of frame 0 is left (a strong zoom with a pan) or
    the texture repeats, the fit against frame 0 can lose the match and throw the estimate pixels
    off (docs/evaluation.md, "The camera oracle")."""
    cv2 = _cv2()
    video = check_clip(video)
    h, w = video.shape[1:3]
    inner = np.zeros((h, w), bool)
    inner[margin:h - margin, margin:w - margin] = True
    ys, xs = np.mgrid[0:h, 0:w]
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)]).astype(np.float64)  # [3, H W]
    first = video[0].astype(np.float32)

    def back(t: int, m: np.ndarray) -> np.ndarray:  # frame t in frame 0's coordinates
        return cv2.warpAffine(video[t], m[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)

    def filled(m: np.ndarray) -> np.ndarray:  # [H, W]: frame 0's pixels that land inside frame t, off the margin
        lands = m @ pixels
        return inner & ((lands[0] >= margin) & (lands[0] <= w - 1 - margin)
                        & (lands[1] >= margin) & (lands[1] <= h - 1 - margin)).reshape(h, w)

    out = [np.eye(3)]  # top-left pixel coordinates
    for t in range(1, len(video)):
        guess = fit_similarity(*flow_points(video[t - 1], video[t], inner)) @ out[-1]
        seen, valid = back(t, guess), filled(guess)
        for _ in range(refine):
            refined = guess @ fit_similarity(*flow_points(video[0], seen, valid))
            seen_refined, valid_refined = back(t, refined), filled(refined)
            if verify:
                both = valid & valid_refined
                if both.sum() < 50 or (np.abs(seen_refined - first)[both].mean() > np.abs(seen - first)[both].mean()):
                    break
            guess, seen, valid = refined, seen_refined, valid_refined
        out.append(guess)
    c = _centred(w)
    return np.stack([c @ m @ np.linalg.inv(c) for m in out])


def path_error(estimated: np.ndarray, true: np.ndarray, size: int, points: int = 8) -> float:
    """Mean distance in pixels between where the two paths put a grid of frame 0's points."""
    g = (np.arange(points) + 0.5) / points * size - size / 2
    p = np.stack([*np.meshgrid(g, g), np.ones((points, points))]).reshape(3, -1)  # [3, N] centred
    return float(np.linalg.norm((estimated @ p)[:, :2] - (true @ p)[:, :2], axis=1).mean())


def motions_of(transform: np.ndarray, size: int) -> tuple[str, ...]:
    """The motions a frame 0 -> last frame transform shows, in kinema.data.photos.MOTIONS' order.
    The content moves against the camera: a pan left shifts it right, a zoom in enlarges it, a
    clockwise roll of the camera turns it counter-clockwise on screen (a negative angle, y down).
    A pan is read in the camera's axes halfway through its roll."""
    scale = math.hypot(transform[0, 0], transform[1, 0])
    angle = math.atan2(transform[1, 0], transform[0, 0])
    # the shift in the camera's axes halfway through the roll (the last frame's shift is the pan turned
    # by the whole roll); a roll of up to 12 degrees then tilts a pan by at most 6, so a pan along one
    # axis is one pan: a component counts if it is a quarter of the other or more
    c, s_ = math.cos(-angle / 2), math.sin(-angle / 2)
    tx, ty = np.array([[c, -s_], [s_, c]]) @ transform[:2, 2] / size
    out = []
    if abs(tx) > PAN_SHARE and abs(tx) >= PAN_CROSS * abs(ty):
        out.append("pan left" if tx > 0 else "pan right")
    if abs(ty) > PAN_SHARE and abs(ty) >= PAN_CROSS * abs(tx):
        out.append("pan up" if ty > 0 else "pan down")
    if abs(math.log(scale)) > ZOOM_LOG:
        out.append("zoom in" if scale > 1 else "zoom out")
    if abs(angle) > ROLL_RAD:
        out.append("rotate clockwise" if angle < 0 else "rotate counter-clockwise")
    return tuple(out)


def judge_camera(video: np.ndarray, path: CameraPath | None = None, verify: bool = True) -> dict:
    """{"motions": estimated, and with the true path: "right" (the same set of motions),
    "path_error" (pixels)}. `verify`: as in estimate_transforms."""
    est = estimate_transforms(video, verify=verify)
    size = video.shape[1]
    out = {"motions": list(motions_of(est[-1], size))}
    if path is not None:
        out["right"] = set(out["motions"]) == set(path.motions)
        out["path_error"] = path_error(est, true_transforms(path, size), size)
    return out
