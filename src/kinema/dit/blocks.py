"""MM-DiT blocks (SPEC §4; SD3 / HunyuanVideo / Flux layout).

DualStreamBlock: text and video keep their own norms, QKV, projections, MLPs and modulation,
and meet in one attention over the concatenated sequence [text; video].
SingleStreamBlock: one set of weights over the concatenated sequence, attention and MLP in
parallel from one input projection.
CrossBlock: video tokens only; text enters through cross-attention (Wan / Latte / Open-Sora).

SharedStreamBlock: CogVideoX's, one Stream's weights over [text; video], attention then MLP.

Shapes: B batch, Lt text tokens, Lv video tokens, L = Lt + Lv, D width, H heads, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kinema.nn.attention import attention, grid_coords
from kinema.nn.embeddings import sincos_positions
from kinema.nn.modulation import Modulation, ModulationOut, ModulationTable, joint_modulation, modulate
from kinema.nn.norms import RMSNorm
from kinema.nn.rope import apply_rope
from kinema.nn.sequence_parallel import joint_attention, self_attention


@dataclass(frozen=True)
class Parts:
    """The choices every block of a model shares (DiTConfig's; `Parts.of(cfg)`): the norm under
    AdaLN and its epsilon, the QK norm's kind and epsilon, the MLP ("gelu", or Mochi's bias-free
    "swiglu"), whether q, k, v have biases, how a residual branch is added ("gate": x + gate * f(x);
    "norm-tanh", Mochi's sandwich norm: x + tanh(gate) * RMSNorm(f(x))), and the width of the time
    vector the AdaLN projections read (`cond_dim`; CogVideoX's is narrower than the model)."""

    norm: str = "layer"
    norm_eps: float = 1e-6
    qk_norm: str = "rms"
    qk_eps: float = 1e-6
    mlp: str = "gelu"
    qkv_bias: bool = True
    residual: str = "gate"
    cond_dim: int | None = None

    @classmethod
    def of(cls, cfg) -> "Parts":
        return cls(cfg.block_norm, cfg.norm_eps, cfg.qk_norm_type, cfg.qk_norm_eps, cfg.mlp, cfg.qkv_bias, cfg.residual,
                   cfg.time_dim or cfg.dim)


def block_norm(dim: int, kind: str = "layer", eps: float = 1e-6) -> nn.Module:
    """The norm before AdaLN: weightless LayerNorm (most families), weightless RMSNorm (LTX) or an
    affine LayerNorm (CogVideoX)."""
    if kind == "rms":
        return RMSNorm(dim, eps, affine=False)
    return nn.LayerNorm(dim, elementwise_affine=kind == "layer-affine", eps=eps)


class QKNorm(nn.Module):
    """RMSNorm on queries and keys: per head (SD3, HunyuanVideo), or over all heads at once
    (`across_heads`, Wan); `kind` "layer": an affine LayerNorm per head (CogVideoX); identity when
    disabled. q, k: [B, H, L, Dh]."""

    def __init__(self, head_dim: int, enabled: bool, heads: int = 1, across_heads: bool = False, eps: float = 1e-6,
                 kind: str = "rms"):
        super().__init__()
        width = head_dim * heads if across_heads else head_dim
        self.across = across_heads
        norm = (lambda: nn.LayerNorm(width, eps=eps)) if kind == "layer" else (lambda: RMSNorm(width, eps))
        self.q = norm() if enabled else nn.Identity()
        self.k = norm() if enabled else nn.Identity()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.across:
            return self.q(q), self.k(k)
        return tuple(_across(norm, x) for norm, x in ((self.q, q), (self.k, k)))


def _across(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply `norm` over (H, Dh) together: [B, H, L, Dh] -> [B, L, H * Dh] -> norm -> back."""
    b, h, n, d = x.shape
    return norm(x.transpose(1, 2).reshape(b, n, h * d)).view(b, n, h, d).transpose(1, 2)


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, L, 3 * D] -> q, k, v each [B, H, L, Dh]"""
    b, n, _ = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def mlp(dim: int, hidden: int, kind: str = "gelu") -> nn.Module:
    """The feed-forward [B, L, D] -> [B, L, D]: Linear, GELU (tanh), Linear; or SwiGLU."""
    if kind == "swiglu":
        return SwiGLU(dim, hidden)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class SwiGLU(nn.Module):
    """Bias-free SwiGLU (Mochi, LLaMA): proj_out(a * silu(g)), (a, g) = proj_in(x). Its hidden width
    is 2/3 of `hidden`, so its three matrices cost what GELU's two cost at `hidden`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        inner = hidden * 2 // 3
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.proj_in(x).chunk(2, dim=-1)  # [B, L, inner] each
        return self.proj_out(a * F.silu(g))


def heads_of(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, D] -> [B, H, L, Dh]"""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class Stream(nn.Module):
    """One stream's weights in a dual-stream block. A stream narrower than the attention (AsymmDiT,
    Mochi's text stream) projects up to `attn_dim` for q, k, v and back down after attention; its
    AdaLN reads the model's `cond_dim`-wide time vector."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, attn_dim: int | None = None,
                 cond_dim: int | None = None, pre_only: bool = False, parts: Parts = Parts()):
        super().__init__()
        attn_dim = attn_dim or dim
        self.heads = heads
        # [attention, MLP] x (shift, scale, gate); a pre-only stream (SD3's and Mochi's last text
        # stream: its output is never read) has only the attention group, no output weights
        self.mod = Modulation(dim, 1 if pre_only else 2, cond_dim or parts.cond_dim, gated=not pre_only)
        self.norm1 = block_norm(dim, parts.norm, parts.norm_eps)
        self.qkv = nn.Linear(dim, 3 * attn_dim, bias=parts.qkv_bias)
        self.qk_norm = QKNorm(attn_dim // heads, qk_norm, eps=parts.qk_eps, kind=parts.qk_norm)
        self.post_norm = RMSNorm(dim, affine=False) if parts.residual == "norm-tanh" else None
        if not pre_only:
            self.norm2 = block_norm(dim, parts.norm, parts.norm_eps)
            self.proj = nn.Linear(attn_dim, dim)
            self.mlp = mlp(dim, int(dim * mlp_ratio), parts.mlp)

    def qkv_heads(self, x: torch.Tensor, mod: ModulationOut):
        """x: [B, L, D] -> q, k, v [B, H, L, Dh] (q, k normalised)"""
        q, k, v = split_heads(self.qkv(modulate(self.norm1(x), mod)), self.heads)
        q, k = self.qk_norm(q, k)
        return q, k, v

    def residuals(self, x: torch.Tensor, attn: torch.Tensor, mods: list[ModulationOut]) -> torch.Tensor:
        """Gated attention and MLP residuals: [B, L, D] -> [B, L, D]"""
        x = x + self.branch(self.proj(attn), mods[0].gate)
        return x + self.branch(self.mlp(modulate(self.norm2(x), mods[1])), mods[1].gate)

    def branch(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """What a residual branch adds: gate * y, or (Mochi) tanh(gate) * RMSNorm(y)."""
        if self.post_norm is None:
            return gate * y
        return (self.post_norm(y.float()) * torch.tanh(gate)).to(y.dtype)


class DualStreamBlock(nn.Module):
    """`text_dim` < dim makes it asymmetric (AsymmDiT): a narrower text stream, one attention width.
    `text_out=False`: the last block of a model with nothing after it reads no text output, so its
    text stream only contributes keys and values (SD3, Mochi) and the text comes back unchanged."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, text_dim: int | None = None,
                 text_out: bool = True, parts: Parts = Parts()):
        super().__init__()
        self.txt = Stream(text_dim or dim, heads, mlp_ratio, qk_norm, attn_dim=dim, pre_only=not text_out, parts=parts)
        self.img = Stream(dim, heads, mlp_ratio, qk_norm, parts=parts)
        self.text_out = text_out

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor,
                mask: torch.Tensor | None, txt_vec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """img: [B, Lv, D], txt: [B, Lt, Dt], vec: [B, D] (or a PerToken over the video tokens), rope: [L, Dh/2]
        angles, mask: [B, 1, 1, L] or [B, 1, L, L]; txt_vec: [B, D] for the text stream (default: vec)"""
        img_mods, txt_mods = self.img.mod(vec), self.txt.mod(vec if txt_vec is None else txt_vec)
        qi, ki, vi = self.img.qkv_heads(img, img_mods[0])
        qt, kt, vt = self.txt.qkv_heads(txt, txt_mods[0])
        q = apply_rope(torch.cat([qt, qi], dim=2), rope)  # [B, H, L, Dh]
        k = apply_rope(torch.cat([kt, ki], dim=2), rope)
        v = torch.cat([vt, vi], dim=2)
        lt = txt.shape[1]
        a = joint_attention(q, k, v, mask, lt)  # [B, L, D]
        txt = self.txt.residuals(txt, a[:, :lt], txt_mods) if self.text_out else txt
        return self.img.residuals(img, a[:, lt:], img_mods), txt


class SingleStreamBlock(nn.Module):
    """`expert`: CogVideoX's expert AdaLN, one modulation for the text tokens and another for the
    video tokens, all other weights shared."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, expert: bool = False,
                 parts: Parts = Parts()):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.hidden = int(dim * mlp_ratio)
        self.mod = Modulation(dim, 1, parts.cond_dim)
        self.mod_txt = Modulation(dim, 1, parts.cond_dim) if expert else None
        self.norm = block_norm(dim, parts.norm, parts.norm_eps)
        self.linear1 = nn.Linear(dim, 3 * dim + self.hidden)  # qkv and MLP input in one matmul
        self.qk_norm = QKNorm(dim // heads, qk_norm, eps=parts.qk_eps, kind=parts.qk_norm)
        self.linear2 = nn.Linear(dim + self.hidden, dim)  # attention output and MLP output together

    def forward(self, x: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None,
                text_len: int = 0, txt_vec: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D] (text then video), vec: [B, D] or a PerToken -> [B, L, D].
        With expert AdaLN, vec drives the video tokens and txt_vec [B, D] the first `text_len` tokens."""
        (mod,) = self.mod(vec)
        if self.mod_txt is not None:
            mod = joint_modulation(self.mod_txt(txt_vec)[0], mod, text_len, x.shape[1])
        qkv, h = self.linear1(modulate(self.norm(x), mod)).split([3 * self.dim, self.hidden], dim=-1)
        q, k, v = split_heads(qkv, self.heads)
        q, k = self.qk_norm(q, k)
        a = joint_attention(apply_rope(q, rope), apply_rope(k, rope), v, mask, text_len)  # [B, L, D]
        return x + mod.gate * self.linear2(torch.cat([a, F.gelu(h, approximate="tanh")], dim=-1))


class SharedStreamBlock(nn.Module):
    """CogVideoX's block: one Stream's weights (norms, q, k, v, projection, MLP) over the joint
    sequence [text; video], attention then MLP in sequence, not in parallel as SingleStreamBlock.
    `expert`: the text tokens take their own AdaLN (shift, scale, gate) x 2, the video tokens the
    stream's; without it every token takes the stream's."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, expert: bool = False,
                 parts: Parts = Parts()):
        super().__init__()
        self.stream = Stream(dim, heads, mlp_ratio, qk_norm, parts=parts)
        self.mod_txt = Modulation(dim, 2, parts.cond_dim) if expert else None

    def forward(self, x: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None,
                text_len: int = 0, txt_vec: torch.Tensor | None = None) -> torch.Tensor:
        """As SingleStreamBlock.forward: x [B, L, D] (text then video) -> [B, L, D]."""
        mods = self.stream.mod(vec)
        if self.mod_txt is not None:
            mods = [joint_modulation(t, v, text_len, x.shape[1]) for t, v in zip(self.mod_txt(txt_vec), mods)]
        q, k, v = self.stream.qkv_heads(x, mods[0])
        a = joint_attention(apply_rope(q, rope), apply_rope(k, rope), v, mask, text_len)  # [B, L, D]
        return self.stream.residuals(x, a, mods)


class CrossBlock(nn.Module):
    """Cross-attention DiT block (Wan, Latte, Open-Sora, PixArt): self-attention over the video
    tokens (any layout: full, spatial, temporal, or a mask), cross-attention from video to text
    (unless `cross` is False), then the MLP. AdaLN (shift, scale, gate) around self-attention and the MLP; the cross-attention
    is ungated, after an optional affine LayerNorm (Wan's cross_attn_norm). `shared_modulation`:
    the block adds its learned table to the model's one time projection (Wan) instead of
    projecting the time vector itself."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, across_heads: bool = False,
                 cross_norm: bool = True, shared_modulation: bool = False, parts: Parts = Parts(), cross: bool = True):
        super().__init__()
        self.heads = heads
        qk_eps = parts.qk_eps
        self.mod = ModulationTable(dim, 2) if shared_modulation else Modulation(dim, 2, parts.cond_dim)
        self.norm1, self.norm3 = block_norm(dim, parts.norm, parts.norm_eps), block_norm(dim, parts.norm, parts.norm_eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.qk_norm = QKNorm(dim // heads, qk_norm, heads, across_heads, qk_eps, parts.qk_norm)
        self.proj = nn.Linear(dim, dim)
        self.cross = cross  # False: no cross-attention (Latte's temporal blocks)
        if cross:
            self.norm2 = nn.LayerNorm(dim, eps=1e-6) if cross_norm else nn.Identity()
            self.cross_q = nn.Linear(dim, dim)
            self.cross_kv = nn.Linear(dim, 2 * dim)
            self.cross_qk_norm = QKNorm(dim // heads, qk_norm, heads, across_heads, qk_eps, parts.qk_norm)
            self.cross_proj = nn.Linear(dim, dim)
        self.mlp = mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None,
                text_mask: torch.Tensor | None, layout: str = "full", grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """x: [B, Lv, D] video, txt: [B, Lt, D], vec: [B, D] / a PerToken (or the shared projection),
        rope: [Lv, Dh/2], mask: video mask for `layout`, text_mask: [B, 1, 1, Lt] or None -> [B, Lv, D]"""
        mods = self.mod(vec)
        q, k, v = split_heads(self.qkv(modulate(self.norm1(x), mods[0])), self.heads)
        q, k = self.qk_norm(q, k)
        a = self_attention(apply_rope(q, rope), apply_rope(k, rope), v, mask, layout=layout, grid=grid)
        x = x + mods[0].gate * self.proj(a)
        if self.cross:
            q = heads_of(self.cross_q(self.norm2(x)), self.heads)
            k, v = (heads_of(y, self.heads) for y in self.cross_kv(txt).chunk(2, dim=-1))
            q, k = self.cross_qk_norm(q, k)
            x = x + self.cross_proj(attention(q, k, v, text_mask))
        return x + mods[1].gate * self.mlp(modulate(self.norm3(x), mods[1]))


class MotionModule(nn.Module):
    """AnimateDiff's motion module: a temporal block inserted after a spatial (image) block, so a
    frozen text-to-image model learns motion. Each token attends over its own column of frames,
    with sin-cos time positions of its own (the image model has none), then an MLP; AdaLN-Zero
    makes it the identity until it trains, so a model with fresh motion modules draws every frame
    as its image model does. x [B, Lv, D] (time-major tokens of `grid`) -> [B, Lv, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, parts: Parts = Parts()):
        super().__init__()
        self.block = CrossBlock(dim, heads, mlp_ratio, qk_norm, parts=parts, cross=False)

    def forward(self, x: torch.Tensor, vec, grid: tuple[int, int, int]) -> torch.Tensor:
        pe = sincos_positions(grid_coords(grid).float(), x.shape[-1], space=False).to(x)  # [Lv, D], time only
        return self.block(x + pe, None, vec, None, None, None, layout="temporal", grid=grid) - pe
