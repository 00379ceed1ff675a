"""Shapes level 2 (kinema.data.scenes) and its oracle (kinema.eval.scene_oracle): the world's
rules, and the oracle validated as level 1's was: ~100% on world clips, and it must fail clips
whose colours are swapped between objects, whose time runs backwards, or whose pace is wrong."""

import dataclasses

import numpy as np
import pytest
import torch

from kinema.data.scenes import PACES, parse_scene, place, random_scene, sample_scene_clip, scene_caption
from kinema.data.shapes import HELD_OUT, ObjectSpec, render
from kinema.eval.oracle import objects
from kinema.eval.scene_oracle import ATTRIBUTES, find_tracks, fit_shape, judge_scene

SEEDS = range(80)


def test_captions_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = random_scene(rng)
        assert parse_scene(scene_caption(scene)) == scene
    assert scene_caption((("red", "circle", "left", "quickly"), ("blue", "square", "still", ""))) == \
        "a red circle moving left quickly and a blue square standing still"
    for bad in ("a red circle", "a red circle moving sideways", "a red circle moving left fast", "two red circles"):
        assert parse_scene(bad) is None


def test_world_rules():
    ones = 0
    for seed in SEEDS:
        frames, scene, objs = sample_scene_clip(seed)
        colours = [o[0] for o in scene]
        assert len(set(colours)) == len(colours) and len(scene) in (1, 2)
        assert not any((c, s) in HELD_OUT for c, s, _, _ in scene)
        assert all(objects(f)[1] == len(scene) for f in frames)  # never overlapping, never off-frame
        for (_, _, direction, pace), obj in zip(scene, objs):
            lo, hi = PACES[pace]
            assert direction == "still" and obj.speed == 0 or lo <= obj.speed <= hi
        ones += len(scene) == 1
    assert 20 < ones < 60  # about half the scenes have one object
    held = [sample_scene_clip(seed, held_out=True)[1] for seed in range(20)]
    assert all(any((c, s) in HELD_OUT for c, s, _, _ in scene) for scene in held)


def test_every_seed_gives_a_placeable_scene():
    """Two quick objects on crossing paths cannot always avoid each other: such a scene is redrawn,
    never an error (a training run once died on one)."""
    from kinema.data.scenes import sample_scene

    crossing = (("cyan", "circle", "down-right", "quickly"), ("green", "triangle", "down-left", "quickly"))
    with pytest.raises(ValueError, match="could not place"):
        place(crossing, np.random.default_rng(0), tries=20)
    for seed in range(3000):
        sample_scene(seed)
    frames, scene, _ = sample_scene_clip(17)
    assert scene == sample_scene(17)[0]


def test_oracle_is_exact_on_world_clips():
    results = [judge_scene(f, scene) for f, scene, _ in (sample_scene_clip(seed) for seed in SEEDS)]
    for key in (*ATTRIBUTES, "binding", "count_frames"):
        assert np.mean([r[key] for r in results]) == 1.0, key


def test_oracle_by_hand():
    """A quick red square going right and a still blue circle, placed by hand."""
    objs = [ObjectSpec("red", "square", "right", 12.0, 2.8, (8.0, 16.0)), ObjectSpec("blue", "circle", "still", 11.0, 0.0, (40.0, 48.0))]
    tracks, counts = find_tracks(render(objs))
    assert sorted(t.words() for t in tracks) == [("blue", "circle", "still", ""), ("red", "square", "right", "quickly")]
    assert counts == [2] * 17


def test_fit_shape_tells_small_squares_from_circles():
    for size in (10.0, 11.3, 14.0):
        for shape in ("circle", "square", "triangle"):
            frame = render([ObjectSpec("green", shape, "still", size, 0.0, (20.3, 30.7))], frames=1)[0]
            assert fit_shape(frame.max(axis=-1) / 255.0) == shape, (shape, size)


def two_object_scenes():
    for seed in range(200):
        frames, scene, objs = sample_scene_clip(seed)
        if len(scene) == 2:
            yield seed, frames, scene, objs


def test_swapped_colours_break_binding():
    """The same two objects with their colours exchanged: every colour is present, but bound wrongly."""
    binding, colours_present = [], []
    for seed, _, (a, b), objs in two_object_scenes():
        if a[1:] == b[1:]:
            continue  # identical but for colour: a swap is invisible
        swapped = [dataclasses.replace(objs[0], colour=b[0]), dataclasses.replace(objs[1], colour=a[0])]
        r = judge_scene(render(swapped), (a, b))
        binding.append(r["binding"])
        colours_present.append(sorted(t[0] for t in r["tracks"]) == sorted([a[0], b[0]]))
    assert len(binding) > 40 and np.mean(binding) == 0.0 and all(colours_present)


def test_time_reversed_clips_flip_direction():
    directions = []
    for seed in SEEDS:
        frames, scene, _ = sample_scene_clip(seed)
        if all(o[2] != "still" for o in scene):
            directions.append(judge_scene(frames[::-1], scene)["direction"])
    assert len(directions) > 40 and np.mean(directions) == 0.0


@pytest.mark.parametrize("told,drawn", [("slowly", "quickly"), ("quickly", ""), ("", "slowly")])
def test_wrong_pace_is_caught(told, drawn):
    rng = np.random.default_rng(1)
    for _ in range(10):
        scene = (("red", "circle", "right", drawn),)
        frames = render(place(scene, rng))
        r = judge_scene(frames, (("red", "circle", "right", told),))
        assert r["pace"] == 0.0 and r["colour"] == r["shape"] == r["direction"] == 1.0


def test_a_missing_object_costs_count_and_binding():
    for seed, _, scene, objs in two_object_scenes():
        r = judge_scene(render(objs[:1]), scene)
        assert r["count_frames"] == 0.0 and r["binding"] == 0.0 and r["colour"] == 0.5
        break


def test_a_recipe_trains_on_scenes_from_a_given_vae_and_eval_scenes_runs(tmp_path, tiny_model_dir, capsys):
    """world: scenes end to end on the tiny recipe: the VAE starts from a model directory (steps 0
    keeps it exactly), the decoder is tuned on level-2 clips, the denoiser trains on scene captions."""
    import json

    from conftest import tiny_recipe_dict
    from test_cli import run_cli

    from kinema.config import from_dict
    from kinema.io.weights import load_weights
    from kinema.train.recipe import Recipe, run

    recipe = tiny_recipe_dict(tmp_path / "run", vae_steps=0, dit_steps=2)
    recipe.update(world="scenes")
    recipe["vae"].update(init_from=str(tiny_model_dir))
    recipe["vae_decoder"] = {"steps": 1, "batch_size": 1, "frames": 5, "ckpt_every": 1, "sample_every": 0}
    recipe["dit"].update(captions_per_combo=2)
    assert run(from_dict(Recipe, recipe), stage="cache") is None  # VAE, decoder and cache; no denoiser
    assert (tmp_path / "run" / "dit" / "cache.safetensors").is_file() and not (tmp_path / "run" / "dit" / "ckpt").exists()
    out = run(from_dict(Recipe, recipe), resume=True)
    log = (tmp_path / "run" / "train_log.txt").read_text()
    assert log.count("[cache] scenes") == 1  # built once, then reused
    assert "[vae] starts from" in log and "[cache] scenes: 8 clips" in log and "16 captions" in log
    start, tuned = load_weights(tiny_model_dir / "vae.safetensors"), load_weights(out / "vae.safetensors")
    assert all(torch.equal(start[k], tuned[k]) for k in start if k.startswith("encoder."))  # the latent space stays
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith("decoder."))
    code, text, _ = run_cli(capsys, "eval", "scenes", "--model", out, "--clips", 4, "--steps", 1, "--json", tmp_path / "e.json")
    assert code == 0 and "two objects" in text and "binding" in text
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["one_object"]["clips"] == 2 and result["two_objects"]["clips"] == 2 and result["held_out"]["clips"] == 1
    objects = sum(len(r["motion"]) for r in result["rows"])
    assert objects >= 1 + 2 + 2 + 1 and sum(result["motion"][f"{k}_objects"] for k in ("diagonal", "axis", "still")) == objects


def test_motion_accuracy_splits_objects_by_their_motion():
    from kinema.eval.scene_report import motion_accuracy

    rows = [{"motion": ["up-left", "right"], "direction_each": [1.0, 0.0]},
            {"motion": ["down-right"], "direction_each": [0.0]}, {"motion": ["still", "up"], "direction_each": [1.0, 1.0]}]
    m = motion_accuracy(rows)
    assert (m["diagonal"], m["axis"], m["still"]) == (0.5, 0.5, 1.0)
    assert (m["diagonal_objects"], m["axis_objects"], m["still_objects"]) == (2, 2, 1)


def test_vae_init_from_refuses_a_different_architecture(tmp_path, tiny_model_dir):
    from conftest import tiny_recipe_dict

    from kinema.config import from_dict
    from kinema.errors import KinemaError
    from kinema.train.recipe import Recipe, run

    recipe = tiny_recipe_dict(tmp_path / "run", vae_steps=0)
    recipe["vae"].update(init_from=str(tiny_model_dir))
    recipe["model"]["vae"]["base_channels"] = 16
    with pytest.raises(KinemaError, match="differs from the recipe"):
        run(from_dict(Recipe, recipe), stage="vae")


def test_eval_vae_on_scenes(capsys, tiny_model_dir):
    from test_cli import run_cli

    code, out, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--clips", 2, "--world", "scenes")
    assert code == 0 and "binding" in out and "pace" in out and "right object count" in out
    code, out, _ = run_cli(capsys, "eval", "vae", "--model", tiny_model_dir, "--clips", 2)
    assert code == 0 and "one-object frames" in out and "binding" not in out
