"""Weights and configs on disk: safetensors and JSON, with errors that say what to do."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kinema.errors import KinemaError


def save_weights(path: Path, state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> None:
    """Write tensors as safetensors; `dtype` casts floating tensors (e.g. fp16 for shipped models)."""
    tensors = {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous().cpu()
               for k, v in state.items()}
    try:
        save_file(tensors, str(path))
    except SafetensorError as e:  # how safetensors reports a failed write (a full disk, a quota): an OSError
        full = "os error 28" in str(e)
        raise OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC) if full else str(e), str(path)) from None
    # safetensors creates files as 0600; give them the permissions any other file would get, so a
    # model or checkpoint on a shared filesystem is readable by the group the umask allows
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise KinemaError(f"weights file {path} is missing; re-export the model or pass another --model")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise KinemaError(f"weights file {path} is corrupt or unreadable ({e}); re-download or retrain it") from None


def load_json(path: Path) -> dict:
    if not path.is_file():
        raise KinemaError(f"{path} is missing; a model directory needs config.json beside its weights")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KinemaError(f"{path} is not valid JSON ({e}); restore it from the original model") from None


MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, names: list[str] | None = None) -> None:
    """folder/manifest.json: {file name: {"size", "sha256"}} of the named files (default: every
    other file in the folder)."""
    files = names if names is not None else [f.name for f in sorted(folder.iterdir()) if f.is_file() and f.name != MANIFEST]
    entries = {name: {"size": (folder / name).stat().st_size, "sha256": sha256(folder / name)} for name in files}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1))


def verify_manifest(folder: Path) -> str | None:
    """None when every file of folder's manifest is there with its size and SHA-256, else what is wrong."""
    try:
        files = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest.json"
    for name, want in files.items():
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"]:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {want['size']}"
        if sha256(f) != want["sha256"]:
            return f"{name} does not match its SHA-256 (changed or corrupt)"
    return None
