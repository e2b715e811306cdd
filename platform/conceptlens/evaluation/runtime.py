"""The scorecard's runtime-filter goals, from what `monitor` measured on test (issue 14).

* misclassification: the filter's AUROC ≥ 0.90 and above every baseline, the supervised stacked ones included (the
  one given the filter's own VLM signals too): "above" is the lower end of the paired 95 % interval (DeLong, same
  test rows) on the AUROC difference above 0, for every baseline; what the concept signals add (the filter minus
  itself without them) is reported beside it, not a goal: it is a finding about the method, and it is small;
* adversarial: AUROC ≥ 0.95 on PGD at ε = 8/255 (successful attacks on correctly classified inputs);
* the false-alarm rate on test at the deployed thresholds within ±1.5 points of its target;
* unseen attacks: AUROC ≥ 0.90 for every attack family and every ε the heads were fitted without;
* the adaptive white-box attack is reported (its success against classifier + filter and the filter's AUROC on
  it), not held to a number: a filter that falls to an adaptive attack is the normal outcome.

None of this needs the world's truth (`monitor` measures it on the labels); the scorecard gathers it so that the
product's quality is read in one place.
"""
from __future__ import annotations

MIN_MISCLASSIFIED, MIN_PGD8, MAX_FAR_GAP_POINTS, MIN_UNSEEN = 0.90, 0.95, 1.5, 0.90
FILTER, PGD8 = "concept_filter", "pgd_eps8"
NOT_BASELINES = {FILTER, "concept_heatmap_only", "filter_without_concepts"}  # the filter and its own ablations


def filter_section(metrics: dict) -> dict:
    """The numbers the goals read, from `monitor`'s ``metrics.json``."""
    detection = metrics["detection"]
    auroc = {key: value["auroc"] for key, value in detection.items()}
    baselines = {key.split(".")[0]: v for key, v in auroc.items()
                 if key.endswith(".misclassified") and key.split(".")[0] not in NOT_BASELINES}
    return {"misclassified": auroc.get(f"{FILTER}.misclassified"), "baselines": baselines,
            "paired": metrics.get("filter_vs_baselines", {}), "concepts_add": metrics.get("filter_concepts_add"),
            "pgd_eps8": auroc.get(f"{FILTER}.{PGD8}"),
            "unseen": {key.split(".")[1].removeprefix("unseen_"): v for key, v in auroc.items()
                       if key.startswith(f"{FILTER}.unseen_")},
            "false_alarm_rate": metrics["false_alarm_rate"], "adaptive": metrics.get("adaptive")}


def filter_goals(section: dict) -> dict:
    """``{name: {"value", "target", "met"}}`` for the runtime filter."""
    out = {}
    ours = section["misclassified"]
    out["filter_misclassified"] = {"value": ours, "target": MIN_MISCLASSIFIED,
                                   "met": ours is not None and ours >= MIN_MISCLASSIFIED}
    out["filter_above_baselines"] = above_baselines(ours, section["baselines"], section.get("paired", {}))
    if section["pgd_eps8"] is not None:
        out["filter_pgd_eps8"] = {"value": section["pgd_eps8"], "target": MIN_PGD8, "met": section["pgd_eps8"] >= MIN_PGD8}
    gap = section["false_alarm_rate"]["gap_points"]
    out["filter_false_alarms"] = {"value": gap, "target": MAX_FAR_GAP_POINTS, "met": abs(gap) <= MAX_FAR_GAP_POINTS}
    for task, value in section["unseen"].items():
        out[f"filter_unseen.{task}"] = {"value": value, "target": MIN_UNSEEN, "met": value is not None and value >= MIN_UNSEEN}
    return out


def above_baselines(ours: float | None, baselines: dict[str, float], paired: dict[str, dict]) -> dict:
    """The goal "above every baseline": ``value`` the AUROC difference against the best baseline (``best``) with its
    paired interval (``low``, ``high``, ``p``); met when the lower end against every baseline is above 0 (a
    baseline without a paired interval, as in a ``metrics.json`` made before them, counts as not beaten)."""
    best = max(baselines, key=baselines.get, default=None)
    pair = paired.get(best) or {}
    value = pair.get("difference", None if ours is None or best is None else ours - baselines[best])
    lows = [(paired.get(name) or {}).get("low") for name in baselines]
    return {"value": value, "target": 0.0, "best": best, "low": pair.get("low"), "high": pair.get("high"),
            "p": pair.get("p"), "met": ours is not None and bool(lows) and all(low is not None and low > 0 for low in lows)}


def _interval(d: dict) -> str:
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def filter_lines(section: dict) -> list[str]:
    """The scorecard's text for the filter: the comparison, false alarms, unseen and adaptive attacks."""
    base = ", ".join(f"{name} {value:.3f}" for name, value in section["baselines"].items())
    far = section["false_alarm_rate"]
    lines = [f"runtime filter (monitor, test): misclassification AUROC {section['misclassified']:.3f} vs {base}",
             f"  false alarms at the deployed thresholds {far['test']:.1%} (target {far['target']:.1%})"]
    if section.get("paired"):
        lines.append("  filter minus baseline (paired DeLong, 95 %): "
                     + ", ".join(f"{name} {_interval(d)}" for name, d in section["paired"].items()))
    if section.get("concepts_add"):
        lines.append(f"  what the concept signals add (filter minus itself without them): "
                     f"{_interval(section['concepts_add'])}, p {section['concepts_add']['p']:.2g}")
    if section["pgd_eps8"] is not None:
        lines.append(f"  PGD ε = 8/255 AUROC {section['pgd_eps8']:.3f}; unseen attacks: "
                     + ", ".join(f"{task} {value:.3f}" for task, value in section["unseen"].items()))
    for eps, a in (section["adaptive"] or {}).items():
        pgd = f", non-adaptive PGD {a['pgd_success_vs_filter']:.0%}" if "pgd_success_vs_filter" in a else ""
        lines.append(f"  adaptive white-box attack {eps}: fools classifier + filter on {a['success_vs_filter']:.0%} of "
                     f"{a['correct']} correct inputs (classifier alone {a['success_vs_classifier']:.0%}{pgd}); filter "
                     f"AUROC on its successful attacks {a['filter_auroc']:.3f}")
    return lines
