"""The decoder's carry head: each output frame takes detail from the frame before it, moved.

A camera moving over a scene shows in frame t most of what frame t - 1 showed, a pixel or two away.
The decoder draws every frame afresh from the latent, and a later latent frame codes four frames in
the numbers frame 0 has alone, so later frames come out blurrier (held-out photo clips: frame 0
24.6 dB, frames 1-16 22.0). The carry head moves the previous *output* frame and blends it in, as a
video codec moves what it has decoded. With motion "flow" its net estimates the move:

    flow_t, gate_t = net(y_t, o_{t-1})                     # y: the decoder's frames, o: the head's
    o_t = y_t + gate_t * (warp(o_{t-1}, flow_t) - y_t)     # o_0 = y_0

with motion "match" block matching gives it (`matched`) and the net the gate alone:

    m_t = matched(y_t, o_{t-1});  gate_t = net(y_t, o_{t-1}, m_t);  o_t = y_t + gate_t * (m_t - y_t)

    y, o:  [B, 3, T, H, W]        flow_t: [B, 2, H, W] in pixels, |flow| < MAX_SHIFT
    gate_t: [B, 1, H, W] in (0, 1) warp(o, f)(p) = o(p + f(p))  (bicubic, border pixels repeated)

It is causal (o_t sees y_0 .. y_t) and keeps frame 0 (an image: the T = 1 property) as the decoder
drew it. Each frame is a blend of the decoder's and a moved earlier output, so nothing grows along
the clip. Its last conv's weights start at zero and its gate bias at GATE_START, so the flow
starts at 0 and the gate at sigmoid(GATE_START) = 1/2 (a parameter: a checkpoint keeps its gate,
whatever this constant becomes). Not near 0: with the gate small the output is the decoder's, and
the loss's gradient on the flow, (o - x) d warp / d flow ~ (y - x) d warp / d flow, asks the moved
frame to make up the decoder's error instead of matching the frame. A head started at gate 0.018
learnt a flow that way that moved frame 0 into frame 1 at 16 dB where the best global shift gives
27 (docs/vae.md); block matching needs no learning to match. Its reach grows with every frame,
so it is never tiled: CausalVAE.decode runs it over whole frames, one after the other, in place
on the decoder's (streamed, tiled) output, which keeps decoding exact and flat in memory (one
frame of the head's activations at a time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_SHIFT = 4.0  # pixels a frame: a camera pan over the photo world moves content about 1-3
GATE_START = 0.0  # the gate's logit at the start
RADIUS = 4  # motion "match": integer moves up to this many pixels a frame, each way
BLOCK = 7  # motion "match": pixels a side of the blocks compared
TEMPERATURE = 0.01  # motion "match": the softmax's start (mean squared differences of [-1, 1] pixels)


def warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """frame [B, C, H, W] read at p + flow(p): flow [B, 2, H, W] in pixels, (x, y) channels."""
    b, _, h, w = frame.shape
    ys = torch.arange(h, device=frame.device, dtype=flow.dtype)
    xs = torch.arange(w, device=frame.device, dtype=flow.dtype)
    x = xs.view(1, 1, w) + flow[:, 0]  # [B, H, W] pixel columns to read
    y = ys.view(1, h, 1) + flow[:, 1]
    # grid_sample's normalised coordinates (align_corners=False): pixel i is at (2 i + 1) / n - 1
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    return F.grid_sample(frame, grid.to(frame.dtype), mode="bicubic", padding_mode="border", align_corners=False)


def matched(y: torch.Tensor, prev: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """prev moved onto y by block matching, [B, C, H, W] each -> [B, C, H, W]. Each integer move s
    in [-RADIUS, RADIUS]^2 reads prev at p + s (border pixels repeated); its cost at p is the mean
    squared difference between y and that moved prev over the BLOCK x BLOCK block around p; the
    result is the moved prevs averaged with weights softmax(-cost / temperature) over s, per pixel.
    Without gradients (decoding) the moves are taken one at a time with a running softmax, so memory
    is a few frames, not (2 RADIUS + 1)^2 of them; training stacks them (autograd keeps them anyway)."""
    r, (h, w) = RADIUS, y.shape[-2:]
    padded = F.pad(prev, (r, r, r, r), mode="replicate")
    shifts = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]

    def move(dy: int, dx: int) -> torch.Tensor:
        return padded[..., r + dy:r + dy + h, r + dx:r + dx + w]

    def cost(moved: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # [..., C, H, W] -> [..., H, W]
        c = (moved - target).pow_(2).mean(-3)
        return F.avg_pool2d(c, BLOCK, stride=1, padding=BLOCK // 2, count_include_pad=False)

    learns = torch.is_tensor(temperature) and temperature.requires_grad
    if not (torch.is_grad_enabled() and (prev.requires_grad or learns)):
        # a running softmax: the largest logit so far (top), the sum of exp(logit - top) and the
        # moves weighted by it (acc), each rescaled when top rises
        acc = move(*shifts[0]).clone()
        top = (-cost(acc, y) / temperature).unsqueeze(1)  # [B, 1, H, W]
        total = torch.ones_like(top)
        for dy, dx in shifts[1:]:
            moved = move(dy, dx)
            logit = (-cost(moved, y) / temperature).unsqueeze(1)
            new = torch.maximum(top, logit)
            old_scale, weight = torch.exp(top - new), torch.exp(logit - new)
            total = total * old_scale + weight
            acc = acc * old_scale + weight * moved
            top = new
        return acc / total
    moves = torch.stack([move(dy, dx) for dy, dx in shifts], dim=1)  # [B, S, C, H, W]
    with torch.no_grad():  # which move fits is a choice, not a path for gradients (and half the cost)
        costs = cost(moves, y.unsqueeze(1))  # [B, S, H, W]
    weight = torch.softmax(-costs / temperature, dim=1)  # (the temperature learns)
    return torch.einsum("bshw,bschw->bchw", weight, moves)


class CarryHead(nn.Module):
    """The carry head (above) with `channels` channels; its net reaches 8 pixels (dilations 1, 2, 4,
    1). motion "flow": the net estimates a flow and the previous output is warped by it; "match":
    the previous output is moved by block matching (`matched`, at a learnt temperature) and the
    net, which also sees the moved frame, gives the gate alone."""

    def __init__(self, channels: int, in_channels: int = 3, motion: str = "flow"):
        super().__init__()
        c, self.motion = channels, motion
        inputs, outputs = (2, 3) if motion == "flow" else (3, 1)  # flow: (y, prev) -> flow x, flow y, gate
        self.net = nn.Sequential(
            nn.Conv2d(inputs * in_channels, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=4, dilation=4), nn.SiLU(),
            nn.Conv2d(c, outputs, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        with torch.no_grad():
            self.net[-1].bias.zero_()
            self.net[-1].bias[-1] = GATE_START
        if motion == "match":
            self.log_temperature = nn.Parameter(torch.tensor(math.log(TEMPERATURE)))

    def step(self, y: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """One frame: y, the decoder's frame [B, 3, H, W]; prev, the head's output for the frame
        before -> the head's output for this frame. In float32 (grid_sample has no bf16 kernel on
        every device; one frame of a small net is cheap)."""
        with torch.autocast(y.device.type, enabled=False):
            y32, prev32 = y.float(), prev.float()
            if self.motion == "match":
                moved = matched(y32, prev32, self.log_temperature.exp())
                gate = torch.sigmoid(self.net(torch.cat([y32, prev32, moved], dim=1)))
            else:
                out = self.net(torch.cat([y32, prev32], dim=1))
                moved = warp(prev32, MAX_SHIFT * torch.tanh(out[:, :2]))
                gate = torch.sigmoid(out[:, 2:3])
            return (y32 + gate * (moved - y32)).to(y.dtype)

    def forward(self, y: torch.Tensor, prev: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
        """y: the decoder's frames [B, 3, T, H, W] -> the head's [B, 3, T, H, W]. `prev`: the head's
        last output frame [B, 3, H, W] when y continues a clip (None: y starts it, and its first frame
        is kept). `inplace`: write each frame over y (inference: no second clip-sized buffer)."""
        frames = []
        out = y if inplace else None
        for t in range(y.shape[2]):
            o = y[:, :, t] if prev is None else self.step(y[:, :, t], prev)
            if inplace:
                out[:, :, t] = o
                prev = out[:, :, t]
            else:
                frames.append(o)
                prev = o
        return out if inplace else torch.stack(frames, dim=2)
