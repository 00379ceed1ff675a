from pathlib import Path

import pytest

from kinema.config import DIT_PRESETS, VAE_PRESETS, DiTConfig, ModelConfig, from_dict, to_dict
from kinema.errors import KinemaError
from kinema.train.recipe import load_recipe


def test_from_dict_builds_nested_dataclasses_and_tuples():
    cfg = from_dict(ModelConfig, {"dit": {"dim": 64, "patch": [1, 2, 2]}, "vae": {"channel_mult": [1, 2]}})
    assert cfg.dit.dim == 64 and cfg.dit.patch == (1, 2, 2) and cfg.vae.channel_mult == (1, 2)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("data,words", [
    ({"dit": {"depth": 3}}, ["unknown key", "depth", "dual_blocks"]),
    ({"dit": {"dim": "wide"}}, ["expected an integer"]),
    ({"dit": {"patch": [1, 2]}}, ["expected 3 values"]),
    ({"dit": 5}, ["expected a mapping"]),
])
def test_bad_configs_say_what_is_wrong(data, words):
    with pytest.raises(KinemaError) as e:
        from_dict(ModelConfig, data)
    for w in words:
        assert w in str(e.value)


def test_shipped_recipe_matches_the_presets():
    recipe = load_recipe(Path(__file__).parent.parent / "configs" / "shapes.yaml")
    assert recipe.model.vae == VAE_PRESETS["shapes"]
    assert recipe.model.dit == DIT_PRESETS["shapes"]
    assert recipe.model.vae.time_compression == 4 and recipe.model.vae.space_compression == 8


def test_presets_are_consistent():
    for name, v in VAE_PRESETS.items():
        assert len(v.factors()) == len(v.channel_mult) - 1, name
    for name, d in DIT_PRESETS.items():
        assert d.dim % d.heads == 0 and isinstance(d, DiTConfig), name


def test_a_partial_mapping_overrides_the_fields_own_default_not_the_class_defaults():
    from kinema.train.recipe import Recipe

    r = from_dict(Recipe, {"vae_decoder": {"loss": {"gradient": 1.0}}, "dit": {"optim": {"lr": 1e-3}}})
    assert r.vae_decoder.loss.gradient == 1.0
    assert r.vae_decoder.loss.kl == 0.0 and r.vae_decoder.loss.foreground_weight == 20.0  # DecoderStage's loss
    assert r.dit.optim.lr == 1e-3 and r.dit.optim.warmup == 200  # DiTStage's optim, not OptimConfig's 100
