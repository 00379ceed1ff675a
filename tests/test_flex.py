"""Flex attention for block-sparse masks: the same outputs as SDPA with the dense mask, and a kernel
choice that never picks flex on the CPU unless forced, and falls back when a kernel fails."""

import pytest
import torch
from conftest import random_text, randomize_

from kinema.config import DIT_PRESETS, DiTConfig
from kinema.dit.transformer import MMDiT
from kinema.errors import KinemaError
from kinema.nn import flex

pytestmark = [pytest.mark.skipif(not flex.flex_available(), reason="this PyTorch has no flex attention"),
              # forced flex on the CPU runs eagerly, which is what the warning says: expected here
              pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]


def outputs(cfg: DiTConfig, monkeypatch, kernel: str) -> torch.Tensor:
    monkeypatch.setenv("KINEMA_ATTENTION", kernel)
    torch.manual_seed(0)
    model = randomize_(MMDiT(cfg), std=0.2).eval()
    x, t = torch.randn(2, 4, 3, 4, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        return model(x, t, random_text(2))


@pytest.mark.parametrize("preset,attention", [("tiny", ("window", "causal")), ("tiny", ("spatial", "temporal")),
                                              ("wan-tiny", ("window", "causal"))])
def test_flex_equals_sdpa_with_the_dense_mask(preset, attention, monkeypatch):
    """MM-DiT's joint masks (text padding included) and cross blocks' video masks, both kernels."""
    cfg = DiTConfig(**{**DIT_PRESETS[preset].__dict__, "attention": attention, "window": (1, 3, 3), "text_dim": 384})
    calls = []
    real = flex.flex_attention_masked
    monkeypatch.setattr(flex, "flex_attention_masked", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr("kinema.nn.attention.flex_attention_masked", flex.flex_attention_masked)
    got = outputs(cfg, monkeypatch, "flex")
    assert calls  # flex really ran
    want = outputs(cfg, monkeypatch, "sdpa")
    assert want.abs().mean() > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_auto_never_picks_flex_on_the_cpu(monkeypatch):
    monkeypatch.delenv("KINEMA_ATTENTION", raising=False)
    q = k = v = torch.randn(1, 2, 8, 16)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]
    assert flex.choose_kernel(q, k, v, causal) == "sdpa"
    monkeypatch.setenv("KINEMA_ATTENTION", "flex")
    assert flex.choose_kernel(q, k, v, causal) == "flex"
    assert flex.choose_kernel(q, k, v, causal[..., :1, :]) == "sdpa"  # a key-padding mask is not block-sparse
    assert flex.choose_kernel(q, k, v, None) == "sdpa"


def test_forced_flex_refuses_to_train_on_the_cpu_and_bad_names_are_refused(monkeypatch):
    monkeypatch.setenv("KINEMA_ATTENTION", "flex")
    q = torch.randn(1, 2, 8, 16, requires_grad=True)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]
    with pytest.raises(KinemaError, match="no backward on the CPU"):
        flex.choose_kernel(q, q, q, causal)
    monkeypatch.setenv("KINEMA_ATTENTION", "fast")
    with pytest.raises(KinemaError, match="KINEMA_ATTENTION"):
        flex.choose_kernel(q, q, q, causal)


def test_measurement_keeps_the_kernel_that_works(monkeypatch):
    """A kernel that raises (an unsupported head dim, say) loses; otherwise the faster one wins."""
    q = k = v = torch.randn(1, 2, 8, 16)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]

    def broken(*a, **kw):
        raise RuntimeError("unsupported")

    monkeypatch.setattr(flex, "flex_attention_masked", broken)
    assert flex._measure(q, k, v, causal) == "sdpa"
    monkeypatch.undo()
    monkeypatch.setattr(flex.F, "scaled_dot_product_attention", broken)
    assert flex._measure(q, k, v, causal) == "flex"


def test_block_mask_is_built_once_per_mask():
    a = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    first = flex.block_mask(a)
    assert flex.block_mask(a) is first
    assert flex.block_mask(a.clone()) is not first


def test_auto_measures_once_per_shape_and_density_then_reads_the_mask(monkeypatch):
    """Off the CPU, the first mask of a shape and density is timed; the choice is remembered on
    the mask (no device sync per block) and for later masks like it (no new measurement)."""
    monkeypatch.delenv("KINEMA_ATTENTION", raising=False)
    measured = []
    monkeypatch.setattr(flex, "_measure", lambda *a: measured.append(1) or "flex")
    monkeypatch.setattr(flex, "_choices", {})
    q = torch.randn(1, 2, 8, 16, device="meta")  # not the CPU: as on a GPU, without one
    causal = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]
    masks = [causal.to("meta") for _ in range(2)]
    monkeypatch.setattr(torch.Tensor, "mean", lambda self, *a, **kw: torch.tensor(0.56))  # meta has no values
    assert [flex.choose_kernel(q, q, q, m) for m in (masks[0], masks[0], masks[1])] == ["flex"] * 3
    assert len(measured) == 1 and masks[0]._kinema_kernel == "flex"
