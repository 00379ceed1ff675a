"""An exact judge for Shapes level 2 (kinema.data.scenes): which objects a clip shows, each one's
colour, shape, direction and pace, and whether they are bound as the caption says.

- objects per frame: the level-1 oracle's connected components (oracle.objects)
- tracks: each component is named by its nearest world colour (a scene's colours differ); the
  components of one colour across frames form one track, kept when it is seen in at least a
  third of the frames
- per track: shape by majority vote of `fit_shape` (area- and centroid-matched templates), direction and pace from a
  least-squares fit of the centroid (pace by speed: under 1.3 px/frame "slowly", over 2.4
  "quickly", at 64x64)
- matching: the caption's objects and the tracks are paired to minimise mismatched attributes
  (colour first); each attribute is scored on the pairs, and *binding* holds when every object of
  the caption is matched to a track that is right in all four attributes
- count: the share of frames that show exactly as many objects as the caption names
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from kinema.data.scenes import Scene
from kinema.data.shapes import sdf
from kinema.eval.oracle import STILL_PX, nearest_colour, nearest_direction, objects

SLOW_BELOW, QUICK_ABOVE = 1.3, 2.4  # px/frame at 64x64, between the world's pace ranges
ATTRIBUTES = ("colour", "shape", "direction", "pace")


@dataclass
class Track:
    colour: str
    shape: str | None
    direction: str | None
    pace: str | None  # "slowly", "" or "quickly"; "" for a still object
    frames: int  # frames it was seen in

    def words(self) -> tuple:
        return (self.colour, self.shape, self.direction, self.pace)


def fit_shape(coverage: np.ndarray) -> str:
    """coverage: float [H, W] in [0, 1] of one object -> the shape whose template of the same area,
    centred on the same centroid, overlaps it most (soft IoU). Sub-pixel exact, so it separates
    squares from circles at 10 px, where the level-1 bounding-box fit is off by a pixel."""
    area = coverage.sum()
    gy, gx = np.mgrid[0:coverage.shape[0], 0:coverage.shape[1]].astype(np.float64) + 0.5
    cx, cy = (gx * coverage).sum() / area, (gy * coverage).sum() / area
    side = {"circle": 2 * math.sqrt(area / math.pi), "square": math.sqrt(area), "triangle": math.sqrt(2 * area)}
    scores = {}
    for shape, size in side.items():
        dy = size / 6 if shape == "triangle" else 0.0  # a triangle's centroid sits h/6 below its box centre
        template = np.clip(0.5 - sdf(shape, gx, gy, cx, cy - dy, size), 0, 1)
        scores[shape] = np.minimum(template, coverage).sum() / np.maximum(template, coverage).sum()
    return max(scores, key=scores.get)


def pace_of(speed: float, scale: float) -> str:
    s = speed / scale
    return "slowly" if s < SLOW_BELOW else ("quickly" if s > QUICK_ABOVE else "")


def find_tracks(frames: np.ndarray) -> tuple[list[Track], list[int]]:
    """frames: uint8 [T, H, W, 3] -> (tracks, objects counted in each frame)."""
    t_count, height, width = frames.shape[:3]
    scale = height / 64
    ys, xs = np.mgrid[0:height, 0:width]
    seen: dict[str, list[tuple[int, float, float, str | None]]] = defaultdict(list)  # colour -> (t, x, y, shape)
    counts = []
    for t, frame in enumerate(frames):
        labels, n = objects(frame)
        counts.append(n)
        by_colour: dict[str, list[int]] = defaultdict(list)
        for label in np.unique(labels[labels > 0]):
            by_colour[nearest_colour(frame[labels == label].astype(np.float64).mean(axis=0))].append(int(label))
        for colour, comps in by_colour.items():
            mask = np.isin(labels, comps)
            weights = frame.max(axis=-1).astype(np.float64) * mask
            shape = fit_shape(weights / 255.0) if len(comps) == 1 else None  # a split object has no one outline
            seen[colour].append((t, (xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum(), shape))
    tracks = []
    for colour, points in seen.items():
        if len(points) < max(2, t_count // 3):
            continue
        votes = Counter(p[3] for p in points if p[3] is not None)
        ts, cx, cy = (np.array(v, dtype=np.float64) for v in list(zip(*points))[:3])
        vx, vy = np.polyfit(ts, cx, 1)[0], np.polyfit(ts, cy, 1)[0]
        speed = math.hypot(vx, vy)
        direction = nearest_direction(vx, vy, speed * (t_count - 1), STILL_PX * scale)
        pace = "" if direction == "still" else pace_of(speed, scale)
        tracks.append(Track(colour, votes.most_common(1)[0][0] if votes else None, direction, pace, len(points)))
    return tracks, counts


def _cost(words: tuple, track: Track) -> float:
    return sum(w != v for w, v in zip(words, track.words())) + 0.01 * (words[0] != track.colour)


def judge_scene(frames: np.ndarray, scene: Scene) -> dict:
    """Per-attribute accuracy over the caption's objects, binding, object count; plus the tracks."""
    tracks, counts = find_tracks(frames)
    best: tuple = ()
    best_cost = math.inf
    # every assignment of caption objects to distinct tracks (or to nothing); scenes have <= 2 objects
    options = list(range(len(tracks))) + [None] * len(scene)
    for pick in itertools.permutations(options, len(scene)):
        cost = sum(_cost(o, tracks[i]) if i is not None else 4.5 for o, i in zip(scene, pick))
        if cost < best_cost:
            best, best_cost = pick, cost
    per_object = []
    for o, i in zip(scene, best):
        got = tracks[i].words() if i is not None else (None,) * 4
        per_object.append({a: float(w == g) for a, w, g in zip(ATTRIBUTES, o, got)})
    result = {a: float(np.mean([p[a] for p in per_object])) for a in ATTRIBUTES}
    result["binding"] = float(all(all(p.values()) for p in per_object))
    result["count_frames"] = float(np.mean([c == len(scene) for c in counts]))
    result["per_object"] = per_object  # in the caption's order
    result["objects_found"] = len(tracks)
    result["tracks"] = [t.words() for t in tracks]
    return result
