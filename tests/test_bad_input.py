"""The bad-input table (issue 15): every wrong recipe value is one line naming the field, the value
and what would be valid, exit 2, before any work (the run directory is never created)."""

import copy
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe_dict
from test_cli import assert_one_line_error, run_cli

from kinema.train.recipe import check_sizes, load_recipe

RECIPE_CASES = [
    # (path in the recipe, value, words the error line must hold)
    ("dit.optim.lr", "fast", ["dit.optim.lr", "expected a number", "'fast'"]),
    ("dit.optim.lr", float("nan"), ["dit.optim.lr", "expected a finite number"]),
    ("dit.optim.lr", 0.0, ["lr 0.0: must be above 0"]),
    ("dit.ckpt_every", 0, ["dit", "ckpt_every 0: must be at least 1"]),
    ("dit.log_every", 0, ["log_every 0: must be at least 1"]),
    ("dit.batch_size", 0, ["batch_size 0: must be at least 1"]),
    ("vae.batch_size", 0, ["vae", "batch_size 0: must be at least 1"]),
    ("dit.steps", -5, ["steps -5: must be at least 1"]),
    ("dit.steps", 0, ["steps 0: must be at least 1"]),
    ("dit.steps", True, ["dit.steps", "expected an integer", "True"]),
    ("vae.steps", -1, ["vae", "steps -1: must be at least 0"]),
    ("dit.caption_dropout", 2, ["caption_dropout 2.0: must be in [0, 1]"]),
    ("dit.ema_decay", 1.0, ["ema_decay 1.0: must be in [0, 1)"]),
    ("dit.num_clips", 0, ["num_clips 0: must be at least 1"]),
    ("dit.timesteps.kind", "cosine", ["timesteps", "kind 'cosine': use one of uniform, logit_normal, u_shaped"]),
    ("dit.timesteps.std", -1, ["std -1.0: must be above 0"]),
    ("dit.optim.betas", [0.9, 1.5], ["betas", "two numbers in [0, 1)"]),
    ("model.dit.heads", 3, ["heads 3: must divide the width dim 32"]),
    ("model.height", 62, ["model.height 62 is not a multiple of the VAE's spatial factor 4"]),
    ("model.height", 36, ["model.height gives 9 latent pixels, not a multiple of the denoiser's patch 2"]),
    ("model.frames", 10, ["model.frames 10 is not 1 + 4k"]),
    ("model.frames", 100001, ["model.frames 100001: at most 4097 frames"]),
    ("model.frames", 0, ["frames 0: must be at least 1"]),
    ("model.dit.in_channels", 8, ["model.dit.in_channels 8 is not the VAE's latent_channels 4"]),
    ("vae.length_schedule", [[0, 9, 0]], ["length_schedule[0] [0, 9, 0]"]),
    ("seed", "one", ["seed", "expected an integer"]),
    ("dit.curriculum", [[0]], ["dit.curriculum entry [0]"]),
]


def set_path(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return d


@pytest.mark.parametrize("path, value, words", RECIPE_CASES, ids=[f"{p}={v!r}" for p, v, _ in RECIPE_CASES])
def test_a_bad_recipe_value_is_one_line_before_any_work(path, value, words, tmp_path, capsys):
    recipe = set_path(tiny_recipe_dict(tmp_path / "run"), path, value)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(capsys, "train", tmp_path / "r.yaml")
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config", sorted(Path(__file__).parents[1].glob("configs/**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_passes_the_checks(config):
    check_sizes(load_recipe(config))
