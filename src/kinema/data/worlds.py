"""The worlds kinema trains on, behind one call: a clip from a seed.

    "shapes"  level 1: one object (kinema.data.shapes)
    "scenes"  level 2: one or two objects, each with its own colour, shape, motion and pace
              (kinema.data.scenes)
    "photos"  a camera moving over scikit-image's photographs (kinema.data.photos); VAE stages only
              for now: its captions name camera motions, which no oracle judges yet
    "leaves"  the same camera over synthetic dead-leaves pictures (kinema.data.leaves); VAE stages only
    "leaves-rgb"  the same, with disc colours uniform over the RGB cube, not the training photographs'
    "leaves-tex"  the same as "leaves", with grain inside the discs and half their edges out of focus

A mix such as "shapes+photos" draws each clip from one of its worlds, in turn by seed.
"""

from __future__ import annotations

import numpy as np

from kinema.data import photos, scenes, shapes

WORLDS = ("shapes", "scenes", "photos")  # what a whole recipe (denoiser included) trains on
LEAVES = {"leaves": "photos", "leaves-rgb": "rgb", "leaves-tex": "textured"}  # world -> kinema.data.leaves kind
VAE_WORLDS = (*WORLDS, *LEAVES)  # what the VAE stages can train on, alone or mixed with "+"


def check_vae_world(world: str) -> None:
    bad = [w for w in world.split("+") if w not in VAE_WORLDS]
    if bad:
        raise ValueError(f"unknown VAE world {bad[0]!r}; choose from {', '.join(VAE_WORLDS)}, or mix them with '+'")


def render_clip(world: str, seed: int, frames: int = 17, size: int = 64, augment: bool = False) -> np.ndarray:
    """uint8 [T, H, W, 3] of one training clip (seen combinations, training photographs) drawn from `seed`.
    `augment`: each photograph in a random look (mirror, colours: kinema.data.photos.sample_look);
    the other worlds are left as they are."""
    if "+" in world:
        parts = world.split("+")
        return render_clip(parts[seed % len(parts)], seed // len(parts), frames, size, augment)
    if world == "photos":
        return photos.sample_photo_clip(seed, frames=frames, size=size, augment=augment)[0]
    if world in LEAVES:
        return photos.sample_photo_clip(seed, frames=frames, size=size, augment=augment, synthetic=LEAVES[world])[0]
    if world == "shapes":
        return shapes.sample_clip(seed, frames=frames, size=size)[0]
    if world == "scenes":
        return scenes.sample_scene_clip(seed, frames=frames, size=size)[0]
    raise ValueError(f"unknown world {world!r}; choose from {WORLDS}")
