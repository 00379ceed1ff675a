"""The shipped model, judged by the Shapes oracle (slow: generates every prompt; `make test-slow`)."""

import pytest

from kinema.pipelines.registry import resolve

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")]


# Regression floors for the shipped v0 model, well above chance (colour 1/6, shape 1/3, direction
# 1/9). Its measured figures (4 seeds) are in docs/shapes_model.md; issue 2's targets are 95%.
FLOORS = {"colour": 0.6, "shape": 0.5, "direction": 0.6, "one_object_frames": 0.85}


def test_shipped_model_draws_what_is_asked_on_seen_combinations():
    from kinema.eval.report import evaluate_shapes

    seen = evaluate_shapes("shapes", seeds=1)["seen"]
    for metric, floor in FLOORS.items():
        assert seen[metric] >= floor, (metric, seen)
