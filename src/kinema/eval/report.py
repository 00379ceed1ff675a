"""`kinema eval shapes`: generate every (colour, shape, direction) prompt for N seeds, judge each
clip with the oracle, and report seen and held-out combinations separately.

`--model world` scores clips rendered by the world itself: the oracle's ceiling (about 100%).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from kinema.data import shapes
from kinema.data.captions import canonical_caption, parse_canonical
from kinema.eval.oracle import judge

METRICS = ("colour", "shape", "direction", "all_three", "one_object_frames")


def _world_generator(frames: int, size: int) -> Callable[[list[tuple[str, str, str]], list[int]], np.ndarray]:
    def generate(batch, seeds):
        return np.stack([shapes.sample_clip(10_000 + s, combo, frames=frames, size=size)[0] for combo, s in zip(batch, seeds)])
    return generate


def score(generate: Callable[[list[tuple[str, str, str]], list[int]], np.ndarray], seeds: int,
          batch_size: int = 32, progress: bool = True) -> dict:
    """`generate(combos, seeds) -> uint8 [B, T, H, W, 3]`; returns per-split means and per-combo rows."""
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
                         "one_object_frames": v.one_object_frac,
                         "judged": {"colour": v.colour, "shape": v.shape, "direction": v.direction}})
    result = {}
    for split, held in (("seen", False), ("held_out", True)):
        part = [r for r in rows if r["held_out"] == held]
        result[split] = {m: float(np.mean([r[m] for r in part])) for m in METRICS}
        result[split]["clips"] = len(part)
    result["direction_confusion"] = {"seen": direction_confusion(rows), "held_out": direction_confusion(rows, held_out=True)}
    result["rows"] = rows
    return result


def evaluate_shapes(model: str = "shapes", seeds: int = 4, steps: int = 25, guidance: float = 5.0,
                    sampler: str = "euler", shift: float | None = None, batch_size: int = 32,
                    device: str = "auto", precision: str = "auto", compile: bool = False) -> dict:
    from kinema.runtime import resolve_runtime

    t0 = time.time()
    runtime = None
    if model == "world":
        resolve_runtime(device, precision)  # unused by rendered clips, but a bad name is still an error
        generate = _world_generator(17, 64)
    else:
        from kinema.pipelines.pipeline import load_pipeline

        pipe = load_pipeline(model, device=device, precision=precision, compile=compile)
        cfg, runtime = pipe.cfg, pipe.runtime

        def generate(batch, batch_seeds):
            return pipe([canonical_caption(*c) for c in batch], num_frames=cfg.frames, steps=steps,
                        guidance=guidance, sampler=sampler, seed=batch_seeds, shift=shift)
    result = score(generate, seeds, batch_size)
    result["settings"] = {"model": model, "seeds": seeds, "steps": steps, "guidance": guidance, "sampler": sampler,
                          "shift": shift, "seconds": round(time.time() - t0, 1)}
    if runtime is not None:
        result["settings"].update(device=str(runtime.device), precision=runtime.precision)
    return result


def direction_confusion(rows: list[dict], held_out: bool = False) -> dict[str, dict[str, int]]:
    """Counts of {asked direction: {judged direction: clips}} over one split's rows."""
    table = {d: dict.fromkeys(shapes.DIRECTIONS, 0) for d in shapes.DIRECTIONS}
    for r in rows:
        if r["held_out"] == held_out:
            table[parse_canonical(r["prompt"])[2]][r["judged"]["direction"]] += 1
    return table


def format_confusion(table: dict[str, dict[str, int]]) -> str:
    cols = list(shapes.DIRECTIONS)
    lines = ["| asked \\ judged | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for asked in cols:
        lines.append(f"| {asked} | " + " | ".join(str(table[asked][c]) for c in cols) + " |")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    s = result["settings"]
    head = f"Shapes oracle: model {s['model']}, {s['seeds']} seeds, {s['steps']} {s['sampler']} steps, guidance {s['guidance']}"
    if s.get("shift") is not None:
        head += f", shift {s['shift']}"
    if s.get("device"):
        head += f", {s['device']} {s['precision']}"
    lines = [head, "", "| split | clips | colour | shape | direction | all three | one-object frames |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for split in ("seen", "held_out"):
        r = result[split]
        lines.append(f"| {split.replace('_', '-')} | {r['clips']} | " + " | ".join(f"{100 * r[m]:.1f}%" for m in METRICS) + " |")
    lines += ["", "Direction on seen combinations (rows: asked, columns: judged):", "",
              format_confusion(result["direction_confusion"]["seen"])]
    return "\n".join(lines)
