"""Packing (kinema.dit.packing): the planner's rows, pack / unpack, and every family's packed
forward equal to each sample run alone."""

import dataclasses

import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import ARCHS, DIT_PRESETS
from kinema.dit.packing import Packing
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.errors import KinemaError
from kinema.nn.attention import packed_mask


def test_plan_is_first_fit_decreasing():
    p = Packing.plan([5, 3, 4, 2, 6], budget=8)
    # longest first: 6 -> row 0, 5 -> row 1, 4 -> row 2, 3 -> row 1 (fills it), 2 -> row 0 (fills it)
    assert p.rows == ((4, 3), (0, 1), (2,))
    assert p.length == 8 and p.useful() == pytest.approx(20 / 24)
    ids = p.segment_ids()
    assert ids.tolist()[2] == [2] * 4 + [-1] * 4 and ids.tolist()[0] == [4] * 6 + [3] * 2


def test_rows_round_up_to_a_multiple():
    p = Packing.plan([5, 3, 4, 2, 6], budget=8, multiple=3)  # sequence parallelism over 3 processes
    assert p.rows == ((4, 3), (0, 1), (2,)) and p.length == 9 and p.segment_ids().shape == (3, 9)


def test_plan_refuses_a_sample_over_the_budget():
    with pytest.raises(KinemaError, match="raise the budget to at least 9"):
        Packing.plan([4, 9], budget=8)


def test_unpack_inverts_pack_along_any_dim():
    p = Packing.plan([3, 2, 4], budget=5)
    items = [torch.randn(2, n, 3) for n in p.lengths]
    packed = p.pack(items, dim=1, fill=7.0)  # [R, 2, L, 3]
    assert packed.shape == (len(p.rows), 2, p.length, 3)
    assert (packed[p.segment_ids()[:, None, :].expand(-1, 2, -1) < 0] == 7.0).all()
    for a, b in zip(p.unpack(packed, dim=1), items):
        assert torch.equal(a, b)


def test_packed_mask_keeps_each_sample_and_its_pattern():
    # one row: sample 0 (2 text, 2 frames x 1 x 1 video), sample 1 (1 text, 1 video), one padding token
    seg = torch.tensor([[0, 0, 1, 0, 0, 1, -1]])
    is_text = torch.tensor([[1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    valid = torch.tensor([[1, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)  # sample 0's second text token is padding
    coords = torch.tensor([[[0, 0, 0]] * 3 + [[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]])
    m = packed_mask("causal", seg, coords, is_text, valid)[0, 0]
    assert m[3].tolist() == [True, False, False, True, False, False, False]  # frame 0 of sample 0: its valid text, itself
    assert m[4].tolist() == [True, False, False, True, True, False, False]  # frame 1 also sees frame 0
    assert m[0].tolist() == [True, False, False, False, False, False, False]  # causal: text sees no video
    assert m[5].tolist() == [False, False, True, False, False, True, False]  # sample 1 never sees sample 0
    assert m[6].tolist() == [False] * 6 + [True]  # padding sees itself only
    full = packed_mask("full", seg, coords, is_text, valid)[0, 0]
    assert full[0].tolist() == [True, False, False, True, True, False, False]


SHAPES = [(3, 4, 4), (1, 6, 4), (2, 4, 6), (3, 2, 2)]  # latent (t, h, w): 12, 6, 12 and 3 tokens at patch (1, 2, 2)


def _samples(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(cfg.in_channels, *s, generator=g) for s in SHAPES]
    cond = random_text(len(SHAPES), seed=seed)
    cond.text.mask[1, 2:] = False  # captions of different lengths
    cond.text.mask[3, 5:] = True
    return xs, cond


@pytest.mark.parametrize("name", ARCHS + ("tiny", "learned"))
def test_packed_forward_equals_each_sample_alone(name):
    if name == "learned":  # learned absolute positions (no preset uses them)
        cfg = dataclasses.replace(DIT_PRESETS["sora-tiny"], positions="learned", max_grid=(4, 8, 8))
    else:
        cfg = DIT_PRESETS[name if name == "tiny" else f"{name}-tiny"]
    torch.manual_seed(0)
    model = randomize_(MMDiT(cfg)).eval()
    xs, cond = _samples(cfg)
    t = torch.tensor([0.2, 0.5, 0.9, 0.7])
    with torch.no_grad():
        packed = model(xs, t, cond, budget=20)
        for i, x in enumerate(xs):
            alone = model(x[None], t[i:i + 1], cond.index([i]))[0]
            torch.testing.assert_close(packed[i], alone, atol=2e-5, rtol=1e-4, msg=f"{name}: sample {i}")


def test_packed_forward_takes_per_frame_times_and_shape_conditions():
    cfg = DIT_PRESETS["hunyuan-tiny"]
    cfg = type(cfg)(**{**cfg.__dict__, "shape_condition": True})
    torch.manual_seed(0)
    model = randomize_(MMDiT(cfg)).eval()
    xs, cond = _samples(cfg)
    ts = [torch.rand(x.shape[1]) for x in xs]
    ts[0][0] = 0.0  # a clean conditioning frame
    with torch.no_grad():
        packed = model(xs, ts, cond, budget=24)
        for i, x in enumerate(xs):
            torch.testing.assert_close(packed[i], model(x[None], ts[i][None], cond.index([i]))[0], atol=2e-5, rtol=1e-4)


def test_packed_loss_and_gradients_equal_unpacked():
    """The per-sample losses of a packed batch are the samples' losses alone, and so are the gradients."""
    cfg = DIT_PRESETS["wan-tiny"]
    torch.manual_seed(0)
    model = randomize_(MMDiT(cfg))
    xs, cond = _samples(cfg)
    t = torch.tensor([0.2, 0.5, 0.9, 0.7])
    targets = [torch.randn_like(x) for x in xs]
    packed = model(xs, t, cond, budget=16)
    loss = sum((v - y).pow(2).sum() for v, y in zip(packed, targets))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    alone = sum((model(x[None], t[i:i + 1], cond.index([i]))[0] - targets[i]).pow(2).sum() for i, x in enumerate(xs))
    torch.testing.assert_close(loss, alone, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(alone, list(model.parameters()))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packing_does_not_leak_between_samples():
    """Changing one sample's latent or caption leaves the other samples of its row unchanged."""
    cfg = DIT_PRESETS["hunyuan-tiny"]
    model = randomize_(MMDiT(cfg)).eval()
    xs, cond = _samples(cfg)
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        before = model(xs, t, cond, budget=30)
        xs[0] = xs[0] + 1.0
        tokens = cond.text.tokens.clone()
        tokens[0] += 1.0
        after = model(xs, t, Conditioning(type(cond.text)(tokens, cond.text.mask, cond.text.pooled)),
                                     budget=30)
    assert not torch.allclose(before[0], after[0])
    for i in range(1, 4):
        torch.testing.assert_close(before[i], after[i], atol=1e-6, rtol=1e-6)


def test_packed_flow_loss_is_the_mean_of_each_clips_loss_whatever_the_rows():
    """packed_flow_loss = mean over clips of each clip's MSE against its own velocity, with the
    times and noise drawn as flow_loss draws them; rows of 8 or of 40 tokens give the same loss."""
    from kinema.flow.paths import interpolate, velocity
    from kinema.flow.timesteps import TimestepConfig, sample_timesteps
    from kinema.train.dit_stage import packed_flow_loss

    cfg = DIT_PRESETS["sora-tiny"]
    model = randomize_(MMDiT(cfg))
    xs, cond = _samples(cfg)
    z0 = [x[None] for x in xs]
    tcfg = TimestepConfig()
    with torch.no_grad():
        losses = [packed_flow_loss(model, z0, cond, tcfg, torch.Generator().manual_seed(3), budget)
                  for budget in (12, 40)]
        g = torch.Generator().manual_seed(3)
        t = sample_timesteps(tcfg, len(z0), generator=g)
        x1 = [torch.randn(z.shape, generator=g) for z in z0]
        alone = [(model(interpolate(z, n, t[i:i + 1]), t[i:i + 1], cond.index([i])) - velocity(z, n)).pow(2).mean()
                 for i, (z, n) in enumerate(zip(z0, x1))]
    torch.testing.assert_close(losses[0], torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)


def test_pack_tokens_without_a_cache_is_one_clear_line(capsys, tmp_path):
    import yaml
    from conftest import tiny_recipe_dict
    from test_cli import assert_one_line_error, run_cli

    r = tiny_recipe_dict(tmp_path / "run")
    r["dit"]["pack_tokens"] = 64
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    code, _, err = run_cli(capsys, "train", tmp_path / "r.yaml")
    assert_one_line_error(code, err, "dit.pack_tokens packs clips of mixed shapes from a prepared cache", "--data CACHE")
    assert not (tmp_path / "run").exists()  # refused before any work
