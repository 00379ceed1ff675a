"""Cost accounting (kinema.dit.cost): the source's token table, the factorized saving, pair counts
against the masks, and FLOPs against torch's own FLOP counter."""

import pytest
import torch
from conftest import random_text
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kinema.config import DIT_FAMILIES, DIT_PRESETS, DiTConfig
from kinema.dit.cost import attention_pairs, dit_flops, factorized_saving, joint_pairs, token_grid
from kinema.dit.transformer import MMDiT
from kinema.nn.attention import pattern_mask, video_mask


@pytest.mark.parametrize("frames,height,width,grid,tokens,n2", [
    (16, 256, 256, (4, 16, 16), 1024, "1.0e+06"),  # SPEC §2 / source §10.1, 4x8x8 VAE, patch (1, 2, 2)
    (48, 720, 1280, (12, 45, 80), 43200, "1.9e+09"),
    (120, 1080, 1920, (30, 68, 120), 244800, "6.0e+10"),  # 1080 rows pad to 1088: 136 latent rows
])
def test_token_table_of_the_source(frames, height, width, grid, tokens, n2):
    g = token_grid(frames, height, width)
    assert g == grid and g[0] * g[1] * g[2] == tokens
    assert f"{attention_pairs('full', g):.1e}" == n2


def test_kinemas_causal_vae_grid():
    assert token_grid(17, 64, 64, causal=True) == (5, 4, 4)  # the shipped model: 80 video tokens
    assert token_grid(17, 64, 64, compression=(4, 4, 4), causal=True) == (5, 8, 8)


@pytest.mark.parametrize("grid", [(4, 16, 16), (12, 45, 80), (5, 4, 4), (1, 3, 3)])
def test_factorized_saving_is_st_over_s_plus_t(grid):
    s, t = grid[1] * grid[2], grid[0]
    assert factorized_saving(grid) == pytest.approx(s * t / (s + t), rel=1e-12)


@pytest.mark.parametrize("pattern,window", [("full", None), ("spatial", None), ("temporal", None), ("causal", None),
                                            ("window", (3, 3, 5)), ("window", (1, 5, 2))])
def test_pair_counts_equal_the_masks(pattern, window):
    grid = (4, 3, 5)
    mask = video_mask(pattern, grid, window)
    assert attention_pairs(pattern, grid, window) == (60 * 60 if mask is None else int(mask.sum()))
    joint = pattern_mask(pattern, grid, torch.ones(1, 7, dtype=torch.bool), window)
    assert joint_pairs(pattern, grid, 7, window) == int(joint.sum())


WAN = {"dual_blocks": 0, "single_blocks": 0, "cross_blocks": 4, "modulation": "shared", "text_adapter": "mlp", "pooled": False}


@pytest.mark.parametrize("attention,extra", [(("full",), {}), (("spatial", "temporal", "window"), {}),
                                             (("full",), {"refiner_blocks": 2, "text_adapter": "linear", "pooled_dim": 384}),
                                             (("spatial", "temporal", "full", "window"), WAN),
                                             (("full",), {**WAN, "modulation": "per_block", "pooled": True, "mlp_ratio": 2.5}),
                                             (("full",), {"single_blocks": 0, "dual_blocks": 3, "text_width": 128,
                                                          "refiner_blocks": 1}),  # AsymmDiT (Mochi)
                                             (("full", "spatial"), {"dual_blocks": 0, "expert_adaln": True}),  # CogVideoX
                                             (("full",), {**DIT_FAMILIES["mochi"], "dual_blocks": 3, "shape_condition": True}),
                                             (("full", "spatial"), DIT_FAMILIES["cogvideox"]),
                                             (("full",), {**DIT_FAMILIES["cogvideox"], "expert_adaln": False, "time_dim": None,
                                                          "time_freq_dim": 64, "qkv_bias": False, "mlp": "swiglu"})])
def test_flops_equal_torch_flop_counter(attention, extra):
    """Linear FLOPs against FlopCounterMode's addmm exactly; attention against its bmm under the
    math SDPA kernel (which computes every pair of the joint sequence, masked or not)."""
    cfg = DiTConfig(**{**DIT_PRESETS["shapes"].__dict__, "attention": attention, "window": (3, 3, 3), **extra})
    model = MMDiT(cfg).eval()
    x, cond = torch.randn(1, 16, 5, 8, 8), random_text(1, tokens=24, dim=384)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, torch.rand(1), cond)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    f = dit_flops(cfg, (5, 4, 4), 24, computed=True)
    assert f["linear"] == counts["aten.addmm"] + counts.get("aten.mm", 0) and f["attention"] == counts["aten.bmm"]
    assert dit_flops(cfg, (5, 4, 4), 24)["attention"] <= f["attention"]  # a pattern never costs more than full
