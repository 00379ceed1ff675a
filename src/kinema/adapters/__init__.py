"""State-dict adapters: reference implementations' weights -> kinema's presets, one small file per
family. Each maps a config and a state dict and checks that every source tensor was used, so a
checkpoint never loads partially without an error. diffusers itself is never imported here."""

from __future__ import annotations

import torch

from kinema.errors import KinemaError


class StateSource:
    """Takes tensors out of a reference state dict by name and remembers which were used."""

    def __init__(self, state: dict[str, torch.Tensor], family: str):
        self.state, self.family, self.used = state, family, set()

    def __call__(self, *names: str, dim: int = 0) -> torch.Tensor:
        missing = [n for n in names if n not in self.state]
        if missing:
            raise KinemaError(f"the {self.family} state dict has no {', '.join(missing)}; is it a {self.family} transformer?")
        self.used.update(names)
        return torch.cat([self.state[n] for n in names], dim=dim) if len(names) > 1 else self.state[names[0]]

    def linear(self, out: dict, dst: str, *srcs: str, bias: bool = True) -> None:
        """dst.weight / dst.bias from one or several Linears stacked along the output dim."""
        out[f"{dst}.weight"] = self(*(f"{s}.weight" for s in srcs))
        if bias:
            out[f"{dst}.bias"] = self(*(f"{s}.bias" for s in srcs))

    def conv_patch(self, out: dict, src: str, dst: str = "patch_in") -> None:
        """A stride-p Conv2d / Conv3d patch embedding [D, C, (pt,) ph, pw] -> kinema's Linear over
        (c, pt, ph, pw): the same numbers, flattened."""
        w = self(f"{src}.weight")
        out[f"{dst}.weight"], out[f"{dst}.bias"] = w.reshape(w.shape[0], -1), self(f"{src}.bias")

    def embedder(self, out: dict, dst: str, src: str) -> None:
        """diffusers' TimestepEmbedding (linear_1, act, linear_2) -> kinema's MLPEmbedder (net.0, net.2)."""
        self.linear(out, f"{dst}.net.0", f"{src}.linear_1")
        self.linear(out, f"{dst}.net.2", f"{src}.linear_2")

    def feed_forward(self, out: dict, dst: str, src: str) -> None:
        """diffusers' FeedForward (net.0.proj, act, net.2) -> kinema's GELU MLP (0, 2)."""
        self.linear(out, f"{dst}.0", f"{src}.net.0.proj")
        self.linear(out, f"{dst}.2", f"{src}.net.2")

    def scale_shift(self, out: dict, dst: str, src: str) -> None:
        """diffusers' AdaLayerNormContinuous Linear, (scale, shift), -> kinema's ungated Modulation,
        (shift, scale): the final layer and pre-only streams."""
        for kind in ("weight", "bias"):
            scale, shift = self(f"{src}.{kind}").chunk(2)
            out[f"{dst}.{kind}"] = torch.cat([shift, scale])

    def patch_out(self, out: dict, dst: str, src: str, patch: tuple[int, int, int]) -> None:
        """A final Linear whose rows are ordered (pt, ph, pw, channel), as diffusers' unpatchify
        reads them, -> kinema's order (channel, pt, ph, pw)."""
        pt, ph, pw = patch
        weight, bias = self(f"{src}.weight"), self(f"{src}.bias")
        d = weight.shape[1]
        out[f"{dst}.weight"] = weight.view(pt, ph, pw, -1, d).permute(3, 0, 1, 2, 4).reshape(-1, d)
        out[f"{dst}.bias"] = bias.view(pt, ph, pw, -1).permute(3, 0, 1, 2).reshape(-1)

    def check_all_used(self) -> None:
        """A checkpoint never loads partially: every source tensor must have found a place."""
        left = sorted(set(self.state) - self.used)
        if left:
            raise KinemaError(f"{len(left)} {self.family} tensors have no place in kinema's model (e.g. {left[0]}); "
                              f"the checkpoint uses a feature kinema does not implement")


def cross_block(src: StateSource, out: dict, a: str, b: str, ff: str = "ff") -> None:
    """A diffusers cross-attention block `a` (self-attention attn1 and cross-attention attn2, each
    with norm_q / norm_k, then the feed-forward `ff`; Wan, LTX) -> kinema's CrossBlock `b`."""
    src.linear(out, f"{b}.qkv", f"{a}.attn1.to_q", f"{a}.attn1.to_k", f"{a}.attn1.to_v")
    src.linear(out, f"{b}.proj", f"{a}.attn1.to_out.0")
    src.linear(out, f"{b}.cross_q", f"{a}.attn2.to_q")
    src.linear(out, f"{b}.cross_kv", f"{a}.attn2.to_k", f"{a}.attn2.to_v")
    src.linear(out, f"{b}.cross_proj", f"{a}.attn2.to_out.0")
    for attn, norm in (("attn1", "qk_norm"), ("attn2", "cross_qk_norm")):
        out[f"{b}.{norm}.q.weight"] = src(f"{a}.{attn}.norm_q.weight")
        out[f"{b}.{norm}.k.weight"] = src(f"{a}.{attn}.norm_k.weight")
    src.feed_forward(out, f"{b}.mlp", f"{a}.{ff}")

