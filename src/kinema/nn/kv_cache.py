"""A key-value cache for frame-causal denoisers (diffusion forcing, SPEC §7): the keys and values of
clean context frames, computed once and read by every denoising step of the frames after them.

Under frame-causal attention (every block's pattern "causal"; text tokens see only text) a token
never sees a later frame, so the context frames' keys and values in every block do not depend on
the frames being generated: a rollout computes them once per chunk instead of once per step.

    cache = KVCache()
    model(context, zeros, cond, cache=cache)   # empty cache: records, block by block
    model(new, t, cond, cache=cache)           # filled cache: the new frames attend to
                                               # [text; cached context; themselves]

The model's self-attention entry points (kinema.nn.sequence_parallel.joint_attention and
self_attention) call `extend` with each block's keys and values in block order; the model opens the
cache around its forward (`MMDiT.forward(cache=)`), which also places the new frames' RoPE positions
after the context's and builds the masks over the longer key sequence.

Shapes: k, v [B, H, Lt + N, Dh] (text first, `text_len` tokens; 0 for a cross-attention DiT's
video self-attention); the cache keeps each call's video part [B, H, Nc, Dh].
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class KVCache:
    def __init__(self):
        self.entries: list[tuple[torch.Tensor, torch.Tensor]] = []  # per attention call, in block order
        self.frames = 0  # latent token frames held (0: empty, the next forward records)
        self._recording = False
        self._call = 0

    def clear(self) -> None:
        self.entries, self.frames = [], 0

    def extend(self, k: torch.Tensor, v: torch.Tensor, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Recording: keep the video part of k, v and return them as they are. Reading: return
        [text; cached video; new video] keys and values."""
        i, self._call = self._call, self._call + 1
        if self._recording:
            self.entries.append((k[:, :, text_len:], v[:, :, text_len:]))
            return k, v
        ck, cv = self.entries[i]
        return (torch.cat([k[:, :, :text_len], ck.to(k.dtype), k[:, :, text_len:]], dim=2),
                torch.cat([v[:, :, :text_len], cv.to(v.dtype), v[:, :, text_len:]], dim=2))


_ACTIVE: KVCache | None = None


@contextmanager
def open_cache(cache: KVCache, frames: int):
    """One forward over `frames` latent token frames with `cache`: records them if it is empty,
    reads it otherwise (the calls must come in the same block order as when it was recorded)."""
    global _ACTIVE
    cache._recording, cache._call = cache.frames == 0, 0
    before, _ACTIVE = _ACTIVE, cache
    try:
        yield
        if cache._recording:
            cache.frames = frames
        elif cache._call != len(cache.entries):
            raise RuntimeError(f"the cache holds {len(cache.entries)} attention calls and this forward made {cache._call}")
    finally:
        _ACTIVE, cache._recording = before, False


def extend(k: torch.Tensor, v: torch.Tensor, text_len: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Through the open cache, if any: the keys and values an attention call should use."""
    return (k, v) if _ACTIVE is None else _ACTIVE.extend(k, v, text_len)
