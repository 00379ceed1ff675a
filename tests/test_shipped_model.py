"""The shipped model, judged by the Shapes oracle (slow: generates every prompt; `make test-slow`)."""

import pytest

from kinema.pipelines.registry import resolve

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")]


# Regression floors for the shipped v1 model, a few points under its measured figures with 4 seeds
# (docs/shapes_model.md: 99.7 / 88.4 / 82.8 / 97.2%) to allow for 1-seed noise; the targets are 95%.
FLOORS = {"colour": 0.95, "shape": 0.8, "direction": 0.75, "one_object_frames": 0.92}


def test_shipped_model_draws_what_is_asked_on_seen_combinations():
    from kinema.eval.report import evaluate_shapes

    seen = evaluate_shapes("shapes", seeds=1)["seen"]
    for metric, floor in FLOORS.items():
        assert seen[metric] >= floor, (metric, seen)
