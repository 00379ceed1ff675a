"""Weights and configs on disk: safetensors and JSON, with errors that say what to do."""

from __future__ import annotations

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
    save_file(tensors, str(path))
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
