"""CUDA paths: skipped cleanly without a GPU. Run with `make test` on a machine with one (the whole
suite then also runs on the GPU, since `auto` picks it)."""

import numpy as np
import pytest
import torch
from conftest import random_text, randomize_, tiny_model_config, tiny_recipe_dict

from kinema.pipelines.registry import resolve

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def test_auto_picks_the_gpu_and_its_best_precision():
    from kinema.runtime import resolve_runtime

    rt = resolve_runtime()
    assert rt.device.type == "cuda"
    major, _ = torch.cuda.get_device_capability(rt.device)
    assert rt.precision == ("bf16" if major >= 8 else "fp16")
    assert torch.cuda.get_device_name(rt.device) in rt.reason


def test_pipeline_puts_every_model_on_the_gpu_and_matches_the_cpu(tiny_model_dir):
    """Same seed, same video on both devices: the noise is drawn on the CPU."""
    import kinema

    gpu = kinema.load_pipeline(tiny_model_dir, device="cuda", precision="fp32")
    for module in (gpu.dit, gpu.vae, gpu.text_encoder.model):
        assert all(p.device.type == "cuda" for p in module.parameters())
    cpu = kinema.load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    a = gpu("a red circle moving left", num_frames=9, steps=4, seed=5)
    b = cpu("a red circle moving left", num_frames=9, steps=4, seed=5)
    assert a.dtype == np.uint8 and a.shape == b.shape
    assert np.abs(a.astype(int) - b).mean() < 1.0 and psnr(a, b) > 35.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_run_under_autocast_on_the_gpu(tiny_model_dir, precision):
    import kinema

    pipe = kinema.load_pipeline(tiny_model_dir, device="cuda", precision=precision)
    seen = []
    hook = pipe.dit.single[0].register_forward_hook(lambda m, i, o: seen.append(torch.get_autocast_dtype("cuda")))
    frames = pipe(["a red circle", "a blue square moving up"], num_frames=9, steps=2)
    hook.remove()
    assert frames.shape == (2, 9, 32, 32, 3) and seen and set(seen) == {pipe.runtime.dtype}


def test_attention_runs_on_the_fused_gpu_kernels():
    """FlashAttention for unmasked attention, the memory-efficient kernel with a key-padding mask:
    each raises "No available kernel" if the layout or dtype does not fit it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kinema.dit.transformer import MMDiT
    from kinema.nn.attention import attention, key_padding_mask

    q, k, v = (torch.randn(2, 4, 96, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash = attention(q, k, v)
    ref = attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(flash.float(), ref, atol=2e-2, rtol=2e-2)
    valid = torch.ones(2, 96, dtype=torch.bool, device="cuda")
    valid[0, 80:] = False
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        attention(q, k, v, key_padding_mask(valid))
    cfg = tiny_model_config()
    dit = randomize_(MMDiT(cfg.dit)).cuda()
    cond = random_text(2, dim=cfg.dit.text_dim).to("cuda")
    x, t = torch.randn(2, 4, 3, 4, 4, device="cuda"), torch.rand(2, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            fused = dit(x, t, cond)
        with sdpa_kernel(SDPBackend.MATH):
            math = dit(x, t, cond)
    torch.testing.assert_close(fused, math, atol=3e-2, rtol=3e-2)


def test_compiled_denoiser_matches_eager_on_the_gpu():
    from kinema.dit.transformer import MMDiT

    cfg = tiny_model_config()
    dit = randomize_(MMDiT(cfg.dit)).cuda().eval()
    cond = random_text(2, dim=cfg.dit.text_dim).to("cuda")
    x, t = torch.randn(2, 4, 3, 4, 4, device="cuda"), torch.rand(2, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = dit(x, t, cond)
        dit.compile()
        compiled = dit(x, t, cond)
    torch.testing.assert_close(compiled, eager, atol=2e-2, rtol=2e-2)


def test_pinned_copies_reach_the_gpu():
    from kinema.runtime import to_device

    x = torch.randn(3, 5)
    y = to_device(x, torch.device("cuda"))
    torch.cuda.synchronize()
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_runs_on_the_gpu_and_resumes(tmp_path, precision):
    """The tiny recipe trains, checkpoints and exports on CUDA; a killed run resumes to the same model
    (to within CUDA's non-deterministic reductions)."""
    import shutil

    from kinema.config import from_dict
    from kinema.io.weights import load_weights
    from kinema.train.recipe import Recipe, run

    def recipe(run_dir):
        return from_dict(Recipe, {**tiny_recipe_dict(run_dir), "device": "cuda", "precision": precision})

    full = run(recipe(tmp_path / "full"))
    log = (tmp_path / "full" / "train_log.txt").read_text()
    assert "device cuda" in log and f"precision {precision}" in log
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    shutil.rmtree(killed / "model")
    shutil.rmtree(killed / "dit" / "ckpt" / "step_0000004")
    (killed / "dit" / "ckpt" / "latest").write_text("step_0000002")
    resumed = run(recipe(killed), resume=True)
    for name in ("dit.safetensors", "vae.safetensors"):
        a, b = load_weights(full / name), load_weights(resumed / name)
        for key in a:
            torch.testing.assert_close(a[key].float(), b[key].float(), atol=1e-3, rtol=1e-2, msg=key)


@pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")
def test_shipped_model_on_the_gpu_draws_what_is_asked():
    """bf16 on the GPU against fp32 on the CPU: the same verdicts, close pixels."""
    from test_runtime import PROMPTS

    import kinema
    from kinema.data.captions import canonical_caption
    from kinema.eval.oracle import judge

    prompts = [canonical_caption(*c) for c in PROMPTS]
    seeds = list(range(len(prompts)))
    gpu = kinema.load_pipeline("shapes", device="cuda")(prompts, seed=seeds)
    cpu = kinema.load_pipeline("shapes", device="cpu", precision="fp32")(prompts, seed=seeds)
    for i, combo in enumerate(PROMPTS):
        v = judge(gpu[i])
        assert (v.colour, v.shape, v.direction) == combo, (combo, v)
        assert psnr(gpu[i], cpu[i]) > 30.0, combo


def test_window_attention_trains_through_flex_on_the_gpu(monkeypatch):
    """A window-attention model's gradients through compiled, block-sparse flex attention equal
    SDPA's with the dense mask (fp32), and training steps through flex lower the loss."""
    from kinema.config import DIT_PRESETS, DiTConfig
    from kinema.dit.transformer import MMDiT
    from kinema.nn import flex

    if not flex.flex_available():
        pytest.skip("this PyTorch has no flex attention")
    cfg = DiTConfig(**{**DIT_PRESETS["tiny"].__dict__, "attention": ("window", "causal"), "window": (1, 3, 3),
                       "text_dim": 384})
    g = torch.Generator().manual_seed(1)
    x, target = (torch.randn(2, 4, 3, 4, 6, generator=g).cuda() for _ in range(2))
    t, cond = torch.tensor([0.2, 0.7], device="cuda"), random_text(2).to("cuda")

    def step(kernel: str, steps: int = 1):
        monkeypatch.setenv("KINEMA_ATTENTION", kernel)
        model = randomize_(MMDiT(cfg), std=0.2).cuda()
        calls = []
        real = flex.flex_attention_masked
        monkeypatch.setattr("kinema.nn.attention.flex_attention_masked", lambda *a: calls.append(1) or real(*a))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = (model(x, t, cond) - target).pow(2).mean()
            loss.backward()
            losses.append(loss.item())
            if steps > 1:
                opt.step()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return grads, losses, len(calls)

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32: an exact comparison
    try:
        flex_grads, _, flex_calls = step("flex")
        sdpa_grads, _, sdpa_calls = step("sdpa")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert flex_calls and not sdpa_calls  # each kernel really ran
    assert sdpa_grads.abs().mean() > 1e-4
    torch.testing.assert_close(flex_grads, sdpa_grads, atol=1e-4, rtol=1e-3)
    _, losses, _ = step("flex", steps=20)
    assert losses[-1] < 0.8 * losses[0]
