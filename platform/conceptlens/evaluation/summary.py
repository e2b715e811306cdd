"""The scorecard as plain rows for a page (the HTML report renders them without knowing the truth's words):
the goals met or not, each with its value and target as text, and the world's planted scenarios."""
from __future__ import annotations

from conceptlens.evaluation.neurons import MAX_OVERALL_COST

# goal-name prefix -> (area, how the goal reads; {0}, {1}: the dotted parts after the prefix)
PHRASES = {
    "blamed_precision": ("semantic", "precision of the blamed concepts (significant cells that are true causes)"),
    "blamed_recall": ("semantic", "recall of the blamed concepts (true causes found)"),
    "top_blamed_is_a_true_cause": ("semantic", "share of classes whose top blamed concept is a true cause"),
    "planted_first": ("semantic", "{0}: its concept blamed first for {1}"),
    "localised": ("localisation", "{0}: errors blamed on the right part (encoder or head)"),
    "rootcause_purity": ("root causes", "{0}: purity of the cluster holding most of its failures (natural errors counted)"),
    "rootcause_share": ("root causes", "{0}: share of its failures in that cluster"),
    "sentence_first": ("sentences", "{0}: named by the sentence shown (rank)"),
    "no_distractor_shown": ("sentences", "distractor sentences shown as failure modes"),
    "observer_flags_blind": ("observer", "concepts the VLM cannot see (AUROC < 0.70) flagged by the trust check"),
    "observer_seen_not_flagged": ("observer", "share of the concepts it sees (AUROC ≥ 0.85) flagged anyway"),
    "observer_hides_unseen": ("observer", "distractor or never-taught concepts presented as findings or in sentences"),
    "neuron_named": ("neurons", "{0}: the top neuron of {1} is named after the planted concept"),
    "head_retraining": ("neurons", "{0}: the retrained head lifts the slice (points of accuracy)"),
    "repair_beats_ce": ("neurons", "{0}: the retaining-ratio edit above plain cross-entropy (points, paired)"),
    "filter_misclassified": ("runtime filter", "AUROC on misclassified inputs"),
    "filter_above_baselines": ("runtime filter", "AUROC above the best baseline"),
    "filter_pgd_eps8": ("runtime filter", "AUROC on PGD, ε = 8/255"),
    "filter_false_alarms": ("runtime filter", "false alarms on test: points from the target"),
    "filter_unseen": ("runtime filter", "AUROC on an unseen attack: {0}"),
}


def _text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def goal_row(name: str, goal: dict) -> dict:
    """One goal as ``{"area", "goal", "value", "target", "met", "note"}`` (text cells)."""
    prefix, *parts = name.split(".")
    area, phrase = PHRASES.get(prefix, ("other", name))
    parts += [""] * 2
    row = {"area": area, "goal": phrase.format(*parts), "value": _text(goal.get("value")),
           "target": f"≥ {_text(goal.get('target'))}", "met": bool(goal.get("met")), "note": ""}
    if prefix in ("planted_first", "sentence_first"):
        row["target"] = "rank 1"
        row["value"] = "not found" if goal.get("value") is None else f"rank {goal['value']}"
    elif prefix == "neuron_named":
        row["target"] = _text(goal.get("target"))
    elif prefix in ("no_distractor_shown", "observer_hides_unseen"):
        row["target"] = "0"
        row["note"] = "; ".join(goal.get("examples", []))
    elif prefix == "observer_flags_blind":
        row["value"], row["target"] = f"{goal['value']} of {goal['n']}", f"{goal['n']} of {goal['n']}"
        row["note"] = f"missed: {', '.join(goal['missed'])}" if goal.get("missed") else ""
    elif prefix == "observer_seen_not_flagged":
        row["target"] = f"≤ {_text(goal.get('target'))}"
        row["note"] = ", ".join(goal.get("flagged", []))
    elif prefix == "filter_false_alarms":
        row["target"] = f"within ±{_text(goal.get('target'))}"
        row["value"] = "–" if goal.get("value") is None else f"{goal['value']:+.2f}"
    elif prefix == "repair_beats_ce" and goal.get("value") is not None:
        low, high = goal["interval"]
        row["value"] = f"{100 * goal['value']:+.1f}"
        row["target"] = "> 0 (interval)"
        row["note"] = f"95 % interval [{100 * low:+.1f}, {100 * high:+.1f}] points, McNemar p {goal['p']:.2g}"
    elif prefix == "head_retraining" and goal.get("value") is not None:
        row["value"] = f"{100 * goal['value']:+.1f}"
        row["target"] = f"≥ +{100 * goal['target']:.0f}"
        row["note"] = (f"overall {100 * goal.get('overall_change', 0):+.1f} points (at most −{100 * MAX_OVERALL_COST:.0f} "
                       f"allowed)" + (f"; worse: {', '.join(goal['harmed'])}" if goal.get("harmed") else ""))
    elif "interval" in goal:
        low, high = goal["interval"]
        row["note"] = f"95 % interval [{low:.2f}, {high:.2f}] ({goal['successes']} of {goal['n']})"
    elif prefix == "filter_above_baselines" and goal.get("best"):
        row["note"] = f"best baseline: {goal['best']}" + (
            f"; paired 95 % interval [{goal['low']:+.3f}, {goal['high']:+.3f}]" if goal.get("low") is not None else "")
    return row


def scorecard_summary(card: dict) -> dict:
    """``{"run", "met", "total", "goals": [goal rows], "tables": [{"title", "columns", "rows"}], "plots": [scatter
    data], "absent": [text]}``
    from ``evaluate``'s ``scorecard.json``: everything as text, ready to render."""
    goals = [goal_row(name, g) for name, g in card.get("goals", {}).items()]
    tables = []
    world = card.get("world")
    if world and world.get("scenarios"):
        tables.append({
            "title": f"planted failure scenarios (test; accuracy outside them {_text(world.get('accuracy_rest'))}, "
                     f"planted = accuracy gap ≥ {_text(world.get('min_gap'))})",
            "columns": ["scenario", "kind", "classes", "attribute", "rows", "accuracy", "gap", "planted"],
            "rows": [[name, s.get("kind", ""), ", ".join(s.get("classes", [])), _text(s.get("attribute")),
                      _text(s.get("n")), _text(s.get("accuracy")), _text(s.get("gap")), _text(s.get("planted"))]
                     for name, s in world["scenarios"].items()]})
    plots = []
    if card.get("observer"):
        table, plots = observer_view(card["observer"])
        tables.append(table)
    return {"run": card.get("run"), "met": sum(g["met"] for g in goals), "total": len(goals), "goals": goals,
            "tables": tables, "plots": plots,
            "absent": [f"{name}: {why}" for name, why in card.get("absent", {}).items()]}


def observer_view(o: dict) -> tuple[dict, list[dict]]:
    """The observer's table (per concept: how well the VLM sees it, the trust check's verdict, how right its blame
    came out) and two scatter plots as data (``{"title", "xlabel", "ylabel", "points": [{"label", "x", "y",
    "flagged"}]}``): the observer's quality per concept, and fidelity against it."""
    bound = " — the upper bound: trained with every attribute labelled, no user's CLIP is" if o["upper_bound"] else ""
    blame = o.get("blame_agreement", {})
    table = {"title": f"the observer: {o['recipe']}{bound} (zero-shot class accuracy {_text(o['zero_shot'])}, mean "
                      f"retrieval AUROC {_text(o['mean_auroc'])}" +
                      (f"; never taught: {', '.join(o['unseen_groups'])}" if o["unseen_groups"] else "") + ")",
             "columns": ["concept", "kind", "retrieval AUROC", "presence agreement", "trust check",
                         "blame right (share of classes)"],
             "rows": [[c, e["kind"].replace("_", " "), _text(e["auroc"]), _text(e["agreement"]),
                       "flagged" if e["flagged"] else "backed", _text(blame.get(c))] for c, e in o["concepts"].items()]}
    scored = [(c, e) for c, e in o["concepts"].items() if e["auroc"] is not None]
    verdict = {True: "flagged", False: "backed"}
    plots = [{"title": "observer quality per concept (red: flagged)",
              "xlabel": "retrieval AUROC against the truth", "ylabel": "presence agreement",
              "points": [{"label": f"{c}: AUROC {e['auroc']:.2f}, agreement {e['agreement']:.2f}, {verdict[e['flagged']]}",
                          "x": e["auroc"], "y": e["agreement"], "flagged": e["flagged"]} for c, e in scored]}]
    if blame:
        plots.append({"title": "fidelity against observer quality",
                      "xlabel": "retrieval AUROC of the concept", "ylabel": "blame right (share of classes)",
                      "points": [{"label": f"{c}: AUROC {e['auroc']:.2f}, blame right in {blame[c]:.0%} of classes, "
                                           f"{verdict[e['flagged']]}", "x": e["auroc"], "y": blame[c],
                                  "flagged": e["flagged"]} for c, e in scored if c in blame]})
    return table, plots
