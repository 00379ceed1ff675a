"""Long video (SPEC §7): clips longer than the denoiser's window, from the one generation loop.

    ar   autoregressive chunks: each chunk, of the model's length F, continues from the last
         c = 1 + r (k - 1) frames of the video so far (k latent frames, `context`; r the VAE's
         time compression). They are encoded again as the start of a clip, so they are coded as
         the denoiser saw clip starts in training (the first latent frame codes one pixel frame),
         given to the chunk (clamped at every step), and the chunk's F - c new frames appended:
         F + n (F - c) frames in all.

The other routes of the issue (keyframes then interpolation, coarse-to-fine, diffusion forcing)
are not built yet.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np
import torch

from kinema.errors import KinemaError

ROUTES = ("ar",)


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


def generate_long(pipe, prompt: str, num_frames: int, route: str = "ar", **kw) -> np.ndarray:
    """uint8 [num_frames, H, W, 3] by `route` (ROUTES)."""
    if route not in ROUTES:
        raise KinemaError(f"--long {route!r}: built routes are {', '.join(ROUTES)}")
    (_, video), = deque(ar_chunks(pipe, prompt, num_frames, **kw), maxlen=1)  # the video after the last chunk
    return video
