"""The trust check: a VLM at chance on the classes, and concepts it cannot tell apart from their absence."""
import numpy as np
import pytest

from conceptlens.semantic.trust import AbsenceCorrelation, Trust, assess, zero_shot_skill


def test_skill_is_zero_at_chance_and_one_when_perfect():
    assert zero_shot_skill(0.1, 10) == pytest.approx(0.0)
    assert zero_shot_skill(1.0, 10) == pytest.approx(1.0)
    assert zero_shot_skill(0.02, 10) < 0  # worse than chance, as with the Fashion-MNIST report
    assert zero_shot_skill(0.5, 2) == pytest.approx(0.0)


def scores(n: int = 2000, seed: int = 0):
    """Absence-prompt scores and three concepts: one the VLM sees (its own signal), one that is the absence
    score again plus a little noise, one that is constant."""
    rng = np.random.default_rng(seed)
    absence = rng.normal(0.2, 0.02, n)
    seen = 0.5 * absence + rng.normal(0, 0.03, n) + 0.05 * (rng.random(n) < 0.3)
    echo = absence + rng.normal(0, 0.005, n)
    return np.stack([seen, echo, np.full(n, 0.1)], 1), absence


def test_streamed_correlation_equals_the_direct_one():
    x, y = scores()
    streamed = AbsenceCorrelation()
    for i in range(0, len(y), 300):
        streamed.update(x[i:i + 300], y[i:i + 300])
    direct = [np.corrcoef(x[:, j], y)[0, 1] for j in range(2)]
    assert streamed.n == len(y)
    assert streamed.value[:2] == pytest.approx(direct, abs=1e-9)
    assert streamed.value[2] == 1.0  # a constant score tells nothing apart


def test_too_few_rows_is_a_clear_error():
    corr = AbsenceCorrelation()
    corr.update(np.zeros((2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="at least 3 rows"):
        corr.value


def checked(zero_shot: float) -> Trust:
    x, y = scores()
    corr = AbsenceCorrelation()
    corr.update(x, y)
    return assess(zero_shot, 10, corr, ["water", "object again", "constant"])


def test_concepts_that_echo_the_absence_prompt_are_unreliable():
    trust = checked(0.86)
    assert trust.sees_classes and trust.reliable("water")
    assert trust.unseen_concepts == ["object again", "constant"]
    assert not trust.reliable("object again") and not trust.reliable("unknown concept")
    assert len(trust.warnings()) == 1 and "2 of 3 concepts" in trust.warnings()[0]
    assert trust.as_dict()["unreliable_concepts"] == ["object again", "constant"]


def test_a_vlm_at_chance_makes_everything_unreliable_and_says_so():
    trust = checked(0.02)
    assert not trust.sees_classes and not any(trust.reliable(c) for c in ("water", "object again", "constant"))
    assert "zero-shot accuracy 0.020 where chance is 0.100" in trust.warnings()[0]


def test_thresholds_come_from_the_caller():
    trust = Trust(zero_shot=0.3, classes=10, absence_r={"a": 0.7}, min_skill=0.25, max_absence_r=0.6)
    assert not trust.sees_classes and trust.unseen_concepts == ["a"]
