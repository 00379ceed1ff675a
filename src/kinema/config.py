"""Typed configs and the preset table.

Every model part is a dataclass; a preset is a named instance. YAML recipes (configs/*.yaml)
are plain dicts turned into these dataclasses by `from_dict`, which rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kinema.errors import KinemaError, at_least, require


@dataclass
class VAEConfig:
    """3D causal VAE. Compression is derived: time is the product of the temporal factors, space
    patch * 2**(levels - 1)."""

    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one entry per resolution level
    temporal_down: tuple[bool, ...] = (True, True, False)  # one per downsampling (levels - 1): x2 in time or not
    # the time factor of each downsampling, if not 2 / 1: e.g. (2, 3, 1), Mochi's 6x; overrides temporal_down
    temporal_factors: tuple[int, ...] | None = None
    patch: int = 1  # space to channels at the input and back at the output (LTX: 4)
    # "conv": each downsampling is a strided causal conv; "dual" (Step-Video): plus a parameter-free
    # path that folds space (and time) into channels and averages them down to the new width,
    # summed (the upsampling mirrors it)
    downsample: str = "conv"
    num_res_blocks: int = 1
    # the temporal kernel of the convs at each resolution level (level 0: full resolution), None: 3
    # everywhere. 1 makes a level's convs 2D: a streamed decode then caches nothing at that level
    # (two input frames per conv otherwise, 17 MB each at 256x256 with 32 channels); the strided
    # downsampling convs keep 3. Time is still mixed at the levels below.
    time_kernel: tuple[int, ...] | None = None
    # a linear coder beside the encoder and decoder (kinema.vae.linear_path): each latent position
    # a linear map of its own patch of pixels, and back, added to the networks' outputs, which then
    # start at zero; the VAE stage sets it to PCA of training clips (vae.linear_init_clips)
    linear_path: bool = False
    # channels of the decoder's carry head (kinema.vae.carry): each output frame blends in the one
    # before it, moved (carry_motion); 0: none
    carry: int = 0
    # how the carry head moves the frame before: "flow" (a flow its net estimates) or "match" (block
    # matching, kinema.vae.carry.matched)
    carry_motion: str = "flow"
    # per-channel statistics of the latents over the training data, set after VAE training
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    def __post_init__(self):
        if any(f < 1 for f in self.factors()) or self.patch < 1:
            raise KinemaError("vae.temporal_factors and vae.patch must be at least 1")
        if self.time_kernel is not None and (len(self.time_kernel) != len(self.channel_mult)
                                             or any(k < 1 for k in self.time_kernel)):
            raise KinemaError(f"vae.time_kernel {tuple(self.time_kernel)}: one temporal kernel (>= 1) per level, "
                              f"{len(self.channel_mult)} levels as in channel_mult")
        if self.time_kernel is not None:
            # frames an upsampler repeats in time stay equal through 2D levels: some level at or
            # above the last temporal upsampling must mix time, or the decoder emits repeated frames
            last = max((i for i, f in enumerate(self.factors()) if f > 1), default=-1)
            if last >= 0 and all(self.time_kernel[j] == 1 for j in range(last + 1)):
                raise KinemaError(f"vae.time_kernel {tuple(self.time_kernel)}: levels 0-{last} are all 2D, but the decoder "
                                  f"repeats frames in time into level {last}, so its output frames would come in equal "
                                  f"runs; give one of them a temporal kernel > 1, or move the time factors down a level")
        if self.carry < 0:
            raise KinemaError(f"vae.carry {self.carry}: the carry head's channels, 0 for none")
        if self.carry_motion not in ("flow", "match"):
            raise KinemaError(f"vae.carry_motion {self.carry_motion!r}: use 'flow' or 'match'")
        if self.downsample not in ("conv", "dual"):
            raise KinemaError(f"vae.downsample {self.downsample!r}: use 'conv' or 'dual'")

    def kernel_t(self, level: int) -> int:
        """The temporal kernel of the convs at resolution `level` (0: full resolution)."""
        return self.time_kernel[level] if self.time_kernel else 3

    def factors(self) -> tuple[int, ...]:
        """The time factor of each downsampling (1: space only)."""
        return tuple(self.temporal_factors) if self.temporal_factors else tuple(2 if d else 1 for d in self.temporal_down)

    @property
    def time_compression(self) -> int:
        return math.prod(self.factors())

    @property
    def space_compression(self) -> int:
        return self.patch * 2 ** (len(self.channel_mult) - 1)

    def longest_clip(self, most: int = 17) -> int:
        """The most frames up to `most` that this VAE codes (1 + r k): 17 at 4x and 8x, 13 at Mochi's 6x."""
        r = self.time_compression
        return 1 + r * ((most - 1) // r)


POSITIONS = ("rope", "sincos", "sincos-2d", "sincos-3d", "learned")


@dataclass
class DiTConfig:
    """The one denoiser: `dual_blocks` MM-DiT dual-stream blocks, then `single_blocks` single-stream
    blocks, then `cross_blocks` cross-attention blocks (Wan / Latte: text enters by cross-attention).
    The presets (DIT_PRESETS) pick the families of the sources out of these parts."""

    in_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)  # (p_t, p_h, p_w)
    dim: int = 256
    heads: int = 4
    dual_blocks: int = 2
    single_blocks: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's token states
    qk_norm: bool = True
    qk_norm_eps: float = 1e-6  # LTX: 1e-5
    qk_norm_type: str = "rms"  # "rms" (RMSNorm) or "layer" (affine LayerNorm per head: CogVideoX)
    # the norm under each AdaLN: "layer" (weightless LayerNorm), "rms" (weightless RMSNorm: LTX,
    # Mochi) or "layer-affine" (CogVideoX); its epsilon, also the final layer's
    block_norm: str = "layer"
    norm_eps: float = 1e-6
    rope_axes: tuple[int, int, int] | None = None  # head-dim split for (t, h, w); None: derived
    rope_theta: float = 10000.0
    # "per_head": each head's dims split into (t, h, w) parts (rope_axes), frequencies theta^(-2i/d);
    # "ltx": LTX-Video's layout, frequencies theta^linspace(0, 1, D/6) * pi/2 interleaved over
    # (t, h, w) across the whole width, angle = frequency * (2 * position * rope_scale - 1);
    # "mochi": learned frequencies [3, H, Dh/2] mixing the axes in every pair (initialised to
    # "per_head"'s), over centred positions that span the same area whatever the grid
    rope_layout: str = "per_head"
    rope_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (t, h, w) positions are multiplied by this
    # how a token knows where it is: "rope" (RoPE-3D inside every attention), "sincos" (absolute
    # sin-cos added to the patch embeddings: 2D in space plus 1D in time; DiT, Latte, Open-Sora 1.0),
    # "sincos-2d" (space only: image models, SD3, PixArt), "sincos-3d" (CogVideoX: a quarter of the
    # width for time, three quarters for space, side by side) or "learned" (a table per axis, summed)
    positions: str = "rope"
    sincos_grid: int | None = None  # SD3's pos_embed_max_size: space positions of a centred crop of this square grid
    sincos_scale: float = 1.0  # space positions are multiplied by this (SD3: base size / sincos_grid)
    max_grid: tuple[int, int, int] = (16, 32, 32)  # the largest token grid "learned" positions cover
    # the video tokens' attention pattern of each block, repeated over the dual then the single
    # blocks (SPEC §3): full, spatial, temporal, window, causal. ("spatial", "temporal") is
    # factorized 2+1D (Latte); ("spatial", "temporal", "spatial", "full") adds a full block every
    # fourth (Open-Sora-Plan, CogVideoX-style hybrids); ("full", "temporal") alternates global and
    # temporal blocks (EasyAnimate's hybrid motion module)
    attention: tuple[str, ...] = ("full",)
    window: tuple[int, int, int] = (3, 5, 5)  # (t, h, w) box of the "window" pattern, in tokens
    # how text states enter: "rmsnorm" (RMSNorm + Linear, for LLM-style features), "linear", or
    # "mlp" (Linear, GELU, Linear: Wan / PixArt); refiner_blocks > 0 adds HunyuanVideo's token refiner
    text_adapter: str = "rmsnorm"
    refiner_blocks: int = 0
    pooled: bool = True  # add an MLP of the pooled text to the time vector (MM-DiT); Wan uses time alone
    pooled_dim: int | None = None  # width of the pooled text vector (HunyuanVideo: CLIP's); None: text_dim
    cross_blocks: int = 0
    # whether each cross block cross-attends to the text, repeated over the cross blocks like
    # `attention`; Latte's temporal blocks do not: (True, False) beside ("spatial", "temporal")
    cross_attention: tuple[bool, ...] = (True,)
    sincos_time_scale: float = 1.0  # "sincos-3d": time positions are multiplied by this
    # "sincos" positions: the temporal part is added before this cross block (Latte: 1, after the
    # first spatial block), the spatial part always at the input
    sincos_time_at: int = 0
    # "per_block": each block projects the time vector to its own AdaLN parameters; "shared": one
    # projection for the model, each block adds a learned table (Wan; cross blocks only)
    modulation: str = "per_block"
    qk_norm_across_heads: bool = False  # Wan normalises q and k over all heads at once
    cross_attn_norm: bool = True  # an affine LayerNorm before the cross-attention (Wan)
    cross_attn_mask: bool = True  # hide text padding from the cross-attention; Wan's released model sees it
    text_width: int | None = None  # AsymmDiT (Mochi): a text stream narrower than the video's; None: dim
    expert_adaln: bool = False  # CogVideoX: single-stream blocks modulate text and video tokens separately
    # Mochi's block parts (dual-stream and sequential single-stream blocks): a bias-free "swiglu" MLP instead of "gelu",
    # q, k, v without biases, and residual "norm-tanh" (x + tanh(gate) * RMSNorm(branch)) instead of
    # "gate" (x + gate * branch)
    mlp: str = "gelu"
    qkv_bias: bool = True
    residual: str = "gate"
    # the time vector: sin-cos features `time_freq_dim` wide, then an MLP to `time_dim` (None: the
    # model's width; CogVideoX: features as wide as the model, a narrower time vector)
    time_freq_dim: int = 256
    time_dim: int | None = None
    # single-stream blocks: "parallel" (HunyuanVideo / Flux: attention and MLP from one projection)
    # or "sequential" (CogVideoX: attention then MLP, one stream's weights over [text; video])
    single_layout: str = "parallel"
    # the final layer: "adaln" (weightless LayerNorm under AdaLN) or "cogvideox" (an affine
    # LayerNorm, then AdaLN over another affine LayerNorm)
    final_norm: str = "adaln"
    # add an embedding of the clip's shape, the token grid (frames, rows, columns), to the time vector:
    # size / length conditioning (SDXL, Open-Sora), so that a model trained on buckets knows which
    shape_condition: bool = False
    # where the pooled text vector comes from: "encoder" (the text encoder's pooled output, through
    # an MLP) or "attention" (Mochi: attention pooling over the text states, 8 heads)
    pooling: str = "encoder"
    # how given latent frames (an image to animate, start and end frames; kinema.flow.frames) enter:
    # "clamp" (the noisy latent holds their clean value, with time 0 there: LTX, HunyuanVideo-I2V;
    # no weights) or "concat" (clamped, and also read as C + 1 more input channels, the given
    # latents and a mask: 2C + 1 in all, SPEC §6, CogVideoX-I2V and Wan-I2V) or "tokens" (not
    # clamped: their patches, with sin-cos positions, join the text as extra keys and values, the
    # reference tokens of SPEC §6; the denoiser draws the given frames itself)
    frame_cond: str = "clamp"
    # frame_cond "concat" only: a generated frame's extra channels carry the latest given frame
    # before it, not zeros (SVD concatenates its image latent to every frame), so each token sees
    # the given picture at its own place; the mask channel still marks the given frames alone
    hold_given: bool = False
    # AnimateDiff: a motion module (dit/blocks.py: MotionModule, a zero-initialised temporal block
    # with its own time positions) after every dual and single block; with the image preset (sd3)
    # and dit.train_only "motion", a frozen text-to-image model learns motion
    motion_modules: bool = False
    # camera control (MotionCtrl's camera poses, for a camera over a photograph): the camera's
    # effect per latent frame, Conditioning.camera [B, t, 4] (kinema.data.camera: shift, log zoom,
    # roll against frame 0), through a zero-initialised MLP into each frame's time vector; a model
    # built from one without it starts as that model
    camera: bool = False
    # with camera and frame_cond "concat": a generated frame's extra channels carry the given image
    # as that frame's camera sees it (kinema.data.camera.warp, then the VAE), GEN3C's and
    # ViewCrafter's renders along the camera path; the denoiser corrects the render and fills in
    # what the given image did not show (the mask still marks the given frames alone)
    camera_render: bool = False
    # frame-rate conditioning: Conditioning.stride [B], the real frames between two of the clip's
    # frames (1: the training rate; 4: keyframes four frames apart), embedded like the clip's shape
    # into the time vector through a zero-initialised MLP; the long-video routes keyframe and
    # coarse2fine sample a coarse clip at a stride, then fill it in at stride 1
    frame_stride: bool = False

    def __post_init__(self):
        from kinema.nn.attention import PATTERNS

        at_least(self, 1, "dim", "heads", "in_channels", "text_dim")
        at_least(self, 0, "dual_blocks", "single_blocks", "cross_blocks", "refiner_blocks")
        require(self.dim % self.heads == 0, "heads", self.heads, f"must divide the width dim {self.dim}")
        require(self.dual_blocks + self.single_blocks + self.cross_blocks > 0, "blocks", 0,
                "set dual_blocks, single_blocks or cross_blocks above 0")
        require(len(self.patch) == 3 and min(self.patch) >= 1, "patch", self.patch, "give (t, h, w), each at least 1")

        bad = [p for p in self.attention if p not in PATTERNS]
        if bad or not self.attention:
            raise KinemaError(f"dit.attention {list(self.attention)}: each entry must be one of {', '.join(PATTERNS)}")
        if self.positions not in POSITIONS:
            raise KinemaError(f"dit.positions {self.positions!r}: use one of {', '.join(POSITIONS)}")
        if self.positions.startswith("sincos") and self.dim % 4:
            raise KinemaError(f"dit.positions {self.positions!r} needs a width divisible by 4, got dim {self.dim}")
        if not self.cross_attention or self.sincos_time_at > max(self.cross_blocks - 1, 0):
            raise KinemaError(f"dit.cross_attention needs an entry and dit.sincos_time_at ({self.sincos_time_at}) "
                              f"a cross block (0 to {max(self.cross_blocks - 1, 0)})")
        if self.rope_layout not in ("per_head", "ltx", "mochi"):
            raise KinemaError(f"dit.rope_layout {self.rope_layout!r}: use 'per_head', 'ltx' or 'mochi'")
        for name, value, allowed in (("mlp", self.mlp, ("gelu", "swiglu")), ("residual", self.residual, ("gate", "norm-tanh")),
                                     ("pooling", self.pooling, ("encoder", "attention")),
                                     ("qk_norm_type", self.qk_norm_type, ("rms", "layer")),
                                     ("single_layout", self.single_layout, ("parallel", "sequential")),
                                     ("final_norm", self.final_norm, ("adaln", "cogvideox")),
                                     ("frame_cond", self.frame_cond, ("clamp", "concat", "tokens"))):
            if value not in allowed:
                raise KinemaError(f"dit.{name} {value!r}: use {' or '.join(repr(a) for a in allowed)}")
        if self.hold_given and self.frame_cond != "concat":
            raise KinemaError(f"dit.hold_given repeats given frames in the concatenated channels, which "
                              f"dit.frame_cond {self.frame_cond!r} does not have; set frame_cond: concat or drop hold_given")
        if self.camera_render and not (self.camera and self.frame_cond == "concat" and not self.hold_given):
            raise KinemaError("dit.camera_render shows the camera's render of the given image in the concatenated "
                              "channels: it needs camera: true and frame_cond: concat, without hold_given")
        stream_parts = self.mlp != "gelu" or not self.qkv_bias or self.residual != "gate"
        if stream_parts and (self.cross_blocks or (self.single_blocks and self.single_layout == "parallel")):
            raise KinemaError("dit.mlp 'swiglu', dit.qkv_bias false and dit.residual 'norm-tanh' are built for "
                              "dual-stream and sequential single-stream blocks only; set cross_blocks to 0 and "
                              "single_layout 'sequential' (or single_blocks 0)")
        if self.block_norm not in ("layer", "rms", "layer-affine"):
            raise KinemaError(f"dit.block_norm {self.block_norm!r}: use 'layer', 'rms' or 'layer-affine'")
        if self.positions == "sincos-3d" and self.dim % 16:
            raise KinemaError(f"dit.positions 'sincos-3d' needs a width divisible by 16, got dim {self.dim}")
        if self.time_dim not in (None, self.dim) and (self.modulation == "shared" or self.refiner_blocks):
            raise KinemaError("dit.time_dim (a time vector narrower than the model) is not built for shared modulation "
                              "or the token refiner; leave it unset")
        if self.text_adapter not in ("rmsnorm", "linear", "mlp"):
            raise KinemaError(f"dit.text_adapter {self.text_adapter!r}: use 'rmsnorm', 'linear' or 'mlp'")
        if self.modulation not in ("per_block", "shared"):
            raise KinemaError(f"dit.modulation {self.modulation!r}: use 'per_block' or 'shared'")
        if self.modulation == "shared" and (self.dual_blocks or self.single_blocks):
            raise KinemaError("dit.modulation 'shared' (Wan) is for cross blocks only; set dual_blocks and single_blocks to 0")
        if self.text_width not in (None, self.dim) and (self.single_blocks or self.cross_blocks):
            raise KinemaError("dit.text_width (AsymmDiT) needs dual blocks only: single and cross blocks see text at the full width")
        if self.motion_modules and not (self.dual_blocks or self.single_blocks):
            raise KinemaError("dit.motion_modules go after dual and single blocks; this model has none")
        if self.dual_blocks + self.single_blocks + self.cross_blocks == 0:
            raise KinemaError("the denoiser needs at least one block (dual_blocks, single_blocks or cross_blocks)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def cross_flags(self) -> list[bool]:
        """Whether each cross block has a cross-attention to the text."""
        return [self.cross_attention[i % len(self.cross_attention)] for i in range(self.cross_blocks)]

    def block_patterns(self) -> list[str]:
        """The attention pattern of every block: dual blocks, then single, then cross blocks."""
        n = self.dual_blocks + self.single_blocks + self.cross_blocks
        return [self.attention[i % len(self.attention)] for i in range(n)]


@dataclass
class TextConfig:
    encoder: str = "minilm"  # "minilm" (shipped, offline) or a local path to a transformers model
    max_tokens: int = 24
    # the pooled vector from another encoder (a local CLIP text model, as HunyuanVideo and SD3
    # do), the token states from `encoder`; model.dit.pooled_dim is its width
    pooled_encoder: str | None = None


@dataclass
class ModelConfig:
    """Everything needed to rebuild a pipeline from weights."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    frames: int = 17
    height: int = 64
    width: int = 64
    # the sampling schedule's shift, the default of every generate call (training draws its timesteps
    # from the recipe's dit.timesteps); > 1 spends more steps near noise
    timestep_shift: float = 1.0
    # the classifier-free guidance scale of every generate call that names none (1: no guidance,
    # for a model that guidance hurts, e.g. the camera model: docs/image_to_video.md)
    guidance: float = 5.0

    def __post_init__(self):
        at_least(self, 1, "frames", "height", "width")
        require(self.timestep_shift > 0, "timestep_shift", self.timestep_shift, "must be above 0")
        require(0 <= self.guidance <= 100, "guidance", self.guidance, "must be from 0 to 100")


VAE_PRESETS: dict[str, VAEConfig] = {
    # HunyuanVideo / Wan / CogVideoX class: 4x8x8, 16 latent channels, 3D convs everywhere
    "4x8x8": VAEConfig(),
    # the same compression lean in memory: time x2 at the two lower downsamplings (Wan's layout) and
    # 2D convs at full resolution, so a streamed decode caches nothing there and codes it in strips
    # (docs/vae.md: 607 MB against 793 MB for 257 frames at 256x256; motion measured weaker at 400 steps)
    "4x8x8-flat": VAEConfig(temporal_down=(False, True, True), time_kernel=(1, 3, 3, 3)),
    "4x4x4": VAEConfig(channel_mult=(1, 2, 4), temporal_down=(True, True)),
    # the shipped 64x64 Shapes model (configs/shapes.yaml) and its 4x4x4 alternative
    "shapes": VAEConfig(base_channels=16, channel_mult=(1, 2, 4, 8)),
    "shapes-4x4x4": VAEConfig(base_channels=16, channel_mult=(1, 2, 4), temporal_down=(True, True)),
    "tiny": VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 2, 2), temporal_down=(True, True)),
    # the compressions of the other sources: Step-Video (8x16x16, a dual path beside every strided
    # conv), LTX (8x32x32, 128 channels, 4x4 patches folded into channels first), Mochi (6x8x8,
    # 12 channels, time 2 x 3: clips of 1 + 6k frames)
    "8x16x16": VAEConfig(latent_channels=64, channel_mult=(1, 2, 4, 4, 4), temporal_factors=(2, 2, 2, 1), downsample="dual"),
    "8x32x32": VAEConfig(latent_channels=128, channel_mult=(1, 2, 4, 4), temporal_factors=(2, 2, 2), patch=4),
    "6x8x8": VAEConfig(latent_channels=12, channel_mult=(1, 2, 4, 4), temporal_factors=(2, 3, 1)),
}
for _name in ("4x8x8", "4x8x8-flat", "8x16x16", "8x32x32", "6x8x8"):  # test sizes: width 8
    VAE_PRESETS[f"{_name}-tiny"] = dataclasses.replace(VAE_PRESETS[_name], base_channels=8)

DIT_PRESETS: dict[str, DiTConfig] = {
    "shapes": DiTConfig(),  # the shipped model's MM-DiT
    "tiny": DiTConfig(in_channels=4, dim=32, heads=2, dual_blocks=1, single_blocks=1, mlp_ratio=2.0),
}

# The denoiser families of the sources (SPEC §10) as choices of kinema's parts, at the size of the
# Shapes model (width 256, 6 blocks; `kinema train --arch NAME`) and as NAME-tiny for tests.
# docs/architectures.md says what each choice is and which families match their reference.
_NO_MM = {"dual_blocks": 0, "single_blocks": 0}
_ADALN_SINGLE = {**_NO_MM, "cross_blocks": 6, "modulation": "shared", "text_adapter": "mlp", "pooled": False}
DIT_FAMILIES: dict[str, dict] = {
    "hunyuan": {"text_adapter": "linear", "refiner_blocks": 1, "rope_theta": 256.0},  # dual -> single MM-DiT, token refiner
    "wan": {**_ADALN_SINGLE, "qk_norm_across_heads": True, "cross_attn_mask": False},  # cross-attention, shared modulation
    # AsymmDiT: a text stream half as wide; Mochi's block (weightless RMSNorm, bias-free q, k, v,
    # SwiGLU, sandwich-normed tanh-gated residuals), its learned RoPE and attention-pooled text
    "mochi": {"dual_blocks": 6, "single_blocks": 0, "text_width": 128, "text_adapter": "linear", "block_norm": "rms",
              "qk_norm_eps": 1e-5, "mlp": "swiglu", "qkv_bias": False, "residual": "norm-tanh", "rope_layout": "mochi",
              "pooling": "attention"},
    # one stream's weights over [text; video], attention then MLP, expert AdaLN over affine
    # LayerNorms; LayerNorm QK norm; 3D sin-cos positions; a time vector half the width; no pooled text
    "cogvideox": {"dual_blocks": 0, "single_blocks": 6, "single_layout": "sequential", "expert_adaln": True,
                  "text_adapter": "linear", "block_norm": "layer-affine", "norm_eps": 1e-5, "qk_norm_type": "layer",
                  "positions": "sincos-3d", "time_dim": 128, "final_norm": "cogvideox", "pooled": False},
    # factorized 2+1D; only the spatial blocks cross-attend; time positions after the first block
    "latte": {**_ADALN_SINGLE, "qk_norm": False, "attention": ("spatial", "temporal"), "cross_attention": (True, False),
              "positions": "sincos", "sincos_time_at": 1, "cross_attn_norm": False},
    "opensora": {**_ADALN_SINGLE, "attention": ("spatial", "temporal")},  # STDiT: factorized, QK-norm
    "opensora-plan": {**_ADALN_SINGLE, "attention": ("spatial", "temporal", "full")},  # factorized + periodic full
    "easyanimate": {"attention": ("full", "temporal")},  # MM-DiT, hybrid motion module: global / temporal
    "sora": {**_NO_MM, "cross_blocks": 6},  # spacetime DiT: full 3D attention, cross-attention, per-block AdaLN
    # small, fast; LTX's block: weightless RMSNorm, no norm before the cross-attention, its RoPE across
    # the width (positions in pixels / 2048 and seconds at 25 fps / 20, as LTX's pipeline scales them)
    "ltx": {**_ADALN_SINGLE, "cross_blocks": 4, "dim": 192, "heads": 3, "qk_norm_across_heads": True, "qk_norm_eps": 1e-5,
            "block_norm": "rms", "cross_attn_norm": False, "rope_layout": "ltx", "rope_scale": (4 / 25 / 20, 16 / 2048, 16 / 2048)},
    # image MM-DiT: each frame alone (T = 1), 2D sin-cos positions
    "sd3": {"dual_blocks": 4, "single_blocks": 0, "attention": ("spatial",), "positions": "sincos-2d"},
}


def _tiny(parts: dict) -> dict:
    """The family's parts at test size: width 32, each kind of block once (cross blocks twice, so a
    spatial / temporal alternation still alternates)."""
    out = {**parts, "in_channels": 4, "dim": 32, "heads": 2, "mlp_ratio": 2.0}
    blocks = {k: parts.get(k, getattr(DiTConfig, k)) for k in ("dual_blocks", "single_blocks", "cross_blocks")}
    out.update({k: (2 if k == "cross_blocks" else 1) if v else 0 for k, v in blocks.items()})
    out.update({k: v for k, v in (("text_width", 16), ("refiner_blocks", 1), ("time_dim", 16)) if parts.get(k)})
    return out


for _name, _parts in DIT_FAMILIES.items():
    DIT_PRESETS[_name] = DiTConfig(**_parts)
    DIT_PRESETS[f"{_name}-tiny"] = DiTConfig(**_tiny(_parts))
ARCHS = tuple(DIT_FAMILIES)


# ----------------------------------------------------------------------------- dict <-> dataclass


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise KinemaError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise KinemaError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is None:
            if len(args) != len(value):
                raise KinemaError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, where) for a, v in zip(args, value))
        return tuple(_convert(inner, v, where) for v in value)
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise KinemaError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise KinemaError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp in (int, str, bool) and (not isinstance(value, tp) or tp is int and isinstance(value, bool)):
        raise KinemaError(f"{where}: expected {'an integer' if tp is int else tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, where: str | None = None):
    """Build dataclass `cls` from `data`; unknown keys are an error that lists the known ones."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise KinemaError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(names)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for k, v in data.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(default := _default(fields[k])):
            v = merge(to_dict(default), v)  # a partial mapping overrides this field's own default
        values[k] = _convert(hints[k], v, f"{where}.{k}")
    try:
        return cls(**values)
    except KinemaError as e:  # a field's own check (__post_init__): say where the field is
        raise KinemaError(f"{where}: {e}") from None


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def merge(base: dict, delta: dict) -> dict:
    """`delta` over `base`: mappings merge key by key, everything else (lists too) is replaced."""
    out = dict(base)
    for key, value in delta.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def to_dict(obj) -> dict:
    """Dataclass -> plain dict (tuples become lists), ready for JSON or YAML."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {k: (to_dict(v) if dataclasses.is_dataclass(v) else plain(v)) for k, v in vars(obj).items()}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"config file {path} does not exist; pass the path of a YAML recipe such as configs/shapes.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KinemaError(f"config file {path} is not valid YAML ({e.__class__.__name__}); fix its syntax") from None
    if not isinstance(data, dict):
        raise KinemaError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data
