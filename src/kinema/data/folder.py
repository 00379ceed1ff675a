"""A folder of your own videos and images as training clips.

    data = VideoFolder("my_videos/", frames=17, height=64, width=64, fps=8, time_compression=4)
    clip, caption = data.clip(i, seed)     # uint8 [17, 64, 64, 3] (None if the file is unreadable), its caption
    print(data.report())                   # the files skipped, and why

Files, found recursively: videos (.mp4 .webm .mov .mkv .avi .gif) and images (.png .jpg .jpeg
.webp .bmp), an image being a one-frame clip. Captions: `captions.jsonl` at the root, one
{"file": "relative/path", "caption": "..."} per line, or a `.txt` beside the file with the same
stem; a file with neither has the empty caption (it still trains the unconditional model).

Frames: `frames` frames at `fps`, by the source's own timestamps, from a start drawn from the
seed; a video shorter than that is skipped as too short (named in the report). `frames` must be
1 + r k for the VAE's time compression r. Images give one frame.

Frame size, `crop`: "center" resizes the shorter side to fit and crops the middle; "resize"
stretches to the size; "pad" fits the longer side and pads with black.

Buckets: with `sizes` ((height, width), ...) each file takes the size whose aspect ratio is
nearest its own (wide videos a wide size, portrait ones a tall one); with `durations` (frame
counts) each video takes the longest it can give at `fps`, so short videos still train. Training
then draws each batch from one shape (kinema.data.latent_cache).

A corrupt, truncated, empty or unreadable file never stops training: `clip` returns None, and the
file is counted and named with its reason in `report()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from kinema.errors import KinemaError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CROPS = ("center", "resize", "pad")


@dataclass
class Skipped:
    """Files left out, by path, with the reason (the first error seen)."""

    files: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.files.setdefault(path, reason)

    def __len__(self) -> int:
        return len(self.files)


def read_captions(root: Path) -> dict[str, str]:
    """captions.jsonl at the root -> {relative path: caption}; a bad line is one clear error."""
    path = root / "captions.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            out[str(Path(item["file"]))] = str(item["caption"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise KinemaError(f'{path}:{n}: each line must be {{"file": "relative/path", "caption": "..."}}') from None
    return out


def nearest_size(h: int, w: int, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The (height, width) of `sizes` whose aspect ratio is nearest h / w (in log ratio)."""
    aspect = np.log(w / h)
    return min(sizes, key=lambda s: abs(np.log(s[1] / s[0]) - aspect))


def fit_frame(frame: np.ndarray, height: int, width: int, crop: str) -> np.ndarray:
    """uint8 [H, W, 3] -> [height, width, 3] by `crop` (module docstring), bicubic."""
    image = Image.fromarray(frame)
    h, w = frame.shape[:2]
    if crop == "resize":
        return np.asarray(image.resize((width, height), Image.BICUBIC))
    scale = max(height / h, width / w) if crop == "center" else min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(image.resize((nw, nh), Image.BICUBIC))
    if crop == "center":
        top, left = (nh - height) // 2, (nw - width) // 2
        return resized[top:top + height, left:left + width]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def timed_frames(path: Path) -> tuple[list[tuple[float, np.ndarray]], float]:
    """Every frame of a video with the time it appears, in seconds, and when the last one ends:
    PyAV (FFmpeg) for videos, Pillow for GIFs (a GIF may hold one frame for many, with its duration)."""
    if path.suffix.lower() == ".gif":
        out, t = [], 0.0
        with Image.open(path) as im:
            for k in range(getattr(im, "n_frames", 1)):
                im.seek(k)
                out.append((t, np.asarray(im.convert("RGB"))))
                t += (im.info.get("duration") or 100) / 1000
        return out, t
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        out = [(float(f.time) if f.time is not None else i / rate, f.to_ndarray(format="rgb24"))
               for i, f in enumerate(container.decode(stream))]
    return out, (out[-1][0] + 1 / rate if out else 0.0)


def decode_frames(path: Path, durations: tuple[int, ...], fps: float, rng: np.random.Generator) -> np.ndarray:
    """Frames of a video at `fps` from a random start, as many as the longest of `durations` the
    video can give: uint8 [frames, H, W, 3]. Raises ValueError("too short ...") or a decoder / OS
    error for a file that cannot give the shortest."""
    decoded, end = timed_frames(path)
    if not decoded:
        raise ValueError("no frames")
    times = np.array([t for t, _ in decoded])
    end, times = end - times[0], times - times[0]
    fitting = [f for f in sorted(durations) if f / fps <= end + 1e-6]
    frames = fitting[-1] if fitting else min(durations)  # none fits: reported too short below
    span = frames / fps  # the clip shows `frames` frames, each for 1 / fps
    if end + 1e-6 < span:
        raise ValueError(f"too short: {end:.2f} s, {frames} frames at {fps:g} fps need {span:.2f} s")
    start = float(rng.uniform(0, end - span)) if end > span else 0.0
    wanted = start + np.arange(frames) / fps
    index = np.searchsorted(times, wanted + 1e-6, side="right") - 1  # the frame showing at each wanted time
    return np.stack([decoded[i][1] for i in np.clip(index, 0, len(decoded) - 1)])


class VideoFolder:
    def __init__(self, root: str | Path, *, frames: int, height: int, width: int, fps: float = 8.0,
                 time_compression: int = 4, crop: str = "center", sizes: tuple[tuple[int, int], ...] = (),
                 durations: tuple[int, ...] = ()):
        self.root = Path(root)
        if not self.root.is_dir():
            raise KinemaError(f"data folder {self.root} does not exist; point --data at a folder of videos and images")
        self.durations = tuple(durations) or (frames,)
        for f in self.durations:
            if f < 1 or (f - 1) % time_compression:
                raise KinemaError(f"{f} frames is not 1 + {time_compression}k, as the VAE needs; "
                                  f"use e.g. {time_compression + 1} or {2 * time_compression + 1}")
        if crop not in CROPS:
            raise KinemaError(f"crop {crop!r}: use one of {', '.join(CROPS)}")
        self.frames, self.height, self.width, self.fps, self.crop = frames, height, width, fps, crop
        self.sizes = tuple(tuple(s) for s in sizes) or ((height, width),)
        suffixes = VIDEO_SUFFIXES + IMAGE_SUFFIXES
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not self.files:
            raise KinemaError(f"{self.root} holds no videos ({' '.join(VIDEO_SUFFIXES)}) or images "
                              f"({' '.join(IMAGE_SUFFIXES)})")
        listed = read_captions(self.root)
        self.captions = [self._caption(p, listed) for p in self.files]
        self.skipped = Skipped()

    def _caption(self, path: Path, listed: dict[str, str]) -> str:
        rel = str(path.relative_to(self.root))
        if rel in listed:
            return listed[rel]
        txt = path.with_suffix(".txt")
        return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""

    def __len__(self) -> int:
        return len(self.files)

    def is_image(self, i: int) -> bool:
        return self.files[i].suffix.lower() in IMAGE_SUFFIXES

    def clip(self, i: int, seed: int = 0) -> tuple[np.ndarray | None, str]:
        """(uint8 [T, height, width, 3] with T = frames (the longest of `durations` that fits), or
        1 for an image, at the size of `sizes` nearest its aspect; or None if the file is
        unreadable or too short, which the report then names), caption."""
        path = self.files[i]
        rel = str(path.relative_to(self.root))
        try:
            if self.is_image(i):
                with Image.open(path) as im:
                    raw = np.asarray(im.convert("RGB"))[None]
            else:
                raw = decode_frames(path, self.durations, self.fps, np.random.default_rng([seed, i]))
        except Exception as e:  # noqa: BLE001  any decoder failure: skip the file, never stop training
            self.skipped.add(rel, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"[:200])
            return None, self.captions[i]
        height, width = nearest_size(raw.shape[1], raw.shape[2], self.sizes)
        return np.stack([fit_frame(f, height, width, self.crop) for f in raw]), self.captions[i]

    def report(self) -> str:
        """One line per skipped file (or a line saying none were)."""
        if not self.skipped:
            return f"{len(self.files)} files, none skipped"
        lines = [f"{len(self.skipped)} of {len(self.files)} files skipped:"]
        lines += [f"  {path}: {reason}" for path, reason in sorted(self.skipped.files.items())]
        return "\n".join(lines)
