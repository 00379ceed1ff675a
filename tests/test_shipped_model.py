"""The shipped model, judged by the Shapes oracle (slow: generates every prompt; `make test-slow`)."""

import pytest

from kinema.pipelines.registry import resolve

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")]


# Regression floors for the shipped v1.1 model, a few points under its measured figures with 4 seeds
# (docs/shapes_model.md: 99.8 / 94.1 / 83.5 / 97.8%) to allow for 1-seed noise; the targets are 95%.
FLOORS = {"colour": 0.95, "shape": 0.87, "direction": 0.75, "one_object_frames": 0.93}


def test_shipped_model_draws_what_is_asked_on_seen_combinations():
    from kinema.eval.report import evaluate_shapes

    seen = evaluate_shapes("shapes", seeds=1)["seen"]
    for metric, floor in FLOORS.items():
        assert seen[metric] >= floor, (metric, seen)


def test_shipped_vae_round_trip_keeps_what_the_oracle_reads():
    from kinema.eval.recon import evaluate_vae

    # measured on all 162 combinations: PSNR 34.10, shape 98.1%, everything else 100%
    r = evaluate_vae("shapes", clips=162)
    assert r["colour"] == 1.0 and r["direction"] == 1.0, r
    assert r["shape"] >= 0.95 and r["one_object_frames"] >= 0.99 and r["psnr"] >= 33.0, r
