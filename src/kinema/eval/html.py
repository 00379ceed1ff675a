"""A self-contained HTML report of an evaluation: its summary table, a chart of each figure's mean
and 95% interval on its own scale (matplotlib), and frame strips of some clips, all inlined (PNG as base64), so
one file opens offline in any browser.

    write_report(path, title, summary, settings, clips={"caption": uint8 [T, H, W, 3], ...})

`summary` maps a figure's name to {"mean", "low", "high"} (kinema.eval.videos.mean_ci).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def frame_strip(video: np.ndarray, frames: int = 8, scale: int = 2) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [H s, frames W s, 3]: `frames` frames spread over the clip, side by side."""
    idx = np.round(np.linspace(0, len(video) - 1, min(frames, len(video)))).astype(int)
    strip = np.concatenate(list(video[idx]), axis=1)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def summary_chart(summary: dict[str, dict[str, float]]) -> str:
    """One small panel per figure (each on its own scale: PSNR in dB beside shares), the mean as a
    point and its 95% interval as a bar: a PNG data URI."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KinemaError("the HTML report draws with matplotlib: pip install 'kinema[eval]'") from None
    fig, axes = plt.subplots(len(summary), 1, figsize=(6, 0.6 * len(summary) + 0.4), dpi=100, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], summary.items()):
        ax.errorbar([s["mean"]], [0], xerr=[[s["mean"] - s["low"]], [s["high"] - s["mean"]]], fmt="o", color="#4c72b0",
                    capsize=4)
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        pad = max(s["high"] - s["low"], abs(s["mean"]) * 0.01, 1e-3)
        ax.set_xlim(s["low"] - pad, s["high"] + pad)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(path: str | Path, title: str, summary: dict[str, dict[str, float]], settings: dict,
                 clips: dict[str, np.ndarray] | None = None) -> Path:
    """Write the report to `path` (atomically: a temporary name, then renamed) and return it."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise KinemaError(f"--html {path}: use a path ending in .html")
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(n)}</td><td>{s['mean']:.4f}</td><td>{s['low']:.4f} - {s['high']:.4f}</td></tr>"
                   for n, s in summary.items())
    strips = "".join(f"<figure><img alt='{esc(c)}' src='{_png(frame_strip(v))}'><figcaption>{esc(c)}</figcaption></figure>"
                     for c, v in (clips or {}).items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
figure{{margin:1em 0}}img{{image-rendering:pixelated;max-width:100%}}pre{{background:#f4f4f4;padding:1em}}</style>
</head><body>
<h1>{esc(title)}</h1>
<h2>Summary</h2>
<table><tr><th>figure</th><th>mean</th><th>95% interval</th></tr>{rows}</table>
<p><img alt="summary chart" src="{summary_chart(summary)}"></p>
<h2>Clips</h2>{strips or "<p>(none)</p>"}
<h2>Settings</h2><pre>{esc(json.dumps(settings, indent=1, default=str))}</pre>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
