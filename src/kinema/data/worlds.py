"""The worlds kinema trains on, behind one call: a clip from a seed.

    "shapes"  level 1: one object (kinema.data.shapes)
    "scenes"  level 2: one or two objects, each with its own colour, shape, motion and pace
              (kinema.data.scenes)
"""

from __future__ import annotations

import numpy as np

from kinema.data import scenes, shapes

WORLDS = ("shapes", "scenes")


def render_clip(world: str, seed: int, frames: int = 17, size: int = 64) -> np.ndarray:
    """uint8 [T, H, W, 3] of one training clip (seen combinations only) drawn from `seed`."""
    if world == "shapes":
        return shapes.sample_clip(seed, frames=frames, size=size)[0]
    if world == "scenes":
        return scenes.sample_scene_clip(seed, frames=frames, size=size)[0]
    raise ValueError(f"unknown world {world!r}; choose from {WORLDS}")
