"""Dead-leaves pictures (kinema.data.leaves) and the camera world over them ("leaves")."""

import numpy as np
import pytest

from kinema.data import leaves, photos, worlds


def test_radii_have_density_r_to_the_minus_3():
    """Known answer: with density proportional to r^-3 on [1, inf), P(r > a) = a^-2, so a quarter of
    the radii exceed 2 and a sixteenth exceed 4 (density r^-2 would give 1/2 and 1/4)."""
    r = leaves.sample_radii(np.random.default_rng(0), 400_000, r_min=1.0, r_max=1e9)
    assert r.min() >= 1.0
    assert abs((r > 2).mean() - 0.25) < 0.003 and abs((r > 4).mean() - 1 / 16) < 0.002
    bounded = leaves.sample_radii(np.random.default_rng(1), 10_000, r_min=2.0, r_max=8.0)
    assert bounded.min() >= 2.0 and bounded.max() <= 8.0


def spectrum_slope(image: np.ndarray) -> float:
    """Log-log slope of the grey picture's power spectrum over the middle frequencies."""
    g = image.astype(float).mean(-1)
    g = g - g.mean()
    n = g.shape[0]
    power = np.abs(np.fft.fft2(g)) ** 2
    f = np.fft.fftfreq(n)
    r = np.hypot(*np.meshgrid(f, f))
    sel = (r > 4 / n) & (r < 0.25)
    return float(np.polyfit(np.log(r[sel]), np.log(power[sel]), 1)[0])


def test_a_picture_has_a_photographs_spectrum():
    """Natural photographs' power falls as about f^-2 (scikit-image's measure -2.1 to -3.0 by this
    slope); white noise is flat (0). The scale-invariant discs must land in the photographs' range."""
    slope = spectrum_slope(leaves.leaves(0, size=128))
    assert -3.2 < slope < -1.8, slope
    noise = np.random.default_rng(0).uniform(0, 255, (128, 128, 3))
    assert abs(spectrum_slope(noise)) < 0.2


def test_a_picture_is_its_seed_and_nothing_else():
    a = leaves.leaves(3, size=48)
    assert a.dtype == np.uint8 and a.shape == (48, 48, 3)
    np.testing.assert_array_equal(a, leaves.leaves(3, size=48))
    assert (a != leaves.leaves(4, size=48)).any()


def test_disc_colours_are_training_photographs_pixels():
    """The palette draws pixels of training photographs only, never a held-out one's."""
    colours = leaves._palette(np.random.default_rng(0), 50).astype(np.int64)
    pack = lambda rgb: (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # noqa: E731
    seen = np.unique(np.concatenate([pack(photos.load_photo(n).astype(np.int64)).ravel() for n in photos.TRAIN]))
    assert np.isin(pack(colours), seen).all()


def test_the_leaves_world_is_a_camera_path_over_a_named_picture():
    clip = worlds.render_clip("leaves", 5, frames=5, size=32)
    path = photos.photo_path(5, frames=5, synthetic=True)
    assert leaves.is_leaves(path.photo) and int(path.photo.split("/")[1]) < leaves.POOL
    np.testing.assert_array_equal(clip, photos.render(path, size=32))  # the recorded path reproduces the clip
    assert path.caption().endswith("over overlapping discs")
    assert photos.CameraPath.from_dict(path.to_dict()).photo == path.photo
    worlds.check_vae_world("shapes+photos+leaves")
    assert "leaves" not in worlds.WORLDS  # VAE stages only
    with pytest.raises(ValueError, match="for training"):
        photos.photo_path(5, synthetic=True, held_out=True)
    with pytest.raises(ValueError, match="leaves/<n>"):
        photos.load_photo("leaves/x")


def test_the_rgb_kind_is_uniform_and_names_its_own_pictures():
    """"leaves-rgb/<n>": discs in colours uniform over the RGB cube (mean 127.5, each channel
    spread over 0-255 with variance 255^2 / 12), not the training photographs' pixels; the same
    seed under the other kind is another picture; the world of that name renders clips."""
    colours = leaves._palette(np.random.default_rng(0), 200_000, "rgb")
    assert np.allclose(colours.mean(0), 127.5, atol=0.5) and np.allclose(colours.var(0), 255 ** 2 / 12, rtol=0.01)
    assert leaves.parse_name("leaves-rgb/7") == (7, "rgb") and leaves.parse_name("leaves/7") == (7, "photos")
    assert leaves.leaves_name(7, "rgb") == "leaves-rgb/7" and leaves.is_leaves("leaves-rgb/7")
    rgb, photo = photos.load_photo("leaves-rgb/3"), photos.load_photo("leaves/3")
    assert rgb.shape == photo.shape and (rgb != photo).mean() > 0.5
    assert -3.2 < spectrum_slope(leaves.leaves(0, size=128, kind="rgb")) < -1.8
    clip = worlds.render_clip("leaves-rgb", 5, frames=5, size=32)
    assert clip.shape == (5, 32, 32, 3) and clip.dtype == np.uint8
    assert photos.photo_path(5, synthetic="rgb").photo.startswith("leaves-rgb/")
    with pytest.raises(ValueError, match="kind 'hsv'"):
        leaves.leaves(0, kind="hsv")
    with pytest.raises(ValueError, match="not a dead-leaves picture"):
        leaves.parse_name("leaves-rgb/x")


def test_the_flat_kinds_are_the_pictures_they_were():
    """Known answer: the "photos" and "rgb" pictures are bit for bit those the committed leaves runs
    trained on (their SHA-256, taken before the "textured" kind shared their drawing loop): a change
    to the order of the random draws, or to how a disc covers the ones below, fails it."""
    import hashlib

    want = {"photos": "09a60793098ce131", "rgb": "86137202e18fb8b0"}
    for kind, digest in want.items():
        assert hashlib.sha256(leaves.leaves(0, size=64, kind=kind).tobytes()).hexdigest()[:16] == digest, kind


def test_a_soft_disc_edge_falls_linearly_across_the_rim():
    """Known answer: a disc of radius 10 with a 4-pixel soft edge covers 1 at radius 8 and closer,
    1/2 on the rim, 1/4 at 11 pixels and 0 from 12 on; with no soft edge it is 1 inside, 0 outside."""
    d = np.array([0.0, 8.0, 9.0, 10.0, 11.0, 12.0, 14.0]) / 10  # offsets along x, in radii
    np.testing.assert_allclose(leaves.disc_alpha(d, 0.0 * d, 10.0, 4.0), [1, 1, 0.75, 0.5, 0.25, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(leaves.disc_alpha(d, 0.0 * d, 10.0), [1, 1, 1, 1, 0, 0, 0])


def test_noise_fields_are_unit_and_1_over_f():
    """The grain of textured discs: unit standard deviation, no mean, and power falling between f^-1
    and f^-3 (white noise, the bug of a missing 1/f filter, would be flat)."""
    fields = leaves.noise_fields(np.random.default_rng(0), 3, 128)
    assert fields.shape == (3, 128, 128)
    np.testing.assert_allclose(fields.std(axis=(1, 2)), 1.0, rtol=1e-6)
    assert np.abs(fields.mean(axis=(1, 2))).max() < 1e-9
    for f in fields:
        assert -3.3 < spectrum_slope(np.repeat(f[..., None], 3, -1)) < -0.7


def test_textured_pictures_have_grain_and_soft_edges():
    """"leaves-tex/<n>": the same discs in the same places as "leaves/<n>" with grain and soft edges:
    the two pictures go together (correlation 0.85 measured; another seed's flat picture, about 0),
    and the textured one has grain: the median step between neighbouring pixels, which lies inside
    discs (edges are a minority), is several times the flat one's (7.3 against 2.7 grey levels
    measured); the world of that name renders clips."""
    flat, tex = leaves.leaves(3, size=128), leaves.leaves(3, size=128, kind="textured")

    def corr(a, b):
        return float(np.corrcoef(a.astype(float).mean(-1).ravel(), b.astype(float).mean(-1).ravel())[0, 1])
    assert corr(flat, tex) > 0.7 and abs(corr(leaves.leaves(4, size=128), tex)) < 0.3
    assert (flat != tex).mean() > 0.5

    def step(img):
        return float(np.median(np.abs(np.diff(img.astype(float).mean(-1), axis=1))))
    assert step(tex) > 2 * step(flat)
    assert leaves.parse_name("leaves-tex/4") == (4, "textured")
    clip = worlds.render_clip("leaves-tex", 5, frames=5, size=32)
    assert clip.shape == (5, 32, 32, 3)
    assert photos.photo_path(5, synthetic="textured").photo.startswith("leaves-tex/")


def test_a_look_recolours_a_leaves_clip():
    """vae.photo_augment on a leaves world: the clip's picture in a random look (hue turn, channel
    order, saturation; kinema.data.photos.sample_look), the same camera path over the same picture."""
    plain, looked = (worlds.render_clip("leaves", 5, 3, 32, augment=a) for a in (False, True))
    assert plain.shape == looked.shape and (plain != looked).mean() > 0.1
    assert photos.photo_path(5, synthetic=True, augment=True).photo == photos.photo_path(5, synthetic=True).photo
