"""Data-parallel training with torchrun (kinema.train.dist): two gloo processes take the steps one
process takes with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_recipe_dict

from kinema.io.weights import load_weights
from kinema.train.checkpoint import latest_checkpoint


def recipe_file(tmp_path, name: str, accumulate: int = 1) -> str:
    r = tiny_recipe_dict(tmp_path / name, vae_steps=2, dit_steps=3)
    r["precision"] = "fp32"
    r["vae"].update(batch_size=2, image_batch_size=2)
    r["dit"].update(batch_size=4, optim={"accumulate": accumulate})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return str(path)


def kinema(*args: str, procs: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 \
        else [sys.executable]
    return subprocess.run([*launcher, "-m", "kinema.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def final(run, stage: str) -> dict[str, torch.Tensor]:
    return load_weights(latest_checkpoint(run / stage / "ckpt") / "model.safetensors")


def test_two_processes_train_as_one(tmp_path):
    """DDP on 2 gloo processes, the denoiser also accumulating 2 micro-batches, against 1 process
    with whole batches."""
    one = kinema("train", recipe_file(tmp_path, "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = kinema("train", recipe_file(tmp_path, "two", accumulate=2), procs=2)  # 4 = 2 processes x 2 micro-batches of 1
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("model written to") == 1  # rank 0 speaks for both
    for stage in ("vae", "dit"):  # the same weights after the VAE's 2 and the denoiser's 3 steps
        a, b = final(tmp_path / "one", stage), final(tmp_path / "two", stage)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=f"{stage} {k}")
    log_one = (tmp_path / "one" / "train_log.txt").read_text()
    log_two = (tmp_path / "two" / "train_log.txt").read_text()
    assert log_two.count("[dit] step 3/3") == 1  # one log, not one per process
    loss = lambda log: float(log.split("[dit] step 3/3 loss ")[1].split()[0])  # noqa: E731
    assert loss(log_two) == pytest.approx(loss(log_one), rel=1e-4)  # the mean over both processes' shares


def test_a_batch_that_does_not_split_is_one_clear_line(tmp_path):
    r = tiny_recipe_dict(tmp_path / "odd", vae_steps=1, dit_steps=1)
    r["vae"].update(batch_size=3)
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(r))
    out = kinema("train", str(tmp_path / "odd.yaml"), procs=2)
    assert out.returncode != 0 and "vae.batch_size (and image_batch_size, length_schedule) 3 does not split over 2 processes" in out.stderr
    assert "AttributeError" not in out.stderr  # each process leaves the group cleanly (kinema.train.dist.abort)


def test_resume_on_another_number_of_processes(tmp_path):
    """Checkpoints hold the whole state and every rank draws the global batch, so a run stopped
    after 2 denoiser steps in 1 process and finished in 2 ends where 3 straight steps do."""
    straight = kinema("train", recipe_file(tmp_path, "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = recipe_file(tmp_path, "switch")
    r = yaml.safe_load(open(first))
    r["dit"]["steps"] = 2
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump(r))
    assert kinema("train", str(short), "--stage", "all").returncode == 0
    # the same run directory, the full 3 steps, now on two processes
    resumed = kinema("train", first, "--resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final(tmp_path / "straight", "dit"), final(tmp_path / "switch", "dit")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)


def test_fsdp_shards_the_denoiser_and_trains_as_one(tmp_path):
    """parallel: fsdp (FSDP2 fully_shard per block) on 2 processes takes the steps one process
    takes; its checkpoint holds whole tensors and finishes in one process where 3 straight steps end."""
    one = kinema("train", recipe_file(tmp_path, "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    path = recipe_file(tmp_path, "fsdp")
    r = yaml.safe_load(open(path))
    r["parallel"] = "fsdp"
    r["activation_checkpointing"] = True  # on the same blocks FSDP2 shards: nothing changes but memory
    r["dit"]["steps"] = 2
    short = tmp_path / "fsdp_short.yaml"
    short.write_text(yaml.safe_dump(r))
    two = kinema("train", str(short), procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    log = (tmp_path / "fsdp" / "train_log.txt").read_text()
    assert "[vae] DDP over 2 processes" in log and "[dit] FSDP2 (sharded) over 2 processes" in log
    r["dit"]["steps"] = 3
    (tmp_path / "fsdp_full.yaml").write_text(yaml.safe_dump(r))
    resumed = kinema("train", str(tmp_path / "fsdp_full.yaml"), "--resume")  # one process, from the sharded run
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final(tmp_path / "one", "dit"), final(tmp_path / "fsdp", "dit")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)
    ema = lambda run: load_weights(latest_checkpoint(tmp_path / run / "dit" / "ckpt") / "ema.safetensors")  # noqa: E731
    ea, eb = ema("one"), ema("fsdp")
    assert all(torch.allclose(eb[k], ea[k], atol=2e-5, rtol=1e-4) for k in ea)


def test_sequence_parallel_attention_equals_whole_attention(tmp_path):
    """Ulysses on 2 gloo processes (heads split by all-to-all), with no mask, a padding mask and a
    full mask; 3 heads fall back to gathered keys and values; each process's outputs equal its
    tokens' rows of single-process attention. Whole denoisers, MM-DiT's joint attention included,
    give one process's outputs and weight gradients."""
    script = os.path.join(os.path.dirname(__file__), "dist_scripts", "sequence_attention.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])  # conftest's helpers
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script,
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for rank in (0, 1):
        lines = (tmp_path / f"rank_{rank}.txt").read_text().splitlines()
        cases = [line for line in lines if line.startswith("heads")]
        assert len(cases) == 4
        for line in cases:  # "heads H mask M: <error> <gathered error>"
            assert max(float(w) for w in line.split()[-2:]) < 1e-5, line
        assert any("use a head count divisible by 2" in line for line in lines)
        model = next(line for line in lines if line.startswith("model:"))  # "model: <error> 0 tokens seen [6]"
        assert float(model.split()[1]) < 1e-5 and model.endswith("tokens seen [6]"), model  # a 3x2x2 grid split in two
        grads = [line for line in lines if line.startswith("grads")]  # "grads NAME: <output error> <gradient error>"
        assert len(grads) == 12  # (three of them packed batches)
        for line in grads:
            assert float(line.split()[-2]) < 1e-5 and float(line.split()[-1]) < 1e-4, line


def test_sequence_parallel_training(tmp_path):
    """parallel: sp with --arch wan-tiny, with the default MM-DiT and with latte-tiny's spatial and
    temporal layouts: both processes take the same samples, each half of every clip's 48 video
    tokens (an MM-DiT's text stays whole on both), attention exchanged (Ulysses); the weights equal
    one process's."""
    path = recipe_file(tmp_path, "sp")
    r = yaml.safe_load(open(path))
    r["parallel"] = "sp"
    (tmp_path / "sp.yaml").write_text(yaml.safe_dump(r))
    for arch in ("wan-tiny", "tiny", "latte-tiny"):
        one = kinema("train", recipe_file(tmp_path, f"one-{arch}"), "--arch", arch)
        assert one.returncode == 0, one.stderr[-2000:]
        two = kinema("train", str(tmp_path / "sp.yaml"), "--arch", arch, "--run-dir", str(tmp_path / f"sp-{arch}"), procs=2)
        assert two.returncode == 0, two.stderr[-3000:]
        assert "[dit] DDP with sequence parallelism over 2 processes" in (tmp_path / f"sp-{arch}" / "train_log.txt").read_text()
        a, b = final(tmp_path / f"one-{arch}", "dit"), final(tmp_path / f"sp-{arch}", "dit")
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=f"{arch} {k}")


def test_two_processes_train_packed_batches_as_one(tmp_path, tiny_model_dir):
    """dit.pack_tokens under DDP: each process packs its share of the step's clips of mixed shapes;
    2 processes end with one process's weights."""
    from kinema.data.latent_cache import ClipSettings, prepare
    from kinema.data.shapes import sample_clip
    from kinema.io.video import write_mp4
    from kinema.pipelines.pipeline import load_pipeline

    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(6):
        write_mp4(sample_clip(k, frames=(9, 13, 17)[k % 3], size=(32, 48)[k % 2])[0], videos / f"c{k}.mp4", fps=8)
    pipe = load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    settings = ClipSettings(frames=9, height=32, width=32, fps=8, sizes=((32, 32), (32, 48)), durations=(9, 13, 17))
    prepare(videos, tmp_path / "cache", pipe.vae, pipe.text_encoder, pipe.cfg.text, settings, runtime=pipe.runtime,
            log=lambda *_: None)
    for name in ("one", "two"):
        r = yaml.safe_load(open(recipe_file(tmp_path, name)))
        r["vae"].update(steps=0, init_from=str(tiny_model_dir))
        r["dit"].update(pack_tokens=128, data=str(tmp_path / "cache"))
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(r))
    one = kinema("train", str(tmp_path / "one.yaml"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = kinema("train", str(tmp_path / "two.yaml"), procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = final(tmp_path / "one", "dit"), final(tmp_path / "two", "dit")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)
