import math

import pytest
import torch

from kinema.errors import KinemaError
from kinema.flow.guidance import cfg_combine
from kinema.flow.paths import interpolate, velocity
from kinema.flow.samplers import SAMPLERS, euler, heun
from kinema.flow.timesteps import TimestepConfig, sample_timesteps, sampling_schedule, shift_timesteps
from kinema.pipelines.generate import guided_velocity, initial_noise


def test_path_endpoints_and_velocity():
    x0, x1 = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(3)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(3)), x1)
    h = 1e-3
    t = torch.full((3,), 0.4)
    fd = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t)) / h
    torch.testing.assert_close(fd, velocity(x0, x1), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("sampler", [euler, heun])
@pytest.mark.parametrize("steps", [1, 3, 25])
def test_samplers_are_exact_on_a_straight_path(sampler, steps):
    x0, x1 = torch.randn(2, 5), torch.randn(2, 5)
    v = velocity(x0, x1)
    out = sampler(lambda x, t: v, x1.clone(), sampling_schedule(steps, shift=3.0))
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)


def test_heun_is_second_order_and_euler_first_order():
    # dx/dt = x from t=1 to 0: exact x(0) = x(1) * e^-1
    err = {}
    for name in ("euler", "heun"):
        e = [abs(SAMPLERS[name](lambda x, t: x, torch.ones(1), sampling_schedule(n)).item() - math.exp(-1)) for n in (10, 20)]
        err[name] = e[0] / e[1]
    assert 1.8 < err["euler"] < 2.2 and 3.6 < err["heun"] < 4.4


def test_guidance_scale_one_is_the_conditional_prediction():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return x * cond.text.pooled[:, :1, None, None, None]

    from conftest import random_text

    cond, uncond = random_text(2, seed=1), random_text(2, seed=2)
    x = torch.randn(2, 4, 1, 2, 2)
    v1 = guided_velocity(model, cond, uncond, 1.0)(x, 0.5)
    torch.testing.assert_close(v1, model(x, None, cond))
    v_cond, v_uncond = model(x, None, cond), model(x, None, uncond)
    torch.testing.assert_close(guided_velocity(model, cond, uncond, 4.0)(x, 0.5), v_uncond + 4.0 * (v_cond - v_uncond))
    torch.testing.assert_close(cfg_combine(v_cond, v_uncond, 0.0), v_uncond)


def test_initial_noise_is_batch_invariant():
    a = initial_noise((2, 3), [5, 7])
    torch.testing.assert_close(a[1], initial_noise((2, 3), [7])[0])
    assert not torch.allclose(a[0], a[1])


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    for kind in ("uniform", "logit_normal", "u_shaped"):
        t = sample_timesteps(TimestepConfig(kind=kind), 20000, g)
        assert t.min() > 0 and t.max() < 1
    ln = sample_timesteps(TimestepConfig(kind="logit_normal"), 20000, g)
    assert abs(ln.median().item() - 0.5) < 0.02 and (ln - 0.5).abs().mean() < 0.25  # peaked in the middle
    u = sample_timesteps(TimestepConfig(kind="u_shaped", a=5.0), 20000, g)
    ends, middle = ((u < 0.1) | (u > 0.9)).float().mean(), ((u > 0.4) & (u < 0.6)).float().mean()
    assert ends > 5 * middle  # mass at both ends
    shifted = sample_timesteps(TimestepConfig(kind="uniform", shift=3.0), 20000, g)
    assert shifted.mean() > 0.6  # shift moves mass towards noise
    with pytest.raises(KinemaError, match="kind 'nope': use one of uniform, logit_normal, u_shaped"):
        TimestepConfig(kind="nope")


def test_shift_keeps_endpoints_and_order():
    t = torch.linspace(0, 1, 11)
    s = shift_timesteps(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and torch.all(s.diff() > 0) and torch.all(s >= t)
