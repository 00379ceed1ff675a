"""`kinema eval vae`: reconstruction quality of a VAE on Shapes clips or real photographs.

PSNR and SSIM over whole frames (scikit-image), PSNR over object pixels only (the background is
black and easy: whole-frame PSNR hides a VAE that smears the objects), and the Shapes oracle on
the reconstructions: does the round trip keep colour, shape, direction and a single object?
World "photos" codes held-out photo-world clips (a camera over photographs never trained on);
"photos-train" new clips over the training photographs, for the generalisation gap.

The perceptual figure is MS-SSIM (kinema.vae.perceptual: at 64 px, three of its five scales, their
weights renormalised), which needs no network weights; LPIPS would need VGG or AlexNet weights,
which nothing here ships. "detail" (detail_ratio) is the sharpness figure: the reconstruction's
energy of steps between neighbouring pixels over the reference's, 1 for as much fine detail, below
for blur; what perceptual and adversarial training terms are meant to raise.

Every figure comes with a naive baseline that keeps as many numbers as the latent does: the clip
trilinearly downsampled (time by the VAE's factor, space by s / sqrt(Cz / 3)) and upsampled back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kinema.config import VAEConfig
from kinema.data import shapes
from kinema.errors import KinemaError
from kinema.eval.oracle import judge
from kinema.train.vae_stage import load_vae


def foreground_psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mask = ref.max(axis=-1) > 0.1 * 255
    if not mask.any():
        return float("nan")
    err = (ref[mask].astype(np.float64) - out[mask]) ** 2
    return float(10 * np.log10(255.0**2 / max(err.mean(), 1e-10)))


def eval_combos(clips: int) -> list[tuple[str, str, str]]:
    """The (colour, shape, direction) of each eval clip: a fixed shuffle of all combinations, so any
    number of clips spreads over colours, shapes and motions (in list order, 48 clips were red and
    yellow only), and 162 clips show every combination once."""
    all_combos = shapes.combos()
    order = np.random.default_rng(0).permutation(len(all_combos))
    return [all_combos[order[i % len(all_combos)]] for i in range(clips)]


def level1_case(i: int, picks: list, frames: int, size: int):
    """(reference clip, judge(reconstruction) -> oracle scores) of level-1 eval clip i."""
    combo = picks[i]

    def scores(rec: np.ndarray) -> dict[str, float]:
        v = judge(rec)
        return {"colour": float(v.colour == combo[0]), "shape": float(v.shape == combo[1]),
                "direction": float(v.direction == combo[2]), "one_object_frames": v.one_object_frac}
    return shapes.sample_clip(50_000 + i, combo, frames=frames, size=size)[0], scores


def level2_case(i: int, frames: int, size: int):
    """The same for Shapes level 2: clip i of a fixed list of seen scenes, scored by the scene oracle."""
    from kinema.data.scenes import sample_scene_clip
    from kinema.eval.scene_oracle import judge_scene
    from kinema.eval.scene_report import METRICS

    ref, scene, _ = sample_scene_clip(50_000 + i, frames=frames, size=size)

    def scores(rec: np.ndarray) -> dict[str, float]:
        r = judge_scene(rec, scene)
        return {k: r[k] for k in METRICS}
    return ref, scores


def photo_case(i: int, frames: int, size: int, held_out: bool = True):
    """Held-out photo-world clip i (a scikit-learn photograph), or, with `held_out` False, clip i
    over the training photographs (new camera paths over photographs trained on: the gap between
    the two says how much of a photo VAE's quality is its own photographs); no oracle."""
    from kinema.data.photos import sample_photo_clip

    return sample_photo_clip(50_000 + i, frames=frames, size=size, held_out=held_out)[0], lambda rec: {}


def baseline_size(cfg: VAEConfig, frames: int, h: int, w: int) -> tuple[int, int, int]:
    """The naive baseline's (T', H', W'): the latent's frame count, and space shrunk by
    s / sqrt(Cz / 3), so that 3 T' H' W' is about Cz t h w."""
    f = cfg.space_compression / (cfg.latent_channels / cfg.in_channels) ** 0.5
    return (frames - 1) // cfg.time_compression + 1, max(1, round(h / f)), max(1, round(w / f))


def naive_baseline(x: torch.Tensor, cfg: VAEConfig) -> torch.Tensor:
    """x [B, 3, T, H, W] -> trilinear down to as many values as the latent holds, and back up."""
    small = F.interpolate(x, size=baseline_size(cfg, *x.shape[2:]), mode="trilinear", align_corners=False)
    return F.interpolate(small, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)


def detail_ratio(ref: np.ndarray, rec: np.ndarray) -> float:
    """How much fine detail a reconstruction keeps: the energy of its grey image's steps between
    neighbouring pixels (across and down) over the reference's, on [..., H, W, 3] arrays. 1: as
    much as the reference; a blur is below 1 (a flat image 0); invented texture or noise above.
    It says nothing of where the detail is: read it beside PSNR, which punishes detail in the
    wrong place."""
    def energy(v: np.ndarray) -> float:
        g = v.astype(np.float64).mean(-1)
        return float((np.diff(g, axis=-1) ** 2).sum() + (np.diff(g, axis=-2) ** 2).sum())
    return energy(rec) / max(energy(ref), 1e-12)


def quality(ref: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    """PSNR, mean SSIM and MS-SSIM over frames, and detail_ratio, of uint8 [T, H, W, 3] clips."""
    from kinema.vae.perceptual import ms_ssim

    ssim = np.mean([structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(ref, rec)])
    ms = ms_ssim(*(torch.from_numpy(v).float().permute(3, 0, 1, 2)[None] for v in (ref, rec)), data_range=255.0)
    return {"psnr": float(peak_signal_noise_ratio(ref, rec, data_range=255)), "ssim": float(ssim),
            "ms_ssim": float(ms.mean()), "detail": detail_ratio(ref, rec)}


@torch.no_grad()
def evaluate_vae(path: str | Path, clips: int = 64, batch_size: int = 8, frames: int | None = None, size: int = 64,
                 device: str = "auto", precision: str = "auto", world: str = "shapes") -> dict:
    """Encode and decode under the runtime's autocast (as training does), on its device. world
    "scenes" reconstructs Shapes level-2 clips and scores them with the scene oracle; "photos"
    held-out photo-world clips. `frames`: the VAE's longest clip up to 17 frames unless given."""
    from kinema.runtime import resolve_runtime, to_device

    runtime = resolve_runtime(device, precision)
    vae = load_vae(path).to(runtime.device)
    frames = vae.cfg.longest_clip() if frames is None else frames
    try:
        vae.check_frames(frames)
    except ValueError as e:
        raise KinemaError(f"{path}: {e}; pass --frames {vae.cfg.longest_clip()}") from None
    t0 = time.time()
    picks = eval_combos(clips)
    rows = []
    for start in range(0, clips, batch_size):
        case = {"shapes": lambda i: level1_case(i, picks, frames, size), "scenes": lambda i: level2_case(i, frames, size),
                "photos": lambda i: photo_case(i, frames, size),
                "photos-train": lambda i: photo_case(i, frames, size, held_out=False)}[world]
        cases = [case(i) for i in range(start, min(start + batch_size, clips))]
        x = torch.stack([shapes.to_tensor(ref) for ref, _ in cases])
        with runtime.autocast():
            out = vae.decode(vae.encode(to_device(x, runtime.device))[0])
        for (ref, scores), rec, base in zip(cases, out, naive_baseline(x, vae.cfg)):
            rec = shapes.to_uint8(rec)
            naive = {f"baseline_{k}": v for k, v in quality(ref, shapes.to_uint8(base)).items()}
            rows.append({**quality(ref, rec), "fg_psnr": foreground_psnr(ref, rec), **naive, **scores(rec)})
    cfg = vae.cfg
    result = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    result.update({"clips": clips, "frames": frames, "compression": f"{cfg.time_compression}x{cfg.space_compression}x{cfg.space_compression}",
                   "latent_channels": cfg.latent_channels, "params_m": sum(p.numel() for p in vae.parameters()) / 1e6,
                   "seconds": round(time.time() - t0, 1), "model": str(path), "world": world,
                   "device": str(runtime.device), "precision": runtime.precision})
    return result


def format_vae_table(results: list[dict]) -> str:
    oracle = [k for k in ("colour", "shape", "direction", "pace", "binding", "one_object_frames", "count_frames")
              if k in results[0]]
    names = {"one_object_frames": "one-object frames", "count_frames": "right object count"}
    head = ["model", "world", "frames", "compression", "PSNR", "SSIM", "MS-SSIM", "detail", "object PSNR",
            "naive PSNR / SSIM / MS-SSIM / detail",
            *(names.get(k, k) for k in oracle)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|" + "---:|" * (len(head) - 4)]
    for r in results:
        cells = [r["model"], r["world"], str(r.get("frames", 17)), f"{r['compression']}x{r['latent_channels']}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}",
                 f"{r['ms_ssim']:.4f}", f"{r['detail']:.3f}", f"{r['fg_psnr']:.2f}",
                 f"{r['baseline_psnr']:.2f} / {r['baseline_ssim']:.4f} / {r['baseline_ms_ssim']:.4f} / {r['baseline_detail']:.3f}",
                 *(f"{100 * r[k]:.1f}%" for k in oracle)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
