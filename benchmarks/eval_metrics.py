"""Validation of kinema's offline temporal metrics (kinema.eval.temporal): each metric's mean over
world clips, clean and under each controlled corruption (kinema.eval.corruptions), with the
Shapes oracle beside them: its direction accuracy (it must flip under time reversal), attribute
constancy over time (it must fall when the object changes colour halfway) and speed error (it
must rise when the clip runs at twice the speed, or stands still).

    python benchmarks/eval_metrics.py [--clips 32] [--json docs/eval_metrics_validation.json]
    python benchmarks/eval_metrics.py --camera-only --clips 64 [--unverified] --json docs/eval_camera_oracle[_unverified].json

Worlds: Shapes level 1 (one object on black; its clips have known speeds) and the photo world's
held-out photographs (a camera moving over real texture). Then, on level-2 clips with one
object, the motion magnitude per pace word ("slowly", none, "quickly") against the object's
known speed, in pixels per frame at 256 px, which is what VBench's dynamic threshold (6 px per
frame at 8 fps) is read against. Last, the camera oracle (kinema.eval.camera_oracle) on
photo-world clips: the motions it names against the recorded ones, also on reversed clips. With
--encoder (kinema's trained video encoder), the distances FD / KVD / JEDi's form between two sets of
Shapes clips, real against real and under each corruption, and text-to-video retrieval on each.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from kinema.data import photos, scenes, shapes
from kinema.eval import camera_oracle, corruptions, temporal
from kinema.eval.oracle import judge, speed_error


def world_clips(world: str, n: int) -> list[tuple[np.ndarray, str | None]]:
    """(clip, its true direction or None) for n clips; Shapes clips are the moving ones."""
    out, seed = [], 0
    while len(out) < n:
        if world == "shapes":
            video, (obj,) = shapes.sample_clip(50_000 + seed, frames=17, size=64)
            if obj.direction != "still":
                out.append((video, obj.direction))
        else:
            out.append((photos.sample_photo_clip(60_000 + seed, frames=17, size=64, held_out=True)[0], None))
        seed += 1
    return out


def row(clips, corruption: str | None) -> dict[str, float]:
    scores = {name: [] for name in temporal.METRICS}
    oracle = {"oracle_direction": [], "oracle_constancy": [], "oracle_speed_error": []}
    for i, (video, direction) in enumerate(clips):
        v = video if corruption is None else corruptions.CORRUPTIONS[corruption](video, seed=i)
        for name, value in temporal.temporal_scores(v).items():
            scores[name].append(value)
        if direction is not None:
            verdict = judge(v)
            oracle["oracle_direction"].append(verdict.direction == direction)
            oracle["oracle_constancy"].append(verdict.constancy)
            oracle["oracle_speed_error"].append(speed_error(verdict.speed, direction))
    out = {name: float(np.mean(vals)) for name, vals in scores.items()}
    if oracle["oracle_direction"]:
        out.update({name: float(np.nanmean(vals)) for name, vals in oracle.items()})
    return out


OPPOSITE = {"pan left": "pan right", "pan right": "pan left", "pan up": "pan down", "pan down": "pan up",
            "zoom in": "zoom out", "zoom out": "zoom in", "rotate clockwise": "rotate counter-clockwise",
            "rotate counter-clockwise": "rotate clockwise"}


def camera_table(result: dict, clips: int, verify: bool = True) -> None:
    """The camera oracle on photo-world clips (training and held-out photographs): per motion, the
    share of clips whose estimate names it; the whole set right; the path error; and on the
    time-reversed clips, judged against the opposite motions. `verify=False`: the oracle before
    it checked its refinements (kinema.eval.camera_oracle.estimate_transforms)."""
    print(f"\nCamera oracle on photo-world clips ({clips} per split, 17 x 64 x 64{'' if verify else ', refinements unverified'})\n")
    print("| photographs | clips | motions right (whole set) | reversed: opposite set right | path error px (median / mean) |")
    print("|---|---:|---:|---:|---:|")
    result["camera"] = {}
    per_motion = {}
    for split, held in (("training", False), ("held out", True)):
        right, flipped, errors = [], [], []
        for seed in range(clips):
            video, path = photos.sample_photo_clip(90_000 + seed, held_out=held)
            j = camera_oracle.judge_camera(video, path, verify=verify)
            right.append(j["right"])
            errors.append(j["path_error"])
            flipped.append(set(camera_oracle.judge_camera(video[::-1].copy(), verify=verify)["motions"]) == {OPPOSITE[m] for m in path.motions})
            for m in path.motions:
                per_motion.setdefault(m, []).append(m in j["motions"])
        result["camera"][split] = {"right": float(np.mean(right)), "reversed_right": float(np.mean(flipped)),
                                   "path_error_median": float(np.median(errors)), "path_error_mean": float(np.mean(errors))}
        print(f"| {split} | {clips} | {np.mean(right):.1%} | {np.mean(flipped):.1%} | {np.median(errors):.2f} / {np.mean(errors):.2f} |")
    print("\n| motion | clips | found |\n|---|---:|---:|")
    for m in photos.MOTIONS:
        print(f"| {m} | {len(per_motion.get(m, []))} | {np.mean(per_motion.get(m, [np.nan])):.1%} |")
    result["camera"]["per_motion"] = {m: float(np.mean(v)) for m, v in per_motion.items()}


def distance_table(result: dict, encoder: str, clips: int) -> None:
    """With a trained encoder (kinema eval train-encoder): FD, KVD and JEDi's form between a set of
    held-out-seed world clips and (a) another such set, the real-versus-real floor, (b) that set
    under each corruption; and text-to-video retrieval on the clean and corrupted sets."""
    from kinema.config import TextConfig
    from kinema.data.captions import canonical_caption
    from kinema.eval.distances import distances
    from kinema.eval.features import extract
    from kinema.eval.video_encoder import load_encoder, retrieval
    from kinema.text.encoders import load_text_encoder

    extractor = load_encoder(encoder)
    text_encoder = load_text_encoder(TextConfig())
    seen = shapes.combos(held_out=False)

    def clip_set(offset: int):
        out, prompts = [], []
        for i in range(clips):
            combo = seen[(offset + i) % len(seen)]
            out.append(shapes.sample_clip(95_000_000 + offset + i, combo, frames=17, size=64)[0])
            prompts.append(canonical_caption(*combo))
        return np.stack(out), prompts

    ref, _ = clip_set(0)
    other, prompts = clip_set(clips)
    ref_stats = extract(extractor, ref)
    rows = {"real vs real": (other, None)}
    rows.update({name: (np.stack([fn(v, seed=i) for i, v in enumerate(other)]), name) for name, fn in corruptions.CORRUPTIONS.items()})
    print(f"\nDistances with {extractor.spec.name} ({clips} Shapes clips per set, held-out seeds)\n")
    print("| set against the reference | FD | KVD | JEDi form | retrieval R@1 | cosine own / other |")
    print("|---|---:|---:|---:|---:|---:|")
    result["distances"] = {}
    for name, (videos, _) in rows.items():
        d = distances(ref_stats, extract(extractor, videos))
        r = retrieval(extractor, videos, prompts, text_encoder)
        fd = next(v for k, v in d.items() if k.startswith(("FD", "FVD")))
        result["distances"][name] = {**d, **r}
        print(f"| {name} | {fd:.3f} | {d['KVD']:.4f} | {d['JEDi-form']:.3f} | {r['r_at_1']:.1%} | "
              f"{r['cos_own']:.3f} / {r['cos_other']:.3f} |")
    held_out_retrieval(result, extractor, text_encoder)


def held_out_retrieval(result: dict, extractor, text_encoder, seeds: int = 4) -> None:
    """Retrieval on the colour-shape pairs that no generator and not the encoder trained on (yellow
    triangle, cyan square), against the same colours and shapes recombined into seen pairs (yellow
    square, cyan triangle): 2 pairs x 9 directions x `seeds` clips each. Text-to-video within the
    set (chance 1 / 18), and video-to-text over all 162 canonical captions, where a held-out clip
    must rank its own caption above the seen captions that share its colour or its shape."""
    from kinema.data.captions import canonical_caption
    from kinema.eval.video_encoder import retrieval

    combos = shapes.combos()
    t_all = extractor.text(text_encoder([canonical_caption(*c) for c in combos]).pooled)
    t_all = t_all / np.linalg.norm(t_all, axis=1, keepdims=True)

    sets = {"held out (yellow triangle, cyan square)": [("yellow", "triangle"), ("cyan", "square")],
            "seen (yellow square, cyan triangle)": [("yellow", "square"), ("cyan", "triangle")]}
    print(f"\nRetrieval on held-out colour-shape pairs ({seeds} clips per prompt, 18 prompts)\n")
    print("| pairs | clips | text-to-video R@1 (18 prompts) | video-to-text R@1 (162 captions) | misses with the "
          "right colour and shape | cosine own / other |")
    print("|---|---:|---:|---:|---:|---:|")
    result["retrieval_held_out"] = {}
    for name, pairs in sets.items():
        jobs = [((c, sh, d), s) for c, sh in pairs for d in shapes.DIRECTIONS for s in range(seeds)]
        videos = np.stack([shapes.sample_clip(96_000_000 + 100 * i, combo, frames=17, size=64)[0]
                           for i, (combo, _) in enumerate(jobs)])
        own = [canonical_caption(*combo) for combo, _ in jobs]
        r = retrieval(extractor, videos, own, text_encoder)
        v = extractor(videos)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        best = (v @ t_all.T).argmax(axis=1)
        v2t = float(np.mean([combos[b] == combo for b, (combo, _) in zip(best, jobs)]))
        misses = [(combos[b], combo) for b, (combo, _) in zip(best, jobs) if combos[b] != combo]
        pair_right = float(np.mean([g[:2] == w[:2] for g, w in misses])) if misses else float("nan")
        result["retrieval_held_out"][name] = {"clips": len(jobs), **r, "video_to_text_r_at_1": v2t,
                                              "misses_with_the_right_pair": pair_right}
        print(f"| {name} | {len(jobs)} | {r['r_at_1']:.1%} | {v2t:.1%} | {pair_right:.0%} | "
              f"{r['cos_own']:.3f} / {r['cos_other']:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--encoder", default=None, help="a trained video encoder (kinema eval train-encoder): adds the distances")
    ap.add_argument("--distance-clips", type=int, default=256, help="clips per set for the distances")
    ap.add_argument("--distances-only", action="store_true", help="with --encoder: the distance table alone")
    ap.add_argument("--camera-only", action="store_true", help="the camera oracle's table alone (2 x --clips clips)")
    ap.add_argument("--unverified", action="store_true", help="with --camera-only: the oracle without its refinement check")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result = {"clips": args.clips, "worlds": {}}
    if args.camera_only:
        camera_table(result, args.clips * 2, verify=not args.unverified)
        return write(result, args.json)
    if args.distances_only:
        if not args.encoder:
            raise SystemExit("--distances-only needs --encoder DIR")
        distance_table(result, args.encoder, args.distance_clips)
        return write(result, args.json)
    names = list(temporal.METRICS)
    for world in ("shapes", "photos"):
        clips = world_clips(world, args.clips)
        rows = {c or "clean": row(clips, c) for c in (None, *corruptions.CORRUPTIONS)}
        result["worlds"][world] = rows
        cols = names + (["oracle_direction", "oracle_constancy", "oracle_speed_error"] if world == "shapes" else [])
        print(f"\n{world} ({args.clips} clips, 17 x 64 x 64)\n")
        print("| corruption | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for name, r in rows.items():
            print(f"| {name} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")

    pace = {}
    for seed in range(400):
        video, scene, objs = scenes.sample_scene_clip(80_000 + seed, frames=17, size=64)
        if len(objs) == 1 and objs[0].direction != "still":
            m = temporal.motion_magnitudes(video)
            pace.setdefault(scene[0][3] or "(no word)", []).append((4 * objs[0].speed, float(m.mean()), temporal.is_dynamic(video)))
    print("\nLevel-2 one-object clips: motion magnitude against the known speed (pixels per frame at 256 px)\n")
    print("| pace | clips | known speed x 4 | measured | measured / known | dynamic |")
    print("|---|---:|---:|---:|---:|---:|")
    result["speed"] = {}
    for word in ("slowly", "(no word)", "quickly"):
        known, measured, dyn = (np.array(v) for v in zip(*pace[word]))
        result["speed"][word] = {"clips": len(known), "known": float(known.mean()), "measured": float(measured.mean()),
                                 "ratio": float((measured / known).mean()), "dynamic": float(dyn.mean())}
        print(f"| {word} | {len(known)} | {known.mean():.2f} | {measured.mean():.2f} | {(measured / known).mean():.3f} | "
              f"{dyn.mean():.2f} |")
    camera_table(result, args.clips * 2)
    if args.encoder:
        distance_table(result, args.encoder, args.distance_clips)
    write(result, args.json)


def write(result: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
