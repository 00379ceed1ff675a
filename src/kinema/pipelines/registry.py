"""Model names that ship inside the package; anything else is treated as a directory path."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "shapes"


def shipped_models() -> list[str]:
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file()) if WEIGHTS_DIR.is_dir() else []


def resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.exists() or path.is_absolute() or len(path.parts) > 1:
        return path
    return WEIGHTS_DIR / str(name_or_path)
