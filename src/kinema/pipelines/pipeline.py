"""Text-to-video pipeline: prompt -> text states -> sampled latents -> VAE decode -> uint8 frames.

A model directory holds config.json (a ModelConfig), vae.safetensors and dit.safetensors.

    pipe = kinema.load_pipeline("shapes")            # or a directory
    frames = pipe("a red circle moving right", num_frames=17, steps=25, guidance=5.0, seed=0)
    frames.shape == (17, 64, 64, 3), dtype uint8
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from kinema.config import ModelConfig, from_dict, to_dict
from kinema.data import camera as cam
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.errors import KinemaError
from kinema.flow.frames import KnownFrames
from kinema.flow.samplers import SAMPLERS
from kinema.io.weights import MANIFEST, load_json, load_weights, save_weights, verify_manifest, write_manifest
from kinema.pipelines.generate import initial_noise, sample_latents
from kinema.pipelines.registry import resolve, shipped_models
from kinema.runtime import Runtime, cpu_runtime, resolve_runtime
from kinema.vae.autoencoder import CausalVAE


def save_model(root: Path, cfg: ModelConfig, vae_state: dict, dit_state: dict, dtype: torch.dtype = torch.float16) -> Path:
    """Write a model directory (weights first, config last, so a readable config means a whole model).
    Weights are stored in fp16 (half the size; they load back into fp32 parameters)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    save_weights(root / "vae.safetensors", vae_state, dtype)
    save_weights(root / "dit.safetensors", dit_state, dtype)
    tmp = root / "config.json.tmp"
    tmp.write_text(json.dumps(to_dict(cfg), indent=2))
    tmp.replace(root / "config.json")
    write_manifest(root, ["config.json", "vae.safetensors", "dit.safetensors"])  # checked by load_pipeline
    return root


def _model_dir(name_or_path: str | Path) -> Path:
    root = resolve(name_or_path)
    if not root.is_dir():
        known = ", ".join(shipped_models()) or "none installed"
        raise KinemaError(f"model {str(name_or_path)!r} not found: pass a model directory or a shipped name ({known})")
    return root


class Pipeline:
    """Models on `runtime.device`; the denoiser runs under `runtime`'s autocast, the text encoder
    and the VAE decoder in fp32. `compile=True` compiles the denoiser with torch.compile (one
    graph per latent shape and batch; worth it on GPUs, where the first call pays the compile)."""

    def __init__(self, cfg: ModelConfig, vae: CausalVAE, dit: MMDiT, text_encoder, runtime: Runtime | None = None,
                 compile: bool = False):
        self.runtime = runtime or cpu_runtime("fp32")
        device = self.runtime.device
        self.cfg, self.vae, self.dit = cfg, vae.eval().to(device), dit.eval().to(device)
        self.text_encoder = text_encoder.to(device)
        if compile:
            self.dit.compile()

    @property
    def precision(self) -> str:
        return self.runtime.precision

    def check_request(self, prompt: str | list[str], num_frames: int, end_image: bool = False) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not p or not p.strip() for p in prompts):
            raise KinemaError('the prompt is empty; describe the video, e.g. "a red circle moving right"')
        for p in prompts:
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8 reach Python as lone surrogates
                raise KinemaError(f"the prompt {p!r} is not valid UTF-8 text; write it in UTF-8") from None
        r = self.cfg.vae.time_compression
        if num_frames < 1 or (num_frames - 1) % r:
            raise KinemaError(f"--frames {num_frames} is not 1 + {r}k; use e.g. {r + 1}, {2 * r + 1} or {4 * r + 1}")
        if end_image and num_frames < r + 1:
            raise KinemaError(f"--end-image needs at least two latent frames: --frames {r + 1} or more")
        return prompts

    def latent_shape(self, num_frames: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of one sample's latent for `num_frames` frames."""
        v, s = self.cfg.vae, self.cfg.vae.space_compression
        return (v.latent_channels, self.vae.latent_frames(num_frames), self.cfg.height // s, self.cfg.width // s)

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        return Conditioning(self.text_encoder(prompts))  # on the runtime's device

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_frames: int = 17, steps: int = 25, guidance: float | None = None,
                 seed: int | list[int] = 0, sampler: str = "euler", shift: float | None = None,
                 video: np.ndarray | None = None, strength: float = 0.6, image: np.ndarray | None = None,
                 end_image: np.ndarray | None = None, context: np.ndarray | None = None,
                 camera: str | np.ndarray | None = None, stride: int = 1, restore_detail: bool = False) -> np.ndarray:
        """A prompt -> uint8 [T, H, W, 3]; a list of prompts -> uint8 [B, T, H, W, 3].

        `shift` > 1 spends more of the sampling steps near noise, where layout and motion are
        decided (t' = s t / (1 + (s - 1) t)); None uses the model's `timestep_shift`. `guidance`
        None uses the model's `guidance` (5 unless its config says otherwise).
        `video` with `strength`: video-to-video; `image`, `end_image`: the first and last frames
        (`latents`); `camera`: the camera's motion, for a camera-controlled model (`camera_features`);
        `stride`: the real frames between two frames, for a frame-stride model (1: its training rate).
        `restore_detail` (a `dit.camera_render` model given `image`): add back what the VAE loses of
        the image's render wherever the first frame saw the content (`render_detail`)."""
        detail = self.render_detail(image, camera, num_frames) if restore_detail else None  # (bad input before sampling)
        z = self.latents(prompt, num_frames, steps, guidance, seed, sampler, shift, video, strength, image, end_image,
                         context, camera, stride)
        frames = self.frames(z)
        if detail is not None:
            frames = (frames.astype(np.float32) + detail).round().clip(0, 255).astype(np.uint8)
        return frames[0] if isinstance(prompt, str) else frames

    def latents(self, prompt: str | list[str], num_frames: int = 17, steps: int = 25, guidance: float | None = None,
                seed: int | list[int] = 0, sampler: str = "euler", shift: float | None = None,
                video: np.ndarray | None = None, strength: float = 0.6, image: np.ndarray | None = None,
                end_image: np.ndarray | None = None, context: np.ndarray | None = None,
                camera: str | np.ndarray | None = None, stride: int = 1) -> torch.Tensor:
        """What `__call__` samples before decoding: normalised latents [B, C, t, h, w], fp32.
        `video` (uint8 [T, H, W, 3], T = num_frames, the model's size): video-to-video, its latents
        noised to t = `strength` (0 keeps the video, 1 ignores it) and denoised towards the prompt.
        `image` / `end_image` (uint8 [H, W, 3], the model's size; kinema.io.video.fit_image makes
        one): the first / last latent frame is given, held clean at every step; `context` the first
        latent frames, from a clip (`given_frames`)."""
        prompts = self.check_request(prompt, num_frames, end_image is not None)
        guidance = self.cfg.guidance if guidance is None else guidance
        check_settings(steps, guidance, shift, seed, sampler, len(prompts), strength if video is not None else None)
        shift = self.cfg.timestep_shift if shift is None else shift
        seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else list(seed)
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts))
        frames = self.given_frames(num_frames, image, end_image, context)
        features = self.camera_features(camera, num_frames)
        if frames is not None and image is not None and self.cfg.dit.camera_render:
            frames.guide = self.camera_render(image, features, num_frames, frames)
        if frames is not None:  # the same frames in the unconditional branch: guidance is on the text alone
            cond.frames = uncond.frames = frames.index([0] * len(prompts))
        if features is not None:  # (likewise the camera and the stride)
            latent = cam.latent_features(features, self.cfg.vae.time_compression)
            cond.camera = uncond.camera = torch.from_numpy(latent)[None].to(self.runtime.device).expand(len(prompts), -1, -1)
        if stride != 1 or self.cfg.dit.frame_stride:
            if not self.cfg.dit.frame_stride:
                raise KinemaError(f"stride {stride}: this model has no frame-stride condition (dit.frame_stride)")
            if not (isinstance(stride, int) and 1 <= stride <= 64):
                raise KinemaError(f"stride {stride!r}: use a whole number from 1 to 64")
            cond.stride = uncond.stride = torch.full((len(prompts),), float(stride), device=self.runtime.device)
        noise = initial_noise(self.latent_shape(num_frames), seeds).to(self.runtime.device)  # drawn on the CPU: same on every device
        start = None if video is None else self.video_latents(video, num_frames).expand(len(prompts), -1, -1, -1, -1)
        z = sample_latents(self.dit, cond, uncond, noise, steps=steps, guidance=guidance, sampler=sampler, shift=shift,
                           runtime=self.runtime, start=start, strength=strength)
        if not torch.isfinite(z).all():  # (a black video would say nothing)
            raise KinemaError(f"sampling produced non-finite latents (guidance {guidance}, shift {shift}); "
                              f"use a smaller guidance or shift")
        return z

    def camera_features(self, camera: str | np.ndarray | None, num_frames: int) -> np.ndarray | None:
        """`camera` as features per pixel frame, float32 [num_frames, 4] (kinema.data.camera): motion
        names ("pan-left,zoom-in", kinema.data.camera.parse_camera: the world's typical magnitudes),
        or the features themselves (e.g. `kinema.data.camera.path_features` of a recorded path)."""
        if camera is None:
            return None
        if not self.cfg.dit.camera:
            raise KinemaError("this model has no camera control (dit.camera); use a model trained with it")
        if isinstance(camera, str):
            return cam.named_features(cam.parse_camera(camera), num_frames)
        features = np.asarray(camera, dtype=np.float32)
        if features.shape != (num_frames, cam.FEATURES):
            raise KinemaError(f"camera features are [frames, {cam.FEATURES}] = [{num_frames}, {cam.FEATURES}]; "
                              f"got {list(features.shape)}")
        return features

    def camera_render(self, image: np.ndarray, features: np.ndarray | None, num_frames: int,
                      frames: KnownFrames) -> torch.Tensor:
        """A dit.camera_render model's guide [1, C, t, h, w]: the latents of the image as each frame's
        camera sees it (kinema.data.camera.warp; no camera: the image held still), given frames' 0."""
        render = self.video_latents(cam.warp(image, self._path(features, num_frames)), num_frames)
        return frames.render_guide(render)

    @torch.no_grad()
    def render_detail(self, image: np.ndarray | None, camera: str | np.ndarray | None, num_frames: int) -> np.ndarray:
        """float32 [T, H, W, 3]: the detail of the image's render along `camera` that the VAE's code
        of it loses (the render minus the VAE's reconstruction of it, in 0-255 units), weighted by
        how much of each pixel the first frame saw (0 where the render only repeats its border).
        A dit.camera_render model draws its guide, the VAE's code of that render, so adding this puts
        the picture's own detail back where the clip shows it: frame 0 becomes the image itself
        (as diffusers' inpainting pastes the original back over its unmasked pixels)."""
        if not self.cfg.dit.camera_render or image is None:
            raise KinemaError("restoring detail adds back the VAE's loss on the render of the given image: it "
                              "needs a dit.camera_render model and an image (--image)")
        path = self._path(self.camera_features(camera, num_frames), num_frames)
        render = cam.warp(self._still(image, 1, "--image")[0], path)
        coded = self.frames(self.video_latents(render, num_frames))[0]
        seen = cam.warp(np.full_like(image, 255), path, padding="zeros").astype(np.float32) / 255
        return seen * (render.astype(np.float32) - coded.astype(np.float32))

    @staticmethod
    def _path(features: np.ndarray | None, num_frames: int) -> np.ndarray:
        """Camera features [num_frames, 4]; no camera: a camera that holds still."""
        return np.zeros((num_frames, cam.FEATURES), dtype=np.float32) if features is None else features

    @torch.no_grad()
    def given_frames(self, num_frames: int, image: np.ndarray | None = None, end_image: np.ndarray | None = None,
                     context: np.ndarray | None = None) -> KnownFrames | None:
        """The first latent frame from `image`, the last from `end_image` (each uint8 [H, W, 3]), or
        the first k from `context` (uint8 [1 + r (k - 1), H, W, 3], r the time compression: the
        frames a long video continues from), as KnownFrames [1, C, t, h, w]; None when none is
        given. The first latent frame of a causal VAE codes one pixel frame, the image itself; the
        last codes r frames, so the end image is coded as a still clip of 1 + r frames and its last
        latent taken."""
        if image is None and end_image is None and context is None:
            return None
        shape, r = self.latent_shape(num_frames), self.cfg.vae.time_compression
        latents = torch.zeros(1, *shape, device=self.runtime.device)
        index = []
        if image is not None and context is not None:
            raise KinemaError("give the first frames as an image or as a context clip, not both")
        if image is not None:
            latents[:, :, 0] = self.video_latents(self._still(image, 1, "--image"), 1)[:, :, 0]
            index.append(0)
        if context is not None:
            k = (len(context) - 1) // r + 1
            if context.ndim != 4 or (len(context) - 1) % r or k >= shape[1]:
                raise KinemaError(f"a context clip has 1 + {r}k frames and fewer latent frames than the clip "
                                  f"({shape[1]}); got {tuple(context.shape)}")
            latents[:, :, :k] = self.video_latents(context, len(context))
            index += list(range(k))
        if end_image is not None:  # (check_request: at least two latent frames)
            latents[:, :, -1] = self.video_latents(self._still(end_image, r + 1, "--end-image"), r + 1)[:, :, -1]
            index.append(shape[1] - 1)
        given = KnownFrames.at(latents, index)
        given.clamped = self.cfg.dit.frame_cond != "tokens"  # reference tokens condition without clamping
        return given

    def _still(self, image: np.ndarray, frames: int, option: str) -> np.ndarray:
        """A still clip uint8 [frames, H, W, 3] of an image of the model's size."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise KinemaError(f"{option}: give an RGB image uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
        if image.shape[:2] != (self.cfg.height, self.cfg.width):
            raise KinemaError(f"{option} is {image.shape[1]}x{image.shape[0]}; this model makes {self.cfg.width}x"
                              f"{self.cfg.height}: kinema.io.video.fit_image(image, {self.cfg.width}, {self.cfg.height}) fits it")
        return np.repeat(image[None], frames, axis=0)

    @torch.no_grad()
    def video_latents(self, video: np.ndarray, num_frames: int) -> torch.Tensor:
        """A clip uint8 [T, H, W, 3] -> its normalised latents [1, C, t, h, w] (the VAE's posterior mean)."""
        if video.ndim != 4 or video.shape[-1] != 3:
            raise KinemaError(f"the input video has shape {tuple(video.shape)}; give RGB frames [T, H, W, 3]")
        if video.shape[0] < num_frames:
            raise KinemaError(f"the input video has {video.shape[0]} frames, fewer than --frames {num_frames}; "
                              f"use --frames of at most {video.shape[0]} (1 + {self.cfg.vae.time_compression}k)")
        if video.shape[1:3] != (self.cfg.height, self.cfg.width):
            raise KinemaError(f"the input video is {video.shape[2]}x{video.shape[1]}; this model makes "
                              f"{self.cfg.width}x{self.cfg.height}: resize it first (e.g. ffmpeg -vf scale={self.cfg.width}:{self.cfg.height})")
        x = torch.from_numpy(np.ascontiguousarray(video[:num_frames])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        mean, _ = self.vae.encode(x.to(self.runtime.device))
        return self.vae.normalize(mean.float())

    def frames(self, z: torch.Tensor) -> np.ndarray:
        """Normalised latents [B, C, t, h, w] -> uint8 frames [B, T, H, W, 3]."""
        video = self.vae.decode(self.vae.denormalize(z))  # [B, 3, T, H, W]
        return video.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()


MAX_GUIDANCE, MAX_SHIFT, MAX_STEPS = 100.0, 100.0, 1000


def check_settings(steps: int, guidance: float | None, shift: float | None, seed: int | list[int], sampler: str,
                   prompts: int = 1, strength: float | None = None) -> None:
    """The sampling settings a generation can use, each a clear error otherwise; needs no model
    (the CLI checks them before loading one). `strength`: video-to-video's, when there is a video;
    `guidance` None: the model's own, checked with its config."""
    if strength is not None and not (isinstance(strength, (int, float)) and 0 <= strength <= 1):
        raise KinemaError(f"strength {strength}: use a number from 0 (keep the video) to 1 (ignore it)")
    if sampler not in SAMPLERS:
        raise KinemaError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise KinemaError(f"steps {steps}: use 1 to {MAX_STEPS}")
    if guidance is not None and not (math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
        raise KinemaError(f"guidance {guidance}: use a number from 0 to {MAX_GUIDANCE:g} (1 = no guidance; 3 to 7 is usual)")
    if shift is not None and not (math.isfinite(shift) and 0 < shift <= MAX_SHIFT):
        raise KinemaError(f"shift {shift}: use a number above 0 and at most {MAX_SHIFT:g} (1 = no shift)")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not isinstance(seed, int) and len(seeds) != prompts:
        raise KinemaError(f"{len(seeds)} seeds for {prompts} prompts; give one seed per prompt, or one seed")
    if any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2 ** 63 - prompts for x in seeds):
        raise KinemaError(f"seed {seed}: use whole numbers from 0 to 2**63 - 1")


def load_pipeline(name_or_path: str | Path = "shapes", device: str = "auto", precision: str = "auto",
                  compile: bool = False, verify: bool = True) -> Pipeline:
    """Load a shipped model by name (see `kinema info`) or a model directory written by `kinema train`.
    `device` / `precision`: "auto" (kinema.runtime's policy) or explicit ("cuda", "cpu", "fp32", "bf16", ...).
    `verify`: check the files against the directory's manifest.json (sizes and SHA-256; a directory
    without one, from before kinema wrote them, is loaded as it is). Weights must be finite either way."""
    from kinema.text.encoders import check_widths, load_text_encoder

    runtime = resolve_runtime(device, precision)  # bad names fail here, before any file is read
    root = _model_dir(name_or_path)
    if verify and (root / MANIFEST).is_file() and (problem := verify_manifest(root)):
        raise KinemaError(f"model {root} is damaged: {problem}; re-export or reinstall it (--no-verify, or "
                          f"load_pipeline(verify=False), skips this check)")
    cfg = from_dict(ModelConfig, load_json(root / "config.json"), where=str(root / "config.json"))
    vae, dit = CausalVAE(cfg.vae), MMDiT(cfg.dit)
    for module, file in ((vae, "vae.safetensors"), (dit, "dit.safetensors")):
        state = load_weights(root / file)
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise KinemaError(f"{root / file} holds non-finite values (in {bad[0]}{' and more' if len(bad) > 1 else ''}); "
                              f"re-export the model from a checkpoint with finite weights")
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise KinemaError(f"{root / file} does not match config.json ({str(e).splitlines()[0]}); re-export the model") from None
    text_encoder = load_text_encoder(cfg.text)
    check_widths(text_encoder, cfg.dit)
    return Pipeline(cfg, vae, dit, text_encoder, runtime=runtime, compile=compile)


def describe(name_or_path: str | Path) -> str:
    root = _model_dir(name_or_path)
    cfg = from_dict(ModelConfig, load_json(root / "config.json"))
    lines = [f"model: {root}"]
    for file in sorted(root.iterdir()):
        lines.append(f"  {file.name:24s} {file.stat().st_size / 1e6:8.2f} MB")
    v, d = cfg.vae, cfg.dit
    lines.append(f"video: {cfg.frames} frames x {cfg.height}x{cfg.width}; frames must be 1 + {v.time_compression}k")
    lines.append(f"vae: {v.time_compression}x{v.space_compression}x{v.space_compression} compression, "
                 f"{v.latent_channels} latent channels")
    lines.append(f"dit: MM-DiT dim {d.dim}, {d.heads} heads, {d.dual_blocks} dual + {d.single_blocks} single blocks, "
                 f"patch {tuple(d.patch)}")
    lines.append(f"text encoder: {cfg.text.encoder} (max {cfg.text.max_tokens} tokens)")
    given = {"concat": "read as input channels", "tokens": "as reference tokens", "clamp": "clamped only, not trained on"}
    takes = ["a prompt", f"--image, --end-image ({given[d.frame_cond]})"]
    takes += [flag for flag, on in (("--camera", d.camera), ("--restore-detail", d.camera_render),
                                    ("--stride", d.frame_stride)) if on]
    lines.append(f"takes: {', '.join(takes)}")
    lines.append(f"sampling: timestep shift {cfg.timestep_shift:g}, guidance {cfg.guidance:g} by default "
                 f"(--shift, --guidance override)")
    lines.append(f"shipped models: {', '.join(shipped_models()) or 'none'}")
    return "\n".join(lines)
