"""Video-to-video (SDEdit, issue 12): the input clip's latents noised to t = strength on the
flow's path and denoised from there with the same loop; strength 0 keeps the clip, 1 is
text-to-video."""

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from kinema.data.shapes import sample_clip
from kinema.io.video import read_video, write_mp4
from kinema.pipelines import generate
from kinema.pipelines.generate import partial_schedule
from kinema.pipelines.pipeline import load_pipeline


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def clip():
    return sample_clip(4, frames=9, size=32)[0]  # uint8 [9, 32, 32, 3], the tiny model's size


def test_partial_schedule_known_values():
    assert partial_schedule(4, 1.0, 0.5).tolist() == [0.5, 0.25, 0.0]
    assert partial_schedule(4, 1.0, 0.6).tolist() == pytest.approx([0.6, 0.5, 0.25, 0.0])
    assert partial_schedule(4, 1.0, 1.0).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert partial_schedule(4, 1.0, 0.0).tolist() == [0.0]


def test_strength_one_is_text_to_video_and_zero_keeps_the_clip(pipe, clip):
    kw = dict(num_frames=9, steps=3, seed=2)
    torch.testing.assert_close(pipe.latents("a red circle", video=clip, strength=1.0, **kw), pipe.latents("a red circle", **kw))
    torch.testing.assert_close(pipe.latents("a red circle", video=clip, strength=0.0, **kw), pipe.video_latents(clip, 9))


def test_the_loop_starts_on_the_path_at_strength(pipe, clip, monkeypatch):
    seen = {}
    real = generate.SAMPLERS["euler"]

    def record(v, x, ts):
        seen["x"], seen["ts"] = x.clone(), ts.clone()
        return real(v, x, ts)

    monkeypatch.setitem(generate.SAMPLERS, "euler", record)
    pipe.latents("a blue square", num_frames=9, steps=4, seed=5, video=clip, strength=0.5)
    z0 = pipe.video_latents(clip, 9)
    noise = generate.initial_noise(tuple(z0.shape[1:]), [5])
    torch.testing.assert_close(seen["x"], 0.5 * z0 + 0.5 * noise)
    assert seen["ts"].tolist() == partial_schedule(4, pipe.cfg.timestep_shift, 0.5).tolist()


def test_generate_video_to_video_from_the_command_line(pipe, clip, tmp_path, capsys, tiny_model_dir):
    write_mp4(clip, tmp_path / "in.mp4", fps=8)
    code, out, _ = run_cli(capsys, "generate", "a red circle moving right", "--model", tiny_model_dir, "--frames", 9,
                           "--steps", 2, "--video", tmp_path / "in.mp4", "--strength", 0.5, "-o", tmp_path / "out.mp4")
    assert code == 0 and "wrote" in out
    assert read_video(tmp_path / "out.mp4").shape == (9, 32, 32, 3)


@pytest.mark.parametrize("extra, words", [
    (["--strength", "0.5"], ["--strength sets how much of an input video to keep", "--video PATH"]),
    (["--video", "IN", "--strength", "2"], ["strength 2.0: use a number from 0"]),
    (["--video", "SMALL"], ["the input video is 24x24; this model makes 32x32: resize it first"]),
    (["--video", "IN", "--frames", "13"], ["the input video has 9 frames, fewer than --frames 13"]),
    (["--video", "JUNK"], ["cannot decode", "is it a video file?"]),
])
def test_bad_video_to_video_requests(extra, words, clip, tmp_path, capsys, tiny_model_dir):
    write_mp4(clip, tmp_path / "in.mp4", fps=8)
    write_mp4(sample_clip(1, frames=9, size=24)[0], tmp_path / "small.mp4", fps=8)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    names = {"IN": "in.mp4", "SMALL": "small.mp4", "JUNK": "junk.mp4"}
    extra = [str(tmp_path / names[a]) if a in names else a for a in extra]
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "1", "-o", str(tmp_path / "out.mp4"), *extra]
    if "--frames" not in extra:
        args += ["--frames", "9"]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "out.mp4").exists()



@pytest.mark.slow
def test_strength_moves_the_shipped_model_from_the_clip_to_the_prompt():
    """A red circle moving right, re-drawn as "a blue square moving left": the oracle sees the clip
    at strength 0, the prompt at 1, and the colour change before the motion change in between."""
    from kinema.eval.oracle import judge

    shapes = load_pipeline("shapes")
    src = shapes("a red circle moving right", seed=0)
    seen = {s: judge(shapes("a blue square moving left", video=src, strength=s, seed=0)) for s in (0.0, 0.5, 1.0)}
    assert (seen[0.0].colour, seen[0.0].shape, seen[0.0].direction) == ("red", "circle", "right")
    assert seen[0.5].colour == "blue" and seen[0.5].direction == "right"
    assert (seen[1.0].colour, seen[1.0].shape, seen[1.0].direction) == ("blue", "square", "left")
