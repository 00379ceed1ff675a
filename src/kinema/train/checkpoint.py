"""Atomic, verified checkpoints: weights as safetensors, config as JSON, optimizer state as a torch
file, and a manifest of every file's size and SHA-256.

A checkpoint is a directory `step_NNNNNNN`. It is written under a temporary name (`.tmp_step_*`)
and renamed into place, so a run killed at any moment leaves either the previous checkpoint or
the new one, never a half-written one. Files and directories are fsynced around each rename, so a
power loss does not leave a renamed but empty file.

Resuming never trusts the `latest` pointer (it is written for people and other tools): the step
directories are scanned by step number, newest first, and the first whose files match its
manifest is the one to resume from. A corrupt newer one is skipped and named; when checkpoints
exist but none is valid, `find_checkpoint` says so instead of letting a run start over.
Pruning keeps the newest `keep` by step number, so it never deletes the checkpoint just written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kinema.errors import KinemaError
from kinema.io.weights import MANIFEST, save_weights, verify_manifest, write_manifest

_STEP = re.compile(r"step_(\d+)$")


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


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every checkpoint directory in root, newest first (by number, not name)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(root: Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    config: dict, trainer_state: dict | None = None, keep: int = 2) -> Path:
    """Write `root/step_XXXXXXX/` atomically with its manifest and point `root/latest` at it; keep
    the newest `keep` by step number; remove temporary directories that killed writes left."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    tmp.mkdir()
    try:
        for name, state in weights.items():
            save_weights(tmp / f"{name}.safetensors", state)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        write_manifest(tmp)
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except OSError as e:  # a full disk, a quota, a vanished mount: the previous checkpoint is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise KinemaError(f"cannot write the checkpoint of step {step} in {root} ({e.strerror or e}); the previous "
                          f"checkpoint is intact: make room and continue with --resume") from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(root)
    _atomic_write_text(root / "latest", final.name)
    for _, old in step_dirs(root)[keep:]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class Found:
    """What `find_checkpoint` saw: the newest valid checkpoint (or None) and the newer ones it skipped."""

    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        """Whether root holds any checkpoint directory, valid or not."""
        return self.path is not None or bool(self.skipped)


def find_checkpoint(root: Path) -> Found:
    """Scan root's step directories newest first; the first valid one is the checkpoint to resume.
    A directory without a manifest (written before kinema had them) counts when its weights and
    trainer state are there."""
    skipped = []
    for _, path in step_dirs(root):
        if (path / MANIFEST).is_file():
            problem = verify_manifest(path)
        else:
            whole = (path / "model.safetensors").is_file() and (path / "trainer.pt").is_file()
            problem = None if whole else "no manifest.json, and not both model.safetensors and trainer.pt"
        if problem is None:
            return Found(path, skipped)
        skipped.append((path, problem))
    return Found(None, skipped)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest valid checkpoint in root, or None."""
    return find_checkpoint(root).path


def load_trainer_state(ckpt: Path) -> dict:
    path = ckpt / "trainer.pt"
    if not path.is_file():
        raise KinemaError(f"{ckpt} has no trainer.pt, so it cannot be resumed; start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise KinemaError(f"{path} is corrupt ({e.__class__.__name__}); delete {ckpt} to resume from the one before") from None
