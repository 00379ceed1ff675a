"""`kinema eval shapes`: generate every (colour, shape, direction) prompt for N seeds, judge each
clip with the oracle, and report seen and held-out combinations separately.

`--model world` scores clips rendered by the world itself: the oracle's ceiling (about 100%).
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from kinema.data import shapes
from kinema.data.captions import canonical_caption, parse_canonical
from kinema.eval.oracle import judge, speed_error

METRICS = ("colour", "shape", "direction", "all_three", "one_object_frames", "constancy")  # shares
SPEED = "speed_error"  # px / frame at 64x64 outside the world's speeds; NaN for a clip with no track


def finite_mean(values) -> float:
    """The mean of the finite values (a speed error is NaN where no track was found); NaN if none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def world_seed(offset: int, combo: tuple[str, str, str], s: int) -> int:
    """The world's seed for clip (combo, s) of the set named by `offset`: one of its own per clip.
    (offset + s alone would give every combination the same size, speed and start for a given s:
    a set of 162 x 4 clips would hold 4 object sizes.)"""
    c, sh, d = combo
    key = [offset, s, list(shapes.COLOURS).index(c), shapes.SHAPES.index(sh), list(shapes.DIRECTIONS).index(d)]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def world_clip(offset: int, combo: tuple[str, str, str], s: int, frames: int = 17, size: int = 64) -> np.ndarray:
    """Clip (combo, s) of the world set named by `offset`: uint8 [frames, size, size, 3]."""
    return shapes.sample_clip(world_seed(offset, combo, s), combo, frames=frames, size=size)[0]


def _world_generator(frames: int, size: int) -> Callable[[list[tuple[str, str, str]], list[int]], np.ndarray]:
    def generate(batch, seeds):
        return np.stack([world_clip(10_000, combo, s, frames, size) for combo, s in zip(batch, seeds)])
    return generate


def score(generate: Callable[[list[tuple[str, str, str]], list[int]], np.ndarray], seeds: int,
          batch_size: int = 32, progress: bool = True,
          extra: Callable[[tuple[str, str, str], int, np.ndarray], dict[str, float]] | None = None) -> dict:
    """`generate(combos, seeds) -> uint8 [B, T, H, W, 3]`; returns per-split means and per-combo rows.
    `extra(combo, seed, video)`: more figures of each clip, averaged per split beside the oracle's."""
    jobs = [(combo, s) for combo in shapes.combos() for s in range(seeds)]
    rows = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="eval shapes", disable=not progress, mininterval=2.0):
        batch = jobs[start:start + batch_size]
        videos = generate([c for c, _ in batch], [s for _, s in batch])
        for (combo, s), video in zip(batch, videos):
            v = judge(video)
            ok = {"colour": v.colour == combo[0], "shape": v.shape == combo[1], "direction": v.direction == combo[2]}
            rows.append({"prompt": canonical_caption(*combo), "seed": s, "held_out": (combo[0], combo[1]) in shapes.HELD_OUT,
                         **{k: float(x) for k, x in ok.items()}, "all_three": float(all(ok.values())),
                         "one_object_frames": v.one_object_frac, "constancy": v.constancy,
                         SPEED: speed_error(v.speed, combo[2]),
                         "judged": {"colour": v.colour, "shape": v.shape, "direction": v.direction, "speed": v.speed},
                         **(extra(combo, s, video) if extra else {})})
    result = {}
    metrics = [m for m in rows[0] if m in METRICS or m in GIVEN_METRICS or m == SPEED]
    for split, held in (("seen", False), ("held_out", True)):
        part = [r for r in rows if r["held_out"] == held]
        result[split] = {m: finite_mean([r[m] for r in part]) for m in metrics}
        result[split]["clips"] = len(part)
    result["direction_confusion"] = {"seen": direction_confusion(rows), "held_out": direction_confusion(rows, held_out=True)}
    result["rows"] = rows
    return result


# image-to-video (--given first | ends): PSNR in dB, capped at PSNR_CAP (identical frames)
GIVEN_METRICS = ("first_psnr", "first_psnr_recon", "last_psnr", "clip_psnr")
GIVEN = ("first", "ends")
PSNR_CAP = 100.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's PSNR of uint8 arrays (as kinema.eval.recon reports), PSNR_CAP when identical."""
    from skimage.metrics import peak_signal_noise_ratio

    return PSNR_CAP if np.array_equal(a, b) else min(PSNR_CAP, float(peak_signal_noise_ratio(a, b, data_range=255)))


@functools.lru_cache(maxsize=64)  # generation and scoring both read a clip's frames: rendered once
def true_clip(combo: tuple[str, str, str], seed: int, frames: int = 17, size: int = 64) -> np.ndarray:
    """The clip whose first (and last) frame an image-to-video eval gives: the set 20 000 of
    `world_seed`, apart from the world ceiling's (10 000) and from training's draws. Each prompt
    and seed draws its own object size, speed and start. (Until 2026-12 it was seed 20 000 + s for
    every prompt, so with --seeds 1 all 162 given frames had one size; docs/evaluation.md.)"""
    return world_clip(20_000, combo, seed, frames, size)


def evaluate_shapes(model: str = "shapes", seeds: int = 4, steps: int = 25, guidance: float | None = None,
                    sampler: str = "euler", shift: float | None = None, batch_size: int = 32,
                    device: str = "auto", precision: str = "auto", compile: bool = False,
                    given: str | None = None) -> dict:
    """`given` "first": each clip gets the first frame of a rendered clip of its prompt (`true_clip`),
    "ends" its first and last frames; the report adds the first (and last) frame's PSNR to the
    given image, the first frame's to the VAE's reconstruction of it, and the whole clip's to the
    rendered one. `guidance` None: the model's own (`ModelConfig.guidance`)."""
    from kinema.errors import KinemaError
    from kinema.runtime import resolve_runtime

    if given not in (None, *GIVEN):
        raise KinemaError(f"--given {given!r}: use {' or '.join(GIVEN)}")
    t0 = time.time()
    runtime, extra = None, None
    if model == "world":
        if given:
            raise KinemaError("--given needs a model: the world's own clips have nothing to be given")
        resolve_runtime(device, precision)  # unused by rendered clips, but a bad name is still an error
        generate = _world_generator(17, 64)
    else:
        from kinema.pipelines.pipeline import load_pipeline

        pipe = load_pipeline(model, device=device, precision=precision, compile=compile)
        cfg, runtime = pipe.cfg, pipe.runtime
        guidance = cfg.guidance if guidance is None else guidance

        def generate(batch, batch_seeds):
            prompts = [canonical_caption(*c) for c in batch]
            kw = dict(num_frames=cfg.frames, steps=steps, guidance=guidance, sampler=sampler, shift=shift)
            if not given:
                return pipe(prompts, seed=batch_seeds, **kw)
            out = []  # one clip at a time: each has its own given frames
            for prompt, combo, s in zip(prompts, batch, batch_seeds):
                clip = true_clip(combo, s, cfg.frames, cfg.height)
                out.append(pipe(prompt, seed=s, image=clip[0], end_image=clip[-1] if given == "ends" else None, **kw))
            return np.stack(out)

        def extra(combo, s, video):
            clip = true_clip(combo, s, cfg.frames, cfg.height)
            recon = pipe.frames(pipe.video_latents(clip[:1], 1))[0, 0]
            row = {"first_psnr": psnr(video[0], clip[0]), "first_psnr_recon": psnr(video[0], recon),
                   "clip_psnr": psnr(video, clip)}
            if given == "ends":
                row["last_psnr"] = psnr(video[-1], clip[-1])
            return row
    result = score(generate, seeds, batch_size, extra=extra if given else None)
    result["settings"] = {"model": model, "seeds": seeds, "steps": steps, "guidance": guidance, "sampler": sampler,
                          "shift": shift, "given": given, "seconds": round(time.time() - t0, 1)}
    if runtime is not None:
        result["settings"].update(device=str(runtime.device), precision=runtime.precision)
    return result


def direction_confusion(rows: list[dict], held_out: bool = False) -> dict[str, dict[str, int]]:
    """Counts of {asked direction: {judged direction: clips}} over one split's rows; "none" counts
    clips in which the oracle found no object to track."""
    table = {d: dict.fromkeys((*shapes.DIRECTIONS, "none"), 0) for d in shapes.DIRECTIONS}
    for r in rows:
        if r["held_out"] == held_out:
            table[parse_canonical(r["prompt"])[2]][r["judged"]["direction"] or "none"] += 1
    return table


def format_confusion(table: dict[str, dict[str, int]]) -> str:
    cols = list(shapes.DIRECTIONS) + (["none"] if any(row.get("none") for row in table.values()) else [])
    lines = ["| asked \\ judged | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for asked in shapes.DIRECTIONS:
        lines.append(f"| {asked} | " + " | ".join(str(table[asked][c]) for c in cols) + " |")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    s = result["settings"]
    head = f"Shapes oracle: model {s['model']}, {s['seeds']} seeds, {s['steps']} {s['sampler']} steps, guidance {s['guidance']}"
    if s.get("shift") is not None:
        head += f", shift {s['shift']}"
    if s.get("given"):
        head += f", given {s['given']} frame{'s' if s['given'] == 'ends' else ''}"
    if s.get("device"):
        head += f", {s['device']} {s['precision']}"
    lines = [head, "", "| split | clips | colour | shape | direction | all three | one-object frames | constancy | speed error (px / frame) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for split in ("seen", "held_out"):
        r = result[split]
        shares = " | ".join(f"{100 * r[m]:.1f}%" if m in r else "-" for m in METRICS)
        speed = f"{r[SPEED]:.2f}" if SPEED in r else "-"
        lines.append(f"| {split.replace('_', '-')} | {r['clips']} | {shares} | {speed} |")
    if s.get("given"):
        names = {"first_psnr": "first frame to the image", "first_psnr_recon": "first frame to the VAE's reconstruction",
                 "last_psnr": "last frame to the end image", "clip_psnr": "whole clip to the rendered clip"}
        shown = [m for m in GIVEN_METRICS if m in result["seen"]]
        lines += ["", f"Given frames ({s['given']}), PSNR in dB (capped at {PSNR_CAP:g}: identical):", "",
                  "| split | " + " | ".join(names[m] for m in shown) + " |", "|---|" + "---:|" * len(shown)]
        for split in ("seen", "held_out"):
            lines.append(f"| {split.replace('_', '-')} | " + " | ".join(f"{result[split][m]:.1f}" for m in shown) + " |")
    lines += ["", "Direction on seen combinations (rows: asked, columns: judged):", "",
              format_confusion(result["direction_confusion"]["seen"])]
    return "\n".join(lines)
