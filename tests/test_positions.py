"""Absolute positions (sin-cos, learned) beside RoPE: known values, and what each lets the model tell apart."""

import math

import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import DIT_PRESETS, DiTConfig
from kinema.dit.transformer import MMDiT, sincos_table
from kinema.errors import KinemaError
from kinema.nn.embeddings import LearnedPositions, sincos_1d, sincos_positions

CFG = DIT_PRESETS["tiny"]


def test_sincos_1d_known_values():
    # width 4: frequencies 1 and 10000^(-1/2) = 0.01; [sin(p), sin(p / 100), cos(p), cos(p / 100)]
    got = sincos_1d(torch.tensor([0.0, 3.0]), 4)
    want = torch.tensor([[0.0, 0.0, 1.0, 1.0], [math.sin(3), math.sin(0.03), math.cos(3), math.cos(0.03)]])
    torch.testing.assert_close(got, want)


def test_sincos_3d_puts_time_in_the_first_quarter():
    """CogVideoX's layout: [time over D/4 ; space over 3D/4 (w half, then h half)], time and space
    scaled apart. Width 16: time pairs with frequencies 1 and 1/100; one token at (t, h, w) = (3, 1, 2)."""
    cfg = DiTConfig(**{**CFG.__dict__, "dim": 16, "heads": 2, "positions": "sincos-3d", "sincos_scale": 0.5,
                       "sincos_time_scale": 2.0})
    table = sincos_table(cfg, (4, 2, 3))
    row = table[3 * 6 + 1 * 3 + 2]  # time-major token order
    t = torch.tensor(6.0)  # 3 x 2.0
    torch.testing.assert_close(row[:4], torch.stack([t.sin(), (t / 100).sin(), t.cos(), (t / 100).cos()]))
    torch.testing.assert_close(row[4:], sincos_positions(torch.tensor([[0.0, 0.5, 1.0]]), 12, temporal=False)[0])
    with pytest.raises(KinemaError, match="divisible by 16"):
        DiTConfig(dim=24, heads=2, positions="sincos-3d")


def test_sincos_positions_put_w_first_then_h_then_add_t():
    pos = torch.tensor([[2.0, 5.0, 7.0]])  # (t, h, w)
    space = torch.cat([sincos_1d(torch.tensor([7.0]), 4), sincos_1d(torch.tensor([5.0]), 4)], dim=-1)
    torch.testing.assert_close(sincos_positions(pos, 8, temporal=False), space)
    torch.testing.assert_close(sincos_positions(pos, 8), space + sincos_1d(torch.tensor([2.0]), 8))


def test_sd3_grid_centres_the_tokens_and_scales_them():
    cfg = DiTConfig(**{**CFG.__dict__, "positions": "sincos-2d", "sincos_grid": 6, "sincos_scale": 0.5})
    table = sincos_table(cfg, (1, 2, 4))  # rows 2..3, cols 1..4 of the 6x6 grid, times 0.5
    first = sincos_positions(torch.tensor([[0.0, 2 * 0.5, 1 * 0.5]]), cfg.dim, temporal=False)
    torch.testing.assert_close(table[:1], first)
    with pytest.raises(ValueError, match="sincos_grid"):
        sincos_table(cfg, (1, 8, 2))


def frame_swap(model: MMDiT) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output on a latent with frames 0 and 2 swapped, and its output swapped back."""
    x, t, cond = torch.randn(2, 4, 3, 4, 4), torch.rand(2), random_text(2)
    perm = [2, 1, 0]
    with torch.no_grad():
        return model(x[:, :, perm], t, cond), model(x, t, cond)[:, :, perm]


@pytest.mark.parametrize("positions,tells_frames_apart", [("sincos-2d", False), ("sincos", True), ("rope", True),
                                                          ("learned", True)])
def test_only_a_temporal_position_tells_frames_apart(positions, tells_frames_apart):
    """With space-only positions and full attention, reordering the frames reorders the output:
    the model cannot know which frame comes first. Any temporal position breaks that."""
    torch.manual_seed(0)  # weights large enough that attention is far from uniform, so RoPE shows
    model = randomize_(MMDiT(DiTConfig(**{**CFG.__dict__, "positions": positions})), std=0.3).eval()
    swapped, expected = frame_swap(model)
    assert torch.allclose(swapped, expected, atol=1e-5) != tells_frames_apart


def test_learned_positions_train_and_refuse_a_grid_too_large():
    pos = LearnedPositions(8, (2, 3, 3))
    grid = torch.tensor([[1, 2, 0], [0, 0, 2]])
    out = pos(grid)
    torch.testing.assert_close(out[0], pos.tables[0][1] + pos.tables[1][2] + pos.tables[2][0])
    out.sum().backward()
    assert pos.tables[1].grad[2].abs().sum() > 0 and pos.tables[1].grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="max_grid"):
        pos(torch.tensor([[0, 3, 0]]))


def test_unknown_positions_are_refused():
    with pytest.raises(KinemaError, match="dit.positions"):
        DiTConfig(positions="alibi")
    with pytest.raises(KinemaError, match="divisible by 4"):
        DiTConfig(dim=30, heads=2, positions="sincos")
