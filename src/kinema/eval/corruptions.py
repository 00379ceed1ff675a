"""Controlled corruptions of a clip (uint8 [T, H, W, 3]), to show that each metric responds to what
it claims to measure before anyone trusts it (docs/evaluation.md). Each is deterministic given
its seed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter


def noise(video: np.ndarray, seed: int = 0, sigma: float = 20.0) -> np.ndarray:
    """Gaussian pixel noise of `sigma` (0..255), new in every frame."""
    rng = np.random.default_rng(seed)
    return np.clip(video + rng.normal(0.0, sigma, video.shape), 0, 255).astype(np.uint8)


def blur(video: np.ndarray, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """Gaussian blur in space (each frame alone)."""
    return np.clip(gaussian_filter(video.astype(np.float64), sigma=(0, sigma, sigma, 0)) + 0.5, 0, 255).astype(np.uint8)


def colour_swap(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB -> BGR: red and blue trade places, shapes and motion stay."""
    return np.ascontiguousarray(video[..., ::-1])


def shuffle(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """The frames in a random order: every frame stays, the motion goes."""
    return video[np.random.default_rng(seed).permutation(len(video))]


def reverse(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """Time reversed: motion runs the other way."""
    return np.ascontiguousarray(video[::-1])


def flicker(video: np.ndarray, seed: int = 0, amount: float = 30.0) -> np.ndarray:
    """Every other frame brighter by `amount`."""
    out = video.astype(np.float64)
    out[1::2] += amount
    return np.clip(out, 0, 255).astype(np.uint8)


def freeze(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first frame held for the whole clip: a still clip."""
    return np.repeat(video[:1], len(video), axis=0)


def recolour_halfway(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """From the middle frame on, RGB -> GBR (every hue turned by 120 degrees): an object that
    changes colour partway, which attribute constancy must catch."""
    out = video.copy()
    out[len(video) // 2:] = video[len(video) // 2:, ..., [1, 2, 0]]
    return out


def fast_forward(video: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every second frame: the same motion at twice the speed, in half the frames."""
    return np.ascontiguousarray(video[::2])


CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {
    "noise": noise, "blur": blur, "colour swap": colour_swap, "shuffle": shuffle, "reverse": reverse,
    "flicker": flicker, "freeze": freeze, "recolour halfway": recolour_halfway, "fast forward": fast_forward,
}
