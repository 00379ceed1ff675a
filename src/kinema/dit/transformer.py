"""The one denoiser over spacetime patches; DiTConfig picks its parts (presets: config.DIT_FAMILIES).

    latent [B, C, t, h, w] --patchify--> video tokens [B, Lv, D]
    text states [B, Lt, Dtext] --text adapter (+ token refiner)--> text tokens [B, Lt, Dt]
    vec = MLP(timestep) (+ MLP(pooled text))                     [B, D], or per token (PerToken)
    MM-DiT: dual-stream blocks, then single-stream blocks, over [text; video] (HunyuanVideo, SD3,
      Mochi's AsymmDiT, CogVideoX's expert AdaLN); each block's video tokens follow its pattern
      (full, spatial, temporal, window, causal) as a joint mask, and text padding is masked
    cross-attention DiT: cross blocks over the video tokens alone (Wan, Latte, Open-Sora): spatial
      and temporal attention are reshapes, text enters by cross-attention, AdaLN per block or shared
    positions: RoPE-3D on video tokens only (text tokens get angle 0 = no rotation), or absolute
      sin-cos / learned embeddings added to the video tokens (then no RoPE)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kinema.config import DiTConfig
from kinema.data.camera import FEATURES as CAMERA_FEATURES
from kinema.dit.blocks import CrossBlock, DualStreamBlock, MotionModule, Parts, SharedStreamBlock, SingleStreamBlock
from kinema.dit.packing import forward_packed
from kinema.dit.patchify import grid_positions, patch_grid, patchify, unpatchify
from kinema.dit.refiner import TokenRefiner
from kinema.dit.route import Route
from kinema.errors import KinemaError
from kinema.flow.frames import KnownFrames
from kinema.nn import sequence_parallel as sp
from kinema.nn.attention import key_padding_mask, pattern_mask, video_mask
from kinema.nn.embeddings import AttentionPool, LearnedPositions, MLPEmbedder, sincos_1d, sincos_positions, timestep_embedding
from kinema.nn.kv_cache import KVCache, open_cache
from kinema.nn.modulation import Modulation, ModulationOut, PerToken, Vec, modulate, project
from kinema.nn.norms import RMSNorm
from kinema.nn.rope import centred_positions, default_axes, ltx_rope_angles, mixed_rope_angles, rope_angles
from kinema.runtime import no_autocast
from kinema.text.encoders import TextStates


@dataclass
class Conditioning:
    """Everything the denoiser is conditioned on besides the noisy latent and the time: the text,
    and given latent frames (kinema.flow.frames: an image to animate, start and end frames)."""

    text: TextStates
    frames: KnownFrames | None = None
    camera: torch.Tensor | None = None  # [B, t, 4] per latent frame (kinema.data.camera), for a dit.camera model
    stride: torch.Tensor | None = None  # [B] frame strides, for a dit.frame_stride model (None: 1, the training rate)

    @property
    def held(self) -> KnownFrames | None:
        """The given frames that sampling and the loss hold clean: None when none are given, or when
        they only condition (a `frame_cond: tokens` denoiser's reference tokens)."""
        return self.frames if self.frames is not None and self.frames.clamped else None

    def index(self, idx) -> "Conditioning":
        return Conditioning(self.text.index(idx), None if self.frames is None else self.frames.index(idx),
                            *(None if x is None else x[idx] for x in (self.camera, self.stride)))

    def to(self, device) -> "Conditioning":
        return Conditioning(self.text.to(device), None if self.frames is None else self.frames.to(device),
                            *(None if x is None else x.to(device) for x in (self.camera, self.stride)))

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        t = [c.text for c in items]
        has = {k: [getattr(c, k) is not None for c in items] for k in ("frames", "camera", "stride")}
        for k, flags in has.items():
            if any(flags) and not all(flags):
                raise ValueError(f"Conditioning.cat: either every item has {k} or none has")
        return Conditioning(TextStates(torch.cat([x.tokens for x in t]), torch.cat([x.mask for x in t]),
                                       torch.cat([x.pooled for x in t])),
                            KnownFrames.cat([c.frames for c in items]) if all(has["frames"]) else None,
                            *(torch.cat([getattr(c, k) for c in items]) if all(has[k]) else None for k in ("camera", "stride")))


class FinalLayer(nn.Module):
    """AdaLN (shift, scale) then a zero-initialised projection back to patch values. `shared`:
    Wan's form, a learned (shift, scale) table added to the time vector itself, no projection.
    `kind` "cogvideox": an affine LayerNorm first, and AdaLN over an affine LayerNorm."""

    def __init__(self, dim: int, out_dim: int, shared: bool = False, cond_dim: int | None = None, kind: str = "adaln",
                 eps: float = 1e-6):
        super().__init__()
        affine = kind == "cogvideox"
        self.pre_norm = nn.LayerNorm(dim, eps=eps) if affine else nn.Identity()
        self.norm = nn.LayerNorm(dim, elementwise_affine=affine, eps=eps)
        self.mod = None if shared else Modulation(dim, 1, cond_dim, gated=False)
        self.table = nn.Parameter(torch.zeros(2, dim)) if shared else None
        self.linear = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, vec: Vec) -> torch.Tensor:
        if self.table is None:
            (mod,) = self.mod(vec)  # (shift, scale)
        else:
            v = vec.dense().float() if isinstance(vec, PerToken) else vec.float()[:, None]  # [B, Lv, D] or [B, 1, D]
            mod = ModulationOut(self.table[0] + v, self.table[1] + v, None)
        return self.linear(modulate(self.norm(self.pre_norm(x)), mod))


def sincos_table(cfg: DiTConfig, grid: tuple[int, int, int]) -> torch.Tensor:
    """Sin-cos positions of a token grid [Lv, D] on the CPU, for `cfg.positions` "sincos" or "sincos-2d"."""
    pos = grid_positions(grid)  # [Lv, 3] (t, h, w)
    if cfg.sincos_grid:  # SD3: the token grid is centred in a fixed square grid
        n = cfg.sincos_grid
        if max(grid[1:]) > n:
            raise ValueError(f"a token grid of {grid[1]}x{grid[2]} exceeds the sin-cos grid {n} (dit.sincos_grid)")
        pos = pos + torch.tensor([0.0, (n - grid[1]) // 2, (n - grid[2]) // 2])
    pos = pos * torch.tensor([1.0, cfg.sincos_scale, cfg.sincos_scale])
    if cfg.positions == "sincos-3d":  # CogVideoX: [time, a quarter of the width; space, three quarters]
        space = sincos_positions(pos, cfg.dim // 4 * 3, temporal=False)
        return torch.cat([sincos_1d(pos[:, 0] * cfg.sincos_time_scale, cfg.dim // 4), space], dim=-1)
    time_now = cfg.positions == "sincos" and not (cfg.sincos_time_at and cfg.cross_blocks)
    return sincos_positions(pos, cfg.dim, temporal=time_now)


def text_adapter(cfg: DiTConfig) -> nn.Sequential:
    """Text states [B, Lt, Dtext] -> [B, Lt, text width]: RMSNorm + Linear, Linear, or
    Linear-GELU-Linear (Wan)."""
    width = cfg.text_width or cfg.dim
    if cfg.text_adapter == "mlp":
        return nn.Sequential(nn.Linear(cfg.text_dim, width), nn.GELU(approximate="tanh"), nn.Linear(width, width))
    norm = [RMSNorm(cfg.text_dim)] if cfg.text_adapter == "rmsnorm" else []
    return nn.Sequential(*norm, nn.Linear(cfg.text_dim, width))


SHAPE_FEATURES = 32  # sin-cos features per grid axis for `shape_condition`


def zero_output(embedder: MLPEmbedder) -> MLPEmbedder:
    """`embedder` with its last layer zeroed: a new condition that adds nothing until trained."""
    nn.init.zeros_(embedder.net[-1].weight)
    nn.init.zeros_(embedder.net[-1].bias)
    return embedder


def shape_features(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(t, h, w) token grid -> [1, 3 * SHAPE_FEATURES]: a sin-cos embedding of each count."""
    counts = torch.tensor(grid, dtype=torch.float32, device=device)
    return timestep_embedding(counts, SHAPE_FEATURES, scale=1.0).flatten()[None]


class MMDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        pt, ph, pw = cfg.patch
        patch_dim = cfg.in_channels * pt * ph * pw
        self.rope_axes = tuple(cfg.rope_axes) if cfg.rope_axes else default_axes(cfg.head_dim)
        self._rope_cache: dict[tuple, torch.Tensor] = {}  # (grid, device) -> fixed RoPE angles; see rope_angles
        if cfg.rope_layout != "ltx" and sum(self.rope_axes) != cfg.head_dim:
            raise ValueError(f"rope_axes {self.rope_axes} must sum to the head dim {cfg.head_dim}")
        if cfg.rope_layout == "mochi":  # learned, one row per axis; starts as RoPE-3D's frequencies
            freqs = rope_angles(torch.eye(3), self.rope_axes, cfg.rope_theta)  # [3, Dh/2]
            self.rope_freqs = nn.Parameter(freqs[:, None].repeat(1, cfg.heads, 1))  # [3, H, Dh/2]
        self.patch_in = nn.Linear(patch_dim, cfg.dim)
        # frame_cond "concat": the input layer over 2C + 1 channels (noisy latent; given latents; mask),
        # as two Linears over disjoint columns, the given-frame part zero-initialised, so a model
        # built from a text-to-video one starts as that model
        self.frame_in = None
        if cfg.frame_cond == "concat":
            self.frame_in = nn.Linear((cfg.in_channels + 1) * pt * ph * pw, cfg.dim)
            nn.init.zeros_(self.frame_in.weight)
            nn.init.zeros_(self.frame_in.bias)
        # frame_cond "tokens": the given frames' patches join the text as extra keys and values
        self.ref_in = nn.Linear(patch_dim, cfg.text_width or cfg.dim) if cfg.frame_cond == "tokens" else None
        self.pos_embed = LearnedPositions(cfg.dim, cfg.max_grid) if cfg.positions == "learned" else None
        self.text_in = text_adapter(cfg)
        width = cfg.text_width or cfg.dim
        self.refiner = TokenRefiner(width, cfg.heads, cfg.text_dim, cfg.refiner_blocks) if cfg.refiner_blocks else None
        time_dim = cfg.time_dim or cfg.dim
        self.time_in = MLPEmbedder(cfg.time_freq_dim, time_dim)
        self.shape_in = MLPEmbedder(3 * SHAPE_FEATURES, time_dim) if cfg.shape_condition else None
        # camera and frame-stride conditions: zero-initialised outputs, so they add nothing until trained
        self.camera_in = zero_output(MLPEmbedder(CAMERA_FEATURES, time_dim)) if cfg.camera else None
        self.stride_in = zero_output(MLPEmbedder(SHAPE_FEATURES, time_dim)) if cfg.frame_stride else None
        self.pooled_in = None
        if cfg.pooled:
            self.pooled_in = (AttentionPool(cfg.text_dim, time_dim) if cfg.pooling == "attention"
                              else MLPEmbedder(cfg.pooled_dim or cfg.text_dim, time_dim))
        text_read_after = bool(cfg.single_blocks or cfg.cross_blocks)  # else the last dual block's text output is unused
        parts = Parts.of(cfg)
        self.dual = nn.ModuleList(DualStreamBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, width,
                                                  text_out=text_read_after or i < cfg.dual_blocks - 1, parts=parts)
                                  for i in range(cfg.dual_blocks))
        single = SharedStreamBlock if cfg.single_layout == "sequential" else SingleStreamBlock
        self.single = nn.ModuleList(single(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.expert_adaln, parts)
                                    for _ in range(cfg.single_blocks))
        # AnimateDiff: one motion module after each dual and single block (identity until trained)
        self.motion = nn.ModuleList(MotionModule(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, parts)
                                    for _ in range(cfg.dual_blocks + cfg.single_blocks if cfg.motion_modules else 0))
        shared = cfg.modulation == "shared"
        self.cross = nn.ModuleList(
            CrossBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.qk_norm_across_heads, cfg.cross_attn_norm, shared,
                       parts, cross=cross)
            for cross in cfg.cross_flags())
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim) if shared else None  # Wan: one AdaLN projection for all blocks
        if self.time_proj is not None:
            nn.init.zeros_(self.time_proj.weight)
            nn.init.zeros_(self.time_proj.bias)
        self.final = FinalLayer(cfg.dim, patch_dim, shared, time_dim, cfg.final_norm, cfg.norm_eps)

    def forward(self, x: torch.Tensor | list[torch.Tensor], t: torch.Tensor, cond: Conditioning,
                budget: int | None = None, cache: KVCache | None = None) -> torch.Tensor | list[torch.Tensor]:
        """x: [B, C, t, h, w] noisy latent, t: [B] in [0, 1], or [B, t] one time per latent frame
        (image conditioning, long video) -> velocity [B, C, t, h, w].
        x a list of [C, t_i, h_i, w_i] latents: packed into rows of `budget` tokens (forward_packed),
        through forward so that DDP and FSDP wrappers see the call.
        `cache` (a frame-causal model, kinema.nn.kv_cache): an empty one records this forward's
        keys and values (the context frames); a filled one puts x's frames after the cached ones."""
        if isinstance(x, (list, tuple)):
            if budget is None:
                raise ValueError("a list of latents is packed: give the token budget of a row (budget=)")
            if (cond.frames is not None or self.frame_in is not None or self.motion or self.camera_in is not None
                    or self.stride_in is not None):
                raise KinemaError("given frames (frame conditioning), motion modules, camera and frame-stride "
                                  "conditions are not packed yet; leave dit.pack_tokens unset")
            return forward_packed(self, list(x), t, cond, budget)
        grid = patch_grid(tuple(x.shape[2:]), self.cfg.patch)
        past = 0 if cache is None else self.check_cache(cache, x.shape[0])  # token frames before x's
        img = self.video_tokens(x, grid)  # [B, Lv, D]
        if self.frame_in is not None:  # [given latents (0 elsewhere); mask], [B, C + 1, t, h, w]; none given: zeros
            given = (cond.frames.channels(self.cfg.hold_given) if cond.frames is not None
                     else x.new_zeros(x.shape[0], x.shape[1] + 1, *x.shape[2:]))
            img = img + self.frame_in(patchify(given.to(x), self.cfg.patch))
        txt = self.text_tokens(cond.text, t)  # [B, Lt, Dt]
        text_valid = cond.text.mask
        if self.ref_in is not None and cond.frames is not None:  # [text; reference tokens]
            ref, ref_valid = self.reference_tokens(cond.frames, grid)
            txt, text_valid = torch.cat([txt, ref.to(txt.dtype)], dim=1), torch.cat([text_valid, ref_valid], dim=1)
        vec, txt_vec = self.conditioning_vectors(t, cond.text, grid, cond.camera, cond.stride)
        angles = None  # [(H,) Lv, Dh/2], after `past` frames'
        if self.cfg.positions == "rope":
            angles = self.rope_angles((past + grid[0], *grid[1:]), x.device)[..., past * grid[1] * grid[2]:, :]
        route = self.dense_route(grid, text_valid, past)
        with nullcontext() if cache is None else open_cache(cache, grid[0]):
            out = self.run(img, txt, vec, txt_vec, angles, route)
        return unpatchify(out, self.cfg.patch, grid).float()

    def check_cache(self, cache: KVCache, batch: int) -> int:
        """The cached token frames, after checking that this model can use a KV cache (cache_problem)."""
        problem = self.cache_problem()
        if problem:
            raise KinemaError(problem)
        if cache.entries and cache.entries[0][0].shape[0] != batch:
            raise KinemaError(f"the KV cache was recorded for a batch of {cache.entries[0][0].shape[0]}, not {batch}; "
                              "record it with the same batch (classifier-free guidance doubles it)")
        return cache.frames

    def cache_problem(self) -> str | None:
        """Why this model cannot use a KV cache, or None. It needs every block frame-causal, fixed
        RoPE positions, nothing that reads the whole clip, and text that does not change with the
        time. MM-DiT's text stream is modulated by the time (of the noisiest frame), so the
        context's keys would change with every step of the new frames: the cache is for
        cross-attention denoisers, which CausVid and Self-Forcing build on (Wan)."""
        cfg = self.cfg
        if self.dual or self.single or self.refiner is not None:
            return ("a KV cache needs a cross-attention denoiser without a token refiner (e.g. --arch wan with "
                    "dit.attention: [causal]); MM-DiT's text stream changes with the time")
        if set(cfg.block_patterns()) != {"causal"}:
            return (f"a KV cache needs frame-causal attention in every block; this model's are "
                    f"{sorted(set(cfg.block_patterns()))} (set dit.attention: [causal])")
        if (cfg.positions != "rope" or cfg.rope_layout == "mochi" or self.motion or cfg.shape_condition or cfg.camera
                or cfg.frame_stride or cfg.hold_given or sp.group()):
            return ("a KV cache needs fixed RoPE positions (rope_layout per_head or ltx) and no motion modules, "
                    "clip-shape, camera, frame-stride conditioning or held given frames, or sequence parallelism")
        return None

    def run(self, img: torch.Tensor, txt: torch.Tensor, vec: Vec, txt_vec: Vec, angles: torch.Tensor | None,
            route: Route) -> torch.Tensor:
        """The blocks and the final layer: video tokens [B, Lv, D] -> patch values [B, Lv, C*pt*ph*pw].
        Under sequence parallelism each process runs its share of the video tokens and the outputs
        are gathered (MM-DiT's text tokens stay whole: kinema.nn.sequence_parallel.joint_attention)."""
        split = sp.group() is not None
        if split and self.motion:
            raise KinemaError("motion modules under sequence parallelism are not built yet; use parallel: ddp or fsdp")
        if split:
            img = sp.local_tokens(img)
            if isinstance(vec, PerToken):  # per-frame times, packed samples: this process's tokens'
                vec = PerToken(vec.values, sp.local_tokens(vec.index))
            angles = sp.local_tokens(angles, dim=-2) if angles is not None else None
            if route.time_positions is not None:
                route.time_positions = sp.local_tokens(route.time_positions, dim=-2)
            if route.text_mask is not None and route.text_mask.shape[-2] > 1:  # packed: this process's query rows
                route.text_mask = sp.local_tokens(route.text_mask, dim=-2)
        out = self.final(self.blocks(img, txt, vec, txt_vec, angles, route), vec)
        return sp.gather_tokens(out) if split else out

    def video_tokens(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, C, t, h, w] -> [B, Lv, D], with absolute positions added where the model has them."""
        img = self.patch_in(patchify(x, self.cfg.patch))
        if self.cfg.positions != "rope":
            img = img + self.absolute_positions(grid).to(img)
        return img

    def reference_tokens(self, frames: KnownFrames, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """frame_cond "tokens": the given frames' clean latents -> reference tokens [B, Lr, Dt] (patch
        embedding with 3D sin-cos positions, since the text stream has no RoPE) and their validity
        [B, Lr]: the token frames given in any sample of the batch, masked where a sample lacks them."""
        t, h, w = grid
        tokens = self.ref_in(patchify(frames.latents.to(self.ref_in.weight.dtype), self.cfg.patch))  # [B, Lv, Dt]
        tokens = tokens + sincos_positions(grid_positions(grid), tokens.shape[-1]).to(tokens)
        given = frames.known.unflatten(1, (t, self.cfg.patch[0])).any(-1)  # [B, T] per token frame
        keep = given.any(0).repeat_interleave(h * w)  # [Lv], time-major
        return tokens[:, keep], given.repeat_interleave(h * w, dim=1)[:, keep]

    def text_tokens(self, text: TextStates, t: torch.Tensor) -> torch.Tensor:
        """Text states [B, Lt, Dtext] -> the blocks' text tokens [B, Lt, Dt] (adapter, then refiner)."""
        txt = self.text_in(text.tokens.to(self.patch_in.weight.dtype))
        if self.refiner is not None:
            txt = self.refiner(txt, text.tokens, text.mask, t if t.dim() == 1 else t.amax(1))
        return txt

    def blocks(self, img: torch.Tensor, txt: torch.Tensor, vec: Vec, txt_vec: Vec, angles: torch.Tensor | None,
               route: Route) -> torch.Tensor:
        """Every block over the video tokens img [B, Lv, D] and text tokens txt [B, Lt, Dt]; vec
        [B, D] or a PerToken over the video tokens, txt_vec [B, D] or over the text tokens; angles: the video
        tokens' RoPE angles [..., Lv, Dh/2] or None -> video tokens [B, Lv, D]."""
        # The residual streams are fp32 from the first block on, under any autocast: each block adds
        # its branch (bf16 matmuls and attention there) to an fp32 sum, as the AdaLN gates are fp32.
        img, txt = img.float(), txt.float()
        lt = txt.shape[1]
        rope = None  # for MM-DiT: [..., L, Dh/2], the text unrotated (angle 0)
        if angles is not None:
            rope = torch.cat([angles.new_zeros(*angles.shape[:-2], lt, angles.shape[-1]), angles], dim=-2)
        patterns = iter(self.cfg.block_patterns())
        motion = iter(self.motion)
        if self.dual or self.single:  # MM-DiT: joint attention over [text; video]
            for block in self.dual:
                img, txt = block(img, txt, vec, rope, route.joint[next(patterns)], txt_vec)
                if self.motion:
                    img = next(motion)(img, vec, route.grid)
            if self.single:  # (an AsymmDiT has none: its text stream is narrower than the video's)
                h = torch.cat([txt, img], dim=1)  # [B, L, D]
                joint_vec = PerToken.cat(PerToken.of(txt_vec, lt), vec) if isinstance(vec, PerToken) else vec
                for block in self.single:
                    h = block(h, vec if self.cfg.expert_adaln else joint_vec, rope, route.joint[next(patterns)], lt, txt_vec)
                    if self.motion:
                        h = torch.cat([h[:, :lt], next(motion)(h[:, lt:], vec, route.grid)], dim=1)
                img = h[:, lt:]
        if self.cross:  # cross-attention DiT: video self-attention in its layout, text by cross-attention
            mod_in = vec  # Wan: one projection of the time vector for every block, [B, 6D] (or per token)
            if self.time_proj is not None:
                mod_in = project(vec, lambda v: self.time_proj(F.silu(v)), dense=False)
            for i, block in enumerate(self.cross):
                if i and i == self.cfg.sincos_time_at and route.time_positions is not None:
                    img = img + route.time_positions.to(img)  # Latte: time positions after the first spatial block
                layout, mask = route.video[next(patterns)]
                img = block(img, txt, mod_in, angles, mask, route.text_mask, layout=layout, grid=route.grid)
        return img

    def dense_route(self, grid: tuple[int, int, int], text_valid: torch.Tensor, past: int = 0) -> Route:
        """How attention runs over a batch of one grid: MM-DiT's joint masks, each cross block's
        layout (spatial and temporal are reshapes) or mask, the text padding mask. `past`: the keys
        also hold that many earlier token frames (a KV cache's)."""
        route = Route(grid=grid)
        if self.dual or self.single:
            route.joint = self.attention_masks(grid, text_valid, past)
        device = text_valid.device
        for p in self.cfg.block_patterns()[self.cfg.dual_blocks + self.cfg.single_blocks:]:
            route.video[p] = (p, None) if p in ("spatial", "temporal") else ("full", video_mask(p, grid, self.cfg.window, device, past))
        if self.cfg.cross_attn_mask:
            route.text_mask = key_padding_mask(text_valid)
        if self.latte_time_positions and grid[0] > 1:  # (as Latte: none for one frame)
            route.time_positions = sincos_positions(grid_positions(grid), self.cfg.dim, space=False)
        return route

    @property
    def latte_time_positions(self) -> bool:
        return bool(self.cross) and self.cfg.sincos_time_at > 0 and self.cfg.positions == "sincos"

    def rope_angles(self, grid: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """RoPE angles of the video tokens on `device`: [Lv, Dh/2], the same for every head
        ("per_head", computed in float64 on the CPU: MPS has none), or [H, Lv, Dh/2] ("ltx": its
        frequencies run across the whole width, so each head gets its own slice; float32 as LTX
        computes them). "mochi": [H, Lv, Dh/2] from the learned frequencies, on their device,
        differentiable, computed every call.

        The fixed layouts depend on the grid alone, so each (grid, device) is computed once and
        kept (a few at a time): computing them on the host every forward and copying them over
        cost 55 ms of a 130 ms HunyuanVideo forward on an H100 (7488 tokens), with the GPU idle."""
        if self.cfg.rope_layout == "mochi":
            with no_autocast(self.rope_freqs.device):
                return mixed_rope_angles(centred_positions(grid), self.rope_freqs).to(device)
        key = (tuple(grid), torch.device(device))
        if key not in self._rope_cache:
            pos = grid_positions(grid) * torch.tensor(self.cfg.rope_scale)  # [Lv, 3] (t, h, w), fp32
            if self.cfg.rope_layout == "per_head":
                angles = rope_angles(pos, self.rope_axes, self.cfg.rope_theta)
            else:
                angles = ltx_rope_angles(pos, self.cfg.dim, self.cfg.rope_theta)  # [Lv, D/2]
                angles = angles.unflatten(-1, (self.cfg.heads, -1)).transpose(0, 1).contiguous()
            if len(self._rope_cache) >= 8:  # training on many clip sizes: keep the memory bounded
                self._rope_cache.clear()
            self._rope_cache[key] = angles.to(device)
        return self._rope_cache[key]

    def absolute_positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The video tokens' absolute position embeddings [Lv, D] ("sincos", "sincos-2d", "learned")."""
        if self.pos_embed is not None:
            return self.pos_embed(grid_positions(grid, self.pos_embed.tables[0].device))
        return sincos_table(self.cfg, grid)

    def conditioning_vectors(self, t: torch.Tensor, text: TextStates, grid: tuple[int, int, int],
                             camera: torch.Tensor | None = None, stride: torch.Tensor | None = None):
        """-> (video vec, text vec) driving AdaLN, computed in the runtime's autocast (its MLPs' matmuls
        in bf16 on a bf16 runtime); every Modulation then projects it in fp32. t [B]: both [B, D], the same tensor. t [B, frames]:
        video vec a PerToken over the Lv tokens, each from its frame's time (a temporal patch takes its
        noisiest frame), and text vec [B, D] from the clip's noisiest frame, so a clean conditioning frame
        (t = 0) beside noisy ones leaves the text stream as it is at the noisy time.
        `camera` [B, frames, 4] (a dit.camera model): each frame's camera embedding joins its frame's
        video vec (a temporal patch takes its last frame's); the text vec does not see it.
        `stride` [B] (a dit.frame_stride model; None: 1): joins both vecs, as the clip's shape does."""
        frames = grid[0] * self.cfg.patch[0]
        if camera is not None and self.camera_in is not None:
            if tuple(camera.shape) != (t.shape[0], frames, CAMERA_FEATURES):
                raise KinemaError(f"the camera condition is [B, latent frames, {CAMERA_FEATURES}] = "
                                  f"[{t.shape[0]}, {frames}, {CAMERA_FEATURES}]; got {list(camera.shape)}")
            if t.dim() == 1:  # per frame: all frames at t give the scalar-t vectors exactly
                t = t[:, None].expand(-1, frames)
        else:
            camera = None
        p = 0.0
        if isinstance(self.pooled_in, AttentionPool):
            p = self.pooled_in(text.tokens, text.mask)  # [B, D]
        elif self.pooled_in is not None:
            p = self.pooled_in(text.pooled)  # [B, D]
        if self.shape_in is not None:  # the same for every sample of the batch: [1, D]
            p = p + self.shape_in(shape_features(grid, t.device))
        if self.stride_in is not None:  # [B, D]
            s = torch.ones(t.shape[0], device=t.device) if stride is None else stride.to(t.device, torch.float32)
            if s.shape != t.shape[:1]:  # (values: the pipeline checks them; no device sync here)
                raise KinemaError(f"the frame stride is one number per sample, [{t.shape[0]}]; got {list(s.shape)}")
            p = p + self.stride_in(timestep_embedding(torch.log2(s), SHAPE_FEATURES, scale=1.0))
        if t.dim() == 1:
            vec = self.time_in(timestep_embedding(t, self.cfg.time_freq_dim)) + p
            return vec, vec
        b, frames = t.shape
        if frames != grid[0] * self.cfg.patch[0]:
            raise ValueError(f"per-frame t has {frames} frames; the latent has {grid[0] * self.cfg.patch[0]}")
        t_tok = t.unflatten(1, (grid[0], self.cfg.patch[0])).amax(-1)  # [B, T] per token frame
        per_frame = self.time_in(timestep_embedding(t_tok.flatten(), self.cfg.time_freq_dim)).view(b, grid[0], -1)  # [B, T, D]
        per_frame = per_frame + (p[:, None] if torch.is_tensor(p) else p)
        if camera is not None:
            per_frame = per_frame + self.camera_in(camera.unflatten(1, (grid[0], self.cfg.patch[0]))[:, :, -1].to(per_frame))
        frame_of_token = torch.arange(grid[0] * grid[1] * grid[2], device=t.device) // (grid[1] * grid[2])  # time-major
        index = torch.arange(b, device=t.device)[:, None] * grid[0] + frame_of_token  # [B, Lv]
        vec = PerToken(per_frame.flatten(0, 1), index)
        return vec, self.time_in(timestep_embedding(t.amax(1), self.cfg.time_freq_dim)) + p

    def attention_masks(self, grid: tuple[int, int, int], text_valid: torch.Tensor, past: int = 0) -> dict[str, torch.Tensor]:
        """One joint [text; video] mask per pattern the blocks use: "full" is the key-padding mask
        [B, 1, 1, L]; the others are [B, 1, L, L] (kinema.nn.attention.pattern_mask), or
        [B, 1, L, L + past * h w] after `past` cached token frames."""
        masks = {}
        for p in set(self.cfg.block_patterns()[:self.cfg.dual_blocks + self.cfg.single_blocks]):
            if p == "full" and not past:
                valid = torch.cat([text_valid, text_valid.new_ones(text_valid.shape[0], grid[0] * grid[1] * grid[2])], dim=1)
                masks[p] = key_padding_mask(valid)
            else:
                masks[p] = pattern_mask(p, grid, text_valid, self.cfg.window, past)
        return masks
