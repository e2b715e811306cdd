"""The scorecard as a printed table."""
from __future__ import annotations

from conceptlens.evaluation.clusters import truth_score
from conceptlens.evaluation.ground_truth import WORLD_SOURCE
from conceptlens.evaluation.goals import render_goals
from conceptlens.evaluation.runtime import filter_lines
from conceptlens.semantic import SOURCES


def _num(x, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def render_scorecard(card: dict) -> str:
    """The scorecard (``evaluate``'s ``scorecard.json``) as the printed table: one block per section, then the
    absent sections and the skipped scenarios."""
    w = card["world"]
    width = max([20] + [len(name) + 2 for name in w["scenarios"]])  # the scenario column fits every name
    lines = [f"scorecard of run '{card['run']}' against {card.get('truth', WORLD_SOURCE)}",
             f"world (test, accuracy outside the slices {w['accuracy_rest']:.3f}; planted = gap ≥ {w['min_gap']:.2f})",
             f"  {'scenario':<{width}}{'kind':<22}{'n':>6}{'accuracy':>10}{'gap':>8}  planted"]
    lines += [f"  {n:<{width}}{s['kind']:<22}{s['n']:>6}{_num(s['accuracy'], '.3f'):>10}{_num(s['gap'], '.3f'):>8}  "
              f"{'yes' if s['planted'] else 'no (skipped below)'}" for n, s in w["scenarios"].items()]
    if "semantic" in card:
        sem = card["semantic"]
        lines += [f"semantic analysis ({sem['rows']} analysed rows; ground truth: {sem['truth']['significant']} of "
                  f"{sem['truth']['cells']} cells significant, Fisher + BH at {sem['alpha']})",
                  f"  {'source':<9}{'called':>7}{'hits':>6}{'precision':>11}{'recall':>8}{'direction':>11}"
                  f"{'rank ρ':>8}{'ghosts':>8}  top blamed = true cause"]
        for source in SOURCES:
            s = sem[source]
            for scope in ("all", "reliable"):
                a, t = s[scope], s[scope]["top_cause"]
                lines.append(f"  {source if scope == 'all' else '  reliable':<9}{a['called']:>7}{a['hits']:>6}"
                             f"{_num(a['precision']):>11}{_num(a['recall']):>8}{_num(a['direction_agreement']):>11}"
                             f"{_num(s['rank_correlation']) if scope == 'all' else '':>8}{a['unsupported']:>8}  "
                             f"{t['top_is_true_cause']} of {t['classes_with_true_cause']} classes")
        lines.append("  (ghosts: called cells without even unadjusted evidence, p < 0.05 the same way, in the truth)")
        lines.append("  planted cause's rank among its class's blamed concepts:")
        for name, per_class in sem[SOURCES[0]]["planted"].items():
            for cls in per_class:
                ranks = ", ".join(f"{src} {_rank(sem[src]['planted'][name][cls])}" for src in SOURCES)
                lines.append(f"    {name:<{width}}{cls:<10}{ranks}")
    if "observer" in card:
        lines += observer_lines(card["observer"])
    if "localisation" in card:
        lines.append("fault localisation (analysed rows): errors blamed on encoder / head"
                     + ("" if card["localisation"]["reliable"] else " (unreliable: the VLM does not see the classes)"))
        for name, s in card["localisation"]["scenarios"].items():
            truth = f"truth {s['truth']}: {_num(s['agreement'])}" if s["truth"] else "truth unknown"
            lines.append(f"  {name:<{width}}{s['errors']:>5} errors  encoder {_num(s['encoder_share'])}  "
                         f"head {_num(s['head_share'])}  {truth}")
    if "runtime" in card:
        lines.append("runtime filter (test): misclassification score, slice errors vs correct rows")
        for name, s in card["runtime"]["scenarios"].items():
            lines.append(f"  {name:<{width}}{s['errors']:>5} errors  AUROC {_num(s['auroc'], '.3f')}  "
                         f"flagged {_num(s['flagged'])}")
    if "filter" in card:
        lines += filter_lines(card["filter"])
    if "alerts" in card:
        al = card["alerts"]
        lines.append("alerts (flagged test errors named after the cluster that holds their slice / after any cluster "
                     "their slice dominates): " + "; ".join(
                         f"{name} {s['matched']}/{s['matched_dominated']} of {s['flagged']}"
                         for name, s in al["scenarios"].items())
                     + f"; none close enough {al['overall']['none_close_enough']} of {al['overall']['flagged']}")
    if "rootcause" in card:
        lines += _rootcause_lines(card["rootcause"])
    if "explain" in card:
        lines += _explain_lines(card["explain"], width)
    if "neurons" in card:
        lines += _neuron_lines(card["neurons"], width)
    lines += [f"{name}: absent, {why}" for name, why in card["absent"].items()]
    if card["world"]["skipped"]:
        lines.append(f"skipped (not planted): {', '.join(card['world']['skipped'])}")
    if card.get("goals"):
        lines += render_goals(card["goals"])
    return "\n".join(lines)


def observer_lines(o: dict) -> list[str]:
    """The observer's quality per concept and the trust check against the truth."""
    bound = " (the upper bound: told every attribute; a user's CLIP is not)" if o["upper_bound"] else ""
    lines = [f"observer: {o['recipe']}{bound}; zero-shot class accuracy {_num(o['zero_shot'])}, mean retrieval AUROC "
             f"{_num(o['mean_auroc'])}, mean presence agreement {_num(o['mean_agreement'])}"
             + (f"; never told: {', '.join(o['unseen_groups'])}" if o["unseen_groups"] else ""),
             f"  {'concept':<26}{'AUROC':>7}{'agree':>7}  trust check"]
    for c, e in o["concepts"].items():
        kind = "" if e["kind"] == "attribute" else f" ({e['kind'].replace('_', ' ')})"
        lines.append(f"  {c:<26}{_num(e['auroc']):>7}{_num(e['agreement']):>7}  "
                     f"{'flagged' if e['flagged'] else 'backed'}{kind}")
    lines.append(f"  trust check vs truth: blind (AUROC < {o['blind_auroc']}) {len(o['blind'])}, caught "
                 f"{len(o['caught'])}, missed {o['missed'] or 'none'}; seen (≥ {o['seen_auroc']}) flagged "
                 f"{len(o['seen_flagged'])} of {o['seen']}; distractor or unseen-group findings "
                 f"{len(o['presented_hidden']) + len(o['sentences_hidden'])}")
    return lines


def _rank(r: dict) -> str:
    return f"{r['rank']} of {r['blamed']} ({r['concept']} ×{r['risk_ratio']:.2f})" if r["rank"] else \
        f"not blamed ({r['blamed']} blamed)"


def _rootcause_lines(rc: dict, shown: int = 8) -> list[str]:
    """The chosen pipeline, how far it is from the best by the truth, the pipelines best by the truth (the mean
    purity × share of the clusters holding the planted scenarios, natural errors counted; planted-only purity and
    coverage as a sanity line), and each planted scenario's holding cluster."""
    lines = [f"root causes ({rc['failures']} held-out failures, {rc['pipelines_scored']} pipelines): chosen "
             f"{rc['chosen']}, rank {rc['chosen_rank_by_truth']} by the truth (best {rc['best_by_truth']}, "
             f"{rc['gap_to_best']:+.2f} purity × share ahead)",
             f"  {'pipeline':<42}{'index':>7}{'k':>4}{'noise':>7}{'held':>7}{'planted-only purity':>21}{'cover':>7}"]
    by_truth = sorted(rc["pipelines"].items(), key=lambda kv: truth_score(kv[1]), reverse=True)
    listed = by_truth[:shown] + [kv for kv in by_truth[shown:] if kv[1]["chosen"]]
    for name, s in listed:
        p, n = s["planted_only"], s["with_natural"]
        lines.append(f"  {name + (' (chosen)' if s['chosen'] else ''):<42}{s['index']:>7.3f}{n['clusters']:>4}"
                     f"{_num(n['noise_share']):>7}{truth_score(s)[0]:>7.2f}{_num(p['purity']):>21}{_num(p['coverage']):>7}")
    for name, h in rc["pipelines"][rc["chosen"]]["holding"].items():
        lines.append(f"  {name:<42}{h['rows']:>5} failures: " + (
            f"cluster {h['cluster']} holds {h['share']:.0%} of them and is {h['purity']:.0%} theirs "
            f"({h['size']} failures, natural errors counted)" if h["cluster"] is not None else "no cluster holds them"))
    return lines


def _explain_lines(ex: dict, width: int) -> list[str]:
    """Per planted scenario, the rank of the first validated sentence naming it, for each method (the default
    first), and the failure mode shown; distractors shown per method."""
    methods = [ex["default"]] + [m for m in ex["distractors"] if m != ex["default"]]
    lines = [f"sentences: rank of the first validated sentence naming each scenario in its cluster (default "
             f"{ex['default']}); " + ", ".join(f"{m} {d['shown']}" for m, d in ex["distractors"].items())
             + " distractors shown"]
    for name, s in ex["scenarios"].items():
        if s["cluster"] is None:
            lines.append(f"  {name:<{width}}no described cluster holds its failures")
            continue
        ranks = "  ".join(f"{m} {s['methods'][m]['rank'] or '-'}" for m in methods)
        lines.append(f"  {name:<{width}}cluster {s['cluster']} ({s['share']:.0%}): {ranks}; shown: "
                     f"\"{s['methods'][ex['default']]['shown'] or 'none'}\"")
    return lines


def _neuron_lines(ne: dict, width: int) -> list[str]:
    """Naming (agreement with the truth; each spurious class's top neurons) and the repair: per method, overall
    and each planted slice before → after on the held-out rows."""
    naming = ne["naming"]
    lines = [f"neurons ({ne['rows']} held-out rows): {naming['voted']} voted insufficient neurons, the VLM's name "
             f"is the truth's for {_num(naming['agreement'])}"]
    for key, s in naming["spurious"].items():
        tops = "; ".join(f"n{n['neuron']} {n['named']} (truth {n['truth']}, r {n['truth_r']:.2f})" for n in s["neurons"])
        lines.append(f"  {key:<{width}}planted {s['attribute']}: {tops or 'no voted neuron'}")
    lines.append(f"  repair on held-out rows (edit: {ne['edit']}), accuracy before → after:")
    for method, r in ne["repair"].items():
        cells = [f"overall {r['overall']['before']:.3f}→{r['overall']['after']:.3f}"]
        cells += [f"{name} {_num(sl['before'], '.3f')}→{_num(sl['after'], '.3f')}{' (worse)' if sl['worse_p'] < 0.05 else ''}"
                  for name, sl in r["slices"].items()]
        lines.append(f"    {method:<12}" + "  ".join(cells))
    return lines
