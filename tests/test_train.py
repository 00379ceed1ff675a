import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_model_config, tiny_recipe_dict

from kinema.config import from_dict
from kinema.errors import KinemaError
from kinema.flow.timesteps import TimestepConfig
from kinema.io.weights import load_weights
from kinema.runtime import cpu_runtime
from kinema.train.checkpoint import latest_checkpoint, save_checkpoint
from kinema.train.recipe import Recipe, run
from kinema.train.trainer import Log, OptimConfig, fit, lr_at, seeded


def test_checkpoint_round_trip_and_latest_pointer(tmp_path):
    model = torch.nn.Linear(4, 3)
    save_checkpoint(tmp_path, 5, {"model": model.state_dict()}, {"a": 1}, {"step": 5})
    save_checkpoint(tmp_path, 10, {"model": model.state_dict()}, {"a": 1}, {"step": 10})
    save_checkpoint(tmp_path, 15, {"model": model.state_dict()}, {"a": 1}, {"step": 15})
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_0000015"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000010", "step_0000015"]  # keeps 2
    assert not list(tmp_path.glob(".tmp*"))
    other = torch.nn.Linear(4, 3)
    other.load_state_dict(load_weights(ckpt / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_weights_files_follow_the_umask(tmp_path):
    import os

    from kinema.io.weights import save_weights

    old = os.umask(0o022)
    try:
        save_weights(tmp_path / "a.safetensors", {"w": torch.zeros(2)})  # safetensors alone writes 0600
        os.umask(0o077)
        save_weights(tmp_path / "b.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o600


def test_corrupt_weights_give_a_clear_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(KinemaError, match="corrupt"):
        load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(KinemaError, match="missing"):
        load_weights(tmp_path / "absent.safetensors")


def test_lr_schedule_warms_up_then_decays():
    cfg = OptimConfig(lr=1.0, warmup=10, min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def _toy_fit(tmp_path, steps, resume=False, interrupt_at=None, precision="fp32", loss_weight=1.0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    target = torch.nn.Linear(8, 1)

    def loss_fn(m, step):
        if step == interrupt_at:
            raise KeyboardInterrupt
        x = torch.randn(32, 8, generator=seeded(0, step))
        return loss_weight * (m(x).float() - target(x).detach()).pow(2).mean(), {}

    ema = fit(model, loss_fn, steps=steps, optim=OptimConfig(lr=1e-2, warmup=2), run_dir=tmp_path, config={},
              log=Log(tmp_path / "log.txt"), ema_decay=0.9, resume=resume, runtime=cpu_runtime(precision), ckpt_every=1000)
    return model, ema


def test_interrupted_run_resumes_exactly(tmp_path):
    straight, straight_ema = _toy_fit(tmp_path / "a", 12)
    with pytest.raises(KinemaError, match="--resume"):
        _toy_fit(tmp_path / "b", 12, interrupt_at=5)  # Ctrl-C saves a checkpoint
    with pytest.raises(KinemaError, match="--resume"):
        _toy_fit(tmp_path / "b", 12)  # refusing to overwrite without --resume
    resumed, resumed_ema = _toy_fit(tmp_path / "b", 12, resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for k in straight_ema.state_dict():
        assert torch.equal(straight_ema.state_dict()[k], resumed_ema.state_dict()[k])


def test_a_signal_stops_training_after_the_current_step(tmp_path):
    """A signal during step 5 (kinema.cli's handler calls STOP.ask) lets the step finish, then saves
    step 6 and stops: the handler never raises inside the step (e.g. in tqdm's lock)."""
    from kinema.train.trainer import STOP

    assert not STOP.ask()  # no loop running: the handler must interrupt at once
    model = torch.nn.Linear(4, 1)
    seen = []

    def loss_fn(m, step):
        seen.append(step)
        if step == 5:
            assert STOP.ask() and not STOP.ask()  # the first signal waits for the step; a second would not
        return m(torch.ones(2, 4)).pow(2).mean(), {}

    with pytest.raises(KinemaError, match="interrupted after step 6"):
        fit(model, loss_fn, steps=20, optim=OptimConfig(lr=1e-2, warmup=1), run_dir=tmp_path, config={},
            log=Log(tmp_path / "log.txt"), runtime=cpu_runtime("fp32"), ckpt_every=1000)
    assert seen == list(range(6)) and (tmp_path / "latest").is_file()
    assert not STOP.armed and not STOP.ask()  # the loop disarms on the way out


def test_killed_recipe_resumes_exactly(tmp_path):
    """Kill = lose everything after the last periodic checkpoint; --resume must give the same model."""
    full = run(from_dict(Recipe, tiny_recipe_dict(tmp_path / "full", vae_steps=4, dit_steps=4)))
    killed_dir = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed_dir)
    shutil.rmtree(killed_dir / "model")
    ckpts = killed_dir / "dit" / "ckpt"
    shutil.rmtree(ckpts / "step_0000004")
    (ckpts / "latest").write_text("step_0000002")
    resumed = run(from_dict(Recipe, tiny_recipe_dict(killed_dir, vae_steps=4, dit_steps=4)), resume=True)
    for name in ("dit.safetensors", "vae.safetensors"):
        a, b = load_weights(full / name), load_weights(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_training_reduces_the_loss(tmp_path):
    """The real VAE and DiT losses on a fixed batch drop after a short training run."""
    from conftest import random_text

    from kinema.dit.transformer import MMDiT
    from kinema.train.dit_stage import flow_loss
    from kinema.train.vae_stage import shapes_batch
    from kinema.vae.autoencoder import CausalVAE
    from kinema.vae.losses import VAELossConfig, vae_loss

    cfg = tiny_model_config()
    torch.manual_seed(0)
    vae = CausalVAE(cfg.vae)
    x = shapes_batch(0, 0, 4, 5, 32)
    lcfg = VAELossConfig(foreground_weight=5.0)

    def vae_eval():
        with torch.no_grad():
            m, lv = vae.encode(x)
            return vae_loss(lcfg, vae.decode(m), x, m, lv)[0].item()

    before = vae_eval()
    fit(vae, lambda m, s: vae_loss(lcfg, m.decode(m.encode(x)[0]), x, *m.encode(x)), steps=40,
        optim=OptimConfig(lr=3e-3, warmup=5), run_dir=tmp_path / "vae", config={}, log=Log(tmp_path / "log"), runtime=cpu_runtime("fp32"))
    assert vae_eval() < 0.7 * before

    dit = MMDiT(cfg.dit)
    z0 = torch.randn(8, 4, 2, 4, 4)
    cond = random_text(8)

    def dit_eval():
        with torch.no_grad():
            return sum(flow_loss(dit, z0, cond, TimestepConfig(), seeded(1, i)).item() for i in range(8)) / 8

    before = dit_eval()
    fit(dit, lambda m, s: (flow_loss(m, z0, cond, TimestepConfig(), seeded(0, s)), {}),
        steps=120, optim=OptimConfig(lr=3e-3, warmup=5), run_dir=tmp_path / "dit", config={}, log=Log(tmp_path / "log"),
        runtime=cpu_runtime("fp32"))
    after = dit_eval()
    assert after < 0.8 * before, (after, before)  # 0.64 at 120 steps (60 steps sat at the edge: 0.80)


def test_ema_warms_up_then_tracks_slowly():
    from kinema.train.ema import EMA

    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay 0.1 -> mostly the new weights
    assert ema.state_dict()["weight"].mean().item() > 0.8
    assert ema.current_decay() < 0.2
    for _ in range(20000):
        ema.update(model)
    assert ema.current_decay() == 0.999


def test_vae_stage_with_image_batches(tmp_path):
    from kinema.train.vae_stage import VAEStage, train_vae

    cfg = tiny_model_config()
    log = Log(tmp_path / "log.txt")
    stage = VAEStage(steps=2, batch_size=1, frames=5, image_batch_size=3, log_every=1, ckpt_every=2, sample_every=0)
    train_vae(cfg.vae, stage, run_dir=tmp_path, seed=0, size=32, runtime=cpu_runtime("bf16"), resume=False, log=log)
    text = log.path.read_text()
    assert "image_l1" in text and "step 2/2" in text


def test_vae_length_schedule_switches_clip_length_and_batch(tmp_path, monkeypatch):
    from kinema.train import vae_stage

    recipe = from_dict(Recipe, {**tiny_recipe_dict(tmp_path), "vae": {
        "steps": 3, "batch_size": 2, "frames": 5, "length_schedule": [[2, 9, 1]], "log_every": 1,
        "ckpt_every": 3, "sample_every": 0}})
    assert recipe.vae.length_schedule == ((2, 9, 1),)
    seen = []
    real = vae_stage.shapes_batch

    def spy(seed, step, batch_size, frames, size, *rest, **kw):
        seen.append((step, batch_size, frames))
        return real(seed, step, batch_size, frames, size, *rest, **kw)

    monkeypatch.setattr(vae_stage, "shapes_batch", spy)
    vae_stage.train_vae(recipe.model.vae, recipe.vae, run_dir=tmp_path, seed=0, size=32, runtime=cpu_runtime("bf16"),
                        resume=False, log=Log(tmp_path / "log.txt"))
    assert seen == [(0, 2, 5), (1, 2, 5), (2, 1, 9)]


def test_recipe_base_merges_mappings_and_replaces_lists(tmp_path):
    from kinema.train.recipe import load_recipe

    (tmp_path / "base.yaml").write_text(
        "name: a\nmodel:\n  vae: {base_channels: 8, channel_mult: [1, 2, 4, 8]}\nvae: {steps: 10, batch_size: 3}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  vae: {channel_mult: [1, 2]}\nvae: {steps: 5}\n")
    r = load_recipe(tmp_path / "child.yaml", {"run_dir": "elsewhere"})
    assert r.name == "a" and r.run_dir == "elsewhere"
    assert r.model.vae.base_channels == 8 and r.model.vae.channel_mult == (1, 2)  # merged / replaced
    assert r.vae.steps == 5 and r.vae.batch_size == 3
    (tmp_path / "base.yaml").write_text("base: child.yaml\n")
    with pytest.raises(KinemaError, match="loop"):
        load_recipe(tmp_path / "child.yaml")


def test_a_derived_recipe_does_not_inherit_its_bases_export_dir(tmp_path):
    """A recipe renamed from its base but exporting where the base does would write its model over
    the base's (this once replaced the shipped Shapes model): refused when the recipe is read."""
    from kinema.train.recipe import load_recipe

    (tmp_path / "base.yaml").write_text("name: shapes\nexport_dir: shipped/shapes\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: forcing\n")
    with pytest.raises(KinemaError, match="recipe 'forcing' would export to its base's export_dir 'shipped/shapes'"):
        load_recipe(tmp_path / "child.yaml")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: forcing\nexport_dir: null\n")
    assert load_recipe(tmp_path / "child.yaml").export_dir is None
    (tmp_path / "child.yaml").write_text("base: base.yaml\nvae: {steps: 5}\n")  # the same recipe, retuned
    assert load_recipe(tmp_path / "child.yaml").export_dir == "shipped/shapes"


def test_shipped_experiment_recipes_load():
    from pathlib import Path

    from kinema.train.recipe import load_recipe

    root = Path(__file__).parents[1] / "configs"
    for path in sorted(root.rglob("*.yaml")):
        load_recipe(path)  # unknown keys or a broken base would raise
    assert load_recipe(root / "vae_4x4x4.yaml").model.vae.space_compression == 4


def test_decoder_stage_on_a_finished_run_retunes_the_decoder_only(tmp_path):
    """Adding vae_decoder to a finished recipe and resuming: encoder and denoiser stay bit for bit."""
    data = tiny_recipe_dict(tmp_path, vae_steps=2, dit_steps=2)
    before = run(from_dict(Recipe, data))
    vae_before, dit_before = load_weights(before / "vae.safetensors"), load_weights(before / "dit.safetensors")
    data["vae_decoder"] = {"steps": 2, "batch_size": 1, "frames": 5, "image_batch_size": 2, "log_every": 1,
                           "ckpt_every": 2, "sample_every": 0, "loss": {"gradient": 1.0},
                           "optim": {"lr": 1e-2, "warmup": 1}}  # steps that fp16 export can see
    after = run(from_dict(Recipe, data), resume=True)
    vae_after, dit_after = load_weights(after / "vae.safetensors"), load_weights(after / "dit.safetensors")
    assert all(torch.equal(dit_before[k], dit_after[k]) for k in dit_before)  # not retrained
    assert vae_before.keys() == vae_after.keys()
    for name in vae_before:
        same = torch.equal(vae_before[name], vae_after[name])
        assert same == name.startswith("encoder."), name  # encoder frozen, every decoder tensor moved
    text = (tmp_path / "train_log.txt").read_text()
    assert "[vae_decoder] step 2/2" in text and "image_gradient" in text
    assert "[dit] step" not in text.split("[vae_decoder]")[-1]  # no denoiser step after the tune


def test_vae_world_mixes_photos_with_shapes(tmp_path, monkeypatch):
    """vae.world "shapes+photos": the VAE stages draw from both worlds (the denoiser keeps the
    recipe's world); a world that does not exist is one clear error before any work."""
    from kinema.data import worlds
    from kinema.train import recipe as recipe_mod
    from kinema.train import vae_stage

    shapes_clip, photo_clip = worlds.render_clip("shapes", 3, 5, 32), worlds.render_clip("photos", 3, 5, 32)
    assert np.array_equal(worlds.render_clip("shapes+photos", 6, 5, 32), shapes_clip)  # even seeds: shapes, seed // 2
    assert np.array_equal(worlds.render_clip("shapes+photos", 7, 5, 32), photo_clip)
    seen = []
    real = worlds.render_clip
    monkeypatch.setattr(vae_stage, "render_clip", lambda w, *a: seen.append(w) or real(w, *a))
    data = {**tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=1), "vae": {
        "steps": 1, "batch_size": 2, "frames": 5, "world": "shapes+photos", "ckpt_every": 1, "sample_every": 0}}
    recipe_mod.run(from_dict(Recipe, data), stage="vae")
    assert seen and set(seen) == {"shapes+photos"}
    data["vae"]["world"] = "shapes+paintings"
    with pytest.raises(KinemaError, match="vae.world: unknown VAE world 'paintings'"):
        recipe_mod.run(from_dict(Recipe, data), stage="vae")


def test_vae_photo_augment_reaches_both_vae_stages_and_needs_photographs(tmp_path, monkeypatch):
    """vae.photo_augment: the VAE stage and the decoder fine-tune draw augmented clips; on a world
    without photographs it is one clear error before any work."""
    from kinema.data import worlds
    from kinema.train import recipe as recipe_mod
    from kinema.train import vae_stage

    seen = []
    real = worlds.render_clip
    monkeypatch.setattr(vae_stage, "render_clip", lambda w, s, f, z, augment=False: seen.append(augment) or real(w, s, f, z, augment))
    data = {**tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=1),
            "vae": {"steps": 1, "batch_size": 2, "frames": 5, "world": "photos", "photo_augment": True,
                    "ckpt_every": 1, "sample_every": 0},
            "vae_decoder": {"steps": 1, "batch_size": 1, "frames": 5, "ckpt_every": 1, "sample_every": 0}}
    recipe_mod.run(from_dict(Recipe, data), stage="vae")
    assert len(seen) == 3 and all(seen)  # two VAE-stage clips and one decoder clip
    assert json.loads((tmp_path / "run" / "run.json").read_text())["vae_photo_augment"] is True
    data["vae"]["world"] = "shapes"
    with pytest.raises(KinemaError, match="vae.photo_augment: the VAE's world 'shapes' has no photographs"):
        recipe_mod.run(from_dict(Recipe, data), stage="vae")
    seen.clear()
    data["vae"]["world"] = "leaves"  # dead-leaves pictures take a look too
    recipe_mod.run(from_dict(Recipe, {**data, "run_dir": str(tmp_path / "leaves")}), stage="vae")
    assert len(seen) == 3 and all(seen)


def test_vae_stage_with_a_discriminator_resumes_exactly(tmp_path):
    """vae.loss.adversarial: the discriminator trains beside the VAE from adversarial_start, its
    weights are checkpointed, and a run stopped at step 2 and resumed ends where 4 straight steps do."""
    from kinema.train.vae_stage import VAEStage, train_vae
    from kinema.vae.losses import VAELossConfig

    cfg = tiny_model_config().vae
    stage = lambda steps: VAEStage(steps=steps, batch_size=1, frames=5, log_every=1, ckpt_every=2, sample_every=0,  # noqa: E731
                                   loss=VAELossConfig(adversarial=0.5, adversarial_start=1, disc_channels=4))
    common = dict(seed=0, size=16, runtime=cpu_runtime("fp32"))
    straight = train_vae(cfg, stage(4), run_dir=tmp_path / "a", resume=False, log=Log(tmp_path / "a.txt"), **common)
    train_vae(cfg, stage(2), run_dir=tmp_path / "b", resume=False, log=Log(tmp_path / "b.txt"), **common)
    resumed = train_vae(cfg, stage(4), run_dir=tmp_path / "b", resume=True, log=Log(tmp_path / "b.txt"), **common)
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)
    a, b = (load_weights(latest_checkpoint(tmp_path / r / "ckpt") / "aux.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "a.txt").read_text()
    assert "adaptive_weight" not in log.split("step 1/4")[1].split("\n")[0] and "adaptive_weight" in log.split("step 2/4")[1]


def test_the_adversarial_term_changes_the_vae_and_off_leaves_it_alone(tmp_path):
    from kinema.train.vae_stage import VAEStage, train_vae
    from kinema.vae.losses import VAELossConfig

    cfg = tiny_model_config().vae
    weights = {}
    for name, adversarial in (("off", 0.0), ("off_again", 0.0), ("on", 0.5)):
        stage = VAEStage(steps=1, batch_size=1, frames=5, log_every=1, ckpt_every=1, sample_every=0,
                         loss=VAELossConfig(adversarial=adversarial, disc_channels=4))
        vae = train_vae(cfg, stage, run_dir=tmp_path / name, seed=0, size=16, runtime=cpu_runtime("fp32"), resume=False,
                        log=Log(tmp_path / f"{name}.txt"))
        weights[name] = vae.decoder.conv_out.conv.weight.detach().clone()
    assert torch.equal(weights["off"], weights["off_again"]) and not torch.equal(weights["off"], weights["on"])
    assert not (tmp_path / "off" / "ckpt" / "step_0000001" / "aux.safetensors").exists()


@pytest.mark.parametrize("override,words", [
    ({"vae": {"frames": 7}}, ["vae.frames 7 is not 1 + 4k", "use e.g. 5, 9 or 17"]),
    ({"model": {"vae": {"temporal_factors": [2, 3]}}, "vae": {"frames": 7}}, ["model.frames 9 is not 1 + 6k", "7, 13 or 25"]),
    ({"model": {"height": 30}}, ["model.height 30", "spatial factor 4"]),
])
def test_recipe_sizes_the_vae_cannot_code_fail_first(tmp_path, override, words):
    from kinema.config import merge

    with pytest.raises(KinemaError) as e:
        run(from_dict(Recipe, merge(tiny_recipe_dict(tmp_path), override)))
    assert all(w in str(e.value) for w in words)
    assert not (tmp_path / "train_log.txt").exists()  # before any work


def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(tmp_path):
    """A real `kill -9` mid-run (no handler runs, no checkpoint is written on the way out), at a
    step drawn at random; --resume finishes with the weights of an uninterrupted run, bit for bit.
    The kill comes at step 4-13 of 40: a tiny step takes milliseconds, so the run must have many
    steps left when the log shows the chosen one (with 16 steps it once finished before the kill)."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import yaml

    STEPS = 40

    def recipe(name):
        r = tiny_recipe_dict(tmp_path / name, vae_steps=2, dit_steps=STEPS)
        r["precision"] = "fp32"
        r["dit"].update(ckpt_every=3, log_every=1)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(r))
        return str(path)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kinema.cli", "train"]
    assert subprocess.run([*cmd, recipe("straight")], env=env, capture_output=True).returncode == 0
    kill_after = random.Random().randint(4, 13)
    proc = subprocess.Popen([*cmd, recipe("killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "train_log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and f"[dit] step {kill_after}/{STEPS}" not in (log.read_text() if log.is_file() else ""):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert f"[dit] step {STEPS}/{STEPS}" not in log.read_text(), "the run finished before it was killed"
    resumed = subprocess.run([*cmd, recipe("killed"), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("dit.safetensors", "vae.safetensors"):
        a, b = load_weights(tmp_path / "straight" / "model" / name), load_weights(tmp_path / "killed" / "model" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, kill_after)
    # metrics.jsonl: each step once (the steps run again after the kill replace the first tries), the same figures
    figures = lambda run: [(m["step"], m["loss"]) for m in map(json.loads, (tmp_path / run / "dit" / "metrics.jsonl").open())]  # noqa: E731
    assert figures("killed") == figures("straight") and [s for s, _ in figures("straight")] == list(range(1, STEPS + 1))


def test_a_non_finite_loss_skips_the_step_and_three_in_a_row_stop_the_run(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def run_with(nan_steps, path):
        def loss_fn(m, step):
            loss = m(torch.randn(8, 4, generator=seeded(0, step))).pow(2).mean()
            return (loss * float("nan") if step in nan_steps else loss), {}
        return fit(model, loss_fn, steps=10, optim=OptimConfig(lr=1e-2, warmup=1), run_dir=path, config={},
                   log=Log(path / "log.txt"), runtime=cpu_runtime("fp32"), ckpt_every=1000)

    before = model.weight.detach().clone()
    run_with({3}, tmp_path / "one")
    log = (tmp_path / "one" / "log.txt").read_text()
    assert "step 4: the loss is nan (on some process); step skipped (1 in a row)" in log
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)
    run_with({9}, tmp_path / "last")  # the last step skipped: its checkpoint is still written
    assert latest_checkpoint(tmp_path / "last").name == "step_0000010"
    with pytest.raises(KinemaError, match="not finite for 3 steps in a row \\(last at step 8\\); checkpoint saved"):
        run_with({5, 6, 7, 8}, tmp_path / "three")
    assert latest_checkpoint(tmp_path / "three").name == "step_0000007"  # resumes at the third bad step


def test_gradient_accumulation_takes_the_step_of_the_whole_batch(tmp_path, monkeypatch):
    """optim.accumulate 2: each step runs its global batch as two micro-batches, one after the
    other, and sums their gradients: the VAE and the denoiser end where whole batches take them."""
    from kinema.dit.transformer import MMDiT

    seen, forward = [], MMDiT.forward
    monkeypatch.setattr(MMDiT, "forward", lambda self, x, *a: seen.append(x.shape[0]) or forward(self, x, *a))

    def trained(name, accumulate):
        r = tiny_recipe_dict(tmp_path / name, vae_steps=2, dit_steps=3)
        r["precision"] = "fp32"
        r["vae"].update(batch_size=2, image_batch_size=2, optim={"accumulate": accumulate, "warmup": 2})
        r["dit"].update(optim={"accumulate": accumulate, "warmup": 2})
        run(from_dict(Recipe, r))
        return {stage: load_weights(latest_checkpoint(tmp_path / name / stage / "ckpt") / "model.safetensors")
                for stage in ("vae", "dit")}

    whole = trained("whole", 1)
    assert set(seen) == {4}
    seen.clear()
    micro = trained("micro", 2)
    assert set(seen) == {2} and len(seen) == 6  # 3 steps of 2 micro-batches of 2
    for stage in whole:
        for k, v in whole[stage].items():
            torch.testing.assert_close(micro[stage][k], v, atol=2e-5, rtol=1e-4, msg=f"{stage} {k}")
    r = tiny_recipe_dict(tmp_path / "odd", vae_steps=1, dit_steps=1)
    r["dit"]["optim"] = {"accumulate": 3}
    with pytest.raises(KinemaError, match="dit.batch_size 4 does not split over 1 processes x 3 micro-batches"):
        run(from_dict(Recipe, r))


def test_resuming_with_another_architecture_is_one_clear_line(tmp_path, capsys):
    import yaml

    from kinema.cli import main

    r = tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=2)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    assert main(["train", str(tmp_path / "r.yaml")]) == 0
    capsys.readouterr()
    assert main(["train", str(tmp_path / "r.yaml"), "--resume", "--arch", "wan-tiny"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kinema: error")]
    assert len(lines) == 1 and "--resume with another recipe than" in lines[0] and "--arch" in lines[0]
    assert "model.dit.cross_blocks: 0 then, 2 now" in lines[0]  # names what changed
    assert "Traceback" not in err
    r["seed"] = 1  # another seed is another run too
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    assert main(["train", str(tmp_path / "r.yaml")]) == 2  # (without --resume: "already holds checkpoints")
    assert main(["train", str(tmp_path / "r.yaml"), "--resume"]) == 2  # that attempt did not rewrite the record
    assert "seed: 0 then, 1 now" in capsys.readouterr().err
    r["seed"], r["dit"]["steps"] = 0, 3  # more steps is the same run, resumed
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    assert main(["train", str(tmp_path / "r.yaml"), "--resume"]) == 0


def test_a_second_training_in_one_run_directory_fails_at_once(tmp_path):
    """run.lock: while one process trains in a run directory, another fails at once with one line;
    a lock left by a killed process is taken over with a note."""
    import os
    import subprocess
    import sys

    import yaml

    from kinema.train.run_dir import locked

    r = tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=1)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from kinema.train.run_dir import locked\n"
                               "with locked(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # the refusal comes before torch is imported (that import alone takes 2 to 3 s): within a second
        code = ("import sys; from kinema.cli import main\n"
                "rc = main(['train', sys.argv[1]])\nprint('torch imported:', 'torch' in sys.modules)\nsys.exit(rc)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.yaml")], capture_output=True,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 2 and out.stdout.strip() == "torch imported: False"
        assert f"is in use by another training (pid {holder.pid} on" in out.stderr
        assert not (tmp_path / "run" / "vae").exists()  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()
    notes = []
    with locked(tmp_path / "run", notes.append):  # the killed holder's lock is free; its note is still there
        pass
    assert notes and f"(pid {holder.pid} on" in notes[0] and "taking it over" in notes[0]
    assert (tmp_path / "run" / "run.lock").read_text() == ""  # released cleanly


def test_metrics_go_to_json_lines_and_tensorboard(tmp_path):
    """fit writes each logged step's figures to metrics.jsonl beside the checkpoints, and TensorBoard
    scalars when tensorboard is installed; a resumed run replaces what it logged after its checkpoint."""
    model = torch.nn.Linear(4, 1)

    def loss_fn(m, step):
        return m(torch.randn(8, 4, generator=seeded(0, step))).pow(2).mean(), {"extra": 0.5}

    run = lambda steps, resume: fit(model, loss_fn, steps=steps, optim=OptimConfig(lr=1e-2, warmup=1),  # noqa: E731
                                    run_dir=tmp_path / "ckpt", config={}, log=Log(tmp_path / "log.txt"), resume=resume,
                                    log_every=2, ckpt_every=4, desc="toy")
    run(6, False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [m["step"] for m in lines] == [2, 4, 6] and {"loss", "extra", "lr", "it_s", "grad_norm"} <= lines[0].keys()
    assert lines[0]["extra"] == 0.5 and lines[0]["stage"] == "toy"
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "toy", "step": 8, "lo')  # a line cut by a kill
    shutil.rmtree(tmp_path / "ckpt" / "step_0000006")  # as if killed before step 6's checkpoint
    (tmp_path / "ckpt" / "latest").write_text("step_0000004")
    run(8, True)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()] == [2, 4, 6, 8]
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[dev]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("toy/loss")] == [2, 4, 6, 8]
    assert events.Scalars("toy/loss")[0].value == pytest.approx(lines[0]["loss"])


def test_activation_checkpointing_keeps_less_and_changes_nothing_else():
    """checkpoint_blocks: the same state_dict keys, outputs and gradients, and the blocks keep
    only their inputs for the backward (far fewer saved bytes)."""
    from conftest import random_text, randomize_

    from kinema.config import DIT_PRESETS
    from kinema.dit.transformer import MMDiT
    from kinema.train.dist import checkpoint_blocks

    def run(model):
        saved = []
        x, cond = torch.randn(2, 4, 3, 8, 8, generator=seeded(0, 0)), random_text(2)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t):
            out = model(x, torch.tensor([0.3, 0.8]), cond)
        out.pow(2).mean().backward()
        return out, {n: p.grad for n, p in model.named_parameters()}, sum(saved)

    plain = randomize_(MMDiT(DIT_PRESETS["hunyuan-tiny"]))
    wrapped = randomize_(MMDiT(DIT_PRESETS["hunyuan-tiny"]))
    checkpoint_blocks(wrapped)
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    (a, ga, bytes_a), (b, gb, bytes_b) = run(plain), run(wrapped)
    torch.testing.assert_close(b, a)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], msg=k)
    assert bytes_b < 0.5 * bytes_a, (bytes_b, bytes_a)


def test_the_recipe_turns_activation_checkpointing_on(tmp_path, monkeypatch):
    from kinema.train import dist

    called = []
    real = dist.checkpoint_blocks
    monkeypatch.setattr(dist, "checkpoint_blocks", lambda m: called.append(type(m).__name__) or real(m))
    r = tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=2)
    r["activation_checkpointing"] = True
    run(from_dict(Recipe, r))
    assert called == ["MMDiT"] and "[dit] step 2/2" in (tmp_path / "run" / "train_log.txt").read_text()


def test_a_second_training_does_not_disturb_the_first(tmp_path):
    """A real training holds its run directory: a second `kinema train` on it fails while the
    first is paused mid-run (SIGSTOP, so the order is certain), and the first then finishes with
    exactly the weights of a lone run of the same recipe."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    def recipe(name, run):
        r = tiny_recipe_dict(tmp_path / run, vae_steps=2, dit_steps=6)
        r["precision"] = "fp32"
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(r))
        return str(tmp_path / f"{name}.yaml")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "kinema.cli", "train"]
    assert subprocess.run([*cmd, recipe("lone", "lone")], env=env, capture_output=True).returncode == 0
    first = subprocess.Popen([*cmd, recipe("first", "shared")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "shared" / "train_log.txt"
    deadline = time.time() + 120
    while time.time() < deadline and "[vae] step" not in (log.read_text() if log.is_file() else ""):
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run([*cmd, recipe("second", "shared")], env=env, capture_output=True, text=True)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and "is in use by another training" in second.stderr
    assert first.wait(timeout=300) == 0
    for name in ("vae.safetensors", "dit.safetensors"):
        a, b = load_weights(tmp_path / "lone" / "model" / name), load_weights(tmp_path / "shared" / "model" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_exported_latent_statistics_are_those_of_what_the_denoiser_trained_on(tiny_model_dir):
    """The tiny recipe trains on posterior samples (dit.sample_posterior, the default): the exported
    normalisation is the samples' statistics, wider than the means' by the posterior variance."""
    from safetensors.torch import load_file

    from kinema.vae.autoencoder import latent_statistics

    cache = load_file(str(tiny_model_dir.parent / "dit" / "cache.safetensors"))
    flat = [cache[k].transpose(0, 1).flatten(1) for k in ("latent_mean", "latent_logvar")]
    vae = json.loads((tiny_model_dir / "config.json").read_text())["vae"]
    mean, std = latent_statistics(*flat, sampled=True)
    torch.testing.assert_close(torch.tensor(vae["latent_std"]), std)
    torch.testing.assert_close(torch.tensor(vae["latent_mean"]), mean)
    assert (std > 1.02 * latent_statistics(*flat, sampled=False)[1]).all()  # the posterior adds 4-5% here


def test_the_text_cache_holds_the_states_inference_computes(tiny_model_dir):
    """Text states are cached in fp32, as `kinema generate` encodes them (fp16 rounding was a
    train/inference mismatch)."""
    from safetensors.torch import load_file

    from kinema.pipelines.pipeline import load_pipeline

    cache = load_file(str(tiny_model_dir.parent / "dit" / "cache.safetensors"))
    empty = load_pipeline(tiny_model_dir, device="cpu", precision="fp32").text_encoder([""])
    assert torch.equal(cache["empty_tokens"], empty.tokens) and cache["text_tokens"].dtype == torch.float32


def test_the_optimizer_state_holds_frozen_parameters_too(tmp_path):
    """A stage that freezes part of its model (the decoder fine-tune's encoder, AnimateDiff's
    image model) keeps every parameter in the optimizer, so its checkpoints have one layout and
    resume across versions; the frozen part does not move."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)
    frozen = model[0].weight.clone()

    def loss_fn(m, step):
        return m(torch.randn(8, 4, generator=seeded(0, step))).pow(2).mean(), {}

    fit(model, loss_fn, steps=2, optim=OptimConfig(lr=1e-2, warmup=1), run_dir=tmp_path / "ckpt", config={},
        log=Log(tmp_path / "log.txt"), ckpt_every=2, desc="toy")
    state = torch.load(tmp_path / "ckpt" / "step_0000002" / "trainer.pt", weights_only=True)
    assert len(state["optimizer"]["param_groups"][0]["params"]) == 4  # both layers' weight and bias
    assert torch.equal(model[0].weight, frozen)


def test_a_setting_added_after_a_run_began_reads_as_its_default_on_resume(tmp_path):
    """run.json written before a setting existed lacks it: resuming with the setting at its default
    is the same run; with it changed, it is not."""
    from kinema.train.run_dir import check_identity

    check_identity(tmp_path, {"seed": 0, "model": {"vae": {"patch": 1}}}, resume=False)
    defaults = {"model": {"vae": {"patch": 1, "linear_path": False}}}
    check_identity(tmp_path, {"seed": 0, "model": {"vae": {"patch": 1, "linear_path": False}}}, True, defaults)
    with pytest.raises(KinemaError, match="model.vae.linear_path: False then, True now"):
        check_identity(tmp_path, {"seed": 0, "model": {"vae": {"patch": 1, "linear_path": True}}}, True, defaults)
    with pytest.raises(KinemaError, match="model.vae.linear_path: None then, False now"):  # no defaults given
        check_identity(tmp_path, {"seed": 0, "model": {"vae": {"patch": 1, "linear_path": False}}}, True)


def test_vae_stage_keeps_as_many_checkpoints_as_asked(tmp_path):
    from kinema.train.checkpoint import step_dirs
    from kinema.train.vae_stage import VAEStage, train_vae

    cfg = tiny_model_config().vae
    for keep in (2, 3):
        stage = VAEStage(steps=3, batch_size=1, frames=5, ckpt_every=1, keep_checkpoints=keep, sample_every=0)
        train_vae(cfg, stage, run_dir=tmp_path / str(keep), seed=0, size=16, runtime=cpu_runtime("fp32"), resume=False,
                  log=Log(tmp_path / f"{keep}.txt"))
        assert sorted(step for step, _ in step_dirs(tmp_path / str(keep) / "ckpt")) == [1, 2, 3][-keep:]


def test_decoder_stage_keeps_as_many_checkpoints_as_asked(tmp_path):
    from kinema.train.checkpoint import step_dirs
    from kinema.train.vae_stage import DecoderStage, tune_decoder
    from kinema.vae.autoencoder import CausalVAE

    vae = CausalVAE(tiny_model_config().vae)
    for keep in (2, 3):
        stage = DecoderStage(steps=3, batch_size=1, frames=5, ckpt_every=1, keep_checkpoints=keep, sample_every=0)
        tune_decoder(vae, stage, run_dir=tmp_path / str(keep), seed=0, size=16, runtime=cpu_runtime("fp32"), resume=False,
                     log=Log(tmp_path / f"{keep}.txt"))
        assert sorted(step for step, _ in step_dirs(tmp_path / str(keep) / "ckpt")) == [1, 2, 3][-keep:]


def test_a_module_with_an_lr_scale_learns_at_that_multiple(tmp_path):
    """param_groups: a submodule's lr_scale gets a group of its own. AdamW's first step moves each
    weight by the learning rate (its update is m / sqrt(v) = sign of the gradient), so one step at
    lr 1e-3 with no warmup moves the plain layer's weights by 1e-3 and the scaled one's by 1e-2;
    without a scale the model is one group, as checkpoints before had it."""
    from kinema.train.trainer import param_groups

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    assert [len(g["params"]) for g in param_groups(model)] == [4]
    model[2].lr_scale = 10.0
    assert [(len(g["params"]), g["lr_scale"]) for g in param_groups(model)] == [(2, 1.0), (2, 10.0)]
    before = [p.detach().clone() for p in model.parameters()]

    def loss_fn(m, step):
        x = torch.randn(16, 4, generator=seeded(0, step))
        return m(x).pow(2).mean(), {}

    fit(model, loss_fn, steps=1, optim=OptimConfig(lr=1e-3, warmup=0, grad_clip=0), run_dir=tmp_path, config={},
        log=Log(tmp_path / "log.txt"), runtime=cpu_runtime("fp32"), ckpt_every=1000)
    moved = [(p.detach() - b).abs() for p, b in zip(model.parameters(), before)]
    for m, lr in zip(moved, (1e-3, 1e-3, 1e-2, 1e-2)):
        torch.testing.assert_close(m, torch.full_like(m, lr), rtol=1e-3, atol=1e-6)
