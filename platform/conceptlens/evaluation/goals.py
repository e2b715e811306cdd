"""The fidelity goals a scorecard is held to (issue 10), each with its measured value and whether it is met.

* blamed concepts, for the source recommended for "which concepts go with failure" (the VLM), over the
  cells the product presents as findings (those the trust check backs): precision of the significant
  cells ≥ 0.90, recall ≥ 0.70, and the top blamed concept of ≥ 90 % of the classes that have a true
  cause is one of them;
* every planted scenario's concept comes first among its class's blamed concepts;
* fault localisation: ≥ 90 % of the errors of a slice whose fault site is known are blamed there (a
  ``head_fault``: the head, the issue's goal; a ``blind_spot`` on an occluding condition: the encoder, held
  to the same bar);
* root causes (the chosen pipeline, held-out failures): for every planted scenario, the cluster holding the most
  of its failures is ≥ 0.90 pure counting natural errors and holds ≥ 0.80 of them
  (:func:`conceptlens.evaluation.clusters.holding`; the planted-only purity and coverage are a sanity line);
* sentences (the default method of ``explain``): every planted scenario is named by the failure mode shown for
  its cluster (rank 1), and no distractor is shown as a failure mode;
* the runtime filter (:mod:`conceptlens.evaluation.runtime`): misclassification AUROC ≥ 0.90 above every
  baseline, PGD ε = 8/255 ≥ 0.95, false alarms on test within ±1.5 points of the target, unseen attacks ≥ 0.90;
* the observer (:mod:`conceptlens.evaluation.observer`): every concept it is blind to (AUROC < 0.70) flagged by
  the trust check, at most 10 % of those it sees (≥ 0.85) flagged, no distractor or unseen-group concept presented
  as a finding or in a sentence shown;
* neurons: the planted attribute of every spurious correlation is the top concept of its class's top voted
  neuron; the retrained head lifts that slice by ≥ 10 points at ≤ 1 point of overall accuracy without a
  planted slice getting worse beyond chance (head retraining), and the retaining-ratio edit beats plain
  cross-entropy there on a paired interval (:mod:`conceptlens.evaluation.neurons`).
"""
from __future__ import annotations

from conceptlens.evaluation.neurons import MAX_OVERALL_COST, neuron_goals
from conceptlens.evaluation.observer import observer_goals
from conceptlens.evaluation.runtime import filter_goals
from conceptlens.pipeline.stats import wilson

RECOMMENDED_SOURCE = "vlm"  # an observer independent of the classifier: its view does not shift with the error
PRESENTED = "reliable"  # the cells the product presents as findings
MIN_PRECISION, MIN_RECALL, MIN_TOP_CAUSE, MIN_LOCALISED = 0.90, 0.70, 0.90, 0.90
MIN_PURITY, MIN_SHARE = 0.90, 0.80


def _goal(value, target: float, successes: int | None = None, n: int | None = None) -> dict:
    """A goal on a value; a proportion ``successes / n`` also gets its 95 % Wilson ``interval`` and its counts."""
    out = {"value": value, "target": target, "met": value is not None and value >= target}
    if n:
        low, high = wilson(successes, n)
        out |= {"successes": int(successes), "n": int(n), "interval": [float(low), float(high)]}
    return out


def goals(card: dict) -> dict:
    """``{name: {"value", "target", "met"}}`` for the sections ``card`` has (a scorecard before this step)."""
    out = {}
    if "semantic" in card:
        s = card["semantic"][RECOMMENDED_SOURCE]
        found = s[PRESENTED]
        top = found["top_cause"]
        out["blamed_precision"] = _goal(found["precision"], MIN_PRECISION, found["hits"], found["called"])
        out["blamed_recall"] = _goal(found["recall"], MIN_RECALL, found["hits"], found["truly_significant"])
        out["top_blamed_is_a_true_cause"] = _goal(top["share"], MIN_TOP_CAUSE, top["top_is_true_cause"],
                                                  top["classes_with_true_cause"])
        for name, per_class in s["planted"].items():
            for cls, rank in per_class.items():
                first = rank["rank_reliable"] == 1
                out[f"planted_first.{name}.{cls}"] = {"value": rank["rank_reliable"], "target": 1, "met": first}
    if "localisation" in card:
        for name, s in card["localisation"]["scenarios"].items():
            if s["truth"]:
                out[f"localised.{name}"] = _goal(s["agreement"], MIN_LOCALISED, s[s["truth"]], s["errors"])
    if "rootcause" in card:
        held = card["rootcause"]["pipelines"][card["rootcause"]["chosen"]]["holding"]
        for name, h in held.items():
            out[f"rootcause_purity.{name}"] = _goal(h["purity"], MIN_PURITY, h["held"], h["size"])
            out[f"rootcause_share.{name}"] = _goal(h["share"], MIN_SHARE, h["held"], h["rows"])
    if "explain" in card:
        default = card["explain"]["default"]
        for name, s in card["explain"]["scenarios"].items():
            rank = s["methods"].get(default, {}).get("rank")
            out[f"sentence_first.{name}"] = {"value": rank, "target": 1, "met": rank == 1}
        shown = card["explain"]["distractors"][default]["shown"]
        out["no_distractor_shown"] = {"value": shown, "target": 0, "met": shown == 0}
    if "observer" in card:
        out |= observer_goals(card["observer"])
    if "neurons" in card:
        out |= neuron_goals(card["neurons"])
    if "filter" in card:
        out |= filter_goals(card["filter"])
    return out


def render_goals(found: dict) -> list[str]:
    """One line per goal: met, or how far off; a proportion with its 95 % Wilson interval and counts."""
    lines = [f"goals ({RECOMMENDED_SOURCE} source, {PRESENTED} cells): "
             f"{sum(g['met'] for g in found.values())} of {len(found)} met"]
    for name, g in found.items():
        if name == "observer_flags_blind":
            state = "met" if g["met"] else f"NOT MET: missed {', '.join(g['missed'])}"
            lines.append(f"  {name:<44} {g['value']} of {g['n']} blind concepts flagged {state}")
            continue
        if name == "observer_seen_not_flagged":
            share = "–" if g["value"] is None else f"{g['value']:.2f}"
            lines.append(f"  {name:<44} {share} of the seen concepts flagged (goal ≤ {g['target']:.2f}) "
                         f"{'met' if g['met'] else 'NOT MET: ' + ', '.join(g['flagged'])}")
            continue
        if name == "observer_hides_unseen":
            state = "met" if g["met"] else f"NOT MET: {g['value']} shown, e.g. {'; '.join(g['examples'][:2])}"
            lines.append(f"  {name:<44} {state}")
            continue
        if name == "no_distractor_shown":
            state = "met" if g["met"] else f"NOT MET: {g['value']} shown"
            lines.append(f"  {name:<44} {state}")
            continue
        if name.startswith("neuron_named."):
            state = "met" if g["met"] else f"NOT MET: its top neuron is named {g['value']}"
            lines.append(f"  {name:<44} {state}")
            continue
        if name.startswith("repair_beats_ce.") and g["value"] is not None:
            lines.append(f"  {name:<44} {g['value']:+.3f} [{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}] over plain "
                         f"cross-entropy on the same rows (McNemar p {g['p']:.2g}) {'met' if g['met'] else 'NOT MET'}")
            continue
        if name.startswith("head_retraining.") and g["value"] is not None:
            lines.append(f"  {name:<44} {g['value']:+.2f} at {g['overall_change']:+.2f} overall (goal ≥ +"
                         f"{g['target']:.2f} at ≥ -{MAX_OVERALL_COST:.2f}, none worse) "
                         f"{'met' if g['met'] else 'NOT MET' + (' (worse: ' + ', '.join(g['harmed']) + ')' if g['harmed'] else '')}")
            continue
        if name == "filter_false_alarms":
            lines.append(f"  {name:<44} {g['value']:+.1f} points from the target (goal within ±{g['target']:.1f}) "
                         f"{'met' if g['met'] else 'NOT MET'}")
            continue
        if name == "filter_above_baselines" and g["value"] is not None:
            ci = (f", paired 95 % interval [{g['low']:+.3f}, {g['high']:+.3f}]" if g.get("low") is not None
                  else ", no paired interval")
            lines.append(f"  {name:<44} {g['value']:+.3f} over the best baseline ({g['best']}){ci} (goal: every "
                         f"baseline's interval above 0) {'met' if g['met'] else 'NOT MET'}")
            continue
        if name.startswith(("planted_first.", "sentence_first.")):
            state = "met" if g["met"] else ("NOT MET: not blamed" if g["value"] is None else f"NOT MET: rank {g['value']}")
            lines.append(f"  {name:<44} {state}")
            continue
        value = "–" if g["value"] is None else f"{g['value']:.2f}" + (
            f" [{g['interval'][0]:.2f}, {g['interval'][1]:.2f}] ({g['successes']}/{g['n']})" if "interval" in g else "")
        short = "" if g["met"] or g["value"] is None else f", short by {g['target'] - g['value']:.2f}"
        lines.append(f"  {name:<44} {value} (goal ≥ {g['target']:.2f}) {'met' if g['met'] else 'NOT MET' + short}")
    return lines
