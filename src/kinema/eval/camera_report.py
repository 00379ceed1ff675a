"""`kinema eval camera`: image-to-video and camera control on photographs never trained on.

Each eval clip is a held-out photograph (scikit-learn's) under a recorded camera path of the photo
world. The model gets the clip's first frame and the path's camera features (kinema.data.camera);
its prompt names the photograph's subject only, so the motion comes from the camera condition.
The true path over the same photograph gives the ground-truth frames. Reported per clip and per
motion:

- first-frame fidelity: PSNR of the first generated frame to the given image and to the VAE's own
  reconstruction of it (the clamp holds when the latter is the cap)
- PSNR of the whole clip to the true clip, averaged over frames
- the VAE's ceiling: its own reconstruction of the true clip, its PSNR to the true clip and what
  the camera oracle reads off it (a denoiser that made the true latents would score this)
- for a `dit.camera_render` model, the same of the VAE's code of the render it reads (the given
  frame moved along the path): what a denoiser that copied its guide would score
- the camera oracle (kinema.eval.camera_oracle) on the generated clip: the motions it reads
  against the path's, and the path error in pixels

`--model world` scores the true clips themselves (the oracle's ceiling); `--model still` the given
first frame repeated, a camera that does not move (what a model earns by not moving the picture);
`--model warp` the given first frame moved along the true path (kinema.data.camera.warp, the
border repeated where the frame did not see), the render a `dit.camera_render` model reads.
`--no-camera` generates with the image alone: what the camera condition adds. `--restore-detail`
adds the render's detail that the VAE loses back to a camera-render model's clips
(`Pipeline.render_detail`).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from kinema.data import camera, photos
from kinema.errors import KinemaError
from kinema.eval.camera_oracle import judge_camera
from kinema.eval.report import psnr
from kinema.eval.videos import mean_ci

EVAL_SEED = 40_000  # photo-world seeds of the eval clips, apart from training's draws
BASELINES = ("world", "still", "warp")  # --model values that are not model directories


def eval_clips(clips: int, frames: int, size: int) -> list[tuple[np.ndarray, photos.CameraPath]]:
    return [photos.sample_photo_clip(EVAL_SEED + i, frames=frames, size=size, held_out=True) for i in range(clips)]


def clip_psnr(video: np.ndarray, clip: np.ndarray) -> float:
    """PSNR of each frame to the true one, averaged over frames."""
    return float(np.mean([psnr(a, b) for a, b in zip(video, clip)]))


def evaluate_camera(model: str, clips: int = 32, steps: int = 25, guidance: float | None = None, sampler: str = "euler",
                    shift: float | None = None, device: str = "auto", precision: str = "auto",
                    use_camera: bool = True, restore_detail: bool = False, progress: bool = True,
                    keep: int = 0) -> tuple[dict, dict]:
    """(the result, for JSON; the first `keep` clips, generated and true, for a report's frame strips).
    `guidance` None: the model's own (`ModelConfig.guidance`)."""
    if restore_detail and model in BASELINES:
        raise KinemaError(f"--restore-detail is for a camera-render model, not --model {model}")
    t0 = time.time()
    kept = {}
    pipe = None
    frames, size = 17, 64
    if model not in BASELINES:
        from kinema.pipelines.pipeline import load_pipeline

        pipe = load_pipeline(model, device=device, precision=precision)
        frames, size = pipe.cfg.frames, pipe.cfg.height
        guidance = pipe.cfg.guidance if guidance is None else guidance
    rows = []
    for i, (clip, path) in enumerate(tqdm(eval_clips(clips, frames, size), desc="eval camera", disable=not progress)):
        row = {"photo": path.photo, "motions": list(path.motions)}
        if pipe is None:
            if model == "world":
                video = clip
            elif model == "still":
                video = np.repeat(clip[:1], len(clip), axis=0)
            else:
                video = camera.warp(clip[0], camera.path_features(path, size))
        else:
            subject = {**photos.TRAIN, **photos.HELD_OUT}[path.photo]
            cam = camera.path_features(path, size) if use_camera else None
            video = pipe(subject, num_frames=frames, steps=steps, guidance=guidance, sampler=sampler, shift=shift,
                         seed=i, image=clip[0], camera=cam, restore_detail=restore_detail)
            recon = pipe.frames(pipe.video_latents(clip[:1], 1))[0, 0]
            recon_clip = pipe.frames(pipe.video_latents(clip, frames))[0]
            row.update(first_psnr=psnr(video[0], clip[0]), first_psnr_recon=psnr(video[0], recon),
                       recon_psnr=psnr(recon, clip[0]), recon_clip_psnr=clip_psnr(recon_clip, clip),
                       recon_right=float(judge_camera(recon_clip, path)["right"]))
            if pipe.cfg.dit.camera_render and cam is not None:  # what copying its render would score
                render = pipe.frames(pipe.video_latents(camera.warp(clip[0], cam), frames))[0]
                row.update(render_clip_psnr=clip_psnr(render, clip), render_right=float(judge_camera(render, path)["right"]))
        row["clip_psnr"] = clip_psnr(video, clip)
        if i < keep:
            kept[f"{i}: {path.photo}, {' + '.join(path.motions)} (generated)"] = video
            kept[f"{i}: the true camera path"] = clip
        judged = judge_camera(video, path)
        row.update(found=judged["motions"], right=float(judged["right"]), path_error=judged["path_error"])
        rows.append(row)
    keys = [k for k in ("first_psnr", "first_psnr_recon", "recon_psnr", "clip_psnr", "right", "path_error",
                        "recon_clip_psnr", "recon_right", "render_clip_psnr", "render_right") if k in rows[0]]
    summary = {k: dict(zip(("mean", "low", "high"), mean_ci([r[k] for r in rows]))) for k in keys}
    per_motion = {}
    for m in photos.MOTIONS:
        having = [r for r in rows if m in r["motions"]]
        if having:
            per_motion[m] = {"clips": len(having), "clip_psnr": float(np.mean([r["clip_psnr"] for r in having])),
                             "found": float(np.mean([m in r["found"] for r in having]))}
    settings = {"model": model, "clips": clips, "steps": steps, "guidance": guidance, "sampler": sampler, "shift": shift,
                "camera": use_camera, "restore_detail": restore_detail, "seconds": round(time.time() - t0, 1)}
    if pipe is not None:
        settings.update(device=pipe.runtime.device.type, precision=pipe.runtime.precision)
    return {"summary": summary, "per_motion": per_motion, "settings": settings, "rows": rows}, kept


def format_camera_table(result: dict) -> str:
    s = result["summary"]
    names = {"first_psnr": "first frame to the image (dB)", "first_psnr_recon": "first frame to the VAE's reconstruction (dB)",
             "recon_psnr": "the VAE's reconstruction to the image (dB)", "clip_psnr": "clip to the true camera path (dB)",
             "right": "motions right (camera oracle)", "path_error": "path error (px)",
             "recon_clip_psnr": "the VAE's reconstruction of the true clip to it (dB): the ceiling",
             "recon_right": "motions right in the VAE's reconstruction of the true clip",
             "render_clip_psnr": "the VAE's code of the given frame's render to the true clip (dB): the model's guide",
             "render_right": "motions right in the render's code"}
    lines = [f"{result['settings']['clips']} held-out photo clips; mean [95% bootstrap interval]", "",
             "| figure | mean | 95% interval |", "|---|---:|---:|"]
    lines += [f"| {names[k]} | {v['mean']:.3f} | {v['low']:.3f} - {v['high']:.3f} |" for k, v in s.items()]
    lines += ["", "| motion | clips | clip PSNR (dB) | found by the oracle |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {v['clips']} | {v['clip_psnr']:.2f} | {v['found']:.0%} |" for m, v in result["per_motion"].items()]
    return "\n".join(lines)
