"""An exact judge for Shapes clips (SPEC §8): which colour, shape and motion a clip shows, and in
how many frames exactly one object is visible.

- objects: pixels brighter than `threshold` (max over RGB), 8-connected components of >= min_area px
- colour: hue of the mean object colour -> nearest of the six world hues
- shape: in each one-object frame, IoU of the object with a circle, square and triangle rendered
  by the world's own SDFs into the object's bounding box; the majority over frames wins
- direction: least-squares velocity of the object's centroid; "still" if it travels less than
  `still_px` over the clip (scaled with frame size), else the nearest of the 8 compass directions
- speed: the length of that velocity, in px / frame at 64x64 (`speed_error` scores it against
  the speeds the world draws)
- constancy: the share of one-object frames whose own (colour, shape) is the most common one: 1
  when the object keeps its attributes over time, about 0.5 when it turns into another shape or
  colour halfway
"""

from __future__ import annotations

import colorsys
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kinema.data.shapes import COLOURS, DIRECTIONS, SHAPES, SPEED_RANGE, sdf

THRESHOLD = 0.35
MIN_AREA = 3
STILL_PX = 8.0  # total travel at 64x64 below which an object counts as still (the world's minimum is 24)
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Verdict:
    colour: str | None
    shape: str | None
    direction: str | None
    one_object_frac: float  # share of frames with exactly one object
    objects_per_frame: list[int]
    speed: float | None = None  # px / frame at 64x64; None without a centroid track
    constancy: float = 0.0  # share of one-object frames showing the most common (colour, shape)


def objects(frame: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, int]:
    """frame: uint8 [H, W, 3] -> (labels [H, W], count) of components with >= MIN_AREA pixels."""
    mask = frame.max(axis=-1) > threshold * 255
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return labels, 0
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= MIN_AREA) + 1
    labels = np.where(np.isin(labels, keep), labels, 0)
    return labels, len(keep)


def nearest_colour(rgb: np.ndarray) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0))
    hue = h * 360.0
    return min(COLOURS, key=lambda c: min(abs(hue - COLOURS[c]), 360 - abs(hue - COLOURS[c])))


def best_shape(mask: np.ndarray) -> str:
    """mask: bool [H, W] of one object -> the shape whose template fits its bounding box best."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cy, cx, size = (y0 + y1) / 2, (x0 + x1) / 2, float(max(y1 - y0, x1 - x0))
    gy, gx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float32) + 0.5
    scores = {}
    for shape in SHAPES:
        template = np.clip(0.5 - sdf(shape, gx, gy, cx, cy, size), 0, 1) > THRESHOLD
        scores[shape] = (template & mask).sum() / max(1, (template | mask).sum())
    return max(scores, key=scores.get)


def nearest_direction(vx: float, vy: float, travel: float, still_px: float) -> str:
    if travel < still_px:
        return "still"
    angle = math.atan2(vy, vx)
    moving = {d: v for d, v in DIRECTIONS.items() if d != "still"}
    return min(moving, key=lambda d: abs(math.remainder(angle - math.atan2(moving[d][1], moving[d][0]), math.tau)))


def judge(frames: np.ndarray) -> Verdict:
    """frames: uint8 [T, H, W, 3] -> Verdict."""
    t_count, height = frames.shape[0], frames.shape[1]
    counts, colours, shape_votes, track, single = [], [], [], [], []  # single: (colour, shape) per one-object frame
    for t, frame in enumerate(frames):
        labels, n = objects(frame)
        counts.append(n)
        if n == 0:
            continue
        colours.append(frame[labels > 0].astype(np.float64))
        if n == 1:
            mask = labels > 0
            shape_votes.append(best_shape(mask))
            single.append((nearest_colour(colours[-1].mean(axis=0)), shape_votes[-1]))
            weights = frame.max(axis=-1).astype(np.float64) * mask
            ys, xs = np.mgrid[0:height, 0:frame.shape[1]]
            track.append((t, (xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()))
    colour = nearest_colour(np.concatenate(colours).mean(axis=0)) if colours else None
    shape = Counter(shape_votes).most_common(1)[0][0] if shape_votes else None
    direction = speed = None
    if len(track) >= max(2, t_count // 2):
        ts, xs, ys = (np.array(v) for v in zip(*track))
        vx, vy = np.polyfit(ts, xs, 1)[0], np.polyfit(ts, ys, 1)[0]
        travel = math.hypot(vx, vy) * (t_count - 1)
        direction = nearest_direction(vx, vy, travel, STILL_PX * height / 64)
        speed = float(math.hypot(vx, vy) * 64 / height)
    one = sum(c == 1 for c in counts) / t_count
    constancy = Counter(single).most_common(1)[0][1] / len(single) if single else 0.0
    return Verdict(colour, shape, direction, one, counts, speed, constancy)


def speed_error(speed: float | None, direction: str, speed_range: tuple[float, float] = SPEED_RANGE) -> float:
    """How far a judged speed (px / frame at 64x64) lies outside the speeds the world draws for
    `direction`: 0 inside `speed_range` (a still object: 0 at rest), NaN when there was no track
    to measure (a clip without a steady single object; its `one_object_frames` says so)."""
    if speed is None:
        return float("nan")
    if direction == "still":
        return speed
    lo, hi = speed_range
    return max(lo - speed, speed - hi, 0.0)
