"""Given latent frames (SPEC §6, §7): an image to animate, start and end frames, the context of
the next chunk of a long video. One object carries them through training and sampling:

    latents [B, C, t, h, w]   clean (normalised) latents; only the known frames are read
    known   [B, t] bool       which latent frames are given

A given frame is clamped: the noisy latent holds its clean value there, its time is 0 (the
denoiser takes one time per latent frame), its velocity is 0, and the loss leaves it out. So the
sampler carries it through unchanged, bit for bit. A denoiser with `frame_cond: concat` also reads
the given latents and the mask as extra input channels (kinema.dit.transformer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class KnownFrames:
    latents: torch.Tensor  # [B, C, t, h, w]
    known: torch.Tensor  # [B, t] bool
    # False (a `frame_cond: tokens` denoiser): the frames only condition, as reference tokens; the
    # sampler and the loss treat every frame as generated
    clamped: bool = True
    # [B, C, t, h, w] or None: what `concat` conditioning shows on the generated frames instead of
    # zeros (a `dit.camera_render` model's: the given image as the camera sees it on each frame)
    guide: torch.Tensor | None = None

    def __post_init__(self):
        b, _, t = self.latents.shape[:3]
        if self.known.shape != (b, t) or self.known.dtype != torch.bool:
            raise ValueError(f"known must be bool [B, t] = [{b}, {t}], got {self.known.dtype} {tuple(self.known.shape)}")
        if self.guide is not None and self.guide.shape != self.latents.shape:
            raise ValueError(f"guide must be shaped as latents {tuple(self.latents.shape)}, got {tuple(self.guide.shape)}")

    @staticmethod
    def at(latents: torch.Tensor, frames: list[int]) -> "KnownFrames":
        """The latent frames `frames` (negative counts from the end) of latents [B, C, t, h, w] given."""
        known = torch.zeros(latents.shape[0], latents.shape[2], dtype=torch.bool, device=latents.device)
        known[:, frames] = True
        return KnownFrames(latents, known)

    def mask(self, like: torch.Tensor) -> torch.Tensor:
        """known as [B, 1, t, 1, 1], broadcasting over a latent like `like`."""
        return self.known[:, None, :, None, None].to(like.device)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, t, h, w] with the known frames replaced by their clean latents."""
        return torch.where(self.mask(x), self.latents.to(x), x)

    def times(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] (or already one per frame, [B, t_latent]) -> [B, t_latent]: t on generated frames, 0 on known ones."""
        per_frame = t if t.dim() == 2 else t[:, None]
        return torch.where(self.known.to(t.device), torch.zeros((), device=t.device, dtype=t.dtype), per_frame)

    def channels(self, hold: bool = False) -> torch.Tensor:
        """What `concat` conditioning adds to the input: [given latents (0 elsewhere); mask], [B, C + 1, t, h, w].
        `hold` (SVD, which repeats its image latent on every frame): a generated frame carries the
        latest given frame before it instead of zeros (0 before the first); with a `guide`, a
        generated frame carries its guide; the mask still marks the given frames alone."""
        m = self.mask(self.latents).to(self.latents.dtype)
        given = self.latents * m
        if self.guide is not None:
            given = torch.where(m.bool(), self.latents, self.guide.to(self.latents))
        elif hold:
            t = self.known.shape[1]
            frame = torch.arange(t, device=self.known.device).expand_as(self.known)
            latest = torch.where(self.known, frame, -1).cummax(dim=1).values  # [B, t], -1: none yet
            held = self.latents.gather(2, latest.clamp(min=0)[:, None, :, None, None].expand_as(self.latents))
            given = held * (latest >= 0)[:, None, :, None, None].to(held.dtype)
        return torch.cat([given, m.expand(-1, 1, -1, *self.latents.shape[3:])], dim=1)

    def render_guide(self, render: torch.Tensor) -> torch.Tensor:
        """render [B, C, t, h, w], the first frame as each frame's camera sees it -> the guide
        (dit.camera_render): the render on the generated frames of clips whose first frame is
        given, 0 elsewhere (without a given picture there is nothing to render)."""
        shown = (self.known[:, :1] & ~self.known)[:, None, :, None, None]  # [B, 1, t, 1, 1]
        return render * shown.to(render.device, render.dtype)

    def index(self, idx) -> "KnownFrames":
        return KnownFrames(self.latents[idx], self.known[idx], self.clamped, None if self.guide is None else self.guide[idx])

    def to(self, device) -> "KnownFrames":
        return KnownFrames(self.latents.to(device), self.known.to(device), self.clamped,
                           None if self.guide is None else self.guide.to(device))

    @staticmethod
    def cat(items: list["KnownFrames"]) -> "KnownFrames":
        guided = [k.guide is not None for k in items]
        if any(guided) and not all(guided):
            raise ValueError("KnownFrames.cat: either every item has a guide or none has")
        return KnownFrames(torch.cat([k.latents for k in items]), torch.cat([k.known for k in items]), items[0].clamped,
                           torch.cat([k.guide for k in items]) if all(guided) else None)


def generated_mse(v: torch.Tensor, target: torch.Tensor, frames: KnownFrames | None) -> torch.Tensor:
    """The flow loss over generated frames only: the mean squared error over every element of the
    frames that are not given (all of them when frames is None or not clamped)."""
    if frames is None or not frames.clamped:
        return F.mse_loss(v.float(), target.float())
    err = (v.float() - target.float()).pow(2)
    weight = (~frames.mask(err)).to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp(min=1)
