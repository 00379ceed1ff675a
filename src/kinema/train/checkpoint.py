"""Atomic checkpoints: weights as safetensors, config as JSON, optimizer state as a torch file.

A checkpoint is a directory. It is written under a temporary name and renamed into place, and
the `latest` pointer file is replaced atomically, so a run killed at any moment leaves either the
previous checkpoint or the new one, never a half-written one. Files and directories are fsynced
before each rename, so a power loss or a crashed machine does not leave a renamed but empty file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from kinema.errors import KinemaError
from kinema.io.weights import save_weights


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def save_checkpoint(root: Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    config: dict, trainer_state: dict | None = None, keep: int = 2) -> Path:
    """Write `root/step_XXXXXXX/` atomically and point `root/latest` at it; keep the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, state in weights.items():
        save_weights(tmp / f"{name}.safetensors", state)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer.pt")
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(root)
    _atomic_write_text(root / "latest", final.name)
    old = sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_trainer_state(ckpt: Path) -> dict:
    path = ckpt / "trainer.pt"
    if not path.is_file():
        raise KinemaError(f"{ckpt} has no trainer.pt, so it cannot be resumed; start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise KinemaError(f"{path} is corrupt ({e.__class__.__name__}); delete {ckpt} to resume from the one before") from None
