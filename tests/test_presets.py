"""The denoiser families (config.DIT_FAMILIES): each preset's tiny size trains (forward, backward),
saves and loads, and `kinema train --arch NAME` builds it."""

import pytest
import torch
from conftest import random_text, randomize_
from test_cli import assert_one_line_error, run_cli

from kinema.config import ARCHS, DIT_PRESETS
from kinema.dit.transformer import MMDiT
from kinema.io.weights import load_weights, save_weights


def test_every_family_has_a_full_and_a_tiny_preset():
    assert set(ARCHS) >= {"hunyuan", "wan", "mochi", "cogvideox", "latte", "opensora", "opensora-plan", "easyanimate",
                          "sora", "ltx", "sd3"}
    for name in ARCHS:
        assert DIT_PRESETS[name].dim >= 192 and DIT_PRESETS[f"{name}-tiny"].dim == 32
        assert DIT_PRESETS[name].block_patterns()  # at least one block


@pytest.mark.parametrize("name", ARCHS)
def test_tiny_preset_trains_saves_and_loads(name, tmp_path):
    cfg = DIT_PRESETS[f"{name}-tiny"]
    torch.manual_seed(0)
    model = randomize_(MMDiT(cfg))
    x, cond = torch.randn(2, 4, 3, 4, 4), random_text(2)
    out = model(x, torch.rand(2), cond)
    assert out.shape == x.shape
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [n for n, g in grads.items() if g is None]
    save_weights(tmp_path / "m.safetensors", model.state_dict())
    again = MMDiT(cfg)
    again.load_state_dict(load_weights(tmp_path / "m.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(again(x, torch.full((2,), 0.5), cond), model(x, torch.full((2,), 0.5), cond))


def test_train_arch_builds_that_family(capsys, tmp_path):
    import json

    import yaml
    from conftest import tiny_recipe_dict

    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "run", vae_steps=1, dit_steps=1)))
    code, out, _ = run_cli(capsys, "train", cfg, "--arch", "latte-tiny", "--device", "cpu")
    assert code == 0
    dit = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["dit"]
    assert dit["cross_blocks"] == 2 and dit["attention"] == ["spatial", "temporal"] and dit["modulation"] == "shared"
    assert dit["in_channels"] == 4  # fitted to the recipe's VAE
    code, _, _ = run_cli(capsys, "generate", "a red circle", "--model", tmp_path / "run" / "model", "--frames", 9,
                         "--steps", 1, "-o", tmp_path / "v.mp4")
    assert code == 0
    code, _, err = run_cli(capsys, "train", cfg, "--arch", "unet")
    assert_one_line_error(code, err, "unknown --arch 'unet'", "wan")


def test_arch_keeps_the_recipes_conditions():
    """`--arch` swaps the family, not what the recipe adds to it: an image-to-video recipe stays one."""
    import dataclasses

    from kinema.cli import RECIPE_CONDITIONS, arch_config
    from kinema.config import DIT_PRESETS

    recipe = dataclasses.replace(DIT_PRESETS["sd3-tiny"], in_channels=4, text_dim=48, frame_cond="concat",
                                 camera=True, camera_render=True, frame_stride=True)
    got = arch_config("wan-tiny", recipe)
    assert [getattr(got, k) for k in RECIPE_CONDITIONS] == ["concat", False, False, True, True, True]
    held = dataclasses.replace(recipe, camera_render=False, hold_given=True)
    assert [getattr(arch_config("wan-tiny", held), k) for k in RECIPE_CONDITIONS] == ["concat", True, False, True, False, True]
    assert got.cross_blocks == DIT_PRESETS["wan-tiny"].cross_blocks and (got.in_channels, got.text_dim) == (4, 48)
    animatediff = arch_config("sd3-tiny", dataclasses.replace(recipe, motion_modules=True))  # AnimateDiff on sd3
    assert animatediff.motion_modules and animatediff.dual_blocks == DIT_PRESETS["sd3-tiny"].dual_blocks
