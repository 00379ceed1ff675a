"""Video features for distribution distances: the extractor interface and feature statistics.

A `VideoFeatureExtractor` maps uint8 clips [B, T, H, W, 3] to features [B, D]. Its `FeatureSpec`
says everything that changes the numbers: the network's name and weights hash, how many frames
it reads, the side it resizes to and the value range it scales pixels to. `FeatureStats` carry
that spec, so two sets of statistics from different extractors (or the same network fed another
way) refuse to be compared: most published FVD disagreements come from exactly that (clip
sampling, resizing, value range), not from the models.

`fit_clip` is the one preprocessing every extractor shares: frames sampled evenly to
`spec.frames` (repeating the last frame when the clip is shorter), bilinear resize to
`spec.size` square, values scaled to `spec.value_range`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from kinema.errors import KinemaError


@dataclass(frozen=True)
class FeatureSpec:
    name: str                           # the network, e.g. "i3d-kinetics400" or "kinema-shapes-video-encoder"
    weights: str                        # sha256 of its weights ("" for a parameter-free extractor)
    frames: int                         # frames it reads (clips are sampled to this many)
    size: int                           # square side it resizes frames to
    value_range: tuple[float, float]    # what pixel values 0..255 are scaled to
    dim: int                            # feature width D

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "value_range": list(self.value_range)}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSpec":
        return cls(**{**d, "value_range": tuple(d["value_range"])})


class VideoFeatureExtractor(Protocol):
    spec: FeatureSpec

    def __call__(self, videos: np.ndarray) -> np.ndarray:
        """uint8 [B, T, H, W, 3] -> float64 [B, D]"""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_videos(videos: np.ndarray) -> np.ndarray:
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise KinemaError(f"video features take uint8 clips [B, T, H, W, 3]; got {videos.dtype} {list(videos.shape)}")
    return videos


def frame_indices(frames: int, wanted: int) -> np.ndarray:
    """`wanted` indices spread evenly over `frames` (the first and the last included); a clip
    shorter than `wanted` repeats its frames in order."""
    return np.round(np.linspace(0, frames - 1, wanted)).astype(int)


def fit_clip(videos: np.ndarray, spec: FeatureSpec) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float32 [B, 3, spec.frames, size, size] in spec.value_range."""
    videos = check_videos(videos)
    x = torch.from_numpy(videos[:, frame_indices(videos.shape[1], spec.frames)]).float()  # [B, T', H, W, 3]
    b, t, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w)
    if (h, w) != (spec.size, spec.size):
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False)
    lo, hi = spec.value_range
    x = x / 255.0 * (hi - lo) + lo
    return x.reshape(b, t, 3, spec.size, spec.size).permute(0, 2, 1, 3, 4).contiguous()


@dataclass
class FeatureStats:
    """The features of one set of clips, with the spec of the extractor that made them."""

    spec: FeatureSpec
    features: np.ndarray  # float64 [N, D]

    def __post_init__(self):
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.ndim != 2 or self.features.shape[1] != self.spec.dim:
            raise KinemaError(f"{self.spec.name} features must be [N, {self.spec.dim}]; got {list(self.features.shape)}")

    @property
    def mean(self) -> np.ndarray:
        return self.features.mean(axis=0)

    @property
    def cov(self) -> np.ndarray:
        return np.cov(self.features, rowvar=False)

    def __len__(self) -> int:
        return len(self.features)

    def check_comparable(self, other: "FeatureStats") -> None:
        """Raise unless `other` came from the same extractor, fed the same way."""
        diff = [f"{f.name} {getattr(self.spec, f.name)!r} against {getattr(other.spec, f.name)!r}"
                for f in dataclasses.fields(FeatureSpec) if getattr(self.spec, f.name) != getattr(other.spec, f.name)]
        if diff:
            raise KinemaError("these feature statistics come from different extractors and cannot be compared ("
                              + "; ".join(diff) + "); compute both with the same extractor")

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, features=self.features, spec=json.dumps(self.spec.to_json()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        try:
            with np.load(path) as z:
                return cls(FeatureSpec.from_json(json.loads(str(z["spec"]))), z["features"])
        except (OSError, ValueError, KeyError) as e:
            raise KinemaError(f"{path} is not a kinema feature file ({e.__class__.__name__}); compute it again") from None


def extract(extractor: VideoFeatureExtractor, videos: np.ndarray, batch_size: int = 16) -> FeatureStats:
    """Features of `videos` (uint8 [N, T, H, W, 3]) in batches."""
    videos = check_videos(videos)
    parts = [np.asarray(extractor(videos[i:i + batch_size]), dtype=np.float64) for i in range(0, len(videos), batch_size)]
    return FeatureStats(extractor.spec, np.concatenate(parts))
