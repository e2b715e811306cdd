"""What changed between two runs, section by section, from the outputs :mod:`.compare_runs` downloaded.

:func:`compare_outputs` returns one JSON-ready dict (``compare.json``):

* ``pairing``: whether the runs scored the same images (:mod:`.compare_paired`: same id, label and image content),
  how many, and why not;
* ``accuracy``: the classifier's accuracy. Paired runs: McNemar on the shared test rows (``embed``'s per-row
  predictions), the interval on the difference deciding; else from the first source both runs have (the
  scorecard's test rows, else monitor's test rows, else analyze's analysed rows), Wilson intervals;
* ``slices``: each planted slice's accuracy (scorecard) — *fixed* (significantly better and no longer a planted
  failure), *reduced* (significantly better), *worse*, or no significant change;
* ``blamed``: per class, the concepts analyze blames (significant risk-ratio cells the trust check backs) that
  *appeared*, *disappeared* or *persist*, with their risk-ratio intervals;
* ``causes``: root causes matched by concepts and sentences (:mod:`.compare_match`): *fixed*, *persisting*
  (*reduced* or *grew* when its failure rate changed significantly), *new*;
* ``filter``: the runtime filter's AUROCs (with Hanley–McNeil intervals where the scorecard has the counts, without
  for monitor's detection table; the overall misclassification AUROC by DeLong's paired test where the runs are
  paired, both have per-row filter scores and their classifiers err on the same rows) and each head's threshold
  drift;
* ``goals``: the scorecard's fidelity goals, met → not met and back;
* ``significant``: every change called significant, in one list.

A section one run lacks says so (``absent``) instead of calling its contents fixed or new. Every change names its
test (``test``, ``paired``; paired ones also ``rows_paired`` and ``p``); ``unpaired_because`` says why a number
that could have been paired was not.
"""
from __future__ import annotations

import math

from conceptlens.config import CompareConfig
from conceptlens.evaluation.slices import scorecard_numbers
from conceptlens.report.compare_match import causes, match
from conceptlens.report.compare_paired import Pairing, paired_accuracy, paired_auroc, pairing
from conceptlens.report.compare_runs import RunOutputs
from conceptlens.report.compare_stats import auroc_estimate, change, estimate, share_estimate, z_value
from conceptlens.semantic.heatmaps import Z95  # the level of analyze's risk-ratio intervals

SCORECARD, ANALYSIS, CARDS, SENTENCES, MONITOR = ("evaluate/scorecard.json", "analyze/summary.json",
                                                  "rootcause/cards.json", "explain/summary.json",
                                                  "monitor/metrics.json")
HELD_OUT = "heldout"  # the set of rootcause's cards: held-out failures (not the attacks)
OVERALL = "overall"  # the scorecard's filter row over every test error (the others are per planted slice)


def level(cfg: CompareConfig, rows: int) -> float:
    """The confidence of each of a section's ``rows`` intervals: ``compare.confidence``, Bonferroni-adjusted to
    ``1 - (1 - confidence) / rows`` when ``compare.simultaneous`` (so the section's intervals hold together)."""
    return 1 - (1 - cfg.confidence) / rows if cfg.simultaneous and rows > 1 else cfg.confidence


def _absent(a: RunOutputs, b: RunOutputs, key: str, command: str) -> str | None:
    """Why a section cannot be compared (a run lacks ``key``), else None."""
    missing = [o.ref.name for o in (a, b) if key not in o.files]
    if not missing:
        return None
    return f"no `{command}` outputs in run {' and '.join(repr(m) for m in missing)} (run `conceptlens {command}`)"


def accuracy(a: RunOutputs, b: RunOutputs, conf: float, pairs: Pairing) -> dict:
    """The classifier's accuracy in both runs: McNemar on the shared rows where the runs are paired, else from the
    first source both have."""
    if pairs.paired:
        return paired_accuracy(a, b, pairs, conf)
    def sources(o: RunOutputs) -> dict:
        out = {}
        if card := o.json(SCORECARD):
            acc = scorecard_numbers(card)["accuracy"]
            out["scorecard (test rows)"] = share_estimate(acc["value"], acc["n"], conf)
        if m := o.json(MONITOR):
            out["monitor (test rows)"] = share_estimate(m.get("test_accuracy"), sum((m.get("verdicts") or {}).values()),
                                                        conf)
        if s := o.json(ANALYSIS):
            out["analyze (analysed rows)"] = share_estimate(1 - s["misclassified"] / s["rows"], s["rows"], conf) \
                if s.get("rows") else estimate(None)
        return out

    sa, sb = sources(a), sources(b)
    for name in sa:
        if name in sb:
            return {"source": name, **change(sa[name], sb[name], conf), "unpaired_because": pairs.summary["why"]}
    return {"absent": "no accuracy both runs report (run `conceptlens evaluate`, `monitor` or `analyze`)"}


def slices(a: RunOutputs, b: RunOutputs, cfg: CompareConfig, pairs: Pairing) -> dict:
    """Each planted slice's accuracy in both runs (the scorecard), with a verdict; unpaired even where the runs
    share rows (which rows a slice holds is ground truth, which compare does not read)."""
    if why := _absent(a, b, SCORECARD, "evaluate"):
        return {"absent": why}
    na, nb = scorecard_numbers(a.json(SCORECARD)), scorecard_numbers(b.json(SCORECARD))
    rows_a, rows_b = {s["name"]: s for s in na["slices"]}, {s["name"]: s for s in nb["slices"]}
    conf = level(cfg, len(set(rows_a) & set(rows_b)))
    out = []
    for name in list(rows_a) + [n for n in rows_b if n not in rows_a]:
        sa, sb = rows_a.get(name), rows_b.get(name)
        c = change(share_estimate(sa["accuracy"], sa["n"], conf) if sa else None,
                   share_estimate(sb["accuracy"], sb["n"], conf) if sb else None, conf)
        if c["note"] and c["delta"] is None:
            verdict = c["note"]
        elif c["significant"] and c["delta"] > 0:
            verdict = "fixed" if sa["planted"] and not sb["planted"] else "reduced"
        elif c["significant"]:
            verdict = "worse"
        else:
            verdict = "no significant change"
        known = sa or sb
        out.append({"name": name, "kind": known["kind"], "classes": known["classes"], "attribute": known["attribute"],
                    "planted": [bool(sa and sa["planted"]), bool(sb and sb["planted"])],
                    "gap": [sa and sa["gap"], sb and sb["gap"]], "verdict": verdict, **c})
    why = "which rows a slice holds is ground truth: compare reads only the scorecard's counts" if pairs.paired else \
        pairs.summary["why"]
    return {"rows": out, "min_gap": na["min_gap"], "level": conf, "unpaired_because": why}


def _cells(o: RunOutputs, source: str) -> dict | None:
    """``{(class, concept): {"value", "se", "q", "blamed"}}`` of the risk-ratio heatmap (log scale; the standard
    error recovered from analyze's 95 % interval)."""
    table = o.parquet(f"analyze/heatmaps_{source}.parquet")
    if table is None:
        return None
    out = {}
    for r in table.to_pylist():
        if r["kind"] == "risk_ratio":
            width = r["high"] - r["low"] if all(isinstance(v, float) and math.isfinite(v)
                                                for v in (r["low"], r["high"])) else None
            out[r["class"], r["concept"]] = {"value": r["value"], "se": width / (2 * Z95) if width else None,
                                             "q": r["q"], "blamed": bool(r["significant"] and r["reliable"])}
    return out


def _log_ratio(cell: dict | None, conf: float) -> dict | None:
    if cell is None:
        return None
    if cell["se"] is None or cell["value"] is None:
        return estimate(cell["value"], q=cell["q"])
    half = z_value(conf) * cell["se"]
    return estimate(cell["value"], cell["value"] - half, cell["value"] + half, q=cell["q"], kind="log_risk_ratio")


def blamed(a: RunOutputs, b: RunOutputs, cfg: CompareConfig) -> dict:
    """Per class, the blamed concepts that appeared, disappeared or persist (risk ratios and their intervals)."""
    ca, cb = _cells(a, cfg.source), _cells(b, cfg.source)
    if ca is None or cb is None:
        missing = [o.ref.name for o, c in ((a, ca), (b, cb)) if c is None]
        return {"absent": f"no `analyze` heatmap ({cfg.source}) in run {' and '.join(map(repr, missing))} "
                          f"(run `conceptlens analyze`; compare.source is vlm or aligned)"}
    blind = [o.ref.name for o in (a, b) if not (o.json(ANALYSIS) or {}).get("trust", {}).get("sees_classes", True)]
    keys = [k for k in sorted(set(ca) | set(cb)) if (ca.get(k) or {}).get("blamed") or (cb.get(k) or {}).get("blamed")]
    conf, rows = level(cfg, len(keys)), []
    for key in keys:
        x, y = ca.get(key), cb.get(key)
        in_a, in_b = bool(x and x["blamed"]), bool(y and y["blamed"])
        status = "persisting" if in_a and in_b else "disappeared" if in_a else "appeared"
        rows.append({"class": key[0], "concept": key[1], "status": status,
                     "risk_ratio": [math.exp(e["value"]) if e and e["value"] is not None else None for e in (x, y)],
                     **change(_log_ratio(x, conf), _log_ratio(y, conf), conf)})
    counts = {s: sum(r["status"] == s for r in rows) for s in ("appeared", "disappeared", "persisting")}
    note = (f"the VLM does not recognise the classes in run {', '.join(map(repr, blind))}: analyze marks its "
            f"blamed concepts unreliable") if blind else None
    analysed = [(o.json(ANALYSIS) or {}).get("rows") for o in (a, b)]
    return {"source": cfg.source, "rows": rows, "counts": counts, "note": note, "level": conf, "analysed": analysed}


def _rows_for_causes(o: RunOutputs) -> int | None:
    """How many rows the held-out failures were drawn from: analyze's rows when it read the same splits."""
    summary = o.json(ANALYSIS)
    params = [o.children.get(c, {}).get("params", {}).get(f"{c}.splits") for c in ("analyze", "rootcause")]
    return summary.get("rows") if summary and params[0] and params[0] == params[1] else None


def _causes_of(o: RunOutputs, cfg: CompareConfig) -> list[dict]:
    cards = o.json(CARDS).get(HELD_OUT, [])
    said = o.json(SENTENCES)
    by_rootcause = said and str(said.get("source", "")).startswith("rootcause")
    found = causes(cards, said["clusters"] if by_rootcause else None, cfg.class_share)
    for cause in found:
        cause["rows"] = _rows_for_causes(o)
    return found


def _rate(cause: dict, conf: float) -> dict:
    """A cause's failures as a share of the rows they were drawn from (no interval when that is unknown)."""
    rows = cause["rows"]
    return share_estimate(cause["failures"] / rows, rows, conf) if rows else estimate(None)


def root_causes(a: RunOutputs, b: RunOutputs, cfg: CompareConfig) -> dict:
    """Root causes matched across the runs: fixed, persisting (reduced / grew / unchanged), new."""
    if why := _absent(a, b, CARDS, "rootcause"):
        return {"absent": why}
    xa, xb = _causes_of(a, cfg), _causes_of(b, cfg)
    found = match(xa, xb, cfg.match_threshold, cfg.sentence_weight)
    conf, persisting = level(cfg, len(found["persisting"])), []
    for i, j, sim in found["persisting"]:
        c = change(_rate(xa[i], conf), _rate(xb[j], conf), conf)
        trend = ("reduced" if c["delta"] < 0 else "grew") if c["significant"] else "no significant change"
        persisting.append({"a": xa[i], "b": xb[j], "similarity": sim, "trend": trend, "rate": c})
    return {"persisting": persisting, "fixed": [xa[i] for i in found["fixed"]], "new": [xb[j] for j in found["new"]],
            "threshold": cfg.match_threshold, "sentences": [bool(o.json(SENTENCES)) for o in (a, b)], "level": conf}


def _overall_auroc(a: RunOutputs, b: RunOutputs, pairs: Pairing, conf: float, unpaired: dict) -> dict:
    """The overall misclassification AUROC: DeLong's paired test where it applies, else ``unpaired`` (saying why)."""
    if not pairs.paired:
        return unpaired | {"unpaired_because": pairs.summary["why"]}
    found, why = paired_auroc(a, b, pairs, conf)
    return unpaired | {"unpaired_because": why} if found is None else {"name": unpaired["name"], **found}


def runtime_filter(a: RunOutputs, b: RunOutputs, cfg: CompareConfig, pairs: Pairing) -> dict:
    """The filter's AUROCs (scorecard per slice, with intervals, the overall one paired where it can be;
    monitor's detection table, without) and each head's threshold drift."""
    out = {}
    ra, rb = ({r["name"]: r for r in scorecard_numbers(o.json(SCORECARD))["filter"]} if o.json(SCORECARD) else {}
              for o in (a, b))
    if ra and rb:  # both scorecards score a filter
        conf = out["level"] = level(cfg, len(set(ra) & set(rb)))
        out["slices"] = [{"name": n, **change(
            auroc_estimate(ra[n]["auroc"], ra[n]["n_pos"], ra[n]["n_neg"], conf) if n in ra else None,
            auroc_estimate(rb[n]["auroc"], rb[n]["n_pos"], rb[n]["n_neg"], conf) if n in rb else None, conf)}
            for n in list(ra) + [n for n in rb if n not in ra]]
        out["slices"] = [_overall_auroc(a, b, pairs, conf, r) if r["name"] == OVERALL else r for r in out["slices"]]
    if why := _absent(a, b, MONITOR, "monitor"):
        return out | {"absent": why}
    ma, mb = a.json(MONITOR), b.json(MONITOR)
    da, db = ma.get("detection") or {}, mb.get("detection") or {}
    out["detection"] = [{"name": k, **change(auroc_estimate(da[k].get("auroc")) if k in da else None,
                                             auroc_estimate(db[k].get("auroc")) if k in db else None, cfg.confidence)}
                        for k in list(da) + [k for k in db if k not in da]]
    ta, tb = ma.get("thresholds") or {}, mb.get("thresholds") or {}
    out["thresholds"] = []
    for head in list(ta) + [h for h in tb if h not in ta]:
        x, y = ta.get(head), tb.get(head)
        rel = (y - x) / abs(x) if x is not None and y is not None and x != 0 else None
        out["thresholds"].append({"head": head, "a": x, "b": y, "delta": None if rel is None else y - x,
                                  "relative": rel, "drift": rel is not None and abs(rel) > cfg.threshold_drift})
    out["false_alarm_rate"] = [(m.get("false_alarm_rate") or {}).get("test") for m in (ma, mb)]
    out["drift_limit"] = cfg.threshold_drift
    return out


def goals(a: RunOutputs, b: RunOutputs) -> dict:
    """The scorecard's goals in both runs: newly met, no longer met, still met, still not met, or in one run only."""
    if why := _absent(a, b, SCORECARD, "evaluate"):
        return {"absent": why}
    ga, gb = (scorecard_numbers(o.json(SCORECARD))["goals"] for o in (a, b))
    rows = []
    for name in list(ga) + [n for n in gb if n not in ga]:
        x, y = ga.get(name), gb.get(name)
        if x and y:
            status = {(False, True): "newly met", (True, False): "no longer met", (True, True): "still met",
                      (False, False): "still not met"}[bool(x["met"]), bool(y["met"])]
        else:
            status = "only in run A" if x else "only in run B"
        rows.append({"name": name, "status": status, "value": [x and x.get("value"), y and y.get("value")],
                     "target": (x or y).get("target"), "met": [x and bool(x["met"]), y and bool(y["met"])]})
    return {"rows": rows, "counts": {s: sum(r["status"] == s for r in rows) for s in
                                     ("newly met", "no longer met", "still met", "still not met")}}


def significant_changes(result: dict) -> list[dict]:
    """Every change called significant: ``{"section", "what", "a", "b", "delta"}`` (blamed concepts: risk ratios,
    no delta)."""
    out = []

    def add(section: str, what: str, c: dict, a=None, b=None) -> None:
        if c.get("significant"):
            out.append({"section": section, "what": what, "a": c["a"]["value"] if a is None else a,
                        "b": c["b"]["value"] if b is None else b, "delta": None if a is not None else c["delta"],
                        "test": c.get("test"), "paired": bool(c.get("paired")), "p": c.get("p")})

    if "delta" in result["accuracy"]:
        add("accuracy", f"accuracy ({result['accuracy']['source']})", result["accuracy"])
    for r in result["slices"].get("rows", []):
        add("slices", f"slice {r['name']} accuracy ({r['verdict']})", r)
    for r in result["blamed"].get("rows", []):
        add("blamed", f"{r['class']}: {r['concept']} risk ratio ({r['status']})", r, *r["risk_ratio"])
    for p in result["causes"].get("persisting", []):
        add("causes", f"root cause {', '.join(p['a']['classes']) or 'mixed'} failure rate ({p['trend']})", p["rate"])
    for r in result["filter"].get("slices", []):
        add("filter", f"filter AUROC on {r['name']}", r)
    return out


def compare_outputs(a: RunOutputs, b: RunOutputs, cfg: CompareConfig) -> dict:
    """The whole comparison of run A (before) with run B (after); see the module docstring."""
    together = ", simultaneous within each section by Bonferroni" if cfg.simultaneous else ""
    pairs = pairing(a, b)
    shared = (f"{pairs.summary['same_images']} shared rows: McNemar / DeLong paired, the interval on the difference "
              f"excludes 0; elsewhere " if pairs.paired else "")
    result = {"a": _run(a), "b": _run(b), "confidence": cfg.confidence, "simultaneous": cfg.simultaneous,
              "rule": f"significant: {shared}the two runs' intervals do not overlap ({cfg.confidence:.0%}{together})",
              "pairing": pairs.summary, "accuracy": accuracy(a, b, cfg.confidence, pairs), "slices": slices(a, b, cfg, pairs),
              "blamed": blamed(a, b, cfg), "causes": root_causes(a, b, cfg),
              "filter": runtime_filter(a, b, cfg, pairs), "goals": goals(a, b)}
    result["significant"] = significant_changes(result)
    return result


def _run(o: RunOutputs) -> dict:
    return {"name": o.ref.name, "ref": o.ref.ref, "run_id": o.ref.run_id, "how": o.ref.how, "tags": o.ref.tags,
            "commands": {c: v["run_id"] for c, v in sorted(o.children.items())}, "files": sorted(o.files)}
