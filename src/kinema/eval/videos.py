"""Metrics of folders of videos (or of video files):

- `kinema eval temporal PATH...`: the temporal metrics (kinema.eval.temporal), each metric's mean
  with a bootstrap 95% confidence interval over the clips
- `kinema eval distances REAL FAKE`: FVD with a Kinetics I3D file (kinema.eval.i3d), or FD-<name>
  with kinema's video encoder, and KVD and JEDi's form, between two sets of videos
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from kinema.errors import KinemaError
from kinema.eval import temporal
from kinema.io.video import read_video

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".mkv", ".avi")


def video_files(paths: list[str]) -> list[Path]:
    """The video files among `paths`, a folder standing for the videos directly inside it (sorted)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise KinemaError(f"no file or folder at {p}")
    if not files:
        raise KinemaError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {' '.join(paths)}")
    return files


def mean_ci(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap's 95% interval of the mean, over the finite
    values (a speed error is NaN for a clip with no track); all NaN if there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def evaluate_videos(paths: list[str], fps: float = 8.0, progress: bool = True, keep: int = 0) -> tuple[dict, dict]:
    """(the result, for JSON; the first `keep` clips by file name, for a report's frame strips)."""
    files = video_files(paths)
    rows, kept = [], {}
    for f in tqdm(files, desc="eval temporal", disable=not progress, mininterval=2.0):
        video = read_video(f)
        if len(video) < 3:
            raise KinemaError(f"{f} has {len(video)} frames; the temporal metrics need at least 3")
        rows.append({"file": str(f), "frames": len(video), **temporal.temporal_scores(video, fps)})
        if len(kept) < keep:
            kept[f.name] = video
    summary = {name: dict(zip(("mean", "low", "high"), mean_ci([r[name] for r in rows]))) for name in temporal.METRICS}
    return {"clips": len(rows), "fps": fps, "summary": summary, "rows": rows}, kept


def format_temporal_table(result: dict) -> str:
    lines = [f"{result['clips']} clips (dynamic judged at {result['fps']:g} fps); mean [95% bootstrap interval]", "",
             "| metric | mean | 95% interval |", "|---|---:|---:|"]
    for name, s in result["summary"].items():
        lines.append(f"| {name} | {s['mean']:.4f} | {s['low']:.4f} - {s['high']:.4f} |")
    return "\n".join(lines)


def folder_features(extractor, files: list[Path], progress: bool = True, desc: str = "features"):
    """The extractor's FeatureStats of video `files`, one video at a time (they may differ in
    length and size: each is fitted to the extractor's frames and side)."""
    from kinema.eval.features import FeatureStats

    rows = [extractor(read_video(f)[None])[0] for f in tqdm(files, desc=desc, disable=not progress, mininterval=2.0)]
    return FeatureStats(extractor.spec, np.stack(rows))


def evaluate_distances(real: list[str], fake: list[str], extractor, progress: bool = True) -> dict:
    from kinema.eval.distances import distances

    real_files, fake_files = video_files(real), video_files(fake)  # both checked before any is read
    if min(len(real_files), len(fake_files)) < 2:
        raise KinemaError("distances need at least 2 videos in each set (and many more than the feature width, "
                          f"{extractor.spec.dim}, for a stable Fréchet distance)")
    a = folder_features(extractor, real_files, progress, "real videos")
    b = folder_features(extractor, fake_files, progress, "generated videos")
    return {"real": {"paths": real, "clips": len(a)}, "generated": {"paths": fake, "clips": len(b)},
            "extractor": extractor.spec.to_json(), "distances": distances(b, a)}
