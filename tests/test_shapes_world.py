import numpy as np

from kinema.data import shapes
from kinema.data.captions import canonical_caption, caption_variants, parse_canonical
from kinema.eval.oracle import judge


def test_clips_are_deterministic_and_well_formed():
    a, objs = shapes.sample_clip(42)
    b, _ = shapes.sample_clip(42)
    assert a.dtype == np.uint8 and a.shape == (17, 64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, shapes.sample_clip(43)[0])
    assert len(objs) == 1 and 12 <= objs[0].size <= 20


def test_palette_is_six_saturated_hues_60_degrees_apart():
    hues = sorted(shapes.COLOURS.values())
    assert hues == [0, 60, 120, 180, 240, 300]
    for c in shapes.COLOURS:
        assert shapes.rgb(c).max() == 1.0 and shapes.rgb(c).min() == 0.0


def test_objects_stay_fully_in_frame_and_move_at_world_speed():
    rng = np.random.default_rng(0)
    for combo in shapes.combos():
        obj = shapes.sample_object(rng, *combo)
        for t in (0, 16):
            cx, cy = obj.centre(t)
            assert obj.size / 2 <= cx <= 64 - obj.size / 2 and obj.size / 2 <= cy <= 64 - obj.size / 2
        if combo[2] == "still":
            assert obj.speed == 0
        else:
            assert 1.5 <= obj.speed <= 2.5


def test_held_out_pairs_never_appear_on_the_training_side():
    train = shapes.combos(held_out=False)
    held = shapes.combos(held_out=True)
    assert len(train) == 144 and len(held) == 18 and len(shapes.combos()) == 162
    assert not any((c, s) in shapes.HELD_OUT for c, s, _ in train)
    for seed in range(300):
        assert (shapes.sample_clip(seed)[1][0].colour, shapes.sample_clip(seed)[1][0].shape) not in shapes.HELD_OUT


def test_render_composites_several_objects():
    rng = np.random.default_rng(1)
    objs = [shapes.sample_object(rng, "red", "circle", "left"), shapes.sample_object(rng, "blue", "square", "right")]
    both = shapes.render(objs)
    assert (both[..., 0] > 200).any() and (both[..., 2] > 200).any()


def test_captions():
    assert canonical_caption("red", "circle", "up-left") == "a red circle moving up-left"
    assert canonical_caption("red", "circle", "still") == "a red circle standing still"
    for combo in shapes.combos():
        variants = caption_variants(*combo)
        assert variants[0] == canonical_caption(*combo) and len(set(variants)) == len(variants) > 50
        assert parse_canonical(variants[0]) == combo
        assert all(combo[0] in v for v in variants)
    assert parse_canonical("a purple circle moving left") is None


def test_oracle_is_right_on_world_clips():
    for i, combo in enumerate(shapes.combos()):
        v = judge(shapes.sample_clip(i, combo)[0])
        assert (v.colour, v.shape, v.direction, v.one_object_frac) == (*combo, 1.0), combo


def test_oracle_catches_colour_swaps_and_time_reversal():
    flipped = {"left": "right", "right": "left", "up": "down", "down": "up", "up-left": "down-right",
               "down-right": "up-left", "up-right": "down-left", "down-left": "up-right", "still": "still"}
    for i, combo in enumerate(shapes.combos()):
        clip = shapes.sample_clip(i, combo)[0]
        assert judge(clip[..., [1, 2, 0]]).colour != combo[0]  # RGB -> GBR rotates every hue by 120 degrees
        assert judge(clip[::-1]).direction == flipped[combo[2]]


def test_oracle_reads_the_world_speed_and_flags_speeds_outside_it():
    from kinema.eval.oracle import speed_error

    for i, combo in enumerate(shapes.combos()):
        clip, (obj,) = shapes.sample_clip(i, combo)
        v = judge(clip)
        assert abs(v.speed - obj.speed) < 0.05, (combo, v.speed, obj.speed)  # px / frame at 64x64
        assert speed_error(v.speed, combo[2]) < 0.02, combo
        if combo[2] == "still":
            continue
        rng = np.random.default_rng(i)
        # speeds the world never draws (it draws 1.5-2.5): too fast and too slow, by about 0.5
        fast = shapes.sample_object(rng, *combo, size_range=(12, 13), speed_range=(2.95, 3.0))
        slow = shapes.sample_object(rng, *combo, speed_range=(0.95, 1.0))
        assert 0.4 < speed_error(judge(shapes.render([fast])).speed, combo[2]) < 0.55, combo
        assert 0.45 < speed_error(judge(shapes.render([slow])).speed, combo[2]) < 0.6, combo
    assert speed_error(None, "left") != speed_error(None, "left")  # NaN: no track to measure


def test_oracle_constancy_drops_when_an_object_changes_halfway():
    for i, combo in enumerate(shapes.combos()[::7]):
        clip, (obj,) = shapes.sample_clip(i, combo)
        assert judge(clip).constancy == 1.0
        other = next(s for s in shapes.SHAPES if s != combo[1])
        turned = shapes.render([shapes.ObjectSpec(obj.colour, other, obj.direction, obj.size, obj.speed, obj.start)])
        assert judge(np.concatenate([clip[:9], turned[9:]])).constancy == 9 / 17, combo  # shape from frame 9
        assert judge(np.concatenate([clip[:9], clip[9:, ..., [1, 2, 0]]])).constancy == 9 / 17, combo  # colour
    assert judge(np.zeros((17, 64, 64, 3), np.uint8)).constancy == 0.0


def test_oracle_counts_objects():
    two = shapes.render([shapes.ObjectSpec("red", "circle", "still", 14, 0, (15, 15)),
                         shapes.ObjectSpec("green", "square", "right", 14, 2, (20, 48))])
    v = judge(two)
    assert v.objects_per_frame == [2] * 17 and v.one_object_frac == 0.0
    assert judge(np.zeros((17, 64, 64, 3), np.uint8)).one_object_frac == 0.0


def test_vae_eval_clips_spread_over_every_colour_shape_and_motion():
    from kinema.eval.recon import eval_combos

    few = eval_combos(48)
    assert {c for c, _, _ in few} == set(shapes.COLOURS) and {s for _, s, _ in few} == set(shapes.SHAPES)
    assert {d for _, _, d in few} == set(shapes.DIRECTIONS)
    assert sorted(eval_combos(162)) == sorted(shapes.combos())  # every combination exactly once
    assert eval_combos(200)[:162] == eval_combos(162)


def test_eval_report_direction_confusion():
    from kinema.eval.report import _world_generator, format_table, score

    world = _world_generator(17, 64)
    result = score(world, seeds=1, progress=False)
    seen = result["direction_confusion"]["seen"]
    assert all(seen[d][d] == 16 and sum(seen[d].values()) == 16 for d in shapes.DIRECTIONS)  # 18 pairs - 2 held out
    assert sum(result["direction_confusion"]["held_out"]["left"].values()) == 2

    reversed_ = score(lambda combos, seeds: world(combos, seeds)[:, ::-1], seeds=1, progress=False)
    assert reversed_["direction_confusion"]["seen"]["left"]["right"] == 16
    assert reversed_["direction_confusion"]["seen"]["up-left"]["down-right"] == 16
    result["settings"] = {"model": "world", "seeds": 1, "steps": 0, "sampler": "-", "guidance": 0}
    assert "| left | 16 | 0 |" in format_table(result)
    assert result["seen"]["constancy"] == 1.0 and result["seen"]["speed_error"] < 0.01
    assert "| 100.0% | 100.0% | 0.00 |" in format_table(result)  # one-object frames, constancy, speed error
    assert "none" not in format_table(result)  # the column shows only when some clip had no object

    blank = score(lambda combos, seeds: np.zeros((len(combos), 17, 64, 64, 3), np.uint8), seeds=1, progress=False)
    assert blank["direction_confusion"]["seen"]["left"]["none"] == 16  # no object to track: counted, not a KeyError
    blank["settings"] = result["settings"]
    assert "| left | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 16 |" in format_table(blank)
    assert blank["seen"]["constancy"] == 0.0 and np.isnan(blank["seen"]["speed_error"])  # no track: not a speed of 0
