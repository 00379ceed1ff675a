"""The attention patterns (kinema.nn.attention): each layout equals its mask, patterns reduce to
full attention where they must, and hand-checked masks on small grids."""

import pytest
import torch

from kinema.nn.attention import attention, grid_coords, key_padding_mask, pattern_mask, segment_mask, video_mask


def qkv(n: int, b: int = 2, h: int = 2, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g) for _ in range(3))


def test_grid_coords_are_time_major():
    c = grid_coords((2, 3, 4))
    assert c.shape == (24, 3)
    assert c[0].tolist() == [0, 0, 0] and c[1].tolist() == [0, 0, 1] and c[4].tolist() == [0, 1, 0]
    assert c[12].tolist() == [1, 0, 0] and c[23].tolist() == [1, 2, 3]


@pytest.mark.parametrize("layout", ["spatial", "temporal"])
@pytest.mark.parametrize("grid", [(3, 2, 4), (4, 3, 3), (2, 1, 5)])
def test_each_layout_equals_full_attention_under_its_mask(layout, grid):
    """The reshape and the mask must agree token for token: an axis mistake in either fails here."""
    q, k, v = qkv(grid[0] * grid[1] * grid[2])
    folded = attention(q, k, v, layout=layout, grid=grid)
    masked = attention(q, k, v, video_mask(layout, grid))
    torch.testing.assert_close(folded, masked, atol=1e-6, rtol=1e-5)


def test_factorized_layouts_reduce_to_full_attention_where_they_coincide():
    q, k, v = qkv(12)
    full = attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v, layout="spatial", grid=(1, 3, 4)), full)  # one frame
    torch.testing.assert_close(attention(q, k, v, layout="temporal", grid=(12, 1, 1)), full)  # one token a frame
    assert not torch.allclose(attention(q, k, v, layout="spatial", grid=(3, 2, 2)), full)


def test_window_masks_by_hand():
    """(t, h, w) = (1, 1, 5): a width-3 window is a band of width 3; the box is centred."""
    m = video_mask("window", (1, 1, 5), window=(1, 1, 3))
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]).bool()
    assert torch.equal(m, expected)
    # in time: (3, 1, 1) with window (3, 1, 1) -> frames t-1..t+1; width 1 in space -> same (h, w) only
    m = video_mask("window", (3, 2, 1), window=(3, 1, 1))
    assert m[0].tolist() == [True, False, True, False, False, False]  # frame 0 row 0: itself and frame 1 row 0
    assert m[4].tolist() == [False, False, True, False, True, False]


def test_window_covering_the_grid_is_full_attention():
    grid = (3, 4, 2)
    q, k, v = qkv(24)
    assert video_mask("window", grid, window=(5, 7, 3)).all()
    torch.testing.assert_close(attention(q, k, v, video_mask("window", grid, window=(5, 7, 3))), attention(q, k, v))
    assert not video_mask("window", grid, window=(3, 7, 3)).all()


def test_frame_causal_attention_ignores_later_frames():
    grid = (3, 2, 2)  # 4 tokens a frame
    q, k, v = qkv(12)
    mask = video_mask("causal", grid)
    out = attention(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 8:] += 3.0  # change frame 2 only
    v2[:, :, 8:] -= 2.0
    out2 = attention(q, k2, v2, mask)
    torch.testing.assert_close(out[:, :8], out2[:, :8])  # frames 0 and 1 do not see it
    assert not torch.allclose(out[:, 8:], out2[:, 8:])
    assert mask[4].tolist() == [True] * 8 + [False] * 4  # frame 1 sees frames 0 and 1, inside them every token


def test_packed_sequences_equal_the_samples_one_by_one():
    """Three samples of 5, 3 and 4 tokens packed into one row of 14 (2 padding) give each sample's own output."""
    lengths = [5, 3, 4]
    q, k, v = qkv(14, b=1)
    ids = torch.tensor([[0] * 5 + [1] * 3 + [2] * 4 + [-1] * 2])
    packed = attention(q, k, v, segment_mask(ids))
    start = 0
    for n in lengths:
        sl = slice(start, start + n)
        alone = attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
        torch.testing.assert_close(packed[:, sl], alone, atol=1e-6, rtol=1e-5)
        start += n
    assert torch.isfinite(packed).all()  # padding rows see themselves, never NaN


@pytest.mark.parametrize("pattern", ["spatial", "temporal", "window", "causal"])
def test_joint_text_video_mask(pattern):
    """[text; video]: every token sees the valid text; text sees all video (none under "causal");
    video follows the pattern."""
    grid, lt = (2, 2, 2), 3
    valid = torch.tensor([[True, True, False], [True, False, False]])
    m = pattern_mask(pattern, grid, valid, window=(1, 3, 1))
    assert m.shape == (2, 1, 11, 11)
    vv = video_mask(pattern, grid, window=(1, 3, 1))
    for b in range(2):
        assert torch.equal(m[b, 0, :, :lt], valid[b].expand(11, lt))
        assert m[b, 0, :lt, lt:].all() if pattern != "causal" else not m[b, 0, :lt, lt:].any()
        assert torch.equal(m[b, 0, lt:, lt:], vv)


def test_joint_full_pattern_equals_the_key_padding_mask():
    grid = (2, 2, 2)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    q, k, v = qkv(11)
    valid_all = torch.cat([valid, torch.ones(2, 8, dtype=torch.bool)], dim=1)  # [B, L]
    torch.testing.assert_close(attention(q, k, v, pattern_mask("full", grid, valid)), attention(q, k, v, key_padding_mask(valid_all)))


def test_unknown_pattern_and_missing_window():
    with pytest.raises(ValueError, match="unknown attention pattern"):
        video_mask("dilated", (1, 2, 2))
    with pytest.raises(ValueError, match="window"):
        video_mask("window", (1, 2, 2))
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match="layout"):
        attention(q, k, v, layout="spatial")
