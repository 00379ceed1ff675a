"""Video files: H.264 MP4 through PyAV (FFmpeg), GIF through Pillow. Frames are uint8 [T, H, W, 3]."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError


def check_output(path: str | Path, suffix: str, option: str = "-o") -> Path:
    """An output path kinema can write: `suffix` (".mp4", ".gif"), its folder made if missing and
    writable. Checked before any work; writes the file nowhere."""
    path = Path(path)
    if path.is_dir():
        raise KinemaError(f"{option} {path} is a directory; give a file path ending in {suffix}")
    if path.suffix.lower() != suffix:
        hint = " (a GIF: --gif PATH)" if suffix == ".mp4" and path.suffix.lower() == ".gif" else ""
        raise KinemaError(f"{option} {path}: kinema writes {suffix} files here; use a path ending in {suffix}{hint}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KinemaError(f"cannot write {path} (its folder cannot be made: {e.strerror}); choose a writable output "
                          f"path with {option}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KinemaError(f"cannot write {path} (permission denied); choose a writable output path with {option}")
    return path


@contextmanager
def _atomic(path: Path):
    """Write to a temporary name beside `path` and rename it into place: a failed write leaves no
    empty or partial file, and an existing file stays as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise KinemaError(f"cannot write {path} ({e.strerror}); choose another output path") from None
    finally:
        tmp.unlink(missing_ok=True)  # (gone already after the rename)


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, crf: int = 12) -> Path:
    """H.264, yuv420p (plays everywhere). Frames are upscaled to even sizes if needed."""
    import av

    path = check_output(path, ".mp4")
    t, h, w, _ = frames.shape
    with _atomic(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            if w % 2 or h % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file to uint8 [T, H, W, 3]."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, OSError, IndexError) as e:  # (IndexError: a file without a video stream)
        raise KinemaError(f"cannot decode {path} ({e}); is it a video file?") from None
    if not frames:
        raise KinemaError(f"{path} holds no video frames")
    return np.stack(frames)


def read_image(path: str | Path) -> np.ndarray:
    """An image file (PNG, JPEG, ...; any mode: grey, palette, alpha) -> uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise KinemaError(f"no image file at {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise KinemaError(f"cannot read the image {path} ({e.__class__.__name__}); give a PNG or JPEG file") from None


def fit_image(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, str | None]:
    """uint8 [H, W, 3] -> (the image at width x height, a note saying what was done, or None):
    cropped at the centre to the target's aspect, then resized (Lanczos)."""
    from PIL import Image

    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image, None
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    im = Image.fromarray(image).crop((left, top, left + cw, top + ch)).resize((width, height), Image.LANCZOS)
    cropped = f"cropped to {cw}x{ch} at the centre, then " if (cw, ch) != (w, h) else ""
    return np.asarray(im), f"the image is {w}x{h}; {cropped}resized to the model's {width}x{height}"


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    from PIL import Image

    path = check_output(path, ".gif", "--gif")
    images = [Image.fromarray(f) for f in frames]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    with _atomic(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
