"""Like-for-like comparisons of the concept filter: the stacked baseline given the filter's own VLM signals, the filter
without its concept signals, paired DeLong differences, and the scorecard goal that reads them."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conceptlens.runtime.comparison import (SIDE_SIGNALS, FilterSignal, paired_differences, same_signal_parts,
                                            side_signals, without_concepts)
from conceptlens.runtime.detectors import BASELINES, Stacked
from conceptlens.runtime.filter import CONCEPT_SIGNALS, SIGNALS, take
from test_runtime_filter import make_filter, world


@pytest.fixture(scope="module")
def fitted():
    calib, attacked = world(3000, 0), world(1000, 1, adversarial=True)
    return make_filter().fit(calib, attacked), calib, attacked


def test_a_filter_signal_is_the_filters_own_column_and_only_one_it_reads(fitted):
    filt, _, _ = fitted
    rows = world(200, 4)
    for name in SIDE_SIGNALS:
        assert np.array_equal(FilterSignal(filt, name).score(rows), filt.signals(rows)[:, SIGNALS.index(name)])
    aligned = make_filter()
    aligned.concepts_from = "aligned"
    assert side_signals(filt) == SIDE_SIGNALS and side_signals(aligned) == ("aligned_margin",)
    with pytest.raises(ValueError, match="no signal 'vlm_margin'"):
        FilterSignal(aligned, "vlm_margin")


def test_the_same_signal_stacked_baseline_has_the_filters_vlm_signals_and_no_concept_heatmap(fitted):
    filt, calib, _ = fitted
    parts = {name: cls().fit(calib, calib["prediction"] != calib["label_index"]) for name, cls in BASELINES.items()}
    given = same_signal_parts(filt, parts)
    assert list(given) == [*BASELINES, *SIDE_SIGNALS] and not set(given) & set(CONCEPT_SIGNALS)
    assert set(parts) == set(BASELINES)  # the plain stacked baseline's parts are left as they were
    test = world(2000, 5)
    wrong = test["prediction"] != test["label_index"]
    plain, same = (Stacked(p).fit(calib, calib["prediction"] != calib["label_index"]) for p in (parts, given))
    # the synthetic VLM sees the true class: its margin is what the logits lack
    assert roc_auc_score(wrong, same.score(test)) > roc_auc_score(wrong, plain.score(test)) + 0.02


def test_the_ablation_is_the_filter_refitted_without_its_concept_signals(fitted, tmp_path):
    filt, calib, attacked = fitted
    ablation = without_concepts(filt).fit(calib, attacked)
    kept = tuple(s for s in SIGNALS if s not in CONCEPT_SIGNALS)
    assert ablation.signal_names == kept and filt.signal_names == SIGNALS  # the filter itself is untouched
    assert {h: len(v["coef"]) for h, v in ablation.heads.items()} == {"misclassified": len(kept), "adversarial": len(kept)}
    rows = world(300, 6)
    assert np.array_equal(ablation.signals(rows), filt.signals(rows)[:, [SIGNALS.index(s) for s in kept]])
    assert np.allclose(ablation.aligner.W, filt.aligner.W)  # same folds: same aligner, references, Gaussians
    assert np.allclose(ablation.references["correct"], filt.references["correct"])
    assert set(ablation.score_all(rows)) == {"misclassified", "adversarial"}
    with pytest.raises(ValueError, match="ablation"):
        ablation.save(tmp_path / "bundle")


def test_paired_differences_are_ours_minus_theirs_on_the_same_rows():
    rng = np.random.default_rng(0)
    defective = rng.random(1500) < 0.2
    good = defective + rng.normal(0, 0.6, 1500)
    weak = defective + rng.normal(0, 1.5, 1500)
    out = paired_differences(defective, good, {"weak": weak, "same": good})
    w = out["weak"]
    assert w["auroc"] == pytest.approx(roc_auc_score(defective, good))
    assert w["other_auroc"] == pytest.approx(roc_auc_score(defective, weak))
    assert w["difference"] == pytest.approx(w["auroc"] - w["other_auroc"]) and w["low"] > 0 and w["p"] < 1e-6
    assert w["low"] < w["difference"] < w["high"]
    assert out["same"]["difference"] == 0 and out["same"]["p"] == 1.0  # the same scores: no difference


def test_an_ablation_without_attacks_has_the_misclassification_head_only(fitted):
    filt, calib, _ = fitted
    clean_only = without_concepts(filt).fit(take(calib, np.arange(3000) < 2000), None)
    assert list(clean_only.heads) == ["misclassified"] and "cos_adversarial" not in clean_only.signal_names


def metrics(paired: dict[str, float], aurocs: dict[str, float]) -> dict:
    """A `monitor` metrics.json with these misclassification AUROCs and paired lower ends (interval ±0.01)."""
    return {"detection": {f"{k}.misclassified": {"auroc": v} for k, v in aurocs.items()},
            "filter_vs_baselines": {k: {"difference": aurocs["concept_filter"] - aurocs[k], "low": low,
                                        "high": low + 0.02, "p": 0.01} for k, low in paired.items()},
            "filter_concepts_add": {"difference": 0.001, "low": -0.001, "high": 0.003, "p": 0.4},
            "false_alarm_rate": {"test": 0.05, "target": 0.05, "gap_points": 0.0}}


def test_above_every_baseline_needs_every_paired_interval_above_zero():
    from conceptlens.evaluation.goals import render_goals
    from conceptlens.evaluation.runtime import filter_goals, filter_lines, filter_section
    from conceptlens.evaluation.summary import goal_row

    aurocs = {"concept_filter": 0.95, "msp": 0.93, "stacked_same_signals": 0.949, "filter_without_concepts": 0.949,
              "concept_heatmap_only": 0.8}
    short = filter_section(metrics({"msp": 0.01, "stacked_same_signals": -0.003}, aurocs))
    assert set(short["baselines"]) == {"msp", "stacked_same_signals"}  # the filter's own ablations are no baselines
    goal = filter_goals(short)["filter_above_baselines"]
    assert goal["best"] == "stacked_same_signals" and not goal["met"]
    assert goal["value"] == pytest.approx(0.001) and goal["low"] == -0.003
    assert "[-0.003, +0.017]" in "\n".join(render_goals({"filter_above_baselines": goal}))
    assert "paired 95 % interval [-0.003, +0.017]" in goal_row("filter_above_baselines", goal)["note"]
    text = "\n".join(filter_lines(short))
    assert "stacked_same_signals +0.001 [-0.003, +0.017]" in text and "concept signals add" in text
    assert filter_goals(filter_section(metrics({"msp": 0.01, "stacked_same_signals": 0.001}, aurocs)))[
        "filter_above_baselines"]["met"]
    older = metrics({"msp": 0.01}, aurocs)  # a metrics.json from before the paired intervals: point estimates only
    del older["filter_vs_baselines"]
    old = filter_goals(filter_section(older))["filter_above_baselines"]
    assert not old["met"] and old["value"] == pytest.approx(0.001) and old["low"] is None
    assert "no paired interval" in render_goals({"filter_above_baselines": old})[1]
