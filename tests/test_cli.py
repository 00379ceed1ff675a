"""The command line as a user meets it: each bad input is one line on stderr, exit code 2, no traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kinema.cli import main
from kinema.config import ModelConfig
from kinema.errors import KinemaError
from kinema.io.video import read_video
from kinema.pipelines.registry import resolve


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kinema: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0]


def test_generate_tiny_model_writes_mp4_and_gif(capsys, tiny_model_dir, tmp_path):
    code, out, _ = run_cli(capsys, "generate", "a red circle moving right", "--model", tiny_model_dir,
                           "-o", tmp_path / "v.mp4", "--gif", tmp_path / "v.gif", "--frames", 9, "--steps", 2)
    assert code == 0 and "wrote" in out
    frames = read_video(tmp_path / "v.mp4")
    assert frames.shape == (9, 32, 32, 3)
    assert (tmp_path / "v.gif").stat().st_size > 0


@pytest.mark.parametrize("args,words", [
    (["generate", "", "--steps", "1"], ["prompt is empty"]),
    (["generate", "   ", "--steps", "1"], ["prompt is empty"]),
    (["generate", "a red circle", "--frames", "8"], ["1 + 4k"]),
    (["generate", "a red circle", "--sampler", "rk45"], ["unknown sampler", "euler"]),
    (["generate", "a red circle", "--steps", "0"], ["steps"]),
    (["generate", "a red circle", "--shift", "0"], ["shift 0.0: use a number above 0"]),
])
def test_bad_generate_requests(capsys, tiny_model_dir, args, words):
    code, _, err = run_cli(capsys, *args, "--model", tiny_model_dir)
    assert_one_line_error(code, err, *words)


def test_missing_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tmp_path / "nope")
    assert_one_line_error(code, err, "not found")


def test_corrupt_checkpoint(capsys, tiny_model_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "dit.safetensors").write_bytes(b"\x00" * 100)
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", bad, "--frames", 9)
    assert_one_line_error(code, err, "corrupt")
    (bad / "config.json").write_text("{ not json")
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", bad, "--frames", 9)
    assert_one_line_error(code, err, "config.json")


def test_unwritable_output(capsys, tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--frames", 9,
                           "--steps", 1, "-o", blocker / "out.mp4")
    assert_one_line_error(code, err, "cannot write")


def test_config_with_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nmodel:\n  dit:\n    depth: 3\n")
    code, _, err = run_cli(capsys, "train", cfg)
    assert_one_line_error(code, err, "unknown key", "depth", "dual_blocks")
    code, _, err = run_cli(capsys, "train", tmp_path / "missing.yaml")
    assert_one_line_error(code, err, "does not exist")
    cfg.write_text("model: [1, 2\n")
    code, _, err = run_cli(capsys, "train", cfg)
    assert_one_line_error(code, err, "YAML")


def test_info(capsys, tiny_model_dir):
    code, out, _ = run_cli(capsys, "info", "--model", tiny_model_dir)
    assert code == 0 and "MM-DiT" in out and "4x4x4" in out and "timestep shift 1, guidance 5 by default" in out


def test_console_script_prints_no_traceback(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "kinema.cli", "generate", "", "--model", str(tiny_model_dir)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "prompt is empty" in proc.stderr


@pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported yet")
def test_generate_with_shipped_model_writes_decodable_17_frame_mp4(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "generate", "a green square moving down-left", "-o", tmp_path / "out.mp4", "--steps", 10)
    assert code == 0
    frames = read_video(tmp_path / "out.mp4")
    assert frames.shape == (17, 64, 64, 3) and frames.dtype == np.uint8
    assert frames.max() > 100  # something was drawn


def test_python_api(tiny_model_dir):
    import kinema

    pipe = kinema.load_pipeline(tiny_model_dir, precision="fp32")
    a = pipe("a blue square moving up", num_frames=9, steps=2, seed=3)
    b = pipe(["a red circle moving left", "a blue square moving up"], num_frames=9, steps=2, seed=[0, 3])
    assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8 and b.shape == (2, 9, 32, 32, 3)
    assert np.abs(a.astype(int) - b[1]).max() <= 1  # same seed, same video, batched or not


def test_the_models_sampling_defaults_reach_the_sampler(tiny_model_dir, monkeypatch):
    """A call that names no shift or guidance samples at the config's (the camera model ships
    guidance 1); a named one wins."""
    import kinema
    from kinema.pipelines import pipeline

    seen = []
    real = pipeline.sample_latents
    monkeypatch.setattr(pipeline, "sample_latents", lambda *a, **k: seen.append((k["shift"], k["guidance"])) or real(*a, **k))
    pipe = kinema.load_pipeline(tiny_model_dir, precision="fp32")
    pipe("a red circle", num_frames=1, steps=1)
    pipe.cfg.guidance = 1.0
    pipe("a red circle", num_frames=1, steps=1)
    pipe("a red circle", num_frames=1, steps=1, shift=3.0, guidance=3.0)
    assert seen == [(pipe.cfg.timestep_shift, 5.0), (pipe.cfg.timestep_shift, 1.0), (3.0, 3.0)]
    with pytest.raises(KinemaError, match="guidance"):
        ModelConfig(guidance=-1.0)


def test_exported_model_round_trip(tiny_model_dir, tmp_path):
    """save_model -> load_pipeline gives back the weights (to fp16 storage precision) and the config."""
    import torch

    from kinema.pipelines.pipeline import load_pipeline, save_model

    pipe = load_pipeline(tiny_model_dir, precision="fp32")
    out = save_model(tmp_path / "copy", pipe.cfg, pipe.vae.state_dict(), pipe.dit.state_dict())
    again = load_pipeline(out, precision="fp32")
    assert again.cfg == pipe.cfg
    for a, b in ((pipe.vae, again.vae), (pipe.dit, again.dit)):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert y.dtype == torch.float32
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4, msg=k)
    x = pipe("a red circle moving left", num_frames=9, steps=3, seed=0)
    y = again("a red circle moving left", num_frames=9, steps=3, seed=0)
    assert np.abs(x.astype(int) - y).max() <= 2


def test_eval_vae_on_a_model_and_a_vae_run(capsys, tiny_model_dir):
    """`kinema eval vae` takes a model directory or name, and a VAE run directory."""
    code, out, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, tiny_model_dir.parent / "vae", "--clips", 2)
    assert code == 0 and out.count("4x4x4x4") == 2
    code, _, err = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir.parent / "nothing")
    assert_one_line_error(code, err, "neither")


def test_eval_vae_codes_each_vae_at_its_own_frame_rule(capsys, tiny_model_dir):
    from kinema.config import VAE_PRESETS

    assert [VAE_PRESETS[p].longest_clip() for p in ("4x8x8", "6x8x8", "8x16x16", "8x32x32")] == [17, 13, 17, 17]
    code, out, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--clips", 1, "--frames", 9)
    assert code == 0 and "| 9 | 4x4x4x4 |" in out
    code, _, err = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--clips", 1, "--frames", 16)
    assert_one_line_error(code, err, "pass --frames 17")


def test_eval_vae_on_held_out_photographs(capsys, tiny_model_dir, tmp_path):
    pytest.importorskip("sklearn", reason="the held-out photographs ship with scikit-learn")
    out_json = tmp_path / "photos.json"
    code, out, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--world", "photos", "--clips", 2,
                           "--json", out_json)
    r = json.loads(out_json.read_text())[0]
    assert code == 0 and r["world"] == "photos" and "colour" not in r and "naive PSNR" in out
    assert 0 < r["baseline_psnr"] < 60 and np.isfinite(r["psnr"])
    assert 0 < r["baseline_detail"] < 1 and r["detail"] >= 0 and "detail" in out  # trilinear blurs: under 1



def test_eval_vae_on_training_photographs(capsys, tiny_model_dir, tmp_path, monkeypatch):
    """--world photos-train codes new camera paths over the training photographs (the held-out
    world's counterpart), and never a held-out one."""
    from kinema.data import photos

    drawn = []
    real = photos.sample_photo_clip

    def spy(*a, **k):
        clip, path = real(*a, **k)
        drawn.append(path)
        return clip, path

    monkeypatch.setattr(photos, "sample_photo_clip", spy)
    out_json = tmp_path / "train.json"
    code, _, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--world", "photos-train", "--clips", 3,
                         "--json", out_json)
    r = json.loads(out_json.read_text())[0]
    assert code == 0 and r["world"] == "photos-train" and np.isfinite(r["psnr"])
    assert len(drawn) == 3 and {p.photo for p in drawn} <= set(photos.TRAIN)

def test_unknown_stage(capsys, tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\n")
    import signal

    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(capsys, "train", cfg, "--stage", "dit")
    assert_one_line_error(code, err, "unknown stage", "vae")
    assert signal.getsignal(signal.SIGTERM) is before  # training's handlers do not outlive the command


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_stops_training_with_a_checkpoint(tmp_path, sig):
    """`kill` (or a scheduler's preemption) saves the current step and exits with one line, like Ctrl-C."""
    import signal
    import time

    import yaml
    from conftest import tiny_recipe_dict

    recipe = tiny_recipe_dict(tmp_path / "run", vae_steps=100_000)
    recipe["vae"].update(log_every=1, ckpt_every=100_000)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    # started like a shell's background job: SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "kinema.cli", "train", str(cfg), "--stage", "vae"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = tmp_path / "run" / "train_log.txt"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "step 2/" in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "interrupted after step" in err and "--resume" in err
    assert (tmp_path / "run" / "vae" / "ckpt" / "latest").is_file()


def test_output_cut_short_by_the_reader_is_no_error():
    """`kinema info --presets | head -1`: the reader is gone before the output is written (here its
    end of the pipe is closed from the start); no traceback, exit 0."""
    import os

    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "kinema.cli", "info", "--presets"], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_every_command_prints_its_help():
    """`--help` on every command and subcommand: a bare % in a help string (argparse formats it)
    crashed `kinema eval --help` with a TypeError."""
    import argparse

    from kinema.cli import build_parser

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])

    seen = 0
    for path, parser in walk(build_parser(), []):
        assert parser.format_help().startswith("usage:"), path
        seen += 1
    assert seen > 10


def test_info_presets_marks_2d_levels(capsys):
    """`kinema info --presets` tells the flat VAE preset from the 3D one of the same compression."""
    code, out, _ = run_cli(capsys, "info", "--presets")
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("vae ")}
    assert code == 0 and lines["4x8x8-flat"].endswith("2D at levels [0]")
    assert "2D" not in lines["4x8x8"] and "widths [32, 64, 128, 128]" in lines["4x8x8"]
