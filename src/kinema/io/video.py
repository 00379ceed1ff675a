"""Video files: H.264 MP4 through PyAV (FFmpeg), GIF through Pillow. Frames are uint8 [T, H, W, 3]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kinema.errors import KinemaError


def _check_writable(path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise KinemaError(f"cannot write {path} ({e.strerror}); choose a writable output path with -o") from None
    return path


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, crf: int = 12) -> Path:
    """H.264, yuv420p (plays everywhere). Frames are upscaled to even sizes if needed."""
    import av

    path = _check_writable(Path(path))
    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
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
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    except (av.FFmpegError, OSError) as e:
        raise KinemaError(f"cannot decode {path} ({e}); is it a video file?") from None


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    from PIL import Image

    path = _check_writable(Path(path))
    images = [Image.fromarray(f) for f in frames]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
