"""Bouncing objects (issue 12's long-video world) and the oracle's check that each turn is at a wall
(kinema.eval.bounces), validated on the world's own clips as the other oracles were."""

import dataclasses

import numpy as np
import pytest

from kinema.data import shapes
from kinema.eval.bounces import bounce_report, turns


def test_reflect_known_values():
    assert [shapes.reflect(p, 0.0, 10.0) for p in (5.0, 12.0, -3.0, 25.0, 20.0)] == [5.0, 8.0, 3.0, 5.0, 0.0]


def test_a_bouncing_object_turns_at_known_times_and_walls():
    """Right at 2 px/frame from x = 30 between 10 and 50: the right wall at t = 10, the left at 30,
    the right again at 50; its centre is 40 at t = 15 (back from the wall)."""
    obj = shapes.ObjectSpec("red", "square", "right", 10.0, 2.0, (30.0, 20.0), bounds=(10.0, 50.0))
    assert obj.bounces(60) == [(10.0, "right"), (30.0, "left"), (50.0, "right")]
    assert obj.centre(15) == (40.0, 20.0) and obj.centre(30) == (10.0, 20.0)
    up = dataclasses.replace(obj, direction="up", start=(20.0, 30.0))
    assert up.bounces(60) == [(10.0, "top"), (30.0, "bottom"), (50.0, "top")]
    assert dataclasses.replace(obj, bounds=None).bounces(60) == []


@pytest.mark.parametrize("seed", range(3))
def test_bouncing_clips_keep_the_object_whole_in_frame(seed):
    video, (obj,) = shapes.sample_bouncing_clip(seed, frames=129)
    again, _ = shapes.sample_bouncing_clip(seed, frames=129)
    assert video.shape == (129, 64, 64, 3) and np.array_equal(video, again)
    lit = video.max(axis=-1) > 0.35 * 255
    assert lit.any(axis=(1, 2)).all()
    assert not (lit[:, 0].any() or lit[:, -1].any() or lit[:, :, 0].any() or lit[:, :, -1].any())  # never cut by an edge
    assert obj.speed == 0 or obj.bounces(129)  # 128 frames of travel at >= 1.5 px/frame reach a wall


def test_the_oracle_finds_every_world_bounce_at_its_wall():
    """Validation over 36 world clips of 129 frames: every turn found is a true bounce (within 2
    frames of its time, on its axis) at the wall, and every bounce the smoothing window can see
    (not within 5 frames of either end) is found."""
    found = expected = 0
    moving = [c for c in shapes.combos(held_out=False) if c[2] != "still"]
    for seed in range(36):
        video, (obj,) = shapes.sample_bouncing_clip(seed, moving[seed * 7 % len(moving)], frames=129)
        true = [(t, "x" if wall in ("left", "right") else "y") for t, wall in obj.bounces(129)]
        got = turns(video)
        assert all(b.at_wall and any(abs(b.frame - t) <= 2 and b.axis == a for t, a in true) for b in got), (seed, got)
        visible = [(t, a) for t, a in true if 5 <= t <= 123]
        assert all(any(abs(b.frame - t) <= 2 and b.axis == a for b in got) for t, a in visible), (seed, got, true)
        found, expected = found + len(got), expected + len(visible)
    assert expected > 150 and found >= expected


def test_turns_away_from_the_walls_are_not_at_the_wall():
    """The same object reflecting between x, y = 20 and 44 (mid-frame): turns found, none at a wall;
    time-reversed world clips still turn at the walls; a straight clip does not turn."""
    _, (obj,) = shapes.sample_bouncing_clip(1, ("red", "square", "down-right"), frames=129)
    mid = shapes.render([dataclasses.replace(obj, bounds=(20.0, 44.0), start=(30.0, 30.0))], 129)
    report = bounce_report(mid)
    assert report["turns"] >= 10 and report["at_wall"] == 0 and report["share_at_wall"] == 0.0
    video, _ = shapes.sample_bouncing_clip(1, ("red", "square", "down-right"), frames=129)
    backwards = bounce_report(video[::-1])
    assert backwards["turns"] >= 5 and backwards["share_at_wall"] == 1.0
    straight, _ = shapes.sample_clip(0, ("blue", "circle", "right"), frames=17)
    assert turns(straight) == [] and bounce_report(straight)["share_at_wall"] == 1.0
