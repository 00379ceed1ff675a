"""The photo world's camera oracle (kinema.eval.camera_oracle): the recorded path's transforms are
right by construction, and the estimate from the frames alone recovers them."""

import math

import numpy as np
import pytest

from kinema.data import photos
from kinema.data.camera import true_transforms
from kinema.eval import camera_oracle as C

OPPOSITE = {"pan left": "pan right", "pan right": "pan left", "pan up": "pan down", "pan down": "pan up",
            "zoom in": "zoom out", "zoom out": "zoom in", "rotate clockwise": "rotate counter-clockwise",
            "rotate counter-clockwise": "rotate clockwise"}


def path(centre, zoom, roll, motions=()):
    return photos.CameraPath("chelsea", np.array(centre, float), np.array(zoom, float), np.array(roll, float), motions)


def test_true_transforms_of_simple_paths():
    short = min(photos.load_photo("chelsea").shape[:2])
    half = short / 1.5 / 2
    # the camera 10 photo pixels to the left: the content 10 / half * 32 frame pixels to the right
    m = true_transforms(path([[200, 150], [190, 150]], [1.5, 1.5], [0, 0]), 64)[-1]
    assert m[:2, :2] == pytest.approx(np.eye(2)) and m[:2, 2] == pytest.approx([10 / half * 32, 0])
    m = true_transforms(path([[200, 150]] * 2, [1.5, 3.0], [0, 0]), 64)[-1]  # zoom in 2x: content twice as large
    assert m[:2, :2] == pytest.approx(2 * np.eye(2)) and m[:2, 2] == pytest.approx([0, 0])
    m = true_transforms(path([[200, 150]] * 2, [1.5, 1.5], [0, 0.1]), 64)[-1]  # camera clockwise: content -0.1 rad
    assert math.atan2(m[1, 0], m[0, 0]) == pytest.approx(-0.1)
    assert C.motions_of(m, 64) == ("rotate clockwise",)


def test_the_estimate_recovers_the_world_camera_on_held_out_photos():
    right, errors = [], []
    for seed in range(16):
        video, p = photos.sample_photo_clip(2000 + seed, held_out=True)
        verdict = C.judge_camera(video, p)
        right.append(verdict["right"])
        errors.append(verdict["path_error"])
    assert np.mean(right) >= 14 / 16
    assert np.median(errors) < 0.5  # pixels, at 64 x 64


def test_reversed_clips_show_the_opposite_motions_and_a_still_clip_none():
    checked = 0
    for seed in range(4):
        video, p = photos.sample_photo_clip(3000 + seed, held_out=True)
        if set(C.judge_camera(video)["motions"]) != set(p.motions):
            continue
        assert set(C.judge_camera(video[::-1].copy())["motions"]) == {OPPOSITE[m] for m in p.motions}
        checked += 1
    assert checked >= 3
    still = np.repeat(video[:1], 9, axis=0)
    assert C.judge_camera(still)["motions"] == []
    assert C.estimate_transforms(still) == pytest.approx(np.tile(np.eye(3), (9, 1, 1)), abs=1e-3)


def test_a_refinement_that_loses_frame_0_is_not_taken():
    # Held-out clips of `kinema eval camera` (seeds 40_000 + i) where refining against frame 0 lost
    # the match: a strong zoom with a pan over the flower and china photographs. Taken anyway, the
    # refinement threw the estimate pixels off (up to 8 px) and the oracle named a roll or a zoom
    # that the true clip does not have.
    unverified = []
    for seed in (40_007, 40_025, 40_035):
        video, p = photos.sample_photo_clip(seed, held_out=True)
        truth = true_transforms(p, 64)
        est = C.estimate_transforms(video)
        assert set(C.motions_of(est[-1], 64)) == set(p.motions)
        assert C.path_error(est, truth, 64) < 1.0
        unverified.append(C.path_error(C.estimate_transforms(video, verify=False), truth, 64))
    assert max(unverified) > 2.0  # these clips do need the check


def test_noisy_clips_keep_the_refinements_that_help():
    # Independent noise in every frame makes the frame-to-frame chain drift, which the refinement
    # against frame 0 corrects, by more than a pixel at times; on two of these 16 clips it loses the
    # match instead. Measured: taking every refinement 0.85 px mean path error, none 0.42, only those
    # that move frame 0's points under 1 px 0.40, only those that match frame 0 better 0.27.
    rng = np.random.default_rng(0)
    errors = []
    for seed in range(2000, 2016):
        video, p = photos.sample_photo_clip(seed, held_out=True)
        noisy = np.clip(video.astype(np.float32) + rng.normal(0, 25, video.shape), 0, 255).astype(np.uint8)
        errors.append(C.path_error(C.estimate_transforms(noisy), true_transforms(p, 64), 64))
    assert np.mean(errors) < 0.33
