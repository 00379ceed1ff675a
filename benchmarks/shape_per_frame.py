"""Where in a clip does a model lose a shape? The Shapes oracle's per-frame shape vote, given the
first frame of the eval's world clip (`kinema eval shapes --given first`), for every seen prompt
of one shape, next to the shared VAE's own reconstruction of the same world clips.

    python benchmarks/shape_per_frame.py runs/shapes-strides/model shapes-i2v --shape square

Prints, per model, the share of one-object frames judged as the asked shape at each frame index
(frame 0 is the given one, clamped), and the same for the VAE's reconstructions.
"""

from __future__ import annotations

import argparse

import numpy as np

from kinema.data import shapes
from kinema.data.captions import canonical_caption
from kinema.eval.oracle import best_shape, objects
from kinema.eval.report import true_clip


def shape_votes(video: np.ndarray, shape: str) -> list[float]:
    """uint8 [T, H, W, 3] -> per frame: 1 if its one object is judged `shape`, 0 if not, nan if not one object."""
    out = []
    for frame in video:
        labels, n = objects(frame)
        out.append(float(best_shape(labels > 0) == shape) if n == 1 else float("nan"))
    return out


def main() -> None:
    from kinema.pipelines.pipeline import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--shape", default="square", choices=shapes.SHAPES)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    combos = [c for c in shapes.combos(held_out=False) if c[1] == args.shape]  # seen prompts only
    for name in args.models:
        pipe = load_pipeline(name)
        gen, rec = [], []
        for c in combos:
            clip = true_clip(c, 0, pipe.cfg.frames, pipe.cfg.height)
            video = pipe(canonical_caption(*c), seed=0, image=clip[0], num_frames=pipe.cfg.frames,
                         steps=args.steps, guidance=5.0)
            gen.append(shape_votes(video, args.shape))
            rec.append(shape_votes(pipe.frames(pipe.video_latents(clip, pipe.cfg.frames))[0], args.shape))
        for label, votes in (("generated", gen), ("VAE reconstruction", rec)):
            share = np.nanmean(np.array(votes), axis=0)
            print(f"{name} {label} ({len(combos)} clips): {args.shape} share per frame "
                  f"{' '.join(f'{v:.2f}' for v in share)}; frames 1+ mean {np.nanmean(share[1:]):.2f}")


if __name__ == "__main__":
    main()
