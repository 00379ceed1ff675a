"""The Shapes world: procedurally rendered clips, deterministic from a seed.

A clip is a list of `ObjectSpec`s moving in straight lines over a black background: one object
at level 1 (`sample_clip`), one or two at level 2 (`kinema.data.scenes`). For long video, an
object may bounce off the walls instead (`sample_bouncing_clip`): it reflects, like light, each
time its box touches the frame's edge, so a clip longer than the training window keeps moving. Shapes are drawn from signed distance functions with
analytic anti-aliasing (coverage = clamp(0.5 - sdf, 0, 1)), so motion is sub-pixel smooth.

Frames are uint8 `[T, H, W, 3]`; `to_tensor` gives float `[3, T, H, W]` in [-1, 1].
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

COLOURS: dict[str, float] = {  # hue in degrees, 60 apart, fully saturated
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "magenta": 300.0,
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {  # (dx, dy) in image coordinates: y grows downwards
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-1.0, -1.0),
    "up-right": (1.0, -1.0),
    "down-left": (-1.0, 1.0),
    "down-right": (1.0, 1.0),
    "still": (0.0, 0.0),
}
# colour/shape pairs that never appear in training data, for every motion (compositional test)
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("yellow", "triangle"), ("cyan", "square")})

SIZE_RANGE = (12.0, 20.0)  # pixels at 64x64 (diameter / side), scaled with the frame size
SPEED_RANGE = (1.5, 2.5)  # pixels per frame at 64x64


def rgb(colour: str) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(COLOURS[colour] / 360.0, 1.0, 1.0), dtype=np.float32)


def combos(held_out: bool | None = None) -> list[tuple[str, str, str]]:
    """All (colour, shape, direction) triples; `held_out` True/False selects one side of the split."""
    out = []
    for c in COLOURS:
        for s in SHAPES:
            if held_out is not None and ((c, s) in HELD_OUT) != held_out:
                continue
            out.extend((c, s, d) for d in DIRECTIONS)
    return out


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    direction: str
    size: float  # pixels
    speed: float  # pixels per frame along the direction
    start: tuple[float, float]  # centre (x, y) at frame 0, pixels
    # bouncing: (lo, hi), the range of the centre's x and y between which it reflects off the
    # walls; None: a straight line
    bounds: tuple[float, float] | None = None

    def centre(self, t: float) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        norm = math.hypot(dx, dy) or 1.0
        x, y = self.start[0] + t * self.speed * dx / norm, self.start[1] + t * self.speed * dy / norm
        return (x, y) if self.bounds is None else (reflect(x, *self.bounds), reflect(y, *self.bounds))

    def bounces(self, frames: int) -> list[tuple[float, str]]:
        """Each reflection in frames [0, frames - 1]: (time, wall), the wall "left", "right", "top"
        or "bottom" (exact times, between frames)."""
        if self.bounds is None or self.speed == 0:
            return []
        lo, hi = self.bounds
        dx, dy = DIRECTIONS[self.direction]
        norm = math.hypot(dx, dy)
        out = []
        for p0, d, walls in ((self.start[0], dx, ("left", "right")), (self.start[1], dy, ("top", "bottom"))):
            v = self.speed * d / norm  # unfolded coordinate p0 + v t hits lo + k (hi - lo) for integer k
            if v == 0:
                continue
            k = math.floor((p0 - lo) / (hi - lo)) + (1 if v > 0 else 0)
            while 0 < (t := (lo + k * (hi - lo) - p0) / v) <= frames - 1:
                out.append((t, walls[k % 2]))  # even k: lo (left / top), odd k: hi
                k += 1 if v > 0 else -1
        return sorted(out)


def reflect(p: float, lo: float, hi: float) -> float:
    """p folded into [lo, hi] by reflection off both ends (a triangle wave of period 2 (hi - lo))."""
    period = 2 * (hi - lo)
    q = (p - lo) % period
    return lo + (q if q <= hi - lo else period - q)


def sample_object(rng: np.random.Generator, colour: str, shape: str, direction: str,
                  frames: int = 17, size: int = 64, size_range: tuple[float, float] = SIZE_RANGE,
                  speed_range: tuple[float, float] = SPEED_RANGE) -> ObjectSpec:
    """Random size, speed and a start that keeps the whole object in frame for every frame."""
    scale = size / 64.0
    obj_size = float(rng.uniform(*size_range)) * scale
    speed = float(rng.uniform(*speed_range)) * scale if direction != "still" else 0.0
    dx, dy = DIRECTIONS[direction]
    norm = math.hypot(dx, dy) or 1.0
    travel_x, travel_y = (frames - 1) * speed * dx / norm, (frames - 1) * speed * dy / norm
    half = obj_size / 2 + 1.0
    start = []
    for travel in (travel_x, travel_y):
        lo, hi = half - min(travel, 0.0), size - half - max(travel, 0.0)
        start.append(float(rng.uniform(lo, hi)))
    return ObjectSpec(colour, shape, direction, obj_size, speed, (start[0], start[1]))


def sdf(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of a shape of width `size` centred at (cx, cy)."""
    px, py = x - cx, y - cy
    r = size / 2
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        qx, qy = np.abs(px) - r, np.abs(py) - r
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # isosceles, apex up, base = height = size; max of edge distances
        h = size  # apex (0, -h/2), base corners (+-r, h/2); edge normals (+-h, -r) point outwards
        n = math.hypot(h, r)
        right = (h * px - r * (py + h / 2)) / n
        left = (-h * px - r * (py + h / 2)) / n
        return np.maximum(np.maximum(right, left), py - h / 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def render(objects: list[ObjectSpec], frames: int = 17, size: int = 64) -> np.ndarray:
    """Render a clip: uint8 [T, H, W, 3]; later objects are drawn over earlier ones."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    video = np.zeros((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        for obj in objects:
            cx, cy = obj.centre(t)
            cover = np.clip(0.5 - sdf(obj.shape, xs, ys, cx, cy, obj.size), 0.0, 1.0)[..., None]
            video[t] = video[t] * (1 - cover) + cover * rgb(obj.colour)
    return np.round(video * 255).astype(np.uint8)


def sample_clip(seed: int, combo: tuple[str, str, str] | None = None, *, frames: int = 17,
                size: int = 64, held_out: bool = False) -> tuple[np.ndarray, list[ObjectSpec]]:
    """One clip from a seed. With no `combo`, draws one from the training side (or held-out side)."""
    rng = np.random.default_rng(seed)
    if combo is None:
        pool = combos(held_out=held_out)
        combo = pool[int(rng.integers(len(pool)))]
    obj = sample_object(rng, *combo, frames=frames, size=size)
    return render([obj], frames, size), [obj]


def sample_bouncing_clip(seed: int, combo: tuple[str, str, str] | None = None, *, frames: int = 257,
                         size: int = 64, held_out: bool = False) -> tuple[np.ndarray, list[ObjectSpec]]:
    """A clip of `frames` frames whose object bounces off the walls: the size and speed of
    `sample_clip`'s objects, a start anywhere its box fits, and the caption's direction as its
    first motion (it turns at each wall)."""
    rng = np.random.default_rng(seed)
    if combo is None:
        pool = combos(held_out=held_out)
        combo = pool[int(rng.integers(len(pool)))]
    obj = sample_object(rng, *combo, frames=1, size=size)  # (1 frame: its start may be anywhere)
    half = obj.size / 2 + 1.0
    obj = dataclasses.replace(obj, bounds=(half, size - half))
    return render([obj], frames, size), [obj]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 torch [3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """float torch [3, T, H, W] in [-1, 1] -> uint8 numpy [T, H, W, 3]."""
    v = video.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).cpu().numpy()
