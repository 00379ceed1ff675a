"""The photo world (kinema.data.photos): camera paths over real photographs."""

import dataclasses
import json
import math

import numpy as np
import pytest

from kinema.data import photos


def ramp(h: int = 64, w: int = 96) -> np.ndarray:
    """A photo whose red channel is x and green channel is y (pixel centres), so a frame says where it looked."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)


def still(centre, zoom=1.0, roll=0.0, frames=1) -> photos.CameraPath:
    return photos.CameraPath("camera", np.array([centre] * frames, dtype=float), np.full(frames, zoom),
                             np.full(frames, roll), ())


def test_a_view_samples_the_photo_where_it_points():
    """Zoom 1 on a 96x64 photo sees a 64x64 square around the centre: rendered at 32 px each output
    pixel averages a 2x2 block, so pixel (i, j) holds x = 2j + 0.5 + (48 - 32), y = 2i + 0.5."""
    out = photos.render(still((48.0, 32.0)), size=32, photo=ramp())[0].astype(float)
    j, i = np.meshgrid(np.arange(32), np.arange(32))
    assert np.abs(out[..., 0] - np.round(2 * j + 0.5 + 16)).max() <= 1
    assert np.abs(out[..., 1] - np.round(2 * i + 0.5)).max() <= 1


def test_roll_turns_the_views_x_axis_towards_the_photos_y_axis():
    """Roll +90 degrees: going right in the frame goes down in the photo (y grows with the column),
    and going down in the frame goes left in the photo (x falls with the row)."""
    out = photos.render(still((48.0, 32.0), zoom=2.0, roll=math.pi / 2), size=16, photo=ramp())[0].astype(float)
    assert (np.diff(out[8, :, 1]) > 0).all() and (np.diff(out[:, 8, 0]) < 0).all()
    assert np.ptp(out[8, :, 0]) <= 1 and np.ptp(out[:, 8, 1]) <= 1


@pytest.mark.parametrize("seed", range(6))
def test_the_recorded_path_reproduces_the_clip(seed):
    clip, path = photos.sample_photo_clip(seed, frames=9, size=32)
    again = photos.CameraPath.from_dict(json.loads(json.dumps(path.to_dict())))  # as a dataset stores it
    assert clip.shape == (9, 32, 32, 3) and clip.std() > 5
    assert np.array_equal(photos.render(again, 32), clip)


def test_paths_move_as_named_and_stay_inside_the_photo():
    seen = set()
    for seed in range(120):
        path = photos.sample_path(np.random.default_rng(seed), list(photos.TRAIN)[seed % len(photos.TRAIN)], 17)
        seen.update(path.motions)
        h, w = photos.load_photo(path.photo).shape[:2]
        half = min(h, w) / path.zoom / 2
        for (u, v) in ((-1, -1), (-1, 1), (1, -1), (1, 1)):  # every corner of every view
            x = path.centre[:, 0] + (np.cos(path.roll) * u - np.sin(path.roll) * v) * half
            y = path.centre[:, 1] + (np.sin(path.roll) * u + np.cos(path.roll) * v) * half
            assert (x >= -1e-6).all() and (x <= w + 1e-6).all() and (y >= -1e-6).all() and (y <= h + 1e-6).all()
        dx, dy = path.centre[-1] - path.centre[0]
        sign = {"pan left": dx < 0, "pan right": dx > 0, "pan up": dy < 0, "pan down": dy > 0,
                "zoom in": path.zoom[-1] > path.zoom[0], "zoom out": path.zoom[-1] < path.zoom[0],
                "rotate clockwise": path.roll[-1] > 0, "rotate counter-clockwise": path.roll[-1] < 0}
        assert all(sign[m] for m in path.motions), path.motions
        kinds = [k for k, names in photos.KINDS.items() if set(names) & set(path.motions)]
        assert len(kinds) == len(path.motions) in (1, 2)  # one or two motions, never two of a kind
        # and nothing moves that is not named: a still axis, zoom or roll stays as it started
        assert ("pan x" in kinds) == (dx != 0) and ("pan y" in kinds) == (dy != 0)
        assert ("zoom" in kinds) == (np.ptp(path.zoom) > 0) and ("rotate" in kinds) == (np.ptp(path.roll) > 0)
    assert seen == set(photos.MOTIONS)


def test_training_never_draws_a_held_out_photograph():
    assert not set(photos.TRAIN) & set(photos.HELD_OUT)
    assert {photos.sample_photo_clip(s, frames=1, size=8)[1].photo for s in range(60)} <= set(photos.TRAIN)
    pytest.importorskip("sklearn", reason="the held-out photographs ship with scikit-learn")
    assert {photos.sample_photo_clip(s, frames=1, size=8, held_out=True)[1].photo for s in range(10)} == set(photos.HELD_OUT)


def test_captions_name_the_motions_and_the_subject():
    path = photos.CameraPath("chelsea", np.zeros((2, 2)), np.ones(2), np.zeros(2), ("pan left", "zoom in"))
    assert path.caption() == "the camera pans left and zooms in over a cat"
    with pytest.raises(ValueError, match="unknown photograph"):
        photos.load_photo("mona lisa")


def test_colour_matrix_reorders_turns_and_desaturates_as_named():
    """Known answers: order (1, 0, 2) swaps red and green; a 120-degree turn about the grey axis sends
    red to green (right-handed, as hue goes red -> green -> blue); saturation 0 leaves each pixel's
    mean; and every look keeps grey grey at its level."""
    red, grey = np.array([200.0, 0.0, 0.0]), np.array([90.0, 90.0, 90.0])
    assert np.allclose(photos.colour_matrix(0.0, 1.0, (1, 0, 2)) @ [10.0, 20.0, 30.0], [20.0, 10.0, 30.0])
    assert np.allclose(photos.colour_matrix(2 * math.pi / 3, 1.0) @ red, [0.0, 200.0, 0.0], atol=1e-9)
    assert np.allclose(photos.colour_matrix(0.0, 0.0) @ [30.0, 60.0, 90.0], [60.0, 60.0, 60.0])
    for seed in range(5):
        _, colour = photos.sample_look(np.random.default_rng(seed), "astronaut")
        assert np.allclose(colour @ grey, grey)


def test_an_augmented_clip_keeps_its_photograph_and_motion_and_its_path_reproduces_it():
    """augment draws the look after the path: the same seed keeps photo, centre, zoom, roll and
    motions; the look is recorded, so render(path) (through a JSON round trip) gives the clip
    again; the mirror is the photograph flipped left to right before the camera sees it."""
    looks = set()
    for seed in range(8):
        plain, p0 = photos.sample_photo_clip(seed, frames=5, size=16)
        clip, path = photos.sample_photo_clip(seed, frames=5, size=16, augment=True)
        assert (path.photo, path.motions) == (p0.photo, p0.motions)
        assert np.array_equal(path.centre, p0.centre) and np.array_equal(path.zoom, p0.zoom)
        assert p0.colour is None and not p0.mirror and path.colour is not None
        again = photos.CameraPath.from_dict(json.loads(json.dumps(path.to_dict())))
        assert np.array_equal(photos.render(again, 16), clip)
        assert not np.array_equal(clip, plain)
        looks.add(path.mirror)
        if photos.is_grey(path.photo):  # a tint: every pixel a multiple of one colour
            assert np.allclose(path.colour, path.colour[:, :1])
    assert looks == {True, False}
    flipped = photos.load_photo("coffee")[:, ::-1]
    mirrored = photos.CameraPath("coffee", np.array([[250.0, 180.0]]), np.ones(1) * 2, np.zeros(1), (), mirror=True)
    assert np.array_equal(photos.render(mirrored, 16), photos.render(dataclasses.replace(mirrored, mirror=False), 16,
                                                                    photo=flipped))


def test_augment_changes_photographs_only():
    from kinema.data import worlds

    assert np.array_equal(worlds.render_clip("shapes", 5, 5, 16, augment=True), worlds.render_clip("shapes", 5, 5, 16))
    assert np.array_equal(worlds.render_clip("shapes+photos", 7, 5, 16, augment=True),
                          photos.sample_photo_clip(3, frames=5, size=16, augment=True)[0])
