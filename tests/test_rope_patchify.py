import torch

from kinema.dit.patchify import grid_positions, patch_grid, patchify, unpatchify
from kinema.nn.rope import apply_rope, default_axes, rope_angles


def test_unpatchify_inverts_patchify():
    x = torch.randn(2, 16, 6, 8, 10)
    for patch in [(1, 2, 2), (2, 2, 2), (1, 1, 1), (3, 2, 2), (2, 4, 5)]:
        grid = patch_grid(x.shape[2:], patch)
        tokens = patchify(x, patch)
        assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 16 * patch[0] * patch[1] * patch[2])
        assert torch.equal(unpatchify(tokens, patch, grid), x)


def test_patch_order_is_time_major_and_matches_positions():
    x = torch.zeros(1, 1, 2, 4, 4)
    x[0, 0, 1, 2, 3] = 1.0  # frame 1, row 2, col 3
    tokens = patchify(x, (1, 2, 2))  # grid (2, 2, 2)
    idx = tokens[0].abs().sum(-1).nonzero().item()
    assert grid_positions((2, 2, 2))[idx].tolist() == [1.0, 1.0, 1.0]


def test_token_count_of_720p_48_frames():
    # SPEC §2 / §10.1: 720p x 48 frames at 4x8x8 and patch (1, 2, 2) -> 43 200 tokens
    grid = patch_grid((48 // 4, 720 // 8, 1280 // 8), (1, 2, 2))
    assert grid[0] * grid[1] * grid[2] == 43_200


def test_default_axes_split_head_dim():
    for dh in (32, 64, 128):
        axes = default_axes(dh)
        assert sum(axes) == dh and all(a % 2 == 0 and a > 0 for a in axes)


def test_rope3d_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    axes = (8, 12, 12)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(pq, pk):
        aq = rope_angles(torch.tensor([pq], dtype=torch.float32), axes)
        ak = rope_angles(torch.tensor([pk], dtype=torch.float32), axes)
        return (apply_rope(q, aq) * apply_rope(k, ak)).sum().item()

    base = score((1, 2, 3), (4, 0, 7))
    for shift in [(5, 0, 0), (0, 3, 0), (0, 0, -2), (2, 9, 4)]:
        moved = score(tuple(a + s for a, s in zip((1, 2, 3), shift)), tuple(a + s for a, s in zip((4, 0, 7), shift)))
        assert abs(moved - base) < 1e-4
    # and it does depend on the offset, on each axis separately
    for other in [(2, 2, 3), (1, 3, 3), (1, 2, 4)]:
        assert abs(score(other, (4, 0, 7)) - base) > 1e-3


def test_rope_zero_angle_is_identity_and_norm_preserving():
    x = torch.randn(2, 3, 5, 16)
    torch.testing.assert_close(apply_rope(x, torch.zeros(5, 8)), x)
    angles = rope_angles(torch.rand(5, 3) * 10, (4, 6, 6))
    torch.testing.assert_close(apply_rope(x, angles).norm(dim=-1), x.norm(dim=-1))


def test_rope_runs_in_fp32_for_bf16_inputs():
    x = torch.randn(1, 1, 4, 16).bfloat16()
    angles = rope_angles(torch.tensor([[0, 0, 1000.0]] * 4), (4, 6, 6))
    out = apply_rope(x, angles)
    ref = apply_rope(x.float(), angles)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)


def test_ltx_rope_angles_known_values():
    """Width 8: one frequency (pi / 2) per axis, interleaved (t, h, w), after one unrotated pair."""
    import math

    from kinema.nn.rope import ltx_rope_angles

    got = ltx_rope_angles(torch.tensor([[0.0, 0.5, 2.0]]), 8)
    want = torch.tensor([[0.0, -math.pi / 2, 0.0, 3 * math.pi / 2]])
    torch.testing.assert_close(got, want)
    # width 12: frequencies 1 and 10000 (x pi / 2); pair 3k + a is frequency k of axis a
    got = ltx_rope_angles(torch.tensor([[1.0, 0.0, 0.0]]), 12)
    torch.testing.assert_close(got[0, [0, 3]], torch.tensor([math.pi / 2, 10000 * math.pi / 2]))
    torch.testing.assert_close(got[0, [1, 2, 4, 5]], torch.tensor([-math.pi / 2, -math.pi / 2, -5000 * math.pi, -5000 * math.pi]))


def test_weightless_rms_norm():
    from kinema.nn.norms import RMSNorm

    norm = RMSNorm(4, affine=False)
    assert not list(norm.parameters())
    x = torch.tensor([[3.0, -3.0, 3.0, -3.0]])
    torch.testing.assert_close(norm(x), x / 3.0, atol=1e-6, rtol=0)


def test_centred_positions_known_values():
    """Mochi's positions: t counts frames; h and w are cell centres covering the same area (192^2)
    whatever the grid, cells sqrt(192^2 / (h w)) wide: a 2x2 grid's are 96 wide, centres -48 and 48;
    a 1x4 row's are 96 wide too, centres -144, -48, 48, 144, and its one row sits at 0."""
    from kinema.nn.rope import centred_positions

    pos = centred_positions((2, 2, 2))
    assert pos.shape == (8, 3)
    assert pos[:4].tolist() == [[0, -48, -48], [0, -48, 48], [0, 48, -48], [0, 48, 48]]  # time-major, then h, then w
    assert pos[4:, 0].tolist() == [1.0] * 4
    torch.testing.assert_close(centred_positions((1, 1, 4))[:, 2], torch.tensor([-144.0, -48.0, 48.0, 144.0]))
    assert centred_positions((1, 1, 4))[:, 1].tolist() == [0.0] * 4


def test_mixed_rope_angles_sum_the_axes():
    """Each frequency pair sees every axis: angle = t f_t + h f_h + w f_w, per head."""
    from kinema.nn.rope import mixed_rope_angles

    freqs = torch.zeros(3, 2, 4)
    freqs[0, 0, 0], freqs[1, 0, 0], freqs[2, 1, 3] = 1.0, 10.0, 100.0
    angles = mixed_rope_angles(torch.tensor([[2.0, 3.0, 5.0]]), freqs)  # [H, L, Dh/2]
    assert angles.shape == (2, 1, 4)
    assert angles[0, 0].tolist() == [32.0, 0.0, 0.0, 0.0] and angles[1, 0].tolist() == [0.0, 0.0, 0.0, 500.0]
