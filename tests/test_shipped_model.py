"""The shipped model, judged by the Shapes oracle (slow: generates every prompt; `make test-slow`)."""

import pytest

from kinema.pipelines.registry import resolve

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (resolve("shapes") / "config.json").is_file(), reason="shipped model not exported")]


def test_shipped_model_draws_what_is_asked_on_seen_combinations():
    from kinema.eval.report import evaluate_shapes

    result = evaluate_shapes("shapes", seeds=1)
    seen = result["seen"]
    for metric in ("colour", "shape", "direction", "one_object_frames"):
        assert seen[metric] >= 0.9, (metric, seen)
