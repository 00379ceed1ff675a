"""Does a long Shapes clip's object turn where it should (issue 12: "for bouncing objects whether each
bounce happens at the wall")? The world's bouncing objects (kinema.data.shapes.sample_bouncing_clip)
reflect exactly when their box touches the frame's edge; a model that drifts turns in mid-air,
passes through the wall, or sticks to it.

From the object's track (one-object frames: its brightness-weighted centroid and its box), each
axis's velocity over `smooth` frames; a *turn* is a change of that velocity's sign with the
object moving at least `min_speed` px/frame on both sides. A turn is *at the wall* when the box is
within `margin` px of the edge it was moving towards at the turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinema.eval.oracle import objects


@dataclass(frozen=True)
class Turn:
    frame: int  # the first frame after the turn
    axis: str  # "x" or "y"
    at_wall: bool


def track(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, 6] float: centroid (x, y) and box (x0, x1, y0, y1, inclusive) of the
    one object per frame; NaN rows where a frame does not hold exactly one object."""
    out = np.full((len(frames), 6), np.nan)
    for t, frame in enumerate(frames):
        labels, n = objects(frame)
        if n != 1:
            continue
        mask = labels > 0
        ys, xs = np.nonzero(mask)
        w = frame.max(axis=-1)[ys, xs].astype(np.float64)
        out[t] = [(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum(), xs.min(), xs.max(), ys.min(), ys.max()]
    return out


def turns(frames: np.ndarray, margin: float = 2.0, smooth: int = 3, min_speed: float = 0.4) -> list[Turn]:
    """Every turn of the clip's object, each with whether its box was at the wall it moved towards."""
    tr = track(frames)
    height, width = frames.shape[1:3]
    found = []
    for axis, (c, lo, hi, size) in (("x", (0, 2, 3, width)), ("y", (1, 4, 5, height))):
        pos = tr[:, c]
        v = np.full(len(pos), np.nan)  # v[t]: mean velocity over frames t - smooth .. t
        v[smooth:] = (pos[smooth:] - pos[:-smooth]) / smooth
        t = smooth
        while t + smooth < len(pos):
            before, after = v[t], v[t + smooth]
            if abs(before) >= min_speed and abs(after) >= min_speed and np.sign(before) != np.sign(after):
                # the turn: the extreme position between the two windows
                window = pos[t:t + smooth + 1]
                if np.isnan(window).all():
                    t += 1
                    continue
                k = t + int(np.nanargmax(window) if before > 0 else np.nanargmin(window))
                edge = tr[k, hi] >= size - 1 - margin if before > 0 else tr[k, lo] <= margin
                found.append(Turn(k + 1, axis, bool(edge)))
                t += smooth + 1
                continue
            t += 1
    return sorted(found, key=lambda b: b.frame)


def bounce_report(frames: np.ndarray, margin: float = 2.0) -> dict[str, float]:
    """turns, turns at a wall, their share (1 when there are none), and the frames that hold one object."""
    found = turns(frames, margin)
    at_wall = sum(b.at_wall for b in found)
    ones = float(np.isfinite(track(frames)[:, 0]).mean())
    return {"turns": len(found), "at_wall": at_wall, "share_at_wall": at_wall / len(found) if found else 1.0,
            "one_object": ones}
