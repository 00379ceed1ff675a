"""The photo world: a virtual camera moving over real photographs.

A clip is one photograph seen through a camera path, recorded with the clip: per frame the
centre of view (x, y) in photo pixels, the zoom (the photo's shorter side over the view's side:
1 sees the whole shorter side, 2 half of it) and the roll (radians; the view's x axis points
along (cos a, sin a) in the photo, whose y axis points down, so a positive roll turns the camera
clockwise on the page and the content counter-clockwise in the frame). `render(photo, path, size)`
makes the frames from the photo and the path alone.

Motions, one or two per clip (two from different kinds): pan left / right / up / down, zoom in /
out, rotate clockwise / counter-clockwise (a slight roll, 4 to 12 degrees over the clip). Every
view stays inside the photo.

Photographs: the colour and grey photographs scikit-image ships (TRAIN) are the only ones trained
on. scikit-learn's two sample photographs (HELD_OUT: a Chinese temple, a flower) come from another
source and serve as held-out evaluation only. Beside them the camera can move over synthetic
dead-leaves pictures, "leaves/<n>" (kinema.data.leaves), which the VAE may train on too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from kinema.data.leaves import POOL, is_leaves, leaves, leaves_name, parse_name

# name -> (loader, caption subject)
TRAIN = {
    "astronaut": "an astronaut", "chelsea": "a cat", "coffee": "a cup of coffee", "rocket": "a rocket on its pad",
    "motorcycle": "a motorcycle", "immunohistochemistry": "stained tissue", "hubble_deep_field": "distant galaxies",
    "camera": "a photographer", "brick": "a brick wall", "grass": "grass", "gravel": "gravel", "moon": "the moon's surface",
    "coins": "old coins", "clock": "a clock", "cell": "cells under a microscope",
}
HELD_OUT = {"china": "a temple", "flower": "a flower"}
PAN = {"pan left": (-1, 0), "pan right": (1, 0), "pan up": (0, -1), "pan down": (0, 1)}
KINDS = {"pan x": ("pan left", "pan right"), "pan y": ("pan up", "pan down"), "zoom": ("zoom in", "zoom out"),
         "rotate": ("rotate clockwise", "rotate counter-clockwise")}
MOTIONS = tuple(m for ms in KINDS.values() for m in ms)
MAX_ROLL = math.radians(12.0)


def subject(name: str) -> str:
    """What a caption calls the photograph: "a cat"; "overlapping discs" for a dead-leaves picture."""
    return "overlapping discs" if is_leaves(name) else {**TRAIN, **HELD_OUT}[name]


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] of a TRAIN or HELD_OUT photograph (grey ones repeated to RGB)."""
    if is_leaves(name):
        n, kind = parse_name(name)
        image = leaves(n, kind=kind)
    elif name in HELD_OUT:
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as e:
            raise ImportError("the held-out photographs ship with scikit-learn: pip install scikit-learn") from e
        image = load_sample_image(f"{name}.jpg")
    elif name in TRAIN:
        import skimage.data

        image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    else:
        raise ValueError(f"unknown photograph {name!r}; training: {', '.join(TRAIN)}; held out: {', '.join(HELD_OUT)}; "
                         f"or leaves/<n>, a synthetic dead-leaves picture")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.array(image[..., :3])
    image.setflags(write=False)  # cached: shared by every caller
    return image


@lru_cache(maxsize=None)
def is_grey(name: str) -> bool:
    """Whether the photograph has no colour (a grey one repeated to RGB)."""
    image = load_photo(name)
    return bool((image == image[..., :1]).all())


@dataclass(frozen=True)
class CameraPath:
    photo: str
    centre: np.ndarray  # [T, 2] (x, y) in photo pixels
    zoom: np.ndarray  # [T]
    roll: np.ndarray  # [T] radians
    motions: tuple[str, ...]
    # the photograph's look, applied before the camera sees it (`sample_look`): mirrored left to right,
    # and its RGB mapped by a 3x3 matrix (rgb' = colour @ rgb); None keeps the colours
    mirror: bool = False
    colour: np.ndarray | None = None  # [3, 3]

    def to_dict(self) -> dict:
        d = {"photo": self.photo, "centre": self.centre.tolist(), "zoom": self.zoom.tolist(),
             "roll": self.roll.tolist(), "motions": list(self.motions)}
        if self.mirror:
            d["mirror"] = True
        if self.colour is not None:
            d["colour"] = self.colour.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CameraPath":
        colour = d.get("colour")
        return cls(d["photo"], np.array(d["centre"], dtype=np.float64), np.array(d["zoom"], dtype=np.float64),
                   np.array(d["roll"], dtype=np.float64), tuple(d["motions"]), bool(d.get("mirror", False)),
                   None if colour is None else np.array(colour, dtype=np.float64))

    def caption(self) -> str:
        """e.g. "the camera pans left and zooms in over a cat"."""
        verbs = [f"{m.split()[0]}s {m.split(maxsplit=1)[1]}" for m in self.motions]
        return f"the camera {' and '.join(verbs)} over {subject(self.photo)}"


def view_radius(short: float, zoom: float, roll: float) -> float:
    """Half extent, along x and along y, in photo pixels of a square view rolled by up to `roll`."""
    return short / zoom / 2 * (math.cos(roll) + math.sin(roll))


def sample_path(rng: np.random.Generator, photo: str, frames: int) -> CameraPath:
    """One or two motions of different kinds, at random speeds, every view inside the photo."""
    h, w = load_photo(photo).shape[:2]
    short = min(h, w)
    kinds = list(KINDS)
    picked = [kinds[i] for i in rng.choice(len(kinds), size=int(rng.integers(1, 3)), replace=False)]
    motions = tuple(KINDS[k][int(rng.integers(2))] for k in picked)
    s = np.linspace(0.0, 1.0, frames)
    z0 = float(rng.uniform(1.3, 1.8))
    zoom = np.full(frames, z0)
    if "zoom in" in motions or "zoom out" in motions:
        ratio = float(rng.uniform(1.3, 1.7))  # in: z0 -> z0 ratio; out: z0 ratio -> z0
        zoom = z0 * ratio ** (s if "zoom in" in motions else 1 - s)
    roll = np.zeros(frames)
    if "rotate clockwise" in motions or "rotate counter-clockwise" in motions:
        sign = 1.0 if "rotate clockwise" in motions else -1.0
        roll = sign * float(rng.uniform(math.radians(4), MAX_ROLL)) * s
    r = view_radius(short, float(zoom.min()), MAX_ROLL)  # the widest view bounds the whole path
    lo, hi = np.array([r, r]), np.array([w - r, h - r])
    direction = np.zeros(2)
    for m in motions:
        direction += PAN.get(m, (0, 0))
    span = np.where(direction != 0, rng.uniform(0.15, 0.35, size=2) * short, 0.0)
    span = np.minimum(span, hi - lo)  # a pan never leaves the photo
    start = lo + rng.uniform(0, 1, size=2) * (hi - lo - span)
    start = np.where(direction < 0, start + span, start)
    centre = start[None] + direction[None] * span[None] * s[:, None]
    return CameraPath(photo, centre, np.asarray(zoom, dtype=np.float64), np.asarray(roll, dtype=np.float64), motions)


def colour_matrix(turn: float, saturation: float, order: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """[3, 3]: channels reordered by `order`, then hues turned by `turn` radians about the grey axis
    and saturation scaled by `saturation`. Grey stays grey and keeps its level (each row sums to 1)."""
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    turn_m = math.cos(turn) * np.eye(3) + math.sin(turn) * cross + (1 - math.cos(turn)) * np.outer(k, k)
    grey = np.outer(k, k)
    return (grey + saturation * (np.eye(3) - grey)) @ turn_m @ np.eye(3)[list(order)]


def sample_look(rng: np.random.Generator, photo: str) -> tuple[bool, np.ndarray]:
    """(mirror, colour) for augmented training clips: a coin-flip mirror; a colour photograph gets a
    random channel order, hue turn and saturation (0.6-1.4); a grey one a random tint (its grey
    levels times a colour whose brightest channel is 1)."""
    mirror = bool(rng.integers(2))
    if is_grey(photo):
        tint = rng.uniform(0.35, 1.0, size=3)
        return mirror, np.diag(tint / tint.max()) @ np.full((3, 3), 1 / 3)
    order = tuple(int(i) for i in rng.permutation(3))
    return mirror, colour_matrix(float(rng.uniform(-math.pi, math.pi)), float(rng.uniform(0.6, 1.4)), order)


def looked(photo: np.ndarray, path: CameraPath) -> np.ndarray:
    """The photograph as the path's look makes it: uint8 [H, W, 3]."""
    if path.mirror:
        photo = photo[:, ::-1]
    if path.colour is not None:
        photo = np.clip(np.rint(photo.astype(np.float64) @ path.colour.T), 0, 255).astype(np.uint8)
    return photo


def render(path: CameraPath, size: int = 64, photo: np.ndarray | None = None) -> np.ndarray:
    """uint8 [T, size, size, 3]: the photo (`photo`, or the path's photograph in the path's look)
    through each frame's view, sampled bilinearly at twice the size and averaged down 2x (so a wide
    view does not alias)."""
    photo = looked(load_photo(path.photo), path) if photo is None else photo
    photo = torch.tensor(np.ascontiguousarray(photo)).permute(2, 0, 1).float()[None]  # [1, 3, H, W]
    h, w = photo.shape[-2:]
    short = min(h, w)
    frames = len(path.zoom)
    theta = torch.zeros(frames, 2, 3, dtype=torch.float64)
    half = torch.as_tensor(short / path.zoom / 2)  # view half side in photo pixels
    cos, sin = torch.as_tensor(np.cos(path.roll)), torch.as_tensor(np.sin(path.roll))
    # output (u, v) in [-1, 1] -> photo point centre + R(roll) (u, v) half -> grid coords 2 p / (W, H) - 1
    theta[:, 0, 0], theta[:, 0, 1] = cos * half * 2 / w, -sin * half * 2 / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * half * 2 / h, cos * half * 2 / h
    theta[:, 0, 2] = torch.as_tensor(path.centre[:, 0]) * 2 / w - 1
    theta[:, 1, 2] = torch.as_tensor(path.centre[:, 1]) * 2 / h - 1
    grid = F.affine_grid(theta.float(), [frames, 3, 2 * size, 2 * size], align_corners=False)
    out = F.grid_sample(photo.expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = F.avg_pool2d(out, 2)  # [T, 3, size, size]
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def photo_path(seed: int, frames: int = 17, held_out: bool = False, augment: bool = False,
               synthetic: bool | str = False) -> CameraPath:
    """The camera path of `sample_photo_clip(seed)`, without rendering it. `augment` adds a random
    look (`sample_look`), drawn after the path: the same seed keeps its photograph and motion.
    `synthetic`: over one of the POOL dead-leaves pictures instead of a photograph (True, or a
    kind of kinema.data.leaves: "photos", the default, "rgb" or "textured")."""
    rng = np.random.default_rng(seed)
    if synthetic:
        if held_out:
            raise ValueError("dead-leaves pictures are for training; held-out clips are photographs")
        name = leaves_name(int(rng.integers(POOL)), "photos" if synthetic is True else synthetic)
    else:
        names = list(HELD_OUT if held_out else TRAIN)
        name = names[int(rng.integers(len(names)))]
    path = sample_path(rng, name, frames)
    if not augment:
        return path
    mirror, colour = sample_look(rng, path.photo)
    return dataclasses.replace(path, mirror=mirror, colour=colour)


def sample_photo_clip(seed: int, frames: int = 17, size: int = 64, held_out: bool = False,
                      augment: bool = False, synthetic: bool | str = False) -> tuple[np.ndarray, CameraPath]:
    """One clip from a seed: uint8 [T, size, size, 3] and its camera path."""
    path = photo_path(seed, frames, held_out, augment, synthetic)
    return render(path, size), path


def path_variants(path: CameraPath, count: int) -> list[str]:
    """`count` captions of a clip, its canonical one first ("the camera pans left over a cat"), then
    ones that leave the motion to a camera condition ("a cat", "a photograph of a cat")."""
    what = subject(path.photo)
    return [path.caption(), what, f"a photograph of {what}", f"the camera moves over {what}"][:max(count, 1)]
