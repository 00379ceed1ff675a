"""Captions for Shapes clips: one canonical form (what `kinema generate` is guaranteed to know)
and varied training phrasings, so the model learns words rather than one template.

    canonical:  "a red circle moving up-left", "a red circle standing still"
    variants:   "red ball drifting to the left", "the circle is red and it goes up", ...
"""

from __future__ import annotations

import re

from kinema.data.shapes import COLOURS, DIRECTIONS, SHAPES

SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid", "wedge"),
}
DIRECTION_WORDS = {  # phrases that follow a verb of motion
    "left": ("left", "to the left", "leftwards"),
    "right": ("right", "to the right", "rightwards"),
    "up": ("up", "upwards", "towards the top"),
    "down": ("down", "downwards", "towards the bottom"),
    "up-left": ("up-left", "up and to the left", "towards the top left"),
    "up-right": ("up-right", "up and to the right", "towards the top right"),
    "down-left": ("down-left", "down and to the left", "towards the bottom left"),
    "down-right": ("down-right", "down and to the right", "towards the bottom right"),
}
VERBS = ("moving", "drifting", "sliding", "gliding", "travelling", "going")
STILL = ("standing still", "not moving", "staying in place", "resting", "motionless")
TEMPLATES = (  # {c} colour, {s} shape word, {m} motion phrase
    "a {c} {s} {m}",
    "{c} {s} {m}",
    "the {c} {s} {m}",
    "a {s} that is {c}, {m}",
    "one {c} {s} {m} on a black background",
    "a single {c} {s}, {m}",
)


def canonical_caption(colour: str, shape: str, direction: str) -> str:
    if direction == "still":
        return f"a {colour} {shape} standing still"
    return f"a {colour} {shape} moving {direction}"


def caption_variants(colour: str, shape: str, direction: str) -> list[str]:
    """Every training phrasing of one (colour, shape, direction), canonical first."""
    if direction == "still":
        motions = list(STILL)
    else:
        motions = [f"{v} {d}" for v in VERBS for d in DIRECTION_WORDS[direction]]
    out = [canonical_caption(colour, shape, direction)]
    for template in TEMPLATES:
        for s in SHAPE_WORDS[shape]:
            for m in motions:
                text = template.format(c=colour, s=s, m=m)
                if text not in out:
                    out.append(text)
    return out


_CANONICAL = re.compile(r"^an? (\w+) (\w+) (?:moving ([\w-]+)|standing still)$")


def parse_canonical(prompt: str) -> tuple[str, str, str] | None:
    """'a red circle moving up-left' -> ('red', 'circle', 'up-left'); None if not canonical."""
    m = _CANONICAL.match(prompt.strip().lower())
    if not m:
        return None
    colour, shape, direction = m.group(1), m.group(2), m.group(3) or "still"
    if colour in COLOURS and shape in SHAPES and direction in DIRECTIONS:
        return colour, shape, direction
    return None
