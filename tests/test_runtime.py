"""The device and precision policy (kinema.runtime): what `auto` picks on which hardware, that the
choice reaches every model, and that bad devices and precisions are refused before any work."""

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from kinema import runtime
from kinema.errors import KinemaError
from kinema.pipelines.registry import resolve
from kinema.runtime import CPUBf16, Runtime, choose_precision, cpu_runtime, probe_cpu_bf16, resolve_runtime

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_cpu(native: bool):
    return lambda: CPUBf16(native, 2.0 if native else 0.01, (), "injected for the test")


# ---- the rule: which precision `auto` picks, with the hardware capability injected

@pytest.mark.parametrize("device,native,expected", [
    (CPU, False, "fp32"),  # a CPU that emulates bf16 (Zen 3, most laptops)
    (CPU, True, "bf16"),  # AVX512_BF16 / AMX
    (CUDA, True, "bf16"),  # Ampere and newer
    (CUDA, False, "fp16"),  # Volta / Turing: fp16 (training adds a GradScaler)
    (torch.device("mps"), True, "fp32"),
])
def test_auto_precision_follows_the_hardware(device, native, expected):
    assert choose_precision(device, "auto", bf16_native=native)[0] == expected


@pytest.mark.parametrize("native", [False, True])
def test_auto_on_cpu_uses_the_cached_measurement(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_bf16", fake_cpu(native))
    rt = resolve_runtime("cpu", "auto")
    assert rt.precision == ("bf16" if native else "fp32") and rt.reason == "injected for the test"
    assert resolve_runtime("cpu", "fp32").precision == "fp32" and resolve_runtime("cpu", "bf16").precision == "bf16"


@pytest.mark.parametrize("fp32_s,bf16_s,native", [(1.0, 0.45, True), (1.0, 60.0, False), (1.0, 2.8, False)])
def test_probe_decides_by_measured_speed(fp32_s, bf16_s, native):
    """bf16 is 'fast' exactly when the timed bf16 matmul beats fp32 (AMX ~0.1-0.5x the time,
    emulated AVX512 ~3x, AVX2 ~60x)."""
    timer = {torch.float32: fp32_s, torch.bfloat16: bf16_s}.get
    probe = probe_cpu_bf16(timer=timer, env={})
    assert probe.native is native and probe.speedup == pytest.approx(fp32_s / bf16_s)
    assert f"{fp32_s / bf16_s:.2g}x" in probe.how


def test_probe_env_override_skips_the_measurement():
    def never(dtype):
        raise AssertionError("timed although KINEMA_CPU_BF16 was set")

    assert probe_cpu_bf16(timer=never, env={"KINEMA_CPU_BF16": "0"}).native is False
    assert probe_cpu_bf16(timer=never, env={"KINEMA_CPU_BF16": "1"}).native is True
    with pytest.raises(KinemaError, match="KINEMA_CPU_BF16"):
        probe_cpu_bf16(timer=never, env={"KINEMA_CPU_BF16": "yes"})


def test_real_probe_runs_once_per_process():
    first = runtime.cpu_bf16()
    assert isinstance(first.native, bool) and runtime.cpu_bf16() is first
    assert runtime.cpu_bf16.cache_info().hits >= 1


def test_explicit_precision_is_kept_and_fp32_enables_tf32_on_cuda():
    assert choose_precision(CUDA, "fp32", bf16_native=True) == ("fp32", "asked for")
    assert choose_precision(CUDA, "fp16", bf16_native=True)[0] == "fp16"
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        Runtime(CUDA, "bf16").activate()
        assert not torch.backends.cuda.matmul.allow_tf32  # bf16 leaves fp32 matmuls alone
        Runtime(CUDA, "fp32").activate()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_runtime_autocast_dtype():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with cpu_runtime(precision).autocast():
            assert lin(x).dtype == dtype


# ---- bad input: one line, exit 2, before any model is loaded or any training starts

@pytest.mark.parametrize("device,precision,words", [
    ("tpu", "auto", ["unknown device 'tpu'", "available here: cpu"]),
    ("auto", "fp8", ["unknown precision 'fp8'", "fp32"]),
    ("cpu", "fp16", ["'fp16' needs a GPU", "fp32 or bf16"]),
    ("cuda:x", "auto", ["cuda:x"]),
])
@pytest.mark.parametrize("command", [["generate", "a red circle"], ["eval", "shapes", "--seeds", "1"],
                                     ["eval", "vae", "--clips", "1"], ["info"]])
def test_bad_device_or_precision_is_one_line(capsys, monkeypatch, tiny_model_dir, command, device, precision, words):
    if device == "cuda:x" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
        words = [device]
    code, _, err = run_cli(capsys, *command, "--model", tiny_model_dir, "--device", device, "--precision", precision)
    assert_one_line_error(code, err, *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_line(capsys, tiny_model_dir, device):
    code, _, err = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--device", device)
    assert_one_line_error(code, err, "no CUDA GPU", "available: cpu")


def test_train_refuses_a_bad_precision_before_any_work(capsys, tmp_path):
    import yaml
    from conftest import tiny_recipe_dict

    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "run")))
    code, _, err = run_cli(capsys, "train", cfg, "--precision", "fp16", "--device", "cpu")
    assert_one_line_error(code, err, "'fp16' needs a GPU")
    assert not (tmp_path / "run").exists()


# ---- the choice reaches the models

def spy_on_denoiser(monkeypatch):
    """Record (autocast dtype or None, parameter device) at every denoiser call."""
    from kinema.dit.transformer import MMDiT

    seen = []
    real = MMDiT.forward

    def forward(self, x, t, cond):
        dev = x.device.type
        seen.append((torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None,
                     next(self.parameters()).device.type, cond.text.tokens.device.type))
        return real(self, x, t, cond)

    monkeypatch.setattr(MMDiT, "forward", forward)
    return seen


@pytest.mark.parametrize("precision,dtype", [("fp32", None), ("bf16", torch.bfloat16)])
def test_generate_flags_reach_the_denoiser(capsys, monkeypatch, tiny_model_dir, tmp_path, precision, dtype):
    seen = spy_on_denoiser(monkeypatch)
    code, _, _ = run_cli(capsys, "generate", "a red circle", "--model", tiny_model_dir, "--frames", 9, "--steps", 2,
                         "--device", "cpu", "--precision", precision, "-o", tmp_path / "v.mp4")
    assert code == 0 and seen == [(dtype, "cpu", "cpu")] * 2


def test_auto_precision_reaches_the_pipeline(monkeypatch, tiny_model_dir):
    import kinema

    seen = spy_on_denoiser(monkeypatch)
    monkeypatch.setattr(runtime, "cpu_bf16", fake_cpu(False))
    pipe = kinema.load_pipeline(tiny_model_dir, device="cpu")
    assert pipe.precision == "fp32"
    pipe("a red circle", num_frames=1, steps=1)
    monkeypatch.setattr(runtime, "cpu_bf16", fake_cpu(True))
    pipe = kinema.load_pipeline(tiny_model_dir, device="cpu")
    pipe("a red circle", num_frames=1, steps=1)
    assert pipe.precision == "bf16" and seen == [(None, "cpu", "cpu"), (torch.bfloat16, "cpu", "cpu")]


def test_eval_flags_reach_the_pipeline(monkeypatch, tiny_model_dir):
    from kinema.eval.report import evaluate_shapes

    seen = spy_on_denoiser(monkeypatch)
    monkeypatch.setattr("kinema.eval.report.shapes.combos", lambda: [("red", "circle", "right"), ("yellow", "triangle", "up")])
    result = evaluate_shapes(str(tiny_model_dir), seeds=1, steps=1, device="cpu", precision="bf16")
    assert seen == [(torch.bfloat16, "cpu", "cpu")]
    assert result["settings"]["precision"] == "bf16" and result["settings"]["device"] == "cpu"


def test_train_logs_and_uses_the_precision_it_chose(capsys, monkeypatch, tmp_path):
    import yaml
    from conftest import tiny_recipe_dict

    from kinema.train import dit_stage

    seen = []
    real = dit_stage.flow_loss
    monkeypatch.setattr(dit_stage, "flow_loss", lambda m, *a: seen.append(torch.is_autocast_enabled("cpu")) or real(m, *a))
    recipe = tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=1)
    recipe.pop("precision")  # the recipe default: auto
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(runtime, "cpu_bf16", fake_cpu(False))
    code, _, _ = run_cli(capsys, "train", cfg, "--device", "cpu")
    assert code == 0 and seen == [False]  # fp32: no autocast
    log = (tmp_path / "run" / "train_log.txt").read_text()
    assert "device cpu" in log and "precision fp32: injected for the test" in log


def test_shipped_recipe_says_auto():
    from kinema.train.recipe import Recipe, load_recipe

    assert Recipe().precision == "auto" and Recipe().device == "auto"
    assert load_recipe("configs/shapes.yaml").precision == "auto"


def test_info_says_what_would_be_used_and_why(capsys, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(runtime, "cpu_bf16", fake_cpu(False))
    code, out, _ = run_cli(capsys, "info", "--model", tiny_model_dir, "--device", "cpu")
    assert code == 0 and "runtime: device cpu" in out and "precision fp32: injected for the test" in out
    code, out, _ = run_cli(capsys, "info", "--model", tiny_model_dir, "--device", "cpu", "--precision", "bf16")
    assert "precision bf16: asked for" in out


def test_compile_flag_compiles_the_denoiser(tiny_model_dir):
    import kinema

    assert kinema.load_pipeline(tiny_model_dir, device="cpu").dit._compiled_call_impl is None
    assert kinema.load_pipeline(tiny_model_dir, device="cpu", compile=True).dit._compiled_call_impl is not None


def test_noise_is_drawn_on_the_cpu(monkeypatch, tiny_model_dir):
    """Seeds give the same noise on every device: it is drawn by a CPU generator, then moved."""
    import kinema
    from kinema.pipelines import pipeline

    drawn = []
    real = pipeline.initial_noise
    monkeypatch.setattr(pipeline, "initial_noise", lambda *a: drawn.append(real(*a)) or drawn[-1])
    pipe = kinema.load_pipeline(tiny_model_dir, device="cpu", precision="fp32")
    pipe("a red circle", num_frames=1, steps=1, seed=7)
    assert drawn[0].device.type == "cpu"
    expected = torch.randn(drawn[0].shape[1:], generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn[0][0], expected)


def test_fp16_training_uses_a_grad_scaler_and_resumes_exactly(tmp_path):
    """fp16 (GPUs without bf16) trains through a GradScaler whose state is checkpointed. CPU autocast
    runs fp16 too, so the logic is checked here; tests/test_gpu.py runs it on CUDA."""
    from test_train import _toy_fit

    from kinema.train.checkpoint import latest_checkpoint, load_trainer_state

    # a loss weighted 1e4: its gradients overflow fp16 at the initial scale 2^16, so the scaler
    # backs off over the first steps, and a resume that forgot its scale would redo that
    straight, _ = _toy_fit(tmp_path / "a", 30, precision="fp16", loss_weight=1e4)
    state = load_trainer_state(latest_checkpoint(tmp_path / "a"))
    assert 0 < state["scaler"]["scale"] < 2.0**16  # it backed off: the scaler is in the loop
    with pytest.raises(KinemaError):
        _toy_fit(tmp_path / "b", 30, interrupt_at=11, precision="fp16", loss_weight=1e4)
    resumed, _ = _toy_fit(tmp_path / "b", 30, resume=True, precision="fp16", loss_weight=1e4)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


# ---- the shipped model agrees with itself across precisions

PROMPTS = [("red", "circle", "right"), ("blue", "square", "up-left"), ("green", "triangle", "down"),
           ("magenta", "circle", "still"), ("yellow", "square", "left"), ("cyan", "triangle", "up-right")]


@pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")
def test_shipped_model_fp32_and_bf16_agree_and_both_pass_the_oracle():
    """Measured on an AVX512_BF16 CPU: per-clip PSNR between the two 41.8-56.1 dB, mean absolute
    difference 0.04-0.30 grey levels, every verdict right in both. Tolerance: PSNR >= 35 dB, mean
    difference < 1 level."""
    import kinema
    from kinema.data.captions import canonical_caption
    from kinema.eval.oracle import judge

    prompts = [canonical_caption(*c) for c in PROMPTS]
    out = {p: kinema.load_pipeline("shapes", device="cpu", precision=p)(prompts, seed=list(range(len(prompts))))
           for p in ("fp32", "bf16")}
    for i, combo in enumerate(PROMPTS):
        for p in ("fp32", "bf16"):
            v = judge(out[p][i])
            assert (v.colour, v.shape, v.direction) == combo, (p, combo, v)
        a, b = out["fp32"][i].astype(np.float64), out["bf16"][i].astype(np.float64)
        mse = ((a - b) ** 2).mean()
        assert np.abs(a - b).mean() < 1.0 and 10 * np.log10(255**2 / max(mse, 1e-10)) >= 35.0, combo


@pytest.mark.slow
def test_compiled_denoiser_matches_eager_on_the_cpu():
    """`--compile` changes speed, not results (about 30 s of inductor compile on a 2-core CPU)."""
    from conftest import random_text, randomize_, tiny_model_config

    from kinema.dit.transformer import MMDiT

    cfg = tiny_model_config()
    dit = randomize_(MMDiT(cfg.dit)).eval()
    cond = random_text(2, dim=cfg.dit.text_dim)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2)
    with torch.no_grad():
        eager = dit(x, t, cond)
        dit.compile()
        compiled = dit(x, t, cond)
    assert dit._compiled_call_impl is not None
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_models_are_device_clean():
    """Every tensor a model, loss or sampler makes lands on its input's device. Run on "meta" (no
    data; an op mixing it with a CPU tensor fails), this stands in for CUDA on a machine without
    one: it caught RoPE frequencies built on the CPU next to positions on the GPU."""
    from conftest import random_text, tiny_model_config

    from kinema.dit.transformer import MMDiT
    from kinema.flow.timesteps import TimestepConfig
    from kinema.pipelines.generate import sample_latents
    from kinema.text.encoders import MiniLMEncoder
    from kinema.train.dit_stage import CaptionSampler, flow_loss
    from kinema.train.ema import EMA
    from kinema.train.trainer import seeded
    from kinema.vae.autoencoder import CausalVAE
    from kinema.vae.losses import difference_error, kl_divergence, pixel_weights

    meta = torch.device("meta")
    cfg = tiny_model_config()
    dit = MMDiT(cfg.dit).to(meta)
    cond = random_text(2, dim=cfg.dit.text_dim).to(meta)
    z = torch.randn(2, 4, 3, 4, 4, device=meta)
    assert dit(z, torch.rand(2, device=meta), cond).device == meta
    assert dit(z, torch.rand(2, 3, device=meta), cond).device == meta  # per-frame timesteps
    assert flow_loss(dit, z, cond, TimestepConfig(), seeded(0, 0)).device == meta
    rt = Runtime(meta, "fp32")
    assert sample_latents(dit, cond, cond, z, steps=2, guidance=3.0, sampler="heun", runtime=rt).device == meta

    vae = CausalVAE(cfg.vae).to(meta)
    x = torch.randn(1, 3, 9, 32, 32, device=meta)
    mean, logvar = vae.encode(x)
    recon = vae.decode(mean)
    w = pixel_weights(x, 20.0, recon)
    terms = (difference_error(recon, x, 3, w), difference_error(recon, x, 2), kl_divergence(mean, logvar), vae.normalize(mean))
    assert all(term.device == meta for term in terms)  # (vae_loss itself logs floats, which meta cannot give)

    text = MiniLMEncoder(max_tokens=8).to(meta)(["a red circle", ""])
    assert text.tokens.device == meta and text.pooled.device == meta

    n = 4
    cache = {"caption_combo": torch.tensor([0, 0, 1, 1]), "text_tokens": torch.randn(n, 8, 384),
             "text_mask": torch.ones(n, 8, dtype=torch.bool), "text_pooled": torch.randn(n, 384),
             "empty_tokens": torch.zeros(1, 8, 384), "empty_mask": torch.ones(1, 8, dtype=torch.bool),
             "empty_pooled": torch.zeros(1, 384)}
    states = CaptionSampler(cache, 0.5, 0.5, meta)(torch.tensor([0, 1, 1]), seeded(0, 1))
    assert states.tokens.device == meta and states.mask.device == meta

    ema = EMA(dit, 0.9)
    ema.load_state_dict({k: torch.zeros(v.shape) for k, v in dit.state_dict().items()}, updates=3)  # from disk: CPU
    ema.update(dit)
    assert all(v.device == meta for v in ema.state_dict().values())


def test_resume_in_another_precision_is_noted_in_the_log(tmp_path):
    from kinema.train.trainer import Log, OptimConfig, fit

    def train(precision, resume=False):
        model = torch.nn.Linear(4, 1)
        fit(model, lambda m, step: (m(torch.ones(2, 4)).float().pow(2).mean(), {}), steps=4 if resume else 2,
            optim=OptimConfig(warmup=1), run_dir=tmp_path / "ckpt", config={}, log=Log(tmp_path / "log.txt"),
            resume=resume, runtime=cpu_runtime(precision))

    train("fp32")
    train("fp32", resume=True)
    assert "note:" not in (tmp_path / "log.txt").read_text()
    train("bf16", resume=True)  # nothing left to do at step 4, but the checkpoint says fp32
    assert "trained on cpu fp32 and continues on cpu bf16" in (tmp_path / "log.txt").read_text()
