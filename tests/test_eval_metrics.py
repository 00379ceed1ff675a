"""Issue 13: distribution distances and temporal metrics, against known answers and under
controlled corruptions."""

import dataclasses

import numpy as np
import pytest

from kinema.data import shapes
from kinema.errors import KinemaError
from kinema.eval import corruptions, temporal
from kinema.eval.distances import distances, frechet_distance, jedi, kvd, polynomial_mmd
from kinema.eval.features import FeatureSpec, FeatureStats, extract, fit_clip, frame_indices

SPEC = FeatureSpec(name="toy", weights="", frames=4, size=8, value_range=(-1.0, 1.0), dim=3)


def random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# -- Fréchet distance ---------------------------------------------------------------------------

def test_frechet_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    want = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(want, abs=1e-6)


def test_frechet_matches_an_eigenvalue_reference_for_full_covariances():
    # tr((A B)^(1/2)) = sum of sqrt(eigenvalues of A B): A B is similar to A^(1/2) B A^(1/2), which is PSD
    rng = np.random.default_rng(1)
    mu_a, mu_b, cov_a, cov_b = rng.normal(size=6), rng.normal(size=6), random_cov(rng, 6), random_cov(rng, 6)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    want = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(want, abs=1e-6)
    # a swapped mean or one covariance for the other is caught
    assert abs(frechet_distance(mu_a, cov_a, mu_b, cov_a) - want) > 1e-2


def test_frechet_of_a_set_with_itself_is_zero_and_order_free():
    rng = np.random.default_rng(2)
    x = FeatureStats(SPEC, rng.normal(size=(200, 3)))
    assert distances(x, x)["FD-toy"] == pytest.approx(0.0, abs=1e-6)
    y = FeatureStats(SPEC, rng.normal(size=(150, 3)) + [1.0, 0.0, 0.0])
    shuffled = FeatureStats(SPEC, y.features[rng.permutation(len(y))])
    assert distances(x, shuffled) == pytest.approx(distances(x, y), rel=1e-9)
    assert distances(x, y)["FD-toy"] == pytest.approx(1.0, abs=0.4)  # a shift of 1 along one axis


# -- polynomial MMD -----------------------------------------------------------------------------

def test_polynomial_mmd_biased_known_values():
    # the worked example beside JEDi's mmd_poly: 270.7 with k = (x.y / 3)^2 (JEDi's own kernel, gamma
    # 1 / D), and 2436.5 with k = (x.y)^2 (the example's other figure comes from gamma 1)
    a = np.arange(1, 10).reshape(3, 3)
    b = np.array([[7, 6, 5], [4, 3, 2], [1, 1, 8], [0, 2, 5]])
    assert polynomial_mmd(a, b, degree=2, coef0=0, unbiased=False) == pytest.approx(270.7, abs=0.05)
    assert polynomial_mmd(a, b, degree=2, gamma=1.0, coef0=0, unbiased=False) == pytest.approx(2436.5, abs=0.05)
    assert jedi(a, b) == pytest.approx(27072.2, abs=0.1)


def test_polynomial_mmd_matches_scikit_learn_and_the_unbiased_form_drops_the_diagonal():
    metrics = pytest.importorskip("sklearn.metrics.pairwise", reason="scikit-learn (dev extra) is the reference")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(5, 4)) + 0.5
    kxx, kyy, kxy = (metrics.polynomial_kernel(p, q, degree=3, coef0=1) for p, q in ((x, x), (y, y), (x, y)))
    unbiased = ((kxx.sum() - np.trace(kxx)) / 42 + (kyy.sum() - np.trace(kyy)) / 20 - 2 * kxy.mean())
    assert kvd(x, y) == pytest.approx(unbiased, rel=1e-12)
    k2 = [metrics.polynomial_kernel(p, q, degree=2, coef0=0) for p, q in ((x, x), (y, y), (x, y))]
    assert jedi(x, y) == pytest.approx(100 * (k2[0].mean() + k2[1].mean() - 2 * k2[2].mean()), rel=1e-12)


def test_kvd_of_two_samples_of_one_distribution_is_near_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert abs(kvd(a, b)) < 0.05
    assert kvd(a, b + 1.0) > 1.0


# -- feature statistics and their metadata -------------------------------------------------------

def test_mismatched_extractors_refuse_to_compare():
    rng = np.random.default_rng(5)
    a = FeatureStats(SPEC, rng.normal(size=(10, 3)))
    for change in (dict(name="other"), dict(weights="ab12"), dict(frames=16), dict(size=224), dict(value_range=(0.0, 1.0))):
        b = FeatureStats(dataclasses.replace(SPEC, **change), rng.normal(size=(10, 3)))
        with pytest.raises(KinemaError, match=next(iter(change))):
            distances(a, b)


def test_fvd_is_named_only_for_i3d():
    rng = np.random.default_rng(6)
    i3d = dataclasses.replace(SPEC, name="i3d-kinetics400")
    a, b = FeatureStats(i3d, rng.normal(size=(10, 3))), FeatureStats(i3d, rng.normal(size=(10, 3)))
    assert set(distances(a, b)) == {"FVD", "KVD", "JEDi-form"}
    assert "FVD" not in distances(FeatureStats(SPEC, a.features), FeatureStats(SPEC, b.features))


def test_feature_stats_round_trip_and_a_corrupt_file_is_one_line(tmp_path):
    stats = FeatureStats(SPEC, np.random.default_rng(7).normal(size=(6, 3)))
    stats.save(tmp_path / "f.npz")
    back = FeatureStats.load(tmp_path / "f.npz")
    assert back.spec == SPEC and np.array_equal(back.features, stats.features)
    (tmp_path / "bad.npz").write_bytes(b"not a file")
    with pytest.raises(KinemaError, match="not a kinema feature file"):
        FeatureStats.load(tmp_path / "bad.npz")
    with pytest.raises(KinemaError, match=r"\[N, 3\]"):
        FeatureStats(SPEC, np.zeros((4, 5)))


def test_fit_clip_samples_resizes_and_scales():
    assert frame_indices(17, 4).tolist() == [0, 5, 11, 16]
    assert frame_indices(2, 4).tolist() == [0, 0, 1, 1]
    video = np.zeros((2, 17, 16, 16, 3), np.uint8)
    video[:, :, :, :, 0] = 255
    video[:, 16] = 0
    x = fit_clip(video, SPEC)
    assert x.shape == (2, 3, 4, 8, 8)
    assert x[:, 0, :3].eq(1.0).all() and x[:, 1:, :3].eq(-1.0).all()  # red channel at the top of the range
    assert x[:, :, 3].eq(-1.0).all()  # the last sampled frame is the clip's last (black)
    with pytest.raises(KinemaError, match="uint8"):
        fit_clip(video.astype(np.float32), SPEC)


def test_extract_batches_and_keeps_the_spec():
    class MeanColour:
        spec = SPEC

        def __call__(self, videos):
            return fit_clip(videos, self.spec).mean(dim=(2, 3, 4)).double().numpy()

    videos = np.random.default_rng(8).integers(0, 256, size=(5, 3, 8, 8, 3), dtype=np.uint8)
    stats = extract(MeanColour(), videos, batch_size=2)
    assert stats.features.shape == (5, 3) and stats.spec == SPEC
    assert np.allclose(stats.features, MeanColour()(videos))


# -- temporal metrics ---------------------------------------------------------------------------

def clip(seed: int) -> tuple[np.ndarray, shapes.ObjectSpec]:
    video, (obj,) = shapes.sample_clip(seed, frames=17, size=64)
    return video, obj


def moving_clips(n: int = 4):
    out = []
    seed = 0
    while len(out) < n:
        video, obj = clip(seed)
        if obj.direction != "still":
            out.append((video, obj))
        seed += 1
    return out


def test_motion_magnitude_measures_the_known_speed():
    # the objects' speed in pixels per frame is known; the metric reports pixels of a 256-px frame
    for video, obj in moving_clips(4):
        assert temporal.motion_magnitudes(video).mean() == pytest.approx(4 * obj.speed, rel=0.35)


def test_still_clips_are_not_dynamic_and_moving_ones_are():
    video, _ = moving_clips(1)[0]
    still = corruptions.freeze(video)
    assert temporal.motion_magnitudes(still).max() < 1e-3
    assert temporal.dynamic_degree([still, still]) == 0.0
    assert temporal.is_dynamic(video)
    assert temporal.flicker(still) == 1.0


def test_flicker_falls_with_injected_flicker():
    for video, _ in moving_clips(2):
        assert temporal.flicker(corruptions.flicker(video)) < temporal.flicker(video) - 0.05


def test_motion_smoothness_falls_under_shuffle_and_ignores_reversal():
    for video, _ in moving_clips(3):
        smooth = temporal.motion_smoothness(video)
        assert temporal.motion_smoothness(corruptions.shuffle(video)) < smooth - 0.01
        assert temporal.motion_smoothness(corruptions.reverse(video)) == pytest.approx(smooth, abs=1e-9)


def test_midpoint_of_a_translation_is_the_frame_between():
    video, obj = moving_clips(1)[0]
    made = temporal.midpoint(video[4], video[6])
    assert np.abs(made - video[5]).mean() < np.abs(video[4].astype(float) - video[5]).mean() / 3


def test_frame_consistency_falls_when_the_subject_changes():
    (a, _), (b, _) = moving_clips(2)
    cut = np.concatenate([a[:9], corruptions.colour_swap(b)[9:]])
    assert temporal.frame_consistency(a) > 0.99
    assert temporal.frame_consistency(cut) < temporal.frame_consistency(a) - 0.01


def test_the_oracle_answers_the_corruptions_made_for_it():
    """Recolouring halfway costs constancy (the direction holds); twice the speed and a frozen clip
    cost speed; the plain clip costs neither."""
    from kinema.eval.oracle import judge, speed_error

    for i, combo in enumerate([("red", "circle", "left"), ("blue", "triangle", "down-right"), ("cyan", "square", "up")]):
        video = shapes.sample_clip(i, combo)[0]
        plain, recoloured = judge(video), judge(corruptions.recolour_halfway(video))
        assert plain.constancy == 1.0 and speed_error(plain.speed, combo[2]) < 0.02
        assert recoloured.constancy == 9 / 17 and recoloured.direction == combo[2]
        fast = judge(corruptions.fast_forward(video))
        assert len(corruptions.fast_forward(video)) == 9 and fast.direction == combo[2]
        assert fast.speed == pytest.approx(2 * plain.speed, rel=0.02) and speed_error(fast.speed, combo[2]) > 0.4
        assert speed_error(judge(corruptions.freeze(video)).speed, combo[2]) == pytest.approx(1.5)  # standing: the 1.5 px minimum short


def test_colour_histogram_rows_give_the_bhattacharyya_coefficient():
    frame = np.zeros((1, 2, 2, 3), np.uint8)
    other = frame.copy()
    other[0, 0, 0] = 255  # a quarter of the pixels move to the white bin
    h = temporal.colour_histogram(np.concatenate([frame, other]))
    assert (h[0] ** 2).sum() == pytest.approx(1.0)
    assert h[0] @ h[1] == pytest.approx(np.sqrt(1.0 * 0.75))


def test_bad_clips_are_one_line():
    with pytest.raises(KinemaError, match=r"uint8 \[T, H, W, 3\]"):
        temporal.flicker(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(KinemaError, match="T >= 3"):
        temporal.motion_smoothness(np.zeros((2, 8, 8, 3), np.uint8))


# -- kinema eval temporal ------------------------------------------------------------------------

def test_mean_ci_brackets_the_mean_and_collapses_for_constants():
    from kinema.eval.videos import mean_ci

    assert mean_ci([0.5] * 10) == (0.5, 0.5, 0.5)
    mean, low, high = mean_ci(np.arange(100.0))
    assert mean == 49.5 and low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * np.arange(100.0).std() / 10, rel=0.15)  # the normal interval's width
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # a clip with no speed to judge is left out
    assert all(np.isnan(mean_ci([float("nan")] * 3)))


def test_eval_temporal_cli_on_a_folder(tmp_path, capsys):
    from kinema.cli import main
    from kinema.io.video import write_mp4

    video, _ = moving_clips(1)[0]
    write_mp4(video, tmp_path / "moving.mp4")
    write_mp4(corruptions.freeze(video), tmp_path / "still.mp4")
    (tmp_path / "notes.txt").write_text("not a video")  # ignored: not a video suffix
    assert main(["eval", "temporal", str(tmp_path), "--json", str(tmp_path / "out.json")]) == 0
    import json

    out = json.loads((tmp_path / "out.json").read_text())
    assert out["clips"] == 2
    assert [r["dynamic"] for r in out["rows"]] == [1.0, 0.0]  # moving.mp4, still.mp4 (sorted)
    assert out["summary"]["dynamic"]["mean"] == 0.5
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    assert main(["eval", "temporal", str(tmp_path / "broken.mp4")]) == 2
    assert "cannot decode" in capsys.readouterr().err
    assert main(["eval", "temporal", str(tmp_path / "missing")]) == 2


# -- the HTML report -----------------------------------------------------------------------------

class _Checker:
    """Well-formedness of the report: every opened tag that must close does, in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        from html.parser import HTMLParser

        self.stack, self.images = [], []
        checker = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "img":
                    checker.images.append(dict(attrs))
                if tag not in checker.VOID:
                    checker.stack.append(tag)

            def handle_endtag(self, tag):
                assert checker.stack and checker.stack.pop() == tag, f"</{tag}> closes nothing open"

        self.parser = P()


def test_the_html_report_is_self_contained_and_well_formed(tmp_path, capsys):
    import base64
    import io

    from PIL import Image

    from kinema.cli import main
    from kinema.io.video import write_mp4

    for i, (video, _) in enumerate(moving_clips(2)):
        write_mp4(video, tmp_path / f"c{i}.mp4")
    report = tmp_path / "r.html"
    assert main(["eval", "temporal", str(tmp_path), "--html", str(report)]) == 0
    page = report.read_text()
    check = _Checker()
    check.parser.feed(page)
    assert check.stack == []
    assert len(check.images) == 3 and all(img["src"].startswith("data:image/png;base64,") for img in check.images)
    strip = Image.open(io.BytesIO(base64.b64decode(check.images[1]["src"].split(",", 1)[1])))
    assert strip.size == (8 * 64 * 2, 64 * 2)  # 8 frames side by side, twice the size
    assert "http" not in page.replace("http-equiv", "")  # nothing to fetch: it opens offline
    assert main(["eval", "temporal", str(tmp_path), "--html", str(tmp_path / "r.txt")]) == 2
    assert "ending in .html" in capsys.readouterr().err


def test_the_html_report_renders_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the well-formedness test above still runs")
    from kinema.eval.html import write_report

    video, _ = moving_clips(1)[0]
    page = write_report(tmp_path / "r.html", "a test", {"flicker": {"mean": 0.99, "low": 0.98, "high": 1.0}}, {"seed": 0},
                        {"a clip": video})
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1000,1400", page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] > 100 and image.std() > 5  # drawn, not blank


# -- kinema eval suite ---------------------------------------------------------------------------

def test_a_world_set_draws_each_clip_from_its_own_seed():
    """The suite's world sets (the ceiling, the reference and the real-versus-real floor): every clip
    its own size, speed and start, so a set is as varied as its size allows. With seeds offset + s,
    all 162 clips of one s had one size and speed, and the floor compared 4 sizes with 4 others."""
    from kinema.data import shapes
    from kinema.eval.report import world_seed
    from kinema.eval.suite import world_set

    jobs = [(c, s) for c in shapes.combos()[:27] for s in range(2)]  # 3 shapes x 9 directions, 2 seeds
    seeds = [world_seed(30_000, c, s) for c, s in jobs]
    assert len(set(seeds)) == len(jobs) and world_seed(30_000, *jobs[0]) == seeds[0]  # distinct, repeatable
    assert not set(seeds) & {world_seed(31_000, c, s) for c, s in jobs}  # the two sets share no clip
    sizes = {round(shapes.sample_clip(k, c, frames=2, size=64)[1][0].size, 6) for k, (c, _) in zip(seeds, jobs)}
    assert len(sizes) == len(jobs)
    clips = world_set(jobs[:2], 30_000)
    assert np.array_equal(clips[1], shapes.sample_clip(seeds[1], jobs[1][0], frames=17, size=64)[0])


def test_the_given_frames_of_an_image_to_video_eval_vary_over_prompts():
    """`kinema eval shapes --given first`: each prompt's given frame comes from its own world clip.
    With seed 20 000 + s for every prompt, all 162 given frames of --seeds 1 had one object size."""
    from kinema.data import shapes
    from kinema.eval.report import true_clip, world_seed

    combos = shapes.combos()[:9]
    sizes = {int((true_clip(c, 0, frames=1)[0] != 0).any(-1).sum()) for c in combos}
    assert len(sizes) >= 5  # object areas in pixels (the old seeds gave 2 areas for these 9 prompts)
    combo = combos[3]
    assert np.array_equal(true_clip(combo, 1), shapes.sample_clip(world_seed(20_000, combo, 1), combo)[0])
    assert not np.array_equal(true_clip(combo, 1), true_clip(combo, 0))


def test_the_shapes_suite_on_the_world_with_an_encoder(tmp_path, capsys, monkeypatch):
    """The world's own clips: the oracle's ceiling and distances at the real-versus-real floor."""
    import json

    from kinema.cli import main
    from kinema.data import shapes as world
    from kinema.eval.video_encoder import EncoderConfig, train_encoder

    every = world.combos
    monkeypatch.setattr(world, "combos", lambda held_out=None: every(held_out)[::9])  # 18 of the 162 prompts
    enc = train_encoder(tmp_path / "enc", steps=2, batch_size=4, device="cpu", precision="fp32",
                        cfg=EncoderConfig(channels=(8, 8), dim=8, frames=4, size=16))
    out = tmp_path / "s.json"
    assert main(["eval", "suite", "shapes", "--model", "world", "--encoder", str(enc), "--json", str(out),
                 "--html", str(tmp_path / "s.html")]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["colour"]["mean"] == 1.0 and result["summary"]["direction"]["mean"] == 1.0
    assert result["summary"]["constancy"]["mean"] == 1.0 and result["summary"]["speed_error"]["high"] < 0.02
    assert set(result["distances"]) == {"generated", "real vs real"} and len(result["rows"]) == 18
    assert "motion_smoothness" in result["summary"] and (tmp_path / "s.html").is_file()
    # without --encoder, the shipped one; "none" skips the distances
    assert main(["eval", "suite", "shapes", "--model", "world", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["encoder"] == "video-encoder" and "FD-kinema-shapes-video-encoder" in result["distances"]["generated"]
    assert main(["eval", "suite", "shapes", "--model", "world", "--encoder", "none", "--json", str(out)]) == 0
    assert "distances" not in json.loads(out.read_text())
    assert main(["eval", "suite", "nothing", "--model", "world"]) == 2
    assert "unknown suite 'nothing'" in capsys.readouterr().err


def test_temporal_scores_reuse_the_flow_and_agree_with_each_metric():
    video, _ = moving_clips(1)[0]
    scores = temporal.temporal_scores(video)
    assert scores["dynamic"] == float(temporal.is_dynamic(video))
    assert scores["motion_magnitude"] == pytest.approx(temporal.motion_magnitudes(video).mean())
    assert temporal.temporal_scores(corruptions.freeze(video), fps=24)["dynamic"] == 0.0  # thinned: its own flow


def test_a_suite_without_opencv_stops_before_generating(monkeypatch):
    """Without the eval extra, one line at once, not after minutes of sampling."""
    import sys

    from kinema.eval import report
    from kinema.eval.suite import run_suite

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    monkeypatch.setattr(report, "score", lambda *a, **k: pytest.fail("generated before checking OpenCV"))
    for suite in ("shapes", "photos"):
        with pytest.raises(KinemaError, match=r"pip install 'kinema\[eval\]'"):
            run_suite(suite, "world", encoder="none")
