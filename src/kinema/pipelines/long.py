"""Long video (SPEC §7): clips longer than the denoiser's window, from the one generation loop.

    ar   autoregressive chunks: each chunk, of the model's length F, continues from the last
         c = 1 + r (k - 1) frames of the video so far (k latent frames, `context`; r the VAE's
         time compression). They are encoded again as the start of a clip, so they are coded as
         the denoiser saw clip starts in training (the first latent frame codes one pixel frame),
         given to the chunk (clamped at every step), and the chunk's F - c new frames appended:
         F + n (F - c) frames in all.

    forcing  diffusion forcing (a denoiser trained with one noise level per latent frame and
         frame-causal attention, `frame_noise` and `attention: [causal]`): the first window is
         sampled as usual, then the video rolls forward `chunk` latent frames at a time, each
         denoised after the last W - chunk latent frames (W the model's window) held clean at
         time 0. The context's keys and values are computed once per chunk (kinema.nn.kv_cache)
         rather than at every step: the same velocities, fewer FLOPs.

    keyframe  keyframes, then interpolation (a denoiser with the frame-stride condition,
         `frame_stride`, trained at several strides, and given frames): one clip of the model's F
         frames at stride s spans 1 + (F - 1) s real frames; then s clips at stride 1 fill it in,
         clip j given its start (the video so far's last frame; the first keyframe for j = 0) and
         its end (keyframe (j + 1)(F - 1) / s), so it interpolates between keyframes.

    coarse2fine  coarse-to-fine: the same coarse clip at stride s, blended linearly in time to
         every real frame, then s clips at stride 1 re-noised to `strength` and denoised
         (temporal super-resolution by video-to-video), clip j starting from the video so far's
         last frame.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np
import torch

from kinema.dit.transformer import Conditioning
from kinema.errors import KinemaError
from kinema.flow.guidance import cfg_combine
from kinema.flow.samplers import SAMPLERS
from kinema.flow.timesteps import sampling_schedule
from kinema.nn.kv_cache import KVCache
from kinema.pipelines.generate import initial_noise

ROUTES = ("ar", "forcing", "keyframe", "coarse2fine")
STRIDED = ("keyframe", "coarse2fine")


def chunk_plan(num_frames: int, model_frames: int, r: int, context: int) -> tuple[int, int]:
    """(context pixel frames c, number of chunks after the first) for `num_frames` frames; a clear
    error when the route cannot make that many."""
    if context < 1:
        raise KinemaError(f"--context {context}: give at least 1 latent frame of context")
    c = 1 + r * (context - 1)
    step = model_frames - c  # new frames per chunk
    if step < r:
        raise KinemaError(f"--context {context} ({c} frames) leaves no new latent frame in a chunk of "
                          f"{model_frames}; use --context {(model_frames - 1) // r} or less")
    if num_frames < model_frames or (num_frames - model_frames) % step:
        n = max(1, -(-(num_frames - model_frames) // step))
        raise KinemaError(f"--long ar with --context {context} makes {model_frames} + {step}n frames; "
                          f"--frames {num_frames} is not one: use {model_frames + (n - 1) * step} or {model_frames + n * step}")
    return c, (num_frames - model_frames) // step


def ar_chunks(pipe, prompt: str, num_frames: int, *, context: int = 1, seed: int = 0,
              image: np.ndarray | None = None, **sampling) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Yield (chunk latents [1, C, t, h, w], the video so far uint8 [T, H, W, 3]) chunk by chunk;
    chunk i is drawn from seed + i. `sampling`: steps, guidance, sampler, shift."""
    f, r = pipe.cfg.frames, pipe.cfg.vae.time_compression
    c, chunks = chunk_plan(num_frames, f, r, context)
    z = pipe.latents(prompt, num_frames=f, seed=seed, image=image, **sampling)
    video = pipe.frames(z)[0]
    yield z, video
    for i in range(1, chunks + 1):
        z = pipe.latents(prompt, num_frames=f, seed=seed + i, context=video[-c:], **sampling)
        video = np.concatenate([video, pipe.frames(z)[0][c:]])  # the context's frames are already there
        yield z, video


def forcing_plan(num_frames: int, model_frames: int, r: int, chunk: int) -> tuple[int, int]:
    """(the model's latent window W, the video's latent frames) for `--long forcing`; a clear error
    when the route cannot make `num_frames` frames."""
    window = 1 + (model_frames - 1) // r
    if not 1 <= chunk < window:
        raise KinemaError(f"--chunk {chunk}: give 1 to {window - 1} latent frames (the model's window is {window})")
    if num_frames < model_frames or (num_frames - 1) % r:
        raise KinemaError(f"--long forcing makes 1 + {r}k frames, at least {model_frames}; --frames {num_frames} is "
                          f"not one: use {max(model_frames, 1 + r * -(-(num_frames - 1) // r))}")
    return window, 1 + (num_frames - 1) // r


def forcing_velocity(model, cond: Conditioning, uncond: Conditioning, guidance: float, context: torch.Tensor,
                     cache: KVCache | None):
    """velocity_fn(x, t) for new latent frames x [B, C, k, h, w] after clean `context` [B, C, c, h, w]
    (time 0), guided on the text as `guided_velocity`. With `cache` the context runs once, here;
    without, every call runs [context; x] and keeps x's velocities (the reference the cache must equal)."""
    guided = guidance != 1.0
    both = Conditioning.cat([cond, uncond]) if guided else cond
    ctx = torch.cat([context, context]) if guided else context
    if cache is not None:
        cache.clear()
        model(ctx, torch.zeros(ctx.shape[0], device=ctx.device), both, cache=cache)

    def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        x = torch.cat([x, x]) if guided else x
        tt = torch.full(x.shape[:1] + x.shape[2:3], t, device=x.device)  # [B', k]
        if cache is not None:
            v = model(x, tt, both, cache=cache)
        else:
            zeros = tt.new_zeros(tt.shape[0], ctx.shape[2])
            v = model(torch.cat([ctx, x], dim=2), torch.cat([zeros, tt], dim=1), both)[:, :, ctx.shape[2]:]
        return cfg_combine(*v.chunk(2), guidance) if guided else v

    return velocity_fn


@torch.no_grad()
def rollout_latents(model, cond: Conditioning, uncond: Conditioning, first: torch.Tensor, seeds: list[int], *,
                    frames: int, chunk: int, steps: int, guidance: float, sampler: str, shift: float, runtime,
                    cache: bool = True) -> torch.Tensor:
    """first [B, C, W, h, w] (a window from the usual loop) -> [B, C, frames, h, w]: `chunk` latent
    frames at a time, each after the last W - chunk frames; chunk i's noise from seed + i."""
    z, window = first.float(), first.shape[2]
    ts = sampling_schedule(steps, shift)
    for i in range(1, 1 + -(-(frames - window) // chunk)):
        k = min(chunk, frames - z.shape[2])
        noise = initial_noise((z.shape[1], k, *z.shape[3:]), [s + i for s in seeds]).to(z.device)
        with runtime.autocast():
            v = forcing_velocity(model, cond, uncond, guidance, z[:, :, -(window - k):], KVCache() if cache else None)
            z = torch.cat([z, SAMPLERS[sampler](v, noise, ts).float()], dim=2)
    return z


def forcing_video(pipe, prompt: str, num_frames: int, *, chunk: int = 1, seed: int = 0, steps: int = 25,
                  guidance: float | None = None, sampler: str = "euler", shift: float | None = None,
                  cache: bool | None = None, image: np.ndarray | None = None) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] by diffusion forcing (see the module docstring). `cache`: None
    uses a KV cache where the model can (MMDiT.cache_problem); any model can roll forward without.
    `image`: the first window starts from it as image-to-video does (its first latent frame given)."""
    if cache is None:
        cache = pipe.dit.cache_problem() is None
    _, frames = forcing_plan(num_frames, pipe.cfg.frames, pipe.cfg.vae.time_compression, chunk)
    shift = pipe.cfg.timestep_shift if shift is None else shift
    guidance = pipe.cfg.guidance if guidance is None else guidance
    first = pipe.latents(prompt, num_frames=pipe.cfg.frames, seed=seed, steps=steps, guidance=guidance, sampler=sampler,
                         shift=shift, image=image)
    z = rollout_latents(pipe.dit, pipe.encode_prompts([prompt]), pipe.encode_prompts([""]), first, [seed], frames=frames,
                        chunk=chunk, steps=steps, guidance=guidance, sampler=sampler, shift=shift, runtime=pipe.runtime,
                        cache=cache)
    return pipe.frames(z)[0]


def stride_plan(route: str, num_frames: int, model_frames: int, stride: int) -> int:
    """The coarse clip's real-frame step per fine clip, (F - 1) / stride, for the keyframe and
    coarse2fine routes; a clear error when they cannot make `num_frames` frames."""
    if not isinstance(stride, int) or stride < 2 or (model_frames - 1) % stride:
        divisors = [d for d in range(2, model_frames) if (model_frames - 1) % d == 0]
        raise KinemaError(f"--stride {stride}: --long {route} needs a stride of 2 or more that divides "
                          f"{model_frames - 1} (the model's frames less one): {', '.join(map(str, divisors))}")
    want = 1 + (model_frames - 1) * stride
    if num_frames != want:
        raise KinemaError(f"--long {route} with --stride {stride} makes 1 + {model_frames - 1} x {stride} = {want} "
                          f"frames; use --frames {want} (or another --stride)")
    return (model_frames - 1) // stride


def strided_video(pipe, prompt: str, num_frames: int, route: str, *, stride: int = 4, strength: float = 0.5,
                  seed: int = 0, image: np.ndarray | None = None, **sampling) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] by the keyframe or coarse2fine route (module docstring). The
    coarse clip is drawn from `seed`, fine clip j from seed + 1 + j."""
    f = pipe.cfg.frames
    step = stride_plan(route, num_frames, f, stride)
    if not pipe.cfg.dit.frame_stride:
        raise KinemaError(f"--long {route} needs a model trained at several frame strides (model.dit.frame_stride, "
                          f"dit.strides)")
    coarse = pipe(prompt, num_frames=f, stride=stride, seed=seed, image=image, **sampling)  # [F, H, W, 3]
    if route == "coarse2fine":
        dense = blend_in_time(coarse, stride)  # [num_frames, H, W, 3]
    video = None
    for j in range(stride):
        start = coarse[0] if video is None else video[-1]
        if route == "keyframe":
            fine = pipe(prompt, num_frames=f, seed=seed + 1 + j, image=start, end_image=coarse[(j + 1) * step], **sampling)
        else:
            fine = pipe(prompt, num_frames=f, seed=seed + 1 + j, image=start, video=dense[j * (f - 1):(j + 1) * (f - 1) + 1],
                        strength=strength, **sampling)
        video = fine if video is None else np.concatenate([video, fine[1:]])  # (its first frame is the last one so far)
    return video


def blend_in_time(frames: np.ndarray, stride: int) -> np.ndarray:
    """uint8 [F, H, W, 3] taken every `stride` real frames -> [1 + (F - 1) stride, H, W, 3]: each real
    frame a linear blend of the two taken frames around it."""
    pos = np.arange(1 + (len(frames) - 1) * stride) / stride
    lo = np.minimum(pos.astype(int), len(frames) - 2)
    w = (pos - lo)[:, None, None, None]
    return np.round((1 - w) * frames[lo] + w * frames[lo + 1]).astype(np.uint8)


def check_long(route: str, num_frames: int, model_frames: int, r: int, context: int = 1, chunk: int = 1,
               stride: int = 4) -> None:
    """A clear error, before any work, when `route` is unknown or cannot make `num_frames` frames."""
    if route not in ROUTES:
        raise KinemaError(f"--long {route!r}: built routes are {', '.join(ROUTES)}")
    if route == "ar":
        chunk_plan(num_frames, model_frames, r, context)
    elif route == "forcing":
        forcing_plan(num_frames, model_frames, r, chunk)
    else:
        stride_plan(route, num_frames, model_frames, stride)


def generate_long(pipe, prompt: str, num_frames: int, route: str = "ar", *, context: int = 1, chunk: int = 1,
                  stride: int = 4, strength: float = 0.5, **kw) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] by `route` (ROUTES). `context`: ar's latent frames of context;
    `chunk`: forcing's new latent frames per chunk; `stride` (and coarse2fine's `strength`): the
    keyframe and coarse2fine routes' coarse stride."""
    check_long(route, num_frames, pipe.cfg.frames, pipe.cfg.vae.time_compression, context, chunk, stride)
    if route in STRIDED:
        return strided_video(pipe, prompt, num_frames, route, stride=stride, strength=strength, **kw)
    if route == "forcing":
        return forcing_video(pipe, prompt, num_frames, chunk=chunk, **kw)
    (_, video), = deque(ar_chunks(pipe, prompt, num_frames, context=context, **kw), maxlen=1)  # the video after the last chunk
    return video
