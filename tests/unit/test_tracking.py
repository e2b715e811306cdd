from conceptlens.pipeline.tracking import flatten, numeric_metrics


def test_flatten_and_numeric_metrics():
    tree = {"a": {"b": 1, "c": [{"d": 2.5}]}, "e": "text", "f": float("nan"), "g": True}
    assert flatten(tree) == {"a.b": 1, "a.c.0.d": 2.5, "e": "text", "f": tree["f"], "g": True}
    assert numeric_metrics(tree) == {"a.b": 1.0, "a.c.0.d": 2.5}
