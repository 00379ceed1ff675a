"""Shapes level 2 (issue 9): one or two objects per clip, each with its own colour, shape, motion
and pace, so a model must bind attributes to the right object.

    scene = (("red", "circle", "left", "quickly"), ("blue", "square", "up", ""))
    caption: "a red circle moving left quickly and a blue square moving up"

Rules of the world:
- the objects of a scene have different colours, so an object can be named by its colour
- objects are smaller than at level 1 (10-14 px at 64x64) and never overlap in any frame, so
  every frame of a world clip shows exactly as many objects as the caption names
- pace: "slowly" 0.7-1.0 px/frame, "" (no word) 1.6-2.1, "quickly" 2.7-3.0 (at 64x64); an
  object standing still has no pace
- training scenes never contain a held-out colour-shape pair (shapes.HELD_OUT); held-out scenes
  contain at least one
"""

from __future__ import annotations

import math

import numpy as np

from kinema.data.captions import caption_variants
from kinema.data.shapes import COLOURS, DIRECTIONS, HELD_OUT, SHAPES, ObjectSpec, render, sample_object

PACES: dict[str, tuple[float, float]] = {"slowly": (0.7, 1.0), "": (1.6, 2.1), "quickly": (2.7, 3.0)}
OBJECT_SIZE = (10.0, 14.0)
GAP_PX = 3.0  # clearance between two objects' bounding circles in every frame (at 64x64)

ObjectWords = tuple[str, str, str, str]  # (colour, shape, direction, pace)
Scene = tuple[ObjectWords, ...]


def random_scene(rng: np.random.Generator, n_objects: int | None = None, held_out: bool = False) -> Scene:
    """1 or 2 objects (even odds unless given) with distinct colours; held_out picks the split."""
    n = int(rng.integers(1, 3)) if n_objects is None else n_objects
    while True:
        colours = rng.choice(list(COLOURS), size=n, replace=False)
        objs = []
        for c in colours:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
            pace = "" if direction == "still" else ("slowly", "", "", "quickly")[int(rng.integers(4))]
            objs.append((str(c), shape, direction, pace))
        unseen = [(o[0], o[1]) in HELD_OUT for o in objs]
        if any(unseen) == held_out:
            return tuple(objs)


def _apart(a: ObjectSpec, b: ObjectSpec, frames: int, gap: float) -> bool:
    reach = (a.size + b.size) / 2 * math.sqrt(2) + gap  # circumscribed circles: any shape, any pose
    return all(math.dist(a.centre(t), b.centre(t)) > reach for t in range(frames))


def place(scene: Scene, rng: np.random.Generator, frames: int = 17, size: int = 64, tries: int = 1000) -> list[ObjectSpec]:
    """Sizes, speeds and starts for a scene's objects, resampled until no two ever overlap. Some
    scenes cannot be placed (two quick objects crossing paths): ValueError after `tries`."""
    for _ in range(tries):
        objs = [sample_object(rng, c, s, d, frames, size, OBJECT_SIZE, PACES[p]) for c, s, d, p in scene]
        if all(_apart(a, b, frames, GAP_PX * size / 64) for i, a in enumerate(objs) for b in objs[i + 1:]):
            return objs
    raise ValueError(f"could not place {scene} without overlap in {frames} frames at {size}x{size}")


def sample_scene(seed: int, *, frames: int = 17, size: int = 64, held_out: bool = False) -> tuple[Scene, list[ObjectSpec]]:
    """A placeable scene and its objects from a seed: a scene whose objects cannot avoid each other
    is replaced by the next one drawn."""
    rng = np.random.default_rng([seed, 2])
    while True:
        scene = random_scene(rng, held_out=held_out)
        try:
            return scene, place(scene, rng, frames, size, tries=200)
        except ValueError:
            continue


def sample_scene_clip(seed: int, scene: Scene | None = None, *, frames: int = 17, size: int = 64,
                      held_out: bool = False) -> tuple[np.ndarray, Scene, list[ObjectSpec]]:
    """One level-2 clip from a seed: (uint8 [T, H, W, 3], its scene, the placed objects). With no
    `scene`, the seed draws one (`sample_scene`); a given scene is placed from the seed."""
    if scene is None:
        scene, objs = sample_scene(seed, frames=frames, size=size, held_out=held_out)
    else:
        objs = place(scene, np.random.default_rng([seed, 2]), frames, size)
    return render(objs, frames, size), scene, objs


def object_phrase(colour: str, shape: str, direction: str, pace: str) -> str:
    if direction == "still":
        return f"a {colour} {shape} standing still"
    return f"a {colour} {shape} moving {direction}" + (f" {pace}" if pace else "")


def scene_caption(scene: Scene) -> str:
    """The canonical caption: object phrases joined by "and"."""
    return " and ".join(object_phrase(*o) for o in scene)


PACE_WORDS = {"slowly": ("slowly", "at a slow pace", "gently"), "quickly": ("quickly", "fast", "at speed")}


def scene_variants(scene: Scene, rand, count: int) -> list[str]:
    """`count` training phrasings of a scene: each object in one of level 1's phrasings (plus a
    pace phrase), joined by "and"; `rand` is a random.Random."""
    out = []
    for _ in range(count):
        parts = []
        for colour, shape, direction, pace in scene:
            text = rand.choice(caption_variants(colour, shape, direction))
            parts.append(f"{text} {rand.choice(PACE_WORDS[pace])}" if pace else text)
        out.append(" and ".join(parts))
    return out


def parse_scene(prompt: str) -> Scene | None:
    """The inverse of `scene_caption`; None if the prompt is not canonical."""
    out = []
    for part in prompt.strip().lower().split(" and "):
        words = part.split()
        if len(words) < 5 or words[0] not in ("a", "an") or words[1] not in COLOURS or words[2] not in SHAPES:
            return None
        rest = words[3:]
        if rest == ["standing", "still"]:
            out.append((words[1], words[2], "still", ""))
        elif rest[0] == "moving" and len(rest) in (2, 3) and rest[1] in DIRECTIONS and rest[1] != "still" \
                and (len(rest) == 2 or rest[2] in PACES):
            out.append((words[1], words[2], rest[1], rest[2] if len(rest) == 3 else ""))
        else:
            return None
    return tuple(out)
