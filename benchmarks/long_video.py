"""Long-video drift on the Shapes oracle (issue 12): generate long clips by each built route, judge
every chunk-length window with the oracle, and compare the last window with the first.

    python benchmarks/long_video.py [--model shapes-i2v] [--frames 257] [--prompts 27] [--context 1]
                                    [--routes ar,forcing] [--chunk 1] [--stride 16] [--json docs/long_video_shapes-i2v.json]

For each of `--prompts` canonical prompts (spread over colours, shapes and directions, seed 0) it
generates `--frames` frames by each route (`--long ar` with `--context`, `--long forcing` with
`--chunk`, `--long keyframe` and `coarse2fine` with `--stride`: a frame-stride model) and judges the windows [0, F), [F - c, 2F - c), ... (F the model's length, c ar's
context frames: each ar chunk's frames as the chunk made them; the same windows for every route). It
prints per window the share of clips whose colour, shape and direction the oracle reads as asked
and whose frames hold exactly one object, then first against last. Time per frame is measured
against the model's own single-clip generation in the same run (the ratio is the cost of
chunking). Over each whole clip, kinema.eval.bounces counts the object's turns and the share of them
made at a wall (the world's objects only ever turn at a wall). Directions are expected to fail late in long clips: the Shapes world's objects move in
straight lines, and a clip continued past the training window runs into the wall.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from kinema.data import shapes
from kinema.data.captions import canonical_caption
from kinema.eval.bounces import bounce_report
from kinema.eval.oracle import judge
from kinema.pipelines.long import ROUTES, check_long, chunk_plan, generate_long
from kinema.pipelines.pipeline import load_pipeline


def prompts(n: int) -> list[tuple[str, str, str]]:
    """n seen combinations spread evenly over the list (which cycles colour, shape, direction)."""
    combos = shapes.combos(held_out=False)
    return [combos[i] for i in np.linspace(0, len(combos) - 1, n).round().astype(int)]


def windows(video: np.ndarray, f: int, c: int) -> list[np.ndarray]:
    return [video[s:s + f] for s in range(0, len(video) - f + 1, f - c)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-i2v")
    ap.add_argument("--frames", type=int, default=257)
    ap.add_argument("--prompts", type=int, default=27)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--routes", default="ar,forcing", help=f"comma-separated routes to run, of {', '.join(ROUTES)}")
    ap.add_argument("--chunk", type=int, default=1, help="forcing's new latent frames per chunk")
    ap.add_argument("--stride", type=int, default=16, help="keyframe's and coarse2fine's coarse stride (257 = 1 + 16 x 16)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--strength", type=float, default=0.5, help="coarse2fine: how far each fine clip is re-noised")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    pipe = load_pipeline(args.model, device=args.device, precision=args.precision)
    f, r = pipe.cfg.frames, pipe.cfg.vae.time_compression
    c, chunks = chunk_plan(args.frames, f, r, args.context)
    combos = prompts(args.prompts)
    print(f"model {args.model}, {pipe.runtime.device} {pipe.precision}; {len(combos)} prompts, {args.frames} frames "
          f"({chunks + 1} chunks of {f}, context {args.context} latent frame(s) = {c} frames)")

    t0 = time.perf_counter()
    for combo in combos:  # the reference: one clip of the model's own length
        pipe(canonical_caption(*combo), num_frames=f, steps=args.steps, seed=0)
    single = (time.perf_counter() - t0) / (len(combos) * f)

    result = {"settings": vars(args), "seconds_per_frame": {}, "routes": {}}
    for route in args.routes.split(","):
        check_long(route, args.frames, f, r, args.context, args.chunk, args.stride)
        t0 = time.perf_counter()
        scores, turns = [], []  # [prompt][window] -> dict; [prompt] -> bounce_report
        for combo in combos:
            video = generate_long(pipe, canonical_caption(*combo), args.frames, route, context=args.context,
                                  chunk=args.chunk, stride=args.stride, strength=args.strength, seed=0, steps=args.steps)
            row = []
            for w in windows(video, f, c):
                v = judge(w)
                row.append({"colour": v.colour == combo[0], "shape": v.shape == combo[1],
                            "direction": v.direction == combo[2], "one_object": v.one_object_frac == 1.0})
            scores.append(row)
            turns.append(bounce_report(video))
        per_frame = (time.perf_counter() - t0) / (len(combos) * args.frames)
        keys = ("colour", "shape", "direction", "one_object")
        table = [{k: float(np.mean([s[i][k] for s in scores])) for k in keys} for i in range(len(scores[0]))]
        result["routes"][route] = table
        n_turns, at_wall = sum(b["turns"] for b in turns), sum(b["at_wall"] for b in turns)
        result.setdefault("turns", {})[route] = {"turns": n_turns, "at_wall": at_wall, "per_clip": turns}
        result["seconds_per_frame"][route] = per_frame
        print(f"\n--long {route}: {per_frame:.3f} s per frame against {single:.3f} s in one clip "
              f"(ratio {per_frame / single:.2f})\n")
        print("| window | frames | colour | shape | direction | one object in every frame |")
        print("|---:|---|---:|---:|---:|---:|")
        for i, t in enumerate(table):
            start = i * (f - c)
            print(f"| {i} | {start}-{start + f - 1} | " + " | ".join(f"{100 * t[k]:.1f}%" for k in keys) + " |")
        print(f"\nturns of the object: {n_turns / len(combos):.1f} per clip, {at_wall} of {n_turns} at a wall")
        first, last = table[0], table[-1]
        print("\nlast window against the first (points): " +
              ", ".join(f"{k} {100 * (last[k] - first[k]):+.1f}" for k in keys))
    result["seconds_per_frame"]["single_clip"] = single
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
