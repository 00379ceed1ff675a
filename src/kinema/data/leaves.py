"""Dead-leaves images: endless synthetic "photographs" for the photo world's camera.

The dead-leaves model (Matheron; Lee, Mumford and Huang 2001) drops opaque discs on a plane, each
over the ones before it. With disc radii drawn with density r^-3 the picture is scale invariant,
and its power spectrum falls about as 1/f^2, as a natural photograph's does. Image-restoration
networks trained on such pictures alone have been reported to work on real photographs (Achddou
et al. 2021). kinema's photo world has 15 training photographs, which a VAE memorises
(docs/vae.md, "Synthetic pictures"), so "leaves/<n>" names one more picture of this kind for the
camera to move over:

    leaves(n)  uint8 [SIZE, SIZE, 3], drawn from seed n alone

Each disc takes the colour of a random pixel of a random training photograph (so the colours are
a photograph's, never a held-out one's), or with the "rgb" palette ("leaves-rgb/<n>") a colour
drawn uniformly from the RGB cube, shaded by a random linear ramp and, for some, a stripe
texture. Discs are drawn front to back and stop once every pixel is covered, so the picture is
exactly the top layer of an infinite stack.
"""

from __future__ import annotations

import math

import numpy as np

SIZE = 256  # pixels a side: the camera's widest view (zoom 1.3) covers about 200 of them
R_MIN, R_MAX = 2.0, 128.0  # disc radii, pixels
POOL = 256  # the training world draws its pictures from leaves(0) ... leaves(POOL - 1)
MAX_DISCS = 40_000
PREFIX = "leaves/"
PREFIXES = {"photos": PREFIX, "rgb": "leaves-rgb/"}  # disc colours (_palette) -> the pictures' names


def is_leaves(name: str) -> bool:
    return any(name.startswith(p) and name[len(p):].isdigit() for p in PREFIXES.values())


def leaves_name(n: int, palette: str = "photos") -> str:
    return f"{PREFIXES[palette]}{n}"


def parse_name(name: str) -> tuple[int, str]:
    """"leaves-rgb/7" -> (7, "rgb"): the seed and palette of a dead-leaves picture's name."""
    for palette, p in PREFIXES.items():
        if name.startswith(p) and name[len(p):].isdigit():
            return int(name[len(p):]), palette
    raise ValueError(f"{name!r} is not a dead-leaves picture's name ({', '.join(p + '<n>' for p in PREFIXES.values())})")


def sample_radii(rng: np.random.Generator, count: int, r_min: float = R_MIN, r_max: float = R_MAX) -> np.ndarray:
    """`count` radii with density proportional to r^-3 on [r_min, r_max] (inverse CDF:
    F(r) = (r_min^-2 - r^-2) / (r_min^-2 - r_max^-2))."""
    u = rng.uniform(0.0, 1.0, count)
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def _palette(rng: np.random.Generator, count: int, palette: str = "photos") -> np.ndarray:
    """[count, 3] float colours in [0, 255]: random pixels of random training photographs, or
    ("rgb") uniform over the RGB cube."""
    if palette == "rgb":
        return rng.uniform(0.0, 255.0, (count, 3))
    from kinema.data.photos import TRAIN, load_photo

    names = list(TRAIN)
    out = np.empty((count, 3))
    which = rng.integers(len(names), size=count)
    for i, name in enumerate(names):
        sel = np.flatnonzero(which == i)
        if sel.size:
            photo = load_photo(name).reshape(-1, 3)
            out[sel] = photo[rng.integers(len(photo), size=sel.size)]
    return out


def leaves(n: int, size: int = SIZE, palette: str = "photos") -> np.ndarray:
    """uint8 [size, size, 3]: the dead-leaves picture of seed `n`, its discs coloured from `palette`."""
    if palette not in PREFIXES:
        raise ValueError(f"unknown dead-leaves palette {palette!r}; choose from {', '.join(PREFIXES)}")
    rng = np.random.default_rng([0x1EAF, n])
    image = np.zeros((size, size, 3))
    covered = np.zeros((size, size), dtype=bool)
    left = size * size
    batch = 2048  # discs drawn per round of random numbers
    drawn = 0
    while left and drawn < MAX_DISCS:
        radii = sample_radii(rng, batch, R_MIN, R_MAX * size / SIZE)
        centres = rng.uniform(-0.05 * size, 1.05 * size, (batch, 2))
        colours = _palette(rng, batch, palette)
        ramps = rng.normal(0.0, 0.15, (batch, 2))  # relative brightness change per radius, along x and y
        stripes = rng.uniform(0.0, 1.0, batch) < 0.3
        stripe_amp = rng.uniform(0.05, 0.25, batch)
        stripe_period = rng.uniform(2.0, 12.0, batch)
        stripe_angle = rng.uniform(0.0, math.pi, batch)
        for i in range(batch):
            r, (cx, cy) = radii[i], centres[i]
            x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
            y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            ys, xs = np.ogrid[y0:y1, x0:x1]
            dx, dy = (xs + 0.5 - cx) / r, (ys + 0.5 - cy) / r
            new = (dx * dx + dy * dy <= 1.0) & ~covered[y0:y1, x0:x1]
            if not new.any():
                continue
            shade = 1.0 + ramps[i, 0] * dx + ramps[i, 1] * dy
            if stripes[i]:
                along = (xs * math.cos(stripe_angle[i]) + ys * math.sin(stripe_angle[i])) * (2 * math.pi / stripe_period[i])
                shade = shade + stripe_amp[i] * np.sin(along)
            patch = image[y0:y1, x0:x1]
            patch[new] = (colours[i] * np.broadcast_to(shade, new.shape)[new][:, None])
            covered[y0:y1, x0:x1] |= new
            left -= int(new.sum())
            if not left:
                break
        drawn += batch
    if left:  # pixels no disc reached (a corner of tiny discs): the mean colour
        image[~covered] = image[covered].mean(axis=0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
