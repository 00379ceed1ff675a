"""Resume can never silently restart (issue 15): the `latest` pointer is a hint, the step
directories are scanned by number and verified against their manifests, a corrupt or half-written
checkpoint is skipped and named, and when no checkpoint is valid `--resume` refuses."""

import shutil

import pytest
import torch

from kinema.errors import KinemaError
from kinema.io.weights import load_weights
from kinema.train.checkpoint import find_checkpoint, save_checkpoint, step_dirs, verify_manifest
from kinema.train.trainer import Log, OptimConfig, fit, seeded


def train(root, steps, resume=False, ckpt_every=2):
    """A toy model trained for `steps`, checkpointing every `ckpt_every`; -> (final weights, log text)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)

    def loss_fn(m, step):
        return m(torch.randn(8, 4, generator=seeded(0, step))).pow(2).mean(), {}

    fit(model, loss_fn, steps=steps, optim=OptimConfig(lr=1e-2, warmup=1), run_dir=root / "ckpt", config={},
        log=Log(root / "log.txt"), resume=resume, log_every=1, ckpt_every=ckpt_every, desc="toy")
    return {k: v.clone() for k, v in model.state_dict().items()}, (root / "log.txt").read_text()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(tmp_path_factory.mktemp("straight"), 8)[0]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def killed_after_step_6(root):
    """A run of 8 steps whose last checkpoint never made it: step_6 is the newest."""
    train(root, 8)  # checkpoints at 6 and 8 (the newest two)
    shutil.rmtree(root / "ckpt" / "step_0000008")


@pytest.mark.parametrize("pointer", ["missing", "garbage", "dangling"])
def test_a_bad_latest_pointer_resumes_from_the_newest_valid_checkpoint(tmp_path, straight, pointer):
    killed_after_step_6(tmp_path)  # `latest` dangles at step_8 as it is
    latest = tmp_path / "ckpt" / "latest"
    if pointer == "missing":
        latest.unlink()
    elif pointer == "garbage":
        latest.write_bytes(b"\xff\x00 nonsense")
    weights, log = train(tmp_path, 8, resume=True)
    assert "resumed from" in log and "at step 6" in log
    assert same(weights, straight)  # never restarted at 0


def test_deleting_the_newest_checkpoint_resumes_from_the_one_before(tmp_path, straight):
    """What the corrupt-checkpoint message tells the user to do works."""
    train(tmp_path, 8)
    (tmp_path / "ckpt" / "step_0000008" / "trainer.pt").write_bytes(b"")
    with pytest.raises(KinemaError, match="delete .*step_0000008 to resume from the one before"):
        from kinema.train.checkpoint import load_trainer_state
        load_trainer_state(tmp_path / "ckpt" / "step_0000008")
    shutil.rmtree(tmp_path / "ckpt" / "step_0000008")
    weights, log = train(tmp_path, 8, resume=True)
    assert "at step 6" in log and same(weights, straight)


def test_flipped_bytes_are_found_and_the_checkpoint_before_is_used(tmp_path, straight):
    train(tmp_path, 8)
    path = tmp_path / "ckpt" / "step_0000008" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: safetensors would load it without a word
    path.write_bytes(bytes(data))
    assert "does not match its SHA-256" in verify_manifest(path.parent)
    weights, log = train(tmp_path, 8, resume=True)
    assert "skipped" in log and "step_0000008" in log and "at step 6" in log
    assert same(weights, straight)


def test_no_valid_checkpoint_refuses_instead_of_starting_over(tmp_path):
    train(tmp_path, 4)
    for _, d in step_dirs(tmp_path / "ckpt"):
        (d / "trainer.pt").write_bytes(b"truncated")
    with pytest.raises(KinemaError, match="holds checkpoints but none is valid .*trainer.pt has 9 bytes"):
        train(tmp_path, 8, resume=True)
    with pytest.raises(KinemaError, match="already holds checkpoints; pass --resume"):
        train(tmp_path, 8)


def test_pruning_is_by_step_number_and_keeps_the_newest(tmp_path):
    weights = {"model": {"w": torch.zeros(2)}}
    for step in (9_999_999, 10_000_000, 10_000_001):  # names sort otherwise: "step_10000000" < "step_9999999"
        save_checkpoint(tmp_path, step, weights, {})
    assert [s for s, _ in step_dirs(tmp_path)] == [10_000_001, 10_000_000]
    assert find_checkpoint(tmp_path).path.name == "step_10000001"


def test_a_save_that_fails_part_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    weights = {"model": {"w": torch.ones(2)}}
    save_checkpoint(tmp_path, 2, weights, {}, {"step": 2})
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(KinemaError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(tmp_path, 4, weights, {}, {"step": 4})
    monkeypatch.setattr(torch, "save", real)
    assert (tmp_path / "latest").read_text() == "step_0000002" and not (tmp_path / "step_0000004").exists()
    assert find_checkpoint(tmp_path).path.name == "step_0000002"
    assert not (tmp_path / ".tmp_step_0000004").exists()  # cleaned up at once
    (tmp_path / ".tmp_step_0000005").mkdir()  # what a SIGKILL mid-write leaves
    save_checkpoint(tmp_path, 6, weights, {}, {"step": 6})
    assert not list(tmp_path.glob(".tmp_step_*"))  # the next save removes it
    assert load_weights(tmp_path / "step_0000006" / "model.safetensors")["w"].tolist() == [1.0, 1.0]


def test_checkpoints_from_before_manifests_still_resume(tmp_path, straight):
    killed_after_step_6(tmp_path)
    for _, d in step_dirs(tmp_path / "ckpt"):
        (d / "manifest.json").unlink()
    weights, log = train(tmp_path, 8, resume=True)
    assert "at step 6" in log and same(weights, straight)


def test_a_process_killed_mid_write_leaves_no_step_directory(tmp_path, monkeypatch):
    """A kill cannot be caught; what is on disk then must still say "step 2": the half-written
    step lives under a temporary name that resuming never reads and the next save removes."""
    class Killed(BaseException):
        pass

    weights = {"model": {"w": torch.ones(2)}}
    save_checkpoint(tmp_path, 2, weights, {}, {"step": 2})
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        save_checkpoint(tmp_path, 4, weights, {}, {"step": 4})
    assert not (tmp_path / "step_0000004").exists() and find_checkpoint(tmp_path).path.name == "step_0000002"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (ENOSPC from the kernel, not a patched function). Mounting
    needs root with CAP_SYS_ADMIN; elsewhere the test is skipped and says so."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    except FileNotFoundError:
        made = None
    if made is None or made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN); the patched-write test above "
                    "covers the message")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(path):
    """Write zeros to `path` until the disk says it is full."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == 28
    finally:
        os.close(fd)


def test_a_full_disk_stops_with_one_line_and_resumes_exactly(small_disk, tmp_path, straight):
    """The disk fills up during step 5; step 6's checkpoint cannot be written. Training stops with
    the checkpoint error (no stale temporary directory; step 4 intact and found); once there is
    room again, --resume finishes the run equal to one that never stopped."""
    root = small_disk / "run"

    def run(resume, fill_at=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)

        def loss_fn(m, step):
            if step == fill_at:
                fill(small_disk / "filler")
            return m(torch.randn(8, 4, generator=seeded(0, step))).pow(2).mean(), {}

        fit(model, loss_fn, steps=8, optim=OptimConfig(lr=1e-2, warmup=1), run_dir=root / "ckpt", config={},
            log=Log(tmp_path / "log.txt"), resume=resume, log_every=1, ckpt_every=2, desc="toy")
        return model.state_dict()

    with pytest.raises(KinemaError, match="checkpoint of step 6 .*No space left on device.*previous checkpoint is intact"):
        run(False, fill_at=5)
    assert not list((root / "ckpt").glob(".tmp_step_*"))
    assert find_checkpoint(root / "ckpt").path.name == "step_0000004"
    (small_disk / "filler").unlink()
    assert same(run(True), straight)
    assert "at step 4" in (tmp_path / "log.txt").read_text()


def test_a_full_disk_anywhere_is_one_line_from_the_cli(monkeypatch, capsys):
    """ENOSPC from any write (a log line, a cache, a sample) ends `kinema` with exit 2 and one line."""
    import errno

    from kinema import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/train_log.txt")

    monkeypatch.setattr(cli, "_train", full)
    assert cli.main(["train", "configs/shapes.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device writing runs/x/train_log.txt" in err and "--resume" in err
