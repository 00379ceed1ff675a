"""`kinema eval suite shapes|photos`: one command, fixed prompts and seeds, every applicable metric,
each with a bootstrap 95% interval over the clips, a JSON and an HTML report.

shapes: the 162 canonical Shapes prompts x `seeds` (kinema.eval.report's jobs), each clip judged
    by the oracle (colour, shape, direction, all three, one-object frames, attribute constancy over
    time, speed error) and by the temporal
    metrics (kinema.eval.temporal); with a video encoder (the shipped one unless `encoder` names
    another from `kinema eval train-encoder`, or is "none"), the distances
    (FD, KVD, JEDi's form) of the generated clips to world clips of the same prompts, beside the
    same distances between two sets of world clips (the real-versus-real floor), and text-video
    retrieval on the generated clips; with `i3d` (a Kinetics-400 I3D file), FVD the same way; with
    `clip` (a local CLIP), each clip's CLIPSim-V against its prompt.
photos: `kinema eval camera` (held-out photographs under recorded camera paths; first-frame and
    clip PSNR, the camera oracle) plus the temporal metrics of the generated clips.

`--model world` runs a suite on the worlds' own clips: its ceiling. Every seed is fixed, so two
runs of one suite on one machine give the same numbers.
"""

from __future__ import annotations

import time

import numpy as np

from kinema.data.captions import canonical_caption
from kinema.errors import KinemaError
from kinema.eval import temporal
from kinema.eval.report import world_clip
from kinema.eval.videos import mean_ci

SUITES = ("shapes", "photos")
ORACLE = ("colour", "shape", "direction", "all_three", "one_object_frames", "constancy", "speed_error")


def summarise(rows: list[dict], keys) -> dict[str, dict[str, float]]:
    return {k: dict(zip(("mean", "low", "high"), mean_ci([r[k] for r in rows]))) for k in keys}


def world_set(jobs, offset: int) -> np.ndarray:
    """World clips of the suite's prompts, each from its own seed in `offset`'s set (the ceiling's
    is 10 000)."""
    return np.stack([world_clip(offset, combo, s) for combo, s in jobs])


def world_distances(extractor, generated: np.ndarray, jobs) -> dict[str, dict[str, float]]:
    """The distances of the generated clips to world clips of the same prompts, and of a second
    set of world clips to the first: the real-versus-real floor."""
    from kinema.eval.distances import distances
    from kinema.eval.features import extract

    real_stats = extract(extractor, world_set(jobs, 30_000))
    return {"generated": distances(extract(extractor, generated), real_stats),
            "real vs real": distances(extract(extractor, world_set(jobs, 31_000)), real_stats)}


def shapes_suite(model: str, seeds: int = 1, encoder: str | None = None, i3d: str | None = None,
                 clip: str | None = None, progress: bool = True, **sampling) -> tuple[dict, dict]:
    from kinema.eval.report import _world_generator, score

    device, precision = sampling.pop("device", "auto"), sampling.pop("precision", "auto")
    # the scorers load first: a wrong path fails before minutes of generation, not after
    scorer = extractor = i3d_extractor = None
    if clip:
        from kinema.eval.clip_score import ClipScorer

        scorer = ClipScorer(clip)
    if i3d:
        from kinema.eval.i3d import load_i3d

        i3d_extractor = load_i3d(i3d)
    if encoder:
        from kinema.eval.video_encoder import load_encoder

        extractor = load_encoder(encoder)
    if model == "world":
        generate = _world_generator(17, 64)
    else:
        from kinema.pipelines.pipeline import load_pipeline

        pipe = load_pipeline(model, device=device, precision=precision)
        if sampling.get("guidance") is None:  # the model's own, and the settings say which
            sampling["guidance"] = pipe.cfg.guidance

        def generate(batch, batch_seeds):
            return pipe([canonical_caption(*c) for c in batch], seed=batch_seeds, num_frames=pipe.cfg.frames, **sampling)

    videos = []

    def extra(combo, s, video):
        videos.append(((combo, s), video))
        return temporal.temporal_scores(video)

    result = score(generate, seeds, progress=progress, extra=extra)
    rows = result.pop("rows")
    out = {"summary": summarise(rows, ORACLE + temporal.METRICS),
           "splits": {k: result[k] for k in ("seen", "held_out")}, "rows": rows,
           "settings": {k: v for k, v in sampling.items() if v is not None}}
    jobs = [job for job, _ in videos]
    generated = np.stack([v for _, v in videos])
    prompts = [canonical_caption(*c) for c, _ in jobs]
    if scorer:
        for row, clip_score in zip(rows, scorer(generated, prompts)):
            row["clipsim_v"] = float(clip_score)
        out["summary"].update(summarise(rows, ("clipsim_v",)))
    if i3d_extractor:
        out["distances_i3d"] = world_distances(i3d_extractor, generated, jobs)
    if extractor:
        from kinema.config import TextConfig
        from kinema.eval.video_encoder import retrieval
        from kinema.text.encoders import load_text_encoder

        out["distances"] = world_distances(extractor, generated, jobs)
        out["retrieval"] = retrieval(extractor, generated, prompts, load_text_encoder(TextConfig()))
    kept = {f"{canonical_caption(*combo)} (seed {s})": v for (combo, s), v in videos[:6]}
    return out, kept


def photos_suite(model: str, clips: int = 32, progress: bool = True, **sampling) -> tuple[dict, dict]:
    from kinema.eval.camera_report import evaluate_camera

    result, kept = evaluate_camera(model, clips=clips, progress=progress, keep=clips, **sampling)
    generated = [v for name, v in kept.items() if not name.endswith("the true camera path")]
    for row, video in zip(result["rows"], generated):
        row.update(temporal.temporal_scores(video))
    result["summary"].update(summarise(result["rows"], temporal.METRICS))
    return result, dict(list(kept.items())[:8])


def run_suite(suite: str, model: str, *, seeds: int = 1, clips: int = 32, encoder: str | None = None,
              i3d: str | None = None, clip: str | None = None, progress: bool = True, **sampling) -> tuple[dict, dict]:
    """(the suite's result, for JSON; a few clips, for the report)."""
    if suite not in SUITES:
        raise KinemaError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    t0 = time.time()
    temporal._cv2()  # OpenCV (the eval extra) is checked before anything is generated
    if suite == "shapes":
        from kinema.eval.video_encoder import SHIPPED

        encoder = SHIPPED if encoder is None else None if encoder == "none" else encoder
        result, kept = shapes_suite(model, seeds=seeds, encoder=encoder, i3d=i3d, clip=clip, progress=progress,
                                    **sampling)
    else:
        if encoder not in (None, "none") or i3d or clip:
            raise KinemaError("--encoder / --i3d / --clip: the photos suite has no distances or prompts to score yet "
                              "(kinema's video encoder is trained on Shapes clips); compare folders with `kinema eval "
                              "distances` instead")
        result, kept = photos_suite(model, clips=clips, progress=progress, **sampling)
    result.setdefault("settings", {}).update(suite=suite, model=model, seeds=seeds if suite == "shapes" else None,
                                             clips=clips if suite == "photos" else None, encoder=encoder, i3d=i3d, clip=clip,
                                             seconds=round(time.time() - t0, 1))
    for key, value in sampling.items():  # (a None the suite resolved, e.g. the model's guidance, stays resolved)
        if value is not None or key not in result["settings"]:
            result["settings"][key] = value
    return result, kept


def format_suite(result: dict) -> str:
    s = result["settings"]
    lines = [f"suite {s['suite']}, model {s['model']}; mean [95% bootstrap interval] over the clips", "",
             "| figure | mean | 95% interval |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['mean']:.4f} | {v['low']:.4f} - {v['high']:.4f} |" for k, v in result["summary"].items()]
    for key in ("distances", "distances_i3d"):
        if key in result:
            lines += ["", "| distances to world clips | " + " | ".join(result[key]["generated"]) + " |",
                      "|---|" + "---:|" * len(result[key]["generated"])]
            lines += [f"| {name} | " + " | ".join(f"{x:.4f}" for x in d.values()) + " |" for name, d in result[key].items()]
    if "retrieval" in result:
        r = result["retrieval"]
        ci = f" [{r['r_at_1_low']:.1%} - {r['r_at_1_high']:.1%}]" if "r_at_1_low" in r else ""
        lines += ["", f"text-video retrieval on the generated clips: R@1 {r['r_at_1']:.1%}{ci}, cosine to own prompt "
                      f"{r['cos_own']:.3f} against {r['cos_other']:.3f} to the others"]
    return "\n".join(lines)
