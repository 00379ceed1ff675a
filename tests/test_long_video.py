"""Long video (kinema.pipelines.long; issue 12): autoregressive chunks, each continuing from the
last frames of the video so far, given to it as clamped context."""

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from kinema.errors import KinemaError
from kinema.pipelines.long import ar_chunks, chunk_plan
from kinema.pipelines.pipeline import load_pipeline


def test_chunk_plan_known_values():
    assert chunk_plan(17, 17, 4, 1) == (1, 0)
    assert chunk_plan(129, 17, 4, 1) == (1, 7)  # 17 + 7 x 16
    assert chunk_plan(257, 17, 4, 1) == (1, 15)
    assert chunk_plan(65, 17, 4, 2) == (5, 4)  # two latent frames = 5 pixel frames of context, 12 new per chunk
    with pytest.raises(KinemaError, match=r"makes 17 \+ 16n frames; --frames 60 is not one: use 49 or 65"):
        chunk_plan(60, 17, 4, 1)
    with pytest.raises(KinemaError, match="leaves no new latent frame"):
        chunk_plan(65, 17, 4, 5)


def test_each_chunk_continues_from_the_clamped_context(tiny_model_dir):
    """Chunk i + 1's first k latent frames are exactly the encoding of the video's last
    1 + r (k - 1) frames before it; the video grows by F - c frames a chunk and never changes
    what it already holds."""
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    f, r, k = pipe.cfg.frames, pipe.cfg.vae.time_compression, 2
    c = 1 + r * (k - 1)
    before = None
    for i, (z, video) in enumerate(ar_chunks(pipe, "a red circle", f + 2 * (f - c), context=k, steps=2)):
        if before is not None:
            torch.testing.assert_close(z[:, :, :k], pipe.video_latents(before[-c:], c), rtol=0, atol=0)
            assert len(video) == len(before) + f - c and np.array_equal(video[:len(before)], before)
        before = video
    assert i == 2 and len(video) == f + 2 * (f - c)


def test_long_video_from_the_cli(tmp_path, capsys, tiny_model_dir):
    code, out, _ = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--long", "ar", "--frames", "25",
                           "--steps", "1", "-o", tmp_path / "long.mp4")
    assert code == 0 and "(25 frames" in out
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--long", "ar", "--frames", "21",
                           "--steps", "1", "-o", tmp_path / "bad.mp4")
    assert_one_line_error(code, err, "--long ar with --context 1 makes 9 + 8n frames; --frames 21 is not one: use 17 or 25")
    assert not (tmp_path / "bad.mp4").exists()


def test_the_drift_benchmark_judges_every_window(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """benchmarks/long_video.py on the tiny model: one row per chunk window, first against last."""
    import json
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "long_video.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--model", str(tiny_model_dir), "--frames", "25", "--prompts", "2",
                                      "--steps", "1", "--precision", "fp32", "--json", str(tmp_path / "r.json")])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "| 2 | 16-24 |" in out and "last window against the first" in out
    report = json.loads((tmp_path / "r.json").read_text())
    routes = report["routes"]
    assert set(report["turns"]) == {"ar", "forcing"} and len(report["turns"]["ar"]["per_clip"]) == 2
    assert "turns of the object:" in out
    assert set(routes) == {"ar", "forcing"} and "--long forcing:" in out
    for table in routes.values():  # the same three windows for each route
        assert len(table) == 3 and all(0 <= row["colour"] <= 1 for row in table)
