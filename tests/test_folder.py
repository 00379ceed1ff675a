"""Training on a folder of your own videos (kinema.data.folder): decoding, sampling by fps, crops,
captions, and files that must be skipped, not raised."""

import json

import numpy as np
import pytest
from PIL import Image

from kinema.data.folder import VideoFolder, fit_frame
from kinema.data.photos import sample_photo_clip
from kinema.data.shapes import sample_clip
from kinema.errors import KinemaError
from kinema.io.video import write_gif, write_mp4


def counter_video(frames: int, value_step: int = 10, size: int = 32) -> np.ndarray:
    """Frame k is flat grey 10 k: a decoded frame says which source frame it was."""
    return np.stack([np.full((size, size, 3), value_step * k, dtype=np.uint8) for k in range(frames)])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    write_mp4(sample_clip(1)[0], root / "a.mp4", fps=8)
    write_mp4(sample_photo_clip(2, frames=25, size=48)[0][:, :, :40], root / "sub" / "wide.mp4", fps=12)  # 40x48
    write_gif(sample_clip(3)[0], root / "c.gif", fps=8)
    write_mp4(counter_video(20), root / "counter.mp4", fps=8)
    Image.fromarray(sample_photo_clip(4, frames=1, size=50)[0][0]).save(root / "still.png")
    write_mp4(sample_clip(5, frames=3)[0], root / "short.mp4", fps=8)  # 0.25 s: too short for 9 frames at 8 fps
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mov").write_text("not a video")
    good = (root / "a.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "captions.jsonl").write_text(json.dumps({"file": "a.mp4", "caption": "a red thing"}) + "\n\n"
                                         + json.dumps({"file": "sub/wide.mp4", "caption": "a camera pan"}) + "\n")
    (root / "c.txt").write_text("a gif\n")
    return root


def test_clips_captions_and_images(folder):
    data = VideoFolder(folder, frames=9, height=32, width=32, fps=8)
    names = [str(p.relative_to(folder)) for p in data.files]
    assert len(data) == 9 and "sub/wide.mp4" in names and "captions.jsonl" not in names
    by_name = {n: data.clip(i, seed=0) for i, n in enumerate(names)}
    for name in ("a.mp4", "sub/wide.mp4", "c.gif", "counter.mp4"):
        clip, _ = by_name[name]
        assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8, name
    assert by_name["still.png"][0].shape == (1, 32, 32, 3)
    assert by_name["a.mp4"][1] == "a red thing" and by_name["sub/wide.mp4"][1] == "a camera pan"
    assert by_name["c.gif"][1] == "a gif" and by_name["counter.mp4"][1] == ""


def test_bad_files_are_skipped_and_named(folder):
    data = VideoFolder(folder, frames=9, height=32, width=32, fps=8)
    results = [data.clip(i) for i in range(len(data))]
    assert sum(c is None for c, _ in results) == 4
    report = data.report()
    assert report.startswith("4 of 9 files skipped:")
    for name, why in (("short.mp4", "too short"), ("empty.mp4", ""), ("notes.mov", ""), ("truncated.mp4", "")):
        line = next(line for line in report.splitlines() if name in line)
        assert why in line


def test_frames_are_sampled_at_the_asked_fps(folder):
    """counter.mp4 runs at 8 fps; at 4 fps every clip frame is two source frames on (value + 20),
    at 8 fps one (value + 10), and the start depends on the seed."""
    data = VideoFolder(folder, frames=5, height=32, width=32, fps=4)
    i = [p.name for p in data.files].index("counter.mp4")
    values = data.clip(i, seed=0)[0].mean(axis=(1, 2, 3))
    assert np.allclose(np.diff(values), 20, atol=3), values
    fast = VideoFolder(folder, frames=9, height=32, width=32, fps=8)
    starts = {round(float(fast.clip(i, seed=s)[0][0].mean()) / 10) for s in range(6)}
    assert np.allclose(np.diff(fast.clip(i, seed=0)[0].mean(axis=(1, 2, 3))), 10, atol=3) and len(starts) > 1


def test_crops():
    """A 20x40 image, left half red and right half blue, into 20x20."""
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :20, 0], image[:, 20:, 2] = 255, 255
    center = fit_frame(image, 20, 20, "center")  # the middle 20 columns: half red, half blue
    assert center[:, :8, 0].min() > 200 and center[:, 12:, 2].min() > 200
    pad = fit_frame(image, 20, 20, "pad")  # scaled to 10x20, black bands above and below
    assert pad[:4].max() == 0 and pad[-4:].max() == 0 and pad[7:13, :8, 0].min() > 200
    resize = fit_frame(image, 20, 20, "resize")  # stretched: red left, blue right
    assert resize[:, :8, 0].min() > 200 and resize[:, 12:, 2].min() > 200


def test_bad_folders_say_what_to_do(tmp_path):
    with pytest.raises(KinemaError, match="does not exist"):
        VideoFolder(tmp_path / "nope", frames=9, height=32, width=32)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(KinemaError, match="holds no videos"):
        VideoFolder(tmp_path, frames=9, height=32, width=32)
    write_mp4(sample_clip(1)[0], tmp_path / "a.mp4")
    with pytest.raises(KinemaError, match="not 1 \\+ 4k"):
        VideoFolder(tmp_path, frames=8, height=32, width=32)
    (tmp_path / "captions.jsonl").write_text('{"file": "a.mp4"}\n')
    with pytest.raises(KinemaError, match="captions.jsonl:1"):
        VideoFolder(tmp_path, frames=9, height=32, width=32)


def test_size_and_length_buckets(tmp_path):
    """A wide video takes the wide size, a tall image the tall one; a 1.1 s video gives 9 frames,
    a 2.6 s one 17 (at 8 fps, durations 9 and 17)."""
    from kinema.data.folder import nearest_size

    sizes = ((32, 32), (24, 40), (40, 24))
    assert nearest_size(90, 160, sizes) == (24, 40) and nearest_size(160, 90, sizes) == (40, 24)
    assert nearest_size(100, 110, sizes) == (32, 32)
    write_mp4(counter_video(9, size=32)[:, :, :].repeat(2, axis=2), tmp_path / "wide_short.mp4", fps=8)  # 32x64
    write_mp4(counter_video(21, size=32), tmp_path / "square_long.mp4", fps=8)
    Image.fromarray(np.zeros((60, 30, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    data = VideoFolder(tmp_path, frames=17, height=32, width=32, fps=8, sizes=sizes, durations=(9, 17))
    shapes = {p.name: data.clip(i)[0].shape for i, p in enumerate(data.files)}
    assert shapes == {"wide_short.mp4": (9, 24, 40, 3), "square_long.mp4": (17, 32, 32, 3), "tall.png": (1, 40, 24, 3)}
