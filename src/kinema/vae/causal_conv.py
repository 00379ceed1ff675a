"""CausalConv3d: a 3D convolution whose output frame t sees only input frames <= t.

Time is padded with (k_t - 1) * d_t zero frames on the past side only; space is padded
symmetrically. With zero padding, a single frame (T=1) passes through the last temporal slice
of the kernel alone, so an image is encoded exactly like the first frame of a video (SPEC §1, Q11).

Streaming: given a `CausalCache`, the conv takes a chunk of frames, prepends the input frames its
next output window still needs from the previous chunk (zeros at the clip's start, as the whole
pass pads), and leaves the frames the following chunk will need in the cache. Chunk by chunk it
computes the same windows as the whole clip, so the outputs are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class CausalCache:
    """What a streamed encode or decode carries from one time chunk to the next: for each causal
    conv, the input frames [B, C, n, H, W] its next window still needs; for each temporal
    upsampler, whether it has passed the clip's first frame. Made by the caller (one per clip, per
    spatial tile) and passed down explicitly; the modules keep no state of their own."""

    def __init__(self):
        self.frames: dict[nn.Module, torch.Tensor | list[torch.Tensor | None]] = {}  # (a list: frame by frame, taps)
        self.started: set[nn.Module] = set()

    def nbytes(self) -> int:
        """The memory the held frames keep alive: each storage once (an upsampler's repeated frame
        is one tensor held twice; leading zero frames, None, hold nothing)."""
        held = [f for v in self.frames.values() for f in (v if isinstance(v, list) else [v]) if f is not None]
        return sum({f.untyped_storage().data_ptr(): f.untyped_storage().nbytes() for f in held}.values())


def conv3d(conv: nn.Conv3d, x: torch.Tensor, weight: torch.Tensor | None = None, bias: bool = True) -> torch.Tensor:
    """`conv(x)` (with `weight` in place of conv's own if given, `bias` False to leave it out), but
    straight to oneDNN for fp32 on the CPU. PyTorch's CPU heuristic sends an fp32 conv whose
    B*C*T*H is under 20480 to its vol2col kernel, measured 9x slower per frame at 128x128 with 32
    channels (70 ms against 8 ms), and a streamed chunk of a few frames is always that small. Under
    autocast the conv goes through PyTorch as usual (bf16 takes oneDNN anyway)."""
    weight = conv.weight if weight is None else weight
    b = conv.bias if bias else None
    dilation = conv.dilation if weight.shape[2] > 1 else (1, *conv.dilation[1:])
    if (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")):
        return torch.mkldnn_convolution(x, weight, b, conv.padding, conv.stride, dilation, conv.groups)
    return F.conv3d(x, weight, b, conv.stride, conv.padding, dilation, conv.groups)


# a streamed conv goes tap by tap (CausalConv3d.taps) from this many input values a frame (1 MB in
# fp32: 32 channels at 90x90); below, one call on the past and the chunk side by side is faster
# (the Shapes VAE streaming 257 frames at 64x64: 5.5 s against 6.8 s tap by tap)
TAPS_FROM = 2 ** 18


class CausalConv3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        dt, dh, dw = _triple(dilation)
        self.time_pad = (kt - 1) * dt
        self.space_pad = ((kh - 1) * dh // 2, (kw - 1) * dw // 2)
        # space is padded by the conv itself (no padded copy of the input); time by hand, past side only
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=_triple(stride), dilation=(dt, dh, dw),
                              padding=(0, *self.space_pad))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None, upsample: bool = False) -> torch.Tensor:
        """x: [B, C, T, H, W] -> [B, C', T', H', W']; with `cache`, x is the clip's next chunk.
        `upsample` (streaming only): x is to be upsampled 2x in space (nearest) first; Upsample
        streams so, and the cache keeps the frames as they came, a quarter of the size."""
        if cache is None or not self.time_pad and self.conv.stride[0] == 1:  # (a 2D conv has no past to carry)
            x = _nearest_2x(x, upsample)
            return conv3d(self.conv, F.pad(x, (0, 0, 0, 0, self.time_pad, 0)) if self.time_pad else x)  # (W, W, H, H, T past, T future)
        if self.conv.stride[0] == 1 and x[:1, :, :1].numel() * (4 if upsample else 1) >= TAPS_FROM:
            return self.taps(x, cache, upsample)
        # small frames (where three conv calls a frame cost more than the copy) or strided in time
        # (the encoder's downsampling): the cached past and the chunk side by side, whole windows
        x = _nearest_2x(x, upsample)
        past = cache.frames.get(self)
        if past is None:  # the clip's first chunk: the zero frames the whole pass pads with
            past = x.new_zeros(*x.shape[:2], self.time_pad, *x.shape[3:])
        x = torch.cat([past, x], dim=2)
        stride, extent = self.conv.stride[0], self.time_pad + 1
        windows = (x.shape[2] - extent) // stride + 1
        if windows < 1:
            raise ValueError(f"a streamed chunk gave a causal conv {x.shape[2]} frames, fewer than its kernel's "
                             f"{extent}; stream in chunks of whole latent frames")
        cache.frames[self] = x[:, :, stride * windows:].clone()  # where the next window starts (a copy frees x)
        return conv3d(self.conv, x)

    def taps(self, x: torch.Tensor, cache: CausalCache, upsample: bool) -> torch.Tensor:
        """A streamed chunk, frame by frame: output frame t = bias + sum over the kernel's temporal
        taps k of a one-frame conv of input frame t - time_pad + k d_t with the weight's slice k. No
        copy of the past and the chunk side by side, and the clip's leading zero frames (None in the
        cache) are skipped: they add nothing. The cache keeps the last time_pad input frames."""
        conv, (kt, dt) = self.conv, (self.conv.kernel_size[0], self.conv.dilation[0])
        frames = cache.frames.get(self, [None] * self.time_pad) + list(x.split(1, dim=2))
        weights = [conv.weight[:, :, k:k + 1] for k in range(kt)]  # [C', C, 1, kh, kw] per tap
        out = []

        def tap(f: torch.Tensor, k: int, bias: bool) -> torch.Tensor:
            return conv3d(conv, _nearest_2x(f, upsample), weights[k], bias)

        for t in range(len(frames) - self.time_pad):
            acc = tap(frames[t + self.time_pad], kt - 1, True)  # the newest tap, always a real frame; it brings the bias
            for k in range(kt - 1):
                if frames[t + k * dt] is not None:
                    acc.add_(tap(frames[t + k * dt], k, False))
            out.append(acc)
        # the frames kept: views of a longer chunk are copied, so the chunk itself can be freed
        cache.frames[self] = [f if f is None or f.untyped_storage().nbytes() == f.numel() * f.element_size() else f.clone()
                              for f in frames[len(frames) - self.time_pad:]]
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]


def _nearest_2x(x: torch.Tensor, on: bool) -> torch.Tensor:
    """x upsampled 2x in space (nearest) if `on`, else x itself."""
    if not on:
        return x
    return F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # [B, C, T, H, W] -> [B, C, T, 2H, 2W]

