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
a photograph's, never a held-out one's), or in the "rgb" kind ("leaves-rgb/<n>") a colour
drawn uniformly from the RGB cube, shaded by a random linear ramp and, for some, a stripe
texture. The "textured" kind ("leaves-tex/<n>") adds what photographs have and flat discs lack:
grain inside each disc (1/f noise) and edges out of focus (half the discs fade out over up to
16 pixels). Discs are drawn front to back and stop once every pixel is covered, so the picture is
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
PREFIXES = {"photos": PREFIX, "rgb": "leaves-rgb/", "textured": "leaves-tex/"}  # kinds (leaves()) -> the pictures' names
DONE = 1.0 - 1e-3  # a pixel this covered shows nothing of the discs below


def is_leaves(name: str) -> bool:
    return any(name.startswith(p) and name[len(p):].isdigit() for p in PREFIXES.values())


def leaves_name(n: int, kind: str = "photos") -> str:
    return f"{PREFIXES[kind]}{n}"


def parse_name(name: str) -> tuple[int, str]:
    """"leaves-rgb/7" -> (7, "rgb"): the seed and kind of a dead-leaves picture's name."""
    for kind, p in PREFIXES.items():
        if name.startswith(p) and name[len(p):].isdigit():
            return int(name[len(p):]), kind
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


def noise_fields(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """[count, size, size] textures of unit standard deviation whose power falls as 1/f^beta, beta
    drawn from [1, 3] per field (rough grain to smooth clouds): what "textured" discs are shaded by."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f[0, 0] = 1.0
    out = np.empty((count, size, size))
    for k in range(count):
        spectrum = np.fft.fft2(rng.normal(size=(size, size))) * f ** (-rng.uniform(1.0, 3.0) / 2)
        spectrum[0, 0] = 0.0
        field = np.fft.ifft2(spectrum).real
        out[k] = field / field.std()
    return out


def disc_alpha(dx: np.ndarray, dy: np.ndarray, r: float, soft: float = 0.0) -> np.ndarray:
    """How much of each pixel a disc of radius r covers, at offsets (dx, dy) from its centre in radii:
    1 inside and 0 outside; with `soft` > 0 it falls linearly from 1 to 0 over `soft` pixels
    centred on the rim (an edge out of focus)."""
    if not soft:
        return (dx * dx + dy * dy <= 1.0).astype(float)
    return np.clip(r * (1.0 - np.sqrt(dx * dx + dy * dy)) / soft + 0.5, 0.0, 1.0)


def leaves(n: int, size: int = SIZE, kind: str = "photos") -> np.ndarray:
    """uint8 [size, size, 3]: the dead-leaves picture of seed `n` of `kind` (PREFIXES: "photos" and
    "rgb" name the discs' colours; "textured" is "photos" with each disc shaded by a 1/f noise texture
    and half of them with soft, out-of-focus edges)."""
    if kind not in PREFIXES:
        raise ValueError(f"unknown dead-leaves kind {kind!r}; choose from {', '.join(PREFIXES)}")
    rng = np.random.default_rng([0x1EAF, n])
    textured = kind == "textured"
    extra = np.random.default_rng([0x1EAF, n, 1])  # textured's own draws: the other kinds' pictures stay as they were
    fields = noise_fields(extra, 3, size) if textured else None
    image = np.zeros((size, size, 3))
    cover = np.zeros((size, size))  # how much of each pixel the discs drawn so far hide (0 or 1 for hard edges)
    left = size * size
    batch = 2048  # discs drawn per round of random numbers
    drawn = 0
    while left and drawn < MAX_DISCS:
        radii = sample_radii(rng, batch, R_MIN, R_MAX * size / SIZE)
        centres = rng.uniform(-0.05 * size, 1.05 * size, (batch, 2))
        colours = _palette(rng, batch, "rgb" if kind == "rgb" else "photos")
        ramps = rng.normal(0.0, 0.15, (batch, 2))  # relative brightness change per radius, along x and y
        stripes = rng.uniform(0.0, 1.0, batch) < 0.3
        stripe_amp = rng.uniform(0.05, 0.25, batch)
        stripe_period = rng.uniform(2.0, 12.0, batch)
        stripe_angle = rng.uniform(0.0, math.pi, batch)
        if textured:  # edge width (0: sharp), texture strength and field per disc
            soft = np.where(extra.uniform(size=batch) < 0.5, np.exp(extra.uniform(math.log(0.5), math.log(16.0), batch)), 0.0)
            soft *= size / SIZE
            grain = np.where(extra.uniform(size=batch) < 0.7, extra.uniform(0.05, 0.4, batch), 0.0)
            which = extra.integers(len(fields), size=batch)
        for i in range(batch):
            r, (cx, cy) = radii[i], centres[i]
            reach = r + (soft[i] / 2 + 1 if textured else 0.0)
            x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
            y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            ys, xs = np.ogrid[y0:y1, x0:x1]
            dx, dy = (xs + 0.5 - cx) / r, (ys + 0.5 - cy) / r
            alpha = disc_alpha(dx, dy, r, soft[i] if textured else 0.0)
            under = cover[y0:y1, x0:x1]
            add = alpha * (1.0 - under)  # front to back: a disc shows only where the ones before leave room
            if not add.any():
                continue
            shade = 1.0 + ramps[i, 0] * dx + ramps[i, 1] * dy
            if stripes[i]:
                along = (xs * math.cos(stripe_angle[i]) + ys * math.sin(stripe_angle[i])) * (2 * math.pi / stripe_period[i])
                shade = shade + stripe_amp[i] * np.sin(along)
            if textured and grain[i]:
                shade = shade * (1.0 + grain[i] * fields[which[i], y0:y1, x0:x1])
            image[y0:y1, x0:x1] += add[..., None] * colours[i] * np.broadcast_to(shade, add.shape)[..., None]
            before = int((under < DONE).sum())
            under += add
            left -= before - int((under < DONE).sum())
            if not left:
                break
        drawn += batch
    if left:  # what no disc reached (a corner of tiny discs): the mean colour
        image += (1.0 - cover)[..., None] * image[cover >= DONE].mean(axis=0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
